//! Criterion benchmark of the simulator: how many real-time three-phase 8 kHz meters one core
//! simulates, synthesis alone and through the full metrology path (with and without harmonics).
//!
//! Each iteration simulates 10 s of one meter; the throughput is reported in "elements" = simulated
//! seconds, so elements/s is directly the number of real-time meters per core.
//!
//! Run: `CARGO_TARGET_DIR=... taskset -c 1 cargo bench -p agent --bench simulator`

use std::hint::black_box;
use std::time::Duration;

use agent::sources::simulator::{MeterPosition, Scenario, Simulator};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use metrology::{Analyzer, AnalyzerConfig, NominalFrequency};

const SECONDS: u64 = 10;

/// A typical house: heater, pump with inrush, electronics, PV, EV charger, noise and drift.
const HOUSE: &str = r#"
seed = 3
phases = 3
sample_rate_hz = 8000
[supply]
frequency_drift_hz = 0.05
harmonics = [[5, 0.02], [7, 0.01]]
[noise]
voltage_v = 0.2
current_a = 0.005
[[load]]
name = "heater"
kind = { type = "resistive", power_w = 2000 }
phase = "a"
[[load]]
name = "pump"
kind = { type = "motor", power_w = 900, pf = 0.8 }
phase = "b"
[[load]]
name = "electronics"
kind = { type = "rectifier", power_w = 300, thd = 0.8 }
phase = "c"
[[load]]
name = "roof"
kind = { type = "pv", peak_power_w = 4000, cloudiness = 0.3 }
phase = "abc"
[[load]]
name = "car"
kind = { type = "ev_charger", power_w = 7000 }
phase = "abc"
"#;

fn simulator() -> Simulator {
    let sc = Scenario::from_toml(HOUSE, "bench").expect("bench scenario");
    Simulator::new(sc, MeterPosition::House, None).expect("simulator")
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("simulator_3ph_8khz");
    group.throughput(Throughput::Elements(SECONDS));
    group.measurement_time(Duration::from_secs(10));
    group.sample_size(10);
    let frames = 1600;
    let chunks = SECONDS as usize * 8000 / frames;

    group.bench_function("synthesis_only", |b| {
        let mut sim = simulator();
        let mut buf = Vec::new();
        b.iter(|| {
            for _ in 0..chunks {
                sim.generate_into(&mut buf, frames);
                black_box(&buf);
            }
        });
    });

    for harmonics in [true, false] {
        let name = if harmonics {
            "with_metrology_harmonics"
        } else {
            "with_metrology_no_harmonics"
        };
        group.bench_function(name, |b| {
            let mut sim = simulator();
            let config = AnalyzerConfig {
                harmonics,
                ..AnalyzerConfig::three_phase(8000.0, NominalFrequency::Hz50, true)
            };
            let mut analyzer = Analyzer::new(config).expect("analyzer");
            let mut buf = Vec::new();
            let mut p = 0.0;
            b.iter(|| {
                for _ in 0..chunks {
                    sim.generate_into(&mut buf, frames);
                    analyzer
                        .push_frames(&buf, |w| p += w.total.p_w)
                        .expect("push");
                }
                black_box(p)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
