//! The billing job of the running server: once a month, on the configured day and UTC time, the
//! bill run for the cycle that ended before (the previous calendar month with the default
//! terms); every `prepaid_every`, the prepaid credit check. Issued bills and low-credit
//! warnings become notifications; a notification failure is logged and counted, never undoes
//! a bill or a credit decision.

use std::time::Duration;

use chrono::{Datelike, NaiveDate, NaiveTime, TimeZone, Utc};
use tokio::sync::watch;

use super::{BillRunReport, BillingConfig, PrepaidOutcome};
use crate::notify::{Incident, Notifier};
use crate::{Database, Error};

/// When the monthly bill run happens: a day of the month and a time of day, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonthlyAt {
    /// Day of the month, 1 to 28 (every month has it).
    pub day: u32,
    /// Time of day, UTC.
    pub time: NaiveTime,
}

impl MonthlyAt {
    /// This month's run instant for `now_ms`, Unix ms.
    fn this_month_ms(&self, now_ms: i64) -> Result<(NaiveDate, i64), Error> {
        let now = Utc
            .timestamp_millis_opt(now_ms)
            .single()
            .ok_or_else(|| Error::invalid(format!("time {now_ms} ms is out of range")))?;
        let date = NaiveDate::from_ymd_opt(now.year(), now.month(), self.day)
            .ok_or_else(|| Error::invalid(format!("day {} of this month", self.day)))?;
        Ok((
            date,
            Utc.from_utc_datetime(&date.and_time(self.time))
                .timestamp_millis(),
        ))
    }
}

/// What the billing job does and when.
#[derive(Debug, Clone)]
pub struct BillingJobs {
    /// Terms and prepaid policy.
    pub config: BillingConfig,
    /// The monthly bill run; `None` turns it off (bills only through the API).
    pub cycle_run: Option<MonthlyAt>,
    /// Period of the prepaid credit check.
    pub prepaid_every: Duration,
}

/// The monthly run's memory within one process: the month whose run is done. After a restart
/// the run happens again, which issues nothing new (bill runs are idempotent).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CycleRunState {
    done_for: Option<NaiveDate>,
}

/// Runs the monthly bill run if it is due at `now_ms` and not yet done this month, and raises a
/// bill-issued notification per new bill. `None`: not due (or already done).
pub async fn run_cycle_if_due(
    db: &Database,
    jobs: &BillingJobs,
    notifier: Option<&Notifier>,
    state: &mut CycleRunState,
    now_ms: i64,
) -> Result<Option<BillRunReport>, Error> {
    let Some(at) = jobs.cycle_run else {
        return Ok(None);
    };
    let (month, due_ms) = at.this_month_ms(now_ms)?;
    if now_ms < due_ms || state.done_for == Some(month) {
        return Ok(None);
    }
    let report = super::run_due_cycle(db, &jobs.config, now_ms).await?;
    // Per-customer failures are in the report (and logged by the run); they are not retried
    // every period, an operator re-runs the cycle through the API once the cause is fixed.
    state.done_for = Some(month);
    if let Some(n) = notifier {
        for bill in &report.issued {
            n.raise_logged(&Incident::bill_issued(bill)).await;
        }
    }
    Ok(Some(report))
}

/// The prepaid credit check for every prepaid customer, raising the low-credit notification
/// when the check says a warning is due (at most once a day per customer).
pub async fn run_prepaid_checks(
    db: &Database,
    jobs: &BillingJobs,
    notifier: Option<&Notifier>,
    now_ms: i64,
) -> Result<Vec<PrepaidOutcome>, Error> {
    let outcomes = super::run_prepaid(db, &jobs.config, now_ms).await?;
    if let Some(n) = notifier {
        for o in outcomes.iter().filter(|o| o.warn) {
            n.raise_logged(&Incident::low_credit(o, now_ms)).await;
        }
    }
    Ok(outcomes)
}

/// Starts the billing job: checks the monthly run and runs the prepaid checks every
/// `prepaid_every` until `shutdown` turns true.
pub fn spawn_jobs(
    db: Database,
    jobs: BillingJobs,
    notifier: Option<Notifier>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = jobs.prepaid_every.max(Duration::from_secs(1));
        let mut state = CycleRunState::default();
        loop {
            let now_ms = crate::now_ms();
            match run_cycle_if_due(&db, &jobs, notifier.as_ref(), &mut state, now_ms).await {
                Ok(Some(r)) => tracing::info!(
                    issued = r.issued.len(),
                    already_billed = r.already_billed.len(),
                    failed = r.failed.len(),
                    "monthly bill run"
                ),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "monthly bill run failed; retrying next period")
                }
            }
            match run_prepaid_checks(&db, &jobs, notifier.as_ref(), now_ms).await {
                Ok(outcomes) => {
                    let warned = outcomes.iter().filter(|o| o.warn).count();
                    let commands: usize = outcomes.iter().map(|o| o.commands.len()).sum();
                    if warned > 0 || commands > 0 {
                        tracing::info!(
                            customers = outcomes.len(),
                            warned,
                            disconnect_commands = commands,
                            "prepaid checks"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "prepaid checks failed; retrying next period"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
            }
            if *shutdown.borrow() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{GB_TARIFF, assign, load_meter, pg_db, put_tariff, sqlite_db, utc};
    use super::*;
    use crate::billing::{MessageStatus, NotificationPref, PaymentMode};
    use crate::notify::NotifyConfig;

    fn jobs() -> BillingJobs {
        BillingJobs {
            config: BillingConfig::default(),
            cycle_run: Some(MonthlyAt {
                day: 1,
                time: NaiveTime::from_hms_opt(2, 0, 0).unwrap(),
            }),
            prepaid_every: Duration::from_secs(900),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_monthly_run_bills_last_month_once_and_notifies_on_sqlite() {
        let t = sqlite_db().await;
        monthly_run_bills_last_month_once(&t.db).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_monthly_run_bills_last_month_once_and_notifies_on_postgres() {
        let Some(t) = pg_db().await else { return };
        monthly_run_bills_last_month_once(&t.db).await;
    }

    /// The job bills last month once: before the run time nothing, then one bill and one
    /// bill-issued message; a second pass (same process or after a restart) adds neither.
    async fn monthly_run_bills_last_month_once(db: &Database) {
        put_tariff(db, GB_TARIFF).await;
        assign(db, "c-job", "gb-single-rate", PaymentMode::Postpaid, false).await;
        let (from, to) = (utc("2026-02-01T00:00:00Z"), utc("2026-03-01T00:00:00Z"));
        load_meter(db, "m-job", "c-job", "Europe/London", from, to, |_| 250.0).await;
        db.billing()
            .set_pref(&NotificationPref {
                username: "alice".into(),
                customer: Some("c-job".into()),
                rule: "bill-issued".into(),
                channel: "inapp".into(),
                target: String::new(),
                enabled: true,
            })
            .await
            .unwrap();
        let notifier = Notifier::new(db.clone(), NotifyConfig::default()).unwrap();
        let jobs = jobs();
        let mut state = CycleRunState::default();

        let early = utc("2026-03-01T01:59:00Z").timestamp_millis();
        let r = run_cycle_if_due(db, &jobs, Some(&notifier), &mut state, early)
            .await
            .unwrap();
        assert!(r.is_none(), "not due before 02:00 UTC: {r:?}");
        assert!(db.billing().bills("c-job").await.unwrap().is_empty());

        let due = utc("2026-03-01T02:15:00Z").timestamp_millis();
        let r = run_cycle_if_due(db, &jobs, Some(&notifier), &mut state, due)
            .await
            .unwrap()
            .expect("due");
        assert_eq!(r.issued.len(), 1, "{r:?}");
        assert_eq!(
            r.issued[0].cycle_start,
            NaiveDate::from_ymd_opt(2026, 2, 1).unwrap()
        );
        // Same process: already done this month.
        let again = run_cycle_if_due(db, &jobs, Some(&notifier), &mut state, due + 900_000)
            .await
            .unwrap();
        assert!(again.is_none());
        // A restart forgets the state; the run issues nothing new.
        let mut fresh = CycleRunState::default();
        let after_restart =
            run_cycle_if_due(db, &jobs, Some(&notifier), &mut fresh, due + 1_800_000)
                .await
                .unwrap()
                .expect("runs again after a restart");
        assert!(after_restart.issued.is_empty());
        assert_eq!(after_restart.already_billed, vec!["c-job".to_owned()]);

        assert_eq!(db.billing().bills("c-job").await.unwrap().len(), 1);
        let msgs = db
            .billing()
            .user_messages("alice", "inapp", 0, 100)
            .await
            .unwrap();
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert_eq!(msgs[0].message.rule, "bill-issued");
        assert_eq!(msgs[0].status, MessageStatus::Sent);
        assert!(
            msgs[0].message.subject.contains("190.54")
                && msgs[0].message.subject.contains("2026-02-01 to 2026-02-28"),
            "{}",
            msgs[0].message.subject
        );
        assert_eq!(
            notifier
                .stats()
                .raise_failures
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    }

    /// A prepaid customer whose credit ran out gets one low-credit message from the prepaid
    /// pass, not one per pass.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prepaid_checks_raise_one_low_credit_warning_a_day() {
        use crate::billing::PrepaidState;
        let t = sqlite_db().await;
        let db = &t.db;
        put_tariff(db, GB_TARIFF).await;
        assign(db, "pre-job", "gb-single-rate", PaymentMode::Prepaid, false).await;
        let from = utc("2026-05-31T23:00:00Z");
        load_meter(
            db,
            "m-pre-job",
            "pre-job",
            "Europe/London",
            from,
            utc("2026-06-06T00:00:00Z"),
            |_| 250.0,
        )
        .await;
        db.billing()
            .put_prepaid(&PrepaidState {
                customer: "pre-job".into(),
                balance: "30.00".parse().unwrap(),
                debited_through_ms: from.timestamp_millis(),
                zero_credit_since_ms: None,
                warned_ms: None,
                disconnected_ms: None,
            })
            .await
            .unwrap();
        db.billing()
            .set_pref(&NotificationPref {
                username: "pat".into(),
                customer: Some("pre-job".into()),
                rule: "low-credit".into(),
                channel: "inapp".into(),
                target: String::new(),
                enabled: true,
            })
            .await
            .unwrap();
        let notifier = Notifier::new(db.clone(), NotifyConfig::default()).unwrap();
        // Friday 5 June 10:00 BST: about 7 a day since 1 June has used up the 30.00.
        let now = utc("2026-06-05T09:00:00Z").timestamp_millis();
        let outcomes = run_prepaid_checks(db, &jobs(), Some(&notifier), now)
            .await
            .unwrap();
        assert_eq!(outcomes.len(), 1);
        assert!(outcomes[0].warn, "{outcomes:?}");
        let again = run_prepaid_checks(db, &jobs(), Some(&notifier), now + 900_000)
            .await
            .unwrap();
        assert!(!again[0].warn, "{again:?}");
        let msgs = db
            .billing()
            .user_messages("pat", "inapp", 0, 100)
            .await
            .unwrap();
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert_eq!(msgs[0].message.rule, "low-credit");
        assert!(
            msgs[0].message.subject.starts_with("Low prepaid credit"),
            "{}",
            msgs[0].message.subject
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_switched_off_run_bills_nothing() {
        let t = sqlite_db().await;
        let db = &t.db;
        put_tariff(db, GB_TARIFF).await;
        assign(db, "c-off", "gb-single-rate", PaymentMode::Postpaid, false).await;
        let (from, to) = (utc("2026-02-01T00:00:00Z"), utc("2026-03-01T00:00:00Z"));
        load_meter(db, "m-off", "c-off", "Europe/London", from, to, |_| 250.0).await;
        let jobs = BillingJobs {
            cycle_run: None,
            ..jobs()
        };
        let mut state = CycleRunState::default();
        let due = utc("2026-03-02T00:00:00Z").timestamp_millis();
        assert!(
            run_cycle_if_due(db, &jobs, None, &mut state, due)
                .await
                .unwrap()
                .is_none()
        );
        assert!(db.billing().bills("c-off").await.unwrap().is_empty());
    }
}
