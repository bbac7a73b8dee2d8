//! Integration tests of the `server` crate: the ingest pipeline against a real SQLite (and
//! PostgreSQL when reachable) store, and crash safety with a real `kill -9`.

mod attacks_http;
mod common;
mod crash;
mod ingest;
mod mqtt;
