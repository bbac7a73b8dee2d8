//! Request parsing shared by the API handlers: query strings checked parameter by parameter
//! (every message names the parameter, unknown parameters are refused so a typo is not silently
//! ignored), times as ISO 8601 or Unix ms, and a JSON body extractor whose failures go through
//! [`ApiError`] (400 naming the field, 413 when too large).

use std::collections::HashMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Query, Request};
use axum::http::StatusCode;
use chrono::DateTime;
use serde::de::DeserializeOwned;

use crate::http::ApiError;

/// Query parameters of one request, taken one by one.
pub(crate) struct Params {
    map: HashMap<String, String>,
}

impl Params {
    /// Parses the query string and refuses parameters not in `allowed`.
    pub fn new(query: Query<HashMap<String, String>>, allowed: &[&str]) -> Result<Self, ApiError> {
        let map = query.0;
        let mut unknown: Vec<&String> = map
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .collect();
        unknown.sort();
        if let Some(k) = unknown.first() {
            return Err(ApiError::invalid(format!(
                "unknown query parameter `{k}`; this route takes {}",
                if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed
                        .iter()
                        .map(|a| format!("`{a}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )));
        }
        Ok(Self { map })
    }

    /// The raw value, when given and not empty.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.map
            .get(name)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// A time: ISO 8601 / RFC 3339 (`2026-03-29T00:00:00+01:00`, `...Z`) or Unix ms.
    pub fn time_ms(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.str(name).map(|v| parse_time_ms(name, v)).transpose()
    }

    /// An integer in `range`.
    pub fn int(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<Option<i64>, ApiError> {
        let Some(v) = self.str(name) else {
            return Ok(None);
        };
        let n: i64 = v.parse().map_err(|_| {
            ApiError::invalid(format!("query parameter `{name}`: {v:?} is not an integer"))
        })?;
        if !range.contains(&n) {
            return Err(ApiError::invalid(format!(
                "query parameter `{name}`: {n} is outside {} to {}",
                range.start(),
                range.end()
            )));
        }
        Ok(Some(n))
    }

    /// `true` or `false`.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.str(name) {
            None => Ok(None),
            Some("true" | "1") => Ok(Some(true)),
            Some("false" | "0") => Ok(Some(false)),
            Some(v) => Err(ApiError::invalid(format!(
                "query parameter `{name}`: {v:?} is not `true` or `false`"
            ))),
        }
    }
}

/// Earliest and latest times the API accepts (years 1970 to 2200): anything else is a mistake.
const MIN_MS: i64 = 0;
const MAX_MS: i64 = 7_258_118_400_000;

/// Parses ISO 8601 (RFC 3339, with a zone) or an integer of Unix milliseconds.
pub(crate) fn parse_time_ms(name: &str, v: &str) -> Result<i64, ApiError> {
    let ms = if let Ok(n) = v.parse::<i64>() {
        n
    } else {
        DateTime::parse_from_rfc3339(v)
            .map_err(|e| {
                ApiError::invalid(format!(
                    "query parameter `{name}`: {v:?} is neither ISO 8601 with a zone (e.g. 2026-01-31T00:00:00Z) nor Unix milliseconds ({e})"
                ))
            })?
            .timestamp_millis()
    };
    if !(MIN_MS..=MAX_MS).contains(&ms) {
        return Err(ApiError::invalid(format!(
            "query parameter `{name}`: {v:?} is outside 1970 to 2200"
        )));
    }
    Ok(ms)
}

/// A `[from, to)` range from `from`/`to` with defaults: `to` = now, `from` = `to - default_span_ms`.
pub(crate) fn range(
    p: &Params,
    default_span_ms: i64,
    max_span_ms: i64,
) -> Result<(i64, i64), ApiError> {
    let to = p.time_ms("to")?.unwrap_or_else(crate::now_ms);
    let from = p.time_ms("from")?.unwrap_or(to - default_span_ms).max(0);
    if from >= to {
        return Err(ApiError::invalid(format!(
            "query parameters `from` ({from}) and `to` ({to}): `from` must be before `to`"
        )));
    }
    if to - from > max_span_ms {
        return Err(ApiError::invalid(format!(
            "query parameters `from`/`to`: the range is longer than {} days",
            max_span_ms / 86_400_000
        )));
    }
    Ok((from, to))
}

/// A JSON body. Unlike axum's `Json`, its failures are [`ApiError`]s: 400 naming the field that
/// is wrong, 415 without a JSON content type, 413 when larger than the body limit.
pub(crate) struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(rejection) => Err(body_error(rejection)),
        }
    }
}

fn body_error(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    let text = rejection.body_text();
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            status,
            "too_large",
            format!(
                "request body is larger than {} bytes",
                super::MAX_BODY_BYTES
            ),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            status,
            "unsupported_media_type",
            "send the body as JSON with `content-type: application/json`",
        ),
        // A body larger than the limit surfaces as a failed read wrapped in a 400 by some
        // paths; its text says so.
        _ if text.contains("length limit") => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "request body is larger than {} bytes",
                super::MAX_BODY_BYTES
            ),
        ),
        _ => ApiError::invalid(format!("request body: {text}")),
    }
}

/// A meter or customer id path segment must be plain; used for customer ids.
pub(crate) fn check_customer_id(field: &str, id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "`{field}`: {id:?} must be 1 to 64 letters, digits, `-`, `_` or `.`"
        )))
    }
}
