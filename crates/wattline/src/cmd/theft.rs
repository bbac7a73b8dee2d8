//! `wattline theft score|train`: batch theft scoring of consumption histories (DESIGN §3.6) with
//! the `analytics` crate; this file only reads and writes files.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use analytics::{
    Diagnostic, GbtModel, GbtParams, HistoryBatch, HistoryParser, PatternConfig, TheftScore,
    ValueLimits, extract_features, parse_labels, rank, score_unsupervised,
};
use anyhow::{Context, anyhow};

use super::{BadInput, Failure, Outcome};

pub const EXAMPLES: &str = "\
Examples:
  wattline theft score --input sgcc.csv --out scores.csv
  wattline theft score --input readings.csv --model theft.model --out scores.csv --diagnostics diag.csv
  wattline theft train --input readings.csv --labels inspections.csv --model theft.model

Input: long `meter_id,date,kwh` (the date may carry a time, `2024-01-31 13:30`, for intraday
data) or wide (first column the meter id, other columns dates in any order, empty cells missing,
a FLAG column ignored: the SGCC layout). Labels: `meter_id,label` with 1 = theft, 0 = honest.
Output: `meter_id,score,rank,reasons`, highest score first. Negative, implausible or duplicated
values become missing and meters with too little data are left out; each case is reported on
stderr or in the --diagnostics file. Exit codes: 0 ok, 1 runtime failure, 2 bad usage or input.";

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Score meters, most suspicious first; unsupervised unless --model is given.
    #[command(after_help = EXAMPLES)]
    Score(ScoreArgs),
    /// Train a gradient-boosted model from inspection results.
    #[command(after_help = EXAMPLES)]
    Train(TrainArgs),
}

#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    /// Consumption histories (long or wide CSV).
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// A model written by `wattline theft train`; without it the unsupervised score is used.
    #[arg(long, value_name = "M")]
    pub model: Option<PathBuf>,
    /// Where to write `meter_id,score,rank,reasons`.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Write every diagnostic (`meter_id,message`) here instead of listing them on stderr.
    #[arg(long, value_name = "FILE")]
    pub diagnostics: Option<PathBuf>,
    /// Daily energy above this is treated as a reading error.
    #[arg(long, value_name = "KWH", default_value_t = ValueLimits::default().max_kwh_per_day)]
    pub max_kwh_per_day: f64,
}

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Consumption histories (long or wide CSV).
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// Inspection results `meter_id,label` (1 = theft).
    #[arg(long, value_name = "FILE")]
    pub labels: PathBuf,
    /// Where to write the model.
    #[arg(long, value_name = "M")]
    pub model: PathBuf,
    /// Write every diagnostic (`meter_id,message`) here instead of listing them on stderr.
    #[arg(long, value_name = "FILE")]
    pub diagnostics: Option<PathBuf>,
    /// Daily energy above this is treated as a reading error.
    #[arg(long, value_name = "KWH", default_value_t = ValueLimits::default().max_kwh_per_day)]
    pub max_kwh_per_day: f64,
    /// Number of boosting rounds.
    #[arg(long, default_value_t = GbtParams::default().trees)]
    pub trees: usize,
}

pub fn run(args: &Args) -> Outcome {
    match &args.action {
        Action::Score(a) => score(a),
        Action::Train(a) => train(a),
    }
}

fn limits(max_kwh_per_day: f64) -> Result<ValueLimits, Failure> {
    if max_kwh_per_day.is_finite() && max_kwh_per_day > 0.0 {
        Ok(ValueLimits { max_kwh_per_day })
    } else {
        Err(anyhow!("--max-kwh-per-day must be a positive number")).bad_input()
    }
}

/// Streams the history file through the parser; a malformed line is a bad-input error naming
/// the file, line and column.
fn read_histories(path: &Path, limits: ValueLimits) -> Result<HistoryBatch, Failure> {
    let name = path.display();
    let file = File::open(path)
        .with_context(|| format!("cannot open {name}"))
        .bad_input()?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut parser = HistoryParser::new(limits);
    let mut line = String::new();
    let mut line_no = 0u64;
    loop {
        line.clear();
        let n = match reader.read_line(&mut line) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(anyhow!(
                    "{name}: line {}: not valid UTF-8 text",
                    line_no + 1
                ))
                .bad_input();
            }
            Err(e) => return Err(anyhow!(e).context(format!("cannot read {name}")).into()),
        };
        if n == 0 {
            break;
        }
        line_no += 1;
        let text = line.strip_suffix('\n').unwrap_or(&line);
        parser
            .push_line(text)
            .map_err(|e| anyhow!("{name}: {e}"))
            .bad_input()?;
    }
    parser
        .finish()
        .map_err(|e| anyhow!("{name}: {e}"))
        .bad_input()
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// Reports diagnostics: all of them to the file if given, else up to 20 on stderr.
fn report(diagnostics: &[Diagnostic], file: Option<&Path>) -> Result<(), Failure> {
    if let Some(path) = file {
        let name = path.display();
        let f = File::create(path).with_context(|| format!("cannot create {name}"))?;
        let mut w = BufWriter::new(f);
        writeln!(w, "meter_id,message").with_context(|| format!("cannot write {name}"))?;
        for d in diagnostics {
            writeln!(
                w,
                "{},{}",
                csv_field(d.meter_id.as_deref().unwrap_or("")),
                csv_field(&d.message)
            )
            .with_context(|| format!("cannot write {name}"))?;
        }
        w.flush().with_context(|| format!("cannot write {name}"))?;
        if !diagnostics.is_empty() {
            eprintln!("{} diagnostic(s) written to {name}", diagnostics.len());
        }
        return Ok(());
    }
    for d in diagnostics.iter().take(20) {
        match &d.meter_id {
            Some(m) => eprintln!("warning: meter {m}: {}", d.message),
            None => eprintln!("warning: {}", d.message),
        }
    }
    if diagnostics.len() > 20 {
        eprintln!(
            "warning: {} more diagnostic(s); use --diagnostics FILE to see all",
            diagnostics.len() - 20
        );
    }
    Ok(())
}

fn score(args: &ScoreArgs) -> Outcome {
    let limits = limits(args.max_kwh_per_day)?;
    let model = match &args.model {
        None => None,
        Some(path) => {
            let name = path.display();
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read model {name}"))
                .bad_input()?;
            Some(
                GbtModel::from_text(&text)
                    .map_err(|e| anyhow!("{name}: {e}"))
                    .bad_input()?,
            )
        }
    };
    let batch = read_histories(&args.input, limits)?;
    let features = extract_features(&batch.histories, &PatternConfig::default());
    let mut scores: Vec<TheftScore> = match &model {
        Some(m) => m.score(&features),
        None => score_unsupervised(&features),
    };
    rank(&mut scores);
    let name = args.out.display();
    let file = File::create(&args.out).with_context(|| format!("cannot create {name}"))?;
    let mut w = BufWriter::with_capacity(1 << 16, file);
    let write = |w: &mut BufWriter<File>| -> std::io::Result<()> {
        writeln!(w, "meter_id,score,rank,reasons")?;
        for (i, s) in scores.iter().enumerate() {
            writeln!(
                w,
                "{},{:.6},{},{}",
                csv_field(&s.meter_id),
                s.score,
                i + 1,
                csv_field(&s.reasons.join("; "))
            )?;
        }
        w.flush()
    };
    write(&mut w).with_context(|| format!("cannot write {name}"))?;
    let mut diagnostics = batch.diagnostics;
    diagnostics.extend(features.excluded.iter().cloned());
    report(&diagnostics, args.diagnostics.as_deref())?;
    eprintln!(
        "{} meter(s) scored ({}), {} excluded; written to {name}",
        scores.len(),
        if model.is_some() {
            "model"
        } else {
            "unsupervised"
        },
        features.excluded.len()
    );
    Ok(())
}

fn train(args: &TrainArgs) -> Outcome {
    let limits = limits(args.max_kwh_per_day)?;
    if args.trees == 0 {
        return Err(anyhow!("--trees must be at least 1")).bad_input();
    }
    let label_name = args.labels.display();
    let label_text = std::fs::read_to_string(&args.labels)
        .with_context(|| format!("cannot read {label_name}"))
        .bad_input()?;
    let labels = parse_labels(&label_text)
        .map_err(|e| anyhow!("{label_name}: {e}"))
        .bad_input()?;
    let batch = read_histories(&args.input, limits)?;
    let features = extract_features(&batch.histories, &PatternConfig::default());
    let params = GbtParams {
        trees: args.trees,
        ..GbtParams::default()
    };
    let (model, train_diagnostics) = GbtModel::train(&features, &labels, &params)
        .map_err(|e| anyhow!("{label_name}: {e}"))
        .bad_input()?;
    let name = args.model.display();
    std::fs::write(&args.model, model.to_text()).with_context(|| format!("cannot write {name}"))?;
    let mut diagnostics = batch.diagnostics;
    diagnostics.extend(features.excluded.iter().cloned());
    diagnostics.extend(train_diagnostics);
    report(&diagnostics, args.diagnostics.as_deref())?;
    let thieves = labels.iter().filter(|l| l.1).count();
    eprintln!(
        "model trained from {} label(s) ({thieves} theft) over {} scored meter(s); written to {name}",
        labels.len(),
        features.meters.len()
    );
    Ok(())
}
