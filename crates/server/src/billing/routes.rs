//! Billing routes under `/api/v1`: a customer's bills (JSON, `.pdf`, `.csv`), bill to date and
//! projection, payments; operators record payments and run billing cycles; admins create and
//! correct tariffs and assign them. In-app notifications and preferences for every user.
//!
//! A customer reaches only their own customer id; a bill id from another customer's path is
//! answered 404, exactly like a bill that does not exist.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use chrono::{NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{BillingConfig, NewPayment, PaymentMode, StoredBill, TariffAssignment};
use crate::billing::NotificationPref;
use crate::http::{ApiError, AppState, Caller, Role};

/// The billing routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/customers/{id}/bills", get(list_bills))
        .route("/api/v1/customers/{id}/bills/{bill}", get(get_bill))
        .route("/api/v1/customers/{id}/bill-to-date", get(bill_to_date))
        .route(
            "/api/v1/customers/{id}/payments",
            get(list_payments).post(create_payment),
        )
        .route("/api/v1/customers/{id}/tariff", put(assign_tariff))
        .route("/api/v1/billing/runs", post(run_cycle))
        .route("/api/v1/tariffs", get(list_tariffs))
        .route("/api/v1/tariffs/{id}", put(put_tariff).get(get_tariff))
        .route("/api/v1/notifications", get(list_notifications))
        .route(
            "/api/v1/notifications/preferences",
            get(list_prefs).put(put_pref),
        )
}

/// The server clock as a chrono instant (chrono is built without its clock feature; the one
/// clock is `crate::now_ms`).
fn now_utc() -> chrono::DateTime<Utc> {
    chrono::TimeZone::timestamp_millis_opt(&Utc, crate::now_ms())
        .single()
        .unwrap_or_default()
}

fn visible_customer(caller: &Caller, id: &str) -> Result<(), ApiError> {
    if caller.may_see_customer(id) {
        Ok(())
    } else {
        // Same answer as a customer that does not exist: no probing of other ids.
        Err(ApiError::not_found(format!("customer {id}")))
    }
}

fn bill_json(b: &StoredBill, with_lines: bool) -> Value {
    let mut v = json!({
        "id": b.id,
        "customer": b.customer,
        "period_start": b.cycle_start.to_string(),
        "period_end": b.cycle_end.to_string(),
        "status": b.status.as_str(),
        "tariff": b.tariff_id,
        "tariff_revision": b.tariff_revision,
        "currency": b.currency,
        "subtotal": b.subtotal.to_string(),
        "taxes": b.taxes.to_string(),
        "total": b.total.to_string(),
        "adjustments": b.adjustments.to_string(),
        "import_wh": b.import_wh,
        "export_wh": b.export_wh,
        "issued_ms": b.issued_ms,
        "due_date": b.due_date.to_string(),
    });
    if with_lines {
        v["lines"] = b
            .lines
            .iter()
            .map(|l| {
                json!({
                    "kind": l.kind,
                    "description": l.description,
                    "quantity": l.quantity.to_string(),
                    "unit": l.unit,
                    "unit_price": l.unit_price.to_string(),
                    "amount": l.amount.to_string(),
                })
            })
            .collect();
    }
    v
}

fn billing_bill_json(b: &billing::Bill) -> Value {
    json!({
        "currency": b.currency.code(),
        "subtotal": b.subtotal.to_string(),
        "taxes": b.taxes.to_string(),
        "total": b.total.to_string(),
        "import_wh": b.energy.import_wh,
        "export_wh": b.energy.export_wh,
        "lines": b.lines.iter().map(|l| json!({
            "kind": l.kind.as_str(),
            "description": l.description,
            "quantity": l.quantity.to_string(),
            "unit": l.unit.symbol(),
            "unit_price": l.unit_price.to_string(),
            "amount": l.amount.to_string(),
        })).collect::<Vec<_>>(),
    })
}

async fn list_bills(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    visible_customer(&caller, &id)?;
    let today = now_utc().date_naive();
    let balance = super::settle(&state.db, &id, today).await?;
    let bills = state.db.billing().bills(&id).await?;
    Ok(Json(json!({
        "customer": id,
        "billed": balance.billed.to_string(),
        "paid": balance.paid.to_string(),
        "balance": balance.balance.to_string(),
        "bills": bills.iter().map(|b| bill_json(b, false)).collect::<Vec<_>>(),
    })))
}

async fn get_bill(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, bill)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    visible_customer(&caller, &id)?;
    let (bill_id, format) = match bill.rsplit_once('.') {
        Some((b, "pdf")) => (b, "pdf"),
        Some((b, "csv")) => (b, "csv"),
        Some(_) => return Err(ApiError::not_found(format!("bill {bill}"))),
        None => (bill.as_str(), "json"),
    };
    let stored = state
        .db
        .billing()
        .bill(bill_id)
        .await?
        .filter(|b| b.customer == id)
        .ok_or_else(|| ApiError::not_found(format!("bill {bill_id}")))?;
    let customer = state
        .store
        .customer(&id)
        .await?
        .unwrap_or_else(|| crate::Customer {
            id: id.clone(),
            name: id.clone(),
            time_zone: "UTC".into(),
        });
    let file = format!("bill-{}-{}.{format}", id, stored.cycle_start);
    let disposition = format!("attachment; filename=\"{file}\"");
    match format {
        "csv" => Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (header::CONTENT_DISPOSITION, disposition),
            ],
            crate::reports::statement_csv(&stored, &customer),
        )
            .into_response()),
        "pdf" => {
            let tz = customer.time_zone.parse().unwrap_or(chrono_tz::UTC);
            let from = billing::start_of_day(tz, stored.cycle_start);
            let to = billing::start_of_day(tz, stored.cycle_end);
            let daily = crate::reports::daily_kwh(state.store.as_ref(), &id, from, to, tz).await?;
            let bytes = crate::reports::statement_pdf(&stored, &customer, &daily);
            Ok((
                [
                    (header::CONTENT_TYPE, "application/pdf".to_owned()),
                    (header::CONTENT_DISPOSITION, disposition),
                ],
                bytes,
            )
                .into_response())
        }
        _ => Ok(Json(bill_json(&stored, true)).into_response()),
    }
}

async fn bill_to_date(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    visible_customer(&caller, &id)?;
    let live = super::live_bill(&state.db, &BillingConfig::default(), &id, now_utc()).await?;
    Ok(Json(json!({
        "customer": id,
        "period_start": live.cycle.start.to_string(),
        "period_end": live.cycle.end.to_string(),
        "to_date": billing_bill_json(&live.to_date),
        "projected": live.projected.as_ref().map(billing_bill_json),
        "projection_method": live.method,
    })))
}

async fn list_payments(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    visible_customer(&caller, &id)?;
    let payments = state.db.billing().payments(&id).await?;
    Ok(Json(json!({
        "customer": id,
        "payments": payments.iter().map(|p| json!({
            "id": p.id,
            "amount": p.payment.amount.to_string(),
            "method": p.payment.method,
            "reference": p.payment.reference,
            "received_ms": p.payment.received_ms,
            "recorded_by": p.payment.recorded_by,
        })).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
struct PaymentBody {
    /// Decimal text, e.g. `"25.50"` (never a JSON float: money stays exact).
    amount: String,
    method: String,
    #[serde(default)]
    reference: String,
    received_ms: Option<i64>,
}

async fn create_payment(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<PaymentBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Role::Operator)?;
    if state.store.customer(&id).await?.is_none()
        && state.db.billing().assignments(&id).await?.is_empty()
    {
        return Err(ApiError::not_found(format!("customer {id}")));
    }
    let amount: Decimal = body.amount.parse().map_err(|_| {
        ApiError::invalid(format!("amount {:?} is not a decimal number", body.amount))
    })?;
    if body.method.trim().is_empty() {
        return Err(ApiError::invalid("method must not be empty"));
    }
    let stored = super::record_payment(
        &state.db,
        &NewPayment {
            customer: id.clone(),
            amount,
            method: body.method,
            reference: body.reference,
            received_ms: body.received_ms.unwrap_or_else(crate::now_ms),
            recorded_by: caller.username.clone(),
        },
    )
    .await?;
    tracing::info!(customer = %id, payment = stored.id, by = %caller.username, "payment recorded");
    crate::auth::audit(
        &state,
        &caller,
        "payment.record",
        &format!("customer:{id}"),
        &format!(
            "payment {} of {} by {} (reference {:?})",
            stored.id, stored.payment.amount, stored.payment.method, stored.payment.reference
        ),
    )
    .await?;
    let balance = super::settle(&state.db, &id, now_utc().date_naive()).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": stored.id, "balance": balance.balance.to_string()})),
    ))
}

#[derive(Deserialize)]
struct RunBody {
    /// `YYYY-MM-DD`.
    period_start: String,
    /// `YYYY-MM-DD`, exclusive.
    period_end: String,
}

fn date_field(name: &str, value: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map_err(|_| ApiError::invalid(format!("{name} {value:?} is not a YYYY-MM-DD date")))
}

async fn run_cycle(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<RunBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Operator)?;
    let start = date_field("period_start", &body.period_start)?;
    let end = date_field("period_end", &body.period_end)?;
    if end <= start {
        return Err(ApiError::invalid("period_end must be after period_start"));
    }
    let cycle = billing::Cycle::new(start, end);
    let report =
        super::run_cycle(&state.db, &BillingConfig::default(), cycle, crate::now_ms()).await?;
    tracing::info!(by = %caller.username, issued = report.issued.len(), "bill run");
    if let Some(n) = &state.notifier {
        for bill in &report.issued {
            n.raise_logged(&crate::notify::Incident::bill_issued(bill))
                .await;
        }
    }
    crate::auth::audit(
        &state,
        &caller,
        "billing.run",
        &format!("cycle:{start}..{end}"),
        &format!(
            "{} bills issued, {} already billed, {} failed",
            report.issued.len(),
            report.already_billed.len(),
            report.failed.len()
        ),
    )
    .await?;
    Ok(Json(json!({
        "issued": report.issued.iter().map(|b| bill_json(b, false)).collect::<Vec<_>>(),
        "already_billed": report.already_billed,
        "failed": report.failed.iter().map(|(c, e)| json!({"customer": c, "error": e})).collect::<Vec<_>>(),
    })))
}

async fn list_tariffs(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Operator)?;
    let tariffs = state.db.billing().tariffs().await?;
    Ok(Json(json!({
        "tariffs": tariffs.iter().map(|t| json!({
            "id": t.id, "revision": t.revision, "name": t.name, "currency": t.currency,
            "created_ms": t.created_ms, "created_by": t.created_by,
        })).collect::<Vec<_>>(),
    })))
}

async fn get_tariff(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Operator)?;
    let revisions = state.db.billing().tariff_revisions(&id).await?;
    if revisions.is_empty() {
        return Err(ApiError::not_found(format!("tariff {id}")));
    }
    Ok(Json(json!({
        "id": id,
        "revisions": revisions.iter().map(|t| json!({
            "revision": t.revision, "name": t.name, "currency": t.currency, "toml": t.toml,
            "created_ms": t.created_ms, "created_by": t.created_by,
        })).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
struct RerateQuery {
    /// Re-rate the issued bills of this tariff with the new revision.
    #[serde(default)]
    rerate: bool,
    /// Why the tariff is stored or corrected, for the audit trail.
    #[serde(default)]
    reason: Option<String>,
}

/// Creates a tariff or stores a corrected revision (body: the TOML text). Every revision is
/// kept with who stored it and when: the tariff history is the audit trail.
async fn put_tariff(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<RerateQuery>,
    body: String,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Role::Admin)?;
    let tariff =
        billing::Tariff::from_toml(&body).map_err(|e| ApiError::invalid(format!("tariff: {e}")))?;
    if tariff.id() != id {
        return Err(ApiError::invalid(format!(
            "the TOML's id {:?} is not the path's {id:?}",
            tariff.id()
        )));
    }
    let now = crate::now_ms();
    let revision = state
        .db
        .billing()
        .put_tariff(
            &id,
            tariff.name(),
            tariff.currency().code(),
            &body,
            &caller.username,
            now,
        )
        .await?;
    tracing::info!(tariff = %id, revision, by = %caller.username, "tariff stored");
    let mut rerated = Vec::new();
    if q.rerate {
        for r in super::rerate_tariff(&state.db, &id, now).await? {
            if r.changed {
                rerated.push(json!({"bill": r.bill.id, "difference": r.difference.to_string()}));
            }
        }
    }
    let why = q.reason.as_deref().map(str::trim).filter(|r| !r.is_empty());
    crate::auth::audit(
        &state,
        &caller,
        "tariff.put",
        &format!("tariff:{id}"),
        &format!(
            "revision {revision} ({}); {} issued bills re-rated{}",
            if revision == 1 { "new" } else { "correction" },
            rerated.len(),
            why.map(|r| format!("; reason: {r}")).unwrap_or_default()
        ),
    )
    .await?;
    let status = if revision == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({"id": id, "revision": revision, "rerated": rerated})),
    ))
}

#[derive(Deserialize)]
struct AssignBody {
    tariff: String,
    /// `YYYY-MM-DD`.
    valid_from: String,
    #[serde(default = "postpaid")]
    payment_mode: String,
    #[serde(default)]
    protected: bool,
}

fn postpaid() -> String {
    "postpaid".into()
}

async fn assign_tariff(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<AssignBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    if state.db.billing().tariff(&body.tariff).await?.is_none() {
        return Err(ApiError::not_found(format!("tariff {}", body.tariff)));
    }
    let mode = PaymentMode::parse(&body.payment_mode)?;
    let valid_from = date_field("valid_from", &body.valid_from)?;
    state
        .db
        .billing()
        .assign_tariff(&TariffAssignment {
            customer: id.clone(),
            valid_from,
            tariff_id: body.tariff.clone(),
            payment_mode: mode,
            protected: body.protected,
        })
        .await?;
    tracing::info!(customer = %id, tariff = %body.tariff, by = %caller.username, "tariff assigned");
    crate::auth::audit(
        &state,
        &caller,
        "tariff.assign",
        &format!("customer:{id}"),
        &format!(
            "tariff {} from {valid_from}, {}{}",
            body.tariff,
            body.payment_mode,
            if body.protected {
                ", protected from disconnection"
            } else {
                ""
            }
        ),
    )
    .await?;
    Ok(Json(
        json!({"customer": id, "tariff": body.tariff, "valid_from": valid_from.to_string()}),
    ))
}

#[derive(Deserialize)]
struct SinceQuery {
    #[serde(default)]
    since_ms: i64,
}

async fn list_notifications(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<SinceQuery>,
) -> Result<Json<Value>, ApiError> {
    let msgs = state
        .db
        .billing()
        .user_messages(&caller.username, "inapp", q.since_ms, 200)
        .await?;
    Ok(Json(json!({
        "notifications": msgs.iter().filter(|m| m.status == crate::billing::MessageStatus::Sent).map(|m| json!({
            "id": m.id,
            "rule": m.message.rule,
            "customer": m.message.customer,
            "subject": m.message.subject,
            "body": m.message.body,
            "created_ms": m.message.created_ms,
        })).collect::<Vec<_>>(),
    })))
}

async fn list_prefs(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let prefs = state.db.billing().prefs(&caller.username).await?;
    Ok(Json(json!({
        "preferences": prefs.iter().map(|p| json!({
            "rule": p.rule, "channel": p.channel, "target": p.target, "enabled": p.enabled,
        })).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
struct PrefBody {
    rule: String,
    channel: String,
    #[serde(default)]
    target: String,
    enabled: bool,
}

async fn put_pref(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<PrefBody>,
) -> Result<Json<Value>, ApiError> {
    if crate::notify::Rule::parse(&body.rule).is_none() {
        return Err(ApiError::invalid(format!("unknown rule {:?}", body.rule)));
    }
    if !crate::notify::CHANNELS.contains(&body.channel.as_str()) {
        return Err(ApiError::invalid(format!(
            "unknown channel {:?}",
            body.channel
        )));
    }
    if body.channel == "webhook" && body.enabled {
        // Server-side request forgery guard: only public http(s) hosts, unless the operator
        // allows private ones ([notify] allow_private_webhooks). Checked again at delivery.
        let allow_private = state
            .notifier
            .as_ref()
            .is_some_and(|n| n.config().allow_private_webhooks);
        crate::notify::check_webhook_target(&body.target, allow_private)
            .await
            .map_err(|e| ApiError::invalid(format!("target: {e}")))?;
    }
    if body.channel == "email" && !body.target.contains('@') {
        return Err(ApiError::invalid("an email target must be a mail address"));
    }
    let customer = if caller.role == Role::Customer {
        Some(
            caller
                .customer_id
                .clone()
                .ok_or_else(|| ApiError::forbidden("no customer account"))?,
        )
    } else {
        None
    };
    state
        .db
        .billing()
        .set_pref(&NotificationPref {
            username: caller.username.clone(),
            customer,
            rule: body.rule.clone(),
            channel: body.channel.clone(),
            target: body.target,
            enabled: body.enabled,
        })
        .await?;
    Ok(Json(
        json!({"rule": body.rule, "channel": body.channel, "enabled": body.enabled}),
    ))
}
