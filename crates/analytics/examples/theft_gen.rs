//! Writes a synthetic consumption-history file (and its labels) for `wattline theft` runs and
//! the speed benchmark: realistic households from `analytics::synth`, 12 % of them with one of
//! the six Jokar et al. attacks from a random day on.
//!
//! `cargo run --release -p analytics --example theft_gen -- --meters 100000 --days 1095
//!  --layout wide --out FILE [--labels FILE] [--intervals-per-day 48] [--seed S]`

use std::io::{BufWriter, Write};

use analytics::synth::{Attack, Rng, SynthConfig, generate_population, inject};
use analytics::{civil_from_days, days_from_civil};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn num(name: &str, default: usize) -> usize {
    arg(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} takes a number"))
    })
}

fn main() -> std::io::Result<()> {
    let meters = num("--meters", 1000);
    let days = num("--days", 1095);
    let ipd = num("--intervals-per-day", 1) as u32;
    let seed = num("--seed", 11) as u64;
    let wide = arg("--layout").as_deref() != Some("long");
    let out = arg("--out").expect("--out FILE is required");
    let first_day = days_from_civil(2021, 1, 1);
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&out)?);
    let mut labels = Vec::new();
    let mut rng = Rng::new(seed ^ 0xa77ac);
    if wide && ipd != 1 {
        panic!("the wide layout holds daily data only");
    }
    if wide {
        write!(w, "CONS_NO,FLAG")?;
        for d in 0..days {
            let (y, m, dd) = civil_from_days(first_day + d as i32);
            write!(w, ",{y}/{m}/{dd}")?;
        }
        writeln!(w)?;
    } else {
        writeln!(w, "meter_id,date,kwh")?;
    }
    // Generate in chunks so memory stays small for 100 000 meters.
    let chunk = 5000;
    let mut done = 0;
    let mut line = String::new();
    while done < meters {
        let n = chunk.min(meters - done);
        let cfg = SynthConfig {
            meters: n,
            days,
            intervals_per_day: ipd,
            first_day,
            missing: true,
        };
        let mut histories = generate_population(&cfg, seed.wrapping_add(done as u64));
        for (k, h) in histories.iter_mut().enumerate() {
            h.meter_id = format!("m{:06}", done + k);
            let theft = rng.unit() < 0.12;
            if theft {
                let attack = Attack::ALL[rng.below(0, 6)];
                inject(h, attack, rng.below(days / 10, days * 8 / 10), &mut rng);
            }
            labels.push((h.meter_id.clone(), theft));
            line.clear();
            if wide {
                line.push_str(&h.meter_id);
                line.push_str(if theft { ",1" } else { ",0" });
                for v in &h.kwh {
                    line.push(',');
                    if !v.is_nan() {
                        line.push_str(&format!("{v:.2}"));
                    }
                }
                line.push('\n');
            } else {
                let step = 1440 / ipd;
                for (i, v) in h.kwh.iter().enumerate() {
                    if v.is_nan() {
                        continue;
                    }
                    let day = first_day + (i / ipd as usize) as i32;
                    let (y, m, dd) = civil_from_days(day);
                    if ipd == 1 {
                        line.push_str(&format!("{},{y}-{m:02}-{dd:02},{v:.3}\n", h.meter_id));
                    } else {
                        let minute = (i % ipd as usize) as u32 * step;
                        line.push_str(&format!(
                            "{},{y}-{m:02}-{dd:02} {:02}:{:02},{v:.3}\n",
                            h.meter_id,
                            minute / 60,
                            minute % 60
                        ));
                    }
                }
            }
            w.write_all(line.as_bytes())?;
        }
        done += n;
    }
    w.flush()?;
    if let Some(path) = arg("--labels") {
        let mut l = BufWriter::new(std::fs::File::create(path)?);
        writeln!(l, "meter_id,label")?;
        for (id, theft) in labels {
            writeln!(l, "{id},{}", u8::from(theft))?;
        }
        l.flush()?;
    }
    Ok(())
}
