//! Named baselines the battery and BENCHMARKS.md compare against, written from the methods'
//! descriptions (no code copied):
//! - **seed 000 peak timing** (`seeds/000_8f7eddc2d8966d16.txt` §2.1.6): the phase shift is the
//!   time between the voltage's and the current's maxima, φ = 360°·f·(t_I − t_V); then
//!   P = V·I·cos φ, Q = V·I·sin φ, S = V·I, PF = cos φ. V and I are true RMS over the window.
//!   The paper assumes the nominal frequency; maxima are found on the sample grid, per cycle,
//!   and φ is averaged over the window's cycles.
//! - **EmonLib `calcVI`** (openenergymonitor/EmonLib, `EmonLib.cpp`): voltage and current are
//!   converted one after the other, so the current is sampled half a sample period after the
//!   voltage; the offset is tracked by a first-order low-pass (1/1024 per sample); the voltage is
//!   shifted to the current's instant by linear interpolation `lastV + PHASECAL·(V − lastV)`
//!   (PHASECAL = 1.5 compensates the half-sample exactly for a linear signal); the window runs
//!   for a number of crossings (20 half-waves) of the voltage level seen at the start, over whole
//!   samples; P = mean(v·i), S = Vrms·Irms, PF = P/S. EmonLib reports no reactive power; the
//!   comparison derives |Q| = √(S² − P²), as its users do.
#![allow(dead_code)]

use std::f64::consts::PI;

use crate::signals::Signal;

/// What a baseline reports for one window.
#[derive(Debug, Clone, Copy)]
pub struct Estimate {
    pub v_rms: f64,
    pub i_rms: f64,
    pub p_w: f64,
    pub q_var: f64,
    pub pf: f64,
}

fn rms_dc_removed(x: &[f64]) -> f64 {
    let mean = x.iter().sum::<f64>() / x.len() as f64;
    (x.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / x.len() as f64).sqrt()
}

/// The seed 000 method over consecutive windows of 10 nominal cycles.
pub fn peak_timing(v: &[f64], i: &[f64], fs: f64, nominal_hz: f64) -> Vec<Estimate> {
    let cycle = (fs / nominal_hz).round() as usize;
    let window = 10 * cycle;
    let mut out = Vec::new();
    for (wv, wi) in v.chunks_exact(window).zip(i.chunks_exact(window)) {
        let (vr, ir) = (rms_dc_removed(wv), rms_dc_removed(wi));
        let mut phi_sum = 0.0;
        for (cv, ci) in wv.chunks_exact(cycle).zip(wi.chunks_exact(cycle)) {
            let argmax = |x: &[f64]| {
                x.iter()
                    .enumerate()
                    .fold((0, f64::NEG_INFINITY), |best, (k, &a)| {
                        if a > best.1 { (k, a) } else { best }
                    })
                    .0
            };
            let dt = (argmax(ci) as f64 - argmax(cv) as f64) / fs;
            let mut phi = 360.0 * nominal_hz * dt;
            phi -= 360.0 * (phi / 360.0).round();
            phi_sum += phi;
        }
        let phi = (phi_sum / 10.0).to_radians();
        let s = vr * ir;
        out.push(Estimate {
            v_rms: vr,
            i_rms: ir,
            p_w: s * phi.cos(),
            q_var: s * phi.sin(),
            pf: phi.cos(),
        });
    }
    out
}

/// EmonLib-style `calcVI(20, …)`, run back to back over the signal. The current is sampled
/// half a sample period after the voltage (alternate conversions).
pub fn calc_vi(sig: &Signal, seconds: f64, phasecal: f64) -> Vec<Estimate> {
    let fs = sig.fs_hz;
    let n = (seconds * fs) as usize;
    let w = 2.0 * PI * sig.freq_hz;
    let sample = |t: f64, voltage: bool| -> f64 {
        let mut x = if voltage { sig.v_dc } else { sig.i_dc };
        for tone in &sig.tones {
            let (amp, deg) = if voltage {
                (tone.v_rms, tone.v_deg)
            } else {
                (tone.i_rms, tone.i_deg)
            };
            x += 2f64.sqrt() * amp * (w * tone.order * t + deg.to_radians()).sin();
        }
        x
    };
    let mut rng = crate::signals::Rng::new(sig.seed);
    let mut out = Vec::new();
    let (mut offset_v, mut offset_i) = (0.0, 0.0);
    let mut filtered_v = 0.0;
    let mut k = 0;
    // Let the offset filters settle first, as a running meter's would have.
    while k < n.min((0.5 * fs) as usize) {
        let t = k as f64 / fs;
        offset_v += (sample(t, true) - offset_v) / 1024.0;
        offset_i += (sample(t + 0.5 / fs, false) - offset_i) / 1024.0;
        k += 1;
    }
    while k < n {
        let start_v = sample(k as f64 / fs, true);
        let (mut sum_v, mut sum_i, mut sum_p) = (0.0, 0.0, 0.0);
        let mut count = 0usize;
        let mut crossings = 0;
        let mut last_above = None;
        while crossings < 20 && k < n {
            let t = k as f64 / fs;
            let sv = sample(t, true) + sig.v_noise * rng.gauss();
            let si = sample(t + 0.5 / fs, false) + sig.i_noise * rng.gauss();
            let last_filtered_v = filtered_v;
            offset_v += (sv - offset_v) / 1024.0;
            filtered_v = sv - offset_v;
            offset_i += (si - offset_i) / 1024.0;
            let filtered_i = si - offset_i;
            sum_v += filtered_v * filtered_v;
            sum_i += filtered_i * filtered_i;
            let shifted_v = last_filtered_v + phasecal * (filtered_v - last_filtered_v);
            sum_p += shifted_v * filtered_i;
            count += 1;
            let above = sv > start_v;
            if last_above.is_some_and(|a| a != above) {
                crossings += 1;
            }
            last_above = Some(above);
            k += 1;
        }
        if crossings < 20 {
            break;
        }
        let c = count as f64;
        let (vr, ir) = ((sum_v / c).sqrt(), (sum_i / c).sqrt());
        let p = sum_p / c;
        let s = vr * ir;
        out.push(Estimate {
            v_rms: vr,
            i_rms: ir,
            p_w: p,
            q_var: (s * s - p * p).max(0.0).sqrt(),
            pf: p / s,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::Tone;

    fn inductive() -> Signal {
        Signal::sine(
            50.0,
            10_000.0,
            230.0,
            1080.0 / 230.0,
            0.8f64.acos().to_degrees(),
        )
    }

    #[test]
    fn peak_timing_is_right_on_a_pure_sine_and_wrong_with_harmonics() {
        let sig = inductive();
        let (v, i) = sig.samples(1.0);
        for e in peak_timing(&v, &i, 10_000.0, 50.0) {
            // Maxima on a 10 kHz grid: at most half a sample (0.9°) off.
            assert!((e.pf - 0.8).abs() < 0.01, "{e:?}");
        }
        let mut distorted = sig.clone();
        distorted.tones.push(Tone::new(3.0, 0.0, 0.0, 1.2, 60.0));
        let (v, i) = distorted.samples(1.0);
        let truth = distorted.truth();
        let e = peak_timing(&v, &i, 10_000.0, 50.0)[0];
        assert!(
            (e.q_var - truth.q_var).abs() > 0.01 * truth.s_va,
            "{e:?} vs {truth:?}"
        );
    }

    #[test]
    fn calc_vi_is_close_on_a_pure_sine_at_nominal_frequency() {
        let sig = inductive();
        let truth = sig.truth();
        let estimates = calc_vi(&sig, 2.0, 1.5);
        assert!(estimates.len() >= 3);
        for e in estimates {
            assert!((e.p_w - truth.p_w).abs() < 0.01 * truth.s_va, "{e:?}");
            assert!((e.pf - 0.8).abs() < 0.01, "{e:?}");
        }
    }
}
