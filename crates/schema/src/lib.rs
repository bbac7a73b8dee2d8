//! `schema`: the wire between meters and the server (DESIGN §3.3) — records, commands, the
//! sealed envelope and the replay window. It is the only crate with serde wire types.
//!
//! # Main types
//! - [`Record`] with a [`Body`]: `reading`, `event`, `ack`, `heartbeat` (and kinds from newer
//!   meters kept raw as [`Body::Unknown`]). A record's key is `(meter, boot_id, seq)`; the
//!   meter and boot come from its [`Batch`].
//! - [`Command`] with an [`Action`], an id and an expiry; a malformed one decodes to a
//!   [`RejectedCommand`] so the meter can answer it with an `ack`.
//! - [`Envelope`]: header `{v, meter, boot_id, seq, alg, nonce, dir}` in the clear plus an
//!   XChaCha20-Poly1305 ciphertext, the exact header bytes as associated data, under a
//!   per-meter 256-bit [`MeterKey`]. [`seal_batch`]/[`open_batch`] and
//!   [`seal_commands`]/[`open_commands`] do the whole trip.
//! - [`ReplayWindow`]: accepts each `(boot_id, seq)` of a meter once in bounded memory.
//! - [`MeterId`]: `[a-z0-9][a-z0-9-]{0,62}`, validated once at the edge.
//! - `From` conversions from `metrology`'s energy registers and window reports.
//!
//! # Choices
//! - **Encoding: CBOR** (RFC 8949). It is self-describing like JSON, so a decoder can skip
//!   unknown fields and keep a record of an unknown kind as raw bytes, but floats travel as
//!   2–8 bytes instead of decimal text and byte strings (nonce, ciphertext) need no base64: a
//!   batch of three-phase readings is roughly half the size of the JSON form on a metered
//!   cellular link.
//! - **AEAD: XChaCha20-Poly1305.** Its 192-bit nonce can be drawn at random for every
//!   envelope with negligible collision risk, so nonce uniqueness holds across reboots, restored
//!   backups, a cloned SD card and the server sealing commands under the same key, with no
//!   persisted counter that could roll back. AES-256-GCM's 96-bit nonce would need either such
//!   a counter or a cap of about 2^32 random nonces per key. ChaCha20 is also fast without
//!   AES instructions, which Raspberry Pi class CPUs lack.
//! - **Direction is authenticated** (`dir` in the header), so an uplink envelope cannot be
//!   reflected to the meter as a command.
//! - **Limits before decoding**: an envelope over [`MAX_ENVELOPE_BYTES`] is refused unread, the
//!   header over [`MAX_HEADER_BYTES`] before it is decoded, and a batch over
//!   [`MAX_RECORDS_PER_BATCH`] before its records are built.
//!
//! # Versioning rules
//! 1. The envelope header carries `v`. A decoder refuses a `v` it does not know
//!    ([`ErrorKind::UnsupportedVersion`]); a new `v` is only needed for changes that old
//!    decoders cannot ignore (a different header shape, a new algorithm).
//! 2. Fields may be **added** to records, commands and the header at any time. Decoders ignore
//!    fields they do not know. A new field is optional for readers (`Option` or a default).
//! 3. Fields are never removed or renamed, and never change type or unit; a unit change is a
//!    new field with the unit in its name.
//! 4. A record `kind` this build does not know decodes to [`Body::Unknown`] with its raw CBOR
//!    body: the server stores it raw and reports it, never drops it.
//! 5. A command this build does not understand is answered with a `rejected` ack saying why.
//! 6. Energy is always sent as monotonic counters, never as deltas.
//!
//! # Example
//! ```
//! use schema::{
//!     Batch, Body, EnergyCounters, Heartbeat, MeterId, MeterKey, Record, ReplayWindow, Verdict,
//!     open_batch, seal_batch,
//! };
//!
//! let meter = MeterId::parse("house-7")?;
//! let key = MeterKey::generate();
//! let batch = Batch {
//!     meter: meter.clone(),
//!     boot_id: 42,
//!     records: vec![Record {
//!         seq: 1,
//!         t_ms: 1_700_000_000_000,
//!         body: Body::Heartbeat(Heartbeat { uptime_s: 60, outbox_records: 0 }),
//!     }],
//! };
//! let wire = seal_batch(&key, &batch)?;
//! let opened = open_batch(&key, &meter, &wire)?;
//! assert_eq!(opened, batch);
//!
//! // Ingest dedups on (boot_id, seq).
//! let mut window = ReplayWindow::new();
//! assert_eq!(window.accept(opened.boot_id, 1), Verdict::Fresh);
//! assert_eq!(window.accept(opened.boot_id, 1), Verdict::Duplicate);
//! # let _ = EnergyCounters::default();
//! # Ok::<(), schema::Error>(())
//! ```

mod cbor;
mod command;
mod convert;
mod envelope;
mod error;
mod meter;
pub mod neighbour;
mod record;
mod replay;

pub use command::{
    Action, Command, MAX_COMMAND_ID_LEN, MAX_COMMANDS_PER_ENVELOPE, MAX_REPORTING_INTERVAL_S,
    MIN_REPORTING_INTERVAL_S, RejectedCommand, decode_commands, encode_commands,
};
pub use envelope::{
    ALG_XCHACHA20POLY1305, Direction, ENVELOPE_VERSION, Envelope, Header, MAX_ENVELOPE_BYTES,
    MAX_HEADER_BYTES, MAX_PLAINTEXT_BYTES, MeterKey, OpenedCommands, open_batch, open_commands,
    seal_batch, seal_commands,
};
pub use error::{Error, ErrorKind};
pub use meter::{MAX_METER_ID_LEN, MeterId};
pub use record::{
    Ack, AckStatus, Batch, Body, EnergyCounters, Event, EventClass, Heartbeat,
    MAX_RECORDS_PER_BATCH, Phase, PhaseReading, Reading, Record, TotalReading,
};
pub use replay::{MAX_BOOTS, ReplayWindow, Verdict, WINDOW as REPLAY_WINDOW};

/// MQTT topics of DESIGN §3.3 for one meter.
pub mod topic {
    use crate::MeterId;

    /// Prefix of every wattline topic.
    pub const PREFIX: &str = "wattline/v1/m";

    /// Sealed record batches, meter → server, QoS 1.
    pub fn up(meter: &MeterId) -> String {
        format!("{PREFIX}/{meter}/up")
    }

    /// Envelopes of other meters this meter forwards, QoS 1.
    pub fn relay(meter: &MeterId) -> String {
        format!("{PREFIX}/{meter}/relay")
    }

    /// Sealed commands, server → meter, QoS 1.
    pub fn down(meter: &MeterId) -> String {
        format!("{PREFIX}/{meter}/down")
    }

    /// `online` / `offline` (last will), retained, QoS 1.
    pub fn status(meter: &MeterId) -> String {
        format!("{PREFIX}/{meter}/status")
    }
}
