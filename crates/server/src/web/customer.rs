//! Customer pages: my meters with consumption now, bill to date and projected, past bills,
//! payments and the cut-off date; per meter: live gauges, history by day/week/month/period,
//! patterns (hour of day, weekday vs weekend, peak share), import/export, and the CSV download
//! of readings. A customer reaches only meters assigned to them (`visible_meter`: 404 else).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{Duration, Utc};
use serde::Deserialize;

use super::data::Range;
use super::operator::is_online;
use super::{Frame, local_time, num, render, signed_in};
use crate::billing::BillingConfig;
use crate::http::{ApiError, AppState, Caller};
use crate::{Meter, MeterStatus};

/// The server clock as a UTC date-time (chrono's own clock is not compiled in; one clock).
fn now_utc() -> chrono::DateTime<Utc> {
    chrono::DateTime::from_timestamp_millis(crate::now_ms()).unwrap_or_default()
}

/// A meter card on the portal.
pub(crate) struct MeterCard {
    pub id: String,
    pub site: String,
    pub state: &'static str,
    pub last_seen: String,
    pub p_w: String,
    pub import_kwh: String,
    pub export_kwh: String,
}

/// A past bill row.
pub(crate) struct BillRow {
    pub period: String,
    pub total: String,
    pub status: &'static str,
    pub due: String,
}

/// A payment row.
pub(crate) struct PaymentRow {
    pub at: String,
    pub amount: String,
    pub method: String,
}

/// The billing box; `note` explains when there is nothing to show.
#[derive(Default)]
pub(crate) struct BillingView {
    pub currency: String,
    pub period: String,
    pub to_date: String,
    pub projected: String,
    pub method: String,
    pub cutoff: String,
    pub bills: Vec<BillRow>,
    pub payments: Vec<PaymentRow>,
    pub note: String,
}

#[derive(Template)]
#[template(path = "portal.html")]
struct PortalPage {
    frame: Frame,
    customer: String,
    meters: Vec<MeterCard>,
    billing: BillingView,
}

/// The customer a caller acts for: their own, or (staff) `?customer=`.
fn customer_of(caller: &Caller, asked: Option<&str>) -> Result<String, ApiError> {
    match (caller.customer_id.as_deref(), asked) {
        (Some(own), None) => Ok(own.to_owned()),
        (_, Some(c)) if caller.may_see_customer(c) => Ok(c.to_owned()),
        (_, Some(c)) => Err(ApiError::not_found(format!("no customer {c:?}"))),
        (None, None) => Err(ApiError::invalid(
            "this account is not bound to a customer: open /my?customer=ID",
        )),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct PortalQuery {
    customer: Option<String>,
}

/// `GET /my[?customer=ID]`.
pub(crate) async fn portal(
    caller: Result<Caller, ApiError>,
    uri: Uri,
    State(state): State<AppState>,
    Query(q): Query<PortalQuery>,
) -> Response {
    let caller = match signed_in(caller, &uri) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let page = async {
        let customer = customer_of(&caller, q.customer.as_deref())?;
        let now = crate::now_ms();
        let latest = state.store.latest_readings().await?;
        let meters: Vec<Meter> = state
            .store
            .meters()
            .await?
            .into_iter()
            .filter(|m| m.customer.as_deref() == Some(customer.as_str()))
            .collect();
        let cards = meters
            .iter()
            .map(|m| {
                let r = latest.iter().find(|r| r.meter == m.id);
                MeterCard {
                    id: m.id.as_str().to_owned(),
                    site: m.site.clone().unwrap_or_default(),
                    state: if m.status == MeterStatus::Deregistered {
                        "deregistered"
                    } else if is_online(m, now) {
                        "online"
                    } else {
                        "offline"
                    },
                    last_seen: m
                        .last_seen_ms
                        .map(|t| local_time(t, &m.time_zone))
                        .unwrap_or_else(|| "never".into()),
                    p_w: num(r.map(|r| r.reading.total.p_w), 0),
                    import_kwh: num(r.map(|r| r.reading.counters.import_wh / 1000.0), 1),
                    export_kwh: num(r.map(|r| r.reading.counters.export_wh / 1000.0), 1),
                }
            })
            .collect();
        let billing = billing_view(&state, &customer).await;
        Ok::<_, ApiError>(render(&PortalPage {
            frame: Frame::new("My meters", &caller),
            customer,
            meters: cards,
            billing,
        }))
    };
    page.await.unwrap_or_else(|e| e.into_response())
}

/// Bill to date, projection, past bills, payments and cut-off; a customer without a tariff
/// sees why instead of an error page.
async fn billing_view(state: &AppState, customer: &str) -> BillingView {
    let config = BillingConfig::default();
    let mut v = BillingView::default();
    match crate::billing::live_bill(&state.db, &config, customer, now_utc()).await {
        Ok(live) => {
            v.currency = live.to_date.currency.code().to_owned();
            v.period = format!("{} – {}", live.cycle.start, live.cycle.end);
            v.to_date = live.to_date.total.round_dp(2).to_string();
            v.projected = live
                .projected
                .map_or_else(|| "—".to_owned(), |p| p.total.round_dp(2).to_string());
            v.method = live.method.to_owned();
        }
        Err(e) => {
            tracing::info!(customer, error = %e, "portal: no live bill");
            v.note = if matches!(e.kind(), crate::ErrorKind::NotFound(_)) {
                "No tariff is assigned to this account yet: the bill to date appears once your \
                 utility assigns one."
                    .to_owned()
            } else {
                format!("The bill to date cannot be shown now: {e}")
            };
        }
    }
    let today = now_utc().date_naive();
    let cutoff_days = i64::from(config.terms.cutoff_after_due_days);
    match state.db.billing().bills(customer).await {
        Ok(mut bills) => {
            bills.sort_by_key(|b| std::cmp::Reverse(b.cycle_start));
            // The cut-off date of the oldest unpaid bill (before holiday shifts, which the
            // billing job applies when it acts).
            v.cutoff = bills
                .iter()
                .filter(|b| b.status != crate::store::billing::BillState::Paid)
                .map(|b| b.due_date + Duration::days(cutoff_days))
                .min()
                .map(|d| {
                    if d < today {
                        format!("{d} (passed)")
                    } else {
                        d.to_string()
                    }
                })
                .unwrap_or_default();
            v.bills = bills
                .iter()
                .take(12)
                .map(|b| BillRow {
                    period: format!("{} – {}", b.cycle_start, b.cycle_end),
                    total: format!("{} {}", b.total.round_dp(2), b.currency),
                    status: b.status.as_str(),
                    due: b.due_date.to_string(),
                })
                .collect();
        }
        Err(e) => tracing::warn!(customer, error = %e, "portal: bills unavailable"),
    }
    match state.db.billing().payments(customer).await {
        Ok(list) => {
            v.payments = list
                .iter()
                .rev()
                .take(12)
                .map(|p| PaymentRow {
                    at: local_time(p.payment.received_ms, "UTC"),
                    amount: p.payment.amount.round_dp(2).to_string(),
                    method: p.payment.method.clone(),
                })
                .collect();
        }
        Err(e) => tracing::warn!(customer, error = %e, "portal: payments unavailable"),
    }
    v
}

#[derive(Template)]
#[template(path = "my_meter.html")]
struct MyMeterPage {
    frame: Frame,
    id: String,
    tz: String,
    state: &'static str,
    last_seen: String,
    export: bool,
    today: String,
    month_ago: String,
    gauges: [(
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    ); 5],
}

/// `GET /my/meters/{id}`: a customer's meter: gauges, history, patterns, CSV.
pub(crate) async fn meter(
    caller: Result<Caller, ApiError>,
    uri: Uri,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Response {
    let caller = match signed_in(caller, &uri) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let page = async {
        let m = caller.visible_meter(&state, &id).await?;
        let now = crate::now_ms();
        let today = now_utc().date_naive();
        Ok::<_, ApiError>(render(&MyMeterPage {
            frame: Frame::new(format!("Meter {}", m.id.as_str()), &caller),
            id: m.id.as_str().to_owned(),
            tz: m.time_zone.clone(),
            state: if m.status == MeterStatus::Deregistered {
                "deregistered"
            } else if is_online(&m, now) {
                "online"
            } else {
                "offline"
            },
            last_seen: m
                .last_seen_ms
                .map(|t| local_time(t, &m.time_zone))
                .unwrap_or_else(|| "never".into()),
            export: m.allowed_export,
            today: today.to_string(),
            month_ago: (today - Duration::days(30)).to_string(),
            gauges: super::GAUGES,
        }))
    };
    page.await.unwrap_or_else(|e| e.into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct CsvQuery {
    /// First day, `YYYY-MM-DD`, in the meter's time zone.
    from: Option<String>,
    /// Last day (inclusive).
    to: Option<String>,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
}

/// Most rows one CSV download carries (a year at one-minute readings is ~525 600).
const CSV_MAX_ROWS: u32 = 600_000;

/// `GET /my/meters/{id}/readings.csv?from=YYYY-MM-DD&to=YYYY-MM-DD`: the meter's readings in
/// the period (local days, inclusive), one row per reading.
pub(crate) async fn csv(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<CsvQuery>,
) -> Result<Response, ApiError> {
    let meter = caller.visible_meter(&state, &id).await?;
    let tz = meter.tz()?;
    let day = |s: &str| {
        chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map_err(|_| ApiError::invalid(format!("date {s:?}: use YYYY-MM-DD")))
    };
    let local_midnight_ms = |d: chrono::NaiveDate| -> Result<i64, ApiError> {
        use chrono::TimeZone;
        let naive = d.and_hms_opt(0, 0, 0).unwrap_or_default();
        tz.from_local_datetime(&naive)
            .earliest()
            .map(|t| t.timestamp_millis())
            .ok_or_else(|| ApiError::invalid(format!("no local midnight on {d}")))
    };
    let (from_ms, to_ms) = match (q.from.as_deref(), q.to.as_deref()) {
        (Some(f), Some(t)) => (
            local_midnight_ms(day(f)?)?,
            local_midnight_ms(day(t)? + Duration::days(1))?,
        ),
        _ => Range {
            from_ms: q.from_ms,
            to_ms: q.to_ms,
            days: Some(1),
            kind: None,
        }
        .bounds()?,
    };
    if from_ms >= to_ms || to_ms - from_ms > 366 * 86_400_000 {
        return Err(ApiError::invalid(
            "the period must end after it starts and span at most 366 days",
        ));
    }
    let rows = state
        .store
        .readings(&meter.id, from_ms, to_ms, CSV_MAX_ROWS)
        .await?;
    let mut out = String::with_capacity(64 + rows.len() * 96);
    out.push_str("time_utc,time_local,p_w,q_var,pf,freq_hz,v_rms,i_rms,import_kwh,export_kwh\n");
    for r in &rows {
        use chrono::TimeZone;
        let utc = Utc.timestamp_millis_opt(r.t_ms).single();
        let local = utc.map(|u| u.with_timezone(&tz));
        let g = super::data::gauge_json(r.t_ms, &r.reading);
        out.push_str(&format!(
            "{},{},{:.1},{},{:.3},{:.2},{},{},{:.3},{:.3}\n",
            utc.map(|u| u.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_default(),
            local
                .map(|l| l.format("%Y-%m-%dT%H:%M:%S%:z").to_string())
                .unwrap_or_default(),
            r.reading.total.p_w,
            r.reading
                .total
                .q_var
                .map(|q| format!("{q:.1}"))
                .unwrap_or_default(),
            r.reading.total.pf,
            r.reading.freq_hz,
            g["v"],
            g["i"],
            r.reading.counters.import_wh / 1000.0,
            r.reading.counters.export_wh / 1000.0,
        ));
    }
    let name = format!(
        "attachment; filename=\"{}-{}-{}.csv\"",
        meter.id.as_str(),
        local_time(from_ms, &meter.time_zone)
            .get(..10)
            .unwrap_or(""),
        local_time(to_ms - 1, &meter.time_zone)
            .get(..10)
            .unwrap_or("")
    );
    let mut r = out.into_response();
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&name) {
        h.insert(CONTENT_DISPOSITION, v);
    }
    Ok(r)
}
