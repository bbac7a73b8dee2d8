//! `server`: the data centre — ingest, store, API (placeholder until implemented).
