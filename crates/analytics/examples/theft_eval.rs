//! Evaluation of the theft scores on synthetic households with the six attacks of Jokar et al.
//! (2016) injected: ROC-AUC, PR-AUC and MAP@100 per attack type, for the unsupervised score and
//! for the gradient-boosted model evaluated on held-out meters.
//!
//! `cargo run --release -p analytics --example theft_eval -- [--meters N] [--days D]
//!  [--intervals-per-day K] [--seed S]` prints a Markdown table.

use analytics::eval::{map_at, pr_auc, roc_auc};
use analytics::synth::{Attack, Rng, SynthConfig, generate_population, inject};
use analytics::{
    GbtModel, GbtParams, PatternConfig, days_from_civil, extract_features, score_unsupervised,
};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
        .unwrap_or(default)
}

fn main() {
    let meters = arg("--meters", 4000);
    let ipd = arg("--intervals-per-day", 1) as u32;
    let days = arg("--days", if ipd == 1 { 730 } else { 182 });
    let seed = arg("--seed", 7) as u64;
    let cfg = SynthConfig {
        meters,
        days,
        intervals_per_day: ipd,
        first_day: days_from_civil(2022, 1, 1),
        missing: true,
    };
    let started = std::time::Instant::now();
    let mut histories = generate_population(&cfg, seed);
    let mut rng = Rng::new(seed ^ 0x5eed);
    // 2 % of meters per attack type (12 % thieves), theft starting between 10 % and 80 % of the
    // history and continuing to its end.
    let mut attack_of: Vec<Option<Attack>> = vec![None; meters];
    for (i, h) in histories.iter_mut().enumerate() {
        if rng.unit() < 0.12 {
            let attack = Attack::ALL[rng.below(0, 6)];
            let start = rng.below(days / 10, days * 8 / 10);
            inject(h, attack, start, &mut rng);
            attack_of[i] = Some(attack);
        }
    }
    let features = extract_features(&histories, &PatternConfig::default());
    let index: std::collections::HashMap<&str, usize> = histories
        .iter()
        .enumerate()
        .map(|(i, h)| (h.meter_id.as_str(), i))
        .collect();
    let attack_at: Vec<Option<Attack>> = features
        .meters
        .iter()
        .map(|m| attack_of[index[m.meter_id.as_str()]])
        .collect();
    let unsup: Vec<f64> = score_unsupervised(&features)
        .iter()
        .map(|s| s.score)
        .collect();

    // Held-out evaluation: train on a random half of the meters, score the other half.
    let train: Vec<bool> = (0..features.meters.len())
        .map(|_| rng.unit() < 0.5)
        .collect();
    let labels: Vec<(String, bool)> = features
        .meters
        .iter()
        .zip(&attack_at)
        .zip(&train)
        .filter(|(_, t)| **t)
        .map(|((m, a), _)| (m.meter_id.clone(), a.is_some()))
        .collect();
    let (model, _) = GbtModel::train(&features, &labels, &GbtParams::default()).expect("training");
    let sup: Vec<f64> = model.score(&features).iter().map(|s| s.score).collect();

    println!(
        "{} meters ({} scored, {} excluded), {} days x {} interval(s)/day, seed {seed}, {:.1} s",
        meters,
        features.meters.len(),
        features.excluded.len(),
        days,
        ipd,
        started.elapsed().as_secs_f64()
    );
    println!();
    println!(
        "| attack | thieves | unsup ROC-AUC | unsup PR-AUC | unsup MAP@100 | GBT ROC-AUC | GBT PR-AUC | GBT MAP@100 |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut rows: Vec<(String, Option<Attack>)> = Attack::ALL
        .iter()
        .map(|a| (a.name().to_string(), Some(*a)))
        .collect();
    rows.push(("all".into(), None));
    for (name, attack) in rows {
        let keep = |i: usize| attack_at[i].is_none() || attack.is_none() || attack_at[i] == attack;
        let pick = |scores: &[f64], held_out: bool| -> (Vec<f64>, Vec<bool>) {
            (0..scores.len())
                .filter(|&i| keep(i) && (!held_out || !train[i]))
                .map(|i| (scores[i], attack_at[i].is_some()))
                .unzip()
        };
        let (us, ul) = pick(&unsup, false);
        let (ss, sl) = pick(&sup, true);
        println!(
            "| {name} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            ul.iter().filter(|&&l| l).count(),
            roc_auc(&us, &ul).unwrap_or(f64::NAN),
            pr_auc(&us, &ul).unwrap_or(f64::NAN),
            map_at(&us, &ul, 100),
            roc_auc(&ss, &sl).unwrap_or(f64::NAN),
            pr_auc(&ss, &sl).unwrap_or(f64::NAN),
            map_at(&ss, &sl, 100),
        );
    }
}
