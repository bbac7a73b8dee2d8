//! The frames of the neighbour link: length-prefixed, versioned, bounded, decoded without I/O.
//!
//! ```text
//! offset 0  u32 BE  length of what follows (version .. end), 6 ..= MAX_FRAME_BODY
//! offset 4  u8      version (1)
//! offset 5  u8      kind: 1 envelope, 2 ack, 3 refused
//! offset 6  u32 BE  frame id, chosen by the origin; an ack or refusal repeats it
//! offset 10 ..      envelope: the sealed envelope bytes (1 ..= crate::MAX_ENVELOPE_BYTES)
//!                   ack: nothing
//!                   refused: the reason, UTF-8, at most MAX_REASON_BYTES
//! ```
//!
//! The length is checked before anything is buffered ([`body_len`]), so a peer cannot make
//! the reader allocate more than one envelope's worth; [`Frame::decode`] is the streaming
//! form ("need N more bytes") that the fuzz target (`fuzz/fuzz_targets/neighbour_frame.rs`)
//! and the tests drive over raw bytes. The agent reads frames off its TLS streams with it.

use std::fmt;

/// Frame format version.
pub const VERSION: u8 = 1;
/// Bytes of the length prefix.
pub const PREFIX_LEN: usize = 4;
/// Version, kind and id.
const FIXED_LEN: usize = 6;
/// Longest refusal reason.
pub const MAX_REASON_BYTES: usize = 1024;
/// Longest frame after the prefix: an envelope frame with the largest envelope.
pub const MAX_FRAME_BODY: usize = FIXED_LEN + crate::MAX_ENVELOPE_BYTES;

const KIND_ENVELOPE: u8 = 1;
const KIND_ACK: u8 = 2;
const KIND_REFUSED: u8 = 3;

/// One frame of the neighbour link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Origin → forwarder: a sealed envelope of the origin meter to publish on `relay`.
    Envelope {
        /// Frame id.
        id: u32,
        /// The sealed envelope, unread by the forwarder beyond its header.
        bytes: Vec<u8>,
    },
    /// Forwarder → origin: the forwarder's broker acknowledged (PUBACK) the envelope `id`.
    Ack {
        /// Frame id.
        id: u32,
    },
    /// Forwarder → origin: envelope `id` was not forwarded; the origin keeps it.
    Refused {
        /// Frame id.
        id: u32,
        /// Why, for the origin's log and status.
        reason: String,
    },
}

/// A malformed frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError(String);

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed neighbour frame: {}", self.0)
    }
}

impl std::error::Error for FrameError {}

/// What [`Frame::decode`] found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A whole frame and how many bytes it took.
    Frame(Frame, usize),
    /// The buffer holds a valid beginning; at least this many more bytes are needed.
    Need(usize),
}

/// The length announced by a prefix, checked against the limits before anything is read.
pub fn body_len(prefix: [u8; PREFIX_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len < FIXED_LEN {
        return Err(FrameError(format!(
            "length {len} is shorter than the {FIXED_LEN}-byte frame header"
        )));
    }
    if len > MAX_FRAME_BODY {
        return Err(FrameError(format!(
            "length {len} exceeds the limit of {MAX_FRAME_BODY} bytes"
        )));
    }
    Ok(len)
}

impl Frame {
    /// The frame id.
    pub fn id(&self) -> u32 {
        match self {
            Frame::Envelope { id, .. } | Frame::Ack { id } | Frame::Refused { id, .. } => *id,
        }
    }

    /// Encodes the frame with its prefix. A refusal reason is cut at [`MAX_REASON_BYTES`]
    /// (on a character boundary); an envelope longer than the limit is an error.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let (kind, payload): (u8, &[u8]) = match self {
            Frame::Envelope { bytes, .. } => {
                if bytes.is_empty() || bytes.len() > crate::MAX_ENVELOPE_BYTES {
                    return Err(FrameError(format!(
                        "envelope of {} bytes (1 to {} allowed)",
                        bytes.len(),
                        crate::MAX_ENVELOPE_BYTES
                    )));
                }
                (KIND_ENVELOPE, bytes)
            }
            Frame::Ack { .. } => (KIND_ACK, &[]),
            Frame::Refused { reason, .. } => {
                let mut end = reason.len().min(MAX_REASON_BYTES);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                (KIND_REFUSED, &reason.as_bytes()[..end])
            }
        };
        let len = FIXED_LEN + payload.len();
        let mut out = Vec::with_capacity(PREFIX_LEN + len);
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.push(VERSION);
        out.push(kind);
        out.extend_from_slice(&self.id().to_be_bytes());
        out.extend_from_slice(payload);
        Ok(out)
    }

    /// Parses what follows the prefix (`body_len` bytes, already length-checked).
    pub fn parse_body(body: &[u8]) -> Result<Frame, FrameError> {
        if body.len() < FIXED_LEN || body.len() > MAX_FRAME_BODY {
            return Err(FrameError(format!("frame body of {} bytes", body.len())));
        }
        if body[0] != VERSION {
            return Err(FrameError(format!(
                "version {} (this agent speaks {VERSION})",
                body[0]
            )));
        }
        let id = u32::from_be_bytes([body[2], body[3], body[4], body[5]]);
        let payload = &body[FIXED_LEN..];
        match body[1] {
            KIND_ENVELOPE => {
                if payload.is_empty() {
                    return Err(FrameError(format!("envelope frame {id} is empty")));
                }
                Ok(Frame::Envelope {
                    id,
                    bytes: payload.to_vec(),
                })
            }
            KIND_ACK => {
                if !payload.is_empty() {
                    return Err(FrameError(format!(
                        "ack frame {id} carries {} unexpected bytes",
                        payload.len()
                    )));
                }
                Ok(Frame::Ack { id })
            }
            KIND_REFUSED => {
                if payload.len() > MAX_REASON_BYTES {
                    return Err(FrameError(format!(
                        "refusal reason of {} bytes (at most {MAX_REASON_BYTES})",
                        payload.len()
                    )));
                }
                let reason = std::str::from_utf8(payload).map_err(|_| {
                    FrameError(format!("refusal reason of frame {id} is not UTF-8"))
                })?;
                Ok(Frame::Refused {
                    id,
                    reason: reason.to_owned(),
                })
            }
            other => Err(FrameError(format!("unknown frame kind {other}"))),
        }
    }

    /// Streaming decode of the frame at the start of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Decoded, FrameError> {
        let Some(prefix) = buf.get(..PREFIX_LEN) else {
            return Ok(Decoded::Need(PREFIX_LEN - buf.len()));
        };
        let len = body_len(prefix.try_into().expect("4 bytes"))?;
        let total = PREFIX_LEN + len;
        if buf.len() < total {
            return Ok(Decoded::Need(total - buf.len()));
        }
        Ok(Decoded::Frame(
            Frame::parse_body(&buf[PREFIX_LEN..total])?,
            total,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind() {
        for frame in [
            Frame::Envelope {
                id: 7,
                bytes: vec![1, 2, 3],
            },
            Frame::Ack { id: u32::MAX },
            Frame::Refused {
                id: 0,
                reason: "rate limit".into(),
            },
        ] {
            let bytes = frame.encode().unwrap();
            assert_eq!(
                Frame::decode(&bytes).unwrap(),
                Decoded::Frame(frame.clone(), bytes.len())
            );
            // Every strict prefix asks for more, never errs.
            for cut in 0..bytes.len() {
                match Frame::decode(&bytes[..cut]).unwrap() {
                    Decoded::Need(n) => assert!(n > 0 && cut + n <= bytes.len()),
                    other => panic!("decoded {other:?} from {cut} bytes"),
                }
            }
        }
    }

    #[test]
    fn ack_bytes_are_as_documented() {
        let bytes = Frame::Ack { id: 0x0102_0304 }.encode().unwrap();
        assert_eq!(bytes, [0, 0, 0, 6, 1, 2, 1, 2, 3, 4]);
    }

    #[test]
    fn impossible_lengths_are_refused_before_buffering() {
        let too_long = ((MAX_FRAME_BODY + 1) as u32).to_be_bytes();
        let err = Frame::decode(&too_long).unwrap_err();
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
        let err = Frame::decode(&[0, 0, 0, 5]).unwrap_err();
        assert!(err.to_string().contains("shorter than"), "{err}");
        assert!(Frame::decode(&[0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn malformed_bodies_name_the_problem() {
        let cases: [(&[u8], &str); 5] = [
            (&[0, 0, 0, 6, 2, 2, 0, 0, 0, 1], "version 2"),
            (&[0, 0, 0, 6, 1, 9, 0, 0, 0, 1], "unknown frame kind 9"),
            (&[0, 0, 0, 6, 1, 1, 0, 0, 0, 1], "is empty"),
            (&[0, 0, 0, 7, 1, 2, 0, 0, 0, 1, 0], "unexpected bytes"),
            (&[0, 0, 0, 8, 1, 3, 0, 0, 0, 1, 0xff, 0xfe], "not UTF-8"),
        ];
        for (bytes, want) in cases {
            let err = Frame::decode(bytes).unwrap_err().to_string();
            assert!(err.contains(want), "{bytes:?}: {err}");
        }
    }

    #[test]
    fn long_reasons_are_cut_on_a_character_boundary() {
        let reason = "é".repeat(MAX_REASON_BYTES);
        let bytes = Frame::Refused { id: 1, reason }.encode().unwrap();
        let Decoded::Frame(Frame::Refused { reason, .. }, _) = Frame::decode(&bytes).unwrap()
        else {
            panic!("not a refusal")
        };
        assert!(reason.len() <= MAX_REASON_BYTES && reason.chars().all(|c| c == 'é'));
    }

    #[test]
    fn oversized_envelopes_are_not_encoded() {
        let frame = Frame::Envelope {
            id: 1,
            bytes: vec![0; crate::MAX_ENVELOPE_BYTES + 1],
        };
        assert!(frame.encode().is_err());
    }

    /// What a fuzz target would do, deterministically: mutated and random inputs never panic,
    /// and whatever decodes re-encodes to the same bytes.
    #[test]
    fn arbitrary_bytes_never_panic_and_decoded_frames_round_trip() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let valid = Frame::Refused {
            id: 9,
            reason: "busy".into(),
        }
        .encode()
        .unwrap();
        for round in 0..20_000 {
            let mut buf: Vec<u8> = if round % 2 == 0 {
                let mut v = valid.clone();
                let i = (next() as usize) % v.len();
                v[i] = next() as u8;
                v
            } else {
                (0..(next() % 24)).map(|_| next() as u8).collect()
            };
            if round % 7 == 0 {
                buf.truncate((next() as usize) % (buf.len() + 1));
            }
            match Frame::decode(&buf) {
                Ok(Decoded::Frame(frame, used)) => {
                    assert_eq!(frame.encode().unwrap(), buf[..used], "{buf:?}");
                }
                Ok(Decoded::Need(n)) => assert!(n > 0),
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
    }
}
