//! `wattline make-testdata` (hidden): writes the bundled example recordings deterministically.
//!
//! Every file is a sum of sinusoids with chosen amplitudes and phases plus seeded Gaussian
//! noise, printed with fixed decimals, so the expected answers follow from the parameters below
//! (IEEE 1459-2010 definitions) and rerunning the command reproduces testdata/ byte for byte.

use std::f64::consts::TAU;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write the recordings into.
    #[arg(long, default_value = "testdata")]
    pub out: PathBuf,
}

/// A sinusoid: RMS amplitude, harmonic order and phase (degrees, sine reference).
#[derive(Clone, Copy)]
struct Tone {
    rms: f64,
    order: f64,
    phase_deg: f64,
}

fn tone(rms: f64, order: f64, phase_deg: f64) -> Tone {
    Tone {
        rms,
        order,
        phase_deg,
    }
}

fn wave(tones: &[Tone], f_hz: f64, t_s: f64) -> f64 {
    tones
        .iter()
        .map(|h| {
            h.rms * 2f64.sqrt() * (TAU * h.order * f_hz * t_s + h.phase_deg.to_radians()).sin()
        })
        .sum()
}

/// SplitMix64 with Box–Muller: a tiny, fully specified generator, so the files do not depend on
/// a random-number crate's version.
struct Noise(u64);

impl Noise {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        // 53 random bits in (0, 1].
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    fn gauss(&mut self, sigma: f64) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        sigma * (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
    }
}

pub fn run(args: &Args) -> Outcome {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let written = [
        pump(&args.out)?,
        three_phase(&args.out)?,
        pv_export_wav(&args.out)?,
        scope_capture(&args.out)?,
    ];
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// The inductive pump of seed 000: 230 V, PF 0.8 lagging, P = 864 W, Q1 = 648 var, S1 = 1080 VA,
/// at 50 Hz, 8 kHz, 3 s. The voltage carries a 2 % 5th harmonic and the current an 8 % 3rd and
/// 3 % 7th: no harmonic order is in both, so they add no active power (P = P1 = 864 W exactly)
/// while S = V·I grows to ≈ 1084.2 VA and PF falls to ≈ 0.797 (IEEE 1459 §3.1.2).
fn pump(dir: &Path) -> anyhow::Result<PathBuf> {
    let (f_hz, rate_hz, seconds) = (50.0, 8000.0, 3.0);
    let i1_rms = 864.0 / (230.0 * 0.8);
    let lag_deg = 0.8f64.acos().to_degrees();
    let v = [tone(230.0, 1.0, 0.0), tone(0.02 * 230.0, 5.0, 30.0)];
    let i = [
        tone(i1_rms, 1.0, -lag_deg),
        tone(0.08 * i1_rms, 3.0, 75.0),
        tone(0.03 * i1_rms, 7.0, -40.0),
    ];
    let mut noise = Noise(0x000_5eed_0000);
    let mut csv = String::from("t,v,i\n");
    for n in 0..(seconds * rate_hz) as u64 {
        let t_s = n as f64 / rate_hz;
        let v_v = wave(&v, f_hz, t_s) + noise.gauss(0.05);
        let i_a = wave(&i, f_hz, t_s) + noise.gauss(0.002);
        writeln!(csv, "{t_s:.6},{v_v:.4},{i_a:.5}")?;
    }
    write(dir, "pump_230v_pf08_8khz.csv", csv.as_bytes())
}

/// A three-phase four-wire supply with unbalanced voltages (230/228/232 V) and loads: a 10 A
/// PF 0.95 lagging, b 6 A PF 0.85 lagging, c 3 A PF 0.98 leading, each current with a 5 % 3rd
/// harmonic (which adds up in the neutral). Measured neutral current `in = -(ia + ib + ic)`
/// plus its own noise. 50 Hz, 10 kHz, 2 s, no `t` column (analyse with `--rate 10000`).
fn three_phase(dir: &Path) -> anyhow::Result<PathBuf> {
    let (f_hz, rate_hz, seconds) = (50.0, 10_000.0, 2.0);
    let v_rms = [230.0, 228.0, 232.0];
    let v_deg = [0.0, -120.0, 120.0];
    let i_rms: [f64; 3] = [10.0, 6.0, 3.0];
    // θ1 = phase of V1 − phase of I1: positive lags (inductive), negative leads.
    let theta_deg = [
        0.95f64.acos().to_degrees(),
        0.85f64.acos().to_degrees(),
        -(0.98f64.acos().to_degrees()),
    ];
    let mut noise = Noise(0x3_0000_5eed);
    let mut csv = String::from("va,vb,vc,ia,ib,ic,in\n");
    for n in 0..(seconds * rate_hz) as u64 {
        let t_s = n as f64 / rate_hz;
        let mut row = [0.0f64; 7];
        for p in 0..3 {
            row[p] = wave(&[tone(v_rms[p], 1.0, v_deg[p])], f_hz, t_s) + noise.gauss(0.05);
            let fundamental = tone(i_rms[p], 1.0, v_deg[p] - theta_deg[p]);
            let third = tone(0.05 * i_rms[p], 3.0, 3.0 * v_deg[p] + 20.0);
            row[3 + p] = wave(&[fundamental, third], f_hz, t_s);
        }
        row[6] = -(row[3] + row[4] + row[5]) + noise.gauss(0.003);
        for current in &mut row[3..6] {
            *current += noise.gauss(0.003);
        }
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(k, x)| {
                if k < 3 {
                    format!("{x:.3}")
                } else {
                    format!("{x:.4}")
                }
            })
            .collect();
        writeln!(csv, "{}", cells.join(","))?;
    }
    write(dir, "three_phase_unbalanced_10khz.csv", csv.as_bytes())
}

/// A house whose PV inverter exports 2.5 kW into a 240 V, 60 Hz supply at PF 0.98 (current
/// 10.63 A, θ1 = 168.5°: quadrant II, P < 0, Q > 0), recorded as 16-bit PCM WAV at 8 kHz
/// (133⅓ samples per cycle) with full scale 400 V and 20 A. Analyse with
/// `--v-scale 400 --i-scale 20 --nominal 60`.
fn pv_export_wav(dir: &Path) -> anyhow::Result<PathBuf> {
    let (f_hz, rate_hz, seconds) = (60.0, 8000u32, 3.0);
    let (v_full_scale, i_full_scale) = (400.0, 20.0);
    let i_rms = 2500.0 / (240.0 * 0.98);
    let theta_deg = 180.0 - 0.98f64.acos().to_degrees();
    let v = [tone(240.0, 1.0, 0.0), tone(2.4, 3.0, 10.0)];
    let i = [tone(i_rms, 1.0, -theta_deg), tone(0.2, 5.0, 0.0)];
    let mut noise = Noise(0x0000_0e5e_ed00);
    let frames = (seconds * f64::from(rate_hz)) as u32;
    let data_bytes = frames * 4;
    let mut wav = Vec::with_capacity(44 + data_bytes as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_bytes).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&2u16.to_le_bytes()); // channels: v, i
    wav.extend_from_slice(&rate_hz.to_le_bytes());
    wav.extend_from_slice(&(rate_hz * 4).to_le_bytes()); // bytes per second
    wav.extend_from_slice(&4u16.to_le_bytes()); // block align
    wav.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_bytes.to_le_bytes());
    let quantise = |x: f64, full_scale: f64| {
        (x / full_scale * 32768.0).round().clamp(-32768.0, 32767.0) as i16
    };
    for n in 0..frames {
        let t_s = f64::from(n) / f64::from(rate_hz);
        let v_v = wave(&v, f_hz, t_s) + noise.gauss(0.05);
        let i_a = wave(&i, f_hz, t_s) + noise.gauss(0.002);
        wav.extend_from_slice(&quantise(v_v, v_full_scale).to_le_bytes());
        wav.extend_from_slice(&quantise(i_a, i_full_scale).to_le_bytes());
    }
    write(dir, "pv_export_60hz_int16.wav", &wav)
}

/// An oscilloscope capture of the resistive load of seed 000 (240 V, 0.5 A, PF 1, 120 W):
/// 2500 points over 75 ms (33.3 kHz), time relative to the trigger (starting at −25 ms), values
/// on a 10-bit-like grid of 0.5 V and 2 mA. It holds 3 whole cycles between rising zero
/// crossings (−20, 0, 20, 40 ms) and is shorter than one 10-cycle window, so `analyze` reports
/// one short window over those 3 cycles.
fn scope_capture(dir: &Path) -> anyhow::Result<PathBuf> {
    let (f_hz, points, step_s) = (50.0, 2500u32, 30e-6);
    let mut noise = Noise(0x5c0_9e00);
    let mut csv = String::from("t,v,i\n");
    for n in 0..points {
        let t_s = -0.025 + f64::from(n) * step_s;
        // The trigger sits on a rising zero crossing of v at t = 0.
        let phase = TAU * f_hz * t_s;
        let v_v = 240.0 * 2f64.sqrt() * phase.sin() + noise.gauss(0.2);
        let i_a = 0.5 * 2f64.sqrt() * phase.sin() + noise.gauss(0.001);
        let v_v = (v_v / 0.5).round() * 0.5;
        let i_a = (i_a / 0.002).round() * 0.002;
        writeln!(csv, "{t_s:.6},{v_v:.1},{i_a:.3}")?;
    }
    write(dir, "scope_3cycles_resistive.csv", csv.as_bytes())
}
