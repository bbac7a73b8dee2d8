//! Evaluation of the energy balance: bypass detection within one day and false alarms over 30
//! honest days, for the loss model (uncalibrated and calibrated, with CUSUM) and the seed's flat
//! 2 % rule, on simulated networks; and the seed 003 measurements replayed.
//!
//! The simulated physics is deliberately richer than the model: 1-minute load variation inside
//! each 15-minute interval (the model only sees interval energy), conductor temperature swinging
//! 10–40 °C (the model assumes 25 °C), line lengths off by up to ±5 %, meter gain errors anywhere
//! inside their class limits plus temperature drift within the class's coefficient, 0.05 % noise
//! and register quantisation.
//!
//! `cargo run --release -p analytics --example balance_eval -- [--trials N]`

use analytics::balance::{
    AccuracyClass, BalanceConfig, BalanceMode, BalanceTopology, ChildSpec, Conductor, Connection,
    IntervalReading, LineSegment, LoadDistribution, Material, MeterSpec, calibrate,
    evaluate_balance,
};
use analytics::synth::Rng;

const STEP_S: f64 = 900.0;
const PER_DAY: usize = 96;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn meter(id: &str, class: AccuracyClass, basic_a: f64, resolution_wh: f64) -> MeterSpec {
    MeterSpec {
        meter_id: id.into(),
        class,
        basic_current_a: basic_a,
        resolution_wh,
    }
}

/// A meter as simulated: a fixed gain error within its class, a temperature coefficient within
/// the class limit, a register with quantisation.
struct SimMeter {
    gain: f64,
    temp_coeff: f64,
    register_wh: f64,
    resolution_wh: f64,
}

impl SimMeter {
    fn new(rng: &mut Rng, class_pct: f64, coeff_pct: f64, resolution_wh: f64) -> Self {
        Self {
            // Calibrated meters in the field sit well inside their limits, but any value inside
            // is possible: uniform over ±80 % of the limit.
            gain: rng.uniform(-0.8, 0.8) * class_pct / 100.0,
            temp_coeff: rng.uniform(-1.0, 1.0) * coeff_pct / 100.0,
            register_wh: rng.uniform(0.0, resolution_wh),
            resolution_wh,
        }
    }

    /// Reads `true_wh` at ambient deviation `dt_k`; returns the register difference.
    fn read(&mut self, rng: &mut Rng, true_wh: f64, dt_k: f64) -> f64 {
        let before = (self.register_wh / self.resolution_wh).floor();
        self.register_wh +=
            true_wh * (1.0 + self.gain + self.temp_coeff * dt_k + 0.0005 * rng.normal());
        ((self.register_wh / self.resolution_wh).floor() - before) * self.resolution_wh
    }
}

struct Scenario {
    name: String,
    topology: BalanceTopology,
    /// Mean load of each child as a fraction of its rating, and the rating in W.
    load_fraction: f64,
    child_rating_w: Vec<f64>,
    /// True line lengths as a multiple of the configured ones.
    length_error: f64,
}

fn cu(mm2: f64) -> Conductor {
    Conductor {
        material: Material::Copper,
        cross_section_mm2: mm2,
    }
}
fn al(mm2: f64) -> Conductor {
    Conductor {
        material: Material::Aluminium,
        cross_section_mm2: mm2,
    }
}

fn house_scenario(rng: &mut Rng, load_fraction: f64) -> Scenario {
    let length = rng.uniform(10.0, 40.0);
    let topology = BalanceTopology {
        observer: meter("pole-sensor", AccuracyClass::Class1, 5.0, 1.0),
        three_phase: false,
        transformer: None,
        feeder: vec![],
        children: vec![ChildSpec {
            meter: meter("house", AccuracyClass::Class1, 5.0, 1.0),
            connection: Connection::PhaseA,
            service: Some(LineSegment {
                length_m: length,
                phase: cu(16.0),
                neutral: cu(16.0),
                distribution: LoadDistribution::Lumped,
            }),
        }],
        nominal_voltage_v: 230.0,
        power_factor: 0.95,
    };
    Scenario {
        name: "house behind line sensor".into(),
        topology,
        load_fraction,
        // 60 A single-phase service.
        child_rating_w: vec![230.0 * 60.0 * 0.95],
        length_error: rng.uniform(0.95, 1.05),
    }
}

fn feeder_scenario(rng: &mut Rng, load_fraction: f64, houses: usize) -> Scenario {
    let conn = [Connection::PhaseA, Connection::PhaseB, Connection::PhaseC];
    let children = (0..houses)
        .map(|i| ChildSpec {
            meter: meter(&format!("h{i}"), AccuracyClass::Class1, 5.0, 1.0),
            connection: conn[i % 3],
            service: Some(LineSegment {
                length_m: rng.uniform(10.0, 35.0),
                phase: cu(16.0),
                neutral: cu(16.0),
                distribution: LoadDistribution::Lumped,
            }),
        })
        .collect();
    let topology = BalanceTopology {
        // Transformer-operated class 0.5S meter at the substation, In = 5 A behind 400/5 CTs:
        // expressed in primary amperes.
        observer: meter("feeder", AccuracyClass::Class05S, 400.0, 10.0),
        three_phase: true,
        transformer: None,
        feeder: vec![LineSegment {
            length_m: 350.0,
            phase: al(185.0),
            neutral: al(95.0),
            distribution: LoadDistribution::Uniform,
        }],
        children,
        nominal_voltage_v: 230.0,
        power_factor: 0.95,
    };
    // Feeder rating 400 A per phase shared by the houses on that phase.
    let per_house = 3.0 * 230.0 * 400.0 * 0.95 / houses as f64;
    Scenario {
        name: format!("{houses}-house feeder"),
        topology,
        load_fraction,
        child_rating_w: vec![per_house; houses],
        length_error: rng.uniform(0.95, 1.05),
    }
}

/// Simulates `days` of 15-minute readings; the first child bypasses `theft_fraction` of its load
/// from interval `theft_from`.
fn simulate(
    s: &Scenario,
    rng: &mut Rng,
    days: usize,
    theft_from: usize,
    theft_fraction: f64,
) -> Vec<IntervalReading> {
    let t = &s.topology;
    let mut observer = SimMeter::new(
        rng,
        class_pct(t.observer.class),
        coeff_pct(t.observer.class),
        t.observer.resolution_wh,
    );
    let mut children: Vec<SimMeter> = t
        .children
        .iter()
        .map(|c| {
            SimMeter::new(
                rng,
                class_pct(c.meter.class),
                coeff_pct(c.meter.class),
                c.meter.resolution_wh,
            )
        })
        .collect();
    let mut true_topology = t.clone();
    for seg in true_topology.feeder.iter_mut().chain(
        true_topology
            .children
            .iter_mut()
            .filter_map(|c| c.service.as_mut()),
    ) {
        seg.length_m *= s.length_error;
    }
    let shares: Vec<f64> = s
        .child_rating_w
        .iter()
        .map(|_| rng.uniform(0.6, 1.4))
        .collect();
    let mut out = Vec::with_capacity(days * PER_DAY);
    let mut level: Vec<f64> = vec![1.0; shares.len()];
    for i in 0..days * PER_DAY {
        let hour = (i % PER_DAY) as f64 * 24.0 / PER_DAY as f64;
        let day = i / PER_DAY;
        let ambient = 8.0 * ((hour - 15.0) / 24.0 * std::f64::consts::TAU).cos()
            + 2.0 * ((day as f64) * 0.7).sin();
        let conductor_c = 25.0 + ambient + 5.0 * s.load_fraction;
        let daily_shape = 0.7 + 0.3 * ((hour - 19.0) / 24.0 * std::f64::consts::TAU).cos();
        // Minute by minute: true loss from true currents, true energies.
        let mut minute_true = vec![0.0; shares.len()];
        let mut loss_true_wh = 0.0;
        let mut stolen_wh = 0.0;
        for _ in 0..15 {
            let mut minute_wh = Vec::with_capacity(shares.len());
            for (k, share) in shares.iter().enumerate() {
                level[k] = (0.9 * level[k] + 0.1 * (1.0 + 0.25 * rng.normal())).clamp(0.2, 2.0);
                let p_w = (s.child_rating_w[k] * s.load_fraction * share * daily_shape * level[k])
                    .min(s.child_rating_w[k]);
                let mut wh = p_w / 60.0;
                // The whole load, bypassed part included, draws through the service drop.
                minute_wh.push(wh);
                if k == 0 && i >= theft_from {
                    stolen_wh += wh * theft_fraction;
                    wh *= 1.0 - theft_fraction;
                }
                minute_true[k] += wh;
            }
            loss_true_wh += true_topology.loss_wh(&minute_wh, 60.0, conductor_c);
        }
        let dt_k = ambient / 8.0 * 10.0 * 0.8;
        let observer_true = minute_true.iter().sum::<f64>() + stolen_wh + loss_true_wh;
        out.push(IntervalReading {
            start_s: 1_700_000_000 - 1_700_000_000 % 86_400 + (i as i64) * STEP_S as i64,
            duration_s: STEP_S,
            observer_wh: Some(observer.read(rng, observer_true, dt_k)),
            children_wh: children
                .iter_mut()
                .zip(&minute_true)
                .map(|(m, &e)| Some(m.read(rng, e, dt_k)))
                .collect(),
            conductor_temp_c: None,
        });
    }
    out
}

fn class_pct(c: AccuracyClass) -> f64 {
    match c {
        AccuracyClass::Class2 => 2.0,
        AccuracyClass::Class1 => 1.0,
        AccuracyClass::Class05S => 0.5,
        AccuracyClass::Class02S => 0.2,
        AccuracyClass::Percent(p) => p,
    }
}
fn coeff_pct(c: AccuracyClass) -> f64 {
    match c {
        AccuracyClass::Class2 => 0.10,
        AccuracyClass::Class1 => 0.05,
        AccuracyClass::Class05S => 0.03,
        AccuracyClass::Class02S => 0.01,
        AccuracyClass::Percent(p) => 0.05 * p,
    }
}

#[derive(Default, Clone, Copy)]
struct Tally {
    trials: usize,
    false_alarm_trials: usize,
    false_alarm_days: usize,
    detected: usize,
    hours_to_detect: f64,
}

fn run_mode(
    s: &Scenario,
    readings: &[IntervalReading],
    cfg: &BalanceConfig,
    calibrated: bool,
    tally: &mut Tally,
) {
    let calib_end = 7 * PER_DAY;
    let honest_end = calib_end + 30 * PER_DAY;
    let calibration = if calibrated {
        calibrate(&s.topology, &readings[..calib_end], cfg).0
    } else {
        None
    };
    let report = evaluate_balance(
        &s.topology,
        calibration.as_ref(),
        &readings[calib_end..],
        cfg,
    );
    let theft_start = readings[honest_end].start_s;
    let theft_end = theft_start + 86_400;
    tally.trials += 1;
    let false_days: std::collections::BTreeSet<i64> = report
        .findings
        .iter()
        .filter(|f| f.start_s < theft_start && f.end_s <= theft_start)
        .map(|f| f.start_s / 86_400)
        .collect();
    if !false_days.is_empty() {
        tally.false_alarm_trials += 1;
        tally.false_alarm_days += false_days.len();
    }
    let first = report
        .findings
        .iter()
        .filter(|f| f.end_s > theft_start && f.end_s <= theft_end)
        .map(|f| f.end_s)
        .min();
    if let Some(end) = first {
        tally.detected += 1;
        tally.hours_to_detect += (end - theft_start) as f64 / 3600.0;
    }
}

fn main() {
    let trials = arg("--trials", 20);
    let mut rng = Rng::new(2026);
    let loss_cfg = BalanceConfig::default();
    let flat_cfg = BalanceConfig {
        mode: BalanceMode::FlatPercent(2.0),
        ..Default::default()
    };
    println!(
        "## Seed 003 replayed (line sensor vs house meter, both class 1 at 0.1-0.6 A, Ib 5 A)"
    );
    seed_003(&loss_cfg, &flat_cfg);
    println!();
    println!("## Bypass of 3 % of a house's load; 7 days calibration, 30 honest days, then theft");
    println!("{trials} trials per row; detection = any alarm within 24 h of the theft start.");
    println!();
    println!(
        "| network | load (% of rating) | mode | trials with false alarm (30 d) | detected within 1 day | mean hours to detect |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (network, theft) in [
        ("house", 0.03),
        ("feeder30", 0.03),
        ("feeder30", 0.30),
        ("feeder30", 1.0),
    ] {
        for load in [0.02, 0.05, 0.10, 0.25, 0.50, 1.00] {
            let mut tallies = [Tally::default(); 3];
            for _ in 0..trials {
                let s = if network == "house" {
                    house_scenario(&mut rng, load)
                } else {
                    feeder_scenario(&mut rng, load, 30)
                };
                let readings = simulate(&s, &mut rng, 7 + 30 + 1, (7 + 30) * PER_DAY, theft);
                run_mode(&s, &readings, &loss_cfg, false, &mut tallies[0]);
                run_mode(&s, &readings, &loss_cfg, true, &mut tallies[1]);
                run_mode(&s, &readings, &flat_cfg, false, &mut tallies[2]);
            }
            let s = if network == "house" {
                house_scenario(&mut rng, load)
            } else {
                feeder_scenario(&mut rng, load, 30)
            };
            let label = if network == "house" {
                s.name.clone()
            } else {
                format!("{}, house 1 bypasses {:.0} %", s.name, theft * 100.0)
            };
            for (mode, t) in [
                "loss model, uncalibrated",
                "loss model, calibrated + CUSUM",
                "flat 2 %",
            ]
            .iter()
            .zip(tallies)
            {
                println!(
                    "| {label} | {:.0} | {mode} | {}/{} | {}/{} | {} |",
                    load * 100.0,
                    t.false_alarm_trials,
                    t.trials,
                    t.detected,
                    t.trials,
                    if t.detected > 0 {
                        format!("{:.1}", t.hours_to_detect / t.detected as f64)
                    } else {
                        "-".into()
                    }
                );
            }
        }
    }
}

fn seed_003(loss_cfg: &BalanceConfig, flat_cfg: &BalanceConfig) {
    // Seed 003 reports percentages, not energies: fig. 6 (honest) 0.96 % and 1.54 %, fig. 9
    // (theft circuit) 2.02 % (called within tolerance) and 17.77 %. Replay each as one hour at
    // 100 W on the line (5 lamps of 20 W) with the house meter reading the reported share.
    let t = BalanceTopology {
        observer: meter("line-sensor", AccuracyClass::Class1, 5.0, 0.1),
        three_phase: false,
        transformer: None,
        feeder: vec![],
        children: vec![ChildSpec {
            meter: meter("house", AccuracyClass::Class1, 5.0, 0.1),
            connection: Connection::PhaseA,
            service: Some(LineSegment {
                length_m: 2.0,
                phase: cu(1.5),
                neutral: cu(1.5),
                distribution: LoadDistribution::Lumped,
            }),
        }],
        nominal_voltage_v: 220.0,
        power_factor: 1.0,
    };
    println!();
    println!("| case (seed 003) | difference | flat 2 % | loss model (threshold) |");
    println!("| --- | --- | --- | --- |");
    for (case, pct) in [
        ("house 1 honest (fig. 6)", 0.96),
        ("house 2 honest (fig. 6)", 1.54),
        ("house 1 theft test (fig. 9)", 2.02),
        ("house 2 bypass (fig. 9)", 17.77),
    ] {
        let r = IntervalReading {
            start_s: 0,
            duration_s: 3600.0,
            observer_wh: Some(100.0),
            children_wh: vec![Some(100.0 * (1.0 - pct / 100.0))],
            conductor_temp_c: None,
        };
        let flat = evaluate_balance(&t, None, std::slice::from_ref(&r), flat_cfg);
        let model = evaluate_balance(&t, None, std::slice::from_ref(&r), loss_cfg);
        let verdict = |alarm: bool| if alarm { "theft" } else { "honest" };
        println!(
            "| {case} | {pct:.2} % | {} | {} ({:.2} % of the line energy) |",
            verdict(flat.intervals[0].alarm),
            verdict(model.intervals[0].alarm),
            model.intervals[0].threshold_wh,
        );
    }
}
