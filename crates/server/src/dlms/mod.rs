//! DLMS/COSEM on the head-end side (issue 8, item 4): the server polls configured DLMS
//! meters and their readings enter the same ingest as MQTT meters.
//!
//! - [`session`]: the blocking I/O session (TCP wrapper or HDLC over TCP driving the sans-IO
//!   [`::dlms::Client`]), shared with `wattline dlms read`. It lives here rather than in the
//!   `dlms` crate so that `dlms` stays free of I/O (ARCHITECTURE.md); the CLI reaches it
//!   through the `server` crate it already depends on.
//! - [`DlmsSection`] (`[dlms]` in the server TOML) and [`DlmsMeterConfig`]
//!   (`[[dlms.meters]]`): what to poll, how, with which credentials (from files, never inline).
//! - [`poller`]: the runtime job — one task per meter, a persisted cursor per meter
//!   (`store/dlms.rs`, migrations 400–499), sealed batches submitted to [`crate::Ingest`].

mod config;
pub mod poller;
pub mod session;

pub use crate::store::dlms::{DlmsStore, PollState, PolledPoint};
pub(crate) use config::deserialize_section;
pub use config::{
    AssociationSetting, DeviationSetting, DlmsMeterConfig, DlmsSection, TransportSetting,
};
pub use poller::{MeterPollStatus, PollerHandle};
pub use session::{
    Association, KeyFile, Profile, Refused, Selection, Session, SessionConfig, SessionError,
    SessionErrorKind, Target, Transport,
};
