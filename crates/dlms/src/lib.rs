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
//! - [`wrapper`]: the IEC 62056-47 TCP wrapper; [`hdlc`]: IEC 62056-46 HDLC frames and the
//!   server ([`hdlc::HdlcServerLink`]) and client ([`hdlc::HdlcClientLink`]) link layers.
//! - [`security`]: suite 0 (AES-128-GCM), HLS-GMAC, LLS and the invocation [`CounterStore`].
//! - [`Server`]: the meter side; it reaches the meter's objects through [`ObjectAccess`]
//!   (helpers for the interface classes in [`cosem`]).
//! - [`Client`]: the head-end side, one request at a time.
//!
//! Wattline's association convention: logical device 1; client SAP 16 public (no security,
//! read-only, may read the invocation counter 0.0.43.1.0.255), 17 reader (LLS), 1 management
//! (HLS-GMAC + suite 0 authenticated encryption, the only one that may write or invoke
//! methods such as disconnect control) — see [`ServerConfig::wattline`].
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
//!
//! A client and a server talking without any transport (a meter passes the server's
//! answers to its TCP or serial port instead):
//!
//! ```
//! use dlms::apdu::{AttributeDescriptor, DataAccessResult, MethodDescriptor, SelectiveAccess};
//! use dlms::{AccessContext, Client, ClientAuthentication, ClientConfig, Data, Env, Event, Keys};
//! use dlms::{MemoryCounterStore, Obis, ObjectAccess, ObjectInfo, Server, ServerConfig};
//!
//! /// A meter with one energy register (class 3) readable by every association.
//! struct Meter { energy_wh: u32 }
//!
//! impl ObjectAccess for Meter {
//!     fn objects(&self) -> Vec<ObjectInfo> {
//!         vec![ObjectInfo { class_id: 3, version: 0, logical_name: Obis::new(1, 0, 1, 8, 0, 255),
//!                           attribute_count: 3, writable_attributes: 0, method_count: 0, public: true }]
//!     }
//!     fn get(&mut self, _: &AccessContext, a: &AttributeDescriptor, _: Option<&SelectiveAccess>)
//!         -> Result<Data, DataAccessResult> {
//!         match a.attribute_id {
//!             2 => Ok(Data::DoubleLongUnsigned(self.energy_wh)),
//!             _ => Err(DataAccessResult::ObjectUndefined),
//!         }
//!     }
//!     fn set(&mut self, _: &AccessContext, _: &AttributeDescriptor, _: Option<&SelectiveAccess>, _: &Data)
//!         -> Result<(), DataAccessResult> { Err(DataAccessResult::ReadWriteDenied) }
//!     fn action(&mut self, _: &AccessContext, _: &MethodDescriptor, _: Option<&Data>)
//!         -> Result<Option<Data>, DataAccessResult> { Err(DataAccessResult::ReadWriteDenied) }
//! }
//!
//! let config = ServerConfig::wattline([0x4D; 8], b"demo-lls", Keys::GREEN_BOOK_EXAMPLE, [1; 8]);
//! let mut server = Server::new(config);
//! let (mut meter, mut server_counters) = (Meter { energy_wh: 4242 }, MemoryCounterStore::new(1));
//! let mut random = |b: &mut [u8]| b.fill(7); // a CSPRNG on a real meter
//!
//! let auth = ClientAuthentication::Lls { password: b"demo-lls".to_vec() };
//! let mut client = Client::new(ClientConfig::new(17, auth));
//! let mut client_counters = MemoryCounterStore::new(1);
//!
//! let mut exchange = |request: Vec<u8>, client: &mut Client| -> dlms::Result<Event> {
//!     let mut env = Env { objects: &mut meter, counters: &mut server_counters, random: &mut random };
//!     let answer = server.handle_apdu(17, &request, &mut env).expect("the server answers");
//!     client.handle(&answer, &mut client_counters)
//! };
//! let aarq = client.associate(&mut MemoryCounterStore::new(1))?;
//! assert_eq!(exchange(aarq, &mut client)?, Event::Associated);
//! let energy = AttributeDescriptor { class_id: 3, instance: Obis::new(1, 0, 1, 8, 0, 255), attribute_id: 2 };
//! let get = client.get(energy, None, &mut MemoryCounterStore::new(1))?;
//! assert_eq!(exchange(get, &mut client)?, Event::Value(Data::DoubleLongUnsigned(4242)));
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
