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

struct Builder<'p> {
    params: &'p GbtParams,
    nodes: Vec<Node>,
}

impl Builder<'_> {
    fn leaf_value(&self, g: f64, h: f64) -> f64 {
        -g / (h + self.params.lambda) * self.params.learning_rate
    }

    fn build(&mut self, samples: &[Sample<'_>], idx: Vec<usize>, depth: usize) -> usize {
        let (g, h) = idx.iter().fold((0.0, 0.0), |(g, h), &i| {
            (g + samples[i].g, h + samples[i].h)
        });
        let value = self.leaf_value(g, h);
        let at = self.nodes.len();
        self.nodes.push(Node::Leaf { value });
        if depth >= self.params.max_depth || idx.len() < 2 * self.params.min_samples_leaf {
            return at;
        }
        let Some((feature, threshold, missing_left)) = self.best_split(samples, &idx, g, h) else {
            return at;
        };
        let (left, right): (Vec<usize>, Vec<usize>) = idx.iter().partition(|&&i| {
            let v = samples[i].x[feature];
            if v.is_nan() {
                missing_left
            } else {
                v <= threshold
            }
        });
        let l = self.build(samples, left, depth + 1);
        let r = self.build(samples, right, depth + 1);
        self.nodes[at] = Node::Split {
            feature,
            threshold,
            missing_left,
            left: l,
            right: r,
            value,
        };
        at
    }

    fn best_split(
        &self,
        samples: &[Sample<'_>],
        idx: &[usize],
        g: f64,
        h: f64,
    ) -> Option<(usize, f32, bool)> {
        let lambda = self.params.lambda;
        let min_leaf = self.params.min_samples_leaf;
        let parent = g * g / (h + lambda);
        let mut best: Option<(f64, usize, f32, bool)> = None;
        let mut sorted: Vec<(f32, f64, f64)> = Vec::with_capacity(idx.len());
        for f in 0..FEATURE_COUNT {
            sorted.clear();
            let (mut gm, mut hm, mut nm) = (0.0, 0.0, 0usize);
            for &i in idx {
                let s = &samples[i];
                let v = s.x[f];
                if v.is_nan() {
                    gm += s.g;
                    hm += s.h;
                    nm += 1;
                } else {
                    sorted.push((v, s.g, s.h));
                }
            }
            if sorted.len() < 2 {
                continue;
            }
            sorted.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
            let (mut gl, mut hl) = (0.0, 0.0);
            for k in 0..sorted.len() - 1 {
                gl += sorted[k].1;
                hl += sorted[k].2;
                if sorted[k].0 == sorted[k + 1].0 {
                    continue;
                }
                let nl = k + 1;
                let nr = sorted.len() - nl;
                for missing_left in [false, true] {
                    let (gl2, hl2, nl2) = if missing_left {
                        (gl + gm, hl + hm, nl + nm)
                    } else {
                        (gl, hl, nl)
                    };
                    let nr2 = if missing_left { nr } else { nr + nm };
                    if nl2 < min_leaf || nr2 < min_leaf {
                        continue;
                    }
                    let (gr2, hr2) = (g - gl2, h - hl2);
                    let gain = gl2 * gl2 / (hl2 + lambda) + gr2 * gr2 / (hr2 + lambda) - parent;
                    if gain > 1e-9 && best.is_none_or(|b| gain > b.0) {
                        let threshold = sorted[k].0 + (sorted[k + 1].0 - sorted[k].0) / 2.0;
                        best = Some((gain, f, threshold, missing_left));
                    }
                }
            }
        }
        best.map(|(_, f, t, m)| (f, t, m))
    }
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
            let mut builder = Builder {
                params,
                nodes: Vec::new(),
            };
            builder.build(&samples, (0..samples.len()).collect(), 0);
            let tree = builder.nodes;
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
