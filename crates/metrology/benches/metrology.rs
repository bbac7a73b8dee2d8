//! Criterion benchmarks of the metrology hot paths, in million sample pairs (v, i) per second:
//! (a) the bare accumulation Σv², Σi², Σv·i over a buffer — the memory-bound floor — once from
//! RAM (64 MiB) and once from L2 (256 KiB); (b) the full streaming analysis with harmonics at
//! 8 kHz, single phase and three phase (a three-phase frame counts as three pairs), plus the
//! same without harmonics.
//!
//! Run: `taskset -c 1 cargo bench -p metrology --bench metrology`

use std::f64::consts::PI;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use metrology::{Analyzer, AnalyzerConfig, NominalFrequency, power_sums};

const FS: f64 = 8000.0;
/// 30 s of signal per iteration: 150 windows.
const SECONDS: f64 = 30.0;

/// A distorted 50.02 Hz voltage and current (3rd, 5th, 7th harmonics) with a little noise.
fn phase(n: usize, shift: f64) -> (Vec<f64>, Vec<f64>) {
    let w = 2.0 * PI * 50.02 / FS;
    let mut state = 0x1234_5678_u64;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let mut v = Vec::with_capacity(n);
    let mut i = Vec::with_capacity(n);
    for k in 0..n {
        let t = w * k as f64 + shift;
        v.push(325.0 * t.sin() + 9.0 * (3.0 * t).sin() + 6.0 * (5.0 * t + 1.0).sin() + noise());
        i.push(
            14.0 * (t - 0.5).sin()
                + 4.0 * (3.0 * t - 1.0).sin()
                + 3.0 * (5.0 * t + 2.0).sin()
                + 2.0 * (7.0 * t).sin()
                + 0.01 * noise(),
        );
    }
    (v, i)
}

fn accumulation(c: &mut Criterion) {
    let mut group = c.benchmark_group("a_accumulation");
    for (name, pairs) in [("ram_64MiB", 4 << 20), ("l2_256KiB", 16 << 10)] {
        let (v, i) = phase(pairs, 0.0);
        group.throughput(Throughput::Elements(pairs as u64));
        group.bench_function(name, |b| {
            b.iter(|| power_sums(black_box(&v), black_box(&i)))
        });
    }
    group.finish();
}

fn analysis(c: &mut Criterion) {
    let n = (SECONDS * FS) as usize;
    let mut group = c.benchmark_group("b_analysis_8kHz");
    let (v, i) = phase(n, 0.0);
    for (name, harmonics) in [("single_phase", true), ("single_phase_no_harmonics", false)] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let mut config = AnalyzerConfig::single_phase(FS, NominalFrequency::Hz50);
                    config.harmonics = harmonics;
                    Analyzer::new(config).unwrap()
                },
                |mut analyzer| {
                    let mut p = 0.0;
                    analyzer
                        .push_single_phase(&v, &i, |w| p += w.total.p_w)
                        .unwrap();
                    black_box(p)
                },
                BatchSize::LargeInput,
            )
        });
    }
    let phases: Vec<(Vec<f64>, Vec<f64>)> = (0..3)
        .map(|p| phase(n, -2.0 * PI * p as f64 / 3.0))
        .collect();
    let mut frames = Vec::with_capacity(6 * n);
    for k in 0..n {
        frames.extend(phases.iter().map(|p| p.0[k]));
        frames.extend(phases.iter().map(|p| p.1[k]));
    }
    group.throughput(Throughput::Elements(3 * n as u64));
    group.bench_function("three_phase", |b| {
        b.iter_batched(
            || {
                Analyzer::new(AnalyzerConfig::three_phase(
                    FS,
                    NominalFrequency::Hz50,
                    false,
                ))
                .unwrap()
            },
            |mut analyzer| {
                let mut p = 0.0;
                analyzer.push_frames(&frames, |w| p += w.total.p_w).unwrap();
                black_box(p)
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(15)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = accumulation, analysis
}
criterion_main!(benches);
