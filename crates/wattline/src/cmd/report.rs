//! `wattline report ...`: consumption by customer, area (site) and period with solar
//! import/export and a power-quality summary, as CSV and PDF; the monthly run.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use chrono::{NaiveDate, TimeZone, Utc};
use server::SqliteStore;

use super::{Failure, Outcome};

pub const EXAMPLES: &str = "\
Examples:
  wattline report consumption --from 2026-02-01 --to 2026-03-01 --csv feb.csv --pdf feb.pdf
  wattline report monthly --out-dir reports --data-dir wattline-data

Dates are UTC days; `--to` is exclusive. Without --csv/--pdf the CSV goes to stdout.
Exit codes: 0 ok, 1 runtime failure, 2 bad usage or input.";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server's data directory (its SQLite database).
    #[arg(long, default_value = "wattline-data", global = true)]
    pub data_dir: PathBuf,
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
    /// The previous calendar month's report as CSV and PDF into a directory (for cron or the
    /// server's scheduler).
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

async fn run_async(args: &Args) -> Outcome {
    let store = SqliteStore::open(&args.data_dir)
        .await
        .with_context(|| format!("opening the database in {}", args.data_dir.display()))?;
    match &args.action {
        Action::Consumption { from, to, csv, pdf } => {
            if to <= from {
                return Err(Failure::BadInput(anyhow!(
                    "--to {to} must be after --from {from}"
                )));
            }
            let at =
                |d: &NaiveDate| Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"));
            let rows = server::reports::consumption(&store, at(from), at(to))
                .await
                .context("reading consumption")?;
            let text = server::reports::consumption_csv(&rows);
            if let Some(path) = csv {
                std::fs::write(path, &text)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if let Some(path) = pdf {
                std::fs::write(path, server::reports::consumption_pdf(&rows, *from, *to))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if csv.is_none() && pdf.is_none() {
                print!("{text}");
            }
        }
        Action::Monthly { out_dir } => {
            for f in server::reports::run_monthly(&store, out_dir, server::now_ms())
                .await
                .context("monthly report")?
            {
                println!("{}", f.display());
            }
        }
    }
    Ok(())
}
