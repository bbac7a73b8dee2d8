//! `agent`: the software of the meter — source → metrology → reporting interval → registers →
//! outbox → uplink, with commands, relay/limiter control and tamper events.
//!
//! The lossless core:
//! - [`registers`]: energy counters, boot id and next `seq` in two alternating checksummed,
//!   fsynced slots; resume after `kill -9`, never go backwards, damage reported, never a silent
//!   reset;
//! - [`outbox`]: a bounded disk queue of records with per-record checksums and a `WhenFull`
//!   policy; a record leaves only when the broker acknowledged it ([`outbox::Outbox::ack_through`]);
//! - [`uplink`]: MQTT 3.1.1 over mutual TLS (rustls + ring), PUBACK tracking, last will,
//!   jittered reconnect, sealed commands from `down`;
//! - [`neighbour`]: when the uplink is down, sealed envelopes go through a neighbouring meter,
//!   which forwards them unread on its `relay` topic and acknowledges only after its PUBACK;
//! - [`pipeline`]: runs a meter until shutdown; [`config`] is the TOML file, [`status`] the
//!   live status file behind `wattline agent status`.
//!
//! Measurement inputs are in [`sources`], relay and limiter state machines in [`control`],
//! tamper and fault rules in [`events`].
//!
//! ```
//! use agent::outbox::{Outbox, OutboxConfig};
//! use schema::{Body, Heartbeat, Record};
//!
//! let dir = std::env::temp_dir().join(format!("agent-doc-{}", std::process::id()));
//! let (mut outbox, report) = Outbox::open(&dir, OutboxConfig::default())?;
//! assert!(report.damage.is_empty());
//! let record = Record { seq: 0, t_ms: 0, body: Body::Heartbeat(Heartbeat { uptime_s: 1, outbox_records: 0 }) };
//! outbox.append(1, &record)?;
//! let batch = outbox.next_batch(64)?;
//! outbox.ack_through(batch[0].position)?; // only once the broker acknowledged it
//! assert_eq!(outbox.stats().depth_records, 0);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), agent::outbox::Error>(())
//! ```

pub mod config;
pub mod control;
pub mod cosem;
pub mod events;
pub mod neighbour;
pub mod outbox;
pub mod pipeline;
pub mod registers;
pub mod sources;
pub mod status;
pub mod uplink;
