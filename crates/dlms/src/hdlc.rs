//! HDLC framing for DLMS (IEC 62056-46, Green Book 8.4): frame format type 3 with the
//! segmentation bit, 1/2/4-byte addresses, the I/RR/RNR/SNRM/UA/DISC/DM/FRMR/UI control
//! field, HCS/FCS (CRC-16/X.25), SNRM parameter negotiation, and a server link with window 1
//! that reassembles segmented APDUs and segments its answers. It is byte-stream agnostic:
//! the same code serves a serial line or HDLC carried over TCP.

use alloc::vec;
use alloc::vec::Vec;

use crate::cursor::Reader;
use crate::error::{Error, ErrorKind, Result};

/// Opening and closing flag.
pub const FLAG: u8 = 0x7E;
/// LLC header in front of an APDU sent by the client (Green Book 8.4.5.3.1).
pub const LLC_REQUEST: [u8; 3] = [0xE6, 0xE6, 0x00];
/// LLC header in front of an APDU sent by the server.
pub const LLC_RESPONSE: [u8; 3] = [0xE6, 0xE7, 0x00];
/// Frame lengths are 11 bits.
pub const MAX_FRAME_LEN: usize = 0x7FF;

/// CRC-16/X.25 (poly 0x1021 reflected, init and xorout 0xFFFF), as IEC 62056-46 annex A
/// prescribes for HCS and FCS. Sent least significant byte first.
pub fn crc16_x25(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= b as u16;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x8408
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// An HDLC address: one byte (client, or server upper address only), two or four bytes
/// (server upper and lower address, 7 resp. 14 bits each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Address {
    One(u8),
    Two { upper: u8, lower: u8 },
    Four { upper: u16, lower: u16 },
}

impl Address {
    /// The logical device (server) or SAP (client).
    pub fn upper(&self) -> u16 {
        match *self {
            Address::One(v) => v as u16,
            Address::Two { upper, .. } => upper as u16,
            Address::Four { upper, .. } => upper,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Address::One(_) => 1,
            Address::Two { .. } => 2,
            Address::Four { .. } => 4,
        }
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    fn read(r: &mut Reader<'_>) -> Result<Address> {
        const CTX: &str = "hdlc address";
        let mut bytes = [0u8; 4];
        let mut n = 0;
        loop {
            let b = r.u8(CTX)?;
            if n == 4 {
                return Err(Error::malformed("address longer than 4 bytes", CTX));
            }
            bytes[n] = b >> 1;
            n += 1;
            if b & 1 == 1 {
                break;
            }
        }
        Ok(match n {
            1 => Address::One(bytes[0]),
            2 => Address::Two {
                upper: bytes[0],
                lower: bytes[1],
            },
            4 => Address::Four {
                upper: ((bytes[0] as u16) << 7) | bytes[1] as u16,
                lower: ((bytes[2] as u16) << 7) | bytes[3] as u16,
            },
            _ => return Err(Error::malformed("three-byte address", CTX)),
        })
    }

    fn emit(&self, out: &mut Vec<u8>) {
        match *self {
            Address::One(v) => out.push((v << 1) | 1),
            Address::Two { upper, lower } => out.extend_from_slice(&[upper << 1, (lower << 1) | 1]),
            Address::Four { upper, lower } => out.extend_from_slice(&[
                ((upper >> 7) as u8 & 0x7f) << 1,
                (upper as u8 & 0x7f) << 1,
                ((lower >> 7) as u8 & 0x7f) << 1,
                ((lower as u8 & 0x7f) << 1) | 1,
            ]),
        }
    }
}

/// The control field (Green Book 8.4.3.4); sequence numbers are modulo 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    I {
        send_seq: u8,
        recv_seq: u8,
        poll: bool,
    },
    Rr {
        recv_seq: u8,
        poll: bool,
    },
    Rnr {
        recv_seq: u8,
        poll: bool,
    },
    Snrm {
        poll: bool,
    },
    Disc {
        poll: bool,
    },
    Ua {
        fin: bool,
    },
    Dm {
        fin: bool,
    },
    Frmr {
        fin: bool,
    },
    Ui {
        poll: bool,
    },
    Unknown(u8),
}

impl Control {
    pub fn from_byte(b: u8) -> Control {
        let pf = b & 0x10 != 0;
        let nr = b >> 5;
        if b & 1 == 0 {
            return Control::I {
                send_seq: (b >> 1) & 7,
                recv_seq: nr,
                poll: pf,
            };
        }
        match b & 0x0f {
            0x01 => {
                return Control::Rr {
                    recv_seq: nr,
                    poll: pf,
                };
            }
            0x05 => {
                return Control::Rnr {
                    recv_seq: nr,
                    poll: pf,
                };
            }
            _ => {}
        }
        match b & !0x10 {
            0x83 => Control::Snrm { poll: pf },
            0x43 => Control::Disc { poll: pf },
            0x63 => Control::Ua { fin: pf },
            0x0F => Control::Dm { fin: pf },
            0x87 => Control::Frmr { fin: pf },
            0x03 => Control::Ui { poll: pf },
            _ => Control::Unknown(b),
        }
    }

    pub fn to_byte(self) -> u8 {
        let pf = |p: bool| if p { 0x10 } else { 0 };
        match self {
            Control::I {
                send_seq,
                recv_seq,
                poll,
            } => ((recv_seq & 7) << 5) | pf(poll) | ((send_seq & 7) << 1),
            Control::Rr { recv_seq, poll } => ((recv_seq & 7) << 5) | pf(poll) | 0x01,
            Control::Rnr { recv_seq, poll } => ((recv_seq & 7) << 5) | pf(poll) | 0x05,
            Control::Snrm { poll } => 0x83 | pf(poll),
            Control::Disc { poll } => 0x43 | pf(poll),
            Control::Ua { fin } => 0x63 | pf(fin),
            Control::Dm { fin } => 0x0F | pf(fin),
            Control::Frmr { fin } => 0x87 | pf(fin),
            Control::Ui { poll } => 0x03 | pf(poll),
            Control::Unknown(b) => b,
        }
    }
}

/// A view of one complete frame, flags included, with checked length and check sequences.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Checks flags, format type, length and the FCS.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Packet { buffer };
        p.check()?;
        Ok(p)
    }

    fn check(&self) -> Result<()> {
        const CTX: &str = "hdlc frame";
        let b = self.buffer.as_ref();
        if b.len() < 3 {
            return Err(Error::truncated(3 - b.len(), CTX));
        }
        if b[0] != FLAG {
            return Err(Error::tag(b[0], CTX));
        }
        if b[1] >> 4 != 0xA {
            return Err(Error::tag(b[1], "hdlc frame format"));
        }
        let len = self.frame_len();
        if len < 7 {
            return Err(Error::new(
                ErrorKind::LengthOutOfRange {
                    length: len,
                    max: MAX_FRAME_LEN,
                },
                CTX,
            ));
        }
        if b.len() < len + 2 {
            return Err(Error::truncated(len + 2 - b.len(), CTX));
        }
        if b[len + 1] != FLAG {
            return Err(Error::tag(b[len + 1], "hdlc closing flag"));
        }
        let body = &b[1..len + 1];
        let fcs = u16::from_le_bytes([body[len - 2], body[len - 1]]);
        if crc16_x25(&body[..len - 2]) != fcs {
            return Err(Error::new(ErrorKind::Checksum, "hdlc fcs"));
        }
        Ok(())
    }

    /// Frame length from the format field: everything between the flags.
    pub fn frame_len(&self) -> usize {
        let b = self.buffer.as_ref();
        (((b[1] & 0x07) as usize) << 8) | b[2] as usize
    }

    /// The segmentation bit: more segments of this APDU follow.
    pub fn segmented(&self) -> bool {
        self.buffer.as_ref()[1] & 0x08 != 0
    }
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repr {
    pub segmented: bool,
    pub destination: Address,
    pub source: Address,
    pub control: Control,
    pub info: Vec<u8>,
}

impl Repr {
    /// Decodes a checked packet, verifying the HCS when an information field is present.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr> {
        packet.check()?;
        let len = packet.frame_len();
        let body = &packet.buffer.as_ref()[1..len + 1];
        let mut r = Reader::new(&body[..len - 2]);
        r.take(2, "hdlc format")?;
        let destination = Address::read(&mut r)?;
        let source = Address::read(&mut r)?;
        let control = Control::from_byte(r.u8("hdlc control")?);
        let header_end = r.position();
        let info = if r.is_empty() {
            Vec::new()
        } else {
            let hcs = r.u16("hdlc hcs")?.swap_bytes();
            if crc16_x25(&body[..header_end]) != hcs {
                return Err(Error::new(ErrorKind::Checksum, "hdlc hcs"));
            }
            r.take(r.remaining(), "hdlc info")?.to_vec()
        };
        Ok(Repr {
            segmented: packet.segmented(),
            destination,
            source,
            control,
            info,
        })
    }

    /// Frame length between the flags.
    pub fn frame_len(&self) -> usize {
        let header = 2 + self.destination.len() + self.source.len() + 1;
        header
            + if self.info.is_empty() {
                0
            } else {
                2 + self.info.len()
            }
            + 2
    }

    /// Bytes [`Repr::emit`] writes, flags included.
    pub fn buffer_len(&self) -> usize {
        self.frame_len() + 2
    }

    /// Encodes the frame with both flags.
    pub fn emit(&self) -> Result<Vec<u8>> {
        let len = self.frame_len();
        if len > MAX_FRAME_LEN {
            return Err(Error::new(
                ErrorKind::LengthOutOfRange {
                    length: len,
                    max: MAX_FRAME_LEN,
                },
                "hdlc frame",
            ));
        }
        let mut out = Vec::with_capacity(len + 2);
        out.push(FLAG);
        out.push(0xA0 | if self.segmented { 0x08 } else { 0 } | (len >> 8) as u8);
        out.push(len as u8);
        self.destination.emit(&mut out);
        self.source.emit(&mut out);
        out.push(self.control.to_byte());
        if !self.info.is_empty() {
            let hcs = crc16_x25(&out[1..]);
            out.extend_from_slice(&hcs.to_le_bytes());
            out.extend_from_slice(&self.info);
        }
        let fcs = crc16_x25(&out[1..]);
        out.extend_from_slice(&fcs.to_le_bytes());
        out.push(FLAG);
        Ok(out)
    }
}

/// Splits a byte stream into frames; bytes before an opening flag are skipped (line noise).
#[derive(Debug, Clone, Default)]
pub struct StreamDecoder {
    buf: Vec<u8>,
    skipped: usize,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes dropped as noise so far.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The next frame; `Ok(None)` when more bytes are needed ([`StreamDecoder::needed`]). A
    /// corrupt frame is returned as an error and dropped, so decoding can continue.
    pub fn next_frame(&mut self) -> Result<Option<Repr>> {
        loop {
            // Drop noise and repeated flags until a plausible frame start.
            let start = self.buf.iter().position(|&b| b == FLAG);
            let Some(start) = start else {
                self.skipped += self.buf.len();
                self.buf.clear();
                return Ok(None);
            };
            if start > 0 {
                self.skipped += start;
                self.buf.drain(..start);
            }
            if self.buf.len() < 3 {
                return Ok(None);
            }
            if self.buf[1] == FLAG {
                // Closing flag of the previous frame followed by an opening flag.
                self.buf.remove(0);
                continue;
            }
            let len = Packet::new_unchecked(&self.buf[..]).frame_len();
            if self.buf[1] >> 4 != 0xA || len < 7 {
                self.buf.remove(0);
                self.skipped += 1;
                return Err(Error::tag(
                    self.buf.first().copied().unwrap_or(0),
                    "hdlc frame format",
                ));
            }
            if self.buf.len() < len + 2 {
                return Ok(None);
            }
            let frame: Vec<u8> = self.buf.drain(..len + 2).collect();
            let result = Packet::new_checked(&frame[..]).and_then(|p| Repr::parse(&p));
            // A closing flag can open the next frame.
            self.buf.insert(0, FLAG);
            return result.map(Some);
        }
    }

    /// Bytes still missing from the frame being received.
    pub fn needed(&self) -> usize {
        let start = self.buf.iter().position(|&b| b == FLAG);
        match start {
            None => 1,
            Some(s) if self.buf.len() - s < 3 => 3 - (self.buf.len() - s),
            Some(s) => {
                let len = Packet::new_unchecked(&self.buf[s..]).frame_len();
                (s + len + 2).saturating_sub(self.buf.len())
            }
        }
    }
}

/// Link parameters negotiated with SNRM/UA (Green Book 8.4.5.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkParameters {
    /// Largest information field we send.
    pub max_info_tx: u16,
    /// Largest information field we accept.
    pub max_info_rx: u16,
    pub window_tx: u32,
    pub window_rx: u32,
}

impl Default for LinkParameters {
    /// The defaults that apply when SNRM carries no parameters.
    fn default() -> Self {
        LinkParameters {
            max_info_tx: 128,
            max_info_rx: 128,
            window_tx: 1,
            window_rx: 1,
        }
    }
}

impl LinkParameters {
    /// Parses the SNRM/UA information field `81 80 len {id len value}*`; absent values keep
    /// their defaults.
    pub fn parse(info: &[u8]) -> Result<LinkParameters> {
        const CTX: &str = "hdlc parameters";
        let mut p = LinkParameters::default();
        if info.is_empty() {
            return Ok(p);
        }
        let mut r = Reader::new(info);
        if r.take(2, CTX)? != [0x81, 0x80] {
            return Err(Error::malformed("expected format 81 80", CTX));
        }
        let n = r.u8(CTX)? as usize;
        let mut g = Reader::new(r.take(n, CTX)?);
        r.finish(CTX)?;
        while !g.is_empty() {
            let id = g.u8(CTX)?;
            let len = g.u8(CTX)? as usize;
            if !matches!(len, 1 | 2 | 4) {
                return Err(Error::new(
                    ErrorKind::LengthOutOfRange {
                        length: len,
                        max: 4,
                    },
                    CTX,
                ));
            }
            let v = g
                .take(len, CTX)?
                .iter()
                .fold(0u32, |a, &b| (a << 8) | b as u32);
            match id {
                0x05 => p.max_info_tx = v.min(MAX_FRAME_LEN as u32) as u16,
                0x06 => p.max_info_rx = v.min(MAX_FRAME_LEN as u32) as u16,
                0x07 => p.window_tx = v,
                0x08 => p.window_rx = v,
                _ => {}
            }
        }
        Ok(p)
    }

    /// Encodes the parameters (two-byte sizes, four-byte windows, as meters commonly do).
    pub fn emit(&self) -> Vec<u8> {
        let mut g = vec![0x05, 0x02];
        g.extend_from_slice(&self.max_info_tx.to_be_bytes());
        g.extend_from_slice(&[0x06, 0x02]);
        g.extend_from_slice(&self.max_info_rx.to_be_bytes());
        g.extend_from_slice(&[0x07, 0x04]);
        g.extend_from_slice(&self.window_tx.to_be_bytes());
        g.extend_from_slice(&[0x08, 0x04]);
        g.extend_from_slice(&self.window_rx.to_be_bytes());
        let mut out = vec![0x81, 0x80, g.len() as u8];
        out.extend_from_slice(&g);
        out
    }
}

/// What the server link produced from one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// Nothing to do (e.g. a frame for another address).
    None,
    /// Send this frame.
    Send(Vec<u8>),
    /// A complete APDU from `client` (LLC header removed): hand it to the COSEM server and pass
    /// its answer to [`HdlcServerLink::send_apdu`].
    Apdu { client: u8, apdu: Vec<u8> },
}

/// The server (secondary station) side of an HDLC link, window size 1.
#[derive(Debug, Clone)]
pub struct HdlcServerLink {
    logical_device: u16,
    max_info_rx: u16,
    connected: Option<Connected>,
}

#[derive(Debug, Clone)]
struct Connected {
    client: u8,
    own_address: Address,
    params: LinkParameters,
    /// V(S) and V(R) (Green Book 8.4.3.4).
    send_seq: u8,
    recv_seq: u8,
    rx: Vec<u8>,
    tx: Vec<Vec<u8>>,
}

impl HdlcServerLink {
    /// A link answering for `logical_device`, accepting information fields up to `max_info_rx`.
    pub fn new(logical_device: u16, max_info_rx: u16) -> Self {
        HdlcServerLink {
            logical_device,
            max_info_rx,
            connected: None,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connected.is_some()
    }

    fn reply(dst: u8, src: Address, control: Control, info: Vec<u8>, segmented: bool) -> LinkEvent {
        let r = Repr {
            segmented,
            destination: Address::One(dst),
            source: src,
            control,
            info,
        };
        match r.emit() {
            Ok(b) => LinkEvent::Send(b),
            Err(_) => LinkEvent::None,
        }
    }

    /// Handles one received frame.
    pub fn receive(&mut self, frame: &Repr) -> LinkEvent {
        if frame.destination.upper() != self.logical_device {
            return LinkEvent::None;
        }
        let Address::One(client) = frame.source else {
            return LinkEvent::None;
        };
        match frame.control {
            Control::Snrm { .. } => {
                let Ok(proposed) = LinkParameters::parse(&frame.info) else {
                    return Self::reply(
                        client,
                        frame.destination,
                        Control::Frmr { fin: true },
                        Vec::new(),
                        false,
                    );
                };
                // The client's rx is our tx; never promise more than we can buffer.
                let params = LinkParameters {
                    max_info_tx: proposed.max_info_rx,
                    max_info_rx: proposed.max_info_tx.min(self.max_info_rx),
                    window_tx: 1,
                    window_rx: 1,
                };
                self.connected = Some(Connected {
                    client,
                    own_address: frame.destination,
                    params,
                    send_seq: 0,
                    recv_seq: 0,
                    rx: Vec::new(),
                    tx: Vec::new(),
                });
                Self::reply(
                    client,
                    frame.destination,
                    Control::Ua { fin: true },
                    params.emit(),
                    false,
                )
            }
            Control::Disc { .. } => {
                let was = self.connected.take().is_some();
                let control = if was {
                    Control::Ua { fin: true }
                } else {
                    Control::Dm { fin: true }
                };
                Self::reply(client, frame.destination, control, Vec::new(), false)
            }
            Control::I { send_seq, .. } => {
                let Some(c) = self.connected.as_mut().filter(|c| c.client == client) else {
                    return Self::reply(
                        client,
                        frame.destination,
                        Control::Dm { fin: true },
                        Vec::new(),
                        false,
                    );
                };
                if send_seq != c.recv_seq {
                    // Out of sequence (a repeat): ask for the one we expect.
                    let rr = Control::Rr {
                        recv_seq: c.recv_seq,
                        poll: true,
                    };
                    return Self::reply(client, c.own_address, rr, Vec::new(), false);
                }
                c.recv_seq = (c.recv_seq + 1) & 7;
                if frame.info.len() > c.params.max_info_rx as usize
                    || c.rx.len() + frame.info.len() > 0xFFFF
                {
                    c.rx.clear();
                    return Self::reply(
                        client,
                        c.own_address,
                        Control::Frmr { fin: true },
                        Vec::new(),
                        false,
                    );
                }
                c.rx.extend_from_slice(&frame.info);
                if frame.segmented {
                    let rr = Control::Rr {
                        recv_seq: c.recv_seq,
                        poll: true,
                    };
                    return Self::reply(client, c.own_address, rr, Vec::new(), false);
                }
                let mut apdu = core::mem::take(&mut c.rx);
                if apdu.starts_with(&LLC_REQUEST) {
                    apdu.drain(..3);
                }
                LinkEvent::Apdu { client, apdu }
            }
            Control::Rr { recv_seq, .. } => {
                let Some(c) = self.connected.as_mut().filter(|c| c.client == client) else {
                    return Self::reply(
                        client,
                        frame.destination,
                        Control::Dm { fin: true },
                        Vec::new(),
                        false,
                    );
                };
                if recv_seq == c.send_seq && !c.tx.is_empty() {
                    let info = c.tx.remove(0);
                    let more = !c.tx.is_empty();
                    let control = Control::I {
                        send_seq: c.send_seq,
                        recv_seq: c.recv_seq,
                        poll: true,
                    };
                    c.send_seq = (c.send_seq + 1) & 7;
                    return Self::reply(client, c.own_address, control, info, more);
                }
                let rr = Control::Rr {
                    recv_seq: c.recv_seq,
                    poll: true,
                };
                Self::reply(client, c.own_address, rr, Vec::new(), false)
            }
            // Receiver not ready: keep the queued segments until the client sends RR.
            Control::Rnr { .. } => LinkEvent::None,
            _ => Self::reply(
                client,
                frame.destination,
                Control::Frmr { fin: true },
                Vec::new(),
                false,
            ),
        }
    }

    /// Sends an APDU: returns the first I-frame; later segments go out as the client polls
    /// with RR (window 1).
    pub fn send_apdu(&mut self, apdu: &[u8]) -> Result<Vec<u8>> {
        let c = self.connected.as_mut().ok_or(Error::new(
            ErrorKind::State("hdlc link not connected"),
            "hdlc",
        ))?;
        let mut data = LLC_RESPONSE.to_vec();
        data.extend_from_slice(apdu);
        let size = (c.params.max_info_tx as usize).max(16);
        c.tx = data.chunks(size).map(<[u8]>::to_vec).collect();
        let info = c.tx.remove(0);
        let more = !c.tx.is_empty();
        let control = Control::I {
            send_seq: c.send_seq,
            recv_seq: c.recv_seq,
            poll: true,
        };
        c.send_seq = (c.send_seq + 1) & 7;
        Repr {
            segmented: more,
            destination: Address::One(c.client),
            source: c.own_address,
            control,
            info,
        }
        .emit()
    }
}

/// What the client link produced from one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientLinkEvent {
    /// Nothing to do.
    None,
    /// The server accepted SNRM with these parameters (ours, as seen from the client).
    Connected(LinkParameters),
    /// Send this frame (an RR asking for the next segment, or our next segment).
    Send(Vec<u8>),
    /// A complete APDU from the server, LLC header removed.
    Apdu(Vec<u8>),
    /// The server confirmed DISC or answered DM.
    Disconnected,
}

/// The client (primary station) side of an HDLC link, window size 1: SNRM/UA, segmentation of
/// requests, reassembly of responses, DISC.
#[derive(Debug, Clone)]
pub struct HdlcClientLink {
    client: u8,
    server: Address,
    proposed: LinkParameters,
    params: Option<LinkParameters>,
    send_seq: u8,
    recv_seq: u8,
    rx: Vec<u8>,
    tx: Vec<Vec<u8>>,
}

impl HdlcClientLink {
    /// A link from client SAP `client` to `server`, proposing `proposed` in SNRM.
    pub fn new(client: u8, server: Address, proposed: LinkParameters) -> Self {
        HdlcClientLink {
            client,
            server,
            proposed,
            params: None,
            send_seq: 0,
            recv_seq: 0,
            rx: Vec::new(),
            tx: Vec::new(),
        }
    }

    fn frame(&self, control: Control, info: Vec<u8>, segmented: bool) -> Result<Vec<u8>> {
        Repr {
            segmented,
            destination: self.server,
            source: Address::One(self.client),
            control,
            info,
        }
        .emit()
    }

    /// The parameters agreed with the server, once connected.
    pub fn parameters(&self) -> Option<LinkParameters> {
        self.params
    }

    /// The SNRM frame that opens the link.
    pub fn snrm(&mut self) -> Result<Vec<u8>> {
        self.params = None;
        self.frame(Control::Snrm { poll: true }, self.proposed.emit(), false)
    }

    /// The DISC frame that closes the link.
    pub fn disc(&mut self) -> Result<Vec<u8>> {
        self.frame(Control::Disc { poll: true }, Vec::new(), false)
    }

    /// Sends an APDU: returns the first I-frame; further segments go out as the server
    /// acknowledges with RR.
    pub fn send_apdu(&mut self, apdu: &[u8]) -> Result<Vec<u8>> {
        let params = self.params.ok_or(Error::new(
            ErrorKind::State("hdlc link not connected"),
            "hdlc client",
        ))?;
        let mut data = LLC_REQUEST.to_vec();
        data.extend_from_slice(apdu);
        self.tx = data
            .chunks((params.max_info_tx as usize).max(16))
            .map(<[u8]>::to_vec)
            .collect();
        self.rx.clear();
        self.next_segment()
    }

    fn next_segment(&mut self) -> Result<Vec<u8>> {
        let info = self.tx.remove(0);
        let more = !self.tx.is_empty();
        let control = Control::I {
            send_seq: self.send_seq,
            recv_seq: self.recv_seq,
            poll: true,
        };
        self.send_seq = (self.send_seq + 1) & 7;
        self.frame(control, info, more)
    }

    /// Handles one frame from the server.
    pub fn receive(&mut self, frame: &Repr) -> Result<ClientLinkEvent> {
        const CTX: &str = "hdlc client";
        if frame.destination != Address::One(self.client) {
            return Ok(ClientLinkEvent::None);
        }
        match frame.control {
            Control::Ua { .. } if self.params.is_none() => {
                let server = LinkParameters::parse(&frame.info)?;
                // The server's transmit size is what we receive, and the other way round.
                let agreed = LinkParameters {
                    max_info_tx: server.max_info_rx.min(self.proposed.max_info_tx),
                    max_info_rx: server.max_info_tx.min(self.proposed.max_info_rx),
                    window_tx: 1,
                    window_rx: 1,
                };
                self.params = Some(agreed);
                self.send_seq = 0;
                self.recv_seq = 0;
                Ok(ClientLinkEvent::Connected(agreed))
            }
            Control::Ua { .. } | Control::Dm { .. } => {
                let was_connecting = self.params.is_none();
                self.params = None;
                if was_connecting && matches!(frame.control, Control::Dm { .. }) {
                    return Err(Error::new(
                        ErrorKind::Peer("hdlc link refused (DM)", 0x1F),
                        CTX,
                    ));
                }
                Ok(ClientLinkEvent::Disconnected)
            }
            Control::Frmr { .. } => Err(Error::new(
                ErrorKind::Peer("hdlc frame rejected (FRMR)", 0x97),
                CTX,
            )),
            Control::Rr { recv_seq, .. } => {
                if recv_seq == self.send_seq && !self.tx.is_empty() {
                    return Ok(ClientLinkEvent::Send(self.next_segment()?));
                }
                Ok(ClientLinkEvent::None)
            }
            Control::I { send_seq, .. } => {
                if send_seq != self.recv_seq {
                    return Err(Error::new(
                        ErrorKind::Peer("hdlc frame out of sequence", send_seq),
                        CTX,
                    ));
                }
                self.recv_seq = (self.recv_seq + 1) & 7;
                if self.rx.len() + frame.info.len() > 0xFFFF {
                    return Err(Error::new(
                        ErrorKind::LengthOutOfRange {
                            length: self.rx.len(),
                            max: 0xFFFF,
                        },
                        CTX,
                    ));
                }
                self.rx.extend_from_slice(&frame.info);
                if frame.segmented {
                    let rr = self.frame(
                        Control::Rr {
                            recv_seq: self.recv_seq,
                            poll: true,
                        },
                        Vec::new(),
                        false,
                    )?;
                    return Ok(ClientLinkEvent::Send(rr));
                }
                let mut apdu = core::mem::take(&mut self.rx);
                if apdu.starts_with(&LLC_RESPONSE) {
                    apdu.drain(..3);
                }
                Ok(ClientLinkEvent::Apdu(apdu))
            }
            _ => Ok(ClientLinkEvent::None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::hex;

    #[test]
    fn client_and_server_links_talk_through_segmentation_both_ways() {
        let mut server = HdlcServerLink::new(1, 48);
        let mut client = HdlcClientLink::new(
            0x10,
            Address::Two {
                upper: 1,
                lower: 0x11,
            },
            LinkParameters {
                max_info_tx: 40,
                max_info_rx: 24,
                ..LinkParameters::default()
            },
        );
        // Delivers a frame to the other side and returns what it sends back.
        fn to_server(server: &mut HdlcServerLink, bytes: &[u8]) -> LinkEvent {
            server.receive(&parse(bytes))
        }
        let LinkEvent::Send(ua) = to_server(&mut server, &client.snrm().unwrap()) else {
            panic!()
        };
        let ClientLinkEvent::Connected(p) = client.receive(&parse(&ua)).unwrap() else {
            panic!()
        };
        assert_eq!((p.max_info_tx, p.max_info_rx), (40, 24));
        let request: Vec<u8> = (0..100).collect();
        let mut frame = client.send_apdu(&request).unwrap();
        let apdu = loop {
            match to_server(&mut server, &frame) {
                LinkEvent::Send(rr) => {
                    let ClientLinkEvent::Send(next) = client.receive(&parse(&rr)).unwrap() else {
                        panic!()
                    };
                    frame = next;
                }
                LinkEvent::Apdu { apdu, .. } => break apdu,
                LinkEvent::None => panic!(),
            }
        };
        assert_eq!(apdu, request);
        let answer: Vec<u8> = (0..90).rev().collect();
        let mut frame = server.send_apdu(&answer).unwrap();
        let got = loop {
            assert!(
                parse(&frame).info.len() <= 24,
                "server honours our max_info_rx"
            );
            match client.receive(&parse(&frame)).unwrap() {
                ClientLinkEvent::Send(rr) => {
                    let LinkEvent::Send(next) = to_server(&mut server, &rr) else {
                        panic!()
                    };
                    frame = next;
                }
                ClientLinkEvent::Apdu(a) => break a,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(got, answer);
        let LinkEvent::Send(ua) = to_server(&mut server, &client.disc().unwrap()) else {
            panic!()
        };
        assert_eq!(
            client.receive(&parse(&ua)).unwrap(),
            ClientLinkEvent::Disconnected
        );
        assert!(client.send_apdu(&[1]).is_err());
    }

    #[test]
    fn crc_matches_the_x25_check_value() {
        // CRC-16/X.25 check value for "123456789" (catalogue of parametrised CRC algorithms).
        assert_eq!(crc16_x25(b"123456789"), 0x906E);
    }

    #[test]
    fn snrm_frame_byte_exact() {
        // SNRM from client 0x10 to server 1 (one-byte addresses), no parameters:
        // 7E A0 07 03 21 93 0F 01 7E as in Green Book 8.4 examples / Gurux traces.
        let bytes = hex("7E A0 07 03 21 93 0F 01 7E");
        let p = Packet::new_checked(&bytes[..]).unwrap();
        let r = Repr::parse(&p).unwrap();
        assert_eq!(r.destination, Address::One(1));
        assert_eq!(r.source, Address::One(0x10));
        assert_eq!(r.control, Control::Snrm { poll: true });
        assert_eq!(r.emit().unwrap(), bytes);
    }

    #[test]
    fn i_frame_with_four_byte_address_round_trips() {
        let r = Repr {
            segmented: true,
            destination: Address::Four {
                upper: 1,
                lower: 0x3FFF,
            },
            source: Address::One(0x10),
            control: Control::I {
                send_seq: 3,
                recv_seq: 5,
                poll: true,
            },
            info: hex("E6 E6 00 C0 01 C1 00 08 00 00 01 00 00 FF 02 00"),
        };
        let b = r.emit().unwrap();
        assert_eq!(b.len(), r.buffer_len());
        assert_eq!(b[1] & 0x08, 0x08, "segmentation bit");
        assert_eq!(
            Repr::parse(&Packet::new_checked(&b[..]).unwrap()).unwrap(),
            r
        );
    }

    #[test]
    fn control_bytes_round_trip() {
        for b in 0..=255u8 {
            assert_eq!(Control::from_byte(b).to_byte(), b, "{b:02x}");
        }
        assert_eq!(Control::from_byte(0x73), Control::Ua { fin: true });
        assert_eq!(Control::from_byte(0x1F), Control::Dm { fin: true });
        assert_eq!(
            Control::from_byte(0x51),
            Control::Rr {
                recv_seq: 2,
                poll: true
            }
        );
    }

    #[test]
    fn corrupt_frames_are_errors() {
        let good = hex("7E A0 07 03 21 93 0F 01 7E");
        let mut bad = good.clone();
        bad[5] ^= 1;
        assert_eq!(
            Packet::new_checked(&bad[..]).unwrap_err().kind(),
            &ErrorKind::Checksum
        );
        assert_eq!(
            Packet::new_checked(&good[..5]).unwrap_err().needed(),
            Some(4)
        );
        assert!(
            Packet::new_checked(&hex("7E B0 07 03 21 93 0F 01 7E")[..]).is_err(),
            "format type"
        );
        assert!(
            Packet::new_checked(&hex("7E A0 02 03 7E")[..]).is_err(),
            "impossible length"
        );
        assert!(
            Packet::new_checked(&hex("7E A0 07 03 21 93 0F 01 00")[..]).is_err(),
            "closing flag"
        );
        // An I-frame whose HCS is wrong but FCS right.
        let mut r = Repr {
            segmented: false,
            destination: Address::One(1),
            source: Address::One(0x10),
            control: Control::I {
                send_seq: 0,
                recv_seq: 0,
                poll: true,
            },
            info: vec![1, 2, 3],
        }
        .emit()
        .unwrap();
        r[6] ^= 0xFF;
        let len = r.len();
        let fcs = crc16_x25(&r[1..len - 3]).to_le_bytes();
        r[len - 3] = fcs[0];
        r[len - 2] = fcs[1];
        assert_eq!(
            Repr::parse(&Packet::new_checked(&r[..]).unwrap())
                .unwrap_err()
                .context(),
            "hdlc hcs"
        );
        // Three-byte addresses do not exist.
        let three = Repr {
            segmented: false,
            destination: Address::One(1),
            source: Address::One(1),
            control: Control::Rr {
                recv_seq: 0,
                poll: true,
            },
            info: vec![],
        };
        let mut b = three.emit().unwrap();
        b.splice(3..4, [0x02, 0x02, 0x03]);
        b[2] += 2;
        let n = b.len();
        let fcs = crc16_x25(&b[1..n - 3]).to_le_bytes();
        b[n - 3] = fcs[0];
        b[n - 2] = fcs[1];
        assert!(Repr::parse(&Packet::new_checked(&b[..]).unwrap()).is_err());
    }

    #[test]
    fn snrm_parameters_parse_and_emit() {
        let info = hex("81 80 14 05 02 00 80 06 02 00 80 07 04 00 00 00 01 08 04 00 00 00 01");
        let p = LinkParameters::parse(&info).unwrap();
        assert_eq!(p, LinkParameters::default());
        assert_eq!(p.emit(), info);
        let short = LinkParameters::parse(&hex("81 80 06 05 01 F8 06 01 F8")).unwrap();
        assert_eq!(
            (short.max_info_tx, short.max_info_rx, short.window_tx),
            (0xF8, 0xF8, 1)
        );
        assert!(LinkParameters::parse(&hex("81 80 04 05 03 00 00")).is_err());
        assert!(LinkParameters::parse(&hex("81 80 09 05")).is_err());
    }

    #[test]
    fn stream_decoder_skips_noise_and_shares_flags() {
        let f = hex("7E A0 07 03 21 93 0F 01 7E");
        let mut d = StreamDecoder::new();
        d.push(&[0x00, 0x55]);
        d.push(&f[..4]);
        assert_eq!(d.next_frame().unwrap(), None);
        assert_eq!(d.needed(), 5);
        d.push(&f[4..]);
        d.push(&f[1..]); // second frame shares the first one's closing flag
        assert!(d.next_frame().unwrap().is_some());
        assert!(d.next_frame().unwrap().is_some());
        assert_eq!(d.next_frame().unwrap(), None);
        assert_eq!(d.skipped(), 2);
    }

    fn client_frame(control: Control, info: &[u8], segmented: bool) -> Repr {
        Repr {
            segmented,
            destination: Address::One(1),
            source: Address::One(0x10),
            control,
            info: info.to_vec(),
        }
    }

    fn parse(b: &[u8]) -> Repr {
        Repr::parse(&Packet::new_checked(b).unwrap()).unwrap()
    }

    #[test]
    fn server_link_connects_reassembles_segments_and_segments_answers() {
        let mut link = HdlcServerLink::new(1, 128);
        // Not connected: an I-frame gets DM.
        let LinkEvent::Send(dm) = link.receive(&client_frame(
            Control::I {
                send_seq: 0,
                recv_seq: 0,
                poll: true,
            },
            &[1],
            false,
        )) else {
            panic!()
        };
        assert_eq!(parse(&dm).control, Control::Dm { fin: true });
        let snrm = client_frame(
            Control::Snrm { poll: true },
            &hex("81 80 08 05 02 00 40 06 02 00 20"),
            false,
        );
        let LinkEvent::Send(ua) = link.receive(&snrm) else {
            panic!()
        };
        let ua = parse(&ua);
        assert_eq!(ua.control, Control::Ua { fin: true });
        let agreed = LinkParameters::parse(&ua.info).unwrap();
        assert_eq!((agreed.max_info_tx, agreed.max_info_rx), (0x20, 0x40));
        // A two-segment request.
        let LinkEvent::Send(rr) = link.receive(&client_frame(
            Control::I {
                send_seq: 0,
                recv_seq: 0,
                poll: true,
            },
            &hex("E6 E6 00 C0 01"),
            true,
        )) else {
            panic!()
        };
        assert_eq!(
            parse(&rr).control,
            Control::Rr {
                recv_seq: 1,
                poll: true
            }
        );
        let ev = link.receive(&client_frame(
            Control::I {
                send_seq: 1,
                recv_seq: 0,
                poll: true,
            },
            &hex("C1 00 08"),
            false,
        ));
        assert_eq!(
            ev,
            LinkEvent::Apdu {
                client: 0x10,
                apdu: hex("C0 01 C1 00 08")
            }
        );
        // A 70-byte answer goes out in 32-byte segments, one per RR.
        let answer = vec![0xC4; 67];
        let first = parse(&link.send_apdu(&answer).unwrap());
        assert!(first.segmented);
        assert_eq!(first.info.len(), 32);
        assert_eq!(&first.info[..3], &LLC_RESPONSE);
        assert_eq!(
            first.control,
            Control::I {
                send_seq: 0,
                recv_seq: 2,
                poll: true
            }
        );
        let mut got = first.info.clone();
        loop {
            let LinkEvent::Send(next) = link.receive(&client_frame(
                Control::Rr {
                    recv_seq: (got.len() / 32) as u8,
                    poll: true,
                },
                &[],
                false,
            )) else {
                panic!()
            };
            let next = parse(&next);
            got.extend_from_slice(&next.info);
            if !next.segmented {
                break;
            }
        }
        assert_eq!(&got[3..], &answer[..]);
        // A repeated I-frame (wrong N(S)) is answered with RR for the expected one.
        let LinkEvent::Send(rr) = link.receive(&client_frame(
            Control::I {
                send_seq: 1,
                recv_seq: 3,
                poll: true,
            },
            &[1],
            false,
        )) else {
            panic!()
        };
        assert_eq!(
            parse(&rr).control,
            Control::Rr {
                recv_seq: 2,
                poll: true
            }
        );
        // Frames for another logical device are ignored; DISC ends the link.
        let other = Repr {
            destination: Address::One(5),
            ..client_frame(Control::Disc { poll: true }, &[], false)
        };
        assert_eq!(link.receive(&other), LinkEvent::None);
        let LinkEvent::Send(ua) =
            link.receive(&client_frame(Control::Disc { poll: true }, &[], false))
        else {
            panic!()
        };
        assert_eq!(parse(&ua).control, Control::Ua { fin: true });
        assert!(!link.is_connected());
    }
}
