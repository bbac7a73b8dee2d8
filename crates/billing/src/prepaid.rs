//! Prepaid accounts: debiting the credit balance for consumption at the tariff, and the
//! disconnection decision as a pure function that explains itself.

use std::fmt;

use chrono::{DateTime, Datelike, Duration, NaiveTime, Utc, Weekday};
use rust_decimal::Decimal;

use crate::calendar::{local, start_of_day};
use crate::error::{Error, Result};
use crate::rating::{BillingInput, bill_to_date};
use crate::tariff::Tariff;

/// The operator's rules for prepaid accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrepaidPolicy {
    /// At or below this balance the customer is warned.
    pub low_credit_threshold: Decimal,
    /// How long after credit reaches zero the supply stays on.
    pub grace_period: Duration,
    /// Local time from which a disconnection may happen on a business day (inclusive).
    pub disconnect_from: NaiveTime,
    /// Local time until which a disconnection may happen on a business day (exclusive).
    pub disconnect_until: NaiveTime,
}

impl PrepaidPolicy {
    fn check(&self) -> Result<()> {
        if self.low_credit_threshold.is_sign_negative() && !self.low_credit_threshold.is_zero() {
            return Err(Error::argument(
                "low_credit_threshold",
                "must not be negative",
            ));
        }
        if self.grace_period < Duration::zero() {
            return Err(Error::argument("grace_period", "must not be negative"));
        }
        if self.disconnect_from >= self.disconnect_until {
            return Err(Error::argument(
                "disconnect_from",
                format!(
                    "{} is not before disconnect_until {}",
                    self.disconnect_from, self.disconnect_until
                ),
            ));
        }
        Ok(())
    }
}

/// A prepaid account's state as the server stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrepaidAccount {
    /// Remaining credit in the tariff's currency.
    pub balance: Decimal,
    /// When the balance first reached zero or below (cleared on top-up); starts the grace period.
    pub zero_credit_since: Option<DateTime<Utc>>,
    /// Protected customers (medical equipment, vulnerable households) are never disconnected.
    pub protected: bool,
}

/// What to do with a prepaid supply now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrepaidAction {
    /// Nothing to do.
    Continue,
    /// Tell the customer credit is low or exhausted; keep the supply on.
    WarnLowCredit,
    /// Open the relay.
    Disconnect,
}

/// One reason behind a [`PrepaidDecision`], in the order the rules were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrepaidReason {
    /// The balance is above the warning threshold.
    CreditAvailable {
        balance: Decimal,
        threshold: Decimal,
    },
    /// The balance is positive but at or below the warning threshold.
    LowCredit {
        balance: Decimal,
        threshold: Decimal,
    },
    /// The balance is zero or negative.
    CreditExhausted { balance: Decimal },
    /// The grace period after credit ran out has not ended.
    InGracePeriod { until: DateTime<Utc> },
    /// The customer is protected from disconnection.
    ProtectedCustomer,
    /// Today is a holiday in the tariff's calendar.
    Holiday { date: chrono::NaiveDate },
    /// Today is a Saturday or Sunday.
    Weekend { date: chrono::NaiveDate },
    /// The local time is outside the hours disconnections are allowed.
    OutsideHours {
        local_time: NaiveTime,
        from: NaiveTime,
        until: NaiveTime,
    },
    /// Every condition for disconnection holds.
    DisconnectionAllowed,
}

impl fmt::Display for PrepaidReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrepaidReason::CreditAvailable { balance, threshold } => write!(
                f,
                "credit {balance} is above the warning threshold {threshold}"
            ),
            PrepaidReason::LowCredit { balance, threshold } => write!(
                f,
                "credit {balance} is at or below the warning threshold {threshold}"
            ),
            PrepaidReason::CreditExhausted { balance } => {
                write!(f, "credit is exhausted (balance {balance})")
            }
            PrepaidReason::InGracePeriod { until } => write!(
                f,
                "grace period runs until {}",
                until.format("%Y-%m-%d %H:%M UTC")
            ),
            PrepaidReason::ProtectedCustomer => {
                f.write_str("protected customer: never disconnected")
            }
            PrepaidReason::Holiday { date } => write!(f, "{date} is a holiday: no disconnections"),
            PrepaidReason::Weekend { date } => {
                write!(f, "{date} is a weekend day: no disconnections")
            }
            PrepaidReason::OutsideHours {
                local_time,
                from,
                until,
            } => {
                write!(
                    f,
                    "local time {} is outside disconnection hours {}-{}",
                    local_time.format("%H:%M"),
                    from.format("%H:%M"),
                    until.format("%H:%M")
                )
            }
            PrepaidReason::DisconnectionAllowed => {
                f.write_str("grace period over on a business day within disconnection hours")
            }
        }
    }
}

/// The decision and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrepaidDecision {
    /// What to do now.
    pub action: PrepaidAction,
    /// Why, in the order the rules were checked.
    pub reasons: Vec<PrepaidReason>,
    /// When the supply may be disconnected at the earliest if nothing changes (none for
    /// protected customers, for credit above zero, or beyond 60 days of holidays).
    pub earliest_disconnection: Option<DateTime<Utc>>,
}

impl PrepaidDecision {
    /// The reasons as one sentence.
    pub fn explanation(&self) -> String {
        self.reasons
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Decides what to do with a prepaid supply at `now`. Disconnection happens only when credit is
/// exhausted, the grace period is over, the customer is not protected, and `now` is a business
/// day (not a weekend or holiday of the tariff's calendar) within the policy's local hours.
pub fn decide(
    policy: &PrepaidPolicy,
    account: &PrepaidAccount,
    tariff: &Tariff,
    now: DateTime<Utc>,
) -> Result<PrepaidDecision> {
    policy.check()?;
    let threshold = policy.low_credit_threshold;
    let balance = account.balance;
    if balance > Decimal::ZERO {
        let (action, reason) = if balance > threshold {
            (
                PrepaidAction::Continue,
                PrepaidReason::CreditAvailable { balance, threshold },
            )
        } else {
            (
                PrepaidAction::WarnLowCredit,
                PrepaidReason::LowCredit { balance, threshold },
            )
        };
        return Ok(PrepaidDecision {
            action,
            reasons: vec![reason],
            earliest_disconnection: None,
        });
    }
    let mut reasons = vec![PrepaidReason::CreditExhausted { balance }];
    if account.protected {
        reasons.push(PrepaidReason::ProtectedCustomer);
        return Ok(PrepaidDecision {
            action: PrepaidAction::WarnLowCredit,
            reasons,
            earliest_disconnection: None,
        });
    }
    // Without a recorded start the grace period starts now: never cut off on the first look.
    let grace_end = account.zero_credit_since.unwrap_or(now) + policy.grace_period;
    let earliest = next_allowed(policy, tariff, grace_end.max(now));
    if now < grace_end || account.zero_credit_since.is_none() {
        reasons.push(PrepaidReason::InGracePeriod { until: grace_end });
        return Ok(PrepaidDecision {
            action: PrepaidAction::WarnLowCredit,
            reasons,
            earliest_disconnection: earliest,
        });
    }
    let l = local(tariff.time_zone, now);
    let date = l.date();
    if tariff.holidays.contains(date) {
        reasons.push(PrepaidReason::Holiday { date });
    } else if matches!(date.weekday(), Weekday::Sat | Weekday::Sun) {
        reasons.push(PrepaidReason::Weekend { date });
    } else if l.time() < policy.disconnect_from || l.time() >= policy.disconnect_until {
        reasons.push(PrepaidReason::OutsideHours {
            local_time: l.time(),
            from: policy.disconnect_from,
            until: policy.disconnect_until,
        });
    } else {
        reasons.push(PrepaidReason::DisconnectionAllowed);
        return Ok(PrepaidDecision {
            action: PrepaidAction::Disconnect,
            reasons,
            earliest_disconnection: Some(now),
        });
    }
    Ok(PrepaidDecision {
        action: PrepaidAction::WarnLowCredit,
        reasons,
        earliest_disconnection: earliest,
    })
}

/// The first instant at or after `t` on a business day within the disconnection hours.
fn next_allowed(
    policy: &PrepaidPolicy,
    tariff: &Tariff,
    t: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let tz = tariff.time_zone;
    let mut date = local(tz, t).date();
    for _ in 0..60 {
        if tariff.holidays.is_business_day(date) {
            let day_start = start_of_day(tz, date);
            // Wall-clock hours are offsets from the local day's start, which is exact except on
            // a DST day where the window itself straddles the shift (then it is off by the shift).
            let open = day_start + (policy.disconnect_from - NaiveTime::MIN);
            let close = day_start + (policy.disconnect_until - NaiveTime::MIN);
            let candidate = open.max(t);
            if candidate < close {
                return Some(candidate);
            }
        }
        date = date.succ_opt()?;
    }
    None
}

/// The result of charging consumption to a prepaid account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrepaidDebit {
    /// The amount taken from the balance (negative for a refund, e.g. after export credit).
    pub amount: Decimal,
    /// The balance after the debit.
    pub balance_after: Decimal,
    /// When credit first reached zero (kept if it already had, set to `now` if it just did).
    pub zero_credit_since: Option<DateTime<Utc>>,
}

/// Charges the consumption between `charged_until` and `now` at the tariff.
///
/// The amount is the increase of the cycle's bill to date: `bill_to_date(now).total -
/// bill_to_date(charged_until).total`. Charging by the difference of cumulative bills makes tier
/// blocks, time-of-use, daily fixed charges and taxes fall where the postpaid bill would put
/// them, and makes debits add up exactly to the cycle's bill whatever the debit schedule.
/// `input.readings` holds the cycle's readings up to `now`.
pub fn debit(
    tariff: &Tariff,
    input: &BillingInput,
    account: &PrepaidAccount,
    charged_until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<PrepaidDebit> {
    if charged_until > now {
        return Err(Error::argument("charged_until", "is after now"));
    }
    let after = bill_to_date(tariff, input, now)?;
    let mut earlier = input.clone();
    earlier.readings.retain(|r| r.end <= charged_until);
    let before = if charged_until <= start_of_day(tariff.time_zone, input.cycle.start) {
        None
    } else {
        Some(bill_to_date(tariff, &earlier, charged_until)?)
    };
    let amount = after.total - before.map_or(Decimal::ZERO, |b| b.total);
    let balance_after = account.balance - amount;
    let zero_credit_since = if balance_after > Decimal::ZERO {
        None
    } else {
        Some(account.zero_credit_since.unwrap_or(now))
    };
    Ok(PrepaidDebit {
        amount,
        balance_after,
        zero_credit_since,
    })
}
