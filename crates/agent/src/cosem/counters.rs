//! The COSEM server's invocation counters on disk: the counter we transmit (never reused after
//! a restart: blocks are reserved ahead on disk) and the last counter accepted from each client
//! system title (so a replayed APDU stays rejected after a restart).

use std::path::{Path, PathBuf};

use dlms::{CounterStore, MemoryCounterStore, SystemTitle};
use serde::{Deserialize, Serialize};

/// How many transmit counters are reserved per disk write. A crash skips at most this many
/// values; skipping is harmless, reusing would break suite 0's GCM nonce uniqueness.
const RESERVE: u32 = 1000;

#[derive(Debug, Serialize, Deserialize)]
struct OnDisk {
    /// First transmit counter not yet handed out under the saved reservation.
    transmit_reserved_until: u32,
    /// Last counter accepted per client system title (hex).
    received: Vec<(String, u32)>,
}

/// A [`CounterStore`] persisted in a small JSON file (written to a temporary file, synced,
/// then renamed, so a crash leaves the old or the new state, never a torn one).
#[derive(Debug)]
pub struct FileCounterStore {
    path: PathBuf,
    memory: MemoryCounterStore,
    next_transmit: u32,
    reserved_until: u32,
}

fn title_hex(t: &SystemTitle) -> String {
    t.iter().map(|b| format!("{b:02X}")).collect()
}

fn parse_title(s: &str) -> Option<SystemTitle> {
    let mut out = [0u8; 8];
    if s.len() != 16 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl FileCounterStore {
    /// Opens (or creates) the counter file. A damaged file is an error, never a silent reset
    /// to counter 1, which would reuse nonces.
    pub fn open(path: &Path) -> Result<FileCounterStore, String> {
        let (next, received) = match std::fs::read_to_string(path) {
            Ok(text) => {
                let disk: OnDisk = serde_json::from_str(&text).map_err(|e| {
                    format!(
                        "invocation counter file {} is damaged ({e}); refusing to reuse counters: \
                         restore it or re-key the meter",
                        path.display()
                    )
                })?;
                let mut received = Vec::new();
                for (t, ic) in disk.received {
                    let title = parse_title(&t)
                        .ok_or_else(|| format!("{}: bad system title {t:?}", path.display()))?;
                    received.push((title, ic));
                }
                (disk.transmit_reserved_until, received)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (1, Vec::new()),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let mut store = FileCounterStore {
            path: path.to_path_buf(),
            memory: MemoryCounterStore::restore(0, &received),
            next_transmit: next,
            reserved_until: next,
        };
        // Reserve now, so even a crash before the first transmission moves past `next`.
        store.reserved_until = next.saturating_add(RESERVE);
        store
            .save()
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(store)
    }

    /// The next counter this meter will transmit.
    pub fn next_transmit_value(&self) -> u32 {
        self.next_transmit
    }

    fn save(&self) -> std::io::Result<()> {
        let (_, received) = self.memory.snapshot();
        let disk = OnDisk {
            transmit_reserved_until: self.reserved_until,
            received: received.iter().map(|(t, ic)| (title_hex(t), *ic)).collect(),
        };
        let text = serde_json::to_string(&disk).map_err(std::io::Error::other)?;
        let tmp = self.path.with_extension("tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)
    }
}

/// A `dlms` error of the given kind. `dlms::Error` has no public constructor, so it is taken
/// from a [`MemoryCounterStore`] in the refusing state: storage failures fail closed (the
/// APDU is refused) instead of handing out a counter that is not durable.
fn exhausted() -> dlms::Error {
    let mut s = MemoryCounterStore::new(u32::MAX);
    match s.next_transmit() {
        Err(e) => e,
        Ok(_) => s.next_transmit().expect_err("u32::MAX + 1 overflows"),
    }
}

fn replay(peer: &SystemTitle, ic: u32) -> dlms::Error {
    MemoryCounterStore::restore(0, &[(*peer, u32::MAX)])
        .accept_received(peer, ic)
        .expect_err("nothing is above u32::MAX")
}

impl CounterStore for FileCounterStore {
    fn next_transmit(&mut self) -> dlms::Result<u32> {
        let ic = self.next_transmit;
        let next = ic.checked_add(1).ok_or_else(exhausted)?;
        if next > self.reserved_until {
            let before = self.reserved_until;
            self.reserved_until = next.saturating_add(RESERVE);
            if let Err(e) = self.save() {
                self.reserved_until = before;
                tracing::error!(path = %self.path.display(), error = %e, "cannot persist the invocation counter; refusing to transmit");
                return Err(exhausted());
            }
        }
        self.next_transmit = next;
        Ok(ic)
    }

    fn last_received(&self, peer: &SystemTitle) -> Option<u32> {
        self.memory.last_received(peer)
    }

    fn accept_received(&mut self, peer: &SystemTitle, ic: u32) -> dlms::Result<()> {
        let before = self.memory.clone();
        self.memory.accept_received(peer, ic)?;
        if let Err(e) = self.save() {
            self.memory = before;
            tracing::error!(path = %self.path.display(), error = %e, "cannot persist the received invocation counter; refusing the APDU");
            return Err(replay(peer, ic));
        }
        Ok(())
    }
}
