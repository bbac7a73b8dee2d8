//! The disk outbox: a bounded, append-only queue of records between the registers and the
//! uplink. A record leaves it only when the broker acknowledged the envelope that carried it
//! ([`Outbox::ack_through`]).
//!
//! On disk: segment files `seg-<first position>.wlq`, each a run of entries
//! `[len u32][crc32 u32][position u64][boot_id u64][flags u8][record CBOR]` (little endian,
//! the CRC over everything after it), plus `acked`, the first unacknowledged position,
//! replaced atomically (write, fsync, rename). *Position* is the outbox's own append counter;
//! it orders records across boots, while `seq` is the record's key within its boot.
//!
//! At open every segment is verified entry by entry. A bad entry (torn tail after a crash, a
//! flipped bit) is reported with its file and offset; the scan resynchronises on the next entry
//! whose checksum verifies, the valid entries are kept and the segment is rewritten without the
//! damage. Nothing is dropped silently: [`OpenReport::damage`] lists what was lost.

mod config;

pub use config::{OutboxConfig, WhenFull};

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use schema::{Body, Record};

/// Largest single entry accepted (a record is a few hundred bytes; this bounds the damage a
/// corrupt length field can do to a scan).
const MAX_ENTRY_BYTES: usize = 64 * 1024;
const ENTRY_HEADER: usize = 8;
const PAYLOAD_FIXED: usize = 8 + 8 + 1;
const FLAG_READING: u8 = 1;
const ACK_FILE: &str = "acked";

/// Error of the outbox.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
}

/// What went wrong.
#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// File system failure.
    Io {
        /// What was being done, with the file.
        context: String,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// The queue is at `max_bytes` and the policy refused the record.
    Full {
        /// The policy in force.
        policy: WhenFull,
        /// Bytes queued.
        queued_bytes: u64,
    },
    /// A record could not be encoded or an entry read back could not be decoded.
    Record(String),
}

impl Error {
    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self {
            kind: ErrorKind::Io {
                context: context.into(),
                source,
            },
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Io { context, source } => write!(f, "outbox: {context}: {source}"),
            ErrorKind::Full {
                policy,
                queued_bytes,
            } => write!(
                f,
                "outbox full ({queued_bytes} bytes queued, policy {policy:?})"
            ),
            ErrorKind::Record(m) => write!(f, "outbox record: {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// Damage found when opening the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The segment (or ack) file.
    pub path: PathBuf,
    /// Byte offset where the damage starts.
    pub offset: u64,
    /// Bytes skipped.
    pub bytes: u64,
    /// What was wrong.
    pub reason: String,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at offset {}: {} ({} bytes skipped)",
            self.path.display(),
            self.offset,
            self.reason,
            self.bytes
        )
    }
}

/// What [`Outbox::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Valid records recovered (not yet acknowledged).
    pub records: u64,
    /// Damage detected and cut out.
    pub damage: Vec<Damage>,
}

/// A queued record.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Outbox position (append order).
    pub position: u64,
    /// Boot the record belongs to.
    pub boot_id: u64,
    /// The record.
    pub record: Record,
}

/// Counters for metrics and `wattline agent status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Records waiting for acknowledgement.
    pub depth_records: u64,
    /// Bytes on disk.
    pub depth_bytes: u64,
    /// Timestamp of the oldest waiting record, Unix ms.
    pub oldest_t_ms: Option<i64>,
    /// Records appended since start.
    pub appended_total: u64,
    /// Records acknowledged since start.
    pub acked_total: u64,
    /// Readings deleted by `drop_oldest_readings` since start.
    pub dropped_readings_total: u64,
    /// Appends refused because the outbox was full since start.
    pub full_refusals_total: u64,
    /// Bytes cut out as damaged at open.
    pub damaged_bytes_total: u64,
}

#[derive(Debug, Clone, Copy)]
struct Indexed {
    position: u64,
    t_ms: i64,
    segment: u64,
    offset: u64,
    len: u32,
    reading: bool,
}

#[derive(Debug)]
struct Segment {
    /// First position at creation: names the file.
    id: u64,
    bytes: u64,
}

/// The outbox of one meter.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    config: OutboxConfig,
    segments: VecDeque<Segment>,
    /// Unacknowledged records in position order.
    index: VecDeque<Indexed>,
    writer: Option<File>,
    next_position: u64,
    first_unacked: u64,
    /// Next position to hand to the uplink.
    cursor: u64,
    stats: OutboxStats,
    /// The newest record ever appended, acknowledged or not (its segment is kept on disk).
    newest: Option<Entry>,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("seg-{id:020}.wlq"))
}

fn encode_entry(position: u64, boot_id: u64, record: &Record) -> Result<Vec<u8>, Error> {
    let cbor = record.to_cbor().map_err(|e| Error {
        kind: ErrorKind::Record(e.to_string()),
    })?;
    let payload_len = PAYLOAD_FIXED + cbor.len();
    if payload_len + ENTRY_HEADER > MAX_ENTRY_BYTES {
        return Err(Error {
            kind: ErrorKind::Record(format!(
                "record seq {} is {} bytes, over the {MAX_ENTRY_BYTES} byte entry limit",
                record.seq,
                payload_len + ENTRY_HEADER
            )),
        });
    }
    let mut out = Vec::with_capacity(ENTRY_HEADER + payload_len);
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&position.to_le_bytes());
    out.extend_from_slice(&boot_id.to_le_bytes());
    let reading = matches!(record.body, Body::Reading(_));
    out.push(if reading { FLAG_READING } else { 0 });
    out.extend_from_slice(&cbor);
    let crc = crc32fast::hash(&out[ENTRY_HEADER..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// A verified entry inside a buffer.
struct RawEntry<'a> {
    position: u64,
    boot_id: u64,
    reading: bool,
    cbor: &'a [u8],
    total_len: usize,
}

/// Parses the entry at the start of `buf`, or says why it is not one.
fn parse_entry(buf: &[u8]) -> Result<RawEntry<'_>, String> {
    if buf.len() < ENTRY_HEADER {
        return Err(format!("truncated entry header ({} bytes)", buf.len()));
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4")) as usize;
    if !(PAYLOAD_FIXED..=MAX_ENTRY_BYTES - ENTRY_HEADER).contains(&len) {
        return Err(format!("impossible entry length {len}"));
    }
    if buf.len() < ENTRY_HEADER + len {
        return Err(format!(
            "truncated entry: {} of {} bytes",
            buf.len() - ENTRY_HEADER,
            len
        ));
    }
    let payload = &buf[ENTRY_HEADER..ENTRY_HEADER + len];
    let stored = u32::from_le_bytes(buf[4..8].try_into().expect("4"));
    if crc32fast::hash(payload) != stored {
        return Err("checksum mismatch".into());
    }
    Ok(RawEntry {
        position: u64::from_le_bytes(payload[0..8].try_into().expect("8")),
        boot_id: u64::from_le_bytes(payload[8..16].try_into().expect("8")),
        reading: payload[16] & FLAG_READING != 0,
        cbor: &payload[PAYLOAD_FIXED..],
        total_len: ENTRY_HEADER + len,
    })
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir`, verifying every segment.
    pub fn open(dir: &Path, config: OutboxConfig) -> Result<(Self, OpenReport), Error> {
        fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let mut report = OpenReport::default();
        let first_unacked = read_ack_file(dir, &mut report)?;
        let mut ids: Vec<u64> = fs::read_dir(dir)
            .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("seg-")?
                    .strip_suffix(".wlq")?
                    .parse()
                    .ok()
            })
            .collect();
        ids.sort_unstable();
        let mut outbox = Outbox {
            dir: dir.to_owned(),
            config,
            segments: VecDeque::new(),
            index: VecDeque::new(),
            writer: None,
            next_position: first_unacked,
            first_unacked,
            cursor: first_unacked,
            stats: OutboxStats::default(),
            newest: None,
        };
        for id in ids {
            outbox.load_segment(id, &mut report)?;
        }
        // Segments made wholly of acknowledged records are leftovers of a crash between the
        // ack and the delete.
        outbox.delete_acked_segments()?;
        report.records = outbox.index.len() as u64;
        outbox.stats.damaged_bytes_total = report.damage.iter().map(|d| d.bytes).sum();
        Ok((outbox, report))
    }

    fn load_segment(&mut self, id: u64, report: &mut OpenReport) -> Result<(), Error> {
        let path = segment_path(&self.dir, id);
        let buf =
            fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let mut good: Vec<(usize, usize)> = Vec::new();
        let mut offset = 0usize;
        let mut last_position = None::<u64>;
        let mut damaged = false;
        while offset < buf.len() {
            match parse_entry(&buf[offset..]) {
                Ok(e) if last_position.is_none_or(|p| e.position > p) => {
                    last_position = Some(e.position);
                    good.push((offset, e.total_len));
                    offset += e.total_len;
                }
                result => {
                    let reason = match result {
                        Ok(e) => format!("position {} out of order", e.position),
                        Err(r) => r,
                    };
                    // Resynchronise: the next offset where a whole entry verifies.
                    let mut next = offset + 1;
                    while next < buf.len() {
                        if let Ok(e) = parse_entry(&buf[next..])
                            && last_position.is_none_or(|p| e.position > p)
                        {
                            break;
                        }
                        next += 1;
                    }
                    report.damage.push(Damage {
                        path: path.clone(),
                        offset: offset as u64,
                        bytes: (next - offset) as u64,
                        reason,
                    });
                    damaged = true;
                    offset = next;
                }
            }
        }
        let buf = if damaged {
            // Rewrite the segment with only its valid entries, atomically.
            let mut clean = Vec::with_capacity(buf.len());
            for &(o, l) in &good {
                clean.extend_from_slice(&buf[o..o + l]);
            }
            write_atomically(&path, &clean)?;
            clean
        } else {
            buf
        };
        let mut offset = 0usize;
        for _ in 0..good.len() {
            let e = parse_entry(&buf[offset..]).map_err(|r| Error {
                kind: ErrorKind::Record(format!("{}: {r}", path.display())),
            })?;
            if e.position >= self.first_unacked {
                let record = Record::from_cbor(e.cbor).map_err(|err| Error {
                    kind: ErrorKind::Record(format!(
                        "{} at offset {offset}: {err}",
                        path.display()
                    )),
                })?;
                self.index.push_back(Indexed {
                    position: e.position,
                    t_ms: record.t_ms,
                    segment: id,
                    offset: offset as u64,
                    len: e.total_len as u32,
                    reading: e.reading,
                });
            }
            self.next_position = self.next_position.max(e.position + 1);
            if offset + e.total_len == buf.len()
                && let Ok(record) = Record::from_cbor(e.cbor)
            {
                self.newest = Some(Entry {
                    position: e.position,
                    boot_id: e.boot_id,
                    record,
                });
            }
            offset += e.total_len;
        }
        self.segments.push_back(Segment {
            id,
            bytes: buf.len() as u64,
        });
        self.stats.depth_bytes += buf.len() as u64;
        Ok(())
    }

    /// Queues `record` of boot `boot_id`. When the outbox is full, applies the `when_full`
    /// policy: `drop_oldest_readings` makes room by deleting the oldest readings;
    /// `block` (or nothing left to drop) returns [`ErrorKind::Full`].
    pub fn append(&mut self, boot_id: u64, record: &Record) -> Result<u64, Error> {
        let position = self.next_position;
        let entry = encode_entry(position, boot_id, record)?;
        let need = entry.len() as u64;
        if self.stats.depth_bytes + need > self.config.max_bytes {
            if self.config.when_full == WhenFull::DropOldestReadings {
                self.drop_oldest_readings(need)?;
            }
            if self.stats.depth_bytes + need > self.config.max_bytes {
                self.stats.full_refusals_total += 1;
                return Err(Error {
                    kind: ErrorKind::Full {
                        policy: self.config.when_full,
                        queued_bytes: self.stats.depth_bytes,
                    },
                });
            }
        }
        let rotate = match self.segments.back() {
            None => true,
            Some(s) => s.bytes + need > self.config.segment_bytes && s.bytes > 0,
        };
        if rotate || self.writer.is_none() {
            self.open_writer(rotate, position)?;
        }
        let segment = self.segments.back_mut().expect("writer has a segment");
        let offset = segment.bytes;
        let path = segment_path(&self.dir, segment.id);
        let writer = self.writer.as_mut().expect("opened above");
        writer
            .write_all(&entry)
            .map_err(|e| Error::io(format!("appending to {}", path.display()), e))?;
        if self.config.fsync {
            writer
                .sync_data()
                .map_err(|e| Error::io(format!("fsync {}", path.display()), e))?;
        }
        segment.bytes += need;
        self.stats.depth_bytes += need;
        self.index.push_back(Indexed {
            position,
            t_ms: record.t_ms,
            segment: segment.id,
            offset,
            len: need as u32,
            reading: matches!(record.body, Body::Reading(_)),
        });
        self.next_position += 1;
        self.stats.appended_total += 1;
        self.newest = Some(Entry {
            position,
            boot_id,
            record: record.clone(),
        });
        Ok(position)
    }

    fn open_writer(&mut self, new_segment: bool, position: u64) -> Result<(), Error> {
        if new_segment {
            self.segments.push_back(Segment {
                id: position,
                bytes: 0,
            });
        }
        let id = self.segments.back().expect("just ensured").id;
        let path = segment_path(&self.dir, id);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        if new_segment && self.config.fsync {
            sync_dir(&self.dir);
        }
        self.writer = Some(file);
        Ok(())
    }

    /// Deletes the oldest readings until `need` more bytes fit, one segment at a time.
    fn drop_oldest_readings(&mut self, need: u64) -> Result<(), Error> {
        let ids: Vec<u64> = self.segments.iter().map(|s| s.id).collect();
        for id in ids {
            if self.stats.depth_bytes + need <= self.config.max_bytes {
                break;
            }
            let readings = self
                .index
                .iter()
                .filter(|i| i.segment == id && i.reading)
                .count();
            if readings == 0 {
                continue;
            }
            self.compact_segment(id, |i| !i.reading)?;
            self.stats.dropped_readings_total += readings as u64;
        }
        Ok(())
    }

    /// Rewrites segment `id` keeping only unacknowledged entries for which `keep` holds.
    fn compact_segment(&mut self, id: u64, keep: impl Fn(&Indexed) -> bool) -> Result<(), Error> {
        let path = segment_path(&self.dir, id);
        let buf =
            fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let mut clean = Vec::with_capacity(buf.len());
        let mut kept = VecDeque::with_capacity(self.index.len());
        for mut i in self.index.drain(..) {
            if i.segment != id {
                kept.push_back(i);
            } else if keep(&i) {
                let (o, l) = (i.offset as usize, i.len as usize);
                i.offset = clean.len() as u64;
                clean.extend_from_slice(&buf[o..o + l]);
                kept.push_back(i);
            }
        }
        self.index = kept;
        let is_tail = self.segments.back().is_some_and(|s| s.id == id);
        if is_tail {
            self.writer = None;
        }
        write_atomically(&path, &clean)?;
        if let Some(s) = self.segments.iter_mut().find(|s| s.id == id) {
            self.stats.depth_bytes = self.stats.depth_bytes - s.bytes + clean.len() as u64;
            s.bytes = clean.len() as u64;
        }
        if is_tail {
            self.open_writer(false, 0)?;
        }
        Ok(())
    }

    /// Up to `max_records` records from the send cursor on, all of the same boot, in order.
    /// The cursor moves past them; [`rewind`](Self::rewind) brings it back to the first
    /// unacknowledged record (after a reconnect).
    pub fn next_batch(&mut self, max_records: usize) -> Result<Vec<Entry>, Error> {
        let start = self.index.partition_point(|i| i.position < self.cursor);
        let mut out: Vec<Entry> = Vec::new();
        let mut file: Option<(u64, File)> = None;
        for i in self.index.iter().skip(start).take(max_records) {
            if file.as_ref().is_none_or(|(id, _)| *id != i.segment) {
                let path = segment_path(&self.dir, i.segment);
                let f = File::open(&path)
                    .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
                file = Some((i.segment, f));
            }
            let (_, f) = file.as_mut().expect("opened above");
            let mut buf = vec![0; i.len as usize];
            f.seek(SeekFrom::Start(i.offset))
                .and_then(|_| f.read_exact(&mut buf))
                .map_err(|e| Error::io(format!("reading segment {}", i.segment), e))?;
            let raw = parse_entry(&buf).map_err(|r| Error {
                kind: ErrorKind::Record(format!(
                    "segment {} offset {} changed on disk: {r}",
                    i.segment, i.offset
                )),
            })?;
            if out.first().is_some_and(|e| e.boot_id != raw.boot_id) {
                break;
            }
            let record = Record::from_cbor(raw.cbor).map_err(|e| Error {
                kind: ErrorKind::Record(e.to_string()),
            })?;
            out.push(Entry {
                position: raw.position,
                boot_id: raw.boot_id,
                record,
            });
        }
        if let Some(last) = out.last() {
            self.cursor = last.position + 1;
        }
        Ok(out)
    }

    /// The newest `max` unacknowledged records, oldest first (used at start to check that
    /// the registers are not behind the queue).
    pub fn newest(&self, max: usize) -> Result<Vec<Entry>, Error> {
        let skip = self.index.len().saturating_sub(max);
        let mut out = Vec::new();
        for i in self.index.iter().skip(skip) {
            out.push(self.read_entry(i)?);
        }
        Ok(out)
    }

    fn read_entry(&self, i: &Indexed) -> Result<Entry, Error> {
        let path = segment_path(&self.dir, i.segment);
        let mut f =
            File::open(&path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let mut buf = vec![0; i.len as usize];
        f.seek(SeekFrom::Start(i.offset))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let raw = parse_entry(&buf).map_err(|r| Error {
            kind: ErrorKind::Record(format!(
                "{} offset {} changed on disk: {r}",
                path.display(),
                i.offset
            )),
        })?;
        let record = Record::from_cbor(raw.cbor).map_err(|e| Error {
            kind: ErrorKind::Record(e.to_string()),
        })?;
        Ok(Entry {
            position: raw.position,
            boot_id: raw.boot_id,
            record,
        })
    }

    /// The newest record ever appended, even when already acknowledged: the pipeline saves
    /// its registers after the append, so at start this tells it the last `seq` taken and the
    /// newest counters (the segment holding it is never deleted while it is the tail).
    pub fn newest_appended(&self) -> Option<&Entry> {
        self.newest.as_ref()
    }

    /// Moves the send cursor back to the first unacknowledged record.
    pub fn rewind(&mut self) {
        self.cursor = self.first_unacked;
    }

    /// True when records wait behind the send cursor.
    pub fn has_unsent(&self) -> bool {
        self.index.back().is_some_and(|i| i.position >= self.cursor)
    }

    /// The broker acknowledged everything up to and including `position`: forget it, durably.
    pub fn ack_through(&mut self, position: u64) -> Result<(), Error> {
        if position < self.first_unacked {
            return Ok(());
        }
        self.first_unacked = position + 1;
        self.cursor = self.cursor.max(self.first_unacked);
        write_atomically(&self.dir.join(ACK_FILE), &encode_ack(self.first_unacked))?;
        while self
            .index
            .front()
            .is_some_and(|i| i.position < self.first_unacked)
        {
            self.index.pop_front();
            self.stats.acked_total += 1;
        }
        self.delete_acked_segments()
    }

    fn delete_acked_segments(&mut self) -> Result<(), Error> {
        // A segment is done when no unacknowledged record lives in it; the tail segment is
        // always kept: it holds the newest record, which tells a restart the last `seq` taken.
        while let Some(front) = self.segments.front() {
            let id = front.id;
            let in_use = self.index.iter().any(|i| i.segment == id);
            let is_tail = self.segments.len() == 1;
            if in_use || is_tail {
                break;
            }
            let path = segment_path(&self.dir, id);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("deleting {}", path.display()), e)),
            }
            let s = self.segments.pop_front().expect("front exists");
            self.stats.depth_bytes -= s.bytes;
        }
        Ok(())
    }

    /// Counters and depth.
    pub fn stats(&self) -> OutboxStats {
        OutboxStats {
            depth_records: self.index.len() as u64,
            oldest_t_ms: self.index.front().map(|i| i.t_ms),
            ..self.stats
        }
    }

    /// The configured policy.
    pub fn when_full(&self) -> WhenFull {
        self.config.when_full
    }
}

fn encode_ack(first_unacked: u64) -> Vec<u8> {
    let mut out = first_unacked.to_le_bytes().to_vec();
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn read_ack_file(dir: &Path, report: &mut OpenReport) -> Result<u64, Error> {
    let path = dir.join(ACK_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    if bytes.len() == 12 {
        let value = u64::from_le_bytes(bytes[..8].try_into().expect("8"));
        let crc = u32::from_le_bytes(bytes[8..].try_into().expect("4"));
        if crc32fast::hash(&bytes[..8]) == crc {
            return Ok(value);
        }
    }
    // Losing the ack pointer only means re-sending what is still on disk (ingest dedups), so
    // start from the beginning rather than risk skipping anything.
    report.damage.push(Damage {
        path,
        offset: 0,
        bytes: bytes.len() as u64,
        reason: "ack pointer damaged; everything on disk will be re-sent".into(),
    });
    Ok(0)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let io = |what: &str, e| Error::io(format!("{what} {}", tmp.display()), e);
    let mut f = File::create(&tmp).map_err(|e| io("creating", e))?;
    f.write_all(bytes).map_err(|e| io("writing", e))?;
    f.sync_all().map_err(|e| io("fsync", e))?;
    fs::rename(&tmp, path).map_err(|e| io("renaming", e))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    Ok(())
}

fn sync_dir(dir: &Path) {
    // Best effort: some file systems refuse fsync on a directory.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
pub(crate) mod tests;
