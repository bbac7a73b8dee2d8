//! The TCP/UDP wrapper (IEC 62056-47, Green Book 7.3.3.4): an 8-byte header in front of each
//! APDU — version 1, source wPort, destination wPort, length. IANA port 4059.

use alloc::vec::Vec;

use crate::error::{Error, ErrorKind, Result};

/// The registered DLMS/COSEM port.
pub const PORT: u16 = 4059;
/// Header length.
pub const HEADER_LEN: usize = 8;
/// The only wrapper version defined.
pub const VERSION: u16 = 1;

/// A read-only view of a wrapper frame with checked length.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps `buffer` after checking that the header and the announced payload are present.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Packet { buffer };
        p.check_len()?;
        Ok(p)
    }

    /// Checks the header and the announced length against the buffer.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::truncated(HEADER_LEN - b.len(), "wrapper header"));
        }
        let total = HEADER_LEN + self.length() as usize;
        if b.len() < total {
            return Err(Error::truncated(total - b.len(), "wrapper payload"));
        }
        Ok(())
    }

    fn field(&self, at: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    pub fn version(&self) -> u16 {
        self.field(0)
    }
    pub fn source(&self) -> u16 {
        self.field(2)
    }
    pub fn destination(&self) -> u16 {
        self.field(4)
    }
    pub fn length(&self) -> u16 {
        self.field(6)
    }

    /// The APDU bytes.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + self.length() as usize]
    }
}

/// A wrapper frame header, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// wPort of the sender (client SAP for requests, server logical device for responses).
    pub source: u16,
    pub destination: u16,
    pub payload_len: u16,
}

impl Repr {
    /// Decodes and validates the header of a checked packet.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr> {
        packet.check_len()?;
        if packet.version() != VERSION {
            return Err(Error::new(
                ErrorKind::InvalidTag {
                    tag: packet.version() as u8,
                },
                "wrapper version",
            ));
        }
        Ok(Repr {
            source: packet.source(),
            destination: packet.destination(),
            payload_len: packet.length(),
        })
    }

    /// Header plus payload.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len as usize
    }

    /// Writes the header (the caller appends the payload).
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&self.source.to_be_bytes());
        out.extend_from_slice(&self.destination.to_be_bytes());
        out.extend_from_slice(&self.payload_len.to_be_bytes());
    }
}

/// Builds a complete frame around `apdu`.
pub fn frame(source: u16, destination: u16, apdu: &[u8]) -> Result<Vec<u8>> {
    let payload_len = u16::try_from(apdu.len()).map_err(|_| {
        Error::new(
            ErrorKind::LengthOutOfRange {
                length: apdu.len(),
                max: u16::MAX as usize,
            },
            "wrapper payload",
        )
    })?;
    let repr = Repr {
        source,
        destination,
        payload_len,
    };
    let mut out = Vec::with_capacity(repr.buffer_len());
    repr.emit(&mut out);
    out.extend_from_slice(apdu);
    Ok(out)
}

/// One decoded frame from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub source: u16,
    pub destination: u16,
    pub apdu: Vec<u8>,
}

/// Reassembles wrapper frames from a byte stream (TCP delivers arbitrary pieces).
#[derive(Debug, Clone)]
pub struct StreamDecoder {
    buf: Vec<u8>,
    max_payload: usize,
}

impl StreamDecoder {
    /// A decoder that refuses payloads above `max_payload` bytes before buffering them.
    pub fn new(max_payload: usize) -> Self {
        StreamDecoder {
            buf: Vec::new(),
            max_payload,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame; `Ok(None)` with [`StreamDecoder::needed`] telling how many more
    /// bytes are required. An error means the stream is corrupt and should be closed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let p = Packet::new_unchecked(&self.buf[..]);
        if p.version() != VERSION {
            return Err(Error::new(
                ErrorKind::InvalidTag {
                    tag: p.version() as u8,
                },
                "wrapper version",
            ));
        }
        let len = p.length() as usize;
        if len > self.max_payload {
            return Err(Error::new(
                ErrorKind::LengthOutOfRange {
                    length: len,
                    max: self.max_payload,
                },
                "wrapper payload",
            ));
        }
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let frame = Frame {
            source: p.source(),
            destination: p.destination(),
            apdu: p.payload().to_vec(),
        };
        self.buf.drain(..HEADER_LEN + len);
        Ok(Some(frame))
    }

    /// Bytes still needed for the frame being received (0 if one is complete or none started).
    pub fn needed(&self) -> usize {
        if self.buf.len() < HEADER_LEN {
            return if self.buf.is_empty() {
                0
            } else {
                HEADER_LEN - self.buf.len()
            };
        }
        let len = Packet::new_unchecked(&self.buf[..]).length() as usize;
        (HEADER_LEN + len).saturating_sub(self.buf.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::hex;

    // A wrapped get-request from client SAP 16 to logical device 1 (Green Book 7.3.3.4 layout).
    const FRAME: &str = "00 01 00 10 00 01 00 0D C0 01 C1 00 08 00 00 01 00 00 FF 02 00";

    #[test]
    fn parses_a_real_frame() {
        let b = hex(FRAME);
        let p = Packet::new_checked(&b[..]).unwrap();
        let r = Repr::parse(&p).unwrap();
        assert_eq!(
            r,
            Repr {
                source: 16,
                destination: 1,
                payload_len: 13
            }
        );
        assert_eq!(p.payload()[0], 0xC0);
        assert_eq!(frame(16, 1, p.payload()).unwrap(), b);
    }

    #[test]
    fn impossible_lengths_are_errors() {
        assert_eq!(
            Packet::new_checked(&hex("00 01 00")[..])
                .unwrap_err()
                .needed(),
            Some(5)
        );
        assert_eq!(
            Packet::new_checked(&hex("00 01 00 10 00 01 00 0D C0")[..])
                .unwrap_err()
                .needed(),
            Some(12)
        );
        let bad = hex("00 02 00 10 00 01 00 00");
        assert!(Repr::parse(&Packet::new_unchecked(&bad[..])).is_err());
        assert!(frame(1, 1, &[0u8; 70_000]).is_err());
    }

    #[test]
    fn stream_decoder_reassembles_pieces_and_says_what_it_needs() {
        let b = hex(FRAME);
        let mut d = StreamDecoder::new(1024);
        d.push(&b[..3]);
        assert_eq!(d.next_frame().unwrap(), None);
        assert_eq!(d.needed(), 5);
        d.push(&b[3..10]);
        assert_eq!(d.next_frame().unwrap(), None);
        assert_eq!(d.needed(), 11);
        d.push(&b[10..]);
        d.push(&b[..]);
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!((f.source, f.destination, f.apdu.len()), (16, 1, 13));
        assert!(d.next_frame().unwrap().is_some());
        assert_eq!(d.next_frame().unwrap(), None);
        assert_eq!(d.needed(), 0);
    }

    #[test]
    fn oversized_and_wrong_version_streams_are_refused() {
        let mut d = StreamDecoder::new(16);
        d.push(&hex("00 01 00 10 00 01 FF FF"));
        assert!(matches!(
            d.next_frame().unwrap_err().kind(),
            ErrorKind::LengthOutOfRange {
                length: 0xFFFF,
                max: 16
            }
        ));
        let mut d = StreamDecoder::new(16);
        d.push(&hex("47 45 54 20 2F 20 48 54"));
        assert!(
            d.next_frame().is_err(),
            "an HTTP request is not a wrapper frame"
        );
    }
}
