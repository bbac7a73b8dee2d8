//! Integration tests of the `analytics` crate: one binary, modules per detector.

mod balance;
mod scoring;
mod tamper;
