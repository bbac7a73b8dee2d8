//! Shared test plumbing: the demo meter object model and TCP glue.

pub mod demo_meter;
pub mod tcp;
