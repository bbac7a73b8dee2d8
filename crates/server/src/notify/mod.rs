//! Notifications: rules that fire on what the server sees (overload, theft/tamper, offline, low
//! credit, bill issued, unusually high peak-hour consumption, power quality), fanned out to each
//! user's chosen channels — email over SMTP (lettre, rustls + ring), signed webhooks
//! (HMAC-SHA256 over timestamp and body) and in-app messages — with per-incident merging, a
//! rate limit and digests, so one incident never sends a thousand mails.
//!
//! Incidents come from the alarm jobs (a newly opened overload, tamper/theft, offline or
//! power-quality alarm), the billing job (a bill issued, a prepaid low-credit warning) and the
//! daily peak-consumption check; [`spawn_jobs`] delivers pending mail and webhooks and sends
//! digests while the server runs. Webhook targets must resolve to public addresses unless the
//! operator allows private ones ([`check_webhook_target`]).

mod jobs;
mod target;

pub use jobs::{NotifyJobs, spawn_jobs};
pub use target::{CheckedTarget, check_webhook_target, non_public_reason};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hmac::{KeyInit, Mac};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::billing::{MessageStatus, NewMessage, StoredMessage};
use crate::{Database, Error, ErrorKind, Store};

/// What a notification is about. The stored names are the preference keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// Limiter cut-off or power above the limit.
    Overload,
    /// Theft or tamper alarm.
    Tamper,
    /// A meter stopped reporting ("data route damaged").
    Offline,
    /// Prepaid credit low or exhausted.
    LowCredit,
    /// A bill was issued.
    BillIssued,
    /// Consumption in peak hours far above the usual.
    PeakConsumption,
    /// Voltage or THD out of range.
    PowerQuality,
}

impl Rule {
    /// Every rule.
    pub const ALL: [Rule; 7] = [
        Rule::Overload,
        Rule::Tamper,
        Rule::Offline,
        Rule::LowCredit,
        Rule::BillIssued,
        Rule::PeakConsumption,
        Rule::PowerQuality,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Overload => "overload",
            Rule::Tamper => "tamper",
            Rule::Offline => "offline",
            Rule::LowCredit => "low-credit",
            Rule::BillIssued => "bill-issued",
            Rule::PeakConsumption => "peak-consumption",
            Rule::PowerQuality => "power-quality",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Delivery channels.
pub const CHANNELS: [&str; 3] = ["email", "webhook", "inapp"];

/// Something that happened, before it is fanned out to users.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    /// The rule that fired.
    pub rule: Rule,
    /// The customer concerned (users of other customers never see it).
    pub customer: Option<String>,
    /// Identity of the incident (`meter:house-7:overload`): repeats within the merge window
    /// are folded into the first message.
    pub key: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
    /// When it happened, Unix ms UTC.
    pub at_ms: i64,
}

impl Rule {
    /// The rule a newly opened alarm of `kind` notifies under (`None`: the kind notifies no one,
    /// e.g. the limiter's emergency profile, which operators start themselves).
    pub fn for_alarm(kind: crate::alarms::AlarmKind) -> Option<Rule> {
        use crate::alarms::AlarmKind as K;
        match kind {
            K::Offline => Some(Rule::Offline),
            K::Overload => Some(Rule::Overload),
            K::Tamper | K::TheftBalance | K::TheftPattern => Some(Rule::Tamper),
            K::PowerQuality => Some(Rule::PowerQuality),
            K::Limiter => None,
        }
    }
}

impl Incident {
    /// The incident of a newly opened alarm about a meter of `customer`; `None` for kinds that
    /// notify no one. One alarm is one incident (its dedup key).
    pub fn alarm(alarm: &crate::alarms::NewAlarm, customer: Option<String>) -> Option<Incident> {
        let rule = Rule::for_alarm(alarm.kind)?;
        Some(Incident {
            rule,
            customer,
            key: format!("alarm:{}", alarm.dedup_key),
            subject: format!(
                "{} alarm at meter {}",
                alarm.kind.as_str().replace('_', " "),
                alarm.meter
            ),
            body: format!(
                "{}\n\nSeverity: {}.",
                alarm.message,
                alarm.severity.as_str()
            ),
            at_ms: alarm.at_ms,
        })
    }

    /// A bill was issued.
    pub fn bill_issued(bill: &crate::billing::StoredBill) -> Incident {
        // The stored cycle end is exclusive (the next cycle's first day); people read the last
        // day billed.
        let last_day = bill.cycle_end.pred_opt().unwrap_or(bill.cycle_end);
        Incident {
            rule: Rule::BillIssued,
            customer: Some(bill.customer.clone()),
            key: format!("bill:{}", bill.id),
            subject: format!(
                "Your bill for {} to {}: {} {}",
                bill.cycle_start, last_day, bill.total, bill.currency
            ),
            body: format!(
                "A bill of {} {} was issued for {} to {} ({:.1} kWh). Please pay by {}.",
                bill.total,
                bill.currency,
                bill.cycle_start,
                last_day,
                bill.import_wh as f64 / 1000.0,
                bill.due_date
            ),
            at_ms: bill.issued_ms,
        }
    }

    /// A prepaid customer's credit is low or exhausted (the billing job decides when to warn:
    /// at most once a day).
    pub fn low_credit(outcome: &crate::billing::PrepaidOutcome, at_ms: i64) -> Incident {
        Incident {
            rule: Rule::LowCredit,
            customer: Some(outcome.customer.clone()),
            key: format!("credit:{}:{}", outcome.customer, at_ms / 86_400_000),
            subject: format!("Low prepaid credit: {} left", outcome.balance),
            body: format!(
                "Your prepaid credit is {}. {}",
                outcome.balance, outcome.explanation
            ),
            at_ms,
        }
    }
}

/// How mail leaves the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain SMTP (a local relay or test sink on loopback only).
    Plain,
    /// STARTTLS on the submission port.
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// SMTP settings.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// Server host name.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Transport security.
    pub security: SmtpSecurity,
    /// Login, when the server wants one.
    pub credentials: Option<(String, String)>,
    /// The sender address, e.g. `wattline <alerts@example.org>`.
    pub from: String,
}

/// Notification settings.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// Mail; `None` leaves email messages pending (reported, not lost).
    pub smtp: Option<SmtpConfig>,
    /// The shared secret webhooks are signed with.
    pub webhook_secret: Vec<u8>,
    /// Repeats of one incident within this window are merged, ms.
    pub merge_window_ms: i64,
    /// At most this many messages per user, rule and channel in `rate_window_ms`; the rest go
    /// into the next digest.
    pub rate_limit: usize,
    /// The rate limit's window, ms.
    pub rate_window_ms: i64,
    /// Delivery attempts before a message is marked failed.
    pub max_attempts: i64,
    /// Allow webhooks to loopback, private, link-local and other non-public addresses (default
    /// false: such targets are refused when saved and when delivered).
    pub allow_private_webhooks: bool,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            smtp: None,
            webhook_secret: Vec::new(),
            merge_window_ms: 3_600_000,
            rate_limit: 5,
            rate_window_ms: 3_600_000,
            max_attempts: 5,
            allow_private_webhooks: false,
        }
    }
}

/// What the notifier did since the process started. The same counts go to `/metrics` as
/// `wattline_notify_{queued,raise_failed,delivered,delivery_failed}_total`.
#[derive(Debug, Default)]
pub struct NotifyStats {
    /// Messages queued by incidents (not suppressed).
    pub queued: AtomicU64,
    /// Incidents that could not be fanned out (database error); the incident's source (alarm,
    /// bill) is kept, only the message is missing.
    pub raise_failures: AtomicU64,
    /// Mail and webhook messages delivered.
    pub delivered: AtomicU64,
    /// Delivery attempts that failed.
    pub delivery_failures: AtomicU64,
}

/// The header carrying a webhook's signature: `t=<unix seconds>,v1=<hex HMAC-SHA256>` over
/// `"<t>.<body>"`, so a receiver can check both origin and freshness (replays of old bodies).
pub const SIGNATURE_HEADER: &str = "x-wattline-signature";

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Signs a webhook body at `unix_s`: the value of [`SIGNATURE_HEADER`].
pub fn sign_webhook(secret: &[u8], unix_s: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(unix_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={unix_s},v1={hex}")
}

/// Checks a webhook signature header (for receivers written in Rust, and the tests): the MAC
/// must match (compared in constant time) and the timestamp be within `tolerance_s` of `now_s`.
pub fn verify_webhook(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now_s: i64,
    tolerance_s: i64,
) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = Some(v),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if (now_s - t).abs() > tolerance_s || v1.len() != 64 {
        return false;
    }
    let Some(tag) = (0..32)
        .map(|i| u8::from_str_radix(v1.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&tag).is_ok()
}

/// What one delivery pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Messages delivered.
    pub sent: usize,
    /// Messages that failed this time (retried later unless out of attempts).
    pub failed: usize,
}

/// Fans incidents out and delivers messages.
#[derive(Clone)]
pub struct Notifier {
    db: Database,
    config: NotifyConfig,
    stats: Arc<NotifyStats>,
}

impl Notifier {
    /// A notifier over the database's message tables.
    pub fn new(db: Database, config: NotifyConfig) -> Result<Self, Error> {
        // The process uses ring as its one rustls provider (DESIGN §7); make sure it is
        // installed before the HTTP client builds its TLS configuration.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Build one client now so a broken TLS setup fails at start-up, not at the first
        // webhook; deliveries build a client pinned to the checked addresses.
        webhook_client(None).map_err(|e| Error::new(ErrorKind::Unavailable(e)))?;
        Ok(Self {
            db,
            config,
            stats: Arc::default(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &NotifyConfig {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> &NotifyStats {
        &self.stats
    }

    /// [`raise`](Self::raise) for jobs whose own work must not depend on notifications: a
    /// failure is logged and counted (`raise_failures`) and otherwise ignored.
    pub async fn raise_logged(&self, incident: &Incident) -> usize {
        match self.raise(incident).await {
            Ok(n) => n,
            Err(e) => {
                self.stats.raise_failures.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("wattline_notify_raise_failed_total", "rule" => incident.rule.as_str())
                    .increment(1);
                tracing::warn!(rule = incident.rule.as_str(), incident = %incident.key, error = %e, "notification not raised");
                0
            }
        }
    }

    /// Fans an incident out to every user whose preferences ask for its rule (and who may see
    /// its customer). In-app messages are visible at once; mail and webhooks wait for
    /// [`deliver`](Self::deliver). A repeat of the same incident within the merge window, or a
    /// message over the rate limit, is stored as suppressed and goes into the next digest.
    /// Returns the number of messages queued (not suppressed).
    pub async fn raise(&self, incident: &Incident) -> Result<usize, Error> {
        let store = self.db.billing();
        let mut queued = 0;
        for pref in store.prefs_for_rule(incident.rule.as_str()).await? {
            if let Some(own) = &pref.customer
                && incident.customer.as_deref() != Some(own.as_str())
            {
                continue;
            }
            let since =
                incident.at_ms - self.config.merge_window_ms.max(self.config.rate_window_ms);
            let recent = store
                .unsuppressed_messages(&pref.username, &pref.channel, since)
                .await?;
            let same_rule: Vec<&StoredMessage> = recent
                .iter()
                .filter(|m| {
                    m.message.rule == incident.rule.as_str()
                        && m.status != MessageStatus::Suppressed
                        && m.message.created_ms >= incident.at_ms - self.config.rate_window_ms
                })
                .collect();
            let repeat = recent.iter().any(|m| {
                m.message.incident == incident.key
                    && m.status != MessageStatus::Suppressed
                    && m.message.created_ms >= incident.at_ms - self.config.merge_window_ms
            });
            let status = if repeat || same_rule.len() >= self.config.rate_limit {
                MessageStatus::Suppressed
            } else if pref.channel == "inapp" {
                MessageStatus::Sent
            } else {
                MessageStatus::Pending
            };
            store
                .add_message(
                    &NewMessage {
                        username: pref.username.clone(),
                        customer: incident.customer.clone(),
                        rule: incident.rule.as_str().to_owned(),
                        channel: pref.channel.clone(),
                        target: pref.target.clone(),
                        incident: incident.key.clone(),
                        subject: incident.subject.clone(),
                        body: incident.body.clone(),
                        created_ms: incident.at_ms,
                    },
                    status,
                )
                .await?;
            if status != MessageStatus::Suppressed {
                queued += 1;
            }
        }
        self.stats
            .queued
            .fetch_add(queued as u64, Ordering::Relaxed);
        metrics::counter!("wattline_notify_queued_total", "rule" => incident.rule.as_str())
            .increment(queued as u64);
        Ok(queued)
    }

    /// Turns the suppressed messages of each user and channel into one digest message (queued
    /// like any other) and marks them as digested. Run it periodically (e.g. hourly).
    pub async fn digest(&self, now_ms: i64) -> Result<usize, Error> {
        let store = self.db.billing();
        let suppressed = store
            .messages_with_status(MessageStatus::Suppressed, 10_000)
            .await?;
        let mut groups: std::collections::BTreeMap<(String, String, String), Vec<StoredMessage>> =
            Default::default();
        for m in suppressed.into_iter().filter(|m| m.error.is_none()) {
            groups
                .entry((
                    m.message.username.clone(),
                    m.message.channel.clone(),
                    m.message.target.clone(),
                ))
                .or_default()
                .push(m);
        }
        let mut digests = 0;
        for ((username, channel, target), msgs) in groups {
            let mut body = format!(
                "{} further notifications were held back to avoid flooding you:\n",
                msgs.len()
            );
            let mut counts: std::collections::BTreeMap<(&str, &str), usize> = Default::default();
            for m in &msgs {
                *counts
                    .entry((m.message.rule.as_str(), m.message.subject.as_str()))
                    .or_default() += 1;
            }
            for ((rule, subject), n) in counts {
                body.push_str(&format!("- {n} × [{rule}] {subject}\n"));
            }
            let status = if channel == "inapp" {
                MessageStatus::Sent
            } else {
                MessageStatus::Pending
            };
            let id = store
                .add_message(
                    &NewMessage {
                        username,
                        customer: None,
                        rule: "digest".into(),
                        channel,
                        target,
                        incident: format!("digest:{now_ms}"),
                        subject: format!("wattline digest: {} notifications", msgs.len()),
                        body,
                        created_ms: now_ms,
                    },
                    status,
                )
                .await?;
            for m in &msgs {
                store
                    .finish_message(
                        m.id,
                        MessageStatus::Suppressed,
                        Some(&format!("in digest {id}")),
                        now_ms,
                    )
                    .await?;
            }
            digests += 1;
        }
        Ok(digests)
    }

    /// Delivers pending mail and webhook messages. The job entry point for the runtime (run
    /// every few seconds to a minute); a failed message is retried on the next pass until
    /// `max_attempts`.
    pub async fn deliver(&self, now_ms: i64) -> Result<DeliveryReport, Error> {
        let store = self.db.billing();
        let mut report = DeliveryReport::default();
        for m in store
            .messages_with_status(MessageStatus::Pending, 500)
            .await?
        {
            if m.message.channel == "email" && self.config.smtp.is_none() {
                // The email channel is off ([notify] without smtp_host, warned at start): the
                // mail waits, pending and without using up its attempts, until it is configured.
                continue;
            }
            let result = match m.message.channel.as_str() {
                "email" => self.send_mail(&m).await,
                "webhook" => self.send_webhook(&m, now_ms).await,
                other => Err(format!("unknown channel {other:?}")),
            };
            match result {
                Ok(()) => {
                    store
                        .finish_message(m.id, MessageStatus::Sent, None, now_ms)
                        .await?;
                    report.sent += 1;
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("wattline_notify_delivered_total", "channel" => m.message.channel.clone())
                        .increment(1);
                }
                Err(e) => {
                    tracing::warn!(message = m.id, channel = %m.message.channel, error = %e, "notification not delivered");
                    let status = if m.attempts + 1 >= self.config.max_attempts {
                        MessageStatus::Failed
                    } else {
                        MessageStatus::Pending
                    };
                    store.finish_message(m.id, status, Some(&e), now_ms).await?;
                    report.failed += 1;
                    self.stats.delivery_failures.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("wattline_notify_delivery_failed_total", "channel" => m.message.channel.clone())
                        .increment(1);
                }
            }
        }
        Ok(report)
    }

    async fn send_mail(&self, m: &StoredMessage) -> Result<(), String> {
        let smtp = self
            .config
            .smtp
            .as_ref()
            .ok_or("no SMTP server is configured")?;
        let from: Mailbox = smtp
            .from
            .parse()
            .map_err(|e| format!("sender address {:?}: {e}", smtp.from))?;
        let to: Mailbox = m
            .message
            .target
            .parse()
            .map_err(|e| format!("recipient address {:?}: {e}", m.message.target))?;
        let email = Message::builder()
            .from(from)
            .to(to)
            .subject(&m.message.subject)
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(m.message.body.clone())
            .map_err(|e| format!("building the mail: {e}"))?;
        let mut builder = match smtp.security {
            SmtpSecurity::Plain => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
            }
            SmtpSecurity::StartTls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)
                    .map_err(|e| format!("SMTP TLS setup: {e}"))?
            }
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host)
                .map_err(|e| format!("SMTP TLS setup: {e}"))?,
        }
        .port(smtp.port)
        .timeout(Some(Duration::from_secs(15)));
        if let Some((user, pass)) = &smtp.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
        }
        builder
            .build()
            .send(email)
            .await
            .map(|_| ())
            .map_err(|e| format!("SMTP {}:{}: {e}", smtp.host, smtp.port))
    }

    async fn send_webhook(&self, m: &StoredMessage, now_ms: i64) -> Result<(), String> {
        let body = serde_json::to_vec(&serde_json::json!({
            "id": m.id,
            "rule": m.message.rule,
            "customer": m.message.customer,
            "incident": m.message.incident,
            "subject": m.message.subject,
            "body": m.message.body,
            "created_ms": m.message.created_ms,
        }))
        .map_err(|e| format!("encoding the webhook body: {e}"))?;
        let signature = sign_webhook(&self.config.webhook_secret, now_ms / 1000, &body);
        // Checked again at delivery: the name may resolve elsewhere than when it was saved.
        let target = check_webhook_target(&m.message.target, self.config.allow_private_webhooks)
            .await
            .map_err(|e| format!("webhook to {}: {e}", host_of(&m.message.target)))?;
        let client = webhook_client(Some(&target))?;
        let resp = client
            .post(target.url.clone())
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            // Only the host is logged: a webhook URL may carry a token in its path or query.
            .map_err(|e| {
                format!(
                    "webhook to {}: {}",
                    host_of(&m.message.target),
                    e.without_url()
                )
            })?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!(
                "webhook to {} answered {}",
                host_of(&m.message.target),
                resp.status()
            ))
        }
    }
}

/// The webhook HTTP client: no redirects (a redirect could lead to a private address), a
/// timeout, and — for a checked target — connections only to the addresses that were checked.
fn webhook_client(target: Option<&CheckedTarget>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(t) = target
        && t.host.parse::<std::net::IpAddr>().is_err()
    {
        builder = builder.resolve_to_addrs(&t.host, &t.addrs);
    }
    builder.build().map_err(|e| format!("webhook client: {e}"))
}

fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "(invalid URL)".into())
}

/// The power-quality watch (run by the notification job, `notify::spawn_jobs`): raises "power
/// quality out of range" for every active meter with a reading in `[from_ms, to_ms)` whose
/// voltage THD is above 8 % or whose voltage is outside 230 V ± 10 % (EN 50160). Meters do not
/// report these as events, so the readings are looked at here; offline, overload and tamper
/// notifications come from the alarm jobs instead. Repeats of one meter's incident within the
/// merge window are merged by [`Notifier::raise`].
pub async fn watch_power_quality(
    notifier: &Notifier,
    store: &dyn Store,
    from_ms: i64,
    to_ms: i64,
) -> Result<usize, Error> {
    let mut raised = 0;
    for m in store.meters().await? {
        if m.status != crate::MeterStatus::Active {
            continue;
        }
        let id = m.id.to_string();
        let readings = store.readings(&m.id, from_ms, to_ms, 5_000).await?;
        let bad = readings.iter().find(|r| {
            r.reading.phases.iter().any(|p| {
                p.v_thd_pct.is_some_and(|t| t > 8.0) || !(207.0..=253.0).contains(&p.v_rms)
            })
        });
        if let Some(r) = bad {
            raised += notifier
                .raise(&Incident {
                    rule: Rule::PowerQuality,
                    customer: m.customer.clone(),
                    key: format!("meter:{id}:power-quality"),
                    subject: format!("Power quality out of range at meter {id}"),
                    body: format!(
                        "Meter {id} measured voltage or THD outside EN 50160 limits (first at {} ms).",
                        r.t_ms
                    ),
                    at_ms: to_ms,
                })
                .await?;
        }
    }
    Ok(raised)
}

/// The peak-hour job (entry point for the runtime, daily): for every billed customer, the
/// energy of the last 24 hours in the tariff's dearest time-of-use period against the mean of
/// the 7 days before; 50 % more (and at least 1 kWh) raises "unusually high consumption in
/// peak hours". Tariffs without time of use count every hour as peak.
pub async fn watch_peak_consumption(
    notifier: &Notifier,
    db: &Database,
    now_ms: i64,
) -> Result<usize, Error> {
    use chrono::{TimeZone, Utc};
    let now = Utc
        .timestamp_millis_opt(now_ms)
        .single()
        .ok_or_else(|| Error::invalid(format!("time {now_ms} ms is out of range")))?;
    let day = chrono::Duration::days(1);
    let mut raised = 0;
    for customer in db.billing().billed_customers().await? {
        let Ok(ct) = crate::billing::customer_tariff(db, &customer, now.date_naive()).await else {
            continue;
        };
        let readings =
            crate::billing::interval_readings(db.store().as_ref(), &customer, now - day * 8, now)
                .await?;
        let price = |t| ct.tariff.energy_price_at(t).map(|(_, p)| p);
        let Some(peak_price) = readings.iter().filter_map(|r| price(r.start)).max() else {
            continue;
        };
        let (mut last_wh, mut before_wh) = (0u64, 0u64);
        for r in readings
            .iter()
            .filter(|r| price(r.start) == Some(peak_price))
        {
            if r.start >= now - day {
                last_wh += r.import_wh;
            } else {
                before_wh += r.import_wh;
            }
        }
        let mean_wh = before_wh as f64 / 7.0;
        if before_wh > 0 && last_wh >= 1_000 && last_wh as f64 > 1.5 * mean_wh {
            raised += notifier
                .raise(&Incident {
                    rule: Rule::PeakConsumption,
                    customer: Some(customer.clone()),
                    key: format!("customer:{customer}:peak:{}", now.date_naive()),
                    subject: "Unusually high consumption in peak hours".into(),
                    body: format!(
                        "In the last 24 hours you used {:.1} kWh at peak prices, against {:.1} kWh on an average day of the week before.",
                        last_wh as f64 / 1000.0,
                        mean_wh / 1000.0
                    ),
                    at_ms: now_ms,
                })
                .await?;
        }
    }
    Ok(raised)
}

#[cfg(test)]
pub(crate) mod tests;
