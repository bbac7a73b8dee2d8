//! `GET /api/v1/meters/{id}/readings?from=&to=&resolution=`: raw readings or rollups of a
//! range. `auto` picks the finest level that stays under [`MAX_POINTS`] (`readings_auto`); an
//! explicit level is served as asked up to [`MAX_EXPLICIT_POINTS`]. Raw answers are cut at
//! [`MAX_POINTS`] with `truncated: true` and `next_from` to continue from.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::params::{Params, range};
use crate::http::{ApiError, AppState, Caller};
use crate::{MAX_POINTS, Resolution, Rollup, Series, StoredReading, readings_auto};

/// Most buckets an explicitly requested rollup level may return (a year of 15-minute buckets
/// is 35 040).
pub const MAX_EXPLICIT_POINTS: i64 = 100_000;

/// Longest range one request may cover.
const MAX_SPAN_MS: i64 = 20 * 366 * 86_400_000;

/// What the caller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Auto,
    Raw,
    Level(Resolution),
}

fn parse_resolution(v: Option<&str>) -> Result<Asked, ApiError> {
    Ok(match v {
        None | Some("auto") => Asked::Auto,
        Some("raw") => Asked::Raw,
        Some("15min" | "15m") => Asked::Level(Resolution::Min15),
        Some("hour" | "1h") => Asked::Level(Resolution::Hour),
        Some("day" | "1d") => Asked::Level(Resolution::Day),
        Some("month" | "1mo") => Asked::Level(Resolution::Month),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "query parameter `resolution`: {other:?} is not one of `auto`, `raw`, `15min`, `hour`, `day`, `month`"
            )));
        }
    })
}

/// The API name of a rollup level.
pub(crate) fn resolution_name(r: Resolution) -> &'static str {
    match r {
        Resolution::Min15 => "15min",
        Resolution::Hour => "hour",
        Resolution::Day => "day",
        Resolution::Month => "month",
    }
}

#[derive(Serialize)]
struct RawPoint<'a> {
    t_ms: i64,
    boot_id: u64,
    seq: u64,
    #[serde(flatten)]
    reading: &'a schema::Reading,
}

#[derive(Serialize)]
struct RollupPoint {
    start_ms: i64,
    end_ms: i64,
    import_wh: f64,
    export_wh: f64,
    q1_varh: f64,
    q2_varh: f64,
    q3_varh: f64,
    q4_varh: f64,
    readings: u64,
    max_p_w: Option<f64>,
}

impl From<&Rollup> for RollupPoint {
    fn from(r: &Rollup) -> Self {
        let e = &r.energy;
        Self {
            start_ms: r.start_ms,
            end_ms: r.end_ms,
            import_wh: e.import_wh,
            export_wh: e.export_wh,
            q1_varh: e.q1_varh,
            q2_varh: e.q2_varh,
            q3_varh: e.q3_varh,
            q4_varh: e.q4_varh,
            readings: r.readings,
            max_p_w: r.max_p_w,
        }
    }
}

#[derive(Serialize)]
struct Answer<'a, P: Serialize> {
    meter: &'a str,
    from_ms: i64,
    to_ms: i64,
    resolution: &'static str,
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_from_ms: Option<i64>,
    points: Vec<P>,
}

pub(crate) async fn get(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let p = Params::new(query, &["from", "to", "resolution"])?;
    let asked = parse_resolution(p.str("resolution"))?;
    let (from, to) = range(&p, 86_400_000, MAX_SPAN_MS)?;
    let meter = caller.visible_meter(&state, &id).await?;
    let series = match asked {
        Asked::Auto => readings_auto(state.store.as_ref(), &meter, from, to).await?,
        Asked::Raw => Series::Raw(
            state
                .store
                .readings(&meter.id, from, to, MAX_POINTS as u32 + 1)
                .await?,
        ),
        Asked::Level(level) => {
            let estimate = (to - from) / 1000 / level.nominal_s();
            if estimate > MAX_EXPLICIT_POINTS {
                return Err(ApiError::invalid(format!(
                    "query parameter `resolution`: {} over this range is about {estimate} points, more than {MAX_EXPLICIT_POINTS}; choose a coarser resolution or a shorter range",
                    resolution_name(level)
                )));
            }
            Series::Rollups(
                level,
                state.store.rollups(&meter.id, level, from, to).await?,
            )
        }
    };
    let meter_id = meter.id.as_str();
    Ok(match series {
        Series::Raw(mut rows) => {
            let truncated = rows.len() > MAX_POINTS as usize;
            rows.truncate(MAX_POINTS as usize);
            // The next page starts at the last time shown (not after it), so readings of
            // two boots sharing that instant are never skipped; they may show twice.
            let next_from_ms = truncated.then(|| rows.last().map_or(to, |r| r.t_ms));
            Json(Answer {
                meter: meter_id,
                from_ms: from,
                to_ms: to,
                resolution: "raw",
                truncated,
                next_from_ms,
                points: rows.iter().map(raw_point).collect(),
            })
            .into_response()
        }
        Series::Rollups(level, rows) => Json(Answer {
            meter: meter_id,
            from_ms: from,
            to_ms: to,
            resolution: resolution_name(level),
            truncated: false,
            next_from_ms: None,
            points: rows.iter().map(RollupPoint::from).collect(),
        })
        .into_response(),
    })
}

fn raw_point(r: &StoredReading) -> RawPoint<'_> {
    RawPoint {
        t_ms: r.t_ms,
        boot_id: r.boot_id,
        seq: r.seq,
        reading: &r.reading,
    }
}
