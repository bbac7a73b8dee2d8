//! `wattline bill ...`: tariffs, assignments, bill runs, re-rating, payments and statements on
//! the server's database (SQLite data directory), through `server::billing`.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use server::billing::{self as b, BillingConfig, NewPayment, PaymentMode, TariffAssignment};
use server::{Database, SqliteStore};

use super::{BadInput, Failure, Outcome};

pub const EXAMPLES: &str = "\
Examples:
  wattline bill tariff crates/billing/testdata/gb_single_rate.toml --data-dir wattline-data
  wattline bill assign house-7 gb-single-rate --from 2026-01-01 --data-dir wattline-data
  wattline bill run --from 2026-02-01 --to 2026-03-01 --data-dir wattline-data
  wattline bill list house-7 --data-dir wattline-data
  wattline bill statement <bill-id> --pdf feb.pdf --csv feb.csv --data-dir wattline-data
  wattline bill pay house-7 25.50 --method cash --reference R-17 --data-dir wattline-data
  wattline bill rerate gb-single-rate --data-dir wattline-data

Money is printed and read as exact decimals. Exit codes: 0 ok, 1 runtime failure, 2 bad usage or input.";

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
    /// Store a tariff TOML file (a new revision when the id exists: a correction).
    Tariff {
        /// The TOML file (format: the `billing` crate docs).
        file: PathBuf,
    },
    /// Put a customer on a tariff from a local date on.
    Assign {
        customer: String,
        tariff: String,
        /// First day (YYYY-MM-DD).
        #[arg(long)]
        from: chrono::NaiveDate,
        /// Prepaid credit instead of postpaid bills.
        #[arg(long)]
        prepaid: bool,
        /// Never disconnect this customer for lack of credit.
        #[arg(long)]
        protected: bool,
    },
    /// Bill every postpaid customer for the cycle [from, to).
    Run {
        #[arg(long)]
        from: chrono::NaiveDate,
        #[arg(long)]
        to: chrono::NaiveDate,
    },
    /// Re-rate the issued bills of a tariff with its newest revision.
    Rerate { tariff: String },
    /// A customer's bills and balance.
    List { customer: String },
    /// Write a bill's statement as PDF and/or CSV.
    Statement {
        bill: String,
        #[arg(long)]
        pdf: Option<PathBuf>,
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// Record a payment (or a prepaid top-up).
    Pay {
        customer: String,
        /// Decimal amount, e.g. 25.50.
        amount: String,
        #[arg(long)]
        method: String,
        #[arg(long, default_value = "")]
        reference: String,
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
    let db = Database::Sqlite(store);
    let now = server::now_ms();
    let config = BillingConfig::default();
    match &args.action {
        Action::Tariff { file } => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))
                .bad_input()?;
            let t = billing::Tariff::from_toml(&text)
                .map_err(|e| anyhow!("{}: {e}", file.display()))
                .bad_input()?;
            let rev = db
                .billing()
                .put_tariff(t.id(), t.name(), t.currency().code(), &text, "cli", now)
                .await
                .context("storing the tariff")?;
            println!("tariff {} revision {rev}", t.id());
        }
        Action::Assign {
            customer,
            tariff,
            from,
            prepaid,
            protected,
        } => {
            if db
                .billing()
                .tariff(tariff)
                .await
                .context("reading tariffs")?
                .is_none()
            {
                return Err(Failure::BadInput(anyhow!(
                    "no tariff {tariff:?}: store it first with `wattline bill tariff FILE`"
                )));
            }
            db.billing()
                .assign_tariff(&TariffAssignment {
                    customer: customer.clone(),
                    valid_from: *from,
                    tariff_id: tariff.clone(),
                    payment_mode: if *prepaid {
                        PaymentMode::Prepaid
                    } else {
                        PaymentMode::Postpaid
                    },
                    protected: *protected,
                })
                .await
                .context("assigning the tariff")?;
            println!("customer {customer} on tariff {tariff} from {from}");
        }
        Action::Run { from, to } => {
            if to <= from {
                return Err(Failure::BadInput(anyhow!(
                    "--to {to} must be after --from {from}"
                )));
            }
            let report = b::run_cycle(&db, &config, billing::Cycle::new(*from, *to), now)
                .await
                .context("bill run")?;
            for bill in &report.issued {
                println!(
                    "issued {} {} {} {}",
                    bill.id, bill.customer, bill.total, bill.currency
                );
            }
            for c in &report.already_billed {
                println!("already billed {c}");
            }
            for (c, e) in &report.failed {
                eprintln!("not billed {c}: {e}");
            }
            if !report.failed.is_empty() {
                return Err(Failure::Runtime(anyhow!(
                    "{} customers could not be billed",
                    report.failed.len()
                )));
            }
        }
        Action::Rerate { tariff } => {
            for r in b::rerate_tariff(&db, tariff, now)
                .await
                .context("re-rating")?
            {
                if r.changed {
                    println!(
                        "bill {} {} new total {} (difference {})",
                        r.bill.id, r.bill.customer, r.bill.total, r.difference
                    );
                }
            }
        }
        Action::List { customer } => {
            let today = chrono::TimeZone::timestamp_millis_opt(&chrono::Utc, now)
                .single()
                .unwrap_or_default()
                .date_naive();
            let bal = b::settle(&db, customer, today).await.context("settling")?;
            for bill in db
                .billing()
                .bills(customer)
                .await
                .context("listing bills")?
            {
                println!(
                    "{} {}..{} {} {} {} due {}",
                    bill.id,
                    bill.cycle_start,
                    bill.cycle_end,
                    bill.status.as_str(),
                    bill.total,
                    bill.currency,
                    bill.due_date
                );
            }
            println!(
                "billed {} paid {} balance {}",
                bal.billed, bal.paid, bal.balance
            );
        }
        Action::Statement { bill, pdf, csv } => {
            let stored = db
                .billing()
                .bill(bill)
                .await
                .context("reading the bill")?
                .ok_or_else(|| anyhow!("no bill {bill:?}"))
                .bad_input()?;
            let store = db.store();
            let customer = store
                .customer(&stored.customer)
                .await
                .context("reading the customer")?
                .unwrap_or_else(|| server::Customer {
                    id: stored.customer.clone(),
                    name: stored.customer.clone(),
                    time_zone: "UTC".into(),
                });
            if let Some(path) = csv {
                std::fs::write(path, server::reports::statement_csv(&stored, &customer))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if let Some(path) = pdf {
                let tz: chrono_tz::Tz = customer.time_zone.parse().unwrap_or(chrono_tz::UTC);
                let from = billing::start_of_day(tz, stored.cycle_start);
                let to = billing::start_of_day(tz, stored.cycle_end);
                let daily =
                    server::reports::daily_kwh(store.as_ref(), &stored.customer, from, to, tz)
                        .await
                        .context("reading daily consumption")?;
                std::fs::write(
                    path,
                    server::reports::statement_pdf(&stored, &customer, &daily),
                )
                .with_context(|| format!("writing {}", path.display()))?;
            }
            if pdf.is_none() && csv.is_none() {
                print!("{}", server::reports::statement_csv(&stored, &customer));
            }
        }
        Action::Pay {
            customer,
            amount,
            method,
            reference,
        } => {
            let amount: rust_decimal::Decimal = amount
                .parse()
                .map_err(|_| anyhow!("amount {amount:?} is not a decimal number"))
                .bad_input()?;
            let p = b::record_payment(
                &db,
                &NewPayment {
                    customer: customer.clone(),
                    amount,
                    method: method.clone(),
                    reference: reference.clone(),
                    received_ms: now,
                    recorded_by: "cli".into(),
                },
            )
            .await
            .map_err(|e| anyhow!("{e}"))
            .bad_input()?;
            println!("payment {} recorded", p.id);
        }
    }
    Ok(())
}
