//! Consumption-pattern scoring end to end: the SGCC-like test file, the Jokar attacks, the
//! supervised model and its file format.

use analytics::eval::{pr_auc, roc_auc};
use analytics::synth::{Attack, Rng, SynthConfig, generate_population, inject};
use analytics::{
    ErrorKind, GbtModel, GbtParams, PatternConfig, ValueLimits, days_from_civil, extract_features,
    parse_histories, parse_labels, rank, score_unsupervised,
};

fn testdata(name: &str) -> String {
    let path = format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn sgcc_layout_ranks_the_flagged_meters_first_with_reasons_and_diagnostics() {
    let batch = parse_histories(&testdata("sgcc_like_wide.csv"), ValueLimits::default()).unwrap();
    assert_eq!(batch.histories.len(), 31);
    let diag: Vec<String> = batch
        .diagnostics
        .iter()
        .map(|d| format!("{}: {}", d.meter_id.as_deref().unwrap_or("-"), d.message))
        .collect();
    assert!(
        diag.iter().any(|d| d.starts_with("C0009: 1 negative")),
        "{diag:?}"
    );
    assert!(
        diag.iter()
            .any(|d| d.starts_with("C0011: 1 implausibly large")),
        "{diag:?}"
    );
    let features = extract_features(&batch.histories, &PatternConfig::default());
    assert_eq!(features.excluded.len(), 1);
    assert_eq!(features.excluded[0].meter_id.as_deref(), Some("C9999"));
    assert!(features.excluded[0].message.contains("only 10 observed"));
    let mut scores = score_unsupervised(&features);
    rank(&mut scores);
    let top: Vec<&str> = scores[..2].iter().map(|s| s.meter_id.as_str()).collect();
    assert!(top.contains(&"C0004") && top.contains(&"C0017"), "{top:?}");
    assert!(
        scores[0].reasons[0].contains("fell"),
        "{:?}",
        scores[0].reasons
    );
}

#[test]
fn malformed_history_names_line_and_column() {
    let err = parse_histories(&testdata("malformed_wide.csv"), ValueLimits::default()).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::Csv {
                line: 3,
                column: 4,
                ..
            }
        ),
        "{err}"
    );
}

fn population(
    meters: usize,
    days: usize,
    ipd: u32,
    seed: u64,
) -> (Vec<analytics::MeterHistory>, Vec<Option<Attack>>) {
    let cfg = SynthConfig {
        meters,
        days,
        intervals_per_day: ipd,
        first_day: days_from_civil(2022, 1, 1),
        missing: true,
    };
    let mut histories = generate_population(&cfg, seed);
    let mut rng = Rng::new(seed + 1);
    let attacks = histories
        .iter_mut()
        .map(|h| {
            (rng.unit() < 0.15).then(|| {
                let a = Attack::ALL[rng.below(0, 6)];
                inject(h, a, rng.below(days / 10, days * 8 / 10), &mut rng);
                a
            })
        })
        .collect();
    (histories, attacks)
}

/// Regression floor of the unsupervised score per attack on daily data; the evaluation example
/// reports the actual figures.
#[test]
fn unsupervised_score_separates_each_jokar_attack_on_daily_data() {
    let (histories, attacks) = population(1500, 540, 1, 5);
    let features = extract_features(&histories, &PatternConfig::default());
    assert_eq!(features.meters.len(), histories.len());
    let scores: Vec<f64> = score_unsupervised(&features)
        .iter()
        .map(|s| s.score)
        .collect();
    for (attack, floor) in [
        (Attack::H1, 0.85),
        (Attack::H2, 0.95),
        (Attack::H3, 0.95),
        (Attack::H4, 0.95),
        (Attack::H5, 0.8),
        (Attack::H6, 0.6),
    ] {
        let (s, l): (Vec<f64>, Vec<bool>) = scores
            .iter()
            .zip(&attacks)
            .filter(|(_, a)| a.is_none() || **a == Some(attack))
            .map(|(s, a)| (*s, a.is_some()))
            .unzip();
        let auc = roc_auc(&s, &l).unwrap();
        assert!(
            auc > floor,
            "{}: ROC-AUC {auc:.3} below {floor}",
            attack.name()
        );
    }
}

#[test]
fn half_hourly_reversed_and_flattened_days_are_found() {
    let (histories, attacks) = population(400, 120, 48, 9);
    let features = extract_features(&histories, &PatternConfig::default());
    let scores: Vec<f64> = score_unsupervised(&features)
        .iter()
        .map(|s| s.score)
        .collect();
    for attack in [Attack::H5, Attack::H6] {
        let (s, l): (Vec<f64>, Vec<bool>) = scores
            .iter()
            .zip(&attacks)
            .filter(|(_, a)| a.is_none() || **a == Some(attack))
            .map(|(s, a)| (*s, a.is_some()))
            .unzip();
        let auc = roc_auc(&s, &l).unwrap();
        assert!(auc > 0.75, "{}: ROC-AUC {auc:.3}", attack.name());
    }
}

#[test]
fn supervised_model_generalises_to_held_out_meters_and_round_trips_through_text() {
    let (histories, attacks) = population(2000, 400, 1, 21);
    let features = extract_features(&histories, &PatternConfig::default());
    let labels: Vec<(String, bool)> = features
        .meters
        .iter()
        .zip(&attacks)
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, (m, a))| (m.meter_id.clone(), a.is_some()))
        .collect();
    let params = GbtParams {
        trees: 60,
        ..GbtParams::default()
    };
    let (model, _) = GbtModel::train(&features, &labels, &params).unwrap();
    let scored = model.score(&features);
    let (s, l): (Vec<f64>, Vec<bool>) = scored
        .iter()
        .zip(&attacks)
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, (s, a))| (s.score, a.is_some()))
        .unzip();
    let auc = roc_auc(&s, &l).unwrap();
    assert!(auc > 0.9, "held-out ROC-AUC {auc:.3}");
    assert!(pr_auc(&s, &l).unwrap() > 0.6);
    let text = model.to_text();
    let again = GbtModel::from_text(&text).unwrap();
    assert_eq!(again, model);
    assert_eq!(again.score(&features), scored);

    let corrupt = text.replacen("split ", "split 99999 ", 1);
    let err = GbtModel::from_text(&corrupt).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Model { .. }), "{err}");
    let other = text.replacen("level_shift ", "level_drop ", 1);
    let err = GbtModel::from_text(&other).unwrap_err();
    assert!(err.to_string().contains("model line 2"), "{err}");
}

#[test]
fn training_refuses_one_class_and_conflicting_labels() {
    let (histories, _) = population(60, 120, 1, 3);
    let features = extract_features(&histories, &PatternConfig::default());
    let all_honest: Vec<(String, bool)> = features
        .meters
        .iter()
        .map(|m| (m.meter_id.clone(), false))
        .collect();
    assert!(matches!(
        GbtModel::train(&features, &all_honest, &GbtParams::default())
            .unwrap_err()
            .kind(),
        ErrorKind::Training { .. }
    ));
    let conflict = vec![
        ("m000001".to_string(), true),
        ("m000001".to_string(), false),
    ];
    assert!(GbtModel::train(&features, &conflict, &GbtParams::default()).is_err());
}

#[test]
fn labels_file_with_header_and_errors() {
    assert_eq!(
        parse_labels("meter_id,label\na,1\nb,0\n").unwrap(),
        vec![("a".into(), true), ("b".into(), false)]
    );
    let err = parse_labels("meter_id,label\na,yes\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 2, column 2: label `yes` is not 0 or 1"
    );
}
