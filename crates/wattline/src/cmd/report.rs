//! `wattline report ...`: consumption by customer, area (site) and period with solar
//! import/export and a power-quality summary, theft and tamper cases, as CSV and PDF; the
//! monthly run.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use chrono::{NaiveDate, TimeZone, Utc};

use super::{Failure, Outcome};

pub const EXAMPLES: &str = "\
Examples:
  wattline report consumption --from 2026-02-01 --to 2026-03-01 --csv feb.csv --pdf feb.pdf --data-dir wattline-data
  wattline report theft-cases --from 2026-02-01 --to 2026-03-01 --pdf cases.pdf --config server.toml
  wattline report monthly --out-dir reports --data-dir wattline-data

Dates are UTC days; `--to` is exclusive. Without --csv/--pdf the CSV goes to stdout.
Exit codes: 0 ok, 1 runtime failure, 2 bad usage or input.";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server: `--data-dir DIR` (an SQLite server) or `--config FILE` (any store).
    #[command(flatten)]
    pub target: super::StoreTarget,
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Consumption per meter with customer and site, import/export, power quality.
    Consumption {
        #[arg(long)]
        from: NaiveDate,
        #[arg(long)]
        to: NaiveDate,
        #[arg(long)]
        csv: Option<PathBuf>,
        #[arg(long)]
        pdf: Option<PathBuf>,
    },
    /// Theft and tamper cases opened in the period, and older ones still open or under
    /// inspection, with their evidence and state.
    #[command(name = "theft-cases")]
    TheftCases {
        #[arg(long)]
        from: NaiveDate,
        #[arg(long)]
        to: NaiveDate,
        #[arg(long)]
        csv: Option<PathBuf>,
        #[arg(long)]
        pdf: Option<PathBuf>,
    },
    /// The previous calendar month's reports (consumption, theft cases) as CSV and PDF into a
    /// directory (for cron; the server writes them itself with `[reports] monthly`).
    Monthly {
        #[arg(long)]
        out_dir: PathBuf,
    },
}

pub fn run(args: &Args) -> Outcome {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(run_async(args))
}

/// `[from, to)` as UTC instants; `to` must be after `from`.
fn period(
    from: &NaiveDate,
    to: &NaiveDate,
) -> Result<(chrono::DateTime<Utc>, chrono::DateTime<Utc>), Failure> {
    if to <= from {
        return Err(Failure::BadInput(anyhow!(
            "--to {to} must be after --from {from}"
        )));
    }
    let at = |d: &NaiveDate| Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"));
    Ok((at(from), at(to)))
}

/// Writes the CSV and/or the PDF where asked; with neither, the CSV goes to stdout.
fn emit(
    csv_text: &str,
    pdf_bytes: impl FnOnce() -> Vec<u8>,
    csv: &Option<PathBuf>,
    pdf: &Option<PathBuf>,
) -> Outcome {
    if let Some(path) = csv {
        std::fs::write(path, csv_text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = pdf {
        std::fs::write(path, pdf_bytes()).with_context(|| format!("writing {}", path.display()))?;
    }
    if csv.is_none() && pdf.is_none() {
        print!("{csv_text}");
    }
    Ok(())
}

async fn run_async(args: &Args) -> Outcome {
    let (_, db) = args.target.open().await?;
    let store = db.store();
    match &args.action {
        Action::Consumption { from, to, csv, pdf } => {
            let (a, b) = period(from, to)?;
            let rows = server::reports::consumption(store.as_ref(), a, b)
                .await
                .context("reading consumption")?;
            emit(
                &server::reports::consumption_csv(&rows),
                || server::reports::consumption_pdf(&rows, *from, *to),
                csv,
                pdf,
            )?;
        }
        Action::TheftCases { from, to, csv, pdf } => {
            let (a, b) = period(from, to)?;
            let rows = server::reports::theft_cases(&db, a, b)
                .await
                .context("reading the cases")?;
            emit(
                &server::reports::theft_cases_csv(&rows),
                || server::reports::theft_cases_pdf(&rows, *from, *to),
                csv,
                pdf,
            )?;
        }
        Action::Monthly { out_dir } => {
            for f in server::reports::run_monthly(&db, out_dir, server::now_ms())
                .await
                .context("monthly report")?
            {
                println!("{}", f.display());
            }
        }
    }
    Ok(())
}
