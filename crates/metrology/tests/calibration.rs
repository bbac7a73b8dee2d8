//! Calibration: a meter with gain, offset and V/I skew errors, calibrated from two reference
//! readings (PF 1 and PF 0.5 lagging), then measured again.

use metrology::{CalibrationPoint, PhaseCalibration, ReferencePoint, derive_phase_calibration};

use crate::signals::{Signal, Truth, assert_meets_bar, clean, run};

const FS: f64 = 4000.0;
/// The current sensor lags by 1.37 samples (342.5 µs, 6.2° at 50 Hz).
const SKEW: f64 = 1.37;

/// What the ADC delivers for a true load: raw = true / gain + offset, current late by SKEW.
fn raw(sig: &Signal, seconds: f64) -> (Vec<f64>, Vec<f64>) {
    let (v, _) = sig.samples(seconds);
    let mut late = sig.clone();
    for t in &mut late.tones {
        // A delay of τ is a phase lag of ω·τ at each tone's frequency.
        t.i_deg -= 360.0 * t.order * sig.freq_hz * SKEW / FS;
    }
    let (_, i) = late.samples(seconds);
    let v = v.iter().map(|x| x / 0.0125 + 512.0).collect();
    let i = i.iter().map(|x| x / 0.004 - 37.0).collect();
    (v, i)
}

fn point(sig: &Signal, angle_deg: f64, cal: PhaseCalibration) -> CalibrationPoint {
    let mut config = sig.config();
    config.calibration.phases[0] = cal;
    config.min_voltage_v = 0.0;
    let (v, i) = raw(sig, 1.0);
    let (windows, _) = run(config, &v, &i, 1000);
    let w = clean(&windows)[0];
    CalibrationPoint::from_report(
        ReferencePoint {
            v_rms: 230.0,
            i_rms: 5.0,
            angle_deg,
        },
        &w,
        0,
    )
    .unwrap()
}

#[test]
fn reference_readings_at_pf_1_and_0_5_calibrate_gain_offset_and_skew() {
    let unity_load = Signal::sine(50.0, FS, 230.0, 5.0, 0.0);
    let lagging_load = Signal::sine(50.0, FS, 230.0, 5.0, 60.0);
    // First pass with no calibration: everything is wrong.
    let p1 = point(&unity_load, 0.0, PhaseCalibration::UNITY);
    let p05 = point(&lagging_load, 60.0, PhaseCalibration::UNITY);
    assert!((p05.angle_deg - 60.0).abs() > 5.0);
    let cal = derive_phase_calibration(&PhaseCalibration::UNITY, &p1, &p05, FS).unwrap();
    assert!((cal.voltage.gain - 0.0125).abs() < 1e-6, "{cal:?}");
    assert!((cal.current.gain - 0.004).abs() < 1e-7, "{cal:?}");
    assert!((cal.voltage.offset - 512.0).abs() < 1e-3 && (cal.current.offset + 37.0).abs() < 1e-3);
    assert!(
        (cal.skew_samples - SKEW).abs() < 1e-3,
        "{}",
        cal.skew_samples
    );
    // Measured again with the derived calibration, a harmonic load meets the bar.
    let mut config = unity_load.config();
    config.calibration.phases[0] = cal;
    for angle in [0.0, 60.0, -45.0] {
        let sig = Signal::sine(50.0, FS, 230.0, 5.0, angle);
        let (v, i) = raw(&sig, 1.0);
        let (windows, _) = run(config, &v, &i, 700);
        let truth: Truth = sig.truth();
        let good = clean(&windows);
        assert!(!good.is_empty());
        for w in &good {
            assert_meets_bar(w, &truth, 1.0, "after calibration");
        }
    }
}

#[test]
fn unusable_readings_are_refused() {
    let good = CalibrationPoint {
        reference: ReferencePoint {
            v_rms: 230.0,
            i_rms: 5.0,
            angle_deg: 0.0,
        },
        v_rms: 229.0,
        i_rms: 5.1,
        v_dc: 0.0,
        i_dc: 0.0,
        angle_deg: 0.5,
        freq_hz: 50.0,
    };
    let lagging = CalibrationPoint {
        reference: ReferencePoint {
            angle_deg: 60.0,
            ..good.reference
        },
        angle_deg: 60.4,
        ..good
    };
    let unity = PhaseCalibration::UNITY;
    assert!(derive_phase_calibration(&unity, &good, &lagging, 8000.0).is_ok());
    let zero = CalibrationPoint { i_rms: 0.0, ..good };
    assert!(derive_phase_calibration(&unity, &zero, &lagging, 8000.0).is_err());
    // Readings swapped: the PF 0.5 point is where the PF 1 point should be.
    let err = derive_phase_calibration(&unity, &lagging, &good, 8000.0).unwrap_err();
    assert!(err.to_string().contains("reference angle"), "{err}");
    let nan = CalibrationPoint {
        v_dc: f64::NAN,
        ..good
    };
    assert!(derive_phase_calibration(&unity, &nan, &lagging, 8000.0).is_err());
}
