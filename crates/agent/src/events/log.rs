//! The persisted event log: append-only, one checksummed record per event.
//!
//! File format (little endian), after an 8-byte file header `b"WLEVLOG1"`:
//!
//! ```text
//! u32 payload_len | u32 crc32(seq bytes ++ payload) | u64 seq | payload (JSON of MeterEvent)
//! ```
//!
//! Each append is one `write` followed by `fsync` (unless disabled), so after a crash the file
//! is a valid prefix plus at most one torn record. [`EventLog::open`] checks every record; at the
//! first one that is torn or fails its checksum it keeps the valid prefix, moves the rest of the
//! file to `<path>.damaged-<offset>` for inspection and reports it in [`Recovery`] — the damage
//! is never silently discarded, and later appends continue after the valid prefix.
//!
//! When the file grows beyond `max_bytes`, it is renamed to `<path>.1` (replacing an older
//! one) and a new file starts; sequence numbers continue.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Error, ErrorKind, MeterEvent};

const MAGIC: &[u8; 8] = b"WLEVLOG1";
const RECORD_HEADER: usize = 16;
/// Upper bound for one record's payload; a length above it is corruption, not an event.
const MAX_PAYLOAD: u32 = 64 * 1024;

/// Configuration of the event log (`[events.log]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventLogConfig {
    /// Path of the log file; its directory must exist.
    pub path: PathBuf,
    /// Call `fsync` after each append. Turning it off trades crash safety for speed in tests.
    #[serde(default = "default_fsync")]
    pub fsync: bool,
    /// Size in bytes after which the file is rotated to `<path>.1`.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
}

const fn default_fsync() -> bool {
    true
}
const fn default_max_bytes() -> u64 {
    4 * 1024 * 1024
}

impl EventLogConfig {
    /// A config for `path` with the defaults.
    pub fn new(path: impl Into<PathBuf>) -> EventLogConfig {
        EventLogConfig {
            path: path.into(),
            fsync: default_fsync(),
            max_bytes: default_max_bytes(),
        }
    }
}

/// An event with its sequence number in the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoggedEvent {
    /// Sequence number, increasing by one per event over the life of the log.
    pub seq: u64,
    /// The event.
    pub event: MeterEvent,
}

/// What [`EventLog::open`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct Recovery {
    /// Valid records in the current file.
    pub records: u64,
    /// The last valid event, if any (its time tells how long the meter was down).
    pub last: Option<LoggedEvent>,
    /// Damage found, if any.
    pub damage: Option<Damage>,
}

/// A damaged tail of the log.
#[derive(Clone, Debug, PartialEq)]
pub struct Damage {
    /// File offset of the first bad record.
    pub offset: u64,
    /// Bytes moved out of the log.
    pub bytes: u64,
    /// What was wrong (`torn record`, `checksum mismatch`, …).
    pub reason: String,
    /// Where the damaged bytes were saved.
    pub saved_to: PathBuf,
}

/// The append-only event log.
#[derive(Debug)]
pub struct EventLog {
    config: EventLogConfig,
    file: File,
    len: u64,
    next_seq: u64,
}

impl EventLog {
    /// Open (or create) the log, verify it, and position for appending.
    pub fn open(config: EventLogConfig) -> Result<(EventLog, Recovery), Error> {
        if config.max_bytes < 1024 {
            return Err(Error {
                kind: ErrorKind::Config(format!(
                    "events.log.max_bytes is {}, it must be at least 1024",
                    config.max_bytes
                )),
            });
        }
        let path = config.path.clone();
        let ctx = |what: &str| format!("{what} event log {}", path.display());
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| Error::io(ctx("cannot open"), e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| Error::io(ctx("cannot read"), e))?;

        // The previous file's last sequence number, so numbering continues after rotation.
        let rotated_last = read_records(&rotated_path(&path))
            .ok()
            .and_then(|(r, _)| r.last().cloned());
        let mut recovery = Recovery {
            records: 0,
            last: None,
            damage: None,
        };
        let valid_len = if bytes.is_empty() {
            file.write_all(MAGIC)
                .map_err(|e| Error::io(ctx("cannot write"), e))?;
            MAGIC.len() as u64
        } else {
            let (records, end) = parse(&bytes);
            recovery.records = records.len() as u64;
            recovery.last = records.last().cloned();
            if let Some((end, reason)) = end {
                let saved_to = damaged_path(&path, end);
                fs::write(&saved_to, &bytes[end as usize..]).map_err(|e| {
                    Error::io(
                        format!("cannot save damaged tail to {}", saved_to.display()),
                        e,
                    )
                })?;
                file.set_len(end)
                    .map_err(|e| Error::io(ctx("cannot truncate"), e))?;
                if end == 0 {
                    // Not a log at all (moved aside above): start a fresh one.
                    file.write_all(MAGIC)
                        .map_err(|e| Error::io(ctx("cannot write"), e))?;
                }
                file.sync_all()
                    .map_err(|e| Error::io(ctx("cannot sync"), e))?;
                recovery.damage = Some(Damage {
                    offset: end,
                    bytes: bytes.len() as u64 - end,
                    reason,
                    saved_to,
                });
                end.max(MAGIC.len() as u64)
            } else {
                bytes.len() as u64
            }
        };
        let next_seq = recovery
            .last
            .as_ref()
            .or(rotated_last.as_ref())
            .map_or(0, |l| l.seq + 1);
        Ok((
            EventLog {
                config,
                file,
                len: valid_len,
                next_seq,
            },
            recovery,
        ))
    }

    /// The sequence number the next append will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Append `event` durably and return its sequence number.
    pub fn append(&mut self, event: &MeterEvent) -> Result<u64, Error> {
        let payload = serde_json::to_vec(event).map_err(|e| Error {
            kind: ErrorKind::Encode(e.to_string()),
        })?;
        if payload.len() > MAX_PAYLOAD as usize {
            return Err(Error {
                kind: ErrorKind::Encode(format!(
                    "event of {} bytes exceeds {MAX_PAYLOAD}",
                    payload.len()
                )),
            });
        }
        let record_len = (RECORD_HEADER + payload.len()) as u64;
        if self.len + record_len > self.config.max_bytes && self.len > MAGIC.len() as u64 {
            self.rotate()?;
        }
        let seq = self.next_seq;
        let mut record = Vec::with_capacity(RECORD_HEADER + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&checksum(seq, &payload).to_le_bytes());
        record.extend_from_slice(&seq.to_le_bytes());
        record.extend_from_slice(&payload);
        let path = self.config.path.display().to_string();
        self.file
            .write_all(&record)
            .map_err(|e| Error::io(format!("cannot append to event log {path}"), e))?;
        if self.config.fsync {
            self.file
                .sync_data()
                .map_err(|e| Error::io(format!("cannot sync event log {path}"), e))?;
        }
        self.len += record_len;
        self.next_seq += 1;
        Ok(seq)
    }

    /// Every event with `seq >= from_seq` still on disk (the rotated file, then the current one).
    pub fn read_from(&self, from_seq: u64) -> Result<Vec<LoggedEvent>, Error> {
        let mut out = Vec::new();
        for p in [rotated_path(&self.config.path), self.config.path.clone()] {
            if !p.exists() {
                continue;
            }
            let (records, _) = read_records(&p)?;
            out.extend(records.into_iter().filter(|r| r.seq >= from_seq));
        }
        Ok(out)
    }

    fn rotate(&mut self) -> Result<(), Error> {
        let path = &self.config.path;
        let rotated = rotated_path(path);
        fs::rename(path, &rotated)
            .map_err(|e| Error::io(format!("cannot rotate event log {}", path.display()), e))?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| Error::io(format!("cannot create event log {}", path.display()), e))?;
        file.write_all(MAGIC)
            .map_err(|e| Error::io(format!("cannot write event log {}", path.display()), e))?;
        file.sync_all()
            .map_err(|e| Error::io(format!("cannot sync event log {}", path.display()), e))?;
        self.file = file;
        self.len = MAGIC.len() as u64;
        Ok(())
    }
}

/// The valid records of a file, and where and why parsing stopped early.
type Parsed = (Vec<LoggedEvent>, Option<(u64, String)>);

fn read_records(path: &Path) -> Result<Parsed, Error> {
    let bytes = fs::read(path)
        .map_err(|e| Error::io(format!("cannot read event log {}", path.display()), e))?;
    Ok(parse(&bytes))
}

fn rotated_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

fn damaged_path(path: &Path, offset: u64) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".damaged-{offset}"));
    PathBuf::from(s)
}

fn checksum(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Parse a whole log file: the valid records, and where and why parsing stopped early.
fn parse(bytes: &[u8]) -> Parsed {
    let mut out = Vec::new();
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return (out, Some((0, "missing or wrong file header".to_string())));
    }
    let mut at = MAGIC.len();
    let mut prev_seq: Option<u64> = None;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < RECORD_HEADER {
            return (
                out,
                Some((
                    at as u64,
                    format!(
                        "torn record header ({} of {RECORD_HEADER} bytes)",
                        rest.len()
                    ),
                )),
            );
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().unwrap_or_default());
        let crc = u32::from_le_bytes(rest[4..8].try_into().unwrap_or_default());
        let seq = u64::from_le_bytes(rest[8..16].try_into().unwrap_or_default());
        if len > MAX_PAYLOAD {
            return (
                out,
                Some((
                    at as u64,
                    format!("record length {len} exceeds {MAX_PAYLOAD}"),
                )),
            );
        }
        let end = RECORD_HEADER + len as usize;
        if rest.len() < end {
            return (
                out,
                Some((
                    at as u64,
                    format!("torn record (needs {} more bytes)", end - rest.len()),
                )),
            );
        }
        let payload = &rest[RECORD_HEADER..end];
        if checksum(seq, payload) != crc {
            return (out, Some((at as u64, "checksum mismatch".to_string())));
        }
        if prev_seq.is_some_and(|p| seq != p + 1) {
            return (
                out,
                Some((
                    at as u64,
                    format!("sequence {seq} does not follow {}", prev_seq.unwrap_or(0)),
                )),
            );
        }
        let event: MeterEvent = match serde_json::from_slice(payload) {
            Ok(e) => e,
            Err(e) => return (out, Some((at as u64, format!("undecodable event: {e}")))),
        };
        out.push(LoggedEvent { seq, event });
        prev_seq = Some(seq);
        at += end;
    }
    (out, None)
}
