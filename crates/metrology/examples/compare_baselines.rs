//! Prints the errors of the seed 000 peak-timing method, an EmonLib-style `calcVI` and this
//! crate's analyzer on the same synthetic signals (exact IEEE 1459 truth), as a Markdown table
//! for BENCHMARKS.md: `cargo run -p metrology --release --example compare_baselines`.
//!
//! Each cell is the worst error over the method's windows in 2 s of signal: P and Q as % of S,
//! PF in absolute units. EmonLib reports no Q; its |Q| = √(S² − P²) is shown instead.

#[path = "../tests/baselines.rs"]
mod baselines;
#[path = "../tests/signals.rs"]
#[allow(dead_code)]
mod signals;

use baselines::Estimate;
use signals::{Signal, Tone, Truth};

fn cases() -> Vec<(&'static str, Signal)> {
    let pf08 = 0.8f64.acos().to_degrees();
    let harmonic = |fs: f64, f: f64| Signal {
        tones: vec![
            Tone::new(1.0, 230.0, 0.0, 10.0, -25.0),
            Tone::new(3.0, 9.2, 40.0, 3.0, -70.0),
            Tone::new(5.0, 6.9, 170.0, 2.2, 100.0),
            Tone::new(7.0, 4.6, -60.0, 1.4, 15.0),
        ],
        ..Signal::sine(f, fs, 0.0, 0.0, 0.0)
    };
    let mut rectifier = vec![Tone::new(1.0, 230.0, 0.0, 1.0, -5.0)];
    for (h, amp) in [
        (3.0, 0.85),
        (5.0, 0.62),
        (7.0, 0.38),
        (9.0, 0.18),
        (11.0, 0.07),
    ] {
        rectifier.push(Tone::new(
            h,
            0.0,
            0.0,
            amp,
            180.0 * (h - 1.0) / 2.0 - 5.0 * h,
        ));
    }
    let mut noisy = harmonic(8000.0, 50.0);
    noisy.v_noise = 2.4;
    noisy.i_noise = 0.108;
    noisy.seed = 11;
    let mut dc = harmonic(8000.0, 50.0);
    dc.v_dc = 20.0;
    dc.i_dc = 0.5;
    vec![
        (
            "seed 000 resistive 240 V 0.5 A",
            Signal::sine(50.0, 8000.0, 240.0, 0.5, 0.0),
        ),
        (
            "seed 000 pump 230 V PF 0.8",
            Signal::sine(50.0, 8000.0, 230.0, 1080.0 / 230.0, pf08),
        ),
        ("3rd/5th/7th in V and I", harmonic(8000.0, 50.0)),
        (
            "rectifier (PF 0.66, DPF 0.996)",
            Signal {
                tones: rectifier,
                ..Signal::sine(50.0, 8000.0, 0.0, 0.0, 0.0)
            },
        ),
        (
            "export, quadrant III (−150°)",
            Signal::sine(50.0, 8000.0, 230.0, 10.0, -150.0),
        ),
        (
            "off-nominal 47.3 Hz, PF 0.8",
            Signal::sine(47.3, 8000.0, 230.0, 5.0, pf08),
        ),
        ("7993 Hz sampling, harmonics", harmonic(7993.0, 50.0)),
        ("40 dB noise, harmonics", noisy),
        ("DC offsets, harmonics", dc),
    ]
}

struct Errors {
    p: f64,
    q: f64,
    pf: f64,
}

fn worst(estimates: &[Estimate], t: &Truth, signed_q: bool) -> Errors {
    let mut e = Errors {
        p: 0.0,
        q: 0.0,
        pf: 0.0,
    };
    for x in estimates {
        let q_truth = if signed_q { t.q_var } else { t.q_var.abs() };
        e.p = e.p.max(100.0 * (x.p_w - t.p_w).abs() / t.s_va);
        e.q = e.q.max(100.0 * (x.q_var - q_truth).abs() / t.s_va);
        e.pf = e.pf.max((x.pf - t.pf).abs());
    }
    e
}

fn main() {
    const SECONDS: f64 = 2.0;
    println!(
        "| case | peak timing (seed 000) P / Q / PF | EmonLib calcVI P / \\|Q\\| / PF | wattline metrology P / Q / PF |"
    );
    println!("| --- | --- | --- | --- |");
    for (name, sig) in cases() {
        let truth = sig.truth();
        let (v, i) = sig.samples(SECONDS);
        let peak = baselines::peak_timing(&v, &i, sig.fs_hz, 50.0);
        let emon = baselines::calc_vi(&sig, SECONDS, 1.5);
        let (windows, _) = sig.analyze(SECONDS, 4096);
        let ours: Vec<Estimate> = windows
            .iter()
            .filter(|w| !w.flags.any())
            .map(|w| {
                let p = &w.phases[0];
                Estimate {
                    v_rms: p.v_rms,
                    i_rms: p.i_rms,
                    p_w: p.p_w,
                    q_var: p.q_var,
                    pf: p.pf,
                }
            })
            .collect();
        // The noisy case is judged against the noiseless truth plus the noise power.
        let truth = if sig.v_noise > 0.0 {
            let v = (truth.v_rms.powi(2) + sig.v_noise.powi(2)).sqrt();
            let i = (truth.i_rms.powi(2) + sig.i_noise.powi(2)).sqrt();
            Truth {
                v_rms: v,
                i_rms: i,
                s_va: v * i,
                pf: truth.p_w / (v * i),
                ..truth
            }
        } else {
            truth
        };
        let cell = |e: Errors| format!("{:.4} % / {:.4} % / {:.5}", e.p, e.q, e.pf);
        println!(
            "| {name} | {} | {} | {} |",
            cell(worst(&peak, &truth, true)),
            cell(worst(&emon, &truth, false)),
            cell(worst(&ours, &truth, true)),
        );
    }
}
