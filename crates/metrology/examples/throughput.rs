//! Throughput of the metrology hot paths measured in CPU time of this thread (from
//! `/proc/thread-self/schedstat`), so the figures stay meaningful on a busy machine where the
//! criterion benchmarks' wall-clock times are inflated by other processes. Same workloads as
//! `benches/metrology.rs`: (a) Σv², Σi², Σv·i over 64 MiB and 256 KiB; (b) the full streaming
//! analysis at 8 kHz with harmonics, single and three phase, and without harmonics.
//!
//! Run: `taskset -c 1 cargo run -p metrology --release --example throughput`
//! (on Linux; elsewhere the CPU-time column falls back to wall time). Arguments pick workloads
//! for profiling (`a`, `single`, `no-harmonics`, `three`); without any, all run.

use std::f64::consts::PI;
use std::hint::black_box;
use std::time::Instant;

use metrology::{Analyzer, AnalyzerConfig, NominalFrequency, power_sums};

const FS: f64 = 8000.0;

/// Nanoseconds this thread has run on a CPU.
fn cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Best of `rounds` rounds of `f`, in million items per second by CPU time and by wall time.
/// Each round repeats `f` for at least 0.3 s, far above the scheduler-tick granularity of
/// `schedstat`.
fn rate(items: usize, rounds: usize, mut f: impl FnMut()) -> (f64, f64) {
    let (mut best_cpu, mut best_wall) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..rounds {
        let (c0, w0) = (cpu_ns(), Instant::now());
        let mut reps = 0u32;
        while reps == 0 || w0.elapsed().as_secs_f64() < 0.3 {
            f();
            reps += 1;
        }
        let wall = w0.elapsed().as_secs_f64() / f64::from(reps);
        let cpu = match (c0, cpu_ns()) {
            (Some(a), Some(b)) => (b - a) as f64 * 1e-9 / f64::from(reps),
            _ => wall,
        };
        best_cpu = best_cpu.min(cpu);
        best_wall = best_wall.min(wall);
    }
    (
        items as f64 / best_cpu / 1e6,
        items as f64 / best_wall / 1e6,
    )
}

fn phase(n: usize, shift: f64) -> (Vec<f64>, Vec<f64>) {
    let w = 2.0 * PI * 50.02 / FS;
    let mut state = 0x1234_5678_u64;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    (0..n)
        .map(|k| {
            let t = w * k as f64 + shift;
            let v = 325.0 * t.sin() + 9.0 * (3.0 * t).sin() + 6.0 * (5.0 * t + 1.0).sin() + noise();
            let i = 14.0 * (t - 0.5).sin()
                + 4.0 * (3.0 * t - 1.0).sin()
                + 3.0 * (5.0 * t + 2.0).sin()
                + 2.0 * (7.0 * t).sin()
                + 0.01 * noise();
            (v, i)
        })
        .unzip()
}

fn main() {
    let picked: Vec<String> = std::env::args().skip(1).collect();
    let wanted = |name: &str| picked.is_empty() || picked.iter().any(|p| p == name);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average: {}", load.trim());
    println!(
        "{:<40} {:>14} {:>14}",
        "workload", "M pairs/s cpu", "M pairs/s wall"
    );
    let show = |name: &str, (cpu, wall): (f64, f64)| {
        println!("{name:<40} {cpu:>14.1} {wall:>14.1}");
        cpu
    };
    let n = (30.0 * FS) as usize;
    // Profiling one (b) workload should not spend its time making the 64 MiB signal of (a).
    let (v, i) = phase(if wanted("a") { 4 << 20 } else { n }, 0.0);
    let (mut a_ram, mut a_l2) = (f64::NAN, f64::NAN);
    if wanted("a") {
        a_ram = show(
            "(a) accumulation, 64 MiB (RAM)",
            rate(v.len(), 5, || {
                black_box(power_sums(black_box(&v), black_box(&i)));
            }),
        );
        let (vs, is) = (&v[..16 << 10], &i[..16 << 10]);
        a_l2 = show(
            "(a) accumulation, 256 KiB (L2)",
            rate(vs.len() * 64, 5, || {
                for _ in 0..64 {
                    black_box(power_sums(black_box(vs), black_box(is)));
                }
            }),
        );
    }
    let (v, i) = (&v[..n], &i[..n]);
    let single = |harmonics: bool| {
        rate(n, 5, || {
            let mut config = AnalyzerConfig::single_phase(FS, NominalFrequency::Hz50);
            config.harmonics = harmonics;
            let mut analyzer = Analyzer::new(config).unwrap();
            let mut p = 0.0;
            analyzer
                .push_single_phase(v, i, |w| p += w.total.p_w)
                .unwrap();
            black_box(p);
        })
    };
    let mut b1 = f64::NAN;
    if wanted("single") {
        b1 = show("(b) analysis 8 kHz, single phase", single(true));
    }
    if wanted("no-harmonics") {
        show("(b) analysis 8 kHz, single, no harmonics", single(false));
    }
    if !wanted("three") {
        return;
    }
    let phases: Vec<(Vec<f64>, Vec<f64>)> = (0..3)
        .map(|p| phase(n, -2.0 * PI * p as f64 / 3.0))
        .collect();
    let mut frames = Vec::with_capacity(6 * n);
    for k in 0..n {
        frames.extend(phases.iter().map(|p| p.0[k]));
        frames.extend(phases.iter().map(|p| p.1[k]));
    }
    let b3 = show(
        "(b) analysis 8 kHz, three phase",
        rate(3 * n, 5, || {
            let config = AnalyzerConfig::three_phase(FS, NominalFrequency::Hz50, false);
            let mut analyzer = Analyzer::new(config).unwrap();
            let mut p = 0.0;
            analyzer.push_frames(&frames, |w| p += w.total.p_w).unwrap();
            black_box(p);
        }),
    );
    println!(
        "(b)/(a) by CPU time: single {:.2} of RAM, {:.3} of L2; three phase {:.2} of RAM, {:.3} of L2",
        b1 / a_ram,
        b1 / a_l2,
        b3 / a_ram,
        b3 / a_l2
    );
}
