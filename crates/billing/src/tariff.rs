//! Tariffs: the TOML format (raw serde structs with `deny_unknown_fields`), and its validation
//! into a [`Tariff`] — a history of versions, each a complete price list in force from a local date.

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Timelike, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::bill::LineKind;
use crate::calendar::{DayType, HolidayCalendar};
use crate::error::{Error, ErrorKind, Result};
use crate::money::{Currency, Rounding, deserialize_decimal, deserialize_opt_decimal};

/// A validated tariff: currency, time zone, holiday calendar and a history of versions.
///
/// Version `i` is in force on the local dates `[valid_from(i), valid_from(i + 1))`; the last one
/// is open-ended. A correction of a past price is a new `Tariff` (same id) whose version differs;
/// [`crate::rerate`] rates an issued bill's period again with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tariff {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) currency: Currency,
    pub(crate) time_zone: Tz,
    pub(crate) holidays: HolidayCalendar,
    pub(crate) versions: Vec<TariffVersion>,
}

/// One complete price list of a tariff.
#[derive(Debug, Clone, PartialEq)]
pub struct TariffVersion {
    pub(crate) valid_from: NaiveDate,
    pub(crate) energy: EnergyPricing,
    pub(crate) demand: Option<DemandCharge>,
    pub(crate) fixed: Vec<FixedCharge>,
    pub(crate) taxes: Vec<Tax>,
    pub(crate) export: Option<ExportRule>,
}

/// How imported energy is priced.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum EnergyPricing {
    Flat { price_per_kwh: Decimal },
    Tiered(Tiers),
    TimeOfUse(TouSchedule),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tiers {
    pub(crate) pricing: TierPricing,
    pub(crate) proration: Proration,
    pub(crate) blocks: Vec<Block>,
}

/// A monthly block: energy up to `up_to_kwh` (cumulative; `None` for the last, open block).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Block {
    pub(crate) up_to_kwh: Option<Decimal>,
    pub(crate) price_per_kwh: Decimal,
}

/// How tier blocks price a cycle's energy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TierPricing {
    /// Each block's energy at that block's price (increasing block rates, "telescopic").
    Telescopic,
    /// All of the cycle's energy at the price of the block the total reaches ("slab reached").
    AllUnits,
}

/// How monthly block sizes (and monthly fixed charges) are fitted to a cycle that is not one
/// calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Proration {
    /// Block limits are multiplied by the cycle's month fraction (Σ days covered in a month /
    /// days in that month), rounded to the Wh.
    CalendarDays,
    /// Block limits apply unchanged to every cycle, whatever its length.
    None,
}

/// Time-of-use: named periods with prices, and for each day type a tiling of the local day.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TouSchedule {
    pub(crate) periods: Vec<TouPeriod>,
    /// Per day type (index of [`DayType::index`]): sorted `(from_min, to_min, period)` covering 0..1440.
    pub(crate) segments: [Vec<(u32, u32, usize)>; 8],
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TouPeriod {
    pub(crate) name: String,
    pub(crate) price_per_kwh: Decimal,
}

impl TouSchedule {
    /// The period index in force at a local wall-clock time on a day of the given type.
    pub(crate) fn period_at(&self, day_type: DayType, local: NaiveDateTime) -> usize {
        self.segment_at(day_type, local).1
    }

    /// The period at a local time and the minute of the day its window segment ends (≤ 1440).
    pub(crate) fn segment_at(&self, day_type: DayType, local: NaiveDateTime) -> (u32, usize) {
        let minute = local.hour() * 60 + local.minute();
        let segments = &self.segments[day_type.index()];
        segments
            .iter()
            .find(|(from, to, _)| *from <= minute && minute < *to)
            .map_or((1440, 0), |(_, to, p)| (*to, *p))
    }
}

/// A demand charge on the cycle's maximum 15-minute average demand.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DemandCharge {
    pub(crate) price_per_kw: Decimal,
    /// Only 15-minute intervals starting in these time-of-use periods count; `None` counts all.
    pub(crate) periods: Option<Vec<usize>>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FixedCharge {
    pub(crate) name: String,
    pub(crate) amount: Decimal,
    pub(crate) per: FixedPer,
}

/// The unit a fixed charge is stated per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FixedPer {
    /// Per local day of the cycle.
    Day,
    /// Per calendar month, prorated by the month fraction covered.
    Month,
}

/// A tax line: a fixed levy or a percentage of chosen lines. Taxes are computed in the order listed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tax {
    Levy {
        name: String,
        amount: Decimal,
        per: LevyPer,
    },
    Percent {
        name: String,
        rate_percent: Decimal,
        applies_to: Vec<LineKind>,
    },
}

/// The unit a levy is stated per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LevyPer {
    /// Per kWh of billed (after netting) import.
    Kwh,
    /// Per local day charged.
    Day,
    /// Once per bill; shared by days between segments when a tariff change splits the cycle,
    /// and charged for the days begun on a bill to date.
    Bill,
}

/// Metering for customers who export (solar).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ExportRule {
    Net { netting: Netting, excess: Excess },
    Gross { sell_price_per_kwh: Decimal },
}

/// The scope over which net metering nets export against import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Netting {
    /// Each reading interval on its own (closest to gross metering).
    Interval,
    /// Each local day, per time-of-use period.
    Day,
    /// The whole cycle, per time-of-use period.
    Cycle,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Excess {
    CarryOver,
    Forfeit,
    Pay { price_per_kwh: Decimal },
}

// ---------------------------------------------------------------------------------------------
// The TOML format. These structs are the user documentation of the file format (see lib.rs).

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTariff {
    id: String,
    name: String,
    #[serde(default)]
    #[allow(dead_code)] // documentation for humans reading the file
    note: Option<String>,
    currency: String,
    minor_unit: Option<u32>,
    rounding: RawRounding,
    time_zone: String,
    #[serde(default)]
    holidays: Vec<toml::value::Datetime>,
    versions: Vec<RawVersion>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum RawRounding {
    HalfEven,
    HalfUp,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVersion {
    valid_from: toml::value::Datetime,
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
    #[serde(default)]
    allow_negative_prices: bool,
    energy: RawEnergy,
    demand: Option<RawDemand>,
    #[serde(default)]
    fixed: Vec<RawFixed>,
    #[serde(default)]
    taxes: Vec<RawTax>,
    export: Option<RawExport>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
enum RawEnergy {
    Flat {
        #[serde(deserialize_with = "deserialize_decimal")]
        price_per_kwh: Decimal,
    },
    Tiered {
        pricing: TierPricing,
        proration: Proration,
        blocks: Vec<RawBlock>,
    },
    TimeOfUse {
        periods: Vec<RawPeriod>,
        windows: Vec<RawWindow>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlock {
    #[serde(default, deserialize_with = "deserialize_opt_decimal")]
    up_to_kwh: Option<Decimal>,
    #[serde(deserialize_with = "deserialize_decimal")]
    price_per_kwh: Decimal,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeriod {
    name: String,
    #[serde(deserialize_with = "deserialize_decimal")]
    price_per_kwh: Decimal,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    days: Vec<String>,
    from: String,
    to: String,
    period: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDemand {
    #[serde(deserialize_with = "deserialize_decimal")]
    price_per_kw: Decimal,
    periods: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFixed {
    name: String,
    #[serde(deserialize_with = "deserialize_decimal")]
    amount: Decimal,
    per: FixedPer,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
enum RawTax {
    Levy {
        name: String,
        #[serde(deserialize_with = "deserialize_decimal")]
        amount: Decimal,
        per: LevyPer,
    },
    Percent {
        name: String,
        #[serde(deserialize_with = "deserialize_decimal")]
        rate_percent: Decimal,
        applies_to: Vec<LineKind>,
    },
}

#[derive(Deserialize)]
#[serde(tag = "metering", rename_all = "kebab-case", deny_unknown_fields)]
enum RawExport {
    Net {
        netting: Netting,
        excess: RawExcess,
        #[serde(default, deserialize_with = "deserialize_opt_decimal")]
        excess_price_per_kwh: Option<Decimal>,
    },
    Gross {
        #[serde(deserialize_with = "deserialize_decimal")]
        sell_price_per_kwh: Decimal,
    },
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum RawExcess {
    CarryOver,
    Forfeit,
    Pay,
}

// ---------------------------------------------------------------------------------------------

impl Tariff {
    /// Loads and validates a tariff from TOML text (the format is documented in the crate docs).
    pub fn from_toml(text: &str) -> Result<Tariff> {
        let raw: RawTariff = toml::from_str(text).map_err(|e| syntax_error(text, &e))?;
        validate(raw)
    }

    /// The tariff's identifier.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The tariff's display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The currency, its minor unit and rounding rule.
    pub fn currency(&self) -> &Currency {
        &self.currency
    }

    /// The time zone in which all windows, dates and days are local.
    pub fn time_zone(&self) -> Tz {
        self.time_zone
    }

    /// The holiday calendar.
    pub fn holidays(&self) -> &HolidayCalendar {
        &self.holidays
    }

    /// The dates from which each version is in force, oldest first.
    pub fn version_dates(&self) -> Vec<NaiveDate> {
        self.versions.iter().map(|v| v.valid_from).collect()
    }

    /// The energy price in force at an instant, for display and peak-hour alerts: the
    /// time-of-use period's name and price, or the flat price with no period name. `None` before
    /// the first version, and for tiered pricing (whose price depends on the cycle's total).
    pub fn energy_price_at(&self, t: DateTime<Utc>) -> Option<(Option<&str>, Decimal)> {
        let l = crate::calendar::local(self.time_zone, t);
        let version = self
            .versions
            .iter()
            .rev()
            .find(|v| v.valid_from <= l.date())?;
        match &version.energy {
            EnergyPricing::Flat { price_per_kwh } => Some((None, *price_per_kwh)),
            EnergyPricing::Tiered(_) => None,
            EnergyPricing::TimeOfUse(tou) => {
                let p = &tou.periods[tou.period_at(self.holidays.day_type(l.date()), l)];
                Some((Some(p.name.as_str()), p.price_per_kwh))
            }
        }
    }
}

/// One line: where (line and column from the error's byte span) and the parser's message.
fn syntax_error(text: &str, e: &toml::de::Error) -> Error {
    let location = match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("tariff file line {line}, column {column}")
        }
        None => "tariff file".to_owned(),
    };
    Error::new(
        ErrorKind::Syntax,
        location,
        e.message().trim_end().replace('\n', " "),
    )
}

fn date_of(dt: &toml::value::Datetime, location: &str) -> Result<NaiveDate> {
    match (dt.date, dt.time, dt.offset) {
        (Some(d), None, None) => {
            NaiveDate::from_ymd_opt(i32::from(d.year), u32::from(d.month), u32::from(d.day))
                .ok_or_else(|| Error::tariff(location, format!("{dt} is not a calendar date")))
        }
        _ => Err(Error::tariff(
            location,
            format!("{dt} must be a local date such as 2026-01-01 (no time, no offset)"),
        )),
    }
}

fn check_price(price: Decimal, allow_negative: bool, location: &str) -> Result<()> {
    if price.is_sign_negative() && !price.is_zero() && !allow_negative {
        return Err(Error::tariff(
            location,
            format!(
                "negative price {price} is not allowed (set allow_negative_prices = true for tariffs that pay for consumption)"
            ),
        ));
    }
    Ok(())
}

fn validate(raw: RawTariff) -> Result<Tariff> {
    if raw.id.trim().is_empty() {
        return Err(Error::tariff("id", "must not be empty"));
    }
    let rounding = match raw.rounding {
        RawRounding::HalfEven => Rounding::HalfEven,
        RawRounding::HalfUp => Rounding::HalfUp,
    };
    let currency = Currency::new(&raw.currency, raw.minor_unit, rounding)?;
    let time_zone: Tz = raw.time_zone.parse().map_err(|_| {
        Error::tariff(
            "time_zone",
            format!(
                "unknown time zone {:?} (use an IANA name such as Europe/Berlin)",
                raw.time_zone
            ),
        )
    })?;
    let mut holidays = Vec::new();
    for (i, h) in raw.holidays.iter().enumerate() {
        holidays.push(date_of(h, &format!("holidays[{i}]"))?);
    }
    if raw.versions.is_empty() {
        return Err(Error::tariff(
            "versions",
            "a tariff needs at least one version",
        ));
    }
    let mut versions = Vec::new();
    for (i, v) in raw.versions.into_iter().enumerate() {
        let version = validate_version(v, &format!("versions[{i}]"))?;
        if let Some(prev) = versions.last().map(|p: &TariffVersion| p.valid_from)
            && version.valid_from <= prev
        {
            return Err(Error::tariff(
                format!("versions[{i}].valid_from"),
                format!(
                    "{} is not after the previous version's {prev}; list versions oldest first",
                    version.valid_from
                ),
            ));
        }
        versions.push(version);
    }
    Ok(Tariff {
        id: raw.id,
        name: raw.name,
        currency,
        time_zone,
        holidays: HolidayCalendar::new(holidays),
        versions,
    })
}

fn validate_version(v: RawVersion, at: &str) -> Result<TariffVersion> {
    let valid_from = date_of(&v.valid_from, &format!("{at}.valid_from"))?;
    let neg = v.allow_negative_prices;
    let energy = match v.energy {
        RawEnergy::Flat { price_per_kwh } => {
            check_price(price_per_kwh, neg, &format!("{at}.energy.price_per_kwh"))?;
            EnergyPricing::Flat { price_per_kwh }
        }
        RawEnergy::Tiered {
            pricing,
            proration,
            blocks,
        } => EnergyPricing::Tiered(validate_tiers(
            pricing,
            proration,
            blocks,
            neg,
            &format!("{at}.energy"),
        )?),
        RawEnergy::TimeOfUse { periods, windows } => EnergyPricing::TimeOfUse(validate_tou(
            periods,
            windows,
            neg,
            &format!("{at}.energy"),
        )?),
    };
    let demand = match v.demand {
        None => None,
        Some(d) => {
            let loc = format!("{at}.demand");
            check_price(d.price_per_kw, false, &format!("{loc}.price_per_kw"))?;
            let periods =
                match (d.periods, &energy) {
                    (None, _) => None,
                    (Some(names), EnergyPricing::TimeOfUse(tou)) => {
                        let mut idx = Vec::new();
                        for name in names {
                            let p = tou.periods.iter().position(|p| p.name == name).ok_or_else(
                                || {
                                    Error::tariff(
                                        format!("{loc}.periods"),
                                        format!("unknown time-of-use period {name:?}"),
                                    )
                                },
                            )?;
                            idx.push(p);
                        }
                        Some(idx)
                    }
                    (Some(_), _) => {
                        return Err(Error::tariff(
                            format!("{loc}.periods"),
                            "demand periods need time-of-use energy pricing to define them",
                        ));
                    }
                };
            Some(DemandCharge {
                price_per_kw: d.price_per_kw,
                periods,
            })
        }
    };
    let mut fixed = Vec::new();
    for (i, f) in v.fixed.into_iter().enumerate() {
        check_price(f.amount, neg, &format!("{at}.fixed[{i}].amount"))?;
        fixed.push(FixedCharge {
            name: f.name,
            amount: f.amount,
            per: f.per,
        });
    }
    let mut taxes = Vec::new();
    for (i, t) in v.taxes.into_iter().enumerate() {
        let loc = format!("{at}.taxes[{i}]");
        taxes.push(match t {
            RawTax::Levy { name, amount, per } => {
                check_price(amount, false, &format!("{loc}.amount"))?;
                Tax::Levy { name, amount, per }
            }
            RawTax::Percent {
                name,
                rate_percent,
                applies_to,
            } => {
                if rate_percent.is_sign_negative() || rate_percent > Decimal::ONE_HUNDRED {
                    return Err(Error::tariff(
                        format!("{loc}.rate_percent"),
                        format!("{rate_percent} is not within 0..=100"),
                    ));
                }
                if applies_to.is_empty() {
                    return Err(Error::tariff(
                        format!("{loc}.applies_to"),
                        "name at least one line kind",
                    ));
                }
                Tax::Percent {
                    name,
                    rate_percent,
                    applies_to,
                }
            }
        });
    }
    let export = match v.export {
        None => None,
        Some(RawExport::Gross { sell_price_per_kwh }) => {
            check_price(
                sell_price_per_kwh,
                false,
                &format!("{at}.export.sell_price_per_kwh"),
            )?;
            Some(ExportRule::Gross { sell_price_per_kwh })
        }
        Some(RawExport::Net {
            netting,
            excess,
            excess_price_per_kwh,
        }) => {
            let loc = format!("{at}.export");
            let excess = match (excess, excess_price_per_kwh) {
                (RawExcess::Pay, Some(p)) => {
                    check_price(p, false, &format!("{loc}.excess_price_per_kwh"))?;
                    Excess::Pay { price_per_kwh: p }
                }
                (RawExcess::Pay, None) => {
                    return Err(Error::tariff(
                        format!("{loc}.excess_price_per_kwh"),
                        "excess = \"pay\" needs a price",
                    ));
                }
                (_, Some(_)) => {
                    return Err(Error::tariff(
                        format!("{loc}.excess_price_per_kwh"),
                        "a price for excess export only applies with excess = \"pay\"",
                    ));
                }
                (RawExcess::CarryOver, None) => Excess::CarryOver,
                (RawExcess::Forfeit, None) => Excess::Forfeit,
            };
            Some(ExportRule::Net { netting, excess })
        }
    };
    Ok(TariffVersion {
        valid_from,
        energy,
        demand,
        fixed,
        taxes,
        export,
    })
}

fn validate_tiers(
    pricing: TierPricing,
    proration: Proration,
    blocks: Vec<RawBlock>,
    neg: bool,
    at: &str,
) -> Result<Tiers> {
    if blocks.is_empty() {
        return Err(Error::tariff(
            format!("{at}.blocks"),
            "a tiered tariff needs at least one block",
        ));
    }
    let last = blocks.len() - 1;
    let mut previous = Decimal::ZERO;
    let mut out = Vec::new();
    for (i, b) in blocks.into_iter().enumerate() {
        let loc = format!("{at}.blocks[{i}]");
        check_price(b.price_per_kwh, neg, &format!("{loc}.price_per_kwh"))?;
        match (b.up_to_kwh, i == last) {
            (Some(limit), false) => {
                if limit <= previous {
                    return Err(Error::tariff(
                        format!("{loc}.up_to_kwh"),
                        format!(
                            "{limit} kWh is not above the previous block's {previous} kWh; blocks must be in increasing order"
                        ),
                    ));
                }
                previous = limit;
            }
            (None, true) => {}
            (None, false) => {
                return Err(Error::tariff(
                    format!("{loc}.up_to_kwh"),
                    "only the last block may be open-ended",
                ));
            }
            (Some(_), true) => {
                return Err(Error::tariff(
                    format!("{loc}.up_to_kwh"),
                    "the last block must be open-ended (omit up_to_kwh) so every kWh has a price",
                ));
            }
        }
        out.push(Block {
            up_to_kwh: b.up_to_kwh,
            price_per_kwh: b.price_per_kwh,
        });
    }
    Ok(Tiers {
        pricing,
        proration,
        blocks: out,
    })
}

/// Parses `HH:MM`; `24:00` is allowed as an end of day.
fn parse_minute(text: &str, allow_24: bool, location: &str) -> Result<u32> {
    let bad = || Error::tariff(location, format!("{text:?} is not a time of day as HH:MM"));
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if m > 59 || h > 24 || (h == 24 && (m != 0 || !allow_24)) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn day_names(name: &str) -> Option<Vec<DayType>> {
    use chrono::Weekday::*;
    let w = DayType::Weekday;
    Some(match name {
        "mon" => vec![w(Mon)],
        "tue" => vec![w(Tue)],
        "wed" => vec![w(Wed)],
        "thu" => vec![w(Thu)],
        "fri" => vec![w(Fri)],
        "sat" => vec![w(Sat)],
        "sun" => vec![w(Sun)],
        "holiday" => vec![DayType::Holiday],
        "weekdays" => vec![w(Mon), w(Tue), w(Wed), w(Thu), w(Fri)],
        "weekend" => vec![w(Sat), w(Sun)],
        "all" => DayType::ALL.to_vec(),
        _ => return None,
    })
}

fn fmt_minute(m: u32) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}

fn validate_tou(
    periods: Vec<RawPeriod>,
    windows: Vec<RawWindow>,
    neg: bool,
    at: &str,
) -> Result<TouSchedule> {
    if periods.is_empty() {
        return Err(Error::tariff(
            format!("{at}.periods"),
            "time-of-use pricing needs at least one period",
        ));
    }
    let mut names = BTreeSet::new();
    let mut out_periods = Vec::new();
    for (i, p) in periods.into_iter().enumerate() {
        check_price(
            p.price_per_kwh,
            neg,
            &format!("{at}.periods[{i}].price_per_kwh"),
        )?;
        if !names.insert(p.name.clone()) {
            return Err(Error::tariff(
                format!("{at}.periods[{i}].name"),
                format!("period {:?} is defined twice", p.name),
            ));
        }
        out_periods.push(TouPeriod {
            name: p.name,
            price_per_kwh: p.price_per_kwh,
        });
    }
    // (from, to, period, window index) per day type.
    let mut per_day: [Vec<(u32, u32, usize, usize)>; 8] = Default::default();
    for (i, w) in windows.iter().enumerate() {
        let loc = format!("{at}.windows[{i}]");
        let period = out_periods
            .iter()
            .position(|p| p.name == w.period)
            .ok_or_else(|| {
                Error::tariff(
                    format!("{loc}.period"),
                    format!("unknown period {:?}", w.period),
                )
            })?;
        let from = parse_minute(&w.from, false, &format!("{loc}.from"))?;
        let to = parse_minute(&w.to, true, &format!("{loc}.to"))?;
        if from == to {
            return Err(Error::tariff(
                &loc,
                format!(
                    "window {}-{} is empty; use 00:00-24:00 for a whole day",
                    w.from, w.to
                ),
            ));
        }
        if w.days.is_empty() {
            return Err(Error::tariff(
                format!("{loc}.days"),
                "name at least one day",
            ));
        }
        // A window whose end is before its start crosses midnight: it covers the end and the
        // start of each listed day. The day type is always that of the instant's own local date.
        let pieces: Vec<(u32, u32)> = if from < to {
            vec![(from, to)]
        } else {
            vec![(from, 1440), (0, to)]
                .into_iter()
                .filter(|(a, b)| a < b)
                .collect()
        };
        for name in &w.days {
            let days = day_names(name).ok_or_else(|| {
                Error::tariff(
                    format!("{loc}.days"),
                    format!(
                        "unknown day {name:?} (use mon..sun, holiday, weekdays, weekend or all)"
                    ),
                )
            })?;
            for day in days {
                for &(a, b) in &pieces {
                    per_day[day.index()].push((a, b, period, i));
                }
            }
        }
    }
    let mut segments: [Vec<(u32, u32, usize)>; 8] = Default::default();
    for day in DayType::ALL {
        let list = &mut per_day[day.index()];
        list.sort();
        let mut cursor = 0;
        let mut prev_window: Option<usize> = None;
        for &(a, b, period, window) in list.iter() {
            if a < cursor {
                let other = prev_window.unwrap_or(window);
                return Err(Error::tariff(
                    format!("{at}.windows[{window}]"),
                    format!(
                        "window {}-{} overlaps windows[{other}] on {day} (from {} to {})",
                        windows[window].from,
                        windows[window].to,
                        fmt_minute(a),
                        fmt_minute(cursor.min(b))
                    ),
                ));
            }
            if a > cursor {
                return Err(Error::tariff(
                    format!("{at}.windows"),
                    format!(
                        "{day} {}-{} is not covered by any window (windows must tile each day without gaps)",
                        fmt_minute(cursor),
                        fmt_minute(a)
                    ),
                ));
            }
            segments[day.index()].push((a, b, period));
            cursor = b;
            prev_window = Some(window);
        }
        if cursor < 1440 {
            return Err(Error::tariff(
                format!("{at}.windows"),
                format!(
                    "{day} {}-24:00 is not covered by any window (windows must tile each day without gaps)",
                    fmt_minute(cursor)
                ),
            ));
        }
    }
    Ok(TouSchedule {
        periods: out_periods,
        segments,
    })
}
