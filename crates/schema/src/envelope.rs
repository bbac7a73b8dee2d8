//! The sealed envelope (DESIGN §3.3): a small CBOR header in the clear plus an AEAD ciphertext
//! of the payload, authenticated with the exact header bytes as associated data.
//!
//! Wire form: a CBOR array of two byte strings, `[header, ciphertext]`. The header is a CBOR
//! map `{v, meter, boot_id, seq, alg, nonce, dir}`. Because the associated data is the header
//! *as received*, any change to it (a flipped bit, an extra field, a re-encoding) fails the tag.

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use ciborium::Value;

use crate::cbor;
use crate::command::{self, Command, RejectedCommand};
use crate::record::Batch;
use crate::{Error, ErrorKind, MeterId};

/// Envelope format version written by this build.
pub const ENVELOPE_VERSION: u64 = 1;
/// The one AEAD algorithm of version 1.
pub const ALG_XCHACHA20POLY1305: &str = "xchacha20poly1305";
/// Largest envelope accepted, checked before any decoding. 256 KiB holds a full batch of
/// three-phase readings with room to spare and keeps a hostile publisher cheap to refuse.
pub const MAX_ENVELOPE_BYTES: usize = 256 * 1024;
/// Largest header accepted.
pub const MAX_HEADER_BYTES: usize = 512;
/// XChaCha20 nonce length.
const NONCE_LEN: usize = 24;
/// Poly1305 tag length.
const TAG_LEN: usize = 16;
/// Largest plaintext `seal` accepts, so that what it seals is always openable.
pub const MAX_PLAINTEXT_BYTES: usize = MAX_ENVELOPE_BYTES - MAX_HEADER_BYTES - TAG_LEN - 16;

/// The 256-bit key a meter shares with the server only (issued at enrolment).
#[derive(Clone, PartialEq, Eq)]
pub struct MeterKey([u8; 32]);

impl MeterKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A fresh key from the operating system's random generator.
    pub fn generate() -> Self {
        Self(XChaCha20Poly1305::generate_key(&mut OsRng).into())
    }

    /// Parses 64 hex digits (surrounding whitespace ignored, as in a key file).
    pub fn from_hex(text: &str) -> Result<Self, Error> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(Error::new(ErrorKind::InvalidKey(format!(
                "expected 64 hex digits, found {} characters",
                text.len()
            ))));
        }
        let mut out = [0u8; 32];
        for (i, pair) in text.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok());
            out[i] = hex.ok_or_else(|| {
                Error::new(ErrorKind::InvalidKey(format!(
                    "not a hex digit pair at position {}",
                    i * 2
                )))
            })?;
        }
        Ok(Self(out))
    }

    /// The key as 64 lowercase hex digits (for key files; never log it).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(&self.0))
    }
}

impl std::fmt::Debug for MeterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets never appear in logs (DESIGN §4).
        f.write_str("MeterKey(<redacted>)")
    }
}

/// Which way an envelope travels; part of the authenticated header so an uplink envelope
/// cannot be reflected back to the meter as a command, or the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Meter to server: a batch of records.
    Up,
    /// Server to meter: commands.
    Down,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// The authenticated, unencrypted part of an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Format version.
    pub v: u64,
    /// The meter the payload belongs to.
    pub meter: MeterId,
    /// Counter epoch (up) or the server's command epoch (down).
    pub boot_id: u64,
    /// First record `seq` (up) or the command sequence number (down).
    pub seq: u64,
    /// AEAD algorithm name.
    pub alg: String,
    /// Random 192-bit nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Direction.
    pub dir: Direction,
}

impl Header {
    fn encode(&self) -> Result<Vec<u8>, Error> {
        let text = |s: &str| Value::Text(s.to_owned());
        let map = Value::Map(vec![
            (text("v"), Value::Integer(self.v.into())),
            (text("meter"), text(self.meter.as_str())),
            (text("boot_id"), Value::Integer(self.boot_id.into())),
            (text("seq"), Value::Integer(self.seq.into())),
            (text("alg"), text(&self.alg)),
            (text("nonce"), Value::Bytes(self.nonce.to_vec())),
            (text("dir"), text(self.dir.as_str())),
        ]);
        cbor::to_vec("envelope header", &map)
    }

    fn decode(bytes: &[u8]) -> Result<Header, Error> {
        const WHAT: &str = "envelope header";
        if bytes.len() > MAX_HEADER_BYTES {
            return Err(Error::too_large(WHAT, bytes.len(), MAX_HEADER_BYTES));
        }
        let Value::Map(map) = cbor::value_from_slice(WHAT, bytes)? else {
            return Err(Error::malformed(WHAT, "not a map"));
        };
        // Version first: a newer header may have a different shape altogether.
        let v = cbor::map_u64(WHAT, &map, "v")?;
        if v != ENVELOPE_VERSION {
            return Err(Error::new(ErrorKind::UnsupportedVersion(v)));
        }
        let alg = cbor::map_text(WHAT, &map, "alg")?;
        if alg != ALG_XCHACHA20POLY1305 {
            let shown: String = alg.chars().take(40).collect();
            return Err(Error::new(ErrorKind::UnsupportedAlgorithm(shown)));
        }
        let nonce = cbor::map_bytes(WHAT, &map, "nonce")?;
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| {
            Error::malformed(
                WHAT,
                format_args!("nonce is {} bytes, expected {NONCE_LEN}", nonce.len()),
            )
        })?;
        let dir = match cbor::map_text(WHAT, &map, "dir")? {
            "up" => Direction::Up,
            "down" => Direction::Down,
            _ => return Err(Error::malformed(WHAT, "dir is neither up nor down")),
        };
        Ok(Header {
            v,
            meter: MeterId::parse(cbor::map_text(WHAT, &map, "meter")?)?,
            boot_id: cbor::map_u64(WHAT, &map, "boot_id")?,
            seq: cbor::map_u64(WHAT, &map, "seq")?,
            alg: alg.to_owned(),
            nonce,
            dir,
        })
    }
}

/// A parsed but not yet opened envelope. Parsing needs no key: a relaying meter or the
/// ingest router can read the header (meter, boot, seq) without seeing the payload.
#[derive(Debug, Clone)]
pub struct Envelope {
    header: Header,
    header_bytes: Vec<u8>,
    ciphertext: Vec<u8>,
}

impl Envelope {
    /// Seals `plaintext` for `meter` with a fresh random nonce.
    ///
    /// Nonces are 192 random bits from the operating system (XChaCha20-Poly1305): the chance
    /// of a repeat stays negligible (about 2^-97 after 2^48 envelopes under one key), so
    /// uniqueness needs no state that a reboot, a restored backup or the server sealing under
    /// the same key could roll back.
    pub fn seal(
        key: &MeterKey,
        dir: Direction,
        meter: &MeterId,
        boot_id: u64,
        seq: u64,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, Error> {
        if plaintext.len() > MAX_PLAINTEXT_BYTES {
            return Err(Error::too_large(
                "plaintext",
                plaintext.len(),
                MAX_PLAINTEXT_BYTES,
            ));
        }
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let header = Header {
            v: ENVELOPE_VERSION,
            meter: meter.clone(),
            boot_id,
            seq,
            alg: ALG_XCHACHA20POLY1305.to_owned(),
            nonce: nonce.into(),
            dir,
        };
        let header_bytes = header.encode()?;
        let ciphertext = key
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &header_bytes,
                },
            )
            .map_err(|_| Error::malformed("plaintext", "encryption failed"))?;
        cbor::to_vec(
            "envelope",
            &Value::Array(vec![Value::Bytes(header_bytes), Value::Bytes(ciphertext)]),
        )
    }

    /// Parses the outer structure and the header. The length limit is checked before any
    /// decoding.
    pub fn parse(bytes: &[u8]) -> Result<Envelope, Error> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(Error::too_large(
                "envelope",
                bytes.len(),
                MAX_ENVELOPE_BYTES,
            ));
        }
        let Value::Array(items) = cbor::value_from_slice("envelope", bytes)? else {
            return Err(Error::malformed("envelope", "not an array"));
        };
        let [Value::Bytes(header_bytes), Value::Bytes(ciphertext)] = <[Value; 2]>::try_from(items)
            .map_err(|items| {
                Error::malformed(
                    "envelope",
                    format_args!("expected [header, ciphertext], found {} items", items.len()),
                )
            })?
        else {
            return Err(Error::malformed("envelope", "items are not byte strings"));
        };
        if ciphertext.len() < TAG_LEN {
            return Err(Error::malformed(
                "envelope",
                "ciphertext shorter than the tag",
            ));
        }
        let header = Header::decode(&header_bytes)?;
        Ok(Envelope {
            header,
            header_bytes,
            ciphertext,
        })
    }

    /// The authenticated header. Not yet verified until [`open`](Self::open) succeeds.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Verifies and decrypts. `expected_meter` is the meter the envelope came from (topic
    /// and certificate) and the owner of `key`.
    pub fn open(
        &self,
        key: &MeterKey,
        expected_meter: &MeterId,
        expected_dir: Direction,
    ) -> Result<Vec<u8>, Error> {
        if &self.header.meter != expected_meter {
            return Err(Error::new(ErrorKind::WrongMeter {
                expected: expected_meter.to_string(),
                found: self.header.meter.to_string(),
            }));
        }
        if self.header.dir != expected_dir {
            return Err(Error::new(ErrorKind::WrongDirection));
        }
        key.cipher()
            .decrypt(
                XNonce::from_slice(&self.header.nonce),
                Payload {
                    msg: &self.ciphertext,
                    aad: &self.header_bytes,
                },
            )
            .map_err(|_| Error::new(ErrorKind::TagMismatch))
    }
}

/// Seals a batch of records into an uplink envelope.
pub fn seal_batch(key: &MeterKey, batch: &Batch) -> Result<Vec<u8>, Error> {
    let plaintext = batch.encode_records()?;
    let first = batch.first_seq().unwrap_or_default();
    Envelope::seal(
        key,
        Direction::Up,
        &batch.meter,
        batch.boot_id,
        first,
        &plaintext,
    )
}

/// Parses, verifies and decodes an uplink envelope from `meter`.
pub fn open_batch(key: &MeterKey, meter: &MeterId, bytes: &[u8]) -> Result<Batch, Error> {
    let envelope = Envelope::parse(bytes)?;
    let plaintext = envelope.open(key, meter, Direction::Up)?;
    let h = envelope.header();
    Batch::decode_records(h.meter.clone(), h.boot_id, h.seq, &plaintext)
}

/// Seals commands into a `down` envelope; `epoch` and `seq` are the server's command
/// counters for this meter (the meter's replay window tracks them).
pub fn seal_commands(
    key: &MeterKey,
    meter: &MeterId,
    epoch: u64,
    seq: u64,
    commands: &[Command],
) -> Result<Vec<u8>, Error> {
    let plaintext = command::encode_commands(commands)?;
    Envelope::seal(key, Direction::Down, meter, epoch, seq, &plaintext)
}

/// A `down` envelope opened by the meter: the header (for the replay window) and each command,
/// decoded or rejected with a reason.
pub type OpenedCommands = (Header, Vec<Result<Command, RejectedCommand>>);

/// Parses, verifies and decodes a `down` envelope addressed to `meter`.
pub fn open_commands(
    key: &MeterKey,
    meter: &MeterId,
    bytes: &[u8],
) -> Result<OpenedCommands, Error> {
    let envelope = Envelope::parse(bytes)?;
    let plaintext = envelope.open(key, meter, Direction::Down)?;
    Ok((envelope.header, command::decode_commands(&plaintext)?))
}
