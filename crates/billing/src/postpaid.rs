//! Postpaid accounts: billing cycles, due and cut-off dates, and arrears from issued bills and
//! payments (the "fecha de corte" a customer sees in seed 004's app).

use chrono::{Datelike, Duration, NaiveDate};
use rust_decimal::Decimal;

use crate::bill::Cycle;
use crate::calendar::HolidayCalendar;
use crate::error::{Error, Result};

/// The terms of a postpaid contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostpaidTerms {
    /// Day of the month each cycle starts (1..=28, so every month has it).
    pub cycle_start_day: u32,
    /// Days after the cycle's last day by which the bill must be paid.
    pub due_after_days: u32,
    /// Days after the due date an unpaid bill may lead to cut-off.
    pub cutoff_after_due_days: u32,
}

impl PostpaidTerms {
    /// Terms with checked values.
    pub fn new(
        cycle_start_day: u32,
        due_after_days: u32,
        cutoff_after_due_days: u32,
    ) -> Result<PostpaidTerms> {
        if !(1..=28).contains(&cycle_start_day) {
            return Err(Error::argument(
                "cycle_start_day",
                format!("{cycle_start_day} is not within 1..=28"),
            ));
        }
        if due_after_days > 120 || cutoff_after_due_days > 365 {
            return Err(Error::argument(
                "due_after_days",
                "due and cut-off delays above 120/365 days are not plausible",
            ));
        }
        Ok(PostpaidTerms {
            cycle_start_day,
            due_after_days,
            cutoff_after_due_days,
        })
    }

    /// The monthly cycle that contains `date`.
    pub fn cycle_containing(&self, date: NaiveDate) -> Cycle {
        let day = self.cycle_start_day;
        let this_month = NaiveDate::from_ymd_opt(date.year(), date.month(), day).unwrap_or(date);
        let start = if date >= this_month {
            this_month
        } else {
            add_months(this_month, -1)
        };
        Cycle::new(start, add_months(start, 1))
    }

    /// The due date: `due_after_days` after the cycle's last day, moved to the next business day.
    pub fn due_date(&self, cycle: &Cycle, calendar: &HolidayCalendar) -> NaiveDate {
        let last_day = cycle.end - Duration::days(1);
        next_business_day(
            last_day + Duration::days(i64::from(self.due_after_days)),
            calendar,
        )
    }

    /// The cut-off date: `cutoff_after_due_days` after the due date, moved to the next business day.
    pub fn cutoff_date(&self, cycle: &Cycle, calendar: &HolidayCalendar) -> NaiveDate {
        let due = self.due_date(cycle, calendar);
        next_business_day(
            due + Duration::days(i64::from(self.cutoff_after_due_days)),
            calendar,
        )
    }
}

fn add_months(date: NaiveDate, months: i32) -> NaiveDate {
    let total = date.year() * 12 + date.month0() as i32 + months;
    NaiveDate::from_ymd_opt(
        total.div_euclid(12),
        total.rem_euclid(12) as u32 + 1,
        date.day(),
    )
    .unwrap_or(date)
}

fn next_business_day(mut date: NaiveDate, calendar: &HolidayCalendar) -> NaiveDate {
    // A year of consecutive holidays does not exist; the bound only keeps the loop finite.
    for _ in 0..366 {
        if calendar.is_business_day(date) {
            return date;
        }
        date += Duration::days(1);
    }
    date
}

/// A bill as issued to a postpaid customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedBill {
    /// The cycle billed.
    pub cycle: Cycle,
    /// The bill's total (this cycle's charges, without the previous balance).
    pub total: Decimal,
    /// When it must be paid.
    pub due_date: NaiveDate,
    /// When an unpaid bill may lead to cut-off.
    pub cutoff_date: NaiveDate,
}

/// A payment received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payment {
    /// The local date it was received.
    pub date: NaiveDate,
    /// The amount (positive).
    pub amount: Decimal,
}

/// Whether an account is due for cut-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutoffStatus {
    /// Nothing is overdue.
    NotDue,
    /// A bill is overdue; cut-off may happen from this date if it stays unpaid.
    Scheduled(NaiveDate),
    /// A bill has stayed unpaid past its cut-off date.
    Due(NaiveDate),
}

/// An account's position on a date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountStatus {
    /// All bills minus all payments up to the date (negative: credit in the customer's favour).
    pub balance: Decimal,
    /// The unpaid part of bills whose due date has passed.
    pub arrears: Decimal,
    /// The oldest bill with an unpaid part past its due date.
    pub oldest_overdue: Option<Cycle>,
    /// The cut-off position.
    pub cutoff: CutoffStatus,
}

/// The account's position on `today`. Payments (those dated up to `today`) settle the oldest
/// bills first; a bill is in arrears from the day after its due date.
pub fn account_status(
    bills: &[IssuedBill],
    payments: &[Payment],
    today: NaiveDate,
) -> Result<AccountStatus> {
    for (i, p) in payments.iter().enumerate() {
        if p.amount <= Decimal::ZERO {
            return Err(Error::argument(
                format!("payments[{i}]"),
                format!("amount {} is not positive", p.amount),
            ));
        }
    }
    let mut ordered: Vec<&IssuedBill> = bills.iter().collect();
    ordered.sort_by_key(|b| (b.due_date, b.cycle.start));
    let mut paid: Decimal = payments
        .iter()
        .filter(|p| p.date <= today)
        .map(|p| p.amount)
        .sum();
    let billed: Decimal = bills.iter().map(|b| b.total).sum();
    let balance = billed - paid;
    let mut arrears = Decimal::ZERO;
    let mut oldest: Option<&IssuedBill> = None;
    for b in ordered {
        let settled = paid.min(b.total).max(Decimal::ZERO);
        paid -= settled;
        let open = b.total - settled;
        if open > Decimal::ZERO && today > b.due_date {
            arrears += open;
            oldest.get_or_insert(b);
        }
    }
    let cutoff = match oldest {
        None => CutoffStatus::NotDue,
        Some(b) if today >= b.cutoff_date => CutoffStatus::Due(b.cutoff_date),
        Some(b) => CutoffStatus::Scheduled(b.cutoff_date),
    };
    Ok(AccountStatus {
        balance,
        arrears,
        oldest_overdue: oldest.map(|b| b.cycle),
        cutoff,
    })
}
