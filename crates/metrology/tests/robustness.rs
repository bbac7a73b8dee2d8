//! Flags and bad input: clipping, no voltage, DC only, too few samples per cycle, frequency out
//! of range, non-finite samples and bad configurations.

use metrology::{Analyzer, AnalyzerConfig, ClipLimits, ErrorKind, NominalFrequency};

use crate::signals::{Signal, run};

#[test]
fn clipped_samples_flag_their_windows_only() {
    let sig = Signal::sine(50.0, 8000.0, 230.0, 5.0, 20.0);
    let (mut v, i) = sig.samples(2.0);
    // The ADC saturates at ±330 V (peaks are 325 V); a surge drives 4 ms around t = 1.0 s
    // into the limit.
    for x in &mut v[8000..8032] {
        *x = (*x * 1.5).clamp(-330.0, 330.0);
    }
    let mut config = sig.config();
    config.clip = ClipLimits {
        v_abs: 330.0,
        i_abs: 50.0,
    };
    let (windows, _) = run(config, &v, &i, 1000);
    let clipped: Vec<_> = windows.iter().filter(|w| w.flags.clipped).collect();
    assert_eq!(clipped.len(), 1, "exactly the window holding t = 1 s");
    let w = clipped[0];
    assert!(w.t0_s <= 1.0 && 1.0 < w.t0_s + w.duration_s);
}

#[test]
fn no_voltage_gives_nominal_windows_flagged_and_still_books_energy_of_zero() {
    let sig = Signal::sine(50.0, 8000.0, 0.0, 5.0, 0.0);
    let (v, i) = sig.samples(1.0);
    let (windows, analyzer) = run(sig.config(), &v, &i, 1000);
    assert!(windows.len() >= 4);
    for w in &windows {
        assert!(w.flags.no_voltage, "{:?}", w.flags);
        assert_eq!(w.cycles, 0);
        assert_eq!(w.freq_hz, 50.0);
        assert!((w.phases[0].i_rms - 5.0).abs() < 0.05);
    }
    // Gapless from the first sample.
    assert!((windows[0].t0_s + 0.5 / 8000.0).abs() < 1e-12);
    assert_eq!(analyzer.energy().import_wh(), 0.0);
}

#[test]
fn dc_only_voltage_is_no_voltage() {
    let v = vec![230.0; 8000];
    let i = vec![1.0; 8000];
    let (windows, _) = run(
        AnalyzerConfig::single_phase(8000.0, NominalFrequency::Hz50),
        &v,
        &i,
        512,
    );
    assert!(!windows.is_empty());
    for w in &windows {
        assert!(w.flags.no_voltage && w.cycles == 0);
        assert!(w.phases[0].v_rms < 1e-9 && (w.phases[0].v_dc - 230.0).abs() < 1e-9);
        assert!(w.phases[0].p_w.abs() < 1e-9);
    }
}

#[test]
fn voltage_that_disappears_and_returns_is_tracked_again() {
    let sig = Signal::sine(50.0, 8000.0, 230.0, 5.0, 0.0);
    let (mut v, i) = sig.samples(3.0);
    for x in &mut v[8000..12000] {
        *x = 0.0;
    }
    let (windows, _) = run(sig.config(), &v, &i, 2000);
    for pair in windows.windows(2) {
        assert!((pair[1].t0_s - pair[0].t0_s - pair[0].duration_s).abs() < 1e-9);
    }
    assert!(windows.iter().any(|w| w.flags.no_voltage));
    let last_good = windows.iter().rev().find(|w| !w.flags.any()).unwrap();
    assert!(last_good.t0_s > 1.6, "locked again after the outage");
    assert!((last_good.phases[0].p_w - 1150.0).abs() < 0.5);
}

#[test]
fn too_few_samples_per_cycle_is_flagged() {
    // 1 kHz at 60 Hz: 16.7 samples per cycle.
    let sig = Signal::sine(60.0, 1000.0, 120.0, 2.0, 0.0);
    let (windows, _) = sig.analyze(2.0, 100);
    assert!(!windows.is_empty());
    assert!(windows.iter().all(|w| w.flags.too_few_samples_per_cycle));
}

#[test]
fn frequency_outside_the_configured_range_is_flagged() {
    let sig = Signal::sine(53.0, 8000.0, 230.0, 1.0, 0.0);
    let mut config = sig.config();
    config.frequency_range_hz = (49.5, 50.5);
    let (v, i) = sig.samples(1.0);
    let (windows, _) = run(config, &v, &i, 4000);
    let tracked: Vec<_> = windows.iter().filter(|w| w.cycles == 10).collect();
    assert!(!tracked.is_empty());
    assert!(tracked.iter().all(|w| w.flags.frequency_out_of_range));
    assert!((tracked[0].freq_hz - 53.0).abs() < 1e-3);
}

#[test]
fn non_finite_samples_are_refused_with_their_position() {
    let mut analyzer =
        Analyzer::new(AnalyzerConfig::single_phase(8000.0, NominalFrequency::Hz50)).unwrap();
    analyzer
        .push_single_phase(&[1.0; 10], &[0.5; 10], |_| {})
        .unwrap();
    let mut i = [0.5; 10];
    i[3] = f64::NAN;
    let err = analyzer
        .push_single_phase(&[1.0; 10], &i, |_| {})
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::NonFiniteSample {
            frame: 13,
            channel: "i"
        }
    );
    assert_eq!(
        err.to_string(),
        "sample 13 of channel `i` is not a finite number"
    );
    // Nothing of the refused (short) chunk was taken.
    assert_eq!(analyzer.frames_pushed(), 10);
    // In a long chunk, the frames before the bad sample's segment are taken, and counted.
    let mut long =
        Analyzer::new(AnalyzerConfig::single_phase(8000.0, NominalFrequency::Hz50)).unwrap();
    let v = vec![1.0; 200_000];
    let mut i = vec![0.5; 200_000];
    i[150_000] = f64::NEG_INFINITY;
    let err = long.push_single_phase(&v, &i, |_| {}).unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::NonFiniteSample {
            frame: 150_000,
            channel: "i"
        }
    ));
    assert!(long.frames_pushed() <= 150_000 && long.frames_pushed() > 100_000);
    let err = analyzer
        .push_single_phase(&[1.0; 3], &[1.0; 2], |_| {})
        .unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::ChannelLengthMismatch { v_len: 3, i_len: 2 }
    ));
    let mut frames = [0.0; 6];
    frames[4] = f64::INFINITY;
    let err = analyzer.push_frames(&frames, |_| {}).unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::NonFiniteSample {
            frame: 12,
            channel: "v"
        }
    );
}

#[test]
fn a_refused_chunk_leaves_no_trace_in_the_skew_delay_lines() {
    // Regression test for the fused finiteness check: the samples of a refused segment are
    // copied into the buffer before the check fails, and must not reach the delay lines (a NaN
    // in their ring would make every later window NaN).
    let sig = Signal::sine(50.0, 8000.0, 230.0, 5.0, 20.0);
    let (v, i) = sig.samples(2.0);
    let mut config = sig.config();
    config.calibration.phases[0].skew_samples = 1.3;
    let mut analyzer = Analyzer::new(config).unwrap();
    let mut bad_i = i[..100].to_vec();
    bad_i[99] = f64::NAN;
    assert!(
        analyzer
            .push_single_phase(&v[..100], &bad_i, |_| {})
            .is_err()
    );
    assert_eq!(analyzer.frames_pushed(), 0);
    let mut windows = Vec::new();
    analyzer
        .push_single_phase(&v, &i, |w| windows.push(*w))
        .unwrap();
    assert!(windows.len() >= 8);
    for w in &windows {
        let p = &w.phases[0];
        assert!(p.v_rms.is_finite() && p.p_w.is_finite(), "{p:?}");
        assert!((p.v_rms - 230.0).abs() < 0.01, "{}", p.v_rms);
    }
}

#[test]
fn bad_configurations_are_refused_with_the_field_named() {
    let good = AnalyzerConfig::single_phase(8000.0, NominalFrequency::Hz50);
    let cases: [(AnalyzerConfig, &str); 5] = [
        (
            AnalyzerConfig {
                sample_rate_hz: f64::NAN,
                ..good
            },
            "sample_rate_hz",
        ),
        (
            AnalyzerConfig {
                sample_rate_hz: 100.0,
                ..good
            },
            "sample_rate_hz",
        ),
        (
            AnalyzerConfig {
                min_voltage_v: -1.0,
                ..good
            },
            "min_voltage_v",
        ),
        (
            AnalyzerConfig {
                frequency_range_hz: (55.0, 45.0),
                ..good
            },
            "frequency_range_hz",
        ),
        (
            AnalyzerConfig {
                clip: ClipLimits {
                    v_abs: 0.0,
                    i_abs: 1.0,
                },
                ..good
            },
            "clip",
        ),
    ];
    for (config, field) in cases {
        let err = Analyzer::new(config).err().expect("refused");
        assert!(
            matches!(err.kind(), ErrorKind::InvalidConfig { field: f, .. } if f == field),
            "{err}"
        );
    }
    let mut bad_gain = good;
    bad_gain.calibration.phases[0].current.gain = 0.0;
    assert!(Analyzer::new(bad_gain).is_err());
}

#[test]
fn the_analyzer_refuses_work_after_finish() {
    let mut analyzer =
        Analyzer::new(AnalyzerConfig::single_phase(8000.0, NominalFrequency::Hz50)).unwrap();
    analyzer.finish(|_| {}).unwrap();
    assert_eq!(
        analyzer.finish(|_| {}).unwrap_err().kind(),
        ErrorKind::Finished
    );
    assert_eq!(
        analyzer
            .push_frames(&[0.0, 0.0], |_| {})
            .unwrap_err()
            .kind(),
        ErrorKind::Finished
    );
}

#[test]
fn harmonics_can_be_switched_off_without_changing_the_fundamental_quantities() {
    let sig = Signal::sine(50.0, 8000.0, 230.0, 4.0, 25.0);
    let (v, i) = sig.samples(1.0);
    let (with, _) = run(sig.config(), &v, &i, 1000);
    let mut config = sig.config();
    config.harmonics = false;
    let (without, _) = run(config, &v, &i, 1000);
    assert_eq!(with.len(), without.len());
    for (a, b) in with.iter().zip(&without) {
        assert_eq!(a.phases[0].q_var, b.phases[0].q_var);
        assert_eq!(a.phases[0].p_w, b.phases[0].p_w);
        assert_eq!(b.phases[0].v_thd_pct, 0.0);
        assert_eq!(b.phases[0].v_harmonics[1], 0.0);
    }
}

/// A channel with a constant value (an ADC offset at no load, or no signal at all) carries no
/// AC: its RMS, fundamental, harmonics and the power are exactly 0, not ratios of rounding
/// noise (which gave DPF 0.75, a 41° angle and 36 % THD-I at no load). A real small current
/// beside the same offset is still measured.
#[test]
fn a_constant_channel_reports_zero_not_rounding_noise() {
    let fs = 8000.0;
    let n = 16_000;
    let w = 2.0 * std::f64::consts::PI * 50.0 / fs;
    let v: Vec<f64> = (0..n).map(|k| 325.0 * (w * k as f64).sin()).collect();
    for offset in [0.0, 0.01, 0.1, -3.7] {
        let i = vec![offset; n];
        let (windows, analyzer) = run(
            AnalyzerConfig::single_phase(fs, NominalFrequency::Hz50),
            &v,
            &i,
            1000,
        );
        assert!(windows.len() >= 9);
        for win in &windows {
            let p = &win.phases[0];
            assert!((p.v_rms - 229.81).abs() < 0.01, "{}", p.v_rms);
            let zeros = [
                p.i_rms,
                p.p_w,
                p.q_var,
                p.s_va,
                p.pf,
                p.dpf,
                p.angle_deg,
                p.i_thd_pct,
                p.p1_w,
                p.s1_va,
                p.i1_rms,
            ];
            assert!(zeros.iter().all(|&x| x == 0.0), "offset {offset}: {p:?}");
            assert!(p.i_harmonics[1..].iter().all(|&x| x == 0.0));
            assert_eq!(p.i_harmonic_phasors, metrology::HarmonicPhasors::ZERO);
            assert!((p.i_dc - offset).abs() <= 1e-12 * offset.abs());
            assert!(p.v_harmonics[1] > 229.0 && p.v_thd_pct < 0.01);
        }
        let e = analyzer.energy();
        assert_eq!(
            (e.import_wh(), e.export_wh()),
            (0.0, 0.0),
            "offset {offset}"
        );
        // 1 mA of real current beside the offset is measured, lagging 30°.
        let i: Vec<f64> = (0..n)
            .map(|k| {
                offset + 1e-3 * std::f64::consts::SQRT_2 * (w * k as f64 - 30f64.to_radians()).sin()
            })
            .collect();
        let (windows, _) = run(
            AnalyzerConfig::single_phase(fs, NominalFrequency::Hz50),
            &v,
            &i,
            1000,
        );
        for win in windows.iter().filter(|w| !w.flags.any()) {
            let p = &win.phases[0];
            assert!((p.i_rms - 1e-3).abs() < 1e-8, "{}", p.i_rms);
            assert!((p.dpf - 30f64.to_radians().cos()).abs() < 1e-6, "{}", p.dpf);
            assert!((p.angle_deg - 30.0).abs() < 1e-4);
        }
    }
    // Both channels constant: no voltage, and nothing but the DC values.
    let (windows, _) = run(
        AnalyzerConfig::single_phase(fs, NominalFrequency::Hz50),
        &vec![0.3; n],
        &vec![0.1; n],
        1000,
    );
    for win in &windows {
        let p = &win.phases[0];
        assert!(win.flags.no_voltage);
        assert_eq!(
            (p.v_rms, p.i_rms, p.p_w, p.dpf, p.angle_deg, p.v_thd_pct),
            (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        );
    }
}
