//! Reports and statements: a bill's statement as PDF (itemised lines and a daily consumption
//! chart) and CSV; consumption by customer, area (site) and period with import/export for solar
//! customers and a power-quality summary, as CSV and PDF; the monthly scheduled run.

mod jobs;
pub mod pdf;

pub use jobs::{MONTHLY_RUN_HOUR_UTC, run_monthly_if_missing, spawn_jobs};

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

use crate::billing::StoredBill;
use crate::{Customer, Error, Meter, Resolution, Store};
use pdf::{Bar, Chart, Document};

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// Energy per local day of the bill's cycle over all of the customer's meters, kWh.
pub async fn daily_kwh(
    store: &dyn Store,
    customer: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    tz: chrono_tz::Tz,
) -> Result<Vec<(NaiveDate, f64)>, Error> {
    let mut days: BTreeMap<NaiveDate, f64> = BTreeMap::new();
    for m in store.meters().await? {
        if m.customer.as_deref() != Some(customer) {
            continue;
        }
        for r in store
            .rollups(
                &m.id,
                Resolution::Day,
                from.timestamp_millis(),
                to.timestamp_millis(),
            )
            .await?
        {
            let day = tz
                .timestamp_millis_opt(r.start_ms)
                .single()
                .map(|t| t.date_naive())
                .ok_or_else(|| {
                    Error::invalid(format!("rollup start {} out of range", r.start_ms))
                })?;
            *days.entry(day).or_default() += r.energy.import_wh / 1000.0;
        }
    }
    Ok(days.into_iter().collect())
}

/// The statement of a bill as CSV: a header block, then one row per line, then the totals.
pub fn statement_csv(bill: &StoredBill, customer: &Customer) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "field,value");
    for (k, v) in [
        ("bill", bill.id.as_str()),
        ("customer", customer.id.as_str()),
        ("customer_name", customer.name.as_str()),
        ("currency", bill.currency.as_str()),
    ] {
        let _ = writeln!(out, "{k},{}", csv_field(v));
    }
    let _ = writeln!(out, "period_start,{}", bill.cycle_start);
    let _ = writeln!(out, "period_end_exclusive,{}", bill.cycle_end);
    let _ = writeln!(out, "due_date,{}", bill.due_date);
    let _ = writeln!(out, "status,{}", bill.status.as_str());
    let _ = writeln!(out, "import_wh,{}", bill.import_wh);
    let _ = writeln!(out, "export_wh,{}", bill.export_wh);
    let _ = writeln!(out);
    let _ = writeln!(out, "kind,description,quantity,unit,unit_price,amount");
    for l in &bill.lines {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{}",
            l.kind,
            csv_field(&l.description),
            l.quantity,
            l.unit,
            l.unit_price,
            l.amount
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "subtotal,{}", bill.subtotal);
    let _ = writeln!(out, "taxes,{}", bill.taxes);
    let _ = writeln!(out, "total,{}", bill.total);
    if !bill.adjustments.is_zero() {
        let _ = writeln!(out, "re-rating adjustments included,{}", bill.adjustments);
    }
    out
}

/// The statement of a bill as PDF: customer, period, itemised lines, totals and a daily
/// consumption chart drawn as vector paths.
pub fn statement_pdf(
    bill: &StoredBill,
    customer: &Customer,
    daily: &[(NaiveDate, f64)],
) -> Vec<u8> {
    let mut doc = Document::new(format!(
        "Statement {} for {}",
        bill.cycle_start, customer.id
    ));
    doc.heading("wattline electricity statement")
        .line(format!("Customer: {} ({})", customer.name, customer.id))
        .line(format!(
            "Period: {} to {} (inclusive)",
            bill.cycle_start,
            bill.cycle_end.pred_opt().unwrap_or(bill.cycle_end)
        ))
        .line(format!("Bill: {}", bill.id))
        .line(format!(
            "Due date: {}    Status: {}",
            bill.due_date,
            bill.status.as_str()
        ))
        .line(format!(
            "Energy imported: {:.3} kWh    exported: {:.3} kWh",
            bill.import_wh as f64 / 1000.0,
            bill.export_wh as f64 / 1000.0
        ))
        .gap(8.0);
    let cols = [0.0, 250.0, 330.0, 400.0, 450.0];
    doc.row(
        &[
            (cols[0], "Description"),
            (cols[1], "Quantity"),
            (cols[2], "Unit"),
            (cols[3], "Price"),
            (cols[4], "Amount"),
        ],
        true,
    );
    for l in &bill.lines {
        let desc: String = l.description.chars().take(48).collect();
        let (q, p, a) = (
            l.quantity.to_string(),
            l.unit_price.to_string(),
            l.amount.to_string(),
        );
        doc.row(
            &[
                (cols[0], &desc),
                (cols[1], &q),
                (cols[2], &l.unit),
                (cols[3], &p),
                (cols[4], &a),
            ],
            false,
        );
    }
    doc.gap(6.0);
    let (sub, tax, total) = (
        bill.subtotal.to_string(),
        bill.taxes.to_string(),
        format!("{} {}", bill.total, bill.currency),
    );
    doc.row(&[(cols[3], "Subtotal"), (cols[4], &sub)], false)
        .row(&[(cols[3], "Taxes"), (cols[4], &tax)], false)
        .row(&[(cols[3], "Total"), (cols[4], &total)], true);
    if !bill.adjustments.is_zero() {
        doc.line(format!(
            "Includes {} {} of corrections after tariff re-rating.",
            bill.adjustments, bill.currency
        ));
    }
    doc.gap(12.0).chart(Chart {
        title: "Daily consumption".into(),
        unit: "kWh".into(),
        bars: daily
            .iter()
            .map(|(d, kwh)| Bar {
                label: format!("{:02}-{:02}", d.month(), d.day()),
                value: *kwh,
            })
            .collect(),
    });
    doc.render()
}

/// One row of the consumption report.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumptionRow {
    /// Customer id (empty for meters not assigned to anyone).
    pub customer: String,
    /// Site / area label (empty when none).
    pub site: String,
    /// The meter.
    pub meter: String,
    /// Energy imported, kWh.
    pub import_kwh: f64,
    /// Energy exported (solar), kWh.
    pub export_kwh: f64,
    /// Highest total active power seen, W.
    pub max_p_w: Option<f64>,
    /// Readings in the period whose voltage THD exceeded 8 % (EN 50160 limit).
    pub v_thd_over_limit: u64,
    /// Readings in the period with a phase voltage outside 230 V ± 10 % (EN 50160).
    pub voltage_out_of_range: u64,
    /// Readings examined for power quality.
    pub readings_checked: u64,
}

/// Consumption, import/export and power quality per meter (with customer and site, so the
/// rows group by customer and by area) over `[from, to)`.
pub async fn consumption(
    store: &dyn Store,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<ConsumptionRow>, Error> {
    let mut rows = Vec::new();
    let (from_ms, to_ms) = (from.timestamp_millis(), to.timestamp_millis());
    for m in store.meters().await? {
        let quarters = store
            .rollups(&m.id, Resolution::Min15, from_ms, to_ms)
            .await?;
        let (mut imp, mut exp, mut max_p) = (0.0, 0.0, None::<f64>);
        for q in &quarters {
            imp += q.energy.import_wh;
            exp += q.energy.export_wh;
            if let Some(p) = q.max_p_w {
                max_p = Some(max_p.map_or(p, |x| x.max(p)));
            }
        }
        let (thd, volt, checked) = power_quality(store, &m, from_ms, to_ms).await?;
        rows.push(ConsumptionRow {
            customer: m.customer.clone().unwrap_or_default(),
            site: m.site.clone().unwrap_or_default(),
            meter: m.id.to_string(),
            import_kwh: imp / 1000.0,
            export_kwh: exp / 1000.0,
            max_p_w: max_p,
            v_thd_over_limit: thd,
            voltage_out_of_range: volt,
            readings_checked: checked,
        });
    }
    rows.sort_by(|a, b| (&a.customer, &a.site, &a.meter).cmp(&(&b.customer, &b.site, &b.meter)));
    Ok(rows)
}

/// Counts raw readings outside the EN 50160 limits (THD 8 %, 230 V ± 10 %). Raw readings are
/// kept only for the retention period, so older periods report what is left.
async fn power_quality(
    store: &dyn Store,
    m: &Meter,
    from_ms: i64,
    to_ms: i64,
) -> Result<(u64, u64, u64), Error> {
    let (mut thd, mut volt, mut checked) = (0, 0, 0);
    let mut cursor = from_ms;
    loop {
        let page = store.readings(&m.id, cursor, to_ms, 5_000).await?;
        let Some(last) = page.last().map(|r| r.t_ms) else {
            break;
        };
        for r in &page {
            checked += 1;
            if r.reading
                .phases
                .iter()
                .any(|p| p.v_thd_pct.is_some_and(|t| t > 8.0))
            {
                thd += 1;
            }
            if r.reading
                .phases
                .iter()
                .any(|p| !(207.0..=253.0).contains(&p.v_rms))
            {
                volt += 1;
            }
        }
        if page.len() < 5_000 {
            break;
        }
        cursor = last + 1;
    }
    Ok((thd, volt, checked))
}

/// The consumption report as CSV.
pub fn consumption_csv(rows: &[ConsumptionRow]) -> String {
    let mut out = String::from(
        "customer,site,meter,import_kwh,export_kwh,net_kwh,max_p_w,readings_checked,v_thd_over_8pct,voltage_out_of_range\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{:.3},{:.3},{:.3},{},{},{},{}",
            csv_field(&r.customer),
            csv_field(&r.site),
            csv_field(&r.meter),
            r.import_kwh,
            r.export_kwh,
            r.import_kwh - r.export_kwh,
            r.max_p_w.map(|p| format!("{p:.1}")).unwrap_or_default(),
            r.readings_checked,
            r.v_thd_over_limit,
            r.voltage_out_of_range
        );
    }
    out
}

/// The consumption report as PDF: totals per customer and per site, the meter table, and a
/// chart of consumption per site.
pub fn consumption_pdf(rows: &[ConsumptionRow], from: NaiveDate, to: NaiveDate) -> Vec<u8> {
    let mut doc = Document::new(format!("Consumption {from} to {to}"));
    doc.heading(format!("Consumption report {from} to {to} (exclusive)"));
    let mut by_customer: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    let mut by_site: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for r in rows {
        let c = by_customer.entry(r.customer.as_str()).or_default();
        c.0 += r.import_kwh;
        c.1 += r.export_kwh;
        let s = by_site.entry(r.site.as_str()).or_default();
        s.0 += r.import_kwh;
        s.1 += r.export_kwh;
    }
    let cols = [0.0, 200.0, 290.0, 380.0];
    for (title, groups) in [("By customer", &by_customer), ("By area (site)", &by_site)] {
        doc.gap(6.0).heading(title);
        doc.row(
            &[
                (cols[0], "Name"),
                (cols[1], "Import kWh"),
                (cols[2], "Export kWh"),
                (cols[3], "Net kWh"),
            ],
            true,
        );
        for (name, (i, e)) in groups.iter() {
            let name = if name.is_empty() { "(none)" } else { name };
            let (i_s, e_s, n_s) = (
                format!("{i:.3}"),
                format!("{e:.3}"),
                format!("{:.3}", i - e),
            );
            doc.row(
                &[
                    (cols[0], name),
                    (cols[1], &i_s),
                    (cols[2], &e_s),
                    (cols[3], &n_s),
                ],
                false,
            );
        }
    }
    doc.gap(6.0).heading("Meters and power quality");
    let mcols = [0.0, 120.0, 200.0, 280.0, 360.0, 430.0];
    doc.row(
        &[
            (mcols[0], "Meter"),
            (mcols[1], "Customer"),
            (mcols[2], "Import kWh"),
            (mcols[3], "Export kWh"),
            (mcols[4], "THD > 8 %"),
            (mcols[5], "V out of range"),
        ],
        true,
    );
    for r in rows {
        let (i, e, t, v) = (
            format!("{:.3}", r.import_kwh),
            format!("{:.3}", r.export_kwh),
            format!("{}/{}", r.v_thd_over_limit, r.readings_checked),
            format!("{}/{}", r.voltage_out_of_range, r.readings_checked),
        );
        doc.row(
            &[
                (mcols[0], &r.meter),
                (mcols[1], &r.customer),
                (mcols[2], &i),
                (mcols[3], &e),
                (mcols[4], &t),
                (mcols[5], &v),
            ],
            false,
        );
    }
    doc.gap(10.0).chart(Chart {
        title: "Import per area (site)".into(),
        unit: "kWh".into(),
        bars: by_site
            .iter()
            .map(|(s, (i, _))| Bar {
                label: if s.is_empty() {
                    "(none)".into()
                } else {
                    (*s).to_owned()
                },
                value: *i,
            })
            .collect(),
    });
    doc.render()
}

/// One theft or tamper case in a theft-cases report.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseRow {
    /// Case number.
    pub id: i64,
    /// The suspect meter.
    pub meter: String,
    /// Its customer and site (empty when none).
    pub customer: String,
    pub site: String,
    /// `open`, `inspecting`, `confirmed` or `dismissed`.
    pub state: &'static str,
    /// What the case is about (the first alarm's message).
    pub title: String,
    /// Kinds of evidence (`theft_balance`, `tamper`, `pattern`), joined with `+`.
    pub evidence: String,
    /// Share of the observed energy unexplained, % (energy-balance cases).
    pub unexplained_pct: Option<f64>,
    /// Pattern score (0–1) when the case came from scoring.
    pub score: Option<f64>,
    /// When it was opened and last changed, Unix ms UTC.
    pub opened_ms: i64,
    pub updated_ms: i64,
    /// Who works on it.
    pub assignee: String,
}

/// The theft and tamper cases opened in `[from, to)`, plus those still open or under inspection
/// from before (an open case stays on every report until it is settled), oldest first.
pub async fn theft_cases(
    db: &crate::Database,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<CaseRow>, Error> {
    let (from_ms, to_ms) = (from.timestamp_millis(), to.timestamp_millis());
    let store = db.store();
    let cases = db
        .alarms()
        .cases(&crate::alarms::CaseFilter {
            limit: 100_000,
            ..Default::default()
        })
        .await?;
    let mut rows = Vec::new();
    for c in cases {
        let in_period = (from_ms..to_ms).contains(&c.opened_ms);
        let unsettled = c.opened_ms < to_ms && !c.state.is_final();
        if !(in_period || unsettled) {
            continue;
        }
        let meter = match schema::MeterId::parse(&c.meter) {
            Ok(id) => store.meter(&id).await?,
            Err(_) => None,
        };
        let items = c.evidence["items"].as_array().cloned().unwrap_or_default();
        let mut kinds: Vec<String> = items
            .iter()
            .filter_map(|i| i["kind"].as_str().map(str::to_owned))
            .collect();
        kinds.dedup();
        let unexplained_pct = items
            .iter()
            .filter_map(|i| i["unexplained_pct"].as_f64())
            .reduce(f64::max);
        rows.push(CaseRow {
            id: c.id,
            customer: meter
                .as_ref()
                .and_then(|m| m.customer.clone())
                .unwrap_or_default(),
            site: meter.and_then(|m| m.site).unwrap_or_default(),
            meter: c.meter,
            state: c.state.as_str(),
            title: c.title,
            evidence: kinds.join("+"),
            unexplained_pct,
            score: c.score,
            opened_ms: c.opened_ms,
            updated_ms: c.updated_ms,
            assignee: c.assignee.unwrap_or_default(),
        });
    }
    rows.sort_by_key(|r| (r.opened_ms, r.id));
    Ok(rows)
}

fn utc_text(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// The theft-cases report as CSV.
pub fn theft_cases_csv(rows: &[CaseRow]) -> String {
    let mut out = String::from(
        "case,meter,customer,site,state,evidence,unexplained_pct,score,opened_utc,updated_utc,assignee,title\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{}",
            r.id,
            csv_field(&r.meter),
            csv_field(&r.customer),
            csv_field(&r.site),
            r.state,
            csv_field(&r.evidence),
            r.unexplained_pct
                .map(|p| format!("{p:.2}"))
                .unwrap_or_default(),
            r.score.map(|s| format!("{s:.3}")).unwrap_or_default(),
            utc_text(r.opened_ms),
            utc_text(r.updated_ms),
            csv_field(&r.assignee),
            csv_field(&r.title)
        );
    }
    out
}

/// The theft-cases report as PDF: cases per state, a chart of them, and the case table.
pub fn theft_cases_pdf(rows: &[CaseRow], from: NaiveDate, to: NaiveDate) -> Vec<u8> {
    let mut doc = Document::new(format!("Theft cases {from} to {to}"));
    doc.heading(format!("Theft and tamper cases {from} to {to} (exclusive)"));
    doc.line("Cases opened in the period, and older cases still open or under inspection.");
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for s in ["open", "inspecting", "confirmed", "dismissed"] {
        by_state.insert(s, 0);
    }
    for r in rows {
        *by_state.entry(r.state).or_default() += 1;
    }
    let summary: Vec<String> = by_state.iter().map(|(s, n)| format!("{s}: {n}")).collect();
    doc.gap(4.0).line(summary.join("   "));
    let cols = [0.0, 40.0, 130.0, 210.0, 280.0, 370.0];
    doc.gap(6.0).row(
        &[
            (cols[0], "Case"),
            (cols[1], "Meter"),
            (cols[2], "Customer"),
            (cols[3], "State"),
            (cols[4], "Evidence"),
            (cols[5], "Opened"),
        ],
        true,
    );
    for r in rows {
        let (id, opened) = (r.id.to_string(), utc_text(r.opened_ms));
        let evidence = match r.unexplained_pct {
            Some(p) => format!("{} {p:.1} %", r.evidence),
            None => r.evidence.clone(),
        };
        doc.row(
            &[
                (cols[0], &id),
                (cols[1], &r.meter),
                (cols[2], &r.customer),
                (cols[3], r.state),
                (cols[4], &evidence),
                (cols[5], &opened),
            ],
            false,
        );
    }
    if rows.is_empty() {
        doc.line("No cases.");
    }
    doc.gap(10.0).chart(Chart {
        title: "Cases by state".into(),
        unit: "cases".into(),
        bars: by_state
            .iter()
            .map(|(s, n)| Bar {
                label: (*s).to_owned(),
                value: *n as f64,
            })
            .collect(),
    });
    doc.render()
}

/// The monthly scheduled run (job entry point for the runtime's scheduler): writes the
/// consumption report and the theft-cases report of the previous UTC calendar month as
/// `consumption-YYYY-MM.csv`/`.pdf` and `theft-cases-YYYY-MM.csv`/`.pdf` into `out_dir`.
/// Running it twice for one month rewrites the same files.
pub async fn run_monthly(
    db: &crate::Database,
    out_dir: &std::path::Path,
    now_ms: i64,
) -> Result<Vec<std::path::PathBuf>, Error> {
    let now = Utc
        .timestamp_millis_opt(now_ms)
        .single()
        .ok_or_else(|| Error::invalid(format!("time {now_ms} ms is out of range")))?;
    let this_month = NaiveDate::from_ymd_opt(now.year(), now.month(), 1)
        .ok_or_else(|| Error::invalid("no first day of this month"))?;
    let first = this_month
        .pred_opt()
        .and_then(|d| d.with_day(1))
        .ok_or_else(|| Error::invalid("no previous month"))?;
    let from = Utc.from_utc_datetime(&first.and_hms_opt(0, 0, 0).expect("midnight"));
    let to = Utc.from_utc_datetime(&this_month.and_hms_opt(0, 0, 0).expect("midnight"));
    let rows = consumption(db.store().as_ref(), from, to).await?;
    let cases = theft_cases(db, from, to).await?;
    let month = format!("{:04}-{:02}", first.year(), first.month());
    let stem = format!("consumption-{month}");
    let io = |e: std::io::Error| {
        Error::new(crate::ErrorKind::Unavailable(format!(
            "cannot write reports to {}: {e}",
            out_dir.display()
        )))
    };
    std::fs::create_dir_all(out_dir).map_err(io)?;
    let csv = out_dir.join(format!("{stem}.csv"));
    let pdf = out_dir.join(format!("{stem}.pdf"));
    std::fs::write(&csv, consumption_csv(&rows)).map_err(io)?;
    std::fs::write(&pdf, consumption_pdf(&rows, first, this_month)).map_err(io)?;
    let cases_csv = out_dir.join(format!("theft-cases-{month}.csv"));
    let cases_pdf = out_dir.join(format!("theft-cases-{month}.pdf"));
    std::fs::write(&cases_csv, theft_cases_csv(&cases)).map_err(io)?;
    std::fs::write(&cases_pdf, theft_cases_pdf(&cases, first, this_month)).map_err(io)?;
    Ok(vec![csv, pdf, cases_csv, cases_pdf])
}

#[cfg(test)]
mod tests;
