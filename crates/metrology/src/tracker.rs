//! Cycle tracking: positive-going zero crossings of the fundamental of the reference voltage.
//!
//! The voltage goes through two cascaded band-pass biquads centred on the nominal frequency
//! (Q = 1; RBJ audio-EQ cookbook band-pass, 0 dB peak). They remove DC, attenuate the 3rd
//! harmonic 8× and the 5th 24× and cut broadband noise, so the filtered signal is close to a sine
//! and crosses zero once per cycle. A harmonic that survives the filter moves every crossing by
//! the same amount in a steady signal, and the filter's phase delay is constant, so the spacing of
//! crossings — the period — is exact. Crossings are located to a fraction of a sample with a cubic
//! through four filtered samples, solved by Newton's method; hysteresis (the filter output must go
//! below −30 % of its recent amplitude before the next positive crossing counts) rejects noise
//! chatter. The first four nominal cycles are ignored while the filters settle.
//!
//! The filters run on block means of D samples (D = fs / (40·f_nominal), at least 1: about 40
//! points per cycle). That cuts the serial, latency-bound filter work D-fold; the block mean is a
//! short FIR with a constant delay of (D − 1)/2 samples, which the positions account for, and 40
//! points per cycle are plenty for the cubic crossing fit of a near-sine.

use core::f64::consts::PI;

/// Coefficients of the RBJ band-pass biquad (0 dB peak): b1 = 0, and both stages share them.
#[derive(Clone, Copy)]
struct BandPass {
    b0: f64,
    b2: f64,
    a1: f64,
    a2: f64,
}

impl BandPass {
    fn new(f0_hz: f64, q: f64, fs_hz: f64) -> Self {
        let w0 = 2.0 * PI * f0_hz / fs_hz;
        let alpha = libm::sin(w0) / (2.0 * q);
        let a0 = 1.0 + alpha;
        Self {
            b0: alpha / a0,
            b2: -alpha / a0,
            a1: -2.0 * libm::cos(w0) / a0,
            a2: (1.0 - alpha) / a0,
        }
    }

    /// y[n] from x[n], x[n−2], y[n−1], y[n−2]. The previous output y1 enters last, so the
    /// recurrence that limits the filter's speed is one multiply and one subtraction long.
    #[inline(always)]
    fn output(&self, x: f64, x2: f64, y1: f64, y2: f64) -> f64 {
        (self.b0 * x + self.b2 * x2 - self.a2 * y2) - self.a1 * y1
    }
}

pub(crate) struct Tracker {
    filter: BandPass,
    state: FilterState,
    /// Input samples per filtered sample, and the block being summed.
    decim: usize,
    block_sum: f64,
    block_len: usize,
    amp_decay: f64,
    amp_min: f64,
    settle_until: u64,
    min_spacing: f64,
}

/// What changes with every filtered sample. [`Tracker::process`] copies it into a local for the
/// loop and back afterwards: kept in the tracker, every field went through memory on each step,
/// and the store-to-load latency sat on the filters' recurrence.
///
/// Each value is held once: the first stage's outputs are the second stage's inputs, and the
/// second stage's last outputs are the newest entries of `hist`. Fewer live values keep the
/// whole state in registers.
#[derive(Clone, Copy)]
struct FilterState {
    /// The last two block means (the first stage's inputs), newest first.
    input: [f64; 2],
    /// The first stage's last two outputs, newest first.
    mid: [f64; 2],
    /// The last four filtered samples (second-stage outputs), oldest first.
    hist: [f64; 4],
    /// Filtered (decimated) samples so far; `hist[3]` is number `index - 1`.
    index: u64,
    amp: f64,
    armed: bool,
    last_crossing: f64,
}

impl Tracker {
    /// `min_amplitude` is the smallest filtered peak (in volts) that counts as a voltage.
    pub(crate) fn new(nominal_hz: f64, fs_hz: f64, min_amplitude: f64) -> Self {
        let decim = (libm::floor(fs_hz / (40.0 * nominal_hz)) as usize).max(1);
        let rate = fs_hz / decim as f64;
        let period = rate / nominal_hz;
        Self {
            filter: BandPass::new(nominal_hz, 1.0, rate),
            state: FilterState {
                input: [0.0; 2],
                mid: [0.0; 2],
                hist: [0.0; 4],
                index: 0,
                amp: 0.0,
                armed: false,
                last_crossing: f64::NEG_INFINITY,
            },
            decim,
            block_sum: 0.0,
            block_len: 0,
            // The amplitude estimate halves in about two cycles when the voltage goes away.
            amp_decay: libm::exp(-core::f64::consts::LN_2 / (2.0 * period)),
            amp_min: min_amplitude,
            settle_until: libm::ceil(4.0 * period) as u64,
            // Crossings closer than half a nominal period are chatter, not cycles.
            min_spacing: 0.5 * period,
        }
    }

    /// Filters `samples` (the continuation of the stream) and calls `on_crossing` with the
    /// absolute fractional sample position of every cycle boundary found.
    pub(crate) fn process(&mut self, samples: &[f64], mut on_crossing: impl FnMut(f64)) {
        let d = self.decim;
        let mut state = self.state;
        let mut rest = samples;
        if self.block_len > 0 {
            let fill = (d - self.block_len).min(rest.len());
            self.block_sum += rest[..fill].iter().sum::<f64>();
            self.block_len += fill;
            rest = &rest[fill..];
            if self.block_len == d {
                let mean = self.block_sum / d as f64;
                self.block_sum = 0.0;
                self.block_len = 0;
                self.step(&mut state, mean, &mut on_crossing);
            }
        }
        // The block means first, a batch at a time, in a loop the compiler can vectorise; then
        // the filters over them.
        let (body, tail) = rest.split_at(rest.len() / d * d);
        let mut means = [0.0; MEAN_BATCH];
        for part in body.chunks(MEAN_BATCH * d) {
            let means = &mut means[..part.len() / d];
            block_means(part, d, means);
            for &mean in means.iter() {
                self.step(&mut state, mean, &mut on_crossing);
            }
        }
        if !tail.is_empty() {
            self.block_sum += tail.iter().sum::<f64>();
            self.block_len += tail.len();
        }
        self.state = state;
    }

    #[inline(always)]
    fn step(&self, st: &mut FilterState, x: f64, on_crossing: &mut impl FnMut(f64)) {
        let f = &self.filter;
        let first = f.output(x, st.input[1], st.mid[0], st.mid[1]);
        let y = f.output(first, st.mid[1], st.hist[3], st.hist[2]);
        st.input = [x, st.input[0]];
        st.mid = [first, st.mid[0]];
        st.hist = [st.hist[1], st.hist[2], st.hist[3], y];
        st.index += 1;
        let a = y.abs();
        st.amp = if a > st.amp {
            a
        } else {
            st.amp * self.amp_decay
        };
        if st.amp < self.amp_min {
            st.armed = false;
            return;
        }
        // Look one sample back so the cubic has a point on either side of the crossing.
        let (y0, y1) = (st.hist[1], st.hist[2]);
        if y1 < -0.3 * st.amp {
            st.armed = true;
        } else if st.armed && y0 < 0.0 && y1 >= 0.0 {
            st.armed = false;
            let (m, pos) = self.crossing(st.hist, st.index, st.last_crossing);
            st.last_crossing = m;
            if let Some(pos) = pos {
                on_crossing(pos);
            }
        }
    }

    /// A positive-going crossing between `hist[1]` and `hist[2]`: its position in filtered
    /// samples, and in input samples if it counts as a cycle boundary. Once per cycle, so kept
    /// out of the filter loop; it takes values, so the loop's state never leaves registers.
    #[inline(never)]
    fn crossing(&self, hist: [f64; 4], index: u64, last_crossing: f64) -> (f64, Option<f64>) {
        // hist[1] is filtered sample `index - 3`; filtered sample m is the mean of input
        // samples m·D ..= m·D + D − 1, centred at m·D + (D − 1)/2.
        let m = index.saturating_sub(3) as f64 + crossing_offset(&hist);
        let d = self.decim as f64;
        let pos = m * d + (d - 1.0) / 2.0;
        let counts = index > self.settle_until && m - last_crossing >= self.min_spacing;
        (m, counts.then_some(pos))
    }
}

/// Block means computed per batch before filtering.
const MEAN_BATCH: usize = 64;

/// `out[m]` = the mean of `samples[m·d .. (m + 1)·d]`; `samples` holds `out.len()` whole
/// blocks. The usual decimations get a loop with `d` known at compile time, which vectorises;
/// the sums run in the same order in every variant, so the means are the same.
fn block_means(samples: &[f64], d: usize, out: &mut [f64]) {
    fn fixed<const D: usize>(samples: &[f64], out: &mut [f64]) {
        let (blocks, _) = samples.as_chunks::<D>();
        for (o, block) in out.iter_mut().zip(blocks) {
            *o = block.iter().sum::<f64>() / D as f64;
        }
    }
    match d {
        1 => out.copy_from_slice(&samples[..out.len()]),
        2 => fixed::<2>(samples, out),
        3 => fixed::<3>(samples, out),
        4 => fixed::<4>(samples, out),
        5 => fixed::<5>(samples, out),
        _ => {
            for (o, block) in out.iter_mut().zip(samples.chunks_exact(d)) {
                *o = block.iter().sum::<f64>() / d as f64;
            }
        }
    }
}

/// Root in [0, 1] of the cubic through (−1, h0), (0, h1), (1, h2), (2, h3), given h1 < 0 <= h2.
fn crossing_offset(h: &[f64; 4]) -> f64 {
    let (h0, h1, h2, h3) = (h[0], h[1], h[2], h[3]);
    // Newton form coefficients of the interpolating cubic p(t), t = 0 at h1.
    let c0 = h1;
    let c1 = (-2.0 * h0 - 3.0 * h1 + 6.0 * h2 - h3) / 6.0;
    let c2 = (h0 - 2.0 * h1 + h2) / 2.0;
    let c3 = (-h0 + 3.0 * h1 - 3.0 * h2 + h3) / 6.0;
    let mut t = h1 / (h1 - h2);
    for _ in 0..4 {
        let p = c0 + t * (c1 + t * (c2 + t * c3));
        let dp = c1 + t * (2.0 * c2 + t * 3.0 * c3);
        if dp <= 0.0 {
            break;
        }
        let next = t - p / dp;
        if !(0.0..=1.0).contains(&next) {
            break;
        }
        t = next;
    }
    t
}

/// Positive-going crossings of `v` minus its mean, with hysteresis of 30 % of the peak, linearly
/// interpolated: the fallback for captures too short for the filters to settle. Returns the
/// number of crossings written to `out`.
pub(crate) fn raw_crossings(v: &[f64], out: &mut [f64]) -> usize {
    if v.len() < 3 {
        return 0;
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let peak = v.iter().fold(0.0f64, |m, x| m.max((x - mean).abs()));
    if peak <= 0.0 {
        return 0;
    }
    let mut count = 0;
    // A capture that starts in the negative half-cycle may count its first rising crossing.
    let mut armed = v[0] - mean < -0.3 * peak;
    for n in 1..v.len() {
        let (a, b) = (v[n - 1] - mean, v[n] - mean);
        if b < -0.3 * peak {
            armed = true;
        } else if armed && a < 0.0 && b >= 0.0 {
            armed = false;
            if count < out.len() {
                out[count] = (n - 1) as f64 + a / (a - b);
                count += 1;
            }
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cubic_crossing_of_a_sine_is_exact_to_1e_6_samples() {
        let w = 2.0 * PI / 40.0;
        for shift in [0.1, 0.37, 0.5, 0.93] {
            let h: [f64; 4] = core::array::from_fn(|k| libm::sin(w * (k as f64 - 1.0 - shift)));
            let t = crossing_offset(&h);
            assert!((t - shift).abs() < 1e-5, "{t} vs {shift}");
        }
    }
}
