//! Operator pages: the fleet overview (status, relay, live power, filters, site totals), the
//! meter page (live gauges, charts, events, relay control with reason and live status) and the
//! registration forms (customers, meters, assignment, parent meter, site, deregistration).

use std::collections::BTreeMap;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Redirect, Response};
use schema::{Action, MeterId};
use serde::Deserialize;

use super::{Frame, local_time, num, render, signed_in};
use crate::http::{ApiError, AppState, Caller, Role};
use crate::{CommandStatus, Customer, Meter, MeterStatus, NewCommand, StoredCommand, StoredEvent};

/// A meter counts as online when it delivered within three reporting intervals (at least 3 min).
pub(crate) fn is_online(m: &Meter, now_ms: i64) -> bool {
    let window_ms = (i64::from(m.reporting_interval_s) * 3_000).max(180_000);
    m.status == MeterStatus::Active && m.last_seen_ms.is_some_and(|t| now_ms - t <= window_ms)
}

/// One row of the fleet table.
pub(crate) struct FleetRow {
    pub id: String,
    pub customer: String,
    pub site: String,
    pub state: &'static str,
    pub since: String,
    pub relay: String,
    pub alarms: usize,
    pub p_w: String,
}

/// Per-site totals.
pub(crate) struct SiteTotal {
    pub site: String,
    pub meters: usize,
    pub online: usize,
    pub p_kw: String,
}

#[derive(Template)]
#[template(path = "fleet.html")]
struct FleetPage {
    frame: Frame,
    rows: Vec<FleetRow>,
    sites: Vec<SiteTotal>,
    q: String,
    status: String,
    total: usize,
    online: usize,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct FleetQuery {
    q: Option<String>,
    status: Option<String>,
}

/// The relay state as the meter last reported it — a `relay_state_changed` event, which also
/// covers a local limiter trip and a manual reconnection — or, when newer (the event still on its
/// way), as the last succeeded relay command left it. The pages pass the meter's newest such
/// event however old it is (`Store::latest_event`), not a recent window.
fn relay_state(commands: &[StoredCommand], events: &[StoredEvent]) -> String {
    let reported = events
        .iter()
        .filter(|e| e.event.code == "relay_state_changed")
        .filter_map(|e| {
            let detail: serde_json::Value =
                serde_json::from_str(e.event.detail.as_deref()?).ok()?;
            let to = detail.get("to")?.as_str()?.replace('_', " ");
            Some((e.t_ms, to))
        })
        .max_by_key(|(t, _)| *t);
    let commanded = commands
        .iter()
        .find(|c| {
            c.status == CommandStatus::Succeeded
                && matches!(
                    c.command.action,
                    Action::RelayConnect | Action::RelayDisconnect
                )
        })
        .map(|c| {
            let to = match c.command.action {
                Action::RelayDisconnect => "disconnected",
                _ => "connected",
            };
            (c.updated_ms, to.to_owned())
        });
    match (reported, commanded) {
        (Some(r), Some(c)) => {
            if c.0 > r.0 {
                c.1
            } else {
                r.1
            }
        }
        (Some(r), None) => r.1,
        (None, Some(c)) => c.1,
        (None, None) => "connected".to_owned(),
    }
}

/// `GET /fleet?q=&status=online|offline|deregistered`.
pub(crate) async fn fleet(
    caller: Result<Caller, ApiError>,
    uri: Uri,
    State(state): State<AppState>,
    Query(query): Query<FleetQuery>,
) -> Response {
    let caller = match signed_in(caller, &uri) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match fleet_page(&caller, &state, query).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn fleet_page(
    caller: &Caller,
    state: &AppState,
    query: FleetQuery,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    let now = crate::now_ms();
    let meters = state.store.meters().await?;
    let latest: BTreeMap<String, f64> = state
        .store
        .latest_readings()
        .await?
        .into_iter()
        .map(|r| (r.meter.as_str().to_owned(), r.reading.total.p_w))
        .collect();
    let open_alarms = open_alarm_counts(state).await;
    let q = query.q.unwrap_or_default().trim().to_lowercase();
    let status = query.status.unwrap_or_default();
    let mut rows = Vec::new();
    let mut sites: BTreeMap<String, SiteTotal> = BTreeMap::new();
    let mut site_p: BTreeMap<String, f64> = BTreeMap::new();
    let (total, mut online_n) = (meters.len(), 0);
    for m in &meters {
        let online = is_online(m, now);
        online_n += usize::from(online);
        let state_s = match (m.status, online) {
            (MeterStatus::Deregistered, _) => "deregistered",
            (_, true) => "online",
            (_, false) => "offline",
        };
        let id = m.id.as_str().to_owned();
        let site = m.site.clone().unwrap_or_default();
        let p = latest.get(&id).copied();
        let s = sites.entry(site.clone()).or_insert_with(|| SiteTotal {
            site: if site.is_empty() {
                "(no site)".into()
            } else {
                site.clone()
            },
            meters: 0,
            online: 0,
            p_kw: String::new(),
        });
        s.meters += 1;
        s.online += usize::from(online);
        if online {
            *site_p.entry(site.clone()).or_default() += p.unwrap_or(0.0);
        }
        let hay = format!(
            "{} {} {}",
            id.to_lowercase(),
            site.to_lowercase(),
            m.customer.clone().unwrap_or_default().to_lowercase()
        );
        if (!q.is_empty() && !hay.contains(&q)) || (!status.is_empty() && status != state_s) {
            continue;
        }
        let commands = state.store.commands(&m.id, None).await?;
        let relay = state
            .store
            .latest_event(&m.id, "relay_state_changed")
            .await?;
        rows.push(FleetRow {
            customer: m.customer.clone().unwrap_or_default(),
            site,
            state: state_s,
            since: match (online, m.last_seen_ms) {
                (false, Some(t)) => local_time(t, &m.time_zone),
                (false, None) => "never seen".into(),
                (true, Some(t)) => local_time(t, &m.time_zone),
                (true, None) => String::new(),
            },
            relay: relay_state(&commands, relay.as_slice()),
            alarms: open_alarms.get(&id).copied().unwrap_or(0),
            p_w: num(p, 0),
            id,
        });
    }
    for (site, s) in sites.iter_mut() {
        s.p_kw = num(Some(site_p.get(site).copied().unwrap_or(0.0) / 1000.0), 2);
    }
    Ok(render(&FleetPage {
        frame: Frame::new("Fleet", caller),
        rows,
        sites: sites.into_values().collect(),
        q,
        status,
        total,
        online: online_n,
    }))
}

/// Open (not resolved) alarms per meter; empty when the alarm store cannot answer (the fleet
/// page still shows, the failure is logged).
async fn open_alarm_counts(state: &AppState) -> BTreeMap<String, usize> {
    let filter = crate::store::alarms::AlarmFilter::default();
    match state.db.alarms().alarms(&filter).await {
        Ok(list) => {
            let mut m = BTreeMap::new();
            for a in list.iter().filter(|a| a.resolved_ms.is_none()) {
                *m.entry(a.meter.clone()).or_insert(0) += 1;
            }
            m
        }
        Err(e) => {
            tracing::warn!(error = %e, "fleet page: alarms unavailable");
            BTreeMap::new()
        }
    }
}

/// One line of the meter's event timeline.
pub(crate) struct TimelineRow {
    pub at: String,
    pub class: String,
    pub code: String,
    pub detail: String,
}

/// One command in the meter's command list.
pub(crate) struct CommandRow {
    pub id: i64,
    pub action: String,
    pub status: &'static str,
    pub by: String,
    pub reason: String,
    pub at: String,
    pub detail: String,
    pub finished: bool,
}

fn command_row(c: &StoredCommand, tz: &str) -> CommandRow {
    CommandRow {
        id: c.id,
        action: action_name(&c.command.action),
        status: c.status.as_str(),
        by: c.command.issued_by.clone(),
        reason: c.command.reason.clone(),
        at: local_time(c.updated_ms, tz),
        detail: c.detail.clone().unwrap_or_default(),
        finished: c.status.is_final(),
    }
}

fn action_name(a: &Action) -> String {
    match a {
        Action::RelayConnect => "reconnect".into(),
        Action::RelayDisconnect => "disconnect".into(),
        other => format!("{other:?}")
            .split([' ', '{', '('])
            .next()
            .unwrap_or("")
            .to_owned(),
    }
}

#[derive(Template)]
#[template(path = "meter.html")]
struct MeterPage {
    frame: Frame,
    id: String,
    customer: String,
    site: String,
    parent: String,
    tz: String,
    state: &'static str,
    last_seen: String,
    relay: String,
    events: Vec<TimelineRow>,
    commands: Vec<CommandRow>,
    hx_headers: String,
    gauges: [(
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    ); 5],
}

/// `GET /meters/{id}`: the operator's meter page.
pub(crate) async fn meter_page(
    caller: Result<Caller, ApiError>,
    uri: Uri,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Response {
    let caller = match signed_in(caller, &uri) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if caller.role < Role::Operator {
        // Customers have their own view of their meters.
        return Redirect::to(&format!("/my/meters/{}", super::form_urlencode(&id))).into_response();
    }
    match meter_view(&caller, &state, &id).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn meter_view(caller: &Caller, state: &AppState, id: &str) -> Result<Response, ApiError> {
    let meter = caller.visible_meter(state, id).await?;
    let now = crate::now_ms();
    let tz = meter.time_zone.clone();
    let events = state
        .store
        .events(&meter.id, now - 30 * 86_400_000, now + 86_400_000)
        .await?;
    let commands = state.store.commands(&meter.id, None).await?;
    let relay = state
        .store
        .latest_event(&meter.id, "relay_state_changed")
        .await?;
    let frame = Frame::new(format!("Meter {}", meter.id.as_str()), caller);
    Ok(render(&MeterPage {
        hx_headers: frame.csrf_headers(),
        gauges: super::GAUGES,
        frame,
        id: meter.id.as_str().to_owned(),
        customer: meter.customer.clone().unwrap_or_default(),
        site: meter.site.clone().unwrap_or_default(),
        parent: meter
            .parent
            .as_ref()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        state: if meter.status == MeterStatus::Deregistered {
            "deregistered"
        } else if is_online(&meter, now) {
            "online"
        } else {
            "offline"
        },
        last_seen: meter
            .last_seen_ms
            .map(|t| local_time(t, &tz))
            .unwrap_or_else(|| "never".into()),
        relay: relay_state(&commands, relay.as_slice()),
        events: events
            .iter()
            .rev()
            .take(50)
            .map(|e| TimelineRow {
                at: local_time(e.t_ms, &tz),
                class: format!("{:?}", e.event.class).to_lowercase(),
                code: e.event.code.clone(),
                detail: e.event.detail.clone().unwrap_or_default(),
            })
            .collect(),
        commands: commands
            .iter()
            .take(10)
            .map(|c| command_row(c, &tz))
            .collect(),
        tz,
    }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct RelayForm {
    action: String,
    #[serde(default)]
    reason: String,
}

#[derive(Template)]
#[template(path = "command.html")]
struct CommandFragment {
    c: CommandRow,
}

/// `POST /meters/{id}/relay` (htmx): queues a relay command with the operator's reason and
/// answers the command's status fragment, which polls itself until the command is final.
pub(crate) async fn relay(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<RelayForm>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    let meter = caller.visible_meter(&state, &id).await?;
    let action = match form.action.as_str() {
        "disconnect" => Action::RelayDisconnect,
        "connect" => Action::RelayConnect,
        other => {
            return Err(ApiError::invalid(format!(
                "unknown relay action {other:?}: use connect or disconnect"
            )));
        }
    };
    let reason = form.reason.trim();
    if reason.chars().count() < 3 {
        return Err(ApiError::invalid(
            "a relay command needs a reason (at least 3 characters) for the audit log",
        ));
    }
    let now = crate::now_ms();
    let stored = state
        .store
        .create_command(&NewCommand {
            meter: meter.id.clone(),
            action,
            issued_by: caller.username.clone(),
            reason: reason.chars().take(500).collect(),
            issued_ms: now,
            expires_ms: now + 15 * 60_000,
        })
        .await?;
    // Wake the dispatcher so the command leaves now rather than at its next poll.
    state.command_wake.notify_one();
    crate::auth::audit(
        &state,
        &caller,
        "command.create",
        &format!("meter:{}", meter.id.as_str()),
        &format!("{} #{}: {reason}", form.action, stored.id),
    )
    .await?;
    Ok(render(&CommandFragment {
        c: command_row(&stored, &meter.time_zone),
    }))
}

/// `GET /commands/{id}` (htmx poll): the command's status fragment.
pub(crate) async fn command_status(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    let c = state
        .store
        .command(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no command {id}")))?;
    let meter = caller
        .visible_meter(&state, c.command.meter.as_str())
        .await?;
    Ok(render(&CommandFragment {
        c: command_row(&c, &meter.time_zone),
    }))
}

/// A meter as the registration form shows it.
#[derive(Default)]
pub(crate) struct MeterForm {
    pub id: String,
    pub key_ref: String,
    pub customer: String,
    pub site: String,
    pub parent: String,
    pub tz: String,
    pub interval_s: u32,
    pub allowed_export: bool,
    pub editing: bool,
}

#[derive(Template)]
#[template(path = "register.html")]
struct RegisterPage {
    frame: Frame,
    customers: Vec<Customer>,
    meters: Vec<(String, String, String, &'static str)>,
    form: MeterForm,
    message: String,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RegisterQuery {
    meter: Option<String>,
    done: Option<String>,
}

/// `GET /register[?meter=ID]`: customers, meters, and the create/edit forms.
pub(crate) async fn register_page(
    caller: Result<Caller, ApiError>,
    uri: Uri,
    State(state): State<AppState>,
    Query(q): Query<RegisterQuery>,
) -> Response {
    let caller = match signed_in(caller, &uri) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let page = async {
        caller.require(Role::Operator)?;
        let customers = state.store.customers().await?;
        let all = state.store.meters().await?;
        let mut form = MeterForm {
            tz: "UTC".into(),
            interval_s: 60,
            ..MeterForm::default()
        };
        if let Some(id) = q.meter.as_deref().filter(|s| !s.is_empty()) {
            let m = caller.visible_meter(&state, id).await?;
            form = MeterForm {
                id: m.id.as_str().to_owned(),
                key_ref: m.key_ref.clone(),
                customer: m.customer.clone().unwrap_or_default(),
                site: m.site.clone().unwrap_or_default(),
                parent: m
                    .parent
                    .as_ref()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default(),
                tz: m.time_zone.clone(),
                interval_s: m.reporting_interval_s,
                allowed_export: m.allowed_export,
                editing: true,
            };
        }
        Ok::<_, ApiError>(render(&RegisterPage {
            frame: Frame::new("Registration", &caller),
            customers,
            meters: all
                .iter()
                .map(|m| {
                    (
                        m.id.as_str().to_owned(),
                        m.customer.clone().unwrap_or_default(),
                        m.site.clone().unwrap_or_default(),
                        m.status.as_str(),
                    )
                })
                .collect(),
            form,
            message: q.done.unwrap_or_default(),
        }))
    };
    page.await.unwrap_or_else(|e| e.into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct CustomerInput {
    id: String,
    name: String,
    time_zone: String,
}

/// `POST /register/customer`: creates or renames a customer.
pub(crate) async fn save_customer(
    caller: Caller,
    State(state): State<AppState>,
    Form(f): Form<CustomerInput>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    let id = f.id.trim();
    let ok_id = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok_id {
        return Err(ApiError::invalid(
            "a customer id has 1 to 64 characters from A-Z, a-z, 0-9, '.', '_', '-'",
        ));
    }
    if f.name.trim().is_empty() {
        return Err(ApiError::invalid("a customer needs a name"));
    }
    crate::store::parse_tz(f.time_zone.trim())?;
    state
        .store
        .upsert_customer(&Customer {
            id: id.to_owned(),
            name: f.name.trim().chars().take(200).collect(),
            time_zone: f.time_zone.trim().to_owned(),
        })
        .await?;
    crate::auth::audit(
        &state,
        &caller,
        "customer.save",
        &format!("customer:{id}"),
        "saved",
    )
    .await?;
    Ok(Redirect::to("/register?done=customer+saved").into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct MeterInput {
    id: String,
    key_ref: String,
    #[serde(default)]
    customer: String,
    #[serde(default)]
    site: String,
    #[serde(default)]
    parent: String,
    time_zone: String,
    interval_s: u32,
    #[serde(default)]
    allowed_export: Option<String>,
}

fn opt(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// `POST /register/meter`: enrols a meter or edits one (customer, site, parent, zone, ...).
pub(crate) async fn save_meter(
    caller: Caller,
    State(state): State<AppState>,
    Form(f): Form<MeterInput>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    let id = MeterId::parse(f.id.trim())
        .map_err(|e| ApiError::invalid(format!("meter id {:?}: {e}", f.id)))?;
    if f.key_ref.trim().is_empty() {
        return Err(ApiError::invalid("a meter needs a key reference"));
    }
    crate::store::parse_tz(f.time_zone.trim())?;
    if !(1..=86_400).contains(&f.interval_s) {
        return Err(ApiError::invalid("the reporting interval is 1 to 86400 s"));
    }
    let customer = opt(&f.customer);
    if let Some(c) = &customer
        && state.store.customer(c).await?.is_none()
    {
        return Err(ApiError::invalid(format!("no customer {c:?}")));
    }
    let parent = match opt(&f.parent) {
        Some(p) => {
            let p = MeterId::parse(&p)
                .map_err(|e| ApiError::invalid(format!("parent meter {p:?}: {e}")))?;
            if p == id {
                return Err(ApiError::invalid("a meter cannot be its own parent"));
            }
            if state.store.meter(&p).await?.is_none() {
                return Err(ApiError::invalid(format!(
                    "no parent meter {:?}",
                    p.as_str()
                )));
            }
            Some(p)
        }
        None => None,
    };
    let mut meter = state
        .store
        .meter(&id)
        .await?
        .unwrap_or_else(|| Meter::new(id.clone(), f.key_ref.trim()));
    meter.key_ref = f.key_ref.trim().to_owned();
    meter.customer = customer;
    meter.site = opt(&f.site);
    meter.parent = parent;
    meter.time_zone = f.time_zone.trim().to_owned();
    meter.reporting_interval_s = f.interval_s;
    meter.allowed_export = f.allowed_export.is_some();
    state.store.upsert_meter(&meter).await?;
    crate::auth::audit(
        &state,
        &caller,
        "meter.save",
        &format!("meter:{}", id.as_str()),
        &format!(
            "customer={:?} site={:?} parent={:?}",
            meter.customer, meter.site, meter.parent
        ),
    )
    .await?;
    Ok(Redirect::to("/register?done=meter+saved").into_response())
}

/// `POST /meters/{id}/deregister`: takes a meter out of service (its data stays).
pub(crate) async fn deregister(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    let mut meter = caller.visible_meter(&state, &id).await?;
    meter.status = MeterStatus::Deregistered;
    state.store.upsert_meter(&meter).await?;
    crate::auth::audit(
        &state,
        &caller,
        "meter.deregister",
        &format!("meter:{id}"),
        "deregistered",
    )
    .await?;
    Ok(Redirect::to("/register?done=meter+deregistered").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::{Event, EventClass, MeterId};

    fn command(action: Action, status: CommandStatus, at: i64) -> StoredCommand {
        StoredCommand {
            id: at,
            command: NewCommand {
                meter: MeterId::parse("m-1").unwrap(),
                action,
                issued_by: "op".into(),
                reason: "test".into(),
                issued_ms: at - 10,
                expires_ms: at + 60_000,
            },
            status,
            updated_ms: at,
            detail: None,
        }
    }

    /// The shape the agent sends (its `ControlEvent` as JSON in the event's detail).
    fn changed(to: &str, trigger: &str, at: i64) -> StoredEvent {
        StoredEvent {
            meter: MeterId::parse("m-1").unwrap(),
            boot_id: 1,
            seq: at as u64,
            t_ms: at,
            event: Event {
                class: EventClass::Relay,
                code: "relay_state_changed".into(),
                active: None,
                value: None,
                detail: Some(format!(
                    r#"{{"kind":"relay_state_changed","now_ms":5,"from":"connected","to":"{to}","transition":"d","trigger":"{trigger}"}}"#
                )),
            },
        }
    }

    #[test]
    fn a_local_limiter_trip_after_a_remote_connect_shows_the_reported_state() {
        let commands = [command(
            Action::RelayConnect,
            CommandStatus::Succeeded,
            1_000,
        )];
        assert_eq!(relay_state(&commands, &[]), "connected");
        let trip = [changed("ready_for_reconnection", "local_disconnect", 2_000)];
        assert_eq!(relay_state(&commands, &trip), "ready for reconnection");
        // A newer remote command wins until its own event arrives.
        let newer = [
            command(Action::RelayDisconnect, CommandStatus::Succeeded, 3_000),
            command(Action::RelayConnect, CommandStatus::Succeeded, 1_000),
        ];
        assert_eq!(relay_state(&newer, &trip), "disconnected");
        // Failed commands and malformed details change nothing.
        let failed = [command(
            Action::RelayDisconnect,
            CommandStatus::Failed,
            4_000,
        )];
        let mut junk = changed("x", "y", 5_000);
        junk.event.detail = Some("not json".into());
        assert_eq!(relay_state(&failed, &[junk]), "connected");
        assert_eq!(relay_state(&[], &[]), "connected");
    }
}
