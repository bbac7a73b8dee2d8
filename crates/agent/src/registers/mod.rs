//! Persistent energy registers: the meter's counters, boot id and next record `seq`, kept in
//! two alternating checksummed slots so that `kill -9` or a power cut at any instant leaves at
//! least one complete, verifiable copy.
//!
//! Each save writes the *other* slot (`registers.a` / `registers.b`) completely, then fsyncs
//! it; the slot with the highest generation whose CRC verifies wins at start. A torn write can
//! only damage the slot being written, whose previous content is one generation older than the
//! surviving slot. A damaged slot is reported (never silently ignored), and when *both* are
//! damaged [`RegisterStore::open`] fails: counters are never silently reset. Only
//! [`RegisterStore::reset`] starts from zero, and it always starts a new `boot_id`.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use schema::EnergyCounters;

const MAGIC: &[u8; 8] = b"WLREGS01";
/// magic + generation + boot_id + next_seq + saved_at_ms + 6 counters.
const BODY_LEN: usize = 8 + 8 + 8 + 8 + 8 + 6 * 8;
const SLOT_LEN: usize = BODY_LEN + 4;
const SLOT_NAMES: [&str; 2] = ["registers.a", "registers.b"];

/// What the registers hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegisterState {
    /// Counter epoch: changes only on an explicit reset.
    pub boot_id: u64,
    /// The `seq` the next record of this boot gets.
    pub next_seq: u64,
    /// The energy registers.
    pub counters: EnergyCounters,
    /// Wall-clock time of the save, Unix ms.
    pub saved_at_ms: i64,
}

/// A slot that failed verification at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotDamage {
    /// The damaged file.
    pub path: PathBuf,
    /// What was wrong (`truncated`, `checksum mismatch`, ...).
    pub reason: String,
}

impl fmt::Display for SlotDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// Error of the register store.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
}

/// What went wrong.
#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Reading or writing a slot failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// Both slots are damaged: refusing to guess the counters.
    BothSlotsDamaged(Vec<SlotDamage>),
    /// A save would move a counter or `seq` backwards.
    WouldGoBackwards(String),
}

impl Error {
    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    fn io(path: &Path, source: std::io::Error) -> Self {
        Self {
            kind: ErrorKind::Io {
                path: path.to_owned(),
                source,
            },
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Io { path, source } => {
                write!(f, "register file {}: {source}", path.display())
            }
            ErrorKind::BothSlotsDamaged(damage) => {
                write!(f, "both register slots are damaged (")?;
                for (i, d) in damage.iter().enumerate() {
                    if i > 0 {
                        write!(f, "; ")?;
                    }
                    write!(f, "{d}")?;
                }
                write!(
                    f,
                    "); refusing to guess the counters: restore the files or reset the registers, which starts a new boot id"
                )
            }
            ErrorKind::WouldGoBackwards(what) => write!(f, "refusing to save registers: {what}"),
        }
    }
}

impl std::error::Error for Error {}

/// How [`RegisterStore::open`] found the registers.
#[derive(Debug, Clone, PartialEq)]
pub enum OpenReport {
    /// No register files existed: a first start, with a new boot id.
    Created,
    /// Resumed from an intact slot.
    Resumed,
    /// Resumed from the surviving slot; the other one was damaged (report it).
    ResumedWithDamage(SlotDamage),
}

/// The two-slot register store of one meter.
#[derive(Debug)]
pub struct RegisterStore {
    dir: PathBuf,
    state: RegisterState,
    generation: u64,
}

impl RegisterStore {
    /// Opens the registers in `dir`, creating them (new boot id, zero counters) when neither
    /// slot file exists. Fails when both exist but neither verifies.
    pub fn open(dir: &Path, now_ms: i64) -> Result<(Self, OpenReport), Error> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut best: Option<(u64, RegisterState)> = None;
        let mut damage = Vec::new();
        let mut found = 0;
        for name in SLOT_NAMES {
            let path = dir.join(name);
            match read_slot(&path) {
                Ok(None) => {}
                Ok(Some((generation, state))) => {
                    found += 1;
                    if best.is_none_or(|(g, _)| generation > g) {
                        best = Some((generation, state));
                    }
                }
                Err(SlotError::Io(e)) => return Err(Error::io(&path, e)),
                Err(SlotError::Damaged(reason)) => {
                    found += 1;
                    damage.push(SlotDamage { path, reason });
                }
            }
        }
        match best {
            Some((generation, state)) => {
                let store = Self {
                    dir: dir.to_owned(),
                    state,
                    generation,
                };
                let report = match damage.pop() {
                    Some(d) => OpenReport::ResumedWithDamage(d),
                    None => OpenReport::Resumed,
                };
                Ok((store, report))
            }
            None if found == 0 => Ok((Self::reset(dir, None, now_ms)?, OpenReport::Created)),
            None => Err(Error {
                kind: ErrorKind::BothSlotsDamaged(damage),
            }),
        }
    }

    /// Starts from zero counters under a new boot id, written to both slots. `previous_boot`
    /// (when known) guarantees the new id differs from it even if the clock went backwards.
    pub fn reset(dir: &Path, previous_boot: Option<u64>, now_ms: i64) -> Result<Self, Error> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        // The boot id is the reset time in ms: unique per meter while the clock moves forward,
        // and readable by people; bumped past the previous one when it does not.
        let mut boot_id = u64::try_from(now_ms).unwrap_or(0);
        if let Some(prev) = previous_boot
            && boot_id <= prev
        {
            boot_id = prev + 1;
        }
        let state = RegisterState {
            boot_id,
            next_seq: 0,
            counters: EnergyCounters::default(),
            saved_at_ms: now_ms,
        };
        let mut store = Self {
            dir: dir.to_owned(),
            state,
            generation: 0,
        };
        // Write both slots so a stale slot of an older boot can never win later.
        store.write_next(state)?;
        store.write_next(state)?;
        Ok(store)
    }

    /// The current registers.
    pub fn state(&self) -> &RegisterState {
        &self.state
    }

    /// Persists `state` (fsynced before returning). Refuses anything that moves a counter or
    /// `seq` backwards or changes the boot id (that takes [`reset`](Self::reset)).
    pub fn save(&mut self, state: RegisterState) -> Result<(), Error> {
        let backwards = |what: String| Error {
            kind: ErrorKind::WouldGoBackwards(what),
        };
        if state.boot_id != self.state.boot_id {
            return Err(backwards(format!(
                "boot id {} differs from {}; only a reset changes it",
                state.boot_id, self.state.boot_id
            )));
        }
        if state.next_seq < self.state.next_seq {
            return Err(backwards(format!(
                "next seq {} is below {}",
                state.next_seq, self.state.next_seq
            )));
        }
        if !state.counters.is_monotonic_after(&self.state.counters) {
            return Err(backwards(format!(
                "counters {:?} are below {:?}",
                state.counters, self.state.counters
            )));
        }
        self.write_next(state)
    }

    fn write_next(&mut self, state: RegisterState) -> Result<(), Error> {
        let generation = self.generation + 1;
        let path = self.dir.join(SLOT_NAMES[(generation % 2) as usize]);
        let bytes = encode_slot(generation, &state);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        // Overwrite in place (same length every time) and fsync: no rename, so the other slot
        // and the directory entry are untouched by this write.
        file.write_all(&bytes).map_err(|e| Error::io(&path, e))?;
        file.set_len(SLOT_LEN as u64)
            .map_err(|e| Error::io(&path, e))?;
        file.sync_all().map_err(|e| Error::io(&path, e))?;
        if generation <= 2 {
            // A newly created file also needs its directory entry on disk.
            if let Ok(dir) = File::open(&self.dir) {
                let _ = dir.sync_all();
            }
        }
        self.generation = generation;
        self.state = state;
        Ok(())
    }
}

enum SlotError {
    Io(std::io::Error),
    Damaged(String),
}

fn encode_slot(generation: u64, s: &RegisterState) -> Vec<u8> {
    let mut out = Vec::with_capacity(SLOT_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&s.boot_id.to_le_bytes());
    out.extend_from_slice(&s.next_seq.to_le_bytes());
    out.extend_from_slice(&s.saved_at_ms.to_le_bytes());
    let c = &s.counters;
    for v in [
        c.import_wh,
        c.export_wh,
        c.q1_varh,
        c.q2_varh,
        c.q3_varh,
        c.q4_varh,
    ] {
        out.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn read_slot(path: &Path) -> Result<Option<(u64, RegisterState)>, SlotError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SlotError::Io(e)),
    };
    let mut bytes = Vec::with_capacity(SLOT_LEN);
    Read::by_ref(&mut file)
        .take(SLOT_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(SlotError::Io)?;
    decode_slot(&bytes).map(Some).map_err(SlotError::Damaged)
}

fn decode_slot(bytes: &[u8]) -> Result<(u64, RegisterState), String> {
    if bytes.len() != SLOT_LEN {
        return Err(format!(
            "truncated or oversized: {} bytes, expected {SLOT_LEN}",
            bytes.len()
        ));
    }
    let (body, crc) = bytes.split_at(BODY_LEN);
    let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(format!(
            "checksum mismatch (stored {stored:08x}, computed {computed:08x})"
        ));
    }
    if &body[..8] != MAGIC {
        return Err("not a register file (bad magic)".into());
    }
    let word = |i: usize| u64::from_le_bytes(body[8 + i * 8..16 + i * 8].try_into().expect("8"));
    let f = |i: usize| f64::from_bits(word(i));
    let counters = EnergyCounters {
        import_wh: f(4),
        export_wh: f(5),
        q1_varh: f(6),
        q2_varh: f(7),
        q3_varh: f(8),
        q4_varh: f(9),
    };
    Ok((
        word(0),
        RegisterState {
            boot_id: word(1),
            next_seq: word(2),
            saved_at_ms: word(3) as i64,
            counters,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("wattline-registers-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn advance(store: &mut RegisterStore, wh: f64) {
        let mut s = *store.state();
        s.counters.import_wh += wh;
        s.next_seq += 1;
        store.save(s).unwrap();
    }

    #[test]
    fn first_open_creates_then_resumes() {
        let dir = tempdir("resume");
        let (mut store, report) = RegisterStore::open(&dir, 1_000).unwrap();
        assert_eq!(report, OpenReport::Created);
        assert_eq!(store.state().boot_id, 1_000);
        for _ in 0..5 {
            advance(&mut store, 1.5);
        }
        let (store, report) = RegisterStore::open(&dir, 9_999).unwrap();
        assert_eq!(report, OpenReport::Resumed);
        assert_eq!(store.state().counters.import_wh, 7.5);
        assert_eq!(store.state().next_seq, 5);
        assert_eq!(store.state().boot_id, 1_000);
    }

    #[test]
    fn a_torn_or_flipped_newest_slot_falls_back_to_the_other_and_reports_it() {
        for damage in ["truncate", "flip"] {
            let dir = tempdir(damage);
            let (mut store, _) = RegisterStore::open(&dir, 1).unwrap();
            advance(&mut store, 10.0); // generation 3 -> slot b
            advance(&mut store, 10.0); // generation 4 -> slot a (newest)
            let newest = dir.join("registers.a");
            let mut bytes = fs::read(&newest).unwrap();
            match damage {
                "truncate" => bytes.truncate(30),
                _ => bytes[40] ^= 0x10,
            }
            fs::write(&newest, bytes).unwrap();
            let (store, report) = RegisterStore::open(&dir, 2).unwrap();
            let OpenReport::ResumedWithDamage(d) = report else {
                panic!("{damage}: {report:?}")
            };
            assert_eq!(d.path, newest);
            // The surviving copy is one save older: never more than one interval behind.
            assert_eq!(store.state().counters.import_wh, 10.0, "{damage}");
        }
    }

    #[test]
    fn both_slots_damaged_is_an_error_not_a_reset() {
        let dir = tempdir("both");
        let (mut store, _) = RegisterStore::open(&dir, 1).unwrap();
        advance(&mut store, 10.0);
        for name in SLOT_NAMES {
            let p = dir.join(name);
            let mut b = fs::read(&p).unwrap();
            b[20] ^= 1;
            fs::write(&p, b).unwrap();
        }
        let err = RegisterStore::open(&dir, 2).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::BothSlotsDamaged(d) if d.len() == 2));
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
    }

    #[test]
    fn saves_never_go_backwards_and_reset_takes_a_new_boot() {
        let dir = tempdir("backwards");
        let (mut store, _) = RegisterStore::open(&dir, 500).unwrap();
        advance(&mut store, 3.0);
        let mut s = *store.state();
        s.counters.import_wh -= 1.0;
        assert!(store.save(s).is_err());
        let mut s = *store.state();
        s.next_seq -= 1;
        assert!(store.save(s).is_err());
        // Clock went backwards: the new boot id still differs.
        let reset = RegisterStore::reset(&dir, Some(500), 400).unwrap();
        assert_eq!(reset.state().boot_id, 501);
        let (reopened, _) = RegisterStore::open(&dir, 600).unwrap();
        assert_eq!(reopened.state().boot_id, 501);
        assert_eq!(reopened.state().counters, EnergyCounters::default());
    }
}
