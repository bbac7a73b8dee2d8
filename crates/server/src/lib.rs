//! `server`: the wattline data centre's storage and ingest core (DESIGN §3.3–§3.5).
//!
//! # Main types
//! - [`Store`]: the storage contract, with two implementations that pass one shared test
//!   suite — [`SqliteStore`] (embedded default: one WAL file in the data directory) and
//!   [`PgStore`] (PostgreSQL, readings partitioned by month, TimescaleDB hypertable when the
//!   extension is installed). Versioned migrations run when a store opens. Times are Unix
//!   milliseconds UTC.
//! - [`Ingest`]: the broker-independent pipeline. Its input is `(topic, payload, delivery
//!   handle)`; it verifies the sealed envelope, decodes and validates the records, writes a
//!   group of deliveries in one transaction, and only then acknowledges them, publishes the
//!   stored records on a live broadcast channel and refreshes the rollups. Anything refused
//!   goes to the quarantine with a reason a person can read and its raw bytes.
//! - [`rollup`]: 15-minute, hourly, daily and monthly energy in the meter's local time zone,
//!   computed from counter differences so that a lost record loses no energy and a counter
//!   reset (a new `boot_id`) is never counted as consumption.
//!
//! # Example
//! ```
//! use schema::{Batch, Body, Heartbeat, MeterId, MeterKey, Record, seal_batch};
//! use server::{Ingest, IngestConfig, KeyRing, Meter, SqliteStore, Store};
//! use std::sync::Arc;
//!
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! # rt.block_on(async {
//! let dir = std::env::temp_dir().join(format!("wattline-doc-{}", std::process::id()));
//! let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir).await?);
//! let meter = MeterId::parse("house-7").unwrap();
//! let key = MeterKey::generate();
//! store.upsert_meter(&Meter::new(meter.clone(), "house-7.key")).await?;
//! let keys = KeyRing::new();
//! keys.insert(meter.clone(), key.clone());
//!
//! let ingest = Ingest::start(store.clone(), Arc::new(keys), IngestConfig::default());
//! let batch = Batch {
//!     meter: meter.clone(),
//!     boot_id: 1,
//!     records: vec![Record {
//!         seq: 1,
//!         t_ms: server::now_ms(),
//!         body: Body::Heartbeat(Heartbeat { uptime_s: 60, outbox_records: 0 }),
//!     }],
//! };
//! let payload = seal_batch(&key, &batch).unwrap();
//! // The broker adapter hands over the topic, the bytes and a handle to acknowledge with.
//! let (acked, done) = tokio::sync::oneshot::channel();
//! ingest.submit("wattline/v1/m/house-7/up", payload, Box::new(acked)).await?;
//! done.await.expect("acknowledged after the commit");
//! assert_eq!(ingest.stats().stored(), 1);
//! # ingest.shutdown().await;
//! # let _ = std::fs::remove_dir_all(&dir);
//! # Ok::<(), server::Error>(())
//! # }).unwrap();
//! ```

mod error;
mod ingest;
pub mod rollup;
mod store;

pub use error::{Error, ErrorKind};
pub use ingest::{
    Acknowledge, Ingest, IngestConfig, IngestStats, KeyRing, KeySource, LatencyHistogram, LiveBatch,
};
pub use store::accounts::{
    AccountStore, ApiToken, AuditFilter, AuditRecord, NewApiToken, NewUser, StoredSession, User,
    UserChange,
};
pub use store::{
    AuditEntry, BatchOutcome, BatchWrite, CommandStatus, CounterPoint, Customer, Database,
    DirtyRange, Gap, MAX_POINTS, Meter, MeterStatus, Neighbours, NewCommand, NewQuarantine,
    PgConfig, PgStore, QuarantineEntry, Resolution, RetentionReport, Rollup, RollupInputs,
    RollupLevel, RollupUpdate, SeqRun, Series, SqliteStore, Store, StoredCommand, StoredEvent,
    StoredReading, WriteOutcome, WriteSet, readings_auto,
};

/// The server's clock, Unix ms UTC. The one place that reads the wall clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn event_class_name(c: schema::EventClass) -> &'static str {
    use schema::EventClass::*;
    match c {
        Tamper => "tamper",
        Relay => "relay",
        Limiter => "limiter",
        PowerQuality => "power_quality",
        Boot => "boot",
        Clock => "clock",
        Other => "other",
    }
}

pub(crate) fn event_class_parse(s: &str) -> schema::EventClass {
    use schema::EventClass::*;
    match s {
        "tamper" => Tamper,
        "relay" => Relay,
        "limiter" => Limiter,
        "power_quality" => PowerQuality,
        "boot" => Boot,
        "clock" => Clock,
        _ => Other,
    }
}

pub mod alarms;
pub mod api;
pub mod auth;
pub mod billing;
pub mod broker;
pub mod commands;
pub mod dlms;
pub mod http;
pub mod keystore;
pub mod notify;
pub mod pki;
pub mod reports;
pub mod runtime;
pub mod source;
pub mod web;
