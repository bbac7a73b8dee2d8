//! Criterion benchmarks of the analytics hot paths: history parsing (wide CSV), feature
//! extraction plus unsupervised scoring, scoring with a trained model, and the energy balance of
//! a 30-house feeder. Throughput is in meters (or intervals) per second.
//!
//! Run: `taskset -c 1 cargo bench -p analytics --bench analytics`

use std::hint::black_box;
use std::time::Duration;

use analytics::balance::{
    AccuracyClass, BalanceConfig, BalanceTopology, ChildSpec, Conductor, Connection,
    IntervalReading, LineSegment, LoadDistribution, Material, MeterSpec, evaluate_balance,
};
use analytics::synth::{Attack, Rng, SynthConfig, generate_population, inject};
use analytics::{
    GbtModel, GbtParams, PatternConfig, ValueLimits, days_from_civil, extract_features,
    parse_histories, score_unsupervised,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const METERS: usize = 2000;
const DAYS: usize = 1095;

fn population() -> (Vec<analytics::MeterHistory>, Vec<bool>) {
    let cfg = SynthConfig {
        meters: METERS,
        days: DAYS,
        intervals_per_day: 1,
        first_day: days_from_civil(2021, 1, 1),
        missing: true,
    };
    let mut histories = generate_population(&cfg, 1);
    let mut rng = Rng::new(2);
    let labels = histories
        .iter_mut()
        .map(|h| {
            let theft = rng.unit() < 0.12;
            if theft {
                inject(
                    h,
                    Attack::ALL[rng.below(0, 6)],
                    rng.below(100, 900),
                    &mut rng,
                );
            }
            theft
        })
        .collect();
    (histories, labels)
}

fn wide_csv(histories: &[analytics::MeterHistory]) -> String {
    let mut out = String::from("CONS_NO,FLAG");
    for d in 0..DAYS as i32 {
        let (y, m, dd) = analytics::civil_from_days(days_from_civil(2021, 1, 1) + d);
        out.push_str(&format!(",{y}/{m}/{dd}"));
    }
    out.push('\n');
    for h in histories {
        out.push_str(&h.meter_id);
        out.push_str(",0");
        for v in &h.kwh {
            out.push(',');
            if !v.is_nan() {
                out.push_str(&format!("{v:.2}"));
            }
        }
        out.push('\n');
    }
    out
}

fn scoring(c: &mut Criterion) {
    let (histories, labels) = population();
    let csv = wide_csv(&histories);
    let mut g = c.benchmark_group("theft scoring, 3 years daily");
    g.throughput(Throughput::Elements(METERS as u64));
    g.measurement_time(Duration::from_secs(10));
    g.sample_size(10);
    g.bench_function("parse wide CSV", |b| {
        b.iter(|| parse_histories(black_box(&csv), ValueLimits::default()).unwrap())
    });
    g.bench_function("features + unsupervised score", |b| {
        b.iter(|| {
            score_unsupervised(&extract_features(
                black_box(&histories),
                &PatternConfig::default(),
            ))
        })
    });
    let features = extract_features(&histories, &PatternConfig::default());
    let label_rows: Vec<(String, bool)> = features
        .meters
        .iter()
        .zip(&labels)
        .map(|(m, l)| (m.meter_id.clone(), *l))
        .collect();
    let (model, _) = GbtModel::train(&features, &label_rows, &GbtParams::default()).unwrap();
    g.bench_function("model score (features given)", |b| {
        b.iter(|| model.score(black_box(&features)))
    });
    g.finish();
}

fn balance(c: &mut Criterion) {
    let cu16 = Conductor {
        material: Material::Copper,
        cross_section_mm2: 16.0,
    };
    let al = Conductor {
        material: Material::Aluminium,
        cross_section_mm2: 185.0,
    };
    let meter = |id: String| MeterSpec {
        meter_id: id,
        class: AccuracyClass::Class1,
        basic_current_a: 5.0,
        resolution_wh: 1.0,
    };
    let phases = [Connection::PhaseA, Connection::PhaseB, Connection::PhaseC];
    let topology = BalanceTopology {
        observer: meter("feeder".into()),
        three_phase: true,
        transformer: None,
        feeder: vec![LineSegment {
            length_m: 350.0,
            phase: al,
            neutral: al,
            distribution: LoadDistribution::Uniform,
        }],
        children: (0..30)
            .map(|i| ChildSpec {
                meter: meter(format!("h{i}")),
                connection: phases[i % 3],
                service: Some(LineSegment {
                    length_m: 25.0,
                    phase: cu16,
                    neutral: cu16,
                    distribution: LoadDistribution::Lumped,
                }),
            })
            .collect(),
        nominal_voltage_v: 230.0,
        power_factor: 0.95,
    };
    let mut rng = Rng::new(3);
    let readings: Vec<IntervalReading> = (0..96 * 30)
        .map(|i| {
            let children: Vec<Option<f64>> = (0..30)
                .map(|_| Some(rng.uniform(50.0, 800.0).round()))
                .collect();
            let sum: f64 = children.iter().flatten().sum();
            IntervalReading {
                start_s: i * 900,
                duration_s: 900.0,
                observer_wh: Some((sum * 1.01).round()),
                children_wh: children,
                conductor_temp_c: None,
            }
        })
        .collect();
    let mut g = c.benchmark_group("energy balance, 30-house feeder");
    g.throughput(Throughput::Elements(readings.len() as u64));
    g.bench_function("30 days of 15-minute intervals", |b| {
        b.iter(|| {
            evaluate_balance(
                &topology,
                None,
                black_box(&readings),
                &BalanceConfig::default(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, scoring, balance);
criterion_main!(benches);
