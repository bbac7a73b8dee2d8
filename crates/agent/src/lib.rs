//! `agent`: the software of the meter (placeholder until implemented).
