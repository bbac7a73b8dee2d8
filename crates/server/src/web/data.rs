//! Data behind the charts and gauges: column-oriented JSON for uPlot (`series.json`), usage
//! patterns (`profile.json`) and the live stream of a meter's readings as server-sent events.
//! Each checks that the caller may see the meter (404 otherwise).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{Datelike, TimeZone, Timelike};
use futures_util::stream::{self, Stream};
use schema::{Body, Reading};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::http::{ApiError, AppState, Caller};
use crate::{LiveBatch, Meter, Resolution, Rollup};

/// A time range in the query; defaults to the last `days` (7) days up to now.
#[derive(Debug, Deserialize)]
pub(crate) struct Range {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub days: Option<i64>,
    pub kind: Option<String>,
}

impl Range {
    /// `(from_ms, to_ms)`, checked: at most ten years, from before to.
    pub(crate) fn bounds(&self) -> Result<(i64, i64), ApiError> {
        let to = self.to_ms.unwrap_or_else(crate::now_ms);
        let days = self.days.unwrap_or(7).clamp(1, 3660);
        let from = self.from_ms.unwrap_or(to - days * 86_400_000);
        if from >= to || to - from > 3660 * 86_400_000 {
            return Err(ApiError::invalid(
                "the range must have from_ms before to_ms and span at most ten years",
            ));
        }
        Ok((from, to))
    }
}

/// Most raw readings a power chart plots before it switches to 15-minute rollups.
const RAW_LIMIT: i64 = 5_000;

/// `GET /web/meters/{id}/series.json?kind=power|hourly|daily|monthly&from_ms&to_ms|days`:
/// columns for uPlot, time in Unix seconds.
///
/// - `power`: `t`, `p_w`, `q_var`, `thd_pct` — raw readings when the span holds few, otherwise
///   15-minute averages from the energy rollups (a year is 35 040 points; uPlot draws that fast).
/// - `hourly` / `daily` / `monthly`: `t`, `import_kwh`, `export_kwh` per local bucket.
pub(crate) async fn series(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(range): Query<Range>,
) -> Result<Response, ApiError> {
    let meter = caller.visible_meter(&state, &id).await?;
    let (from, to) = range.bounds()?;
    let body = match range.kind.as_deref().unwrap_or("power") {
        "power" => power(&state, &meter, from, to).await?,
        "hourly" => energy(&state, &meter, Resolution::Hour, from, to).await?,
        "daily" => energy(&state, &meter, Resolution::Day, from, to).await?,
        "monthly" => energy(&state, &meter, Resolution::Month, from, to).await?,
        other => {
            return Err(ApiError::invalid(format!(
                "unknown series kind {other:?}: use power, hourly, daily or monthly"
            )));
        }
    };
    Ok(Json(body).into_response())
}

async fn power(state: &AppState, meter: &Meter, from: i64, to: i64) -> Result<Value, ApiError> {
    let interval_ms = i64::from(meter.reporting_interval_s.max(1)) * 1000;
    if (to - from) / interval_ms <= RAW_LIMIT {
        let rows = state
            .store
            .readings(&meter.id, from, to, RAW_LIMIT as u32 + 1)
            .await?;
        let n = rows.len();
        let (mut t, mut p, mut q, mut thd) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for r in &rows {
            t.push(r.t_ms as f64 / 1000.0);
            p.push(Some(r.reading.total.p_w));
            q.push(r.reading.total.q_var);
            thd.push(max_thd(&r.reading));
        }
        return Ok(json!({"source": "raw", "t": t, "p_w": p, "q_var": q, "thd_pct": thd}));
    }
    let rows = state
        .store
        .rollups(&meter.id, Resolution::Min15, from, to)
        .await?;
    let n = rows.len();
    let (mut t, mut p, mut q) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for r in &rows {
        let hours = (r.end_ms - r.start_ms).max(1) as f64 / 3_600_000.0;
        let e = &r.energy;
        t.push(r.start_ms as f64 / 1000.0);
        p.push(round1((e.import_wh - e.export_wh) / hours));
        q.push(round1(
            (e.q1_varh + e.q2_varh - e.q3_varh - e.q4_varh) / hours,
        ));
    }
    Ok(json!({"source": "15m", "t": t, "p_w": p, "q_var": q, "thd_pct": Value::Null}))
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The highest voltage THD of the phases, when measured.
fn max_thd(r: &Reading) -> Option<f64> {
    r.phases
        .iter()
        .filter_map(|p| p.v_thd_pct)
        .fold(None, |m, x| Some(m.map_or(x, |m: f64| m.max(x))))
}

async fn energy(
    state: &AppState,
    meter: &Meter,
    level: Resolution,
    from: i64,
    to: i64,
) -> Result<Value, ApiError> {
    let rows = state.store.rollups(&meter.id, level, from, to).await?;
    Ok(energy_columns(&rows))
}

fn energy_columns(rows: &[Rollup]) -> Value {
    let t: Vec<f64> = rows.iter().map(|r| r.start_ms as f64 / 1000.0).collect();
    let imp: Vec<f64> = rows
        .iter()
        .map(|r| (r.energy.import_wh / 10.0).round() / 100.0)
        .collect();
    let exp: Vec<f64> = rows
        .iter()
        .map(|r| (r.energy.export_wh / 10.0).round() / 100.0)
        .collect();
    json!({"t": t, "import_kwh": imp, "export_kwh": exp})
}

/// Usage patterns over hourly rollups in the meter's time zone (seed 002: teach peak habits).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct Profile {
    /// Average import per local hour of day, kWh (24 values).
    pub hour_kwh: Vec<f64>,
    /// Average import per weekday (Mon–Fri) day, kWh.
    pub weekday_kwh: f64,
    /// Average import per weekend day, kWh.
    pub weekend_kwh: f64,
    /// Share of the import in the peak hours, %.
    pub peak_share_pct: f64,
    /// Peak hours, local: `[from, to)`.
    pub peak_hours: (u32, u32),
    /// Import and export over the whole range, kWh.
    pub import_kwh: f64,
    pub export_kwh: f64,
}

/// Evening peak used for the share (local time).
pub(crate) const PEAK_HOURS: (u32, u32) = (17, 21);

/// Computes the patterns from hourly rollups.
pub(crate) fn profile_of(rows: &[Rollup], tz: chrono_tz::Tz) -> Profile {
    let mut hour_sum = [0.0_f64; 24];
    let mut hour_days = [0_u32; 24];
    let mut day_kwh: std::collections::BTreeMap<(i32, u32), (f64, bool)> = Default::default();
    let (mut total, mut peak, mut export) = (0.0, 0.0, 0.0);
    for r in rows {
        let Some(local) = tz.timestamp_millis_opt(r.start_ms).single() else {
            continue;
        };
        let kwh = r.energy.import_wh / 1000.0;
        let h = local.hour() as usize;
        hour_sum[h] += kwh;
        hour_days[h] += 1;
        let weekend = local.weekday().num_days_from_monday() >= 5;
        let e = day_kwh
            .entry((local.year(), local.ordinal()))
            .or_insert((0.0, weekend));
        e.0 += kwh;
        total += kwh;
        export += r.energy.export_wh / 1000.0;
        if (PEAK_HOURS.0..PEAK_HOURS.1).contains(&local.hour()) {
            peak += kwh;
        }
    }
    let avg = |v: Vec<f64>| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
    Profile {
        hour_kwh: (0..24)
            .map(|h| r3(hour_sum[h] / f64::from(hour_days[h].max(1))))
            .collect(),
        weekday_kwh: r3(avg(day_kwh
            .values()
            .filter(|d| !d.1)
            .map(|d| d.0)
            .collect())),
        weekend_kwh: r3(avg(day_kwh.values().filter(|d| d.1).map(|d| d.0).collect())),
        peak_share_pct: if total > 0.0 {
            (peak / total * 1000.0).round() / 10.0
        } else {
            0.0
        },
        peak_hours: PEAK_HOURS,
        import_kwh: r3(total),
        export_kwh: r3(export),
    }
}

/// `GET /web/meters/{id}/profile.json?days=N`: [`Profile`] over the range.
pub(crate) async fn profile(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(range): Query<Range>,
) -> Result<Response, ApiError> {
    let meter = caller.visible_meter(&state, &id).await?;
    let (from, to) = range.bounds()?;
    let rows = state
        .store
        .rollups(&meter.id, Resolution::Hour, from, to)
        .await?;
    let tz = meter.tz()?;
    Ok(Json(profile_of(&rows, tz)).into_response())
}

/// The gauge values of a reading: what the live stream sends.
pub(crate) fn gauge_json(t_ms: i64, r: &Reading) -> Value {
    let n = r.phases.len().max(1) as f64;
    let v = r.phases.iter().map(|p| p.v_rms).sum::<f64>() / n;
    let i: f64 = r.phases.iter().map(|p| p.i_rms).sum();
    json!({
        "t_ms": t_ms,
        "v": round1(v),
        "i": (i * 100.0).round() / 100.0,
        "p": round1(r.total.p_w),
        "pf": (r.total.pf * 1000.0).round() / 1000.0,
        "f": (r.freq_hz * 100.0).round() / 100.0,
        "import_kwh": (r.counters.import_wh / 10.0).round() / 100.0,
        "export_kwh": (r.counters.export_wh / 10.0).round() / 100.0,
    })
}

/// `GET /web/meters/{id}/live`: server-sent events `reading` (gauge values) for this meter as
/// ingest commits them, and `event` for its events. Starts with the newest stored reading.
pub(crate) async fn live(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let meter = caller.visible_meter(&state, &id).await?;
    // Subscribe before reading the latest, so nothing committed in between is missed.
    let rx = state.live.subscribe();
    let first = latest_newest(&state, &meter).await;
    let id = meter.id;
    let live = stream::unfold(rx, move |mut rx| {
        let id = id.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok(batch) if batch.meter == id => return Some((events_of(&batch), rx)),
                    Ok(_) => continue,
                    // A slow browser missed some: carry on with the newest.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    })
    .flat_map(stream::iter);
    use futures_util::StreamExt;
    Ok(Sse::new(stream::iter(first).chain(live))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The newest reading among all meters' latest, for this meter (fast path of the store).
async fn latest_newest(state: &AppState, meter: &Meter) -> Vec<Result<Event, Infallible>> {
    match state.store.latest_readings().await {
        Ok(rows) => rows
            .into_iter()
            .filter(|r| r.meter == meter.id)
            .map(|r| {
                Ok(Event::default()
                    .event("reading")
                    .data(gauge_json(r.t_ms, &r.reading).to_string()))
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn events_of(batch: &Arc<LiveBatch>) -> Vec<Result<Event, Infallible>> {
    batch
        .records
        .iter()
        .filter_map(|rec| match &rec.body {
            Body::Reading(r) => Some(Ok(Event::default()
                .event("reading")
                .data(gauge_json(rec.t_ms, r).to_string()))),
            Body::Event(e) => Some(Ok(Event::default().event("event").data(
                json!({"t_ms": rec.t_ms, "code": e.code, "detail": e.detail}).to_string(),
            ))),
            _ => None,
        })
        .collect()
}

/// `GET /web/fleet/live` (operators): every meter's total power as ingest commits readings,
/// events `reading` with `{"meter","t_ms","p"}`.
pub(crate) async fn fleet_live(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require(crate::http::Role::Operator)?;
    let rx = state.live.subscribe();
    let live = stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(batch) => {
                    let last = batch.records.iter().rev().find_map(|r| match &r.body {
                        Body::Reading(x) => Some((r.t_ms, x.total.p_w)),
                        _ => None,
                    });
                    if let Some((t_ms, p)) = last {
                        let data = json!({"meter": batch.meter.as_str(), "t_ms": t_ms, "p": p});
                        return Some((
                            Ok(Event::default().event("reading").data(data.to_string())),
                            rx,
                        ));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(live).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::EnergyCounters;

    fn hour(start_ms: i64, import_wh: f64) -> Rollup {
        Rollup {
            resolution: Resolution::Hour,
            start_ms,
            end_ms: start_ms + 3_600_000,
            energy: EnergyCounters {
                import_wh,
                ..EnergyCounters::default()
            },
            readings: 60,
            max_p_w: None,
        }
    }

    #[test]
    fn profile_splits_hours_weekends_and_peak() {
        // Monday 2026-01-05 00:00 UTC, two full days: Monday (weekday) and Saturday.
        let monday = 1_767_571_200_000_i64;
        let saturday = monday + 5 * 86_400_000;
        let mut rows = Vec::new();
        for h in 0..24 {
            let wh = if h == 18 { 2000.0 } else { 100.0 };
            rows.push(hour(monday + h * 3_600_000, wh));
            rows.push(hour(saturday + h * 3_600_000, wh * 2.0));
        }
        let p = profile_of(&rows, chrono_tz::UTC);
        assert_eq!(p.hour_kwh.len(), 24);
        assert!((p.hour_kwh[18] - 3.0).abs() < 1e-9, "{:?}", p.hour_kwh);
        assert!((p.hour_kwh[3] - 0.15).abs() < 1e-9);
        assert!((p.weekday_kwh - 4.3).abs() < 1e-9, "{}", p.weekday_kwh);
        assert!((p.weekend_kwh - 8.6).abs() < 1e-9);
        // Peak 17–21: 3 × 0.1 + 2.0 on Monday, doubled on Saturday → 6.9 of 12.9.
        assert!(
            (p.peak_share_pct - 53.5).abs() < 0.06,
            "{}",
            p.peak_share_pct
        );
    }

    #[test]
    fn ranges_are_checked() {
        let r = Range {
            from_ms: Some(10),
            to_ms: Some(5),
            days: None,
            kind: None,
        };
        assert!(r.bounds().is_err());
        let r = Range {
            from_ms: None,
            to_ms: Some(100 * 86_400_000),
            days: Some(30),
            kind: None,
        };
        assert_eq!(r.bounds().unwrap(), (70 * 86_400_000, 100 * 86_400_000));
    }
}
