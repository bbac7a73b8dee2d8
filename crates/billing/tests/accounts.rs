//! Prepaid disconnection decisions and postpaid cycles, due and cut-off dates and arrears.

use billing::postpaid::{self, CutoffStatus, IssuedBill, Payment, PostpaidTerms};
use billing::prepaid::{self, PrepaidAccount, PrepaidAction, PrepaidPolicy, PrepaidReason};
use billing::{Cycle, HolidayCalendar};
use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use chrono_tz::America::Los_Angeles;

use crate::{d, dec, tariff};

fn policy() -> PrepaidPolicy {
    PrepaidPolicy {
        low_credit_threshold: dec("5.00"),
        grace_period: Duration::hours(24),
        disconnect_from: NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
        disconnect_until: NaiveTime::from_hms_opt(16, 0, 0).unwrap(),
    }
}

/// A local time in Los Angeles, the zone of the example tariff (holidays include Fri 3 July 2026).
fn la(y: i32, m: u32, day: u32, h: u32) -> DateTime<Utc> {
    Los_Angeles
        .with_ymd_and_hms(y, m, day, h, 0, 0)
        .unwrap()
        .with_timezone(&Utc)
}

fn exhausted(since: DateTime<Utc>) -> PrepaidAccount {
    PrepaidAccount {
        balance: dec("-0.40"),
        zero_credit_since: Some(since),
        protected: false,
    }
}

#[test]
fn credit_above_and_below_the_warning_threshold() {
    let t = tariff("us_commercial_tou_demand.toml");
    let ok = PrepaidAccount {
        balance: dec("12.00"),
        zero_credit_since: None,
        protected: false,
    };
    let decision = prepaid::decide(&policy(), &ok, &t, la(2026, 7, 7, 10)).unwrap();
    assert_eq!(decision.action, PrepaidAction::Continue);
    let low = PrepaidAccount {
        balance: dec("5.00"),
        ..ok
    };
    let decision = prepaid::decide(&policy(), &low, &t, la(2026, 7, 7, 10)).unwrap();
    assert_eq!(decision.action, PrepaidAction::WarnLowCredit);
    assert_eq!(
        decision.explanation(),
        "credit 5.00 is at or below the warning threshold 5.00"
    );
}

#[test]
fn zero_credit_disconnects_only_after_the_grace_period_on_a_business_day_in_hours() {
    let t = tariff("us_commercial_tou_demand.toml");
    // Credit ran out Monday 6 July 10:00; grace 24 h.
    let account = exhausted(la(2026, 7, 6, 10));
    let during = prepaid::decide(&policy(), &account, &t, la(2026, 7, 6, 15)).unwrap();
    assert_eq!(during.action, PrepaidAction::WarnLowCredit);
    assert!(matches!(
        during.reasons[1],
        PrepaidReason::InGracePeriod { .. }
    ));
    assert_eq!(during.earliest_disconnection, Some(la(2026, 7, 7, 10)));

    let after = prepaid::decide(&policy(), &account, &t, la(2026, 7, 7, 11)).unwrap();
    assert_eq!(after.action, PrepaidAction::Disconnect);
    assert_eq!(
        after.explanation(),
        "credit is exhausted (balance -0.40); grace period over on a business day within disconnection hours"
    );

    let evening = prepaid::decide(&policy(), &account, &t, la(2026, 7, 7, 17)).unwrap();
    assert_eq!(evening.action, PrepaidAction::WarnLowCredit);
    assert!(
        evening
            .explanation()
            .contains("local time 17:00 is outside disconnection hours 09:00-16:00"),
        "{}",
        evening.explanation()
    );
    assert_eq!(evening.earliest_disconnection, Some(la(2026, 7, 8, 9)));
}

#[test]
fn never_on_holidays_or_weekends_and_never_for_protected_customers() {
    let t = tariff("us_commercial_tou_demand.toml");
    // Credit ran out Tuesday 30 June; Friday 3 July is a holiday, then a weekend.
    let account = exhausted(la(2026, 6, 30, 8));
    let holiday = prepaid::decide(&policy(), &account, &t, la(2026, 7, 3, 10)).unwrap();
    assert_eq!(holiday.action, PrepaidAction::WarnLowCredit);
    assert!(
        holiday.explanation().contains("2026-07-03 is a holiday"),
        "{}",
        holiday.explanation()
    );
    assert_eq!(holiday.earliest_disconnection, Some(la(2026, 7, 6, 9)));
    let saturday = prepaid::decide(&policy(), &account, &t, la(2026, 7, 4, 10)).unwrap();
    assert!(
        saturday
            .explanation()
            .contains("2026-07-04 is a weekend day"),
        "{}",
        saturday.explanation()
    );
    assert_eq!(saturday.action, PrepaidAction::WarnLowCredit);

    let protected = PrepaidAccount {
        protected: true,
        ..account
    };
    let decision = prepaid::decide(&policy(), &protected, &t, la(2026, 7, 7, 11)).unwrap();
    assert_eq!(decision.action, PrepaidAction::WarnLowCredit);
    assert_eq!(decision.reasons[1], PrepaidReason::ProtectedCustomer);
    assert_eq!(decision.earliest_disconnection, None);
}

#[test]
fn an_unrecorded_zero_credit_time_starts_the_grace_period_now() {
    let t = tariff("us_commercial_tou_demand.toml");
    let account = PrepaidAccount {
        balance: dec("0"),
        zero_credit_since: None,
        protected: false,
    };
    let now = la(2026, 7, 7, 11);
    let decision = prepaid::decide(&policy(), &account, &t, now).unwrap();
    assert_eq!(decision.action, PrepaidAction::WarnLowCredit);
    assert_eq!(
        decision.reasons[1],
        PrepaidReason::InGracePeriod {
            until: now + Duration::hours(24)
        }
    );
}

#[test]
fn a_bad_policy_is_rejected() {
    let t = tariff("us_commercial_tou_demand.toml");
    let bad = PrepaidPolicy {
        disconnect_from: NaiveTime::from_hms_opt(17, 0, 0).unwrap(),
        ..policy()
    };
    let err =
        prepaid::decide(&bad, &exhausted(la(2026, 7, 1, 0)), &t, la(2026, 7, 7, 11)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "disconnect_from: 17:00:00 is not before disconnect_until 16:00:00"
    );
}

#[test]
fn postpaid_cycle_due_and_cutoff_dates() {
    let holidays = HolidayCalendar::new([d(2026, 5, 1)]);
    let terms = PostpaidTerms::new(15, 10, 7).unwrap();
    let cycle = terms.cycle_containing(d(2026, 4, 10));
    assert_eq!(cycle, Cycle::new(d(2026, 3, 15), d(2026, 4, 15)));
    assert_eq!(
        terms.cycle_containing(d(2026, 4, 15)),
        Cycle::new(d(2026, 4, 15), d(2026, 5, 15))
    );
    assert_eq!(
        terms.cycle_containing(d(2026, 1, 3)),
        Cycle::new(d(2025, 12, 15), d(2026, 1, 15))
    );
    // Last day 14 April + 10 days = Friday 24 April (a business day).
    assert_eq!(terms.due_date(&cycle, &holidays), d(2026, 4, 24));
    // 24 April + 7 days = Friday 1 May, a holiday, then the weekend: Monday 4 May.
    assert_eq!(terms.cutoff_date(&cycle, &holidays), d(2026, 5, 4));
    assert!(PostpaidTerms::new(31, 10, 7).is_err());
}

#[test]
fn arrears_settle_oldest_bills_first_and_drive_cutoff() {
    let bill = |m: u32, total: &str| IssuedBill {
        cycle: Cycle::new(d(2026, m, 1), d(2026, m + 1, 1)),
        total: dec(total),
        due_date: d(2026, m + 1, 15),
        cutoff_date: d(2026, m + 1, 25),
    };
    let bills = [bill(1, "100.00"), bill(2, "80.00"), bill(3, "90.00")];
    let payments = [
        Payment {
            date: d(2026, 2, 10),
            amount: dec("100.00"),
        },
        Payment {
            date: d(2026, 3, 20),
            amount: dec("30.00"),
        },
    ];

    // 20 March: January is paid, February (due 15 March) has 50.00 open → arrears, cut-off on 25 March.
    let status = postpaid::account_status(&bills[..2], &payments, d(2026, 3, 20)).unwrap();
    assert_eq!(status.balance, dec("50.00"));
    assert_eq!(status.arrears, dec("50.00"));
    assert_eq!(status.oldest_overdue, Some(bills[1].cycle));
    assert_eq!(status.cutoff, CutoffStatus::Scheduled(d(2026, 3, 25)));

    // 26 March: still unpaid past its cut-off date.
    let status = postpaid::account_status(&bills[..2], &payments, d(2026, 3, 26)).unwrap();
    assert_eq!(status.cutoff, CutoffStatus::Due(d(2026, 3, 25)));

    // 10 April with March billed (due 15 April): only February's 50.00 is in arrears.
    let status = postpaid::account_status(&bills, &payments, d(2026, 4, 10)).unwrap();
    assert_eq!(status.balance, dec("140.00"));
    assert_eq!(status.arrears, dec("50.00"));

    // Paying everything clears the arrears; a later payment is not counted before its date.
    let more = [
        payments[0],
        payments[1],
        Payment {
            date: d(2026, 4, 12),
            amount: dec("140.00"),
        },
    ];
    assert_eq!(
        postpaid::account_status(&bills, &more, d(2026, 4, 11))
            .unwrap()
            .arrears,
        dec("50.00")
    );
    let settled = postpaid::account_status(&bills, &more, d(2026, 4, 12)).unwrap();
    assert_eq!(
        (settled.balance, settled.arrears, settled.cutoff),
        (dec("0.00"), dec("0"), CutoffStatus::NotDue)
    );

    let bad = [Payment {
        date: d(2026, 4, 12),
        amount: dec("-1"),
    }];
    assert!(postpaid::account_status(&bills, &bad, d(2026, 4, 12)).is_err());
}
