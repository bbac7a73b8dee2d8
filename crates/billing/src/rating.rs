//! Rating: turns interval consumption and a tariff into an itemised bill — splitting the cycle at
//! tariff changes, netting export, pricing energy, demand, fixed charges and taxes.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Offset, Utc};
use rust_decimal::{Decimal, RoundingStrategy};

use crate::bill::{Bill, BillLine, BillStatus, Cycle, EnergySummary, LineKind, Rerating, Unit};
use crate::calendar::{local, local_date, month_fraction, start_of_day};
use crate::error::{Error, ErrorKind, Result};
use crate::money::{Currency, add, kwh_from_wh, mul};
use crate::tariff::{
    EnergyPricing, Excess, ExportRule, FixedPer, LevyPer, Netting, Proration, Tariff,
    TariffVersion, Tax, TierPricing, Tiers, TouSchedule,
};

/// Energy measured over one interval `[start, end)`, as the server's rollups store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IntervalReading {
    /// Start of the interval (inclusive).
    pub start: DateTime<Utc>,
    /// End of the interval (exclusive).
    pub end: DateTime<Utc>,
    /// Active energy imported from the grid in the interval.
    pub import_wh: u64,
    /// Active energy exported to the grid in the interval.
    pub export_wh: u64,
}

/// Everything needed to bill one customer for one cycle, besides the tariff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingInput {
    /// The customer account, printed on the bill.
    pub account: String,
    /// The cycle billed (local dates in the tariff's zone).
    pub cycle: Cycle,
    /// Interval readings, sorted by start, not overlapping, inside the cycle. Gaps are allowed
    /// (missing data is billed as no consumption and shows in `EnergySummary::measured_s`).
    pub readings: Vec<IntervalReading>,
    /// Net-metering export credit carried in from earlier cycles.
    pub credit_carried_in_wh: u64,
    /// Balance brought forward (positive: owed by the customer).
    pub previous_balance: Decimal,
    /// Payments received since the previous bill.
    pub payments: Decimal,
}

/// The largest energy one reading may carry: 1 GWh keeps every intermediate sum exact in i64 and
/// far above any real service point; a bigger value is a data error, not consumption.
const MAX_READING_WH: u64 = 1_000_000_000;

/// Rates a whole, finished cycle: the final bill.
pub fn rate_cycle(tariff: &Tariff, input: &BillingInput) -> Result<Bill> {
    let cycle_end = start_of_day(tariff.time_zone, input.cycle.end);
    rate(
        tariff,
        input,
        &input.readings,
        cycle_end,
        input.cycle.end,
        BillStatus::Final,
    )
}

/// The bill to date: consumption known up to `as_of`, fixed charges through `as_of`'s local day.
///
/// Tier blocks keep their size for the whole cycle (they are the cycle's allowance, not a
/// to-date one), so a bill to date never charges a higher block earlier than the final bill would.
pub fn bill_to_date(tariff: &Tariff, input: &BillingInput, as_of: DateTime<Utc>) -> Result<Bill> {
    let through = through_date(tariff, &input.cycle, as_of);
    rate(
        tariff,
        input,
        &input.readings,
        as_of,
        through,
        BillStatus::ToDate { as_of },
    )
}

/// Re-rates an issued bill's cycle with a (corrected) tariff and the same input; gives the
/// corrected bill and its difference against the issued one. Re-rating is idempotent: re-rating
/// the corrected bill with the same tariff gives the same bill and no differences.
pub fn rerate(corrected_tariff: &Tariff, issued: &Bill, input: &BillingInput) -> Result<Rerating> {
    if issued.cycle != input.cycle || issued.account != input.account {
        return Err(Error::argument(
            "rerate",
            format!(
                "the input (account {}, cycle {}) is not the issued bill's (account {}, cycle {})",
                input.account, input.cycle, issued.account, issued.cycle
            ),
        ));
    }
    let corrected = rate_cycle(corrected_tariff, input)?;
    Ok(Rerating::compare(issued, corrected))
}

/// The local date through which (exclusive) fixed charges run for a bill as of `as_of`: every
/// local day that has begun before `as_of` is charged in full.
pub(crate) fn through_date(tariff: &Tariff, cycle: &Cycle, as_of: DateTime<Utc>) -> NaiveDate {
    let last_started = local_date(tariff.time_zone, as_of - Duration::seconds(1));
    let through = last_started.succ_opt().unwrap_or(last_started);
    through.clamp(cycle.start, cycle.end.max(cycle.start))
}

fn reading_at(i: usize, r: &IntervalReading) -> String {
    format!("readings[{i}] ({})", r.start.format("%Y-%m-%dT%H:%M:%SZ"))
}

fn check_readings(
    readings: &[IntervalReading],
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    cycle: &Cycle,
) -> Result<()> {
    let mut previous_end: Option<DateTime<Utc>> = None;
    for (i, r) in readings.iter().enumerate() {
        let at = reading_at(i, r);
        if r.end <= r.start {
            return Err(Error::readings(at, "the interval ends before it starts"));
        }
        if r.import_wh > MAX_READING_WH || r.export_wh > MAX_READING_WH {
            return Err(Error::readings(
                at,
                format!("more than {MAX_READING_WH} Wh in one interval is not a plausible reading"),
            ));
        }
        if r.start < from || r.end > until {
            return Err(Error::readings(
                at,
                format!(
                    "the interval ending {} lies outside the period rated ({} to {}, cycle {cycle})",
                    r.end.format("%Y-%m-%dT%H:%M:%SZ"),
                    from.format("%Y-%m-%dT%H:%M:%SZ"),
                    until.format("%Y-%m-%dT%H:%M:%SZ")
                ),
            ));
        }
        if let Some(prev) = previous_end
            && r.start < prev
        {
            return Err(Error::readings(
                at,
                "overlaps the previous reading (readings must be sorted by time and not overlap)",
            ));
        }
        previous_end = Some(r.end);
    }
    Ok(())
}

/// A part of the cycle under one tariff version.
struct Segment<'a> {
    version: &'a TariffVersion,
    start: NaiveDate,
    end: NaiveDate,
    readings: &'a [IntervalReading],
}

fn segments<'a>(
    tariff: &'a Tariff,
    cycle: &Cycle,
    readings: &'a [IntervalReading],
) -> Result<Vec<Segment<'a>>> {
    let tz = tariff.time_zone;
    let first = tariff.versions[0].valid_from;
    if cycle.start < first {
        return Err(Error::new(
            ErrorKind::NoTariffInForce,
            format!("cycle {cycle}"),
            format!(
                "no version of tariff {} is in force on {} (the first starts on {first})",
                tariff.id, cycle.start
            ),
        ));
    }
    let mut out = Vec::new();
    let mut rest = readings;
    for (i, v) in tariff.versions.iter().enumerate() {
        let until = tariff.versions.get(i + 1).map(|n| n.valid_from);
        let start = v.valid_from.max(cycle.start);
        let end = until.map_or(cycle.end, |u| u.min(cycle.end));
        if start >= end {
            continue;
        }
        let end_utc = start_of_day(tz, end);
        let count = rest.iter().take_while(|r| r.start < end_utc).count();
        let (mine, later) = rest.split_at(count);
        if let Some(r) = mine.last()
            && r.end > end_utc
        {
            return Err(Error::readings(
                reading_at(readings.len() - rest.len() + count - 1, r),
                format!(
                    "the interval crosses the tariff change at the start of {end}; split it at local midnight"
                ),
            ));
        }
        out.push(Segment {
            version: v,
            start,
            end,
            readings: mine,
        });
        rest = later;
    }
    Ok(out)
}

/// Builds lines with the currency's per-line rounding.
struct LineMaker<'c> {
    currency: &'c Currency,
}

impl LineMaker<'_> {
    fn line(
        &self,
        kind: LineKind,
        description: String,
        quantity: Decimal,
        unit: Unit,
        unit_price: Decimal,
    ) -> Result<BillLine> {
        let exact_amount = mul(quantity, unit_price, &description)?;
        Ok(BillLine {
            kind,
            description,
            quantity,
            unit,
            unit_price,
            exact_amount,
            amount: self.currency.round(exact_amount),
        })
    }
}

/// Rounds a proration ratio or scaled quantity for display and pricing.
fn round6(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(6, RoundingStrategy::MidpointNearestEven)
}

pub(crate) fn rate(
    tariff: &Tariff,
    input: &BillingInput,
    readings: &[IntervalReading],
    until: DateTime<Utc>,
    through: NaiveDate,
    status: BillStatus,
) -> Result<Bill> {
    let cycle = input.cycle;
    if cycle.end <= cycle.start {
        return Err(Error::argument(
            format!("cycle {cycle}"),
            "the cycle ends before it starts",
        ));
    }
    if cycle.days() > 366 {
        return Err(Error::argument(
            format!("cycle {cycle}"),
            "a billing cycle longer than a year is not supported",
        ));
    }
    let tz = tariff.time_zone;
    let from = start_of_day(tz, cycle.start);
    let cycle_end = start_of_day(tz, cycle.end);
    check_readings(readings, from, until.min(cycle_end), &cycle)?;
    let segs = segments(tariff, &cycle, readings)?;
    let maker = LineMaker {
        currency: &tariff.currency,
    };
    let mut lines = Vec::new();
    let mut summary = EnergySummary::default();
    let mut credit_wh = i64::try_from(input.credit_carried_in_wh)
        .map_err(|_| Error::argument("credit_carried_in_wh", "implausibly large credit"))?;
    let split = segs.len() > 1;
    for seg in &segs {
        let suffix = if split {
            format!(
                " (tariff from {}, {} to {})",
                seg.version.valid_from, seg.start, seg.end
            )
        } else {
            String::new()
        };
        let mut seg_lines = Vec::new();
        let netted = net_energy(tariff, seg, &mut credit_wh)?;
        summary.import_wh += netted.import_wh as u64;
        summary.export_wh += netted.export_wh as u64;
        summary.credit_used_wh += netted.credit_used_wh as u64;
        summary.credit_carried_out_wh += netted.excess_carried_wh as u64;
        let billed_wh: i64 = netted.billable_wh.iter().sum();
        summary.billed_import_wh += billed_wh as u64;
        summary.measured_s += seg
            .readings
            .iter()
            .map(|r| (r.end - r.start).num_seconds())
            .sum::<i64>();

        energy_lines(&maker, seg, &netted.billable_wh, &suffix, &mut seg_lines)?;
        export_lines(&maker, seg.version, &netted, &suffix, &mut seg_lines)?;
        if let Some(demand) = &seg.version.demand {
            let tou = match &seg.version.energy {
                EnergyPricing::TimeOfUse(t) => Some(t),
                _ => None,
            };
            let (kw, at) = max_demand(tariff, tou, demand.periods.as_deref(), seg.readings)?;
            let (price, share) = if split {
                let p = round6(
                    demand.price_per_kw * Decimal::from((seg.end - seg.start).num_days())
                        / Decimal::from(cycle.days()),
                );
                (
                    p,
                    format!(
                        ", prorated {} of {} days",
                        (seg.end - seg.start).num_days(),
                        cycle.days()
                    ),
                )
            } else {
                (demand.price_per_kw, String::new())
            };
            let window = match (&demand.periods, tou) {
                (Some(ps), Some(t)) => {
                    format!(
                        " in {}",
                        ps.iter()
                            .map(|p| t.periods[*p].name.as_str())
                            .collect::<Vec<_>>()
                            .join("/")
                    )
                }
                _ => String::new(),
            };
            let when = at.map_or(String::new(), |t| {
                format!(" at {}", local(tz, t).format("%Y-%m-%d %H:%M"))
            });
            seg_lines.push(maker.line(
                LineKind::Demand,
                format!("maximum 15-minute demand{window}{when}{share}{suffix}"),
                kw,
                Unit::Kw,
                price,
            )?);
        }
        let charged_end = seg.end.min(through).max(seg.start);
        let charged_days = (charged_end - seg.start).num_days();
        for f in &seg.version.fixed {
            if charged_days == 0 {
                continue;
            }
            let (quantity, unit) = match f.per {
                FixedPer::Day => (Decimal::from(charged_days), Unit::Day),
                FixedPer::Month => (round6(month_fraction(seg.start, charged_end)), Unit::Month),
            };
            seg_lines.push(maker.line(
                LineKind::Fixed,
                format!("{}{suffix}", f.name),
                quantity,
                unit,
                f.amount,
            )?);
        }
        for tax in &seg.version.taxes {
            let line = match tax {
                Tax::Levy { name, amount, per } => {
                    let (quantity, unit) = match per {
                        LevyPer::Kwh => (kwh_from_wh(billed_wh), Unit::Kwh),
                        LevyPer::Day => (Decimal::from(charged_days), Unit::Day),
                        LevyPer::Bill => (
                            round6(Decimal::from(charged_days) / Decimal::from(cycle.days())),
                            Unit::Bill,
                        ),
                    };
                    if quantity.is_zero() {
                        continue;
                    }
                    maker.line(
                        LineKind::Levy,
                        format!("{name}{suffix}"),
                        quantity,
                        unit,
                        *amount,
                    )?
                }
                Tax::Percent {
                    name,
                    rate_percent,
                    applies_to,
                } => {
                    let mut base = Decimal::ZERO;
                    for l in seg_lines.iter().filter(|l| applies_to.contains(&l.kind)) {
                        base = add(base, l.amount, name)?;
                    }
                    let kinds = applies_to
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ");
                    maker.line(
                        LineKind::Tax,
                        format!("{name} {} % of {kinds}{suffix}", rate_percent.normalize()),
                        base,
                        Unit::Money,
                        *rate_percent / Decimal::ONE_HUNDRED,
                    )?
                }
            };
            seg_lines.push(line);
        }
        lines.extend(seg_lines);
    }
    // Unused carried-in credit stays with the customer.
    summary.credit_carried_out_wh += credit_wh as u64;
    let header = (
        input.account.clone(),
        tariff.id.clone(),
        tariff.currency.clone(),
        cycle,
        status,
    );
    Bill::assemble(
        header,
        lines,
        input.previous_balance,
        input.payments,
        summary,
    )
}

/// Consumption of one segment after netting, in Wh per pricing bucket.
struct Netted {
    import_wh: i64,
    export_wh: i64,
    /// Billable import per bucket (time-of-use period, or one bucket).
    billable_wh: Vec<i64>,
    /// Export beyond import in the netting scope.
    excess_wh: i64,
    /// Excess carried into the next cycle (net metering with carry-over).
    excess_carried_wh: i64,
    credit_used_wh: i64,
}

fn bucket_count(v: &TariffVersion) -> usize {
    match &v.energy {
        EnergyPricing::TimeOfUse(t) => t.periods.len(),
        _ => 1,
    }
}

fn bucket_prices(v: &TariffVersion) -> Vec<Decimal> {
    match &v.energy {
        EnergyPricing::TimeOfUse(t) => t.periods.iter().map(|p| p.price_per_kwh).collect(),
        EnergyPricing::Flat { price_per_kwh } => vec![*price_per_kwh],
        EnergyPricing::Tiered(t) => vec![t.blocks[0].price_per_kwh],
    }
}

/// The time-of-use period of a reading; errors when the interval crosses a window boundary,
/// because splitting its energy between periods would have to invent a profile.
fn tou_period(
    tariff: &Tariff,
    tou: &TouSchedule,
    r: &IntervalReading,
    index: usize,
) -> Result<usize> {
    let tz = tariff.time_zone;
    // Fast path: without an offset change inside the reading, local time runs in step with UTC,
    // so the reading stays in one period if it ends before the window segment it starts in.
    let start_local = r.start.with_timezone(&tz);
    let end_local = r.end.with_timezone(&tz);
    if start_local.offset().fix() == end_local.offset().fix() {
        let l = start_local.naive_local();
        let (segment_end_min, period) = tou.segment_at(tariff.holidays.day_type(l.date()), l);
        let day_start = l.date().and_time(chrono::NaiveTime::MIN);
        let end_s = (end_local.naive_local() - day_start).num_seconds();
        if end_s <= i64::from(segment_end_min) * 60 {
            return Ok(period);
        }
    }
    // Slow path (a reading across a window edge, midnight or a DST shift): check every minute.
    let period_of = |t: DateTime<Utc>| {
        let l = local(tz, t);
        tou.period_at(tariff.holidays.day_type(l.date()), l)
    };
    let first = period_of(r.start);
    let mut t = r.start + Duration::minutes(1);
    while t < r.end {
        if period_of(t) != first {
            return Err(Error::readings(
                reading_at(index, r),
                format!(
                    "the interval crosses a time-of-use boundary at {} local; supply readings that do not span window edges",
                    local(tz, t).format("%Y-%m-%d %H:%M")
                ),
            ));
        }
        t += Duration::minutes(1);
    }
    Ok(first)
}

fn net_energy(tariff: &Tariff, seg: &Segment<'_>, credit_wh: &mut i64) -> Result<Netted> {
    let v = seg.version;
    let n = bucket_count(v);
    let mut buckets = Vec::with_capacity(seg.readings.len());
    for (i, r) in seg.readings.iter().enumerate() {
        let b = match &v.energy {
            EnergyPricing::TimeOfUse(t) => tou_period(tariff, t, r, i)?,
            _ => 0,
        };
        buckets.push(b);
    }
    let import_wh: i64 = seg.readings.iter().map(|r| r.import_wh as i64).sum();
    let export_wh: i64 = seg.readings.iter().map(|r| r.export_wh as i64).sum();
    let mut billable = vec![0i64; n];
    let mut excess = 0i64;
    let mut add_net = |b: usize, net: i64| {
        if net >= 0 {
            billable[b] += net;
        } else {
            excess -= net;
        }
    };
    match &v.export {
        None | Some(ExportRule::Gross { .. }) => {
            for (r, &b) in seg.readings.iter().zip(&buckets) {
                billable[b] += r.import_wh as i64;
            }
        }
        Some(ExportRule::Net {
            netting: Netting::Interval,
            ..
        }) => {
            for (r, &b) in seg.readings.iter().zip(&buckets) {
                add_net(b, r.import_wh as i64 - r.export_wh as i64);
            }
        }
        Some(ExportRule::Net {
            netting: Netting::Day,
            ..
        }) => {
            let mut per_day: BTreeMap<(NaiveDate, usize), i64> = BTreeMap::new();
            for (r, &b) in seg.readings.iter().zip(&buckets) {
                *per_day
                    .entry((local_date(tariff.time_zone, r.start), b))
                    .or_default() += r.import_wh as i64 - r.export_wh as i64;
            }
            for ((_, b), net) in per_day {
                add_net(b, net);
            }
        }
        Some(ExportRule::Net {
            netting: Netting::Cycle,
            ..
        }) => {
            let mut per_bucket = vec![0i64; n];
            for (r, &b) in seg.readings.iter().zip(&buckets) {
                per_bucket[b] += r.import_wh as i64 - r.export_wh as i64;
            }
            for (b, net) in per_bucket.into_iter().enumerate() {
                add_net(b, net);
            }
        }
    }
    let mut credit_used = 0;
    let mut excess_carried = 0;
    if let Some(ExportRule::Net { excess: rule, .. }) = &v.export {
        // Carried-in credit is banked energy: it offsets the dearest energy first, which is how
        // kWh banking is valued for the customer; with one bucket the order does not matter.
        let prices = bucket_prices(v);
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|a, b| prices[*b].cmp(&prices[*a]).then(a.cmp(b)));
        for b in order {
            let used = (*credit_wh).min(billable[b]);
            billable[b] -= used;
            *credit_wh -= used;
            credit_used += used;
        }
        if matches!(rule, Excess::CarryOver) {
            excess_carried = excess;
        }
    }
    Ok(Netted {
        import_wh,
        export_wh,
        billable_wh: billable,
        excess_wh: excess,
        excess_carried_wh: excess_carried,
        credit_used_wh: credit_used,
    })
}

fn energy_lines(
    maker: &LineMaker<'_>,
    seg: &Segment<'_>,
    billable_wh: &[i64],
    suffix: &str,
    out: &mut Vec<BillLine>,
) -> Result<()> {
    match &seg.version.energy {
        EnergyPricing::Flat { price_per_kwh } => {
            out.push(maker.line(
                LineKind::Energy,
                format!("energy{suffix}"),
                kwh_from_wh(billable_wh[0]),
                Unit::Kwh,
                *price_per_kwh,
            )?);
        }
        EnergyPricing::TimeOfUse(t) => {
            for (p, wh) in t.periods.iter().zip(billable_wh) {
                out.push(maker.line(
                    LineKind::Energy,
                    format!("energy {}{suffix}", p.name),
                    kwh_from_wh(*wh),
                    Unit::Kwh,
                    p.price_per_kwh,
                )?);
            }
        }
        EnergyPricing::Tiered(tiers) => {
            tier_lines(maker, tiers, seg, kwh_from_wh(billable_wh[0]), suffix, out)?
        }
    }
    Ok(())
}

/// Block limits scaled to the segment: monthly sizes × the month fraction, rounded to the Wh.
pub(crate) fn scaled_limits(
    tiers: &Tiers,
    start: NaiveDate,
    end: NaiveDate,
) -> Vec<Option<Decimal>> {
    let factor = match tiers.proration {
        Proration::CalendarDays => month_fraction(start, end),
        Proration::None => Decimal::ONE,
    };
    tiers
        .blocks
        .iter()
        .map(|b| {
            b.up_to_kwh.map(|l| {
                (l * factor).round_dp_with_strategy(3, RoundingStrategy::MidpointNearestEven)
            })
        })
        .collect()
}

fn tier_lines(
    maker: &LineMaker<'_>,
    tiers: &Tiers,
    seg: &Segment<'_>,
    total_kwh: Decimal,
    suffix: &str,
    out: &mut Vec<BillLine>,
) -> Result<()> {
    let limits = scaled_limits(tiers, seg.start, seg.end);
    match tiers.pricing {
        TierPricing::Telescopic => {
            let mut lower = Decimal::ZERO;
            for (i, (b, limit)) in tiers.blocks.iter().zip(&limits).enumerate() {
                let upper = limit.unwrap_or(Decimal::MAX);
                let quantity = total_kwh.min(upper) - lower.min(total_kwh);
                let range = match limit {
                    Some(u) => format!("{}-{} kWh", lower.normalize(), u.normalize()),
                    None => format!("above {} kWh", lower.normalize()),
                };
                if quantity > Decimal::ZERO || i == 0 {
                    out.push(maker.line(
                        LineKind::Energy,
                        format!("energy block {} ({range}){suffix}", i + 1),
                        quantity,
                        Unit::Kwh,
                        b.price_per_kwh,
                    )?);
                }
                lower = upper;
                if total_kwh <= upper {
                    break;
                }
            }
        }
        TierPricing::AllUnits => {
            let i = limits
                .iter()
                .position(|l| l.is_none_or(|u| total_kwh <= u))
                .unwrap_or(limits.len() - 1);
            let reached = match limits[i] {
                Some(u) => format!("up to {} kWh", u.normalize()),
                None => format!(
                    "above {} kWh",
                    if i == 0 {
                        Decimal::ZERO
                    } else {
                        limits[i - 1].unwrap_or_default()
                    }
                    .normalize()
                ),
            };
            out.push(maker.line(
                LineKind::Energy,
                format!(
                    "energy, all units at block {} price ({reached}){suffix}",
                    i + 1
                ),
                total_kwh,
                Unit::Kwh,
                tiers.blocks[i].price_per_kwh,
            )?);
        }
    }
    Ok(())
}

fn export_lines(
    maker: &LineMaker<'_>,
    v: &TariffVersion,
    netted: &Netted,
    suffix: &str,
    out: &mut Vec<BillLine>,
) -> Result<()> {
    match &v.export {
        None => {}
        Some(ExportRule::Gross { sell_price_per_kwh }) => {
            out.push(maker.line(
                LineKind::Export,
                format!("export sold{suffix}"),
                kwh_from_wh(netted.export_wh),
                Unit::Kwh,
                -*sell_price_per_kwh,
            )?);
        }
        Some(ExportRule::Net { excess, .. }) => {
            if netted.credit_used_wh > 0 {
                out.push(maker.line(
                    LineKind::Export,
                    format!("carried-over export credit applied (energy already deducted){suffix}"),
                    kwh_from_wh(netted.credit_used_wh),
                    Unit::Kwh,
                    Decimal::ZERO,
                )?);
            }
            if netted.excess_wh > 0 {
                let (what, price) = match excess {
                    Excess::CarryOver => ("excess export carried to the next cycle", Decimal::ZERO),
                    Excess::Forfeit => ("excess export forfeited", Decimal::ZERO),
                    Excess::Pay { price_per_kwh } => ("excess export paid", -*price_per_kwh),
                };
                out.push(maker.line(
                    LineKind::Export,
                    format!("{what}{suffix}"),
                    kwh_from_wh(netted.excess_wh),
                    Unit::Kwh,
                    price,
                )?);
            }
        }
    }
    Ok(())
}

/// The maximum 15-minute average demand in kW and when its interval began.
///
/// 15-minute blocks are aligned to the UTC quarter hour, which is also the local quarter hour in
/// every zone whose offset is a multiple of 15 minutes (all current IANA zones). Demand counts
/// gross import (export does not reduce demand). A block's demand is its energy × 4 (kWh per
/// quarter hour → kW).
fn max_demand(
    tariff: &Tariff,
    tou: Option<&TouSchedule>,
    periods: Option<&[usize]>,
    readings: &[IntervalReading],
) -> Result<(Decimal, Option<DateTime<Utc>>)> {
    const BLOCK_S: i64 = 900;
    let mut blocks: BTreeMap<i64, i64> = BTreeMap::new();
    for (i, r) in readings.iter().enumerate() {
        let block = r.start.timestamp().div_euclid(BLOCK_S);
        let last = (r.end.timestamp() - 1).div_euclid(BLOCK_S);
        if block != last {
            return Err(Error::readings(
                reading_at(i, r),
                "a demand charge needs readings of 15 minutes or shorter that do not cross a quarter hour",
            ));
        }
        *blocks.entry(block).or_default() += r.import_wh as i64;
    }
    let mut best: (i64, Option<DateTime<Utc>>) = (0, None);
    for (block, wh) in blocks {
        let start = DateTime::<Utc>::from_timestamp(block * BLOCK_S, 0).unwrap_or_default();
        if let (Some(ps), Some(t)) = (periods, tou) {
            let l = local(tariff.time_zone, start);
            if !ps.contains(&t.period_at(tariff.holidays.day_type(l.date()), l)) {
                continue;
            }
        }
        if wh > best.0 || best.1.is_none() {
            best = (wh, Some(start));
        }
    }
    Ok((Decimal::new(best.0 * 4, 3), best.1))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn demand_tariff() -> Tariff {
        Tariff::from_toml(
            r#"
            id = "demand"
            name = "demand"
            currency = "EUR"
            rounding = "half-up"
            time_zone = "Asia/Kathmandu"
            [[versions]]
            valid_from = 2026-01-01
            energy = { type = "flat", price_per_kwh = 0.1 }
            demand = { price_per_kw = 10 }
            "#,
        )
        .unwrap()
    }

    fn reading(start: DateTime<Utc>, minutes: i64, import_wh: u64) -> IntervalReading {
        IntervalReading {
            start,
            end: start + Duration::minutes(minutes),
            import_wh,
            export_wh: 0,
        }
    }

    #[test]
    fn five_minute_readings_add_up_to_quarter_hour_demand() {
        // Kathmandu is UTC+05:45: quarter hours are still aligned with UTC quarter hours.
        let t = demand_tariff();
        let q = Utc.with_ymd_and_hms(2026, 1, 10, 6, 15, 0).unwrap();
        let readings = vec![
            reading(q, 5, 100),
            reading(q + Duration::minutes(5), 5, 200),
            reading(q + Duration::minutes(10), 5, 300),
            // The next quarter hour has more energy in one 5-minute reading but less in total.
            reading(q + Duration::minutes(15), 5, 500),
        ];
        let (kw, at) = max_demand(&t, None, None, &readings).unwrap();
        // 600 Wh in a quarter hour = 2.4 kW average.
        assert_eq!(kw, Decimal::new(24, 1));
        assert_eq!(at, Some(q));
        assert_eq!(local(t.time_zone, q).format("%H:%M").to_string(), "12:00");
    }

    #[test]
    fn a_reading_across_a_quarter_hour_cannot_give_demand() {
        let t = demand_tariff();
        let q = Utc.with_ymd_and_hms(2026, 1, 10, 6, 10, 0).unwrap();
        let err = max_demand(&t, None, None, &[reading(q, 10, 100)]).unwrap_err();
        assert!(
            err.to_string().contains("do not cross a quarter hour"),
            "{err}"
        );
    }

    #[test]
    fn no_readings_means_zero_demand() {
        let t = demand_tariff();
        assert_eq!(
            max_demand(&t, None, None, &[]).unwrap(),
            (Decimal::ZERO, None)
        );
    }
}
