//! Bill runs, re-rating, projections, payments and prepaid decisions from real stored rollups,
//! on SQLite and on PostgreSQL (a random schema per test, dropped afterwards; under `CI=true`
//! an unreachable PostgreSQL is a failure, not a skip).

use billing::prepaid::PrepaidAction;
use billing::{Cycle, LineKind};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;
use schema::{Body, EnergyCounters, MeterId, Phase, PhaseReading, Reading, Record, TotalReading};

use super::*;
use crate::{BatchWrite, Customer, Meter, WriteSet};

pub(crate) const GB_TARIFF: &str = include_str!("../../../billing/testdata/gb_single_rate.toml");

/// A database for one test, removed when dropped.
pub(crate) use crate::store::suite::TestDatabase as TestDb;

pub(crate) async fn sqlite_db() -> TestDb {
    crate::store::suite::sqlite_database("wattline-billing").await
}

/// `None` (with a message) when PostgreSQL is unreachable outside CI; a failure under `CI=true`.
pub(crate) async fn pg_db() -> Option<TestDb> {
    crate::store::suite::postgres_database("wl_billing").await
}

/// Runs a test body on SQLite and on PostgreSQL.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let t = super::sqlite_db().await;
                    super::$name(&t.db).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(t) = super::pg_db().await else { return };
                    super::$name(&t.db).await;
                }
            )*
        }
    };
}

both_backends!(
    golden_bill_from_stored_rollups_across_a_dst_month,
    bill_runs_are_idempotent_and_rerating_is_too,
    projection_converges_to_the_final_bill,
    payments_settle_bills_oldest_first,
    prepaid_disconnects_only_after_grace_and_never_protected,
    store_round_trips_tariffs_prefs_and_messages,
);

pub(crate) fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).expect("test date")
}

pub(crate) fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test time")
        .with_timezone(&Utc)
}

pub(crate) fn reading(import_wh: f64, export_wh: f64, p_w: f64, v_rms: f64) -> Reading {
    Reading {
        interval_s: 900.0,
        freq_hz: 50.0,
        phases: vec![PhaseReading {
            phase: Phase::A,
            v_rms,
            i_rms: p_w.abs() / v_rms,
            p_w,
            q_var: None,
            s_va: p_w.abs(),
            pf: 1.0,
            v_thd_pct: Some(2.0),
            i_thd_pct: None,
        }],
        total: TotalReading {
            p_w,
            q_var: None,
            s_va: p_w.abs(),
            pf: 1.0,
        },
        counters: EnergyCounters {
            import_wh,
            export_wh,
            ..Default::default()
        },
    }
}

/// Enrols a meter for `customer` and stores a reading every 15 minutes over `[from, to)` whose
/// counter grows by `wh_per_quarter(t)`; then computes the rollups as ingest would.
pub(crate) async fn load_meter(
    db: &Database,
    meter: &str,
    customer: &str,
    tz: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    wh_per_quarter: impl Fn(DateTime<Utc>) -> f64,
) -> f64 {
    let store = db.store();
    store
        .upsert_customer(&Customer {
            id: customer.into(),
            name: format!("Customer {customer}"),
            time_zone: tz.into(),
        })
        .await
        .expect("customer");
    let mut m = Meter::new(
        MeterId::parse(meter).expect("meter id"),
        format!("{meter}.key"),
    );
    m.time_zone = tz.into();
    m.customer = Some(customer.into());
    m.site = Some("feeder-1".into());
    m.reporting_interval_s = 900;
    store.upsert_meter(&m).await.expect("meter");
    let mut counter = 1_000.0;
    let mut total = 0.0;
    let mut records = vec![Record {
        seq: 1,
        t_ms: from.timestamp_millis(),
        body: Body::Reading(reading(counter, 0.0, 0.0, 230.0)),
    }];
    let mut t = from;
    while t < to {
        let e = wh_per_quarter(t);
        counter += e;
        total += e;
        t += Duration::minutes(15);
        records.push(Record {
            seq: records.len() as u64 + 1,
            t_ms: t.timestamp_millis(),
            body: Body::Reading(reading(counter, 0.0, e * 4.0, 230.0)),
        });
    }
    for chunk in records.chunks(500) {
        store
            .write(&WriteSet {
                batches: vec![BatchWrite {
                    meter: m.id.clone(),
                    boot_id: 1,
                    records: chunk.to_vec(),
                    received_ms: crate::now_ms(),
                    clock_drift_ms: None,
                    source: format!("wattline/v1/m/{meter}/up"),
                }],
                quarantine: vec![],
            })
            .await
            .expect("write readings");
    }
    crate::rollup::refresh_dirty(store.as_ref())
        .await
        .expect("rollups");
    total
}

pub(crate) async fn put_tariff(db: &Database, toml: &str) -> i64 {
    let t = Tariff::from_toml(toml).expect("test tariff");
    db.billing()
        .put_tariff(t.id(), t.name(), t.currency().code(), toml, "admin", 1)
        .await
        .expect("put tariff")
}

pub(crate) async fn assign(
    db: &Database,
    customer: &str,
    tariff: &str,
    mode: PaymentMode,
    protected: bool,
) {
    db.billing()
        .assign_tariff(&TariffAssignment {
            customer: customer.into(),
            valid_from: d(2026, 1, 1),
            tariff_id: tariff.into(),
            payment_mode: mode,
            protected,
        })
        .await
        .expect("assign");
}

fn dec(s: &str) -> Decimal {
    s.parse().expect("decimal")
}

/// The billing crate's golden GB bill (crates/billing/tests/golden.rs: 15 March - 15 April
/// 2026, 500 Wh every hour, Europe/London, BST starting on 29 March, a price change on 1 April)
/// rebuilt from readings stored every 15 minutes and their rollups.
async fn golden_bill_from_stored_rollups_across_a_dst_month(db: &Database) {
    put_tariff(db, GB_TARIFF).await;
    assign(db, "gb-1", "gb-single-rate", PaymentMode::Postpaid, false).await;
    let cycle = Cycle::new(d(2026, 3, 15), d(2026, 4, 15));
    // Local midnight in London: GMT on 15 March, BST on 15 April.
    let (from, to) = (utc("2026-03-15T00:00:00Z"), utc("2026-04-14T23:00:00Z"));
    let total = load_meter(db, "gb-meter", "gb-1", "Europe/London", from, to, |_| 125.0).await;
    assert_eq!(total, 371_500.0, "23-hour day included");
    let report = run_cycle(db, &BillingConfig::default(), cycle, 42)
        .await
        .unwrap();
    assert_eq!(report.issued.len(), 1, "{report:?}");
    let bill = &report.issued[0];
    let amounts: Vec<(String, String)> = bill
        .lines
        .iter()
        .map(|l| (l.kind.clone(), l.amount.to_string()))
        .collect();
    let expect = |k: LineKind, a: &str| (k.as_str().to_owned(), a.to_owned());
    assert_eq!(
        amounts,
        vec![
            expect(LineKind::Energy, "49.86"),
            expect(LineKind::Fixed, "10.22"),
            expect(LineKind::Tax, "3.00"),
            expect(LineKind::Energy, "43.23"),
            expect(LineKind::Fixed, "7.53"),
            expect(LineKind::Tax, "2.54"),
        ]
    );
    assert_eq!(bill.lines[0].quantity, dec("203.5"));
    assert_eq!(bill.subtotal, dec("110.84"));
    assert_eq!(bill.taxes, dec("5.54"));
    assert_eq!(bill.total, dec("116.38"));
    assert_eq!(bill.import_wh, 371_500);
    // The stored copy reads back identically (decimal TEXT / NUMERIC, never floats).
    let stored = db.billing().bill(&bill.id).await.unwrap().unwrap();
    assert_eq!(&stored, bill);
    assert_eq!(bill.id.len(), 32);
    // And equals the billing crate rating the same consumption directly.
    let t = Tariff::from_toml(GB_TARIFF).unwrap();
    let direct: Vec<IntervalReading> = (0..)
        .map(|h| from + Duration::hours(h))
        .take_while(|s| *s < to)
        .map(|s| IntervalReading {
            start: s,
            end: s + Duration::hours(1),
            import_wh: 500,
            export_wh: 0,
        })
        .collect();
    let crate_bill = billing::rate_cycle(
        &t,
        &BillingInput {
            account: "gb-1".into(),
            cycle,
            readings: direct,
            credit_carried_in_wh: 0,
            previous_balance: Decimal::ZERO,
            payments: Decimal::ZERO,
        },
    )
    .unwrap();
    assert_eq!(crate_bill.total, bill.total);
    assert_eq!(crate_bill.lines.len(), bill.lines.len());
}

async fn bill_runs_are_idempotent_and_rerating_is_too(db: &Database) {
    put_tariff(db, GB_TARIFF).await;
    assign(db, "c-1", "gb-single-rate", PaymentMode::Postpaid, false).await;
    let (from, to) = (utc("2026-02-01T00:00:00Z"), utc("2026-03-01T00:00:00Z"));
    load_meter(db, "m-rerate", "c-1", "Europe/London", from, to, |_| 250.0).await;
    let cycle = Cycle::new(d(2026, 2, 1), d(2026, 3, 1));
    let first = run_cycle(db, &BillingConfig::default(), cycle, 1)
        .await
        .unwrap();
    assert_eq!(first.issued.len(), 1);
    let again = run_cycle(db, &BillingConfig::default(), cycle, 2)
        .await
        .unwrap();
    assert!(again.issued.is_empty());
    assert_eq!(again.already_billed, vec!["c-1".to_owned()]);
    let bill = &first.issued[0];
    // 28 days × 24 kWh = 672 kWh × 0.2450 = 164.64; 28 × 0.6010 = 16.828 → 16.83; VAT 5 % of
    // 181.47 = 9.0735 → 9.07; total 190.54.
    assert_eq!(bill.total, dec("190.54"));

    // Nothing to do while the tariff is unchanged.
    let r = rerate_bill(db, &bill.id, 3).await.unwrap();
    assert!(!r.changed);

    // A correction: the unit rate was 0.2350, not 0.2450.
    let corrected = GB_TARIFF.replacen("price_per_kwh = 0.2450", "price_per_kwh = 0.2350", 1);
    assert_eq!(put_tariff(db, &corrected).await, 2);
    let r = rerate_tariff(db, "gb-single-rate", 4).await.unwrap();
    assert_eq!(r.len(), 1);
    assert!(r[0].changed);
    // VAT is rounded once on the re-rated subtotal, not on the difference: 672 × 0.2350 = 157.92
    // plus the standing charge 16.83 = 174.75; VAT 5 % = 8.7375 → 8.74; total 183.49, which is
    // 7.05 less than the 190.54 first issued (6.72 energy and 0.33 VAT after rounding).
    assert_eq!(r[0].bill.total, dec("183.49"));
    assert_eq!(r[0].difference, dec("-7.05"));
    assert_eq!(r[0].bill.adjustments, dec("-7.05"));
    // Idempotent: the same revision again changes nothing.
    let r2 = rerate_tariff(db, "gb-single-rate", 5).await.unwrap();
    assert!(!r2[0].changed);
    let stored = db.billing().bill(&bill.id).await.unwrap().unwrap();
    assert_eq!(stored.total, dec("183.49"));
    assert_eq!(stored.tariff_revision, 2);
    assert_eq!(stored.adjustments, dec("-7.05"));
    let total_lines: Decimal = stored.lines.iter().map(|l| l.amount).sum();
    assert_eq!(total_lines, stored.total);
}

async fn projection_converges_to_the_final_bill(db: &Database) {
    put_tariff(db, GB_TARIFF).await;
    assign(db, "p-1", "gb-single-rate", PaymentMode::Postpaid, false).await;
    let (from, to) = (
        utc("2026-05-01T00:00:00Z") - Duration::hours(1),
        utc("2026-06-01T00:00:00Z") - Duration::hours(1),
    );
    // Weekday evenings use more than nights and weekends: the projection has to learn it.
    load_meter(db, "m-proj", "p-1", "Europe/London", from, to, |t| {
        use chrono::{Datelike, Timelike};
        let evening = (17..22).contains(&t.hour());
        let weekend = t.weekday().number_from_monday() >= 6;
        match (evening, weekend) {
            (true, false) => 400.0,
            (true, true) => 300.0,
            _ => 60.0 + (t.day() % 3) as f64 * 10.0,
        }
    })
    .await;
    let cycle = Cycle::new(d(2026, 5, 1), d(2026, 6, 1));
    let final_bill = bill_customer(db, &BillingConfig::default(), "p-1", cycle, 1)
        .await
        .unwrap()
        .unwrap();
    let mut errors = Vec::new();
    for as_of in [
        utc("2026-05-08T12:00:00Z"),
        utc("2026-05-22T12:00:00Z"),
        utc("2026-05-31T12:00:00Z"),
    ] {
        let live = live_bill_for(db, "p-1", cycle, as_of).await.unwrap();
        assert!(live.to_date.total < final_bill.total);
        errors.push((live.projected.unwrap().total - final_bill.total).abs());
    }
    // Close to the end the projection is within 2 % and closer than after one week.
    assert!(errors[2] <= final_bill.total * dec("0.02"), "{errors:?}");
    assert!(errors[2] <= errors[0], "{errors:?}");
    // At the cycle's end the projection is the bill.
    let end = billing::start_of_day(chrono_tz::Europe::London, cycle.end);
    let live = live_bill_for(db, "p-1", cycle, end).await.unwrap();
    assert_eq!(live.projected.unwrap().total, final_bill.total);
    assert_eq!(live.to_date.total, final_bill.total);
}

async fn payments_settle_bills_oldest_first(db: &Database) {
    put_tariff(db, GB_TARIFF).await;
    assign(db, "s-1", "gb-single-rate", PaymentMode::Postpaid, false).await;
    let (from, to) = (utc("2026-01-01T00:00:00Z"), utc("2026-03-01T00:00:00Z"));
    load_meter(db, "m-settle", "s-1", "Europe/London", from, to, |_| 100.0).await;
    let jan = bill_customer(
        db,
        &BillingConfig::default(),
        "s-1",
        Cycle::new(d(2026, 1, 1), d(2026, 2, 1)),
        1,
    )
    .await
    .unwrap()
    .unwrap();
    let feb = bill_customer(
        db,
        &BillingConfig::default(),
        "s-1",
        Cycle::new(d(2026, 2, 1), d(2026, 3, 1)),
        1,
    )
    .await
    .unwrap()
    .unwrap();
    // 31 January + 14 days is Saturday 14 February: due on the next business day.
    assert_eq!(jan.due_date, d(2026, 2, 16));
    let p = record_payment(
        db,
        &NewPayment {
            customer: "s-1".into(),
            amount: jan.total,
            method: "bank-transfer".into(),
            reference: "TX-1".into(),
            received_ms: 5,
            recorded_by: "operator".into(),
        },
    )
    .await
    .unwrap();
    assert!(p.id > 0);
    let bal = settle(db, "s-1", d(2026, 3, 20)).await.unwrap();
    assert_eq!(bal.balance, feb.total);
    assert_eq!(bal.paid, jan.total);
    let status = |id: &str| {
        let id = id.to_owned();
        async move { db.billing().bill(&id).await.unwrap().unwrap().status }
    };
    assert_eq!(status(&jan.id).await, BillState::Paid);
    assert_eq!(
        status(&feb.id).await,
        BillState::Overdue,
        "due 16 March, not paid by the 20th"
    );
    let payments = db.billing().payments("s-1").await.unwrap();
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].payment.amount, jan.total);
    assert!(
        record_payment(
            db,
            &NewPayment {
                amount: Decimal::ZERO,
                ..payments[0].payment.clone()
            }
        )
        .await
        .is_err()
    );
}

async fn prepaid_disconnects_only_after_grace_and_never_protected(db: &Database) {
    put_tariff(db, GB_TARIFF).await;
    assign(db, "pre-1", "gb-single-rate", PaymentMode::Prepaid, false).await;
    assign(db, "pre-2", "gb-single-rate", PaymentMode::Prepaid, true).await;
    let (from, to) = (
        utc("2026-06-01T00:00:00Z") - Duration::hours(1),
        utc("2026-06-10T00:00:00Z"),
    );
    load_meter(db, "m-pre-1", "pre-1", "Europe/London", from, to, |_| 250.0).await;
    load_meter(db, "m-pre-2", "pre-2", "Europe/London", from, to, |_| 250.0).await;
    for c in ["pre-1", "pre-2"] {
        db.billing()
            .put_prepaid(&PrepaidState {
                customer: c.into(),
                balance: dec("30.00"),
                debited_through_ms: from.timestamp_millis(),
                zero_credit_since_ms: None,
                warned_ms: None,
                disconnected_ms: None,
            })
            .await
            .unwrap();
    }
    let config = BillingConfig::default();
    // Tuesday 2 June 10:00 BST: 24 kWh a day at 0.2573 plus standing charge and VAT is about
    // 7.05 a day, so 30.00 lasts past Wednesday but is low.
    let o = prepaid_check(db, &config, "pre-1", utc("2026-06-02T09:00:00Z"))
        .await
        .unwrap();
    assert_eq!(o.action, PrepaidAction::Continue, "{}", o.explanation);
    // Friday 5 June 10:00 BST: credit gone since Thursday evening: inside the 48 h grace.
    let o = prepaid_check(db, &config, "pre-1", utc("2026-06-05T09:00:00Z"))
        .await
        .unwrap();
    assert!(o.balance <= Decimal::ZERO, "{o:?}");
    assert_eq!(o.action, PrepaidAction::WarnLowCredit, "{}", o.explanation);
    assert!(o.warn);
    assert!(o.commands.is_empty());
    // Monday 8 June 10:00 BST: grace over on a business day within hours → disconnect.
    let o = prepaid_check(db, &config, "pre-1", utc("2026-06-08T09:00:00Z"))
        .await
        .unwrap();
    assert_eq!(o.action, PrepaidAction::Disconnect, "{}", o.explanation);
    assert_eq!(o.commands.len(), 1);
    let meter = MeterId::parse("m-pre-1").unwrap();
    let cmds = db.store().commands(&meter, None).await.unwrap();
    assert_eq!(cmds.len(), 1);
    assert_eq!(cmds[0].command.action, schema::Action::RelayDisconnect);
    assert!(
        cmds[0]
            .command
            .reason
            .starts_with("prepaid credit exhausted"),
        "{}",
        cmds[0].command.reason
    );
    assert_eq!(cmds[0].command.issued_by, "system");
    assert!(
        !db.store()
            .command_audit(cmds[0].id)
            .await
            .unwrap()
            .is_empty(),
        "audited"
    );
    // The next run does not queue a second disconnection.
    let o = prepaid_check(db, &config, "pre-1", utc("2026-06-08T09:30:00Z"))
        .await
        .unwrap();
    assert!(o.commands.is_empty());
    // The protected customer is never disconnected.
    let o = prepaid_check(db, &config, "pre-2", utc("2026-06-08T09:00:00Z"))
        .await
        .unwrap();
    assert_ne!(o.action, PrepaidAction::Disconnect, "{}", o.explanation);
    let meter2 = MeterId::parse("m-pre-2").unwrap();
    assert!(db.store().commands(&meter2, None).await.unwrap().is_empty());
    // Debits add up: what pre-2 was charged equals its bill to date.
    let state = db.billing().prepaid("pre-2").await.unwrap().unwrap();
    let ct = customer_tariff(db, "pre-2", d(2026, 6, 8)).await.unwrap();
    let cycle = Cycle::new(d(2026, 6, 1), d(2026, 7, 1));
    let input = cycle_input(
        db,
        "pre-2",
        &ct.tariff,
        cycle,
        Some(utc("2026-06-08T09:00:00Z")),
    )
    .await
    .unwrap();
    let to_date = billing::bill_to_date(&ct.tariff, &input, utc("2026-06-08T09:00:00Z")).unwrap();
    assert_eq!(dec("30.00") - state.balance, to_date.total);
    // A top-up clears the zero-credit mark.
    record_payment(
        db,
        &NewPayment {
            customer: "pre-2".into(),
            amount: dec("100"),
            method: "mobile-money".into(),
            reference: "MM-7".into(),
            received_ms: 9,
            recorded_by: "operator".into(),
        },
    )
    .await
    .unwrap();
    let state = db.billing().prepaid("pre-2").await.unwrap().unwrap();
    assert!(state.balance > Decimal::ZERO);
    assert_eq!(state.zero_credit_since_ms, None);
}

async fn store_round_trips_tariffs_prefs_and_messages(db: &Database) {
    let b = db.billing();
    assert_eq!(put_tariff(db, GB_TARIFF).await, 1);
    assert_eq!(put_tariff(db, GB_TARIFF).await, 2);
    assert_eq!(b.tariff_revisions("gb-single-rate").await.unwrap().len(), 2);
    assert_eq!(
        b.tariff("gb-single-rate").await.unwrap().unwrap().revision,
        2
    );
    assert_eq!(b.tariffs().await.unwrap().len(), 1);
    assert!(b.tariff("nope").await.unwrap().is_none());
    let pref = NotificationPref {
        username: "ann".into(),
        customer: Some("c-9".into()),
        rule: "overload".into(),
        channel: "email".into(),
        target: "ann@example.org".into(),
        enabled: true,
    };
    b.set_pref(&pref).await.unwrap();
    b.set_pref(&NotificationPref {
        enabled: false,
        ..pref.clone()
    })
    .await
    .unwrap();
    assert!(b.prefs_for_rule("overload").await.unwrap().is_empty());
    b.set_pref(&pref).await.unwrap();
    assert_eq!(
        b.prefs_for_rule("overload").await.unwrap(),
        vec![pref.clone()]
    );
    let m = NewMessage {
        username: "ann".into(),
        customer: Some("c-9".into()),
        rule: "overload".into(),
        channel: "email".into(),
        target: "ann@example.org".into(),
        incident: "meter:x:overload".into(),
        subject: "s".into(),
        body: "b".into(),
        created_ms: 100,
    };
    let id = b.add_message(&m, MessageStatus::Pending).await.unwrap();
    let pending = b
        .messages_with_status(MessageStatus::Pending, 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].message, m);
    b.finish_message(id, MessageStatus::Failed, Some("boom"), 200)
        .await
        .unwrap();
    let got = b.user_messages("ann", "email", 0, 10).await.unwrap();
    assert_eq!(got[0].status, MessageStatus::Failed);
    assert_eq!(got[0].attempts, 1);
    assert_eq!(got[0].error.as_deref(), Some("boom"));
    assert_eq!(got[0].done_ms, Some(200));
    assert!(b.bill("0123").await.unwrap().is_none());
    assert!(b.set_bill_status("0123", BillState::Paid).await.is_err());
}

#[test]
fn stored_lines_keep_the_crate_kinds_and_units() {
    let t = Tariff::from_toml(GB_TARIFF).unwrap();
    let start = utc("2026-02-01T00:00:00Z");
    let bill = billing::rate_cycle(
        &t,
        &BillingInput {
            account: "x".into(),
            cycle: Cycle::new(d(2026, 2, 1), d(2026, 2, 2)),
            readings: vec![IntervalReading {
                start,
                end: start + Duration::hours(1),
                import_wh: 1000,
                export_wh: 0,
            }],
            credit_carried_in_wh: 0,
            previous_balance: Decimal::ZERO,
            payments: Decimal::ZERO,
        },
    )
    .unwrap();
    let lines = stored_lines(&bill);
    assert_eq!(lines[0].kind, "energy");
    assert_eq!(lines[0].unit, "kWh");
    assert_eq!(lines.iter().map(|l| l.amount).sum::<Decimal>(), bill.total);
    let _ = TimeZone::timestamp_millis_opt(&Utc, 0);
}
