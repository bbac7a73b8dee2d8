//! Integration tests of the `server` crate: the ingest pipeline against a real SQLite (and
//! PostgreSQL when reachable) store, and crash safety with a real `kill -9`.

mod alarms;
mod api;
mod attacks_http;
mod attacks_mqtt;
mod browser;
mod common;
mod crash;
mod ingest;
mod mqtt;
