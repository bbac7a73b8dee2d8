//! Gradient-boosted decision trees for supervised theft scoring, trained from inspection
//! results, with a plain-text model file.
//!
//! Why our own: the data is small (thousands of inspected meters × 25 features), so exact greedy
//! splits are fast enough, and the maintained pure-Rust options either lack boosting
//! (`linfa-trees`, `smartcore` offer single trees and forests) or are large general frameworks
//! whose model formats we would have to track. ~300 lines keep the model file ours and stable.
//!
//! The algorithm is second-order boosting of the logistic loss (Chen & Guestrin, "XGBoost",
//! KDD 2016, eqs. 5–7): per round, gradients `g = p − y` and hessians `h = p(1 − p)`, splits
//! chosen by the gain `G_L²/(H_L+λ) + G_R²/(H_R+λ) − G²/(H+λ)`, leaf weight `−G/(H+λ)` scaled by
//! the learning rate. Missing features (`NaN`) go to the side learnt at each split. Reasons come
//! from per-feature contributions along the decision path (Saabas, "Interpreting random
//! forests", 2014): every split credits its feature with the change of node value.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::error::Error;
use crate::history::Diagnostic;
use crate::pattern::{
    FEATURE_COUNT, FeatureSet, TheftScore, explain, feature_names, robust_reference,
};

/// Training parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GbtParams {
    pub trees: usize,
    pub max_depth: usize,
    pub learning_rate: f64,
    pub min_samples_leaf: usize,
    /// L2 regularisation of leaf weights (λ).
    pub lambda: f64,
}

impl Default for GbtParams {
    fn default() -> Self {
        Self {
            trees: 150,
            max_depth: 3,
            learning_rate: 0.1,
            min_samples_leaf: 5,
            lambda: 1.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Split {
        feature: usize,
        threshold: f32,
        missing_left: bool,
        left: usize,
        right: usize,
        value: f64,
    },
    Leaf {
        value: f64,
    },
}

impl Node {
    fn value(&self) -> f64 {
        match self {
            Node::Split { value, .. } | Node::Leaf { value } => *value,
        }
    }
}

/// A trained model: a base margin plus trees over the features of [`crate::pattern`].
#[derive(Debug, Clone, PartialEq)]
pub struct GbtModel {
    base: f64,
    trees: Vec<Vec<Node>>,
}

struct Sample<'a> {
    x: &'a [f32; FEATURE_COUNT],
    g: f64,
    h: f64,
}

fn sigmoid(m: f64) -> f64 {
    1.0 / (1.0 + (-m).exp())
}

/// Per-feature sample order, computed once per training: the indices with a value sorted by it,
/// and the indices where the feature is missing.
struct FeatureOrder {
    sorted: Vec<Vec<u32>>,
    missing: Vec<Vec<u32>>,
}

impl FeatureOrder {
    fn new(rows: &[&[f32; FEATURE_COUNT]]) -> Self {
        let mut sorted = Vec::with_capacity(FEATURE_COUNT);
        let mut missing = Vec::with_capacity(FEATURE_COUNT);
        for f in 0..FEATURE_COUNT {
            let (mut present, mut absent) = (Vec::new(), Vec::new());
            for (i, x) in rows.iter().enumerate() {
                if x[f].is_nan() {
                    absent.push(i as u32);
                } else {
                    present.push(i as u32);
                }
            }
            present.sort_unstable_by(|&a, &b| rows[a as usize][f].total_cmp(&rows[b as usize][f]));
            sorted.push(present);
            missing.push(absent);
        }
        Self { sorted, missing }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    g: f64,
    h: f64,
    n: usize,
}

impl Stats {
    fn add(&mut self, s: &Sample<'_>) {
        self.g += s.g;
        self.h += s.h;
        self.n += 1;
    }

    fn plus(self, o: Stats) -> Stats {
        Stats {
            g: self.g + o.g,
            h: self.h + o.h,
            n: self.n + o.n,
        }
    }

    fn minus(self, o: Stats) -> Stats {
        Stats {
            g: self.g - o.g,
            h: self.h - o.h,
            n: self.n - o.n,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    gain: f64,
    feature: usize,
    threshold: f32,
    missing_left: bool,
}

const DONE: usize = usize::MAX;

/// Grows one tree level by level with exact greedy splits: per level and feature, one pass over
/// the presorted samples serves every node of the level (XGBoost's exact algorithm), so a tree
/// costs O(depth × features × samples) instead of a sort at every node.
fn grow_tree(samples: &[Sample<'_>], order: &FeatureOrder, params: &GbtParams) -> Vec<Node> {
    let lambda = params.lambda;
    let leaf = |st: Stats| -st.g / (st.h + lambda) * params.learning_rate;
    let score = |st: Stats| st.g * st.g / (st.h + lambda);
    let mut root = Stats::default();
    samples.iter().for_each(|s| root.add(s));
    let mut nodes = vec![Node::Leaf { value: leaf(root) }];
    let mut stats = vec![root];
    // The node each sample sits in, or DONE once that node stopped growing.
    let mut node_of = vec![0usize; samples.len()];
    let mut frontier = vec![0usize];
    for _ in 0..params.max_depth {
        let mut slot = vec![DONE; nodes.len()];
        let growable: Vec<usize> = frontier
            .iter()
            .copied()
            .filter(|&k| stats[k].n >= 2 * params.min_samples_leaf)
            .collect();
        if growable.is_empty() {
            break;
        }
        for (j, &k) in growable.iter().enumerate() {
            slot[k] = j;
        }
        let slot_of = |i: usize| {
            let k = node_of[i];
            if k == DONE { DONE } else { slot[k] }
        };
        let mut best: Vec<Option<Candidate>> = vec![None; growable.len()];
        let mut left = vec![Stats::default(); growable.len()];
        let mut last = vec![f32::NAN; growable.len()];
        let mut miss = vec![Stats::default(); growable.len()];
        for f in 0..FEATURE_COUNT {
            left.fill(Stats::default());
            last.fill(f32::NAN);
            miss.fill(Stats::default());
            for &i in &order.missing[f] {
                let j = slot_of(i as usize);
                if j != DONE {
                    miss[j].add(&samples[i as usize]);
                }
            }
            for &i in &order.sorted[f] {
                let i = i as usize;
                let j = slot_of(i);
                if j == DONE {
                    continue;
                }
                let v = samples[i].x[f];
                if !last[j].is_nan() && v > last[j] {
                    let total = stats[growable[j]];
                    for missing_left in [false, true] {
                        let l = if missing_left {
                            left[j].plus(miss[j])
                        } else {
                            left[j]
                        };
                        let r = total.minus(l);
                        if l.n >= params.min_samples_leaf && r.n >= params.min_samples_leaf {
                            let gain = score(l) + score(r) - score(total);
                            if gain > 1e-9 && best[j].is_none_or(|b| gain > b.gain) {
                                best[j] = Some(Candidate {
                                    gain,
                                    feature: f,
                                    threshold: last[j] + (v - last[j]) / 2.0,
                                    missing_left,
                                });
                            }
                        }
                        if miss[j].n == 0 {
                            break;
                        }
                    }
                }
                left[j].add(&samples[i]);
                last[j] = v;
            }
        }
        let mut children = vec![(DONE, DONE); growable.len()];
        let mut next = Vec::new();
        for (j, &k) in growable.iter().enumerate() {
            let Some(c) = best[j] else { continue };
            let (l, r) = (nodes.len(), nodes.len() + 1);
            nodes.extend([Node::Leaf { value: 0.0 }, Node::Leaf { value: 0.0 }]);
            stats.extend([Stats::default(), Stats::default()]);
            nodes[k] = Node::Split {
                feature: c.feature,
                threshold: c.threshold,
                missing_left: c.missing_left,
                left: l,
                right: r,
                value: leaf(stats[k]),
            };
            children[j] = (l, r);
            next.extend([l, r]);
        }
        for (i, k) in node_of.iter_mut().enumerate() {
            if *k == DONE {
                continue;
            }
            let j = slot[*k];
            if j == DONE || children[j].0 == DONE {
                *k = DONE;
                continue;
            }
            let Node::Split {
                feature,
                threshold,
                missing_left,
                ..
            } = nodes[*k]
            else {
                unreachable!("the node was split above")
            };
            let v = samples[i].x[feature];
            let go_left = if v.is_nan() {
                missing_left
            } else {
                v <= threshold
            };
            *k = if go_left {
                children[j].0
            } else {
                children[j].1
            };
            stats[*k].add(&samples[i]);
        }
        for &k in &next {
            nodes[k] = Node::Leaf {
                value: leaf(stats[k]),
            };
        }
        frontier = next;
    }
    nodes
}

impl GbtModel {
    /// Fits a model on the meters of `set` that have a label (`true` = theft confirmed).
    /// Labels for meters not in `set` and meters without labels are reported as diagnostics.
    pub fn train(
        set: &FeatureSet,
        labels: &[(String, bool)],
        params: &GbtParams,
    ) -> Result<(Self, Vec<Diagnostic>), Error> {
        if params.trees == 0 || params.max_depth == 0 || params.learning_rate <= 0.0 {
            return Err(Error::config(
                "trees, max_depth and learning_rate must be positive",
            ));
        }
        let mut diagnostics = Vec::new();
        let by_id: HashMap<&str, usize> = set
            .meters
            .iter()
            .enumerate()
            .map(|(i, m)| (m.meter_id.as_str(), i))
            .collect();
        let mut rows: Vec<(usize, f64)> = Vec::new();
        let mut seen: HashMap<&str, bool> = HashMap::new();
        for (id, label) in labels {
            if let Some(previous) = seen.insert(id.as_str(), *label) {
                if previous != *label {
                    return Err(Error::training(format!(
                        "meter `{id}` is labelled both 0 and 1"
                    )));
                }
                continue;
            }
            match by_id.get(id.as_str()) {
                Some(&i) => rows.push((i, if *label { 1.0 } else { 0.0 })),
                None => diagnostics.push(Diagnostic {
                    meter_id: Some(id.clone()),
                    message: "labelled but has no usable history; not used for training".into(),
                }),
            }
        }
        let positives = rows.iter().filter(|r| r.1 > 0.5).count();
        if positives == 0 || positives == rows.len() {
            return Err(Error::training(format!(
                "need both theft (1) and honest (0) labels among scored meters, got {positives} of {}",
                rows.len()
            )));
        }
        let unlabelled = set.meters.len() - rows.len();
        if unlabelled > 0 {
            diagnostics.push(Diagnostic {
                meter_id: None,
                message: format!("{unlabelled} meter(s) without a label not used for training"),
            });
        }
        let p0 = positives as f64 / rows.len() as f64;
        let base = (p0 / (1.0 - p0)).ln();
        let mut margins = vec![base; rows.len()];
        let mut trees = Vec::with_capacity(params.trees);
        let features: Vec<&[f32; FEATURE_COUNT]> =
            rows.iter().map(|&(i, _)| &set.meters[i].values).collect();
        let order = FeatureOrder::new(&features);
        for _ in 0..params.trees {
            let samples: Vec<Sample<'_>> = rows
                .iter()
                .zip(&margins)
                .map(|(&(i, y), &m)| {
                    let p = sigmoid(m);
                    Sample {
                        x: &set.meters[i].values,
                        g: p - y,
                        h: (p * (1.0 - p)).max(1e-6),
                    }
                })
                .collect();
            let tree = grow_tree(&samples, &order, params);
            for (m, &(i, _)) in margins.iter_mut().zip(&rows) {
                *m += leaf(&tree, &set.meters[i].values);
            }
            trees.push(tree);
        }
        Ok((Self { base, trees }, diagnostics))
    }

    /// Theft probability of one feature vector.
    pub fn predict(&self, x: &[f32; FEATURE_COUNT]) -> f64 {
        sigmoid(self.base + self.trees.iter().map(|t| leaf(t, x)).sum::<f64>())
    }

    /// Per-feature contributions to the margin (Saabas) of one feature vector.
    fn contributions(&self, x: &[f32; FEATURE_COUNT]) -> [f64; FEATURE_COUNT] {
        let mut out = [0.0; FEATURE_COUNT];
        for tree in &self.trees {
            let mut at = 0;
            while let Node::Split {
                feature,
                threshold,
                missing_left,
                left,
                right,
                value,
            } = tree[at]
            {
                let v = x[feature];
                let next = if v.is_nan() {
                    if missing_left { left } else { right }
                } else if v <= threshold {
                    left
                } else {
                    right
                };
                out[feature] += tree[next].value() - value;
                at = next;
            }
        }
        out
    }

    /// Scores every meter of `set`, with the features that pushed the score up as reasons.
    /// A reason must both have pushed the score up and be unusual in the population (robust
    /// z ≥ 2): a tree may credit a feature for being merely "not low", which explains nothing.
    pub fn score(&self, set: &FeatureSet) -> Vec<TheftScore> {
        let reference = robust_reference(set);
        set.meters
            .iter()
            .map(|m| {
                let c = self.contributions(&m.values);
                let unusual = |j: usize| {
                    let (med, scale) = reference[j];
                    (m.values[j] - med) / scale >= 2.0
                };
                let mut order: Vec<usize> = (0..FEATURE_COUNT)
                    .filter(|&j| c[j] > 0.05 && unusual(j))
                    .collect();
                order.sort_by(|&a, &b| c[b].total_cmp(&c[a]));
                TheftScore {
                    meter_id: m.meter_id.clone(),
                    score: self.predict(&m.values),
                    reasons: explain(m, order.into_iter()),
                }
            })
            .collect()
    }

    /// The model as text (the format [`GbtModel::from_text`] reads).
    pub fn to_text(&self) -> String {
        let mut out = String::from("wattline-theft-model 1\n");
        let _ = writeln!(out, "features {}", feature_names().join(" "));
        let _ = writeln!(out, "base {}", self.base);
        let _ = writeln!(out, "trees {}", self.trees.len());
        for tree in &self.trees {
            let _ = writeln!(out, "tree {}", tree.len());
            for node in tree {
                let _ = match node {
                    Node::Split {
                        feature,
                        threshold,
                        missing_left,
                        left,
                        right,
                        value,
                    } => writeln!(
                        out,
                        "split {feature} {threshold} {} {left} {right} {value}",
                        u8::from(*missing_left)
                    ),
                    Node::Leaf { value } => writeln!(out, "leaf {value}"),
                };
            }
        }
        out
    }

    /// Reads a model written by [`GbtModel::to_text`]; a model trained with other features is
    /// refused rather than silently misapplied.
    pub fn from_text(text: &str) -> Result<Self, Error> {
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i as u64 + 1, l.trim()));
        let mut next = |what: &str| -> Result<(u64, &str), Error> {
            lines
                .next()
                .ok_or_else(|| Error::model(0, format!("file ends before {what}")))
        };
        let (n, header) = next("the header")?;
        if header != "wattline-theft-model 1" {
            return Err(Error::model(n, "not a wattline theft model (version 1)"));
        }
        let (n, features) = next("the feature list")?;
        let expected = feature_names().join(" ");
        if features.strip_prefix("features ") != Some(expected.as_str()) {
            return Err(Error::model(
                n,
                "model was trained on a different feature list than this build computes; retrain it",
            ));
        }
        let (n, base) = next("the base margin")?;
        let base = parse_field::<f64>(base.strip_prefix("base "), n, "base margin")?;
        let (n, count) = next("the tree count")?;
        let count = parse_field::<usize>(count.strip_prefix("trees "), n, "tree count")?;
        if count > 100_000 {
            return Err(Error::model(n, "more than 100000 trees"));
        }
        let mut trees = Vec::with_capacity(count);
        for _ in 0..count {
            let (n, head) = next("a tree")?;
            let len = parse_field::<usize>(head.strip_prefix("tree "), n, "node count")?;
            if len == 0 || len > 1 << 20 {
                return Err(Error::model(n, "tree node count out of range"));
            }
            let mut tree = Vec::with_capacity(len);
            for _ in 0..len {
                let (n, line) = next("a node")?;
                tree.push(parse_node(n, line, len)?);
            }
            // Children must point forward, so evaluation always terminates.
            for (i, node) in tree.iter().enumerate() {
                if let Node::Split { left, right, .. } = node
                    && (*left <= i || *right <= i)
                {
                    return Err(Error::model(n, "tree child points backwards"));
                }
            }
            trees.push(tree);
        }
        Ok(Self { base, trees })
    }
}

fn parse_field<T: std::str::FromStr>(s: Option<&str>, line: u64, what: &str) -> Result<T, Error> {
    s.and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| Error::model(line, format!("expected the {what}")))
}

fn parse_node(n: u64, line: &str, len: usize) -> Result<Node, Error> {
    let parts: Vec<&str> = line.split_whitespace().collect();
    let bad = || Error::model(n, format!("malformed node `{line}`"));
    match parts.as_slice() {
        ["leaf", v] => Ok(Node::Leaf {
            value: v.parse().map_err(|_| bad())?,
        }),
        ["split", f, t, m, l, r, v] => {
            let feature: usize = f.parse().map_err(|_| bad())?;
            let left: usize = l.parse().map_err(|_| bad())?;
            let right: usize = r.parse().map_err(|_| bad())?;
            if feature >= FEATURE_COUNT || left >= len || right >= len {
                return Err(bad());
            }
            Ok(Node::Split {
                feature,
                threshold: t.parse().map_err(|_| bad())?,
                missing_left: match *m {
                    "0" => false,
                    "1" => true,
                    _ => return Err(bad()),
                },
                left,
                right,
                value: v.parse().map_err(|_| bad())?,
            })
        }
        _ => Err(bad()),
    }
}

fn leaf(tree: &[Node], x: &[f32; FEATURE_COUNT]) -> f64 {
    let mut at = 0;
    loop {
        match tree[at] {
            Node::Leaf { value } => return value,
            Node::Split {
                feature,
                threshold,
                missing_left,
                left,
                right,
                ..
            } => {
                let v = x[feature];
                at = if v.is_nan() {
                    if missing_left { left } else { right }
                } else if v <= threshold {
                    left
                } else {
                    right
                };
            }
        }
    }
}

/// Parses inspection results `meter_id,label` (1 = theft, 0 = honest), with or without a header.
pub fn parse_labels(text: &str) -> Result<Vec<(String, bool)>, Error> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i as u64 + 1;
        let line = line.strip_suffix('\r').unwrap_or(line).trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != 2 {
            return Err(Error::csv(
                n,
                fields.len().min(2) as u64 + 1,
                "expected 2 fields: meter_id,label",
            ));
        }
        let label = match fields[1] {
            "1" => true,
            "0" => false,
            other if n == 1 && out.is_empty() && other.parse::<f64>().is_err() => continue,
            other => {
                return Err(Error::csv(n, 2, format!("label `{other}` is not 0 or 1")));
            }
        };
        if fields[0].is_empty() {
            return Err(Error::csv(n, 1, "empty meter id"));
        }
        out.push((fields[0].to_owned(), label));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::MeterFeatures;

    fn meter(id: usize, x0: f32, x1: f32) -> MeterFeatures {
        let mut values = [0.0f32; FEATURE_COUNT];
        values[0] = x0;
        values[1] = x1;
        MeterFeatures::for_tests(format!("m{id}"), values)
    }

    #[test]
    fn learns_a_threshold_and_where_missing_values_belong() {
        // Theft iff x0 > 0.6; thieves also have x1 missing half of the time, honest never.
        let mut meters = Vec::new();
        let mut labels = Vec::new();
        for i in 0..400 {
            let x0 = (i % 100) as f32 / 100.0;
            let theft = x0 > 0.6;
            let x1 = if theft && i % 2 == 0 {
                f32::NAN
            } else {
                (i % 7) as f32
            };
            meters.push(meter(i, x0, x1));
            labels.push((format!("m{i}"), theft));
        }
        let set = FeatureSet {
            meters,
            excluded: Vec::new(),
        };
        let (model, diagnostics) = GbtModel::train(&set, &labels, &GbtParams::default()).unwrap();
        assert!(diagnostics.is_empty());
        let p = |x0: f32, x1: f32| model.predict(&meter(0, x0, x1).values);
        assert!(p(0.9, 1.0) > 0.9, "{}", p(0.9, 1.0));
        assert!(p(0.2, 1.0) < 0.1, "{}", p(0.2, 1.0));
        // Missing x1 was only ever seen on thieves, and x0 decides anyway.
        assert!(p(0.9, f32::NAN) > 0.9);
        let again = GbtModel::from_text(&model.to_text()).unwrap();
        assert_eq!(again.predict(&meter(0, 0.7, 2.0).values), p(0.7, 2.0));
    }
}
