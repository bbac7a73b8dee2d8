//! The analysis of one measurement window: exact boundary weights, DC removal, RMS, P, the
//! fundamental phasors by direct correlation, harmonic subgroups by resampling onto a
//! power-of-two grid and an FFT, and the IEEE 1459 decomposition.
//!
//! Boundaries: sample n stands for the interval [n − ½, n + ½). A window [x_a, x_b) weighs each
//! sample by the length of its interval inside the window, so the boundary samples get
//! fractional weights and consecutive windows, sharing a boundary, partition time exactly. The
//! sums of DC, RMS and P also take each cut sample's slope into account (central differences),
//! which makes a cut through a cell second order: single windows' P at 2 kHz and off-nominal
//! frequency went from 7e-5 of S to 1e-6..5e-6, and the corrections of a shared cell cancel.
//! The fundamental's correlation does the same with the slope of x·e^{jθ} (Q1 with harmonics
//! at 7993 Hz: 4.7e-6 of S to 1.6e-7).
//!
//! Fundamental (V1, I1, θ1, and through them Q1, P1, S1, DPF, unbalance): the weighted
//! correlation of every sample with cos/sin of the window's own fundamental, c cycles over the
//! window length L, i.e. the DFT bin c evaluated directly at the non-integer length. This uses
//! every sample, needs no interpolation and is exact for any number of samples per window.
//!
//! Harmonics (IEC 61000-4-7 subgroups, THD): the window's c exact cycles are resampled onto N =
//! 2^k points (4-point Lagrange interpolation; voltage and current as the real and imaginary
//! part of one complex signal) and transformed with one FFT. Bin spacing is then f/c, harmonic
//! h sits at bin c·h exactly and its subgroup is bins c·h − 1 ..= c·h + 1 (10 cycles at 50 Hz:
//! the 5 Hz bins of the standard). N is the smallest power of two above 2·(50c + 1), so every
//! subgroup up to the 50th lies below the grid's Nyquist bin: 1024 for 10 cycles, 2048 for 12.
//! Interpolation error grows with h·f/fs (about 1e-4 of a harmonic's amplitude at 25 samples
//! per harmonic period); orders at or above fs/2 cannot be observed and are reported as 0.

use alloc::vec;
use alloc::vec::Vec;
use core::f64::consts::{PI, SQRT_2};

use crate::config::Layout;
use crate::fft::Fft;
use crate::report::{MAX_HARMONIC, PhaseLabel, PhaseReport, Phases, TotalReport, WindowReport};

/// Partial sums kept in this many lanes so loops vectorise (see `sums.rs`).
const LANES: usize = 8;
/// 1/6, for the cubic Lagrange weights.
const SIXTH: f64 = 1.0 / 6.0;
/// Grid points per block of the resampling plan. The block's weights are computed in one
/// vectorised loop and then used for every phase while they are in L1, instead of a plan for
/// the whole grid written to memory and read back. Every grid size is a multiple of it.
const PLAN_BLOCK: usize = 64;
/// 0, 1, 2, … as floats: the grid offsets inside a plan block (a float-to-float multiply
/// vectorises; an integer-to-float conversion of the counter does not on baseline x86-64).
const PLAN_OFFSETS: [f64; PLAN_BLOCK] = {
    let mut out = [0.0; PLAN_BLOCK];
    let mut k = 0;
    while k < PLAN_BLOCK {
        out[k] = k as f64;
        k += 1;
    }
    out
};

/// A window's extent in buffer-local sample positions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    pub xa: f64,
    pub xb: f64,
    pub cycles: u32,
}

/// First and last sample of a span with their fractional weights; interior weights are 1.
#[derive(Debug, Clone, Copy)]
struct Weights {
    i0: usize,
    i1: usize,
    w0: f64,
    w1: f64,
    /// ∫(x − n)dx over the window's part of the first and last sample's cell: what the
    /// integrand's slope at that sample adds to its edge (second-order edges, below).
    s0: f64,
    s1: f64,
}

impl Weights {
    fn of(span: Span) -> Self {
        let i0 = libm::floor(span.xa + 0.5) as usize;
        // The last sample whose interval reaches into the window: a window ending exactly on a
        // cell edge does not touch the next sample.
        let i1 = ((libm::ceil(span.xb + 0.5) as usize).saturating_sub(1)).max(i0);
        if i1 == i0 {
            return Self {
                i0,
                i1,
                w0: span.xb - span.xa,
                w1: 0.0,
                s0: half_moment(span.xa - i0 as f64, span.xb - i0 as f64),
                s1: 0.0,
            };
        }
        Self {
            i0,
            i1,
            w0: i0 as f64 + 0.5 - span.xa,
            w1: span.xb - (i1 as f64 - 0.5),
            s0: half_moment(span.xa - i0 as f64, 0.5),
            s1: half_moment(-0.5, span.xb - i1 as f64),
        }
    }
}

/// ∫ x dx from `a` to `b`.
fn half_moment(a: f64, b: f64) -> f64 {
    (b * b - a * a) / 2.0
}

/// The slope corrections of a window's two edge cells for an integrand f given per sample:
/// s0·f'(i0) + s1·f'(i1), f' by central differences. A cut through a cell weighs its sample by
/// the part of the cell inside the window (first order); with the slope, the part's integral is
/// right to second order. Where two windows share a cell their corrections are equal and
/// opposite (the cell's ∫(x − n)dx is 0), so windows still partition the integral exactly. A
/// cut on a cell edge has no correction and needs no sample beyond the window; an edge sample
/// without a neighbour on both sides (the very first or last of a recording: a short capture
/// whose first crossing lies in sample 0's cell) keeps the first-order weight.
fn edge_slopes(w: Weights, len: usize, f: impl Fn(usize) -> f64) -> f64 {
    let slope = |n: usize| (f(n + 1) - f(n - 1)) / 2.0;
    let inner = |n: usize| n >= 1 && n + 1 < len;
    let mut c = 0.0;
    if w.s0 != 0.0 && inner(w.i0) {
        c += w.s0 * slope(w.i0);
    }
    if w.s1 != 0.0 && inner(w.i1) {
        c += w.s1 * slope(w.i1);
    }
    c
}

/// The edge slopes of the five sums Σa, Σb, Σa², Σb², Σa·b (see [`edge_slopes`]).
fn edge_slopes5(a: &[f64], b: &[f64], w: Weights) -> [f64; 5] {
    let len = a.len().min(b.len());
    [
        edge_slopes(w, len, |n| a[n]),
        edge_slopes(w, len, |n| b[n]),
        edge_slopes(w, len, |n| a[n] * a[n]),
        edge_slopes(w, len, |n| b[n] * b[n]),
        edge_slopes(w, len, |n| a[n] * b[n]),
    ]
}

/// One pass over a window's samples (boundary samples first and last, weighted `w_first` and
/// `w_last`; the oscillator tables carry those weights already): Σw·v, Σw·i, Σw·v², Σw·i²,
/// Σw·v·i, Σv·c, Σv·s, Σi·c, Σi·s. Reading each array once instead of in five separate passes
/// roughly halves the window's time-domain cost.
fn fused_moments(
    v: &[f64],
    i: &[f64],
    c: &[f64],
    s: &[f64],
    w_first: f64,
    w_last: f64,
) -> [f64; 9] {
    // Two lanes: nine sums × two lanes fill nine SSE2 registers, leaving room for the inputs.
    // Four lanes (18 accumulators) spilled to the stack on every iteration on x86-64's baseline.
    const L: usize = 2;
    let n = v.len();
    let mut out = [0.0; 9];
    let mut add = |x: f64, y: f64, wt: f64, ck: f64, sk: f64| {
        out[0] += wt * x;
        out[1] += wt * y;
        out[2] += wt * x * x;
        out[3] += wt * y * y;
        out[4] += wt * x * y;
        out[5] += x * ck;
        out[6] += x * sk;
        out[7] += y * ck;
        out[8] += y * sk;
    };
    add(v[0], i[0], w_first, c[0], s[0]);
    if n > 1 {
        add(v[n - 1], i[n - 1], w_last, c[n - 1], s[n - 1]);
    }
    if n <= 2 {
        return out;
    }
    let (v, i, c, s) = (&v[1..n - 1], &i[1..n - 1], &c[1..n - 1], &s[1..n - 1]);
    let mut acc = [[0.0; L]; 9];
    let chunks = v
        .chunks_exact(L)
        .zip(i.chunks_exact(L))
        .zip(c.chunks_exact(L).zip(s.chunks_exact(L)));
    for ((x, y), (ck, sk)) in chunks {
        for k in 0..L {
            acc[0][k] += x[k];
            acc[1][k] += y[k];
            acc[2][k] += x[k] * x[k];
            acc[3][k] += y[k] * y[k];
            acc[4][k] += x[k] * y[k];
            acc[5][k] += x[k] * ck[k];
            acc[6][k] += x[k] * sk[k];
            acc[7][k] += y[k] * ck[k];
            acc[8][k] += y[k] * sk[k];
        }
    }
    for (o, a) in out.iter_mut().zip(&acc) {
        *o += a.iter().sum::<f64>();
    }
    let done = v.len() / L * L;
    for k in done..v.len() {
        out[0] += v[k];
        out[1] += i[k];
        out[2] += v[k] * v[k];
        out[3] += i[k] * i[k];
        out[4] += v[k] * i[k];
        out[5] += v[k] * c[k];
        out[6] += v[k] * s[k];
        out[7] += i[k] * c[k];
        out[8] += i[k] * s[k];
    }
    out
}

/// Σw·a, Σw·b, Σw·a², Σw·b², Σw·a·b over the span.
fn sums5(a: &[f64], b: &[f64], w: Weights) -> [f64; 5] {
    let lo = w.i0 + 1;
    let hi = w.i1.max(lo);
    let (a_in, b_in) = (&a[lo..hi], &b[lo..hi]);
    let mut acc = [[0.0; LANES]; 5];
    let mut ac = a_in.chunks_exact(LANES);
    let mut bc = b_in.chunks_exact(LANES);
    for (x, y) in (&mut ac).zip(&mut bc) {
        for k in 0..LANES {
            acc[0][k] += x[k];
            acc[1][k] += y[k];
            acc[2][k] += x[k] * x[k];
            acc[3][k] += y[k] * y[k];
            acc[4][k] += x[k] * y[k];
        }
    }
    let mut out = acc.map(|lanes| lanes.iter().sum::<f64>());
    let mut add = |x: f64, y: f64, wt: f64| {
        out[0] += wt * x;
        out[1] += wt * y;
        out[2] += wt * x * x;
        out[3] += wt * y * y;
        out[4] += wt * x * y;
    };
    for (&x, &y) in ac.remainder().iter().zip(bc.remainder()) {
        add(x, y, 1.0);
    }
    add(a[w.i0], b[w.i0], w.w0);
    if w.i1 != w.i0 {
        add(a[w.i1], b[w.i1], w.w1);
    }
    for (o, e) in out.iter_mut().zip(edge_slopes5(a, b, w)) {
        *o += e;
    }
    out
}

/// Σ w·a·b over the span.
fn wdot(a: &[f64], b: &[f64], w: Weights) -> f64 {
    let lo = w.i0 + 1;
    let hi = w.i1.max(lo);
    let mut acc = [0.0; LANES];
    let mut ac = a[lo..hi].chunks_exact(LANES);
    let mut bc = b[lo..hi].chunks_exact(LANES);
    for (x, y) in (&mut ac).zip(&mut bc) {
        for k in 0..LANES {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s: f64 = acc.iter().sum();
    for (x, y) in ac.remainder().iter().zip(bc.remainder()) {
        s += x * y;
    }
    s += w.w0 * a[w.i0] * b[w.i0];
    if w.i1 != w.i0 {
        s += w.w1 * a[w.i1] * b[w.i1];
    }
    s + edge_slopes(w, a.len().min(b.len()), |n| a[n] * b[n])
}

#[derive(Debug, Clone, Copy, Default)]
struct Complex {
    re: f64,
    im: f64,
}

impl Complex {
    fn abs(self) -> f64 {
        libm::hypot(self.re, self.im)
    }
    fn arg_deg(self) -> f64 {
        libm::atan2(self.im, self.re).to_degrees()
    }
    fn mul(self, o: Self) -> Self {
        Self {
            re: self.re * o.re - self.im * o.im,
            im: self.re * o.im + self.im * o.re,
        }
    }
    fn add(self, o: Self) -> Self {
        Self {
            re: self.re + o.re,
            im: self.im + o.im,
        }
    }
    fn scale(self, k: f64) -> Self {
        Self {
            re: self.re * k,
            im: self.im * k,
        }
    }
}

/// Moments of one phase's channels over a window, before the report is assembled.
struct PhaseMoments {
    v_mean: f64,
    i_mean: f64,
    v_var: f64,
    i_var: f64,
    p_w: f64,
    v1: Complex,
    i1: Complex,
    /// Whether each channel carries any AC at all (see [`AC_FLOOR`]).
    v_ac: bool,
    i_ac: bool,
}

/// A channel whose DC-removed mean square is at most this fraction of its mean square with DC
/// carries no AC: what is left is the rounding of E[x²] − m² (about N·ε relative for N
/// samples, 1e-12 at 10,000), not a signal. Such a channel reports RMS, fundamental,
/// harmonics and power exactly 0 instead of ratios of rounding noise: a meter at no load with
/// a constant offset on its current channel showed DPF 0.75, a 41° angle and 36 % THD-I. The
/// floor is an AC RMS of 1e-5 of the channel's whole RMS, far below any meter's resolution.
const AC_FLOOR: f64 = 1e-10;

pub(crate) struct WindowEngine {
    fs_hz: f64,
    harmonics: bool,
    spectrum: Spectrum,
    /// Weighted oscillator tables w_n·cos θ_n and w_n·sin θ_n for the current window.
    osc_cos: Vec<f64>,
    osc_sin: Vec<f64>,
    /// Σ of each table, for the DC correction of the phasors.
    osc_sum_cos: f64,
    osc_sum_sin: f64,
    /// (cos θ, sin θ) at samples i0 − 1, i0 + 1, i1 − 1 and i1 + 1, for the slopes at the
    /// window's cut cells; `None` for a window of fewer than three samples.
    osc_edges: Option<[(f64, f64); 4]>,
    /// Largest FFT grid the spectrum buffers hold (0 without harmonics).
    grid_max: usize,
}

impl WindowEngine {
    /// `max_samples` bounds the samples of one window; `max_cycles` its cycles; `phases` is
    /// the layout's phase count (one resampled grid per phase).
    pub(crate) fn new(
        fs_hz: f64,
        harmonics: bool,
        max_samples: usize,
        max_cycles: u32,
        phases: usize,
    ) -> Self {
        let n_max = grid_size(max_cycles);
        let n_alloc = if harmonics { n_max } else { 2 };
        Self {
            fs_hz,
            harmonics,
            spectrum: Spectrum::new(n_alloc, phases),
            osc_cos: vec![0.0; max_samples + 2],
            osc_sin: vec![0.0; max_samples + 2],
            osc_sum_cos: 0.0,
            osc_sum_sin: 0.0,
            osc_edges: None,
            grid_max: if harmonics { n_max } else { 0 },
        }
    }

    /// Analyses `span` of the buffered channels (frame layout order). The caller guarantees one
    /// sample of history before the span and two after it, and a span of at least one cycle
    /// (or, untracked, any positive length). Fills everything but time, flags and the 10-s
    /// frequency.
    pub(crate) fn analyze(&mut self, chans: &[&[f64]], layout: Layout, span: Span) -> WindowReport {
        let w = Weights::of(span);
        let len = span.xb - span.xa;
        let cycles_f = if span.cycles == 0 {
            1.0
        } else {
            f64::from(span.cycles)
        };
        let freq_hz = cycles_f * self.fs_hz / len;
        self.fill_oscillator(span, w, cycles_f);
        // The grid for this many cycles must fit the buffers sized in `new`; callers cap spans
        // at one standard window, and a span that does not fit gets no harmonics, not a panic.
        let harmonics =
            self.harmonics && span.cycles > 0 && grid_size(span.cycles) <= self.grid_max;
        let phase_count = layout.phases();
        if harmonics {
            self.resample(chans, phase_count, span);
        }
        // The report (several KiB of harmonics) is filled in place: copying phase reports
        // through temporaries showed up as memmove in the profile.
        let mut out = WindowReport {
            duration_s: len / self.fs_hz,
            cycles: span.cycles,
            freq_hz,
            phases: Phases::new([PhaseReport::default(); 3], phase_count),
            ..WindowReport::default()
        };
        let mut moments: [Option<PhaseMoments>; 3] = [None, None, None];
        for p in 0..phase_count {
            let (v, i) = phase_channels(chans, phase_count, p);
            let m = self.moments(v, i, w, len);
            let report = &mut out.phases.items_mut()[p];
            phase_report(&m, report);
            report.phase = [PhaseLabel::A, PhaseLabel::B, PhaseLabel::C][p];
            if harmonics {
                self.harmonic_subgroups(p, span.cycles, freq_hz, report);
                if !m.v_ac {
                    (report.v_harmonics, report.v_harmonic_phasors) = Default::default();
                    report.v_thd_pct = 0.0;
                }
                if !m.i_ac {
                    (report.i_harmonics, report.i_harmonic_phasors) = Default::default();
                    report.i_thd_pct = 0.0;
                }
            }
            report.v_harmonics.0[0] = m.v_mean;
            report.i_harmonics.0[0] = m.i_mean;
            moments[p] = Some(m);
        }
        if let [Some(a), Some(b), Some(c)] = &moments {
            self.three_phase(chans, layout, w, len, [a, b, c], &mut out);
        } else {
            let r = &out.phases[0];
            out.total = TotalReport {
                p_w: r.p_w,
                q_var: r.q_var,
                s_va: r.s_va,
                pf: r.pf,
                v_e_rms: r.v_rms,
                i_e_rms: r.i_rms,
            };
        }
        out
    }

    /// Weighted cos/sin of θ_n = 2π·c·(n − x_a)/L for the span's samples, and their sums.
    ///
    /// Sample 8q + k of a block is e^{jθ_b}·e^{j·8q·step}·e^{j·k·step}: one phasor P_q rotates by
    /// e^{j·8·step} per eight samples, and each of the eight outputs is P_q times a fixed lane
    /// offset e^{j·k·step}. Only P_q is a recurrence (one complex multiply per eight samples);
    /// the outputs are independent multiplies that vectorise, where rotating every lane made
    /// the loop wait on its own multiply-subtract latency. The sums follow from the same
    /// factorisation: Σ_q Σ_k P_q·o_k = (Σ_q P_q)·(Σ_k o_k). Blocks are re-seeded from one
    /// libm sin/cos pair every 1024 samples, so rounding does not build up; the lane offsets
    /// come from one libm pair by rotation (a few ulp).
    fn fill_oscillator(&mut self, span: Span, w: Weights, cycles: f64) {
        const LANES: usize = 8;
        const RESEED: usize = 128 * LANES;
        let count = w.i1 - w.i0 + 1;
        let step = 2.0 * PI * cycles / (span.xb - span.xa);
        let cos = &mut self.osc_cos[..count];
        let sin = &mut self.osc_sin[..count];
        let (c1, s1) = (libm::cos(step), libm::sin(step));
        let mut lane_c = [1.0; LANES];
        let mut lane_s = [0.0; LANES];
        for k in 1..LANES {
            lane_c[k] = lane_c[k - 1] * c1 - lane_s[k - 1] * s1;
            lane_s[k] = lane_s[k - 1] * c1 + lane_c[k - 1] * s1;
        }
        let (lane_sum_c, lane_sum_s): (f64, f64) = (lane_c.iter().sum(), lane_s.iter().sum());
        let (rot_c, rot_s) = (
            libm::cos(step * LANES as f64),
            libm::sin(step * LANES as f64),
        );
        let (mut sum_cos, mut sum_sin) = (0.0, 0.0);
        let blocks = cos.chunks_mut(RESEED).zip(sin.chunks_mut(RESEED));
        for (b, (block_c, block_s)) in blocks.enumerate() {
            let theta = step * ((w.i0 + b * RESEED) as f64 - span.xa);
            let (mut pc, mut ps) = (libm::cos(theta), libm::sin(theta));
            // Σ P_q over the block's whole chunks.
            let (mut pc_sum, mut ps_sum) = (0.0, 0.0);
            let (chunks_c, rest_c) = block_c.as_chunks_mut::<LANES>();
            let (chunks_s, rest_s) = block_s.as_chunks_mut::<LANES>();
            for (oc, os) in chunks_c.iter_mut().zip(chunks_s.iter_mut()) {
                *oc = core::array::from_fn(|k| pc * lane_c[k] - ps * lane_s[k]);
                *os = core::array::from_fn(|k| ps * lane_c[k] + pc * lane_s[k]);
                pc_sum += pc;
                ps_sum += ps;
                (pc, ps) = (pc * rot_c - ps * rot_s, ps * rot_c + pc * rot_s);
            }
            sum_cos += pc_sum * lane_sum_c - ps_sum * lane_sum_s;
            sum_sin += ps_sum * lane_sum_c + pc_sum * lane_sum_s;
            for (k, (oc, os)) in rest_c.iter_mut().zip(rest_s).enumerate() {
                *oc = pc * lane_c[k] - ps * lane_s[k];
                *os = ps * lane_c[k] + pc * lane_s[k];
                sum_cos += *oc;
                sum_sin += *os;
            }
        }
        // The oscillator one sample beyond each edge, by rotating the unweighted inner
        // neighbours by two steps (e^{±j·2·step}).
        self.osc_edges = (count >= 3).then(|| {
            let (r_c, r_s) = (c1 * c1 - s1 * s1, 2.0 * c1 * s1);
            let (a_c, a_s) = (cos[1], sin[1]);
            let (b_c, b_s) = (cos[count - 2], sin[count - 2]);
            [
                (a_c * r_c + a_s * r_s, a_s * r_c - a_c * r_s),
                (a_c, a_s),
                (b_c, b_s),
                (b_c * r_c - b_s * r_s, b_s * r_c + b_c * r_s),
            ]
        });
        // The boundary samples' weights, applied to the tables and to their sums.
        let mut weigh = |n: usize, wt: f64| {
            sum_cos += (wt - 1.0) * cos[n];
            sum_sin += (wt - 1.0) * sin[n];
            cos[n] *= wt;
            sin[n] *= wt;
        };
        weigh(0, w.w0);
        if count > 1 {
            weigh(count - 1, w.w1);
        }
        self.osc_sum_cos = sum_cos;
        self.osc_sum_sin = sum_sin;
    }

    fn moments(&self, v: &[f64], i: &[f64], w: Weights, len: f64) -> PhaseMoments {
        let count = w.i1 - w.i0 + 1;
        let (cos, sin) = (&self.osc_cos[..count], &self.osc_sin[..count]);
        let [sv, si, svv, sii, svi, vc, vs, ic, is] = fused_moments(
            &v[w.i0..=w.i1],
            &i[w.i0..=w.i1],
            cos,
            sin,
            w.w0,
            if count > 1 { w.w1 } else { w.w0 },
        );
        let [ev, ei, evv, eii, evi] = edge_slopes5(v, i, w);
        let (sv, si, svv, sii, svi) = (sv + ev, si + ei, svv + evv, sii + eii, svi + evi);
        let (v_mean, i_mean) = (sv / len, si / len);
        // Exact DC removal: E[(v − m)²] = E[v²] − m², E[(v − mv)(i − mi)] = E[vi] − mv·mi.
        let v_var = (svv / len - v_mean * v_mean).max(0.0);
        let i_var = (sii / len - i_mean * i_mean).max(0.0);
        let (v_ac, i_ac) = (v_var > AC_FLOOR * svv / len, i_var > AC_FLOOR * sii / len);
        let p_w = if v_ac && i_ac {
            svi / len - v_mean * i_mean
        } else {
            0.0
        };
        let (mut sum_cos, mut sum_sin) = (self.osc_sum_cos, self.osc_sum_sin);
        let (mut vc, mut vs, mut ic, mut is) = (vc, vs, ic, is);
        // The correlation's cut cells are second order too: the slope of x·e^{jθ} at each.
        if let Some(edges) = self.osc_edges {
            let osc = |n: usize| {
                if n + 1 == w.i0 {
                    edges[0]
                } else if n == w.i0 + 1 {
                    edges[1]
                } else if n + 1 == w.i1 {
                    edges[2]
                } else {
                    edges[3]
                }
            };
            let len_n = v.len().min(i.len());
            vc += edge_slopes(w, len_n, |n| v[n] * osc(n).0);
            vs += edge_slopes(w, len_n, |n| v[n] * osc(n).1);
            ic += edge_slopes(w, len_n, |n| i[n] * osc(n).0);
            is += edge_slopes(w, len_n, |n| i[n] * osc(n).1);
            sum_cos += edge_slopes(w, len_n, |n| osc(n).0);
            sum_sin += edge_slopes(w, len_n, |n| osc(n).1);
        }
        let k = SQRT_2 / len;
        // RMS phasor of x − mean: (√2/L)·Σ w_n (x_n − m)·e^{−jθ_n}.
        let phasor = |xc: f64, xs: f64, mean: f64| Complex {
            re: k * (xc - mean * sum_cos),
            im: -k * (xs - mean * sum_sin),
        };
        let zero = Complex::default();
        PhaseMoments {
            v_mean,
            i_mean,
            v_var: if v_ac { v_var } else { 0.0 },
            i_var: if i_ac { i_var } else { 0.0 },
            p_w,
            v1: if v_ac { phasor(vc, vs, v_mean) } else { zero },
            i1: if i_ac { phasor(ic, is, i_mean) } else { zero },
            v_ac,
            i_ac,
        }
    }

    /// Resamples every phase's voltage and current over the span's exact cycles onto the
    /// grid of its FFT (v + j·i per point), in plan blocks shared by the phases.
    fn resample(&mut self, chans: &[&[f64]], phase_count: usize, span: Span) {
        let n = grid_size(span.cycles);
        let step = (span.xb - span.xa) / n as f64;
        let mut index = [0usize; PLAN_BLOCK];
        let mut taps = [[0.0; PLAN_BLOCK]; 4];
        for first in (0..n).step_by(PLAN_BLOCK) {
            plan_block(span.xa + step * first as f64, step, &mut index, &mut taps);
            for p in 0..phase_count {
                let (v, i) = phase_channels(chans, phase_count, p);
                match &mut self.spectrum {
                    Spectrum::Own { fft, re, im, .. } => {
                        let grid = p * fft.n_max();
                        for (k, &j) in index.iter().enumerate() {
                            let t = [taps[0][k], taps[1][k], taps[2][k], taps[3][k]];
                            let (x, y) = (&v[j..j + 4], &i[j..j + 4]);
                            // Stored in bit-reversed order, which the FFT takes without a
                            // permutation pass.
                            let r = grid + fft.bit_reversed(first + k, n);
                            re[r] = t[0] * x[0] + t[1] * x[1] + t[2] * x[2] + t[3] * x[3];
                            im[r] = t[0] * y[0] + t[1] * y[1] + t[2] * y[2] + t[3] * y[3];
                        }
                    }
                    #[cfg(feature = "std")]
                    Spectrum::Rust { buf, n_max, .. } => {
                        let out = &mut buf[p * *n_max + first..][..PLAN_BLOCK];
                        // (re, im) as one two-lane sum: each weight multiplies the pair
                        // (v, i) of its sample, so the point costs four vector multiplies and
                        // three adds instead of eight and six scalar ones.
                        for (k, (z, &j)) in out.iter_mut().zip(&index).enumerate() {
                            let (x, y) = (&v[j..j + 4], &i[j..j + 4]);
                            let t = [taps[0][k], taps[1][k], taps[2][k], taps[3][k]];
                            let mut acc = [t[0] * x[0], t[0] * y[0]];
                            for r in 1..4 {
                                acc = [acc[0] + t[r] * x[r], acc[1] + t[r] * y[r]];
                            }
                            (z.re, z.im) = (acc[0], acc[1]);
                        }
                    }
                }
            }
        }
    }

    /// Transforms phase `p`'s resampled grid and fills its subgroups and THD.
    fn harmonic_subgroups(
        &mut self,
        p: usize,
        cycles: u32,
        freq_hz: f64,
        report: &mut PhaseReport,
    ) {
        let n = grid_size(cycles);
        let groups = Subgroups {
            n,
            cycles: cycles as usize,
            nyquist_order: self.fs_hz / (2.0 * freq_hz),
        };
        match &mut self.spectrum {
            Spectrum::Own { fft, re, im } => {
                let grid = p * fft.n_max();
                let (re, im) = (&mut re[grid..grid + n], &mut im[grid..grid + n]);
                fft.forward_from_bit_reversed(re, im);
                groups.fill(|k| (re[k], im[k]), report);
            }
            #[cfg(feature = "std")]
            Spectrum::Rust {
                plans,
                buf,
                scratch,
                n_max,
            } => {
                let buf = &mut buf[p * *n_max..][..n];
                plans[n.trailing_zeros() as usize].process_with_scratch(buf, scratch);
                groups.fill(|k| (buf[k].re, buf[k].im), report);
            }
        }
    }

    fn three_phase(
        &self,
        chans: &[&[f64]],
        layout: Layout,
        w: Weights,
        len: f64,
        m: [&PhaseMoments; 3],
        out: &mut WindowReport,
    ) {
        // Covariance of two channels over the window, DC removed; 0 when either carries no AC.
        let cov = |a: usize, b: usize, ma: f64, mb: f64, ac: bool| {
            if ac {
                wdot(chans[a], chans[b], w) / len - ma * mb
            } else {
                0.0
            }
        };
        let pairs = [(0, 1), (1, 2), (2, 0)];
        // Line-to-line voltages: V_ab² = V_a² + V_b² − 2·cov(v_a, v_b).
        let mut v_ll2 = 0.0;
        let mut i_cross = 0.0;
        for (a, b) in pairs {
            let (ma, mb) = (m[a], m[b]);
            v_ll2 +=
                ma.v_var + mb.v_var - 2.0 * cov(a, b, ma.v_mean, mb.v_mean, ma.v_ac && mb.v_ac);
            i_cross += cov(3 + a, 3 + b, ma.i_mean, mb.i_mean, ma.i_ac && mb.i_ac);
        }
        let v_ph2: f64 = m.iter().map(|x| x.v_var).sum();
        let i_ph2: f64 = m.iter().map(|x| x.i_var).sum();
        let i_n2 = match layout {
            Layout::ThreePhaseFourWire {
                neutral_measured: true,
            } => {
                let [s, _, ss, _, _] = sums5(chans[6], chans[6], w);
                let mean = s / len;
                let var = (ss / len - mean * mean).max(0.0);
                if var > AC_FLOOR * ss / len { var } else { 0.0 }
            }
            // i_n = −(i_a + i_b + i_c): its variance is Σ I_x² + 2·Σ cov(i_x, i_y).
            _ => (i_ph2 + 2.0 * i_cross).max(0.0),
        };
        // IEEE 1459-2010 §3.2.2.4–3.2.2.6, four-wire system (ρ = 1):
        // I_e = √((I_a² + I_b² + I_c² + I_n²)/3), V_e = √((3·ΣV_x² + ΣV_xy²)/18), S_e = 3·V_e·I_e.
        let i_e = libm::sqrt((i_ph2 + i_n2) / 3.0);
        let v_e = libm::sqrt((3.0 * v_ph2 + v_ll2.max(0.0)) / 18.0);
        let s_e = 3.0 * v_e * i_e;
        let p: f64 = out.phases.iter().map(|r| r.p_w).sum();
        let q: f64 = out.phases.iter().map(|r| r.q_var).sum();
        out.total = TotalReport {
            p_w: p,
            q_var: q,
            s_va: s_e,
            pf: ratio(p, s_e),
            v_e_rms: v_e,
            i_e_rms: i_e,
        };
        out.i_n_rms = Some(libm::sqrt(i_n2));
        out.v_unbalance_pct = Some(unbalance_pct([m[0].v1, m[1].v1, m[2].v1]));
        out.i_unbalance_pct = Some(unbalance_pct([m[0].i1, m[1].i1, m[2].i1]));
    }
}

/// The FFT behind the harmonic subgroups: `rustfft` on hosts (DESIGN §7), the crate's own
/// radix-2² transform without `std`. Both take the same resampled points and give the same
/// spectrum to rounding, so the reports agree to 1e-9 relative (tested below).
/// Each holds one grid of `n_max` points per phase, phase p at `p·n_max`.
enum Spectrum {
    Own {
        fft: Fft,
        re: Vec<f64>,
        im: Vec<f64>,
    },
    #[cfg(feature = "std")]
    Rust {
        /// Plans for 2^k points, indexed by k; built for every grid size a window can need.
        plans: Vec<alloc::sync::Arc<dyn rustfft::Fft<f64>>>,
        buf: Vec<rustfft::num_complex::Complex64>,
        scratch: Vec<rustfft::num_complex::Complex64>,
        n_max: usize,
    },
}

impl Spectrum {
    #[cfg_attr(all(feature = "std", not(test)), allow(dead_code))]
    fn own(n_max: usize, phases: usize) -> Self {
        Self::Own {
            fft: Fft::new(n_max),
            re: vec![0.0; n_max * phases],
            im: vec![0.0; n_max * phases],
        }
    }

    #[cfg(feature = "std")]
    fn rust(n_max: usize, phases: usize) -> Self {
        use rustfft::num_complex::Complex64;
        let mut planner = rustfft::FftPlanner::<f64>::new();
        let plans: Vec<_> = (0..=n_max.trailing_zeros())
            .map(|k| planner.plan_fft_forward(1 << k))
            .collect();
        let scratch_len = plans
            .iter()
            .map(|p| p.get_inplace_scratch_len())
            .max()
            .unwrap_or(0);
        Self::Rust {
            plans,
            buf: vec![Complex64::new(0.0, 0.0); n_max * phases],
            scratch: vec![Complex64::new(0.0, 0.0); scratch_len],
            n_max,
        }
    }

    fn new(n_max: usize, phases: usize) -> Self {
        #[cfg(feature = "std")]
        return Self::rust(n_max, phases);
        #[cfg(not(feature = "std"))]
        return Self::own(n_max, phases);
    }
}

/// Harmonic subgroups of one window from the complex spectrum Z of v + j·i on N points.
struct Subgroups {
    n: usize,
    cycles: usize,
    nyquist_order: f64,
}

impl Subgroups {
    fn fill(&self, bin: impl Fn(usize) -> (f64, f64), report: &mut PhaseReport) {
        let n = self.n;
        // RMS² of bin k of a real signal is 2·|X_k|²/N²; V_k and I_k are separated from the
        // complex spectrum Z of v + j·i as V_k = (Z_k + Z*_{N−k})/2, I_k = (Z_k − Z*_{N−k})/2j.
        let scale = 2.0 / (n as f64 * n as f64);
        let split = |k: usize| -> [f64; 4] {
            let (a, b) = bin(k);
            let (c, d) = bin(n - k);
            [(a + c) / 2.0, (b - d) / 2.0, (b + d) / 2.0, (c - a) / 2.0]
        };
        let power =
            |[vr, vi, ir, ii]: [f64; 4]| (scale * (vr * vr + vi * vi), scale * (ir * ir + ii * ii));
        // RMS phasor of bin k: (√2/N)·X_k, the convention of the fundamental's correlation.
        let rms = SQRT_2 / n as f64;
        let c = self.cycles;
        let (mut v_h2, mut i_h2) = (0.0, 0.0);
        for h in 1..=MAX_HARMONIC {
            if h as f64 >= self.nyquist_order || c * h + 1 >= n / 2 {
                break;
            }
            let (mut gv, mut gi) = (0.0, 0.0);
            // With one cycle the fundamental's subgroup would reach bin 0 (DC): start at bin 1.
            for k in (c * h - 1).max(1)..=c * h + 1 {
                let parts = split(k);
                if k == c * h {
                    let [vr, vi, ir, ii] = parts;
                    report.v_harmonic_phasors.re[h] = rms * vr;
                    report.v_harmonic_phasors.im[h] = rms * vi;
                    report.i_harmonic_phasors.re[h] = rms * ir;
                    report.i_harmonic_phasors.im[h] = rms * ii;
                }
                let (pv, pi) = power(parts);
                gv += pv;
                gi += pi;
            }
            report.v_harmonics.0[h] = libm::sqrt(gv);
            report.i_harmonics.0[h] = libm::sqrt(gi);
            if h >= 2 {
                v_h2 += gv;
                i_h2 += gi;
            }
        }
        let thd = |h2: f64, g1: f64| {
            if g1 > 0.0 {
                100.0 * libm::sqrt(h2) / g1
            } else {
                0.0
            }
        };
        report.v_thd_pct = thd(v_h2, report.v_harmonics[1]);
        report.i_thd_pct = thd(i_h2, report.i_harmonics[1]);
    }
}

/// Smallest power of two N with N/2 > 50·c + 1, so every subgroup up to the 50th is below the
/// Nyquist bin of the grid; at least 64.
pub(crate) fn grid_size(cycles: u32) -> usize {
    let need = 2 * (MAX_HARMONIC * cycles.max(1) as usize + 2);
    need.next_power_of_two().max(64)
}

/// The 4-point Lagrange resampling plan of one block of grid points x0 + step·k: for each, the
/// index of its first sample and the weights of samples base−1, base, base+1, base+2, where
/// base = ⌊p⌋ and μ = p − base. The caller guarantees 1 ≤ p < 2⁵¹. The weights are stored
/// tap by tap (`taps[r][k]`), so this loop writes whole vectors without shuffling them.
fn plan_block(
    x0: f64,
    step: f64,
    index: &mut [usize; PLAN_BLOCK],
    taps: &mut [[f64; PLAN_BLOCK]; 4],
) {
    // Adding 2⁵² rounds p − ½ to an integer that then sits in the low mantissa bits: the floor
    // of p without a float-to-integer conversion (a saturating scalar conversion per point in
    // Rust, which kept this loop from vectorising). For an integer p the tie may round down to
    // p − 1, giving μ = 1 instead of μ = 0: both weight sets reproduce the sample x[p] exactly.
    // The floor at 1 keeps base − 1 a valid index for p = 1 exactly.
    const ROUND: f64 = 4_503_599_627_370_496.0;
    for (n, (ix, &k)) in index.iter_mut().zip(&PLAN_OFFSETS).enumerate() {
        let p = x0 + step * k;
        let r = ((p - 0.5) + ROUND).max(ROUND + 1.0);
        let mu = p - (r - ROUND);
        *ix = (r.to_bits() - ROUND.to_bits()) as usize - 1;
        // Multiplying by 1/6 rather than dividing by 6 (within an ulp) keeps the loop off the
        // divider.
        let (a, b, c) = (mu + 1.0, mu - 1.0, mu - 2.0);
        let (mb, ac) = (mu * b, a * c);
        taps[0][n] = -(mb * c) * SIXTH;
        taps[1][n] = 0.5 * (ac * b);
        taps[2][n] = -0.5 * (ac * mu);
        taps[3][n] = (mb * a) * SIXTH;
    }
}

/// Phase `p`'s voltage and current channels in frame-layout order.
fn phase_channels<'a>(chans: &[&'a [f64]], phase_count: usize, p: usize) -> (&'a [f64], &'a [f64]) {
    if phase_count == 1 {
        (chans[0], chans[1])
    } else {
        (chans[p], chans[3 + p])
    }
}

fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 { num / den } else { 0.0 }
}

/// Fills everything of `out` but the phase label, harmonics and THD, which it leaves alone.
fn phase_report(m: &PhaseMoments, out: &mut PhaseReport) {
    let v_rms = libm::sqrt(m.v_var);
    let i_rms = libm::sqrt(m.i_var);
    let s_va = v_rms * i_rms;
    let v1_rms = m.v1.abs();
    let i1_rms = m.i1.abs();
    // V1·I1* = S1·e^{jθ1}: P1 = Re, Q1 = Im (IEEE 1459-2010 §3.1.2.3, §3.1.2.5).
    let s1 = Complex {
        re: m.v1.re * m.i1.re + m.v1.im * m.i1.im,
        im: m.v1.im * m.i1.re - m.v1.re * m.i1.im,
    };
    let s1_va = v1_rms * i1_rms;
    let angle_deg = if s1_va > 0.0 { s1.arg_deg() } else { 0.0 };
    // S_N = √(S² − S1²) (IEEE 1459-2010 §3.1.2.9); rounding can make S1 exceed S by an ulp.
    let sn_va = libm::sqrt((s_va * s_va - s1_va * s1_va).max(0.0));
    // Field by field: `out` is a fresh default, and its harmonics are not copied around.
    out.v_rms = v_rms;
    out.i_rms = i_rms;
    out.p_w = m.p_w;
    out.q_var = s1.im;
    out.s_va = s_va;
    out.pf = ratio(m.p_w, s_va);
    out.dpf = ratio(s1.re, s1_va);
    out.angle_deg = if angle_deg <= -180.0 {
        angle_deg + 360.0
    } else {
        angle_deg
    };
    out.p1_w = s1.re;
    out.s1_va = s1_va;
    out.sn_va = sn_va;
    out.v1_rms = v1_rms;
    out.i1_rms = i1_rms;
    out.v1_phase_deg = m.v1.arg_deg();
    out.i1_phase_deg = m.i1.arg_deg();
    out.v_dc = m.v_mean;
    out.i_dc = m.i_mean;
}

/// |X₂| / |X₁| in percent from the symmetrical components of three fundamental phasors:
/// X₁ = (X_a + a·X_b + a²·X_c)/3, X₂ = (X_a + a²·X_b + a·X_c)/3, a = e^{j120°}
/// (Fortescue; IEC 61000-4-30 §5.7.1 for voltage).
fn unbalance_pct(x: [Complex; 3]) -> f64 {
    let a = Complex {
        re: -0.5,
        im: libm::sqrt(0.75),
    };
    let a2 = Complex {
        re: -0.5,
        im: -libm::sqrt(0.75),
    };
    let pos = x[0].add(a.mul(x[1])).add(a2.mul(x[2])).scale(1.0 / 3.0);
    let neg = x[0].add(a2.mul(x[1])).add(a.mul(x[2])).scale(1.0 / 3.0);
    ratio(100.0 * neg.abs(), pos.abs())
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    /// Distorted voltage and current with DC and an interharmonic, at 8 kHz and 49.7 Hz.
    fn channels(phase_count: usize, len: usize) -> Vec<Vec<f64>> {
        let w = 2.0 * PI * 49.7 / 8000.0;
        let mut chans = Vec::new();
        for kind in 0..2 {
            for p in 0..phase_count {
                let shift = -2.0 * PI * p as f64 / 3.0;
                let amp = if kind == 0 { 325.0 } else { 14.0 + p as f64 };
                chans.push(
                    (0..len)
                        .map(|n| {
                            let t = w * n as f64 + shift - 0.4 * kind as f64;
                            amp * libm::sin(t)
                                + 0.03 * amp * libm::sin(3.0 * t + 0.2)
                                + 0.02 * amp * libm::sin(7.0 * t - 1.0)
                                + 0.01 * amp * libm::sin(2.5 * t)
                                + 0.5
                        })
                        .collect(),
                );
            }
        }
        chans
    }

    /// Equal within 1e-9 relative; `floor` is the scale below which values are rounding noise
    /// of the whole spectrum (a harmonic at 1e-8 of the fundamental is compared to the RMS).
    fn assert_close(a: f64, b: f64, floor: f64, what: &str) {
        let tol = 1e-9 * a.abs().max(b.abs()).max(floor);
        assert!((a - b).abs() <= tol, "{what}: {a} vs {b}");
    }

    #[test]
    fn edge_slopes_use_central_differences_and_skip_edges_without_neighbours() {
        let w = |i0, i1, s0, s1| Weights {
            i0,
            i1,
            w0: 0.5,
            w1: 0.5,
            s0,
            s1,
        };
        let square = |n: usize| (n * n) as f64;
        // f' at 2 is (9 − 1)/2 = 4, at 5 it is (36 − 16)/2 = 10.
        assert_eq!(
            edge_slopes(w(2, 5, 0.1, -0.2), 8, square),
            0.1 * 4.0 - 0.2 * 10.0
        );
        // Sample 0 has no left neighbour, sample 7 of 8 no right one: first order there.
        assert_eq!(edge_slopes(w(0, 7, 0.1, -0.2), 8, square), 0.0);
        // A cut on a cell edge has no correction.
        assert_eq!(edge_slopes(w(2, 5, 0.0, 0.0), 8, square), 0.0);
        // The two parts of one cell carry equal and opposite moments: shared cells cancel.
        let span = |xa: f64, xb: f64| Weights::of(Span { xa, xb, cycles: 1 });
        let (a, b) = (span(10.3, 20.7), span(20.7, 31.2));
        assert_eq!(a.i1, b.i0);
        assert!((a.s1 + b.s0).abs() < 1e-15, "{} {}", a.s1, b.s0);
    }

    #[test]
    fn rustfft_and_own_fft_give_the_same_reports() {
        for (layout, phase_count) in [
            (Layout::SinglePhase, 1),
            (
                Layout::ThreePhaseFourWire {
                    neutral_measured: false,
                },
                3,
            ),
        ] {
            let data = channels(phase_count, 4000);
            let chans: Vec<&[f64]> = data.iter().map(Vec::as_slice).collect();
            let mut rust = WindowEngine::new(8000.0, true, 2000, 10, phase_count);
            let mut own = WindowEngine::new(8000.0, true, 2000, 10, phase_count);
            own.spectrum = Spectrum::own(grid_size(10), phase_count);
            assert!(matches!(rust.spectrum, Spectrum::Rust { .. }));
            let period = 8000.0 / 49.7;
            for (xa, cycles) in [(5.3, 10), (7.0, 3), (100.25, 1), (11.9, 7)] {
                let span = Span {
                    xa,
                    xb: xa + f64::from(cycles) * period,
                    cycles,
                };
                let a = rust.analyze(&chans, layout, span);
                let b = own.analyze(&chans, layout, span);
                for (pa, pb) in a.phases.iter().zip(b.phases.iter()) {
                    for h in 0..=MAX_HARMONIC {
                        let (vh, ih) = (pa.v_harmonics[h], pb.i_harmonics[h]);
                        assert_close(vh, pb.v_harmonics[h], pa.v_rms, "v harmonic");
                        assert_close(pa.i_harmonics[h], ih, pa.i_rms, "i harmonic");
                        let (va, vb) = (&pa.v_harmonic_phasors, &pb.v_harmonic_phasors);
                        let (ia, ib) = (&pa.i_harmonic_phasors, &pb.i_harmonic_phasors);
                        assert_close(va.re[h], vb.re[h], pa.v_rms, "v phasor re");
                        assert_close(va.im[h], vb.im[h], pa.v_rms, "v phasor im");
                        assert_close(ia.re[h], ib.re[h], pa.i_rms, "i phasor re");
                        assert_close(ia.im[h], ib.im[h], pa.i_rms, "i phasor im");
                    }
                    assert_close(pa.v_thd_pct, pb.v_thd_pct, 0.0, "v thd");
                    assert_close(pa.i_thd_pct, pb.i_thd_pct, 0.0, "i thd");
                    assert!(pa.v_harmonics[3] > 1.0 && pa.i_thd_pct > 1.0);
                }
                // Everything else is computed without the FFT and must be identical.
                let strip = |mut r: WindowReport| {
                    r.phases = Phases::from_slice(&[]);
                    r
                };
                assert_eq!(strip(a), strip(b));
            }
        }
    }
}
