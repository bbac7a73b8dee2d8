//! `billing`: the pure tariff engine — tariffs with a history of versions, rating of interval
//! consumption into itemised bills, net and gross metering, prepaid and postpaid decisions.
//!
//! The crate does no I/O and reads no clock: the caller passes the tariff text, the readings
//! (the server's interval rollups) and the current instant. Money is [`rust_decimal::Decimal`],
//! energy is integer Wh, times are UTC instants interpreted in the tariff's IANA time zone.
//!
//! # Main types
//! - [`Tariff`]: loaded with [`Tariff::from_toml`]; a currency, time zone, holiday calendar and
//!   versions, each a complete price list in force from a local date.
//! - [`BillingInput`] + [`IntervalReading`]: what to bill. [`rate_cycle`] gives the final
//!   [`Bill`], [`bill_to_date`] the bill so far, [`project()`] the projected bill for the cycle,
//!   [`rerate`] the corrected bill and its differences after a tariff correction.
//! - [`Bill`]: itemised [`BillLine`]s (kind, description, quantity with unit, unit price,
//!   amount), subtotal, taxes, total, balances; [`Bill::to_csv`].
//! - [`prepaid::decide`] and [`prepaid::debit`]; [`postpaid::PostpaidTerms`] and
//!   [`postpaid::account_status`].
//!
//! # Example
//! ```
//! use billing::{BillingInput, Cycle, IntervalReading, Tariff, rate_cycle};
//! use chrono::{Duration, NaiveDate, TimeZone, Utc};
//!
//! let tariff = Tariff::from_toml(r#"
//!     id = "flat-demo"
//!     name = "Flat rate"
//!     currency = "EUR"
//!     rounding = "half-even"
//!     time_zone = "UTC"
//!     [[versions]]
//!     valid_from = 2026-01-01
//!     energy = { type = "flat", price_per_kwh = 0.30 }
//! "#)?;
//! // One kWh every hour of January.
//! let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
//! let readings = (0..31 * 24)
//!     .map(|h| IntervalReading {
//!         start: start + Duration::hours(h),
//!         end: start + Duration::hours(h + 1),
//!         import_wh: 1000,
//!         export_wh: 0,
//!     })
//!     .collect();
//! let d = |m, day| NaiveDate::from_ymd_opt(2026, m, day).unwrap();
//! let input = BillingInput {
//!     account: "A-1".into(),
//!     cycle: Cycle::new(d(1, 1), d(2, 1)),
//!     readings,
//!     credit_carried_in_wh: 0,
//!     previous_balance: 0.into(),
//!     payments: 0.into(),
//! };
//! let bill = rate_cycle(&tariff, &input)?;
//! assert_eq!(bill.total, "223.20".parse()?); // 744 kWh × 0.30
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Tariff format (TOML)
//! Every table rejects unknown keys. Prices are decimals written as TOML numbers (exact up to 15
//! significant digits) or strings (`"0.123456789012345678"`). Dates are TOML local dates and are
//! local to `time_zone`; times of day are `"HH:MM"` strings, `"24:00"` allowed as an end.
//!
//! ```
//! let text = r#"
//! id = "full-example"                 # identifier stored with bills
//! name = "Everything the format offers"
//! note = "free text for humans"       # optional
//! currency = "EUR"                    # ISO 4217
//! minor_unit = 2                      # optional for common codes (EUR 2, JPY 0, KWD 3, ...)
//! rounding = "half-even"              # or "half-up" (ties away from zero); applied per line
//! time_zone = "Europe/Berlin"         # IANA name; all dates, days and windows are local
//! holidays = [2026-01-01, 2026-12-25] # day type "holiday" in windows; no prepaid cut-off
//!
//! [[versions]]                        # oldest first; each in force until the next one starts
//! valid_from = 2026-01-01
//! allow_negative_prices = false       # optional; true lets energy prices go below zero
//!
//! [versions.energy]                   # exactly one of: flat, tiered, time-of-use
//! type = "time-of-use"
//! periods = [
//!   { name = "peak", price_per_kwh = 0.40 },
//!   { name = "off-peak", price_per_kwh = 0.20 },
//! ]
//! ## Windows must tile every day type (mon..sun and holiday) without gap or overlap.
//! ## Day names: mon tue wed thu fri sat sun holiday, or weekdays, weekend, all.
//! ## A window with to < from crosses midnight: it covers the end and the start of each listed day.
//! windows = [
//!   { days = ["weekdays"], from = "07:00", to = "21:00", period = "peak" },
//!   { days = ["weekdays"], from = "21:00", to = "07:00", period = "off-peak" },
//!   { days = ["weekend", "holiday"], from = "00:00", to = "24:00", period = "off-peak" },
//! ]
//!
//! [versions.demand]                   # optional: on the maximum 15-minute demand of the cycle
//! price_per_kw = 9.50
//! periods = ["peak"]                  # optional: only quarter hours in these periods count
//!
//! [[versions.fixed]]                  # optional, any number
//! name = "standing charge"
//! amount = 0.35
//! per = "day"                         # or "month" (prorated by the month fraction)
//!
//! [[versions.taxes]]                  # optional, computed in this order
//! type = "levy"
//! name = "electricity tax"
//! amount = 0.0205
//! per = "kwh"                         # or "day", "bill"
//!
//! [[versions.taxes]]
//! type = "percent"
//! name = "VAT"
//! rate_percent = 19
//! ## kinds of lines in the base: energy, demand, fixed, export, levy, tax (earlier taxes: compounding)
//! applies_to = ["energy", "demand", "fixed", "export", "levy"]
//!
//! [versions.export]                   # optional, for customers who export
//! metering = "net"                    # or "gross" with sell_price_per_kwh
//! netting = "day"                     # "interval", "day" or "cycle"
//! excess = "carry-over"               # or "forfeit", or "pay" with excess_price_per_kwh
//!
//! [[versions]]
//! valid_from = 2026-07-01
//! [versions.energy]
//! type = "tiered"
//! pricing = "telescopic"              # or "all-units" (all energy at the block reached)
//! proration = "calendar-days"         # or "none"
//! blocks = [
//!   { up_to_kwh = 150, price_per_kwh = 0.25 },   # monthly sizes, cumulative upper bounds
//!   { up_to_kwh = 300, price_per_kwh = 0.30 },
//!   { price_per_kwh = 0.38 },                    # the last block is open-ended
//! ]
//! [versions.export]
//! metering = "gross"
//! sell_price_per_kwh = 0.08
//! "#;
//! let tariff = billing::Tariff::from_toml(text)?;
//! assert_eq!(tariff.version_dates().len(), 2);
//! # Ok::<(), billing::Error>(())
//! ```
//!
//! # Rules the engine applies
//! - **Tariff history.** A cycle that spans a version change is rated as separate segments, each
//!   with its own prices and its own lines (descriptions name the version); readings may not
//!   cross the change (local midnight of the new version's first day).
//! - **Rounding.** Every line's amount is `quantity × unit_price`, computed exactly, then rounded
//!   once to the minor unit with the tariff's rule. Subtotal, taxes and total are sums of rounded
//!   lines, so a bill's total always equals the sum of its lines. Month fractions, prorated
//!   demand prices and per-bill levy shares are rounded to 6 decimals before pricing; prorated
//!   block limits to the Wh.
//! - **Tiers.** Blocks are monthly; with `proration = "calendar-days"` each block limit is
//!   multiplied by Σ(days covered in a month / days in that month) over the cycle (or segment).
//!   Tiers are priced on the whole segment's energy, so splitting a cycle into parts and rating
//!   each part changes the bill; this is why the engine only splits at tariff changes.
//! - **Time of use.** A reading is priced in the period of its local start; a reading that
//!   crosses a window edge is rejected (the engine will not invent how energy was spread). DST
//!   days simply have 23 or 25 hours of readings; windows are wall-clock times.
//! - **Demand.** Gross import per UTC quarter hour × 4 = kW; readings must be ≤ 15 minutes and
//!   not cross a quarter hour. When a tariff change splits a cycle, each segment charges its own
//!   maximum at its price × (segment days / cycle days).
//! - **Fixed charges** per day count local days; per month use the month fraction.
//! - **Taxes** are per segment, in the order listed: a levy charges its amount per kWh billed,
//!   day charged, or bill (a split cycle shares one bill by days); a percentage tax's base is the
//!   sum of the already computed (rounded) lines of the kinds in `applies_to`, so listing `tax`
//!   compounds on the taxes above it.
//! - **Net metering** nets import against export per interval, per local day and time-of-use
//!   period, or per cycle and period; excess export is carried over as Wh (reported in
//!   [`EnergySummary::credit_carried_out_wh`]), forfeited, or paid. Carried-in credit offsets the
//!   dearest period's energy first. **Gross metering** bills all import and credits all export
//!   at the sell price. Demand always uses gross import. On a tariff version without an
//!   `export` section export is not credited; it still shows in [`EnergySummary::export_wh`].
//!   Netting per day or per cycle is, like tiers, not split-invariant: the engine nets within
//!   each tariff segment only.
//! - **Readings** must be sorted, must not overlap, and must lie inside the period rated; gaps
//!   are allowed and show as [`EnergySummary::measured_s`] below the period's length. Every
//!   violation is an [`ErrorKind::InvalidReadings`] error naming the reading.
//! - **Bill to date** charges fixed charges for every local day begun; **projection**: see
//!   [`project()`] and [`PROJECTION_METHOD`].

mod bill;
mod calendar;
mod error;
mod money;
pub mod postpaid;
pub mod prepaid;
mod projection;
mod rating;
mod tariff;

pub use bill::{Bill, BillLine, BillStatus, Cycle, EnergySummary, LineKind, Rerating, Unit};
pub use calendar::{DayType, HolidayCalendar, day_length_s, start_of_day};
pub use error::{Error, ErrorKind, Result};
pub use money::{Currency, Rounding};
pub use projection::{PROJECTION_METHOD, Projection, project};
pub use rating::{BillingInput, IntervalReading, bill_to_date, rate_cycle, rerate};
pub use tariff::Tariff;
