//! Bills from stored rollups: bill runs per cycle, re-rating after a tariff correction, bill to
//! date and projection, payments and balances, and the prepaid credit job (low-credit warning,
//! disconnection after grace through the store's audited relay commands).
//!
//! The money is computed by the pure `billing` crate; this module only loads its inputs from the
//! store (the customer's tariff assignment, the 15-minute rollups of all the customer's meters)
//! and stores its outputs.

mod jobs;
mod routes;

use std::collections::BTreeMap;

use billing::postpaid::PostpaidTerms;
use billing::prepaid::{PrepaidAccount, PrepaidAction, PrepaidPolicy};
use billing::{Bill, BillingInput, Cycle, IntervalReading, Tariff};
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use rust_decimal::Decimal;

use crate::{Database, Error, ErrorKind, NewCommand, Resolution, Store};

pub use crate::store::{
    BillState, BillingStore, MessageStatus, NewMessage, NewPayment, NotificationPref, PaymentMode,
    PrepaidState, StoredBill, StoredBillLine, StoredMessage, StoredPayment, StoredTariff,
    TariffAssignment,
};
pub use jobs::{
    BillingJobs, CycleRunState, MonthlyAt, run_cycle_if_due, run_prepaid_checks, spawn_jobs,
};
pub(crate) use routes::routes;

/// The operator's billing settings.
#[derive(Debug, Clone)]
pub struct BillingConfig {
    /// Postpaid cycles: start day of month, days to pay, days from due date to cut-off.
    pub terms: PostpaidTerms,
    /// Prepaid: warning threshold, grace period, hours disconnections are allowed.
    pub prepaid: PrepaidPolicy,
    /// A relay command for a prepaid disconnection expires after this long.
    pub command_ttl: Duration,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            // Calendar months, 14 days to pay, cut-off 14 days after that: common defaults.
            terms: PostpaidTerms::new(1, 14, 14).expect("valid default terms"),
            prepaid: PrepaidPolicy {
                low_credit_threshold: Decimal::new(500, 2),
                grace_period: Duration::hours(48),
                disconnect_from: NaiveTime::from_hms_opt(9, 0, 0).expect("time"),
                disconnect_until: NaiveTime::from_hms_opt(15, 0, 0).expect("time"),
            },
            command_ttl: Duration::hours(24),
        }
    }
}

fn billing_error(what: &str, e: billing::Error) -> Error {
    Error::invalid(format!("{what}: {e}"))
}

fn not_found(what: String) -> Error {
    Error::new(ErrorKind::NotFound(what))
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn instant(t_ms: i64) -> Result<DateTime<Utc>, Error> {
    Utc.timestamp_millis_opt(t_ms)
        .single()
        .ok_or_else(|| Error::invalid(format!("time {t_ms} ms is out of range")))
}

/// The tariff that applies to a customer on a local date: the assignment in force then and the
/// newest revision of its tariff.
pub struct CustomerTariff {
    /// The assignment.
    pub assignment: TariffAssignment,
    /// The stored revision.
    pub stored: StoredTariff,
    /// Parsed.
    pub tariff: Tariff,
}

/// Loads the tariff in force for `customer` on `date` (the last assignment starting on or before it).
pub async fn customer_tariff(
    db: &Database,
    customer: &str,
    date: NaiveDate,
) -> Result<CustomerTariff, Error> {
    let assignment = db
        .billing()
        .assignments(customer)
        .await?
        .into_iter()
        .rfind(|a| a.valid_from <= date)
        .ok_or_else(|| {
            not_found(format!(
                "a tariff assignment of customer {customer} on {date}"
            ))
        })?;
    let stored = db
        .billing()
        .tariff(&assignment.tariff_id)
        .await?
        .ok_or_else(|| not_found(format!("tariff {}", assignment.tariff_id)))?;
    let tariff = Tariff::from_toml(&stored.toml).map_err(|e| {
        billing_error(
            &format!("stored tariff {} revision {}", stored.id, stored.revision),
            e,
        )
    })?;
    Ok(CustomerTariff {
        assignment,
        stored,
        tariff,
    })
}

/// The customer's interval energy in `[from, to)`: the 15-minute rollups of all meters assigned
/// to the customer, summed per quarter hour. 15-minute buckets are what time-of-use windows and
/// the demand charge need, and they are the same UTC instants in every zone.
///
/// Rollups hold fractional Wh; each quarter hour gets the rounded cumulative energy minus the
/// rounded cumulative energy before it, so the cycle's total equals the rounded total of the
/// counters and nothing is lost to per-interval rounding.
pub async fn interval_readings(
    store: &dyn Store,
    customer: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<IntervalReading>, Error> {
    let meters: Vec<_> = store
        .meters()
        .await?
        .into_iter()
        .filter(|m| m.customer.as_deref() == Some(customer))
        .collect();
    let mut quarters: BTreeMap<(i64, i64), (f64, f64)> = BTreeMap::new();
    for m in &meters {
        for r in store
            .rollups(&m.id, Resolution::Min15, ms(from), ms(to))
            .await?
        {
            let e = quarters.entry((r.start_ms, r.end_ms)).or_default();
            e.0 += r.energy.import_wh.max(0.0);
            e.1 += r.energy.export_wh.max(0.0);
        }
    }
    let (mut sum_imp, mut sum_exp, mut done_imp, mut done_exp) = (0.0f64, 0.0f64, 0u64, 0u64);
    let mut out = Vec::with_capacity(quarters.len());
    for ((start_ms, end_ms), (imp, exp)) in quarters {
        if end_ms > ms(to) {
            continue;
        }
        sum_imp += imp;
        sum_exp += exp;
        let (ci, ce) = (sum_imp.round() as u64, sum_exp.round() as u64);
        out.push(IntervalReading {
            start: instant(start_ms)?,
            end: instant(end_ms)?,
            import_wh: ci.saturating_sub(done_imp),
            export_wh: ce.saturating_sub(done_exp),
        });
        (done_imp, done_exp) = (ci.max(done_imp), ce.max(done_exp));
    }
    Ok(out)
}

/// The billing input of a customer's cycle, readings up to `until` (at most the cycle's end).
pub async fn cycle_input(
    db: &Database,
    customer: &str,
    tariff: &Tariff,
    cycle: Cycle,
    until: Option<DateTime<Utc>>,
) -> Result<BillingInput, Error> {
    let tz = tariff.time_zone();
    let start = billing::start_of_day(tz, cycle.start);
    let end = billing::start_of_day(tz, cycle.end);
    let to = until.map_or(end, |u| u.clamp(start, end));
    let readings = interval_readings(db.store().as_ref(), customer, start, to).await?;
    Ok(BillingInput {
        account: customer.to_owned(),
        cycle,
        readings,
        credit_carried_in_wh: 0,
        previous_balance: Decimal::ZERO,
        payments: Decimal::ZERO,
    })
}

fn random_id() -> Result<String, Error> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)
        .map_err(|e| Error::new(ErrorKind::Unavailable(format!("OS random numbers: {e}"))))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn stored_lines(bill: &Bill) -> Vec<StoredBillLine> {
    bill.lines
        .iter()
        .map(|l| StoredBillLine {
            kind: l.kind.as_str().to_owned(),
            description: l.description.clone(),
            quantity: l.quantity,
            unit: l.unit.symbol().to_owned(),
            unit_price: l.unit_price,
            amount: l.amount,
        })
        .collect()
}

/// What a bill run did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BillRunReport {
    /// Bills issued now, by id.
    pub issued: Vec<StoredBill>,
    /// Customers that already had a bill for the cycle.
    pub already_billed: Vec<String>,
    /// Customers that could not be billed, with the reason.
    pub failed: Vec<(String, String)>,
}

/// Bills one postpaid customer's finished cycle from the stored rollups. Returns `None` when the
/// cycle is already billed (bill runs are idempotent).
pub async fn bill_customer(
    db: &Database,
    config: &BillingConfig,
    customer: &str,
    cycle: Cycle,
    now_ms: i64,
) -> Result<Option<StoredBill>, Error> {
    let ct = customer_tariff(db, customer, cycle.start).await?;
    let input = cycle_input(db, customer, &ct.tariff, cycle, None).await?;
    let bill = billing::rate_cycle(&ct.tariff, &input)
        .map_err(|e| billing_error(&format!("rating customer {customer}"), e))?;
    let stored = StoredBill {
        id: random_id()?,
        customer: customer.to_owned(),
        cycle_start: cycle.start,
        cycle_end: cycle.end,
        status: BillState::Issued,
        tariff_id: ct.stored.id.clone(),
        tariff_revision: ct.stored.revision,
        currency: bill.currency.code().to_owned(),
        subtotal: bill.subtotal,
        taxes: bill.taxes,
        total: bill.total,
        import_wh: bill.energy.import_wh as i64,
        export_wh: bill.energy.export_wh as i64,
        issued_ms: now_ms,
        due_date: config.terms.due_date(&cycle, ct.tariff.holidays()),
        adjustments: Decimal::ZERO,
        lines: stored_lines(&bill),
    };
    Ok(db.billing().insert_bill(&stored).await?.then_some(stored))
}

/// Runs billing for every customer with a postpaid assignment for the cycle that ends on
/// `cycle.end`. Customers are independent: one failure is reported, the others are billed.
pub async fn run_cycle(
    db: &Database,
    config: &BillingConfig,
    cycle: Cycle,
    now_ms: i64,
) -> Result<BillRunReport, Error> {
    let mut report = BillRunReport::default();
    for customer in db.billing().billed_customers().await? {
        let mode = db
            .billing()
            .assignments(&customer)
            .await?
            .into_iter()
            .rfind(|a| a.valid_from <= cycle.start)
            .map(|a| a.payment_mode);
        if mode != Some(PaymentMode::Postpaid) {
            continue;
        }
        match bill_customer(db, config, &customer, cycle, now_ms).await {
            Ok(Some(bill)) => report.issued.push(bill),
            Ok(None) => report.already_billed.push(customer),
            Err(e) => {
                tracing::warn!(customer = %customer, error = %e, "bill run: customer not billed");
                report.failed.push((customer, e.to_string()));
            }
        }
    }
    Ok(report)
}

/// The job entry point for the runtime's scheduler: bills the cycle that ended most recently
/// before `now` (cycles by [`BillingConfig::terms`]), in UTC dates; the run is idempotent, so the
/// scheduler may call it every hour.
pub async fn run_due_cycle(
    db: &Database,
    config: &BillingConfig,
    now_ms: i64,
) -> Result<BillRunReport, Error> {
    let today = instant(now_ms)?.date_naive();
    let current = config.terms.cycle_containing(today);
    let previous = config
        .terms
        .cycle_containing(current.start.pred_opt().unwrap_or(current.start));
    run_cycle(db, config, previous, now_ms).await
}

/// The result of re-rating one bill.
#[derive(Debug, Clone, PartialEq)]
pub struct Rerated {
    /// The bill as it is now.
    pub bill: StoredBill,
    /// Corrected total minus the total before; positive means the customer owes more.
    pub difference: Decimal,
    /// False when the bill was already rated with this tariff revision (nothing changed).
    pub changed: bool,
}

/// Re-rates a bill with the newest revision of its tariff (after a correction). Idempotent: a
/// second call with the same revision changes nothing.
pub async fn rerate_bill(db: &Database, bill_id: &str, now_ms: i64) -> Result<Rerated, Error> {
    let old = db
        .billing()
        .bill(bill_id)
        .await?
        .ok_or_else(|| not_found(format!("bill {bill_id}")))?;
    let stored = db
        .billing()
        .tariff(&old.tariff_id)
        .await?
        .ok_or_else(|| not_found(format!("tariff {}", old.tariff_id)))?;
    if stored.revision == old.tariff_revision {
        return Ok(Rerated {
            bill: old,
            difference: Decimal::ZERO,
            changed: false,
        });
    }
    let tariff = Tariff::from_toml(&stored.toml)
        .map_err(|e| billing_error(&format!("stored tariff {}", stored.id), e))?;
    let cycle = Cycle::new(old.cycle_start, old.cycle_end);
    let input = cycle_input(db, &old.customer, &tariff, cycle, None).await?;
    let corrected = billing::rate_cycle(&tariff, &input)
        .map_err(|e| billing_error(&format!("re-rating bill {bill_id}"), e))?;
    let difference = corrected.total - old.total;
    let new = StoredBill {
        tariff_revision: stored.revision,
        subtotal: corrected.subtotal,
        taxes: corrected.taxes,
        total: corrected.total,
        import_wh: corrected.energy.import_wh as i64,
        export_wh: corrected.energy.export_wh as i64,
        adjustments: old.adjustments + difference,
        lines: stored_lines(&corrected),
        ..old.clone()
    };
    let changed = db.billing().rerate_bill(&new, difference, now_ms).await?;
    let bill = if changed { new } else { old };
    Ok(Rerated {
        bill,
        difference: if changed { difference } else { Decimal::ZERO },
        changed,
    })
}

/// Re-rates every bill of every customer on `tariff_id` rated with an older revision.
pub async fn rerate_tariff(
    db: &Database,
    tariff_id: &str,
    now_ms: i64,
) -> Result<Vec<Rerated>, Error> {
    let mut out = Vec::new();
    for customer in db.billing().billed_customers().await? {
        for bill in db.billing().bills(&customer).await? {
            if bill.tariff_id == tariff_id {
                out.push(rerate_bill(db, &bill.id, now_ms).await?);
            }
        }
    }
    Ok(out)
}

/// A customer's account: what was billed and paid.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountBalance {
    /// Sum of the bills' totals.
    pub billed: Decimal,
    /// Sum of payments.
    pub paid: Decimal,
    /// `billed - paid`: positive means the customer owes.
    pub balance: Decimal,
}

/// A postpaid customer's balance, and bill statuses brought up to date: bills are settled
/// oldest first by the payments; an unsettled bill past its due date is overdue.
pub async fn settle(
    db: &Database,
    customer: &str,
    today: NaiveDate,
) -> Result<AccountBalance, Error> {
    let mut bills = db.billing().bills(customer).await?;
    bills.sort_by_key(|b| b.cycle_start);
    let paid: Decimal = db
        .billing()
        .payments(customer)
        .await?
        .iter()
        .map(|p| p.payment.amount)
        .sum();
    let mut covered = Decimal::ZERO;
    let mut billed = Decimal::ZERO;
    for b in &bills {
        billed += b.total;
        covered += b.total;
        let status = if covered <= paid {
            BillState::Paid
        } else if b.due_date < today {
            BillState::Overdue
        } else {
            BillState::Issued
        };
        if status != b.status {
            db.billing().set_bill_status(&b.id, status).await?;
        }
    }
    Ok(AccountBalance {
        billed,
        paid,
        balance: billed - paid,
    })
}

/// Records an operator's payment. For a prepaid customer it tops up the credit (and clears the
/// zero-credit mark when the balance becomes positive).
pub async fn record_payment(db: &Database, payment: &NewPayment) -> Result<StoredPayment, Error> {
    if payment.amount.is_zero() {
        return Err(Error::invalid("a payment of zero records nothing"));
    }
    let stored = db.billing().record_payment(payment).await?;
    if let Some(mut state) = db.billing().prepaid(&payment.customer).await? {
        state.balance += payment.amount;
        if state.balance > Decimal::ZERO {
            state.zero_credit_since_ms = None;
            state.warned_ms = None;
        }
        db.billing().put_prepaid(&state).await?;
    }
    Ok(stored)
}

/// The bill so far and the projected bill of the customer's current cycle.
#[derive(Debug, Clone)]
pub struct LiveBill {
    /// The cycle.
    pub cycle: Cycle,
    /// Charges for consumption known up to `as_of`.
    pub to_date: Bill,
    /// The whole cycle with the rest estimated; `None` while the cycle has no reading yet
    /// (nothing to estimate from; `method` says so).
    pub projected: Option<Bill>,
    /// How the rest was estimated.
    pub method: &'static str,
}

/// What a live bill says instead of a projection while its cycle has no reading yet.
pub const NO_PROJECTION: &str =
    "no reading in this cycle yet: the projection starts with the first one";

/// Bill to date and projection for the cycle containing `as_of` (the tariff's local date).
pub async fn live_bill(
    db: &Database,
    config: &BillingConfig,
    customer: &str,
    as_of: DateTime<Utc>,
) -> Result<LiveBill, Error> {
    // The cycle is in the tariff's zone; find the assignment at the UTC date first, then
    // recompute the local date in the tariff's zone.
    let guess = customer_tariff(db, customer, as_of.date_naive()).await?;
    let today = as_of.with_timezone(&guess.tariff.time_zone()).date_naive();
    live_bill_for(db, customer, config.terms.cycle_containing(today), as_of).await
}

/// Bill to date and projection of a given cycle as of `as_of` (at or after the cycle's end the
/// projection is the final bill).
pub async fn live_bill_for(
    db: &Database,
    customer: &str,
    cycle: Cycle,
    as_of: DateTime<Utc>,
) -> Result<LiveBill, Error> {
    let ct = customer_tariff(db, customer, cycle.start).await?;
    let input = cycle_input(db, customer, &ct.tariff, cycle, Some(as_of)).await?;
    if input.readings.is_empty() {
        // The fixed charges still accrue; the consumption cannot be projected from nothing.
        let to_date = billing::bill_to_date(&ct.tariff, &input, as_of)
            .map_err(|e| billing_error(&format!("bill to date of customer {customer}"), e))?;
        return Ok(LiveBill {
            cycle,
            to_date,
            projected: None,
            method: NO_PROJECTION,
        });
    }
    let p = billing::project(&ct.tariff, &input, as_of)
        .map_err(|e| billing_error(&format!("projecting customer {customer}"), e))?;
    Ok(LiveBill {
        cycle,
        to_date: p.to_date,
        projected: Some(p.projected),
        method: p.method,
    })
}

/// What the prepaid job did for one customer.
#[derive(Debug, Clone, PartialEq)]
pub struct PrepaidOutcome {
    /// The customer.
    pub customer: String,
    /// Credit after the debit.
    pub balance: Decimal,
    /// The decision.
    pub action: PrepaidAction,
    /// Why, in words.
    pub explanation: String,
    /// Relay commands queued now (ids).
    pub commands: Vec<i64>,
    /// Whether a low-credit warning should go out now (at most one per day).
    pub warn: bool,
}

/// The prepaid job for one customer at `now`: debits the consumption since the last run, then
/// decides (billing crate rules: grace, protected customers, holidays, hours) and, when a
/// disconnection is due, queues one audited relay command per meter with reason
/// "prepaid credit exhausted".
pub async fn prepaid_check(
    db: &Database,
    config: &BillingConfig,
    customer: &str,
    now: DateTime<Utc>,
) -> Result<PrepaidOutcome, Error> {
    let guess = customer_tariff(db, customer, now.date_naive()).await?;
    let today = now.with_timezone(&guess.tariff.time_zone()).date_naive();
    let ct = customer_tariff(db, customer, today).await?;
    if ct.assignment.payment_mode != PaymentMode::Prepaid {
        return Err(Error::invalid(format!(
            "customer {customer} is not prepaid"
        )));
    }
    let cycle = config.terms.cycle_containing(today);
    let cycle_start = billing::start_of_day(ct.tariff.time_zone(), cycle.start);
    let mut state = db
        .billing()
        .prepaid(customer)
        .await?
        .unwrap_or(PrepaidState {
            customer: customer.to_owned(),
            balance: Decimal::ZERO,
            debited_through_ms: ms(cycle_start),
            zero_credit_since_ms: None,
            warned_ms: None,
            disconnected_ms: None,
        });
    let charged_until = instant(state.debited_through_ms)?.clamp(cycle_start, now);
    let input = cycle_input(db, customer, &ct.tariff, cycle, Some(now)).await?;
    let account = PrepaidAccount {
        balance: state.balance,
        zero_credit_since: state.zero_credit_since_ms.map(instant).transpose()?,
        protected: ct.assignment.protected,
    };
    let debit = billing::prepaid::debit(&ct.tariff, &input, &account, charged_until, now)
        .map_err(|e| billing_error(&format!("debiting customer {customer}"), e))?;
    state.balance = debit.balance_after;
    state.debited_through_ms = ms(now);
    state.zero_credit_since_ms = debit.zero_credit_since.map(ms);
    let decision = billing::prepaid::decide(
        &config.prepaid,
        &PrepaidAccount {
            balance: state.balance,
            zero_credit_since: debit.zero_credit_since,
            protected: ct.assignment.protected,
        },
        &ct.tariff,
        now,
    )
    .map_err(|e| billing_error(&format!("prepaid decision for customer {customer}"), e))?;
    let mut commands = Vec::new();
    if decision.action == PrepaidAction::Disconnect && state.disconnected_ms.is_none() {
        let store = db.store();
        for m in store.meters().await? {
            if m.customer.as_deref() != Some(customer) {
                continue;
            }
            let c = store
                .create_command(&NewCommand {
                    meter: m.id.clone(),
                    action: schema::Action::RelayDisconnect,
                    issued_by: "system".into(),
                    reason: format!("prepaid credit exhausted ({})", decision.explanation()),
                    issued_ms: ms(now),
                    expires_ms: ms(now + config.command_ttl),
                })
                .await?;
            commands.push(c.id);
        }
        state.disconnected_ms = Some(ms(now));
    }
    let warn_due = state
        .warned_ms
        .is_none_or(|w| ms(now) - w >= Duration::days(1).num_milliseconds());
    let warn = decision.action != PrepaidAction::Continue && warn_due;
    if warn {
        state.warned_ms = Some(ms(now));
    }
    db.billing().put_prepaid(&state).await?;
    Ok(PrepaidOutcome {
        customer: customer.to_owned(),
        balance: state.balance,
        action: decision.action,
        explanation: decision.explanation(),
        commands,
        warn,
    })
}

/// The job entry point for the runtime's scheduler: runs [`prepaid_check`] for every prepaid
/// customer (every few minutes). One customer's failure does not stop the others.
pub async fn run_prepaid(
    db: &Database,
    config: &BillingConfig,
    now_ms: i64,
) -> Result<Vec<PrepaidOutcome>, Error> {
    let now = instant(now_ms)?;
    let mut out = Vec::new();
    for customer in db.billing().billed_customers().await? {
        let prepaid = db
            .billing()
            .assignments(&customer)
            .await?
            .last()
            .is_some_and(|a| a.payment_mode == PaymentMode::Prepaid);
        if !prepaid {
            continue;
        }
        match prepaid_check(db, config, &customer, now).await {
            Ok(o) => out.push(o),
            Err(e) => tracing::warn!(customer = %customer, error = %e, "prepaid check failed"),
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests;
