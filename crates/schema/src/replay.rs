//! The replay window: accepts each `(boot_id, seq)` of one meter once, in bounded memory.
//!
//! Per boot it keeps the highest `seq` seen and a bitmap of the [`WINDOW`] sequence numbers
//! below it (the sliding-window scheme of RFC 4303 §3.4.3). A `seq` further below is reported
//! as [`Verdict::TooOld`]: the window cannot tell, so the caller decides with its durable store
//! (ingest's unique key on `(meter, boot_id, seq)` is the final authority). At most
//! [`MAX_BOOTS`] boots are tracked; the least recently used is forgotten first.

/// How many sequence numbers below the highest one each boot remembers.
pub const WINDOW: u64 = 4096;
/// How many boots of one meter are tracked at once.
pub const MAX_BOOTS: usize = 4;

const WORDS: usize = (WINDOW / 64) as usize;

/// What the window says about a `(boot_id, seq)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not seen before: accept.
    Fresh,
    /// Seen before: a replay or a re-delivery.
    Duplicate,
    /// Older than the window remembers: check the store.
    TooOld,
}

#[derive(Debug, Clone)]
struct BootWindow {
    boot_id: u64,
    /// Highest seq accepted so far.
    highest: u64,
    /// Bit `k` set means `highest - k` was accepted (bit 0 is `highest` itself).
    bits: [u64; WORDS],
    last_used: u64,
}

impl BootWindow {
    fn new(boot_id: u64, seq: u64, tick: u64) -> Self {
        let mut bits = [0; WORDS];
        bits[0] = 1;
        Self {
            boot_id,
            highest: seq,
            bits,
            last_used: tick,
        }
    }

    fn get(&self, offset: u64) -> bool {
        let (w, b) = ((offset / 64) as usize, offset % 64);
        self.bits[w] >> b & 1 == 1
    }

    fn set(&mut self, offset: u64) {
        let (w, b) = ((offset / 64) as usize, offset % 64);
        self.bits[w] |= 1 << b;
    }

    /// Shifts the bitmap so that bit 0 stands for `highest + by`.
    fn advance(&mut self, by: u64) {
        if by >= WINDOW {
            self.bits = [0; WORDS];
        } else {
            let (words, rem) = ((by / 64) as usize, by % 64);
            for i in (0..WORDS).rev() {
                let lo = i.checked_sub(words).map_or(0, |j| self.bits[j]);
                let carry = if rem == 0 {
                    0
                } else {
                    i.checked_sub(words + 1)
                        .map_or(0, |j| self.bits[j] >> (64 - rem))
                };
                self.bits[i] = if rem == 0 { lo } else { lo << rem | carry };
            }
        }
        self.highest += by;
    }

    fn check(&self, seq: u64) -> Verdict {
        if seq > self.highest {
            Verdict::Fresh
        } else if self.highest - seq >= WINDOW {
            Verdict::TooOld
        } else if self.get(self.highest - seq) {
            Verdict::Duplicate
        } else {
            Verdict::Fresh
        }
    }

    fn accept(&mut self, seq: u64) -> Verdict {
        let verdict = self.check(seq);
        if verdict == Verdict::Fresh {
            if seq > self.highest {
                self.advance(seq - self.highest);
            }
            self.set(self.highest - seq);
        }
        verdict
    }
}

/// Replay window of one meter (keep one per meter).
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    boots: Vec<BootWindow>,
    tick: u64,
}

impl ReplayWindow {
    /// An empty window.
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest accepted `seq` of every tracked boot: what a meter persists so a restart
    /// does not forget which commands it already took (see [`ReplayWindow::restored`]).
    pub fn high_marks(&self) -> Vec<(u64, u64)> {
        self.boots.iter().map(|b| (b.boot_id, b.highest)).collect()
    }

    /// A window that counts every `seq` up to each boot's high mark as seen: after a restart
    /// nothing at or below a mark is accepted again (the bitmap of holes below it is not kept,
    /// so a late, never-seen `seq` below the mark is refused too: the safe side).
    pub fn restored(marks: &[(u64, u64)]) -> Self {
        let mut w = Self::new();
        for &(boot_id, highest) in marks.iter().take(MAX_BOOTS) {
            w.tick += 1;
            let mut b = BootWindow::new(boot_id, highest, w.tick);
            b.bits = [u64::MAX; WORDS];
            w.boots.push(b);
        }
        w
    }

    /// What [`accept`](Self::accept) would say, without recording anything.
    pub fn check(&self, boot_id: u64, seq: u64) -> Verdict {
        self.boots
            .iter()
            .find(|b| b.boot_id == boot_id)
            .map_or(Verdict::Fresh, |b| b.check(seq))
    }

    /// Records `(boot_id, seq)` when it is fresh and says what it was.
    pub fn accept(&mut self, boot_id: u64, seq: u64) -> Verdict {
        self.tick += 1;
        let tick = self.tick;
        if let Some(b) = self.boots.iter_mut().find(|b| b.boot_id == boot_id) {
            b.last_used = tick;
            return b.accept(seq);
        }
        if self.boots.len() == MAX_BOOTS
            && let Some(oldest) = self
                .boots
                .iter()
                .enumerate()
                .min_by_key(|(_, b)| b.last_used)
                .map(|(i, _)| i)
        {
            self.boots.swap_remove(oldest);
        }
        self.boots.push(BootWindow::new(boot_id, seq, tick));
        Verdict::Fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_seq_is_accepted_once() {
        let mut w = ReplayWindow::new();
        for seq in 0..10_000 {
            assert_eq!(w.accept(7, seq), Verdict::Fresh);
            assert_eq!(w.accept(7, seq), Verdict::Duplicate);
        }
    }

    #[test]
    fn out_of_order_within_the_window_is_fresh_once() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(1, 100), Verdict::Fresh);
        assert_eq!(w.accept(1, 50), Verdict::Fresh);
        assert_eq!(w.accept(1, 50), Verdict::Duplicate);
        assert_eq!(w.accept(1, 99), Verdict::Fresh);
        assert_eq!(w.accept(1, 100), Verdict::Duplicate);
        // Jump ahead by less than a word, more than a word, and past the window.
        assert_eq!(w.accept(1, 130), Verdict::Fresh);
        assert_eq!(w.accept(1, 99), Verdict::Duplicate);
        assert_eq!(w.accept(1, 50), Verdict::Duplicate);
        assert_eq!(w.accept(1, 51), Verdict::Fresh);
        assert_eq!(w.accept(1, 1000), Verdict::Fresh);
        assert_eq!(w.accept(1, 130), Verdict::Duplicate);
        assert_eq!(w.accept(1, 51), Verdict::Duplicate);
        assert_eq!(w.accept(1, 1000 + WINDOW), Verdict::Fresh);
        assert_eq!(w.accept(1, 1000), Verdict::TooOld);
        assert_eq!(w.accept(1, 1001), Verdict::Fresh);
    }

    #[test]
    fn matches_a_set_on_a_pseudo_random_walk() {
        // Reference model: a plain set. Positions below the window are TooOld in the window
        // and must have been either seen or unseen in the set; we only compare inside it.
        let mut w = ReplayWindow::new();
        let mut seen = std::collections::HashSet::new();
        let mut highest = 0u64;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let base = highest.saturating_sub(WINDOW - 1);
            let seq = base + x % (WINDOW + 300);
            let verdict = w.accept(3, seq);
            let expected = if seen.contains(&seq) {
                Verdict::Duplicate
            } else {
                Verdict::Fresh
            };
            assert_eq!(verdict, expected, "seq {seq} highest {highest}");
            seen.insert(seq);
            highest = highest.max(seq);
        }
    }

    #[test]
    fn boots_are_separate_and_bounded() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(1, 5), Verdict::Fresh);
        assert_eq!(w.accept(2, 5), Verdict::Fresh);
        assert_eq!(w.accept(1, 5), Verdict::Duplicate);
        for boot in 3..3 + MAX_BOOTS as u64 {
            w.accept(boot, 0);
        }
        assert_eq!(w.boots.len(), MAX_BOOTS);
        // Boot 2 was least recently used and forgotten: the store decides from here.
        assert_eq!(w.check(2, 5), Verdict::Fresh);
    }
}
