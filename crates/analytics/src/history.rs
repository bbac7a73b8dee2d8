//! Consumption histories and their CSV layouts (DESIGN §3.6): a sans-IO parser that the caller
//! feeds line by line, so this crate never opens a file.
//!
//! Two layouts are accepted. *Long*: a header of three columns (`meter_id,date,kwh`, names free)
//! and one reading per row; the date may carry a time (`2024-01-31 13:30` or `2024-01-31T13:30`)
//! for intraday data. *Wide* (the SGCC dataset's layout): the first column is the meter id, every
//! other header is a date in any order, empty cells are missing and a `FLAG` column is ignored.
//! Non-numeric text is a malformed file (an [`Error`] with line and column); negative, absurd or
//! duplicated values are well-formed but unusable, so they become missing with a [`Diagnostic`].

use std::collections::HashMap;

use crate::error::Error;

/// A civil date as days since 1970-01-01 (proleptic Gregorian).
pub type DayNumber = i32;

/// Days since 1970-01-01 of a civil date (H. Hinnant, "chrono-compatible low-level date
/// algorithms", `days_from_civil`).
pub fn days_from_civil(year: i32, month: u32, day: u32) -> DayNumber {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i32;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i32 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date `(year, month, day)` of a day number (inverse of [`days_from_civil`]).
pub fn civil_from_days(days: DayNumber) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i32::from(month <= 2);
    (year, month, day)
}

/// `YYYY-MM-DD` of a day number, for reasons and diagnostics.
pub fn format_day(days: DayNumber) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Parses `YYYY-MM-DD`, `YYYY/M/D` (SGCC) or `YYYYMMDD`, optionally followed by `T` or a space
/// and `HH:MM[:SS]`. Returns the day number and the minute of the day when a time was given.
pub fn parse_date_time(text: &str) -> Option<(DayNumber, Option<u32>)> {
    let text = text.trim();
    let (date, time) = match text.find(['T', ' ']) {
        Some(at) => (&text[..at], Some(text[at + 1..].trim())),
        None => (text, None),
    };
    let (year, month, day) = if date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) {
        (
            date[..4].parse().ok()?,
            date[4..6].parse().ok()?,
            date[6..].parse().ok()?,
        )
    } else {
        let sep = if date.contains('-') { '-' } else { '/' };
        let mut parts = date.split(sep);
        let year: i32 = parts.next()?.parse().ok()?;
        let month: u32 = parts.next()?.parse().ok()?;
        let day: u32 = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        (year, month, day)
    };
    if !(1900..=2200).contains(&year) || !(1..=12).contains(&month) {
        return None;
    }
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let minute = match time {
        None => None,
        Some(t) => {
            let mut parts = t.split(':');
            let h: u32 = parts.next()?.parse().ok()?;
            let m: u32 = parts.next()?.parse().ok()?;
            let s: u32 = match parts.next() {
                Some(s) => s.parse().ok()?,
                None => 0,
            };
            if h > 23 || m > 59 || s > 59 || s != 0 {
                return None;
            }
            Some(h * 60 + m)
        }
    };
    Some((days_from_civil(year, month, day), minute))
}

/// One meter's consumption history on a regular grid: `intervals_per_day` values per day from
/// `first_day`, `NaN` where nothing usable was read.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterHistory {
    pub meter_id: String,
    pub first_day: DayNumber,
    /// 1 for daily data, 48 for half-hourly, …
    pub intervals_per_day: u32,
    /// Energy per interval in kWh; `NaN` marks a missing interval.
    pub kwh: Vec<f32>,
}

impl MeterHistory {
    /// Number of whole days covered (including missing ones).
    pub fn days(&self) -> usize {
        self.kwh.len() / self.intervals_per_day.max(1) as usize
    }

    /// Number of intervals holding a value.
    pub fn observed(&self) -> usize {
        self.kwh.iter().filter(|v| !v.is_nan()).count()
    }
}

/// Something odd in the data that did not stop the analysis, with where it was found.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// The meter concerned, if the finding is about one meter.
    pub meter_id: Option<String>,
    /// What was found and what was done about it, in one sentence.
    pub message: String,
}

/// Plausibility limits applied while parsing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValueLimits {
    /// Daily energy above this is treated as a reading error (default 2 000 kWh/day, far above any
    /// household or small business; SGCC holds single cells in the hundreds of thousands).
    pub max_kwh_per_day: f64,
}

impl Default for ValueLimits {
    fn default() -> Self {
        Self {
            max_kwh_per_day: 2_000.0,
        }
    }
}

/// The result of parsing: histories plus everything that was dropped or repaired, and why.
#[derive(Debug, Clone, Default)]
pub struct HistoryBatch {
    pub histories: Vec<MeterHistory>,
    pub diagnostics: Vec<Diagnostic>,
}

#[derive(Debug, Default)]
struct MeterIssues {
    negative: u32,
    absurd: u32,
    non_finite: u32,
    duplicate_same: u32,
    duplicate_conflict: u32,
}

impl MeterIssues {
    fn describe(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.negative > 0 {
            parts.push(format!(
                "{} negative value(s) treated as missing",
                self.negative
            ));
        }
        if self.absurd > 0 {
            parts.push(format!(
                "{} implausibly large value(s) treated as missing",
                self.absurd
            ));
        }
        if self.non_finite > 0 {
            parts.push(format!(
                "{} NaN/infinite value(s) treated as missing",
                self.non_finite
            ));
        }
        if self.duplicate_same > 0 {
            parts.push(format!(
                "{} duplicated reading(s) with the same value dropped",
                self.duplicate_same
            ));
        }
        if self.duplicate_conflict > 0 {
            parts.push(format!(
                "{} interval(s) read twice with different values treated as missing",
                self.duplicate_conflict
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

#[derive(Debug)]
enum Layout {
    Long,
    /// Per column after the id: the day, or `None` for the ignored `FLAG` column.
    Wide {
        columns: Vec<Option<DayNumber>>,
        first_day: DayNumber,
        days: usize,
    },
}

#[derive(Debug, Default)]
struct LongMeter {
    /// `(day, minute of day, kWh)` in file order.
    readings: Vec<(DayNumber, u32, f32)>,
    timed: bool,
    /// Days spanned by all rows, including rows whose value was unusable.
    span: Option<(DayNumber, DayNumber)>,
}

/// Sans-IO parser for history CSV: call [`HistoryParser::push_line`] for every line (header
/// first), then [`HistoryParser::finish`].
#[derive(Debug)]
pub struct HistoryParser {
    limits: ValueLimits,
    line: u64,
    layout: Option<Layout>,
    index: HashMap<String, usize>,
    long: Vec<(String, LongMeter)>,
    wide: Vec<MeterHistory>,
    issues: Vec<MeterIssues>,
    timed_rows: Option<bool>,
    diagnostics: Vec<Diagnostic>,
}

enum Cell {
    Missing,
    Value(f32),
}

impl HistoryParser {
    /// A parser applying `limits`.
    pub fn new(limits: ValueLimits) -> Self {
        Self {
            limits,
            line: 0,
            layout: None,
            index: HashMap::new(),
            long: Vec::new(),
            wide: Vec::new(),
            issues: Vec::new(),
            timed_rows: None,
            diagnostics: Vec::new(),
        }
    }

    /// Feeds one line (without its line break). Blank lines are skipped.
    pub fn push_line(&mut self, line: &str) -> Result<(), Error> {
        self.line += 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            return Ok(());
        }
        match self.layout {
            None => self.header(line),
            Some(Layout::Long) => self.long_row(line),
            Some(Layout::Wide { .. }) => self.wide_row(line),
        }
    }

    fn header(&mut self, line: &str) -> Result<(), Error> {
        let line = line.strip_prefix('\u{feff}').unwrap_or(line);
        let names: Vec<&str> = line.split(',').map(|s| unquote(s.trim())).collect();
        if names.len() < 2 {
            return Err(Error::csv(
                self.line,
                1,
                "header needs `meter_id,date,kwh` (long) or an id column followed by date columns (wide)",
            ));
        }
        let is_date = |s: &str| parse_date_time(s).is_some();
        if names.len() == 3 && !is_date(names[1]) && !is_date(names[2]) {
            self.layout = Some(Layout::Long);
            return Ok(());
        }
        let mut columns = Vec::with_capacity(names.len() - 1);
        let mut seen: HashMap<DayNumber, usize> = HashMap::new();
        for (i, name) in names.iter().enumerate().skip(1) {
            if name.eq_ignore_ascii_case("flag") {
                columns.push(None);
                continue;
            }
            match parse_date_time(name) {
                Some((day, None)) => {
                    if let Some(first) = seen.insert(day, i + 1) {
                        self.diagnostics.push(Diagnostic {
                            meter_id: None,
                            message: format!(
                                "date {} appears in columns {first} and {}; equal values are kept once, different values become missing",
                                format_day(day),
                                i + 1
                            ),
                        });
                    }
                    columns.push(Some(day));
                }
                Some((_, Some(_))) => {
                    return Err(Error::csv(
                        self.line,
                        i as u64 + 1,
                        format!("wide layout takes daily columns, `{name}` has a time"),
                    ));
                }
                None => {
                    return Err(Error::csv(
                        self.line,
                        i as u64 + 1,
                        format!("column header `{name}` is neither a date nor FLAG"),
                    ));
                }
            }
        }
        let first_day = columns.iter().flatten().copied().min();
        let last_day = columns.iter().flatten().copied().max();
        let (Some(first_day), Some(last_day)) = (first_day, last_day) else {
            return Err(Error::csv(self.line, 2, "wide header has no date column"));
        };
        let days = (last_day - first_day + 1) as usize;
        if days > 200 * 366 {
            return Err(Error::csv(
                self.line,
                2,
                "date columns span more than 200 years",
            ));
        }
        self.layout = Some(Layout::Wide {
            columns,
            first_day,
            days,
        });
        Ok(())
    }

    fn cell(
        &mut self,
        text: &str,
        column: u64,
        meter: usize,
        slot_days: f64,
    ) -> Result<Cell, Error> {
        let text = unquote(text.trim());
        if text.is_empty() || text.eq_ignore_ascii_case("na") || text.eq_ignore_ascii_case("null") {
            return Ok(Cell::Missing);
        }
        let value: f64 = match text.parse() {
            Ok(v) => v,
            Err(_) => {
                return Err(Error::csv(
                    self.line,
                    column,
                    format!("`{text}` is not a number"),
                ));
            }
        };
        let issues = &mut self.issues[meter];
        if !value.is_finite() {
            issues.non_finite += 1;
            Ok(Cell::Missing)
        } else if value < 0.0 {
            issues.negative += 1;
            Ok(Cell::Missing)
        } else if value > self.limits.max_kwh_per_day * slot_days {
            issues.absurd += 1;
            Ok(Cell::Missing)
        } else {
            Ok(Cell::Value(value as f32))
        }
    }

    fn meter_index(&mut self, id: &str, column: u64) -> Result<usize, Error> {
        if id.is_empty() {
            return Err(Error::csv(self.line, column, "empty meter id"));
        }
        if let Some(&i) = self.index.get(id) {
            return Ok(i);
        }
        let i = self.issues.len();
        self.index.insert(id.to_owned(), i);
        self.issues.push(MeterIssues::default());
        Ok(i)
    }

    fn long_row(&mut self, line: &str) -> Result<(), Error> {
        let mut fields = line.split(',');
        let (Some(id), Some(date), Some(value)) = (fields.next(), fields.next(), fields.next())
        else {
            let n = line.split(',').count() as u64;
            return Err(Error::csv(
                self.line,
                n + 1,
                "expected 3 fields: meter_id,date,kwh",
            ));
        };
        if fields.next().is_some() {
            return Err(Error::csv(
                self.line,
                4,
                "expected 3 fields: meter_id,date,kwh",
            ));
        }
        let id = unquote(id.trim());
        let meter = self.meter_index(id, 1)?;
        if meter == self.long.len() {
            self.long.push((id.to_owned(), LongMeter::default()));
        }
        let Some((day, minute)) = parse_date_time(unquote(date.trim())) else {
            return Err(Error::csv(
                self.line,
                2,
                format!("`{}` is not a date (YYYY-MM-DD[ HH:MM])", date.trim()),
            ));
        };
        let timed = minute.is_some();
        match self.timed_rows {
            None => self.timed_rows = Some(timed),
            Some(t) if t != timed => {
                return Err(Error::csv(
                    self.line,
                    2,
                    "mixes daily rows and rows with a time of day; use one resolution per file",
                ));
            }
            Some(_) => {}
        }
        // The interval length is only known at the end; plausibility uses the daily limit here
        // and the per-interval limit when the grid is built.
        let cell = self.cell(value, 3, meter, 1.0)?;
        let entry = &mut self.long[meter].1;
        entry.timed = timed;
        entry.span = Some(
            entry
                .span
                .map_or((day, day), |(a, b)| (a.min(day), b.max(day))),
        );
        if let Cell::Value(v) = cell {
            entry.readings.push((day, minute.unwrap_or(0), v));
        }
        Ok(())
    }

    fn wide_row(&mut self, line: &str) -> Result<(), Error> {
        let Some(Layout::Wide {
            columns,
            first_day,
            days,
        }) = self.layout.take()
        else {
            unreachable!("wide_row is only called in the wide layout")
        };
        let result = self.wide_row_inner(line, &columns, first_day, days);
        self.layout = Some(Layout::Wide {
            columns,
            first_day,
            days,
        });
        result
    }

    fn wide_row_inner(
        &mut self,
        line: &str,
        columns: &[Option<DayNumber>],
        first_day: DayNumber,
        days: usize,
    ) -> Result<(), Error> {
        let mut fields = line.split(',');
        let id = unquote(fields.next().unwrap_or("").trim());
        let meter = self.meter_index(id, 1)?;
        let fresh = meter == self.wide.len();
        if fresh {
            self.wide.push(MeterHistory {
                meter_id: id.to_owned(),
                first_day,
                intervals_per_day: 1,
                kwh: vec![f32::NAN; days],
            });
        } else {
            self.diagnostics.push(Diagnostic {
                meter_id: Some(id.to_owned()),
                message: format!("meter appears again on line {}; rows are merged", self.line),
            });
        }
        let mut count = 0usize;
        for (i, text) in fields.enumerate() {
            let Some(&slot) = columns.get(i) else {
                return Err(Error::csv(
                    self.line,
                    i as u64 + 2,
                    format!(
                        "row has more fields than the header ({})",
                        columns.len() + 1
                    ),
                ));
            };
            count += 1;
            let Some(day) = slot else { continue };
            let cell = self.cell(text, i as u64 + 2, meter, 1.0)?;
            if let Cell::Value(v) = cell {
                let idx = (day - first_day) as usize;
                place(&mut self.wide[meter].kwh, idx, v, &mut self.issues[meter]);
            }
        }
        if count < columns.len() {
            return Err(Error::csv(
                self.line,
                count as u64 + 2,
                format!(
                    "row has {} fields, the header has {}",
                    count + 1,
                    columns.len() + 1
                ),
            ));
        }
        Ok(())
    }

    /// Ends the input and returns the histories with their diagnostics.
    pub fn finish(mut self) -> Result<HistoryBatch, Error> {
        if self.layout.is_none() {
            return Err(Error::csv(
                self.line.max(1),
                1,
                "empty input: no header line",
            ));
        }
        let mut histories = std::mem::take(&mut self.wide);
        if matches!(self.layout, Some(Layout::Long)) {
            let long = std::mem::take(&mut self.long);
            // One resolution for the whole file (the finest any meter shows), so a meter whose
            // readings happen to fall on the hour is not put on a coarser grid than its peers.
            let step = long
                .iter()
                .flat_map(|(_, e)| e.readings.iter().map(|r| r.1))
                .fold(1440u32, gcd)
                .max(1);
            for (meter, (id, entry)) in long.into_iter().enumerate() {
                if let Some(h) = self.grid_long(id, entry, meter, step) {
                    histories.push(h);
                }
            }
        }
        for h in &histories {
            let issues = &self.issues[self.index[&h.meter_id]];
            if let Some(message) = issues.describe() {
                self.diagnostics.push(Diagnostic {
                    meter_id: Some(h.meter_id.clone()),
                    message,
                });
            }
        }
        Ok(HistoryBatch {
            histories,
            diagnostics: self.diagnostics,
        })
    }

    fn grid_long(
        &mut self,
        id: String,
        entry: LongMeter,
        meter: usize,
        step: u32,
    ) -> Option<MeterHistory> {
        if entry.readings.is_empty() {
            self.diagnostics.push(Diagnostic {
                meter_id: Some(id),
                message: "no usable reading; meter excluded".into(),
            });
            return None;
        }
        let step = if entry.timed { step } else { 1440 };
        let ipd = 1440 / step;
        let (first_day, last_day) = entry.span?;
        let days = (last_day - first_day + 1) as usize;
        let mut kwh = vec![f32::NAN; days * ipd as usize];
        let max_slot = (self.limits.max_kwh_per_day / f64::from(ipd)) as f32;
        for (day, minute, v) in entry.readings {
            let idx = (day - first_day) as usize * ipd as usize + (minute / step) as usize;
            if v > max_slot {
                self.issues[meter].absurd += 1;
                continue;
            }
            place(&mut kwh, idx, v, &mut self.issues[meter]);
        }
        Some(MeterHistory {
            meter_id: id,
            first_day,
            intervals_per_day: ipd,
            kwh,
        })
    }
}

/// Stores a value, turning a second reading of the same interval into a duplicate (same value)
/// or a conflict (different value, the interval becomes missing: we cannot know which is right).
fn place(values: &mut [f32], idx: usize, v: f32, issues: &mut MeterIssues) {
    let old = values[idx];
    if old.is_nan() {
        // A conflict earlier leaves NaN too; the conflict marker is the negative zero below.
        if old.is_sign_negative() {
            return;
        }
        values[idx] = v;
    } else if old == v {
        issues.duplicate_same += 1;
    } else {
        issues.duplicate_conflict += 1;
        values[idx] = -f32::NAN;
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

/// Parses a whole text (convenience over [`HistoryParser`]).
pub fn parse_histories(text: &str, limits: ValueLimits) -> Result<HistoryBatch, Error> {
    let mut parser = HistoryParser::new(limits);
    for line in text.lines() {
        parser.push_line(line)?;
    }
    parser.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for d in [-1000, 0, 59, 60, 11_016, 20_000, 30_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
        assert_eq!(format_day(days_from_civil(2014, 1, 1)), "2014-01-01");
    }

    #[test]
    fn dates_in_all_layouts() {
        let d = days_from_civil(2014, 1, 5);
        assert_eq!(parse_date_time("2014/1/5"), Some((d, None)));
        assert_eq!(parse_date_time("2014-01-05"), Some((d, None)));
        assert_eq!(parse_date_time("20140105"), Some((d, None)));
        assert_eq!(parse_date_time("2014-01-05 13:30"), Some((d, Some(810))));
        assert_eq!(parse_date_time("2014-01-05T00:00"), Some((d, Some(0))));
        assert_eq!(parse_date_time("2014-02-30"), None);
        assert_eq!(parse_date_time("kwh"), None);
    }

    #[test]
    fn wide_layout_with_flag_unordered_dates_and_gaps() {
        let text = "CONS_NO,FLAG,2014/1/3,2014/1/1,2014/1/2\nA1,1,3.0,1.0,\nB2,0,,,2.5\n";
        let batch = parse_histories(text, ValueLimits::default()).unwrap();
        assert_eq!(batch.histories.len(), 2);
        let a = &batch.histories[0];
        assert_eq!(a.meter_id, "A1");
        assert_eq!(a.first_day, days_from_civil(2014, 1, 1));
        assert_eq!(a.kwh[0], 1.0);
        assert!(a.kwh[1].is_nan());
        assert_eq!(a.kwh[2], 3.0);
        assert_eq!(batch.histories[1].observed(), 1);
        assert!(batch.diagnostics.is_empty());
    }

    #[test]
    fn long_layout_half_hourly() {
        let text = "meter_id,timestamp,kwh\nm1,2024-01-01 00:00,0.2\nm1,2024-01-01 00:30,0.3\nm1,2024-01-02 23:30,0.4\n";
        let batch = parse_histories(text, ValueLimits::default()).unwrap();
        let h = &batch.histories[0];
        assert_eq!(h.intervals_per_day, 48);
        assert_eq!(h.kwh.len(), 96);
        assert_eq!(h.kwh[1], 0.3);
        assert_eq!(h.kwh[95], 0.4);
    }

    #[test]
    fn bad_values_become_diagnostics_not_errors() {
        let text = "meter_id,date,kwh\nm1,2024-01-01,-3\nm1,2024-01-02,999999\nm1,2024-01-03,5\nm1,2024-01-03,5\nm1,2024-01-04,5\nm1,2024-01-04,6\n";
        let batch = parse_histories(text, ValueLimits::default()).unwrap();
        let h = &batch.histories[0];
        assert!(h.kwh[0].is_nan() && h.kwh[1].is_nan() && h.kwh[3].is_nan());
        assert_eq!(h.kwh[2], 5.0);
        let msg = &batch.diagnostics[0].message;
        assert!(msg.contains("1 negative"), "{msg}");
        assert!(msg.contains("1 implausibly large"), "{msg}");
        assert!(msg.contains("1 duplicated"), "{msg}");
        assert!(msg.contains("different values"), "{msg}");
    }

    #[test]
    fn malformed_cells_name_line_and_column() {
        let err = parse_histories("id,2014/1/1,2014/1/2\nx,1.0,abc\n", ValueLimits::default())
            .unwrap_err();
        assert_eq!(err.to_string(), "line 2, column 3: `abc` is not a number");
        let err = parse_histories("id,2014/1/1,hello\n", ValueLimits::default()).unwrap_err();
        assert!(err.to_string().starts_with("line 1, column 3:"), "{err}");
        let err = parse_histories("id,2014/1/1\nx,1,2\n", ValueLimits::default()).unwrap_err();
        assert!(err.to_string().contains("more fields"), "{err}");
        let err = parse_histories(
            "meter_id,date,kwh\nm,2024-13-01,1\n",
            ValueLimits::default(),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("line 2, column 2:"), "{err}");
    }
}
