//! `agent`: the software of the meter (placeholder until implemented).

pub mod config;
pub mod control;
pub mod events;
pub mod outbox;
pub mod pipeline;
pub mod registers;
pub mod sources;
pub mod status;
pub mod uplink;
