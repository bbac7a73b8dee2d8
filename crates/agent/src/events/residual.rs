//! Residual current between the neutral and the phases, computed from raw sample frames.
//!
//! In a healthy installation every ampere that goes out on the phases comes back on the neutral,
//! so instant by instant `i_n = −(i_a + i_b + i_c)` (the sign convention of `metrology`, which
//! computes the neutral that way when it is not measured). A load wired around the meter on one
//! conductor only breaks that balance; the RMS of the residual `i_n + i_a + i_b + i_c` over a
//! window is what the mismatch rule compares to its threshold.
//! Metrology reports per-phase RMS values, which cannot show this (phase angles matter), hence
//! this accumulator over the same samples.

use crate::sources::SampleChunk;

/// Accumulates the residual current of frames that carry a neutral channel.
#[derive(Clone, Debug, Default)]
pub struct ResidualCurrent {
    sum_sq: f64,
    frames: u64,
}

impl ResidualCurrent {
    /// An empty accumulator.
    pub fn new() -> ResidualCurrent {
        ResidualCurrent::default()
    }

    /// Add every frame of `chunk`. Chunks without a neutral channel add nothing.
    pub fn feed(&mut self, chunk: &SampleChunk) {
        let layout = chunk.layout;
        let Some(n) = layout.neutral_channel() else {
            return;
        };
        let (ia, ib, ic) = (
            layout.current_channel(0),
            layout.current_channel(1),
            layout.current_channel(2),
        );
        for frame in chunk.samples.chunks_exact(layout.channels()) {
            let r = frame[n] + frame[ia] + frame[ib] + frame[ic];
            self.sum_sq += r * r;
        }
        self.frames += chunk.frames() as u64;
    }

    /// The RMS residual current in amperes since the last call, or `None` if no frame with a
    /// neutral was fed; then starts over.
    pub fn take_rms_a(&mut self) -> Option<f64> {
        let out = (self.frames > 0).then(|| (self.sum_sq / self.frames as f64).sqrt());
        *self = ResidualCurrent::default();
        out
    }
}
