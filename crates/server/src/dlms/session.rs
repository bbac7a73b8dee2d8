//! The head-end's DLMS/COSEM I/O session: blocking std TCP — the TCP wrapper (IEC 62056-47)
//! or HDLC (IEC 62056-46) over TCP, as through a serial-to-TCP converter — driving the
//! sans-IO [`dlms::Client`]. `wattline dlms read` and the server's poller
//! ([`super::poller`]) both open their associations here, so a meter behaves the same under
//! both.
//!
//! A [`Session`] is one association: [`Session::open`] connects and associates,
//! [`Session::get`] reads an attribute (following GET-next blocks), [`Session::read_profile`]
//! reads a profile generic's capture objects, period and (selectively) its buffer, and
//! [`Session::release`] ends the association and the link. The calls block for at most the
//! configured timeout per answer; async callers run them on `spawn_blocking`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ::dlms::apdu::{AttributeDescriptor, DataAccessResult, SelectiveAccess};
use ::dlms::cosem::{CaptureObject, ScalerUnit, class_id, decode_buffer};
use ::dlms::hdlc::{self, ClientLinkEvent, HdlcClientLink, LinkParameters};
use ::dlms::wrapper::{self, StreamDecoder};
use ::dlms::{
    Client, ClientAuthentication, ClientConfig, Data, DateTime, DeviationConvention, ErrorKind,
    Event, MemoryCounterStore, Obis, entry_selection, range_selection,
};

/// What went wrong in a session, broadly (the message says exactly what).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionErrorKind {
    /// The meter could not be reached (refused, unreachable, no route).
    Connect,
    /// The meter did not answer within the timeout.
    Timeout,
    /// The meter closed the connection.
    Closed,
    /// The meter refused the association (wrong credentials, unknown client).
    Rejected,
    /// The meter answered something we cannot use (framing, APDU, unexpected answer).
    Protocol,
    /// A socket error other than the above.
    Io,
}

/// A failed session step: its kind and one sentence saying what happened. Messages never
/// contain a password or a key.
#[derive(Debug, Clone)]
pub struct SessionError {
    kind: SessionErrorKind,
    message: String,
}

impl SessionError {
    fn new(kind: SessionErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    fn protocol(message: impl Into<String>) -> Self {
        Self::new(SessionErrorKind::Protocol, message)
    }

    /// A protocol-level error with this message (the poller's checks of what it read).
    pub(crate) fn from_message(message: &str) -> Self {
        Self::protocol(message)
    }

    /// The kind of failure.
    pub fn kind(&self) -> SessionErrorKind {
        self.kind
    }

    /// The same error with `what` in front (`what: message`).
    pub fn context(mut self, what: impl std::fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SessionError {}

/// Which association to open (client SAP per the wattline convention, issue 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Association {
    /// Client SAP 16: no security, public objects only.
    Public,
    /// Client SAP 17: low-level security (password).
    Reader,
    /// Client SAP 1: HLS-GMAC with security suite 0 authenticated encryption.
    Management,
}

impl Association {
    /// The client SAP.
    pub fn client_sap(self) -> u16 {
        match self {
            Association::Public => 16,
            Association::Reader => 17,
            Association::Management => 1,
        }
    }

    /// How messages name it.
    pub fn name(self) -> &'static str {
        match self {
            Association::Public => "public",
            Association::Reader => "reader (lls)",
            Association::Management => "management (hls-gmac)",
        }
    }
}

/// How APDUs travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The TCP wrapper (IEC 62056-47), port 4059 by convention.
    Wrapper,
    /// HDLC (IEC 62056-46) over TCP; `physical_address` is the lower server address.
    Hdlc {
        /// The lower (physical) HDLC server address, 17 by convention.
        physical_address: u8,
    },
}

/// Where and how to reach one meter.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    /// The meter's address.
    pub address: SocketAddr,
    /// Wrapper or HDLC.
    pub transport: Transport,
    /// Server logical device address (1 by the wattline convention).
    pub server_logical_device: u16,
    /// Longest wait for connecting and for each answer.
    pub timeout: Duration,
    /// How the meter signs the date-time deviation.
    pub clock_deviation: DeviationConvention,
}

impl SessionConfig {
    /// Wrapper transport, logical device 1, 10 s timeout, the Blue Book's deviation sign.
    pub fn new(address: SocketAddr) -> Self {
        Self {
            address,
            transport: Transport::Wrapper,
            server_logical_device: 1,
            timeout: Duration::from_secs(10),
            clock_deviation: DeviationConvention::UtcMinusLocal,
        }
    }
}

/// One attribute of one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// COSEM interface class.
    pub class_id: u16,
    /// Logical name.
    pub obis: Obis,
    /// Attribute index (1 is the logical name).
    pub attribute: i8,
}

impl Target {
    /// `class_id`/`obis`/`attribute`.
    pub const fn new(class_id: u16, obis: Obis, attribute: i8) -> Self {
        Target {
            class_id,
            obis,
            attribute,
        }
    }

    fn descriptor(&self) -> AttributeDescriptor {
        AttributeDescriptor {
            class_id: self.class_id,
            instance: self.obis,
            attribute_id: self.attribute,
        }
    }

    /// Classes whose attribute 2 is a value with a scaler_unit in attribute 3: register,
    /// extended register, demand register (Blue Book 4.3.2–4.3.4).
    pub fn has_scaler_unit(&self) -> bool {
        matches!(self.class_id, 3..=5) && self.attribute == 2
    }
}

impl std::fmt::Display for Target {
    /// `class/a.b.c.d.e.f/attribute`, the form `wattline dlms read --obis` takes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d, e, g] = self.obis.0;
        write!(
            f,
            "{}/{a}.{b}.{c}.{d}.{e}.{g}/{}",
            self.class_id, self.attribute
        )
    }
}

/// A meter refused one read: the data-access-result code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(pub u8);

impl Refused {
    /// The Green Book name of the result.
    pub fn name(self) -> String {
        match DataAccessResult::from(self.0) {
            DataAccessResult::HardwareFault => "hardware-fault".into(),
            DataAccessResult::TemporaryFailure => "temporary-failure".into(),
            DataAccessResult::ReadWriteDenied => "read-write-denied".into(),
            DataAccessResult::ObjectUndefined => "object-undefined".into(),
            DataAccessResult::ObjectClassInconsistent => "object-class-inconsistent".into(),
            DataAccessResult::ObjectUnavailable => "object-unavailable".into(),
            DataAccessResult::TypeUnmatched => "type-unmatched".into(),
            DataAccessResult::ScopeOfAccessViolated => "scope-of-access-violated".into(),
            _ => format!("data-access-result {}", self.0),
        }
    }

    /// Whether the meter simply does not have the object.
    pub fn is_undefined(self) -> bool {
        DataAccessResult::from(self.0) == DataAccessResult::ObjectUndefined
    }
}

/// Which rows of a profile to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// The whole buffer.
    All,
    /// Rows captured from `from_s` to `to_s` (Unix seconds, inclusive), by the profile's clock
    /// column (selective access by range).
    Range {
        /// Start, Unix seconds.
        from_s: i64,
        /// End, Unix seconds.
        to_s: i64,
    },
    /// Rows by entry number, 1-based and inclusive.
    Entries {
        /// First entry.
        from: u32,
        /// Last entry.
        to: u32,
    },
}

/// A profile generic as read: its columns, capture period and rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Capture objects (the columns).
    pub columns: Vec<CaptureObject>,
    /// Capture period, seconds (0: asynchronous, e.g. event logs).
    pub period_s: u32,
    /// The rows selected, values in column order.
    pub rows: Vec<Vec<Data>>,
}

/// How APDUs travel to the meter, with its socket.
enum Link {
    Wrapper {
        stream: TcpStream,
        decoder: StreamDecoder,
        client_sap: u16,
        server: u16,
    },
    Hdlc {
        stream: TcpStream,
        decoder: hdlc::StreamDecoder,
        link: Box<HdlcClientLink>,
    },
}

fn read_some(stream: &mut TcpStream, buf: &mut [u8]) -> Result<usize, SessionError> {
    match stream.read(buf) {
        Ok(0) => Err(SessionError::new(
            SessionErrorKind::Closed,
            "the meter closed the connection",
        )),
        Ok(n) => Ok(n),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(SessionError::new(
                SessionErrorKind::Timeout,
                "no answer from the meter within the timeout",
            ))
        }
        Err(e) => Err(SessionError::new(
            SessionErrorKind::Io,
            format!("reading from the meter: {e}"),
        )),
    }
}

fn send(stream: &mut TcpStream, bytes: &[u8]) -> Result<(), SessionError> {
    stream
        .write_all(bytes)
        .map_err(|e| SessionError::new(SessionErrorKind::Io, format!("sending to the meter: {e}")))
}

impl Link {
    fn connect(config: &SessionConfig, client_sap: u16) -> Result<Link, SessionError> {
        let addr = config.address;
        let stream = TcpStream::connect_timeout(&addr, config.timeout).map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::TimedOut {
                SessionErrorKind::Timeout
            } else {
                SessionErrorKind::Connect
            };
            SessionError::new(kind, format!("cannot connect to {addr}: {e}"))
        })?;
        let io = |e: std::io::Error| SessionError::new(SessionErrorKind::Io, e.to_string());
        stream.set_read_timeout(Some(config.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(config.timeout)).map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        let physical_address = match config.transport {
            Transport::Wrapper => {
                return Ok(Link::Wrapper {
                    stream,
                    decoder: StreamDecoder::new(65_535),
                    client_sap,
                    server: config.server_logical_device,
                });
            }
            Transport::Hdlc { physical_address } => physical_address,
        };
        let upper = u8::try_from(config.server_logical_device)
            .ok()
            .filter(|u| *u < 0x80)
            .ok_or_else(|| {
                SessionError::protocol(
                    "a server logical device above 127 does not fit an hdlc address",
                )
            })?;
        let server = hdlc::Address::Two {
            upper,
            lower: physical_address,
        };
        let params = LinkParameters {
            max_info_tx: 512,
            max_info_rx: 512,
            ..LinkParameters::default()
        };
        let client = u8::try_from(client_sap)
            .map_err(|_| SessionError::protocol("a client sap above 255 does not fit hdlc"))?;
        let mut hdlc_link = HdlcClientLink::new(client, server, params);
        let snrm = hdlc_link
            .snrm()
            .map_err(|e| SessionError::protocol(format!("hdlc snrm: {e}")))?;
        let mut link = Link::Hdlc {
            stream,
            decoder: hdlc::StreamDecoder::new(),
            link: Box::new(hdlc_link),
        };
        match link
            .hdlc_exchange(snrm)
            .map_err(|e| e.context("opening the hdlc link"))?
        {
            ClientLinkEvent::Connected(_) => Ok(link),
            other => Err(SessionError::protocol(format!(
                "opening the hdlc link: the meter answered snrm with {other:?}"
            ))),
        }
    }

    /// Sends one APDU and returns the APDU answered.
    fn exchange(&mut self, apdu: &[u8]) -> Result<Vec<u8>, SessionError> {
        match self {
            Link::Wrapper {
                stream,
                decoder,
                client_sap,
                server,
            } => {
                let frame = wrapper::frame(*client_sap, *server, apdu)
                    .map_err(|e| SessionError::protocol(format!("framing the request: {e}")))?;
                send(stream, &frame)?;
                let mut buf = [0u8; 4096];
                loop {
                    if let Some(f) = decoder.next_frame().map_err(|e| {
                        SessionError::protocol(format!("bad answer from the meter: {e}"))
                    })? {
                        return Ok(f.apdu);
                    }
                    let n = read_some(stream, &mut buf)?;
                    decoder.push(&buf[..n]);
                }
            }
            Link::Hdlc { link, .. } => {
                let first = link
                    .send_apdu(apdu)
                    .map_err(|e| SessionError::protocol(format!("hdlc framing: {e}")))?;
                match self.hdlc_exchange(first)? {
                    ClientLinkEvent::Apdu(a) => Ok(a),
                    other => Err(SessionError::protocol(format!(
                        "expected an apdu over hdlc, got {other:?}"
                    ))),
                }
            }
        }
    }

    /// Sends an HDLC frame and runs the link (segments, RR) until it yields more than a frame
    /// of its own to send.
    fn hdlc_exchange(&mut self, mut frame: Vec<u8>) -> Result<ClientLinkEvent, SessionError> {
        let Link::Hdlc {
            stream,
            decoder,
            link,
        } = self
        else {
            return Err(SessionError::protocol("not an hdlc link"));
        };
        let mut buf = [0u8; 4096];
        loop {
            send(stream, &frame)?;
            loop {
                let repr = loop {
                    // A corrupt frame is skipped: HDLC recovers by the meter repeating it.
                    if let Ok(Some(r)) = decoder.next_frame() {
                        break r;
                    }
                    let n = read_some(stream, &mut buf)?;
                    decoder.push(&buf[..n]);
                };
                match link
                    .receive(&repr)
                    .map_err(|e| SessionError::protocol(format!("hdlc link: {e}")))?
                {
                    ClientLinkEvent::None => continue,
                    ClientLinkEvent::Send(next) => {
                        frame = next;
                        break;
                    }
                    other => return Ok(other),
                }
            }
        }
    }

    /// Closes an HDLC link with DISC (the wrapper needs nothing beyond the RLRQ).
    fn close(&mut self) -> Result<(), SessionError> {
        if let Link::Hdlc { link, .. } = self {
            let disc = link
                .disc()
                .map_err(|e| SessionError::protocol(format!("hdlc disc: {e}")))?;
            self.hdlc_exchange(disc)?;
        }
        Ok(())
    }
}

/// Green Book, AARE result-source-diagnostic, acse-service-user values.
fn association_diagnostic(code: u8) -> &'static str {
    match code {
        1 => "no reason given",
        2 => "application context name not supported",
        11 => "authentication mechanism name not recognised",
        12 => "authentication mechanism name required",
        13 => "authentication failure",
        14 => "authentication required",
        _ => "other",
    }
}

/// An open association with a meter.
pub struct Session {
    link: Link,
    client: Client,
    counters: MemoryCounterStore,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("associated", &self.client.is_associated())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Connects and opens `association`. `first_counter` is the first invocation counter to
    /// send (management association; see [`meter_invocation_counter`]).
    pub fn open(
        config: &SessionConfig,
        association: Association,
        authentication: ClientAuthentication,
        first_counter: u32,
    ) -> Result<Session, SessionError> {
        let mut client_config = ClientConfig::new(association.client_sap(), authentication);
        client_config.server_logical_device = config.server_logical_device;
        client_config.clock_deviation = config.clock_deviation;
        let link = Link::connect(config, association.client_sap())?;
        let mut session = Session {
            link,
            client: Client::new(client_config),
            counters: MemoryCounterStore::new(first_counter),
        };
        let aarq = session
            .client
            .associate(&mut session.counters)
            .map_err(|e| SessionError::protocol(format!("building the aarq: {e}")))?;
        let what = association.name();
        match session.request(aarq) {
            Ok(Event::Associated) => Ok(session),
            Ok(other) => Err(SessionError::protocol(format!(
                "the {what} association was answered with {other:?}"
            ))),
            Err(Failed::Session(e)) => Err(e.context(format!("the {what} association failed"))),
            Err(Failed::Dlms(e)) => Err(match e.kind() {
                ErrorKind::Peer(_, code) if e.to_string().starts_with("aare") => {
                    let hint = match (code, association) {
                        (13, Association::Reader) => " — wrong password?",
                        (13, Association::Management) => " — wrong keys or system title?",
                        _ => "",
                    };
                    SessionError::new(
                        SessionErrorKind::Rejected,
                        format!(
                            "the meter rejected the {what} association (diagnostic {code}: {}){hint}",
                            association_diagnostic(*code)
                        ),
                    )
                }
                ErrorKind::AuthenticationFailed | ErrorKind::Replay { .. } => SessionError::new(
                    SessionErrorKind::Rejected,
                    format!(
                        "the {what} association failed: {e} — wrong keys, or an invocation counter out of sync?"
                    ),
                ),
                _ => SessionError::protocol(format!("the {what} association failed: {e}")),
            }),
        }
    }

    /// The sans-IO client (its configuration, the server's system title, time conversion).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Sends `apdu`, following continuations (HLS pass 3, next GET block) to a final event.
    fn request(&mut self, mut apdu: Vec<u8>) -> Result<Event, Failed> {
        loop {
            let reply = self.link.exchange(&apdu).map_err(Failed::Session)?;
            match self
                .client
                .handle(&reply, &mut self.counters)
                .map_err(Failed::Dlms)?
            {
                Event::Send(next) => apdu = next,
                other => return Ok(other),
            }
        }
    }

    /// Reads one attribute; a data-access-result from the meter is `Ok(Err(..))`.
    pub fn get(
        &mut self,
        target: Target,
        access: Option<SelectiveAccess>,
    ) -> Result<Result<Data, Refused>, SessionError> {
        let apdu = self
            .client
            .get(target.descriptor(), access, &mut self.counters)
            .map_err(|e| SessionError::protocol(format!("building the get request: {e}")))?;
        match self.request(apdu) {
            Ok(Event::Value(d)) => Ok(Ok(d)),
            Ok(other) => Err(SessionError::protocol(format!(
                "get {target}: unexpected answer {other:?}"
            ))),
            Err(Failed::Dlms(e)) => match e.kind() {
                ErrorKind::Peer("data-access-result", code) => Ok(Err(Refused(*code))),
                _ => Err(SessionError::protocol(format!("reading {target}: {e}"))),
            },
            Err(Failed::Session(e)) => Err(e.context(format!("reading {target}"))),
        }
    }

    /// Reads attribute 3 (scaler_unit) of a register, if the meter gives it.
    pub fn scaler_unit(&mut self, target: Target) -> Result<Option<ScalerUnit>, SessionError> {
        if !target.has_scaler_unit() {
            return Ok(None);
        }
        let su = Target::new(target.class_id, target.obis, 3);
        Ok(match self.get(su, None)? {
            Ok(d) => Some(ScalerUnit::from_data(&d).ok_or_else(|| {
                SessionError::protocol(format!("{su}: scaler_unit is not {{integer, enum}}"))
            })?),
            Err(_) => None,
        })
    }

    /// Reads a profile generic: capture objects (needed before the buffer can be decoded),
    /// capture period, then the buffer with `selection`. A refused part is `Ok(Err((which,
    /// why)))`.
    pub fn read_profile(
        &mut self,
        obis: Obis,
        selection: Selection,
    ) -> Result<Result<Profile, (Target, Refused)>, SessionError> {
        let pg = |attribute| Target::new(class_id::PROFILE_GENERIC, obis, attribute);
        let columns_data = match self.get(pg(3), None)? {
            Ok(d) => d,
            Err(r) => return Ok(Err((pg(3), r))),
        };
        let columns = CaptureObject::list_from_data(&columns_data)
            .map_err(|e| SessionError::protocol(format!("profile {obis} capture objects: {e}")))?;
        let period_s = match self.get(pg(4), None)? {
            Ok(d) => d
                .as_i128()
                .and_then(|p| u32::try_from(p).ok())
                .ok_or_else(|| {
                    SessionError::protocol(format!(
                        "profile {obis} capture period is not an unsigned number"
                    ))
                })?,
            Err(r) => return Ok(Err((pg(4), r))),
        };
        let access = match selection {
            Selection::All => None,
            Selection::Entries { from, to } => Some(entry_selection(from, to)),
            Selection::Range { from_s, to_s } => {
                let clock = columns
                    .iter()
                    .find(|c| c.class_id == class_id::CLOCK)
                    .ok_or_else(|| {
                        SessionError::protocol(format!(
                            "profile {obis} has no clock column to select a time range on; select by entries"
                        ))
                    })?;
                let conv = self.client.config().clock_deviation;
                Some(range_selection(
                    clock,
                    DateTime::from_unix(from_s, 0, conv),
                    DateTime::from_unix(to_s, 0, conv),
                ))
            }
        };
        let buffer = match self.get(pg(2), access)? {
            Ok(d) => d,
            Err(r) => return Ok(Err((pg(2), r))),
        };
        let rows = decode_buffer(&buffer, &columns, period_s)
            .map_err(|e| SessionError::protocol(format!("profile {obis} buffer: {e}")))?;
        Ok(Ok(Profile {
            columns,
            period_s,
            rows: rows.into_iter().map(|r| r.values).collect(),
        }))
    }

    /// Releases the association (RLRQ) and closes the link.
    pub fn release(&mut self) -> Result<(), SessionError> {
        let rlrq = self
            .client
            .release()
            .map_err(|e| SessionError::protocol(format!("building the rlrq: {e}")))?;
        self.request(rlrq).map_err(|e| match e {
            Failed::Session(e) => e,
            Failed::Dlms(e) => SessionError::protocol(format!("release: {e}")),
        })?;
        self.link.close()
    }
}

/// Why a request failed: the transport, or the DLMS layer (whose kind decides the message).
enum Failed {
    Session(SessionError),
    Dlms(::dlms::Error),
}

/// The meter's last accepted invocation counter from our management title, read over the
/// public association (0-0:43.1.0.255 is public by the wattline convention), plus one: the
/// first counter to send in a management association.
pub fn meter_invocation_counter(config: &SessionConfig) -> Result<u32, SessionError> {
    let mut public = Session::open(config, Association::Public, ClientAuthentication::None, 1)?;
    let target = Target::new(class_id::DATA, Obis::INVOCATION_COUNTER, 2);
    let value = public.get(target, None);
    let _ = public.release();
    let counter = value?
        .map_err(|r| {
            SessionError::new(
                SessionErrorKind::Rejected,
                format!(
                    "the meter refused to give its invocation counter 0-0:43.1.0.255 ({})",
                    r.name()
                ),
            )
        })?
        .as_i128()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| {
            SessionError::protocol("invocation counter 0-0:43.1.0.255 is not an unsigned number")
        })?;
    counter.checked_add(1).ok_or_else(|| {
        SessionError::new(
            SessionErrorKind::Rejected,
            "the invocation counter is exhausted: the meter needs new keys",
        )
    })
}

/// 16 unpredictable bytes for the HLS challenge (CtoS), from the OS generator.
pub fn hls_challenge() -> Vec<u8> {
    let mut challenge = vec![0u8; 16];
    // The OS generator failing is not recoverable; a predictable challenge would be worse.
    getrandom::fill(&mut challenge).expect("the OS random source is available");
    challenge
}

/// The management keys and our system title, from a key file: `block_key = HEX`,
/// `auth_key = HEX`, `system_title = HEX` lines (`#` starts a comment). Values are never
/// echoed in errors.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeyFile {
    /// Global unicast encryption key (16 bytes hex), as written.
    pub block_key: Option<String>,
    /// Authentication key (16 bytes hex), as written.
    pub auth_key: Option<String>,
    /// Our system title (8 bytes hex), as written.
    pub system_title: Option<String>,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFile")
            .field("block_key", &self.block_key.as_ref().map(|_| "<redacted>"))
            .field("auth_key", &self.auth_key.as_ref().map(|_| "<redacted>"))
            .field("system_title", &self.system_title)
            .finish()
    }
}

impl KeyFile {
    /// Parses the text of a key file; `name` (the path) goes into error messages.
    pub fn parse(name: &str, text: &str) -> Result<KeyFile, String> {
        let mut out = KeyFile::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once(['=', ':']) else {
                return Err(format!(
                    "key file {name} line {}: expected `name = HEX`",
                    n + 1
                ));
            };
            let key = key.trim().to_ascii_lowercase().replace('-', "_");
            let slot = match key.as_str() {
                "block_key" => &mut out.block_key,
                "auth_key" => &mut out.auth_key,
                "system_title" => &mut out.system_title,
                _ => {
                    return Err(format!(
                        "key file {name} line {}: unknown name {key:?} (block_key, auth_key, system_title)",
                        n + 1
                    ));
                }
            };
            *slot = Some(value.trim().to_string());
        }
        Ok(out)
    }

    /// The HLS-GMAC authentication these keys give, with a fresh challenge; `what` names
    /// the source in errors (a flag or a config key).
    pub fn authentication(&self, what: &str) -> Result<ClientAuthentication, String> {
        let missing = |name: &str| format!("{what}: no {name}");
        let keys = ::dlms::Keys {
            block_cipher_key: parse_hex::<16>(
                "the block key",
                self.block_key
                    .as_deref()
                    .ok_or_else(|| missing("block_key"))?,
            )?,
            authentication_key: parse_hex::<16>(
                "the auth key",
                self.auth_key
                    .as_deref()
                    .ok_or_else(|| missing("auth_key"))?,
            )?,
        };
        let system_title = parse_hex::<8>(
            "the system title",
            self.system_title
                .as_deref()
                .ok_or_else(|| missing("system_title"))?,
        )?;
        Ok(ClientAuthentication::HlsGmac {
            keys,
            system_title,
            challenge: hls_challenge(),
        })
    }
}

/// Parses hex (spaces, colons and dashes allowed) of exactly `N` bytes; the value is never
/// echoed.
pub fn parse_hex<const N: usize>(what: &str, s: &str) -> Result<[u8; N], String> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !matches!(b, b' ' | b':' | b'-'))
        .collect();
    let invalid = || format!("{what} is not {N} bytes of hex ({} hex digits)", 2 * N);
    if digits.len() != 2 * N {
        return Err(invalid());
    }
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).map_err(|_| invalid())?;
        out[i] = u8::from_str_radix(text, 16).map_err(|_| invalid())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_parse_and_errors_never_echo_values() {
        let k = KeyFile::parse(
            "m.keys",
            "# demo\nblock_key = 000102030405060708090A0B0C0D0E0F\nauth-key: D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF\nsystem_title = 4D4D4D0000000001\n",
        )
        .unwrap();
        assert!(matches!(
            k.authentication("key_file").unwrap(),
            ClientAuthentication::HlsGmac { system_title, .. } if system_title == [0x4D, 0x4D, 0x4D, 0, 0, 0, 0, 1]
        ));
        let shown = format!("{k:?}");
        assert!(
            !shown.contains("0A0B0C") && !shown.contains("D0D1"),
            "{shown}"
        );
        let e = KeyFile::parse("m.keys", "secret_thing = 00\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("secret_thing"), "{e}");
        let e = KeyFile::parse("m.keys", "block_key 00\n").unwrap_err();
        assert!(e.contains("expected `name = HEX`"), "{e}");
        let short = KeyFile::parse("m.keys", "block_key = 00D1D2\n").unwrap();
        let e = short.authentication("key_file").unwrap_err();
        assert!(e.contains("block key") && !e.contains("00D1D2"), "{e}");
        let e = KeyFile::default().authentication("key_file").unwrap_err();
        assert!(e.contains("key_file: no block_key"), "{e}");
    }

    #[test]
    fn hex_is_checked() {
        assert_eq!(
            parse_hex::<8>("t", "4D4D4D00 00000001").unwrap(),
            [0x4D, 0x4D, 0x4D, 0, 0, 0, 0, 1]
        );
        assert!(parse_hex::<8>("t", "4D4D4D").is_err());
        assert!(parse_hex::<2>("t", "zz00").is_err());
    }

    #[test]
    fn a_closed_port_is_a_connect_error_naming_the_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let e = Session::open(
            &SessionConfig::new(addr),
            Association::Public,
            ClientAuthentication::None,
            1,
        )
        .unwrap_err();
        assert_eq!(e.kind(), SessionErrorKind::Connect);
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
    }
}
