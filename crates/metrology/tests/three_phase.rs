//! Three-phase four-wire: per-phase values, IEEE 1459 effective totals, neutral current and
//! unbalance against closed forms computed from the tones' phasors.

use metrology::{Analyzer, AnalyzerConfig, ChannelCalibration, NominalFrequency, WindowReport};

use crate::signals::{Signal, Tone, Truth, assert_meets_bar};

#[derive(Clone, Copy)]
struct C(f64, f64);

impl C {
    fn polar(r: f64, deg: f64) -> Self {
        Self(r * deg.to_radians().cos(), r * deg.to_radians().sin())
    }
    fn add(self, o: Self) -> Self {
        Self(self.0 + o.0, self.1 + o.1)
    }
    fn sub(self, o: Self) -> Self {
        Self(self.0 - o.0, self.1 - o.1)
    }
    fn mul(self, o: Self) -> Self {
        Self(self.0 * o.0 - self.1 * o.1, self.0 * o.1 + self.1 * o.0)
    }
    fn abs2(self) -> f64 {
        self.0 * self.0 + self.1 * self.1
    }
}

fn phase_signals(fs: f64, freq: f64) -> [Signal; 3] {
    // Unbalanced voltages and loads; triplen (3rd) currents that add up in the neutral.
    let spec = [
        (230.0, 0.0, 10.0, 30.0, 1.5),
        (224.0, -121.0, 5.0, 10.0, 0.9),
        (236.0, 118.5, 15.0, -20.0, 2.0),
    ];
    spec.map(|(v, v_deg, i, lag, i3)| Signal {
        tones: vec![
            Tone::new(1.0, v, v_deg, i, v_deg - lag),
            Tone::new(
                3.0,
                0.02 * v,
                3.0 * v_deg + 10.0,
                i3,
                3.0 * (v_deg - lag) + 15.0,
            ),
        ],
        ..Signal::sine(freq, fs, 0.0, 0.0, 0.0)
    })
}

fn interleave(phases: &[Signal; 3], seconds: f64, neutral: bool) -> Vec<f64> {
    let samples: Vec<(Vec<f64>, Vec<f64>)> = phases.iter().map(|s| s.samples(seconds)).collect();
    let n = samples[0].0.len();
    let mut frames = Vec::with_capacity(n * 7);
    for k in 0..n {
        for s in &samples {
            frames.push(s.0[k]);
        }
        for s in &samples {
            frames.push(s.1[k]);
        }
        if neutral {
            frames.push(-(samples[0].1[k] + samples[1].1[k] + samples[2].1[k]));
        }
    }
    frames
}

fn run(fs: f64, freq: f64, neutral: bool, chunk_frames: usize) -> (Vec<WindowReport>, [Signal; 3]) {
    let phases = phase_signals(fs, freq);
    let frames = interleave(&phases, 1.2, neutral);
    let config = AnalyzerConfig::three_phase(fs, NominalFrequency::Hz50, neutral);
    let mut analyzer = Analyzer::new(config).unwrap();
    let mut windows = Vec::new();
    let width = if neutral { 7 } else { 6 };
    for chunk in frames.chunks(chunk_frames * width) {
        analyzer.push_frames(chunk, |w| windows.push(*w)).unwrap();
    }
    (windows, phases)
}

/// Phasor (RMS, sine reference) of tone `k` of each phase's voltage or current.
fn phasors(phases: &[Signal; 3], k: usize, voltage: bool) -> [C; 3] {
    core::array::from_fn(|p| {
        let t = phases[p].tones[k];
        if voltage {
            C::polar(t.v_rms, t.v_deg)
        } else {
            C::polar(t.i_rms, t.i_deg)
        }
    })
}

fn unbalance(x: [C; 3]) -> f64 {
    let a = C::polar(1.0, 120.0);
    let a2 = C::polar(1.0, 240.0);
    let pos = x[0].add(a.mul(x[1])).add(a2.mul(x[2]));
    let neg = x[0].add(a2.mul(x[1])).add(a.mul(x[2]));
    100.0 * (neg.abs2() / pos.abs2()).sqrt()
}

fn check(windows: &[WindowReport], phases: &[Signal; 3]) {
    let truths: Vec<Truth> = phases.iter().map(Signal::truth).collect();
    // IEEE 1459-2010 §3.2.2.4–3.2.2.6 (four-wire): I_e² = (ΣI_x² + I_n²)/3,
    // V_e² = (3·ΣV_x² + ΣV_xy²)/18, S_e = 3·V_e·I_e.
    let mut i_n2 = 0.0;
    let mut v_ll2 = 0.0;
    for k in 0..2 {
        let i = phasors(phases, k, false);
        i_n2 += i[0].add(i[1]).add(i[2]).abs2();
        let v = phasors(phases, k, true);
        v_ll2 += v[0].sub(v[1]).abs2() + v[1].sub(v[2]).abs2() + v[2].sub(v[0]).abs2();
    }
    let v_ph2: f64 = truths.iter().map(|t| t.v_rms * t.v_rms).sum();
    let i_ph2: f64 = truths.iter().map(|t| t.i_rms * t.i_rms).sum();
    let i_e = ((i_ph2 + i_n2) / 3.0).sqrt();
    let v_e = ((3.0 * v_ph2 + v_ll2) / 18.0).sqrt();
    let s_e = 3.0 * v_e * i_e;
    let p: f64 = truths.iter().map(|t| t.p_w).sum();
    let q: f64 = truths.iter().map(|t| t.q_var).sum();
    let v_unb = unbalance(phasors(phases, 0, true));
    let i_unb = unbalance(phasors(phases, 0, false));
    let good: Vec<_> = windows.iter().filter(|w| !w.flags.any()).collect();
    assert!(good.len() >= 4);
    for w in good {
        assert_eq!(w.phases.len(), 3);
        for (p, t) in w.phases.iter().zip(&truths) {
            let one = phase_only(w, p.phase as usize);
            assert_meets_bar(&one, t, 1.0, "three-phase, per phase");
        }
        let tot = &w.total;
        assert!((tot.p_w - p).abs() < 5e-4 * s_e, "P {} vs {p}", tot.p_w);
        assert!((tot.q_var - q).abs() < 5e-4 * s_e, "Q {} vs {q}", tot.q_var);
        assert!(
            (tot.v_e_rms - v_e).abs() < 2e-4 * v_e,
            "Ve {} vs {v_e}",
            tot.v_e_rms
        );
        assert!(
            (tot.i_e_rms - i_e).abs() < 2e-4 * i_e,
            "Ie {} vs {i_e}",
            tot.i_e_rms
        );
        assert!(
            (tot.s_va - s_e).abs() < 5e-4 * s_e,
            "Se {} vs {s_e}",
            tot.s_va
        );
        assert!((tot.pf - p / s_e).abs() < 5e-4);
        let i_n = w.i_n_rms.unwrap();
        assert!(
            (i_n - i_n2.sqrt()).abs() < 2e-4 * i_n2.sqrt(),
            "In {i_n} vs {}",
            i_n2.sqrt()
        );
        assert!(
            (w.v_unbalance_pct.unwrap() - v_unb).abs() < 0.01,
            "{:?} {v_unb}",
            w.v_unbalance_pct
        );
        assert!(
            (w.i_unbalance_pct.unwrap() - i_unb).abs() < 0.01,
            "{:?} {i_unb}",
            w.i_unbalance_pct
        );
    }
}

/// A copy of the window whose phase 0 is phase `index` (so the single-phase checks apply).
fn phase_only(w: &WindowReport, index: usize) -> WindowReport {
    let mut out = *w;
    out.phases = metrology::Phases::from_slice(&[w.phases[index]]);
    out
}

#[test]
fn unbalanced_three_phase_with_computed_neutral() {
    let (windows, phases) = run(8000.0, 50.0, false, 1000);
    check(&windows, &phases);
}

#[test]
fn unbalanced_three_phase_with_measured_neutral_at_an_odd_rate() {
    let (windows, phases) = run(7919.0, 49.81, true, 333);
    check(&windows, &phases);
}

#[test]
fn balanced_three_phase_has_no_unbalance_and_no_neutral_current() {
    let fs = 6000.0;
    let phases: [Signal; 3] = core::array::from_fn(|p| {
        let deg = -120.0 * p as f64;
        Signal::sine(50.0, fs, 230.0, 8.0, 0.0).with_phase(deg)
    });
    let frames = interleave(&phases, 1.0, false);
    let mut analyzer = Analyzer::new(AnalyzerConfig::three_phase(
        fs,
        NominalFrequency::Hz50,
        false,
    ))
    .unwrap();
    let mut windows = Vec::new();
    analyzer.push_frames(&frames, |w| windows.push(*w)).unwrap();
    let good: Vec<_> = windows.iter().filter(|w| !w.flags.any()).collect();
    assert!(!good.is_empty());
    for w in good {
        assert!(w.v_unbalance_pct.unwrap() < 1e-4 && w.i_unbalance_pct.unwrap() < 1e-4);
        assert!(w.i_n_rms.unwrap() < 1e-3);
        // Balanced, sinusoidal: S_e = 3·V·I and PF = 1.
        assert!(
            (w.total.s_va - 3.0 * 230.0 * 8.0).abs() < 0.5,
            "{}",
            w.total.s_va
        );
        assert!((w.total.pf - 1.0).abs() < 1e-4);
    }
}

#[test]
fn every_channel_of_interleaved_frames_gets_its_own_calibration() {
    // Raw frames = true / gain + offset with a different gain and offset per channel, then the
    // channel's calibration must give the same windows as the true frames uncalibrated. Pins
    // the channel order of the one-pass copy of interleaved frames (6 and 7 channels).
    let fs = 8000.0;
    let phases = phase_signals(fs, 50.0);
    for neutral in [false, true] {
        let width = if neutral { 7 } else { 6 };
        let truth = interleave(&phases, 1.0, neutral);
        let channel = |ch: usize| ChannelCalibration {
            gain: 0.5 + 0.25 * ch as f64,
            offset: 3.0 - ch as f64,
        };
        let raw: Vec<f64> = truth
            .iter()
            .enumerate()
            .map(|(k, x)| {
                let c = channel(k % width);
                x / c.gain + c.offset
            })
            .collect();
        let plain = AnalyzerConfig::three_phase(fs, NominalFrequency::Hz50, neutral);
        let mut calibrated = plain;
        for p in 0..3 {
            calibrated.calibration.phases[p].voltage = channel(p);
            calibrated.calibration.phases[p].current = channel(3 + p);
        }
        calibrated.calibration.neutral = channel(6);
        let windows = |config: AnalyzerConfig, frames: &[f64]| {
            let mut analyzer = Analyzer::new(config).unwrap();
            let mut out = Vec::new();
            analyzer.push_frames(frames, |w| out.push(*w)).unwrap();
            out
        };
        let (expected, got) = (windows(plain, &truth), windows(calibrated, &raw));
        assert!(expected.len() >= 3 && expected.len() == got.len());
        for (e, g) in expected.iter().zip(&got) {
            for (pe, pg) in e.phases.iter().zip(g.phases.iter()) {
                assert!((pe.v_rms - pg.v_rms).abs() < 1e-6 * pe.v_rms, "{neutral}");
                assert!((pe.i_rms - pg.i_rms).abs() < 1e-6 * pe.i_rms, "{neutral}");
                assert!((pe.p_w - pg.p_w).abs() < 1e-6 * pe.s_va, "{neutral}");
            }
            let (ne, ng) = (e.i_n_rms.unwrap(), g.i_n_rms.unwrap());
            assert!(
                (ne - ng).abs() < 1e-6 * (1.0 + ne),
                "{neutral}: {ne} vs {ng}"
            );
        }
    }
}

#[test]
fn single_phase_push_is_refused_for_a_three_phase_layout() {
    let mut analyzer = Analyzer::new(AnalyzerConfig::three_phase(
        8000.0,
        NominalFrequency::Hz50,
        false,
    ))
    .unwrap();
    let err = analyzer
        .push_single_phase(&[0.0], &[0.0], |_| {})
        .unwrap_err();
    assert!(matches!(
        err.kind(),
        metrology::ErrorKind::WrongLayout { .. }
    ));
    let err = analyzer.push_frames(&[0.0; 7], |_| {}).unwrap_err();
    assert_eq!(
        err.to_string(),
        "chunk of 7 values is not a whole number of 6-channel frames"
    );
}
