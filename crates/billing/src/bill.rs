//! Bills: itemised lines, totals, balances, and CSV rendering.

use std::fmt::{self, Write as _};

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::money::Currency;

/// What a bill line charges for. Percentage taxes name these kinds in `applies_to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LineKind {
    /// Imported energy (flat, per block, or per time-of-use period).
    Energy,
    /// Maximum 15-minute demand.
    Demand,
    /// Fixed daily or monthly charges.
    Fixed,
    /// Export: gross-metering sales, paid excess export, carried-over credit applied (credits are negative).
    Export,
    /// Fixed levies (per kWh, per day, per bill); part of the taxes total.
    Levy,
    /// Percentage taxes; part of the taxes total.
    Tax,
    /// A correction of an earlier bill after re-rating.
    Adjustment,
}

impl LineKind {
    /// Whether the line counts towards the taxes total rather than the subtotal.
    pub fn is_tax(self) -> bool {
        matches!(self, LineKind::Levy | LineKind::Tax)
    }

    /// The lowercase name used in tariff files and CSV.
    pub fn as_str(self) -> &'static str {
        match self {
            LineKind::Energy => "energy",
            LineKind::Demand => "demand",
            LineKind::Fixed => "fixed",
            LineKind::Export => "export",
            LineKind::Levy => "levy",
            LineKind::Tax => "tax",
            LineKind::Adjustment => "adjustment",
        }
    }
}

impl fmt::Display for LineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The unit of a line's quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    /// Kilowatt-hours.
    Kwh,
    /// Kilowatts (15-minute average demand).
    Kw,
    /// Local days.
    Day,
    /// Calendar months (fractions for partial months).
    Month,
    /// Whole bills (levies per bill; fractions when a tariff change splits the cycle).
    Bill,
    /// An amount of money (the base of a percentage tax; its unit price is the rate as a fraction).
    Money,
}

impl Unit {
    /// The unit's symbol as printed on bills.
    pub fn symbol(self) -> &'static str {
        match self {
            Unit::Kwh => "kWh",
            Unit::Kw => "kW",
            Unit::Day => "day",
            Unit::Month => "month",
            Unit::Bill => "bill",
            Unit::Money => "money",
        }
    }
}

/// One itemised line: `amount` is `quantity × unit_price` rounded once to the currency's minor unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillLine {
    /// What the line charges for.
    pub kind: LineKind,
    /// Human-readable description (period name, block, tariff version).
    pub description: String,
    /// The quantity charged.
    pub quantity: Decimal,
    /// The unit of `quantity`.
    pub unit: Unit,
    /// Price per unit (for percentage taxes: the rate as a fraction, 0.16 for 16 %).
    pub unit_price: Decimal,
    /// `quantity × unit_price` before rounding.
    pub exact_amount: Decimal,
    /// The amount charged, rounded to the minor unit with the tariff's rule.
    pub amount: Decimal,
}

/// Whether a bill is final, to date, or a projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillStatus {
    /// The bill for a whole, finished cycle.
    Final,
    /// Charges for the consumption known up to `as_of`, fixed charges through `as_of`'s local day.
    ToDate {
        /// The instant up to which consumption is known.
        as_of: DateTime<Utc>,
    },
    /// The whole cycle with the rest of the consumption estimated (see [`crate::project`]).
    Projected {
        /// The instant up to which consumption is known.
        as_of: DateTime<Utc>,
    },
}

/// The billing cycle: local dates `[start, end)` in the tariff's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cycle {
    /// First local date of the cycle.
    pub start: NaiveDate,
    /// The local date after the last one (exclusive end).
    pub end: NaiveDate,
}

impl Cycle {
    /// A cycle of local dates `[start, end)`.
    pub fn new(start: NaiveDate, end: NaiveDate) -> Cycle {
        Cycle { start, end }
    }

    /// Number of local days in the cycle.
    pub fn days(&self) -> i64 {
        (self.end - self.start).num_days()
    }
}

impl fmt::Display for Cycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// Energy figures behind a bill, for display and for the next cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EnergySummary {
    /// Total measured import in the period rated.
    pub import_wh: u64,
    /// Total measured export in the period rated.
    pub export_wh: u64,
    /// Import billed after netting and after carried-in credit.
    pub billed_import_wh: u64,
    /// Carried-over export credit used on this bill.
    pub credit_used_wh: u64,
    /// Export credit to carry into the next cycle (unused carried-in credit plus new excess).
    pub credit_carried_out_wh: u64,
    /// Seconds of the period covered by readings (missing data shows as less than the period).
    pub measured_s: i64,
}

/// An itemised bill.
///
/// Invariants (checked by property tests): `subtotal` is the sum of the non-tax lines, `taxes`
/// the sum of the levy and tax lines, `total = subtotal + taxes`, and
/// `amount_due = previous_balance - payments + total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bill {
    /// The customer account.
    pub account: String,
    /// The tariff's identifier.
    pub tariff_id: String,
    /// Currency and rounding.
    pub currency: Currency,
    /// The billing cycle.
    pub cycle: Cycle,
    /// Final, to date, or projected.
    pub status: BillStatus,
    /// The itemised lines, in order: per tariff version energy, export, demand, fixed, then taxes.
    pub lines: Vec<BillLine>,
    /// Sum of the non-tax lines.
    pub subtotal: Decimal,
    /// Sum of the levy and tax lines.
    pub taxes: Decimal,
    /// `subtotal + taxes`.
    pub total: Decimal,
    /// Balance brought forward (positive: owed by the customer).
    pub previous_balance: Decimal,
    /// Payments received since the previous bill.
    pub payments: Decimal,
    /// `previous_balance - payments + total`.
    pub amount_due: Decimal,
    /// Energy figures.
    pub energy: EnergySummary,
}

impl Bill {
    pub(crate) fn assemble(
        header: (String, String, Currency, Cycle, BillStatus),
        lines: Vec<BillLine>,
        previous_balance: Decimal,
        payments: Decimal,
        energy: EnergySummary,
    ) -> Result<Bill> {
        let (account, tariff_id, currency, cycle, status) = header;
        let previous_balance = currency.round(previous_balance);
        let payments = currency.round(payments);
        let overflow = || Error::overflow("bill totals");
        let sum = |tax: bool| {
            lines
                .iter()
                .filter(|l| l.kind.is_tax() == tax)
                .try_fold(Decimal::ZERO, |acc, l| acc.checked_add(l.amount))
                .ok_or_else(overflow)
        };
        let subtotal = sum(false)?;
        let taxes = sum(true)?;
        let total = subtotal.checked_add(taxes).ok_or_else(overflow)?;
        let amount_due = previous_balance
            .checked_sub(payments)
            .and_then(|d| d.checked_add(total))
            .ok_or_else(overflow)?;
        Ok(Bill {
            account,
            tariff_id,
            currency,
            cycle,
            status,
            lines,
            subtotal,
            taxes,
            total,
            previous_balance,
            payments,
            amount_due,
            energy,
        })
    }

    /// Sum of the lines of one kind.
    pub fn total_of(&self, kind: LineKind) -> Decimal {
        self.lines
            .iter()
            .filter(|l| l.kind == kind)
            .map(|l| l.amount)
            .sum()
    }

    /// Renders the bill as CSV (RFC 4180: comma-separated, fields quoted when they contain a
    /// comma, quote or line break, CRLF line ends).
    ///
    /// Columns: `kind,description,quantity,unit,unit_price,amount`. The first rows (kind `info`)
    /// carry the account, tariff, cycle, status and currency in the description; then one row per
    /// line; then `summary` rows for subtotal, taxes, total, previous balance, payments and
    /// amount due. Amounts are printed with exactly the currency's minor-unit decimals.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        let dp = self.currency.minor_unit();
        let money = |d: Decimal| format!("{:.*}", dp as usize, d);
        let mut row = |fields: &[&str]| {
            let cells: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
            out.push_str(&cells.join(","));
            out.push_str("\r\n");
        };
        row(&[
            "kind",
            "description",
            "quantity",
            "unit",
            "unit_price",
            "amount",
        ]);
        let status = match self.status {
            BillStatus::Final => "final".to_owned(),
            BillStatus::ToDate { as_of } => {
                format!("to date as of {}", as_of.format("%Y-%m-%dT%H:%M:%SZ"))
            }
            BillStatus::Projected { as_of } => {
                format!("projected as of {}", as_of.format("%Y-%m-%dT%H:%M:%SZ"))
            }
        };
        for info in [
            format!("account: {}", self.account),
            format!("tariff: {}", self.tariff_id),
            format!(
                "cycle: {} to {} (end exclusive)",
                self.cycle.start, self.cycle.end
            ),
            format!("status: {status}"),
            format!("currency: {}", self.currency.code()),
        ] {
            row(&["info", &info, "", "", "", ""]);
        }
        for l in &self.lines {
            let unit = if l.unit == Unit::Money {
                self.currency.code()
            } else {
                l.unit.symbol()
            };
            row(&[
                l.kind.as_str(),
                &l.description,
                &l.quantity.normalize().to_string(),
                unit,
                &l.unit_price.normalize().to_string(),
                &money(l.amount),
            ]);
        }
        for (name, value) in [
            ("subtotal", self.subtotal),
            ("taxes", self.taxes),
            ("total", self.total),
            ("previous balance", self.previous_balance),
            ("payments", self.payments),
            ("amount due", self.amount_due),
        ] {
            row(&["summary", name, "", "", "", &money(value)]);
        }
        out
    }
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\r', '\n']) {
        let mut quoted = String::with_capacity(text.len() + 2);
        quoted.push('"');
        for c in text.chars() {
            if c == '"' {
                quoted.push('"');
            }
            quoted.push(c);
        }
        quoted.push('"');
        quoted
    } else {
        text.to_owned()
    }
}

/// The result of re-rating an issued bill with a corrected tariff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rerating {
    /// The bill as it should have been issued.
    pub corrected: Bill,
    /// Per line (matched by kind and description): corrected minus issued, in quantity and amount.
    /// Lines that did not change are left out.
    pub differences: Vec<BillLine>,
    /// `corrected.total - issued.total`; positive means the customer was under-charged.
    pub difference_total: Decimal,
}

impl Rerating {
    pub(crate) fn compare(issued: &Bill, corrected: Bill) -> Rerating {
        let mut differences = Vec::new();
        let key = |l: &BillLine| (l.kind, l.description.clone());
        for c in &corrected.lines {
            let old = issued.lines.iter().find(|i| key(i) == key(c));
            let (q, x, a) = old.map_or((Decimal::ZERO, Decimal::ZERO, Decimal::ZERO), |o| {
                (o.quantity, o.exact_amount, o.amount)
            });
            let line = BillLine {
                kind: c.kind,
                description: c.description.clone(),
                quantity: c.quantity - q,
                unit: c.unit,
                unit_price: c.unit_price,
                exact_amount: c.exact_amount - x,
                amount: c.amount - a,
            };
            if !line.amount.is_zero()
                || !line.quantity.is_zero()
                || old.is_none_or(|o| o.unit_price != c.unit_price)
            {
                differences.push(line);
            }
        }
        for i in &issued.lines {
            if !corrected.lines.iter().any(|c| key(c) == key(i)) {
                differences.push(BillLine {
                    kind: i.kind,
                    description: i.description.clone(),
                    quantity: -i.quantity,
                    unit: i.unit,
                    unit_price: i.unit_price,
                    exact_amount: -i.exact_amount,
                    amount: -i.amount,
                });
            }
        }
        let difference_total = corrected.total - issued.total;
        Rerating {
            corrected,
            differences,
            difference_total,
        }
    }

    /// One adjustment line to put on the next bill: the total difference, quantity one bill.
    pub fn adjustment_line(&self) -> BillLine {
        let c = &self.corrected;
        let mut description = String::new();
        let _ = write!(
            description,
            "correction of the bill for {} after tariff re-rating",
            c.cycle
        );
        BillLine {
            kind: LineKind::Adjustment,
            description,
            quantity: Decimal::ONE,
            unit: Unit::Bill,
            unit_price: self.difference_total,
            exact_amount: self.difference_total,
            amount: self.difference_total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("energy"), "energy");
        assert_eq!(csv_field("a, b"), "\"a, b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }
}
