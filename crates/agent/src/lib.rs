//! `agent`: the software of the meter (placeholder until implemented).

pub mod control;
pub mod events;
pub mod sources;
