//! Energy balance end to end: a house behind a line sensor (seed 003's set-up) over days of
//! 15-minute readings, honest then with a small bypass.

use analytics::balance::{
    AccuracyClass, BalanceAlarm, BalanceConfig, BalanceMode, BalanceTopology, ChildSpec, Conductor,
    Connection, IntervalReading, LineSegment, LoadDistribution, Material, MeterSpec, calibrate,
    evaluate_balance,
};
use analytics::synth::Rng;

fn topology() -> BalanceTopology {
    let cu16 = Conductor {
        material: Material::Copper,
        cross_section_mm2: 16.0,
    };
    let meter = |id: &str| MeterSpec {
        meter_id: id.into(),
        class: AccuracyClass::Class1,
        basic_current_a: 5.0,
        resolution_wh: 1.0,
    };
    BalanceTopology {
        observer: meter("pole"),
        three_phase: false,
        transformer: None,
        feeder: vec![],
        children: vec![ChildSpec {
            meter: meter("house"),
            connection: Connection::PhaseA,
            service: Some(LineSegment {
                length_m: 30.0,
                phase: cu16,
                neutral: cu16,
                distribution: LoadDistribution::Lumped,
            }),
        }],
        nominal_voltage_v: 230.0,
        power_factor: 0.95,
    }
}

/// Days of 15-minute intervals: the pole sees the house, its loss, and the bypassed share.
fn readings(days: usize, theft_from: usize, theft: f64, seed: u64) -> Vec<IntervalReading> {
    let t = topology();
    let mut rng = Rng::new(seed);
    let (g_pole, g_house) = (rng.uniform(-0.008, 0.008), rng.uniform(-0.008, 0.008));
    (0..days * 96)
        .map(|i| {
            let hour = (i % 96) as f64 / 4.0;
            let load_w =
                600.0 + 1500.0 * (((hour - 19.0) / 24.0 * std::f64::consts::TAU).cos() + 1.0) / 2.0;
            let full_wh = load_w / 4.0 * (1.0 + 0.2 * rng.normal()).max(0.1);
            let metered = if i >= theft_from {
                full_wh * (1.0 - theft)
            } else {
                full_wh
            };
            let loss = t.loss_wh(&[full_wh], 900.0, 25.0 + 10.0 * rng.normal());
            IntervalReading {
                start_s: 1_767_225_600 + i as i64 * 900,
                duration_s: 900.0,
                observer_wh: Some(((full_wh + loss) * (1.0 + g_pole)).round()),
                children_wh: vec![Some((metered * (1.0 + g_house)).round())],
                conductor_temp_c: None,
            }
        })
        .collect()
}

#[test]
fn honest_month_raises_nothing_and_a_3_percent_bypass_is_found_the_same_day() {
    let cfg = BalanceConfig::default();
    let data = readings(7 + 30 + 1, (7 + 30) * 96, 0.03, 42);
    let (calibration, diagnostics) = calibrate(&topology(), &data[..7 * 96], &cfg);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let calibration = calibration.expect("enough intervals");
    // Gain and I²R loss are partly collinear over one week of a single house, so only the
    // plausibility of the fit is pinned, not the split between them.
    assert!(
        calibration.gain.abs() < 0.02 && calibration.loss_scale > 0.0,
        "{calibration:?}"
    );
    let honest = evaluate_balance(
        &topology(),
        Some(&calibration),
        &data[7 * 96..37 * 96],
        &cfg,
    );
    assert!(honest.findings.is_empty(), "{:?}", honest.findings.first());
    assert_eq!(honest.days.len(), 30);
    let theft = evaluate_balance(&topology(), Some(&calibration), &data[7 * 96..], &cfg);
    let first = theft
        .findings
        .iter()
        .map(|f| f.end_s)
        .min()
        .expect("bypass detected");
    assert!(first - data[37 * 96].start_s <= 86_400);
    assert!(theft.findings.iter().any(|f| f.alarm == BalanceAlarm::Day));
}

#[test]
fn uncalibrated_model_still_catches_a_large_bypass_without_false_alarms() {
    let cfg = BalanceConfig::default();
    let data = readings(10, 9 * 96, 0.15, 7);
    let report = evaluate_balance(&topology(), None, &data, &cfg);
    assert!(report.days[..9].iter().all(|d| !d.alarm));
    assert!(report.days[9].alarm);
    assert!(
        report
            .diagnostics
            .iter()
            .any(|d| d.message.contains("not calibrated"))
    );
}

#[test]
fn flat_rule_is_available_for_comparison() {
    let cfg = BalanceConfig {
        mode: BalanceMode::FlatPercent(2.0),
        ..Default::default()
    };
    let data = readings(2, 96, 0.20, 3);
    let report = evaluate_balance(&topology(), None, &data, &cfg);
    assert!(report.days[1].alarm);
    assert!(report.days[1].residual_wh / report.days[1].observer_wh > 0.15);
}

#[test]
fn too_short_calibration_is_a_diagnostic() {
    let (c, d) = calibrate(
        &topology(),
        &readings(1, 999, 0.0, 1)[..40],
        &BalanceConfig::default(),
    );
    assert!(c.is_none());
    assert!(d[0].message.contains("at least 48"), "{d:?}");
}

#[test]
fn children_reading_more_than_the_observer_is_a_topology_diagnostic() {
    let mut data = readings(2, 999, 0.0, 5);
    for r in &mut data[96..] {
        r.children_wh[0] = r.children_wh[0].map(|e| e * 1.3);
    }
    let report = evaluate_balance(&topology(), None, &data, &BalanceConfig::default());
    assert!(report.findings.is_empty());
    assert!(
        report
            .diagnostics
            .iter()
            .any(|d| d.message.contains("check the topology")),
        "{:?}",
        report.diagnostics
    );
}

#[test]
fn cusum_catches_a_slow_theft_below_the_interval_and_day_thresholds() {
    let cfg = BalanceConfig::default();
    let data = readings(7 + 3, 7 * 96, 0.008, 11);
    let (calibration, _) = calibrate(&topology(), &data[..7 * 96], &cfg);
    let report = evaluate_balance(&topology(), calibration.as_ref(), &data[7 * 96..], &cfg);
    assert!(
        report.days.iter().all(|d| !d.alarm),
        "a 0.8 % theft is inside the day threshold"
    );
    let cusum: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.alarm == BalanceAlarm::Cusum)
        .collect();
    assert!(!cusum.is_empty(), "{:?}", report.findings);
    assert!(cusum[0].end_s - data[7 * 96].start_s < 86_400);
    assert!(cusum[0].message.contains("UTC"), "{}", cusum[0].message);
}
