//! `dlms`: DLMS/COSEM (IEC 62056) for wattline — the A-XDR and xDLMS codec, the TCP wrapper,
//! security suite 0 with HLS-GMAC, sans-IO server and client associations, and the COSEM
//! object model a meter implements.
//!
//! The crate is `no_std` + `alloc` and does no I/O: it never reads a clock, opens a socket or
//! draws random numbers. Callers hand in received bytes (and, where needed, time and random
//! challenges) and send the bytes they get back.
//!
//! Main types:
//! - [`Data`]: an A-XDR value; [`Apdu`]: every xDLMS/ACSE APDU, with `parse` and `emit`.
//! - [`wrapper`]: the IEC 62056-47 TCP wrapper, [`hdlc`]: IEC 62056-46 HDLC framing.
//! - [`security`]: suite 0 (AES-128-GCM), HLS-GMAC, LLS and the invocation [`CounterStore`].
//! - [`Server`]: the meter side; it reaches the meter's objects through [`ObjectAccess`].
//! - [`Client`]: the head-end side, one request at a time.
//!
//! ```
//! use dlms::{Apdu, Data, Obis};
//! use dlms::apdu::{AttributeDescriptor, GetRequest, InvokeId};
//!
//! // Encode a GET of the clock's time attribute, then decode it again.
//! let request = Apdu::GetRequest(GetRequest::Normal {
//!     invoke_id: InvokeId::confirmed(1),
//!     attribute: AttributeDescriptor { class_id: 8, instance: Obis::CLOCK, attribute_id: 2 },
//!     access: None,
//! });
//! let bytes = request.to_vec();
//! assert_eq!(bytes, [0xC0, 0x01, 0x41, 0x00, 0x08, 0, 0, 1, 0, 0, 0xFF, 0x02, 0x00]);
//! assert_eq!(Apdu::parse(&bytes)?, request);
//! assert_eq!(Data::parse(&[0x12, 0x00, 0x2A])?, Data::LongUnsigned(42));
//! # Ok::<(), dlms::Error>(())
//! ```
#![no_std]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod apdu;
pub mod axdr;
mod client;
pub mod cosem;
mod cursor;
mod error;
pub mod hdlc;
mod obis;
pub mod security;
mod server;
#[cfg(test)]
mod testutil;
pub mod wrapper;

pub use apdu::Apdu;
pub use axdr::{Data, DateTime, DeviationConvention};
pub use client::{
    Client, ClientAuthentication, ClientConfig, Event, entry_selection, range_selection,
};
pub use cosem::{AccessContext, ObjectAccess, ObjectInfo, Role};
pub use error::{Error, ErrorKind, Result};
pub use obis::Obis;
pub use security::{CounterStore, Keys, MemoryCounterStore, SystemTitle};
pub use server::{AssociationConfig, Authentication, Env, Server, ServerConfig, ServerStats};
