//! The alarm jobs: supervision (offline meters, overload/limiter and power-quality events),
//! tamper rules, energy balance per observer meter, and consumption-pattern scoring. Each run
//! reads stored data, raises or clears alarms, and files theft/tamper evidence into cases.
//!
//! Every job is idempotent and incremental: alarms carry a dedup key (one condition, one
//! alarm), re-reading a window never opens an alarm twice, and each job remembers where it
//! stopped in the store (`alarm_job_state`). Each job runs under its job lock (a PostgreSQL
//! advisory lock, so one of several server instances runs it; DESIGN §5).

use std::collections::{BTreeMap, HashMap};

use analytics::balance::{
    self, BalanceReport, BalanceTopology, Calibration, ChildSpec, Connection, IntervalReading,
    MeterSpec,
};
use analytics::tamper::{self, MeterCondition, ReadingSample, TamperConfig, TamperInput};
use analytics::{GbtModel, GbtParams, MeterHistory, PatternConfig};
use chrono::{Offset, TimeZone};
use schema::{EventClass, MeterId, Phase};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::config::{AlarmConfig, BalanceSettings};
use crate::notify::Notifier;
use crate::store::alarms::{
    AlarmFilter, AlarmKind, AlarmScope, AlarmSeverity, AlarmStore, CaseEvidence, NewAlarm,
};
use crate::{Database, Error, Meter, MeterStatus, Resolution, StoredEvent, StoredReading};

/// What one run of the jobs did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobsReport {
    /// Alarms opened.
    pub alarms_opened: usize,
    /// Alarms whose condition ended.
    pub alarms_cleared: u64,
    /// Cases opened.
    pub cases_opened: usize,
    /// Jobs skipped because another instance holds their lock.
    pub jobs_skipped: Vec<&'static str>,
    /// Odd data that did not stop a job (per observer / meter), for the log.
    pub diagnostics: Vec<String>,
}

/// Starts the alarm jobs: every `config.every_s` seconds until `shutdown` turns true (or its
/// sender is dropped). The runtime calls this once after the database is open; with a
/// `notifier`, every newly opened alarm raises its notification rule.
pub fn spawn_jobs(
    db: Database,
    config: AlarmConfig,
    notifier: Option<Notifier>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = std::time::Duration::from_secs(config.every_s.max(1));
        loop {
            match run_once_notifying(&db, &config, notifier.as_ref(), crate::now_ms()).await {
                Ok(r) => {
                    for d in &r.diagnostics {
                        tracing::debug!(diagnostic = %d, "alarm jobs");
                    }
                    if r.alarms_opened > 0 || r.cases_opened > 0 || r.alarms_cleared > 0 {
                        tracing::info!(
                            alarms_opened = r.alarms_opened,
                            alarms_cleared = r.alarms_cleared,
                            cases_opened = r.cases_opened,
                            "alarm jobs ran"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "alarm jobs failed; retrying next period"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { break },
            }
            if *shutdown.borrow() {
                break;
            }
        }
    })
}

/// Runs every job once as of `now_ms` (Unix ms UTC), without notifications. Tests call this
/// directly.
pub async fn run_once(
    db: &Database,
    config: &AlarmConfig,
    now_ms: i64,
) -> Result<JobsReport, Error> {
    run_once_notifying(db, config, None, now_ms).await
}

/// [`run_once`], raising the notification of every newly opened alarm through `notifier`.
pub async fn run_once_notifying(
    db: &Database,
    config: &AlarmConfig,
    notifier: Option<&Notifier>,
    now_ms: i64,
) -> Result<JobsReport, Error> {
    let meters: Vec<Meter> = db
        .store()
        .meters()
        .await?
        .into_iter()
        .filter(|m| m.status == MeterStatus::Active)
        .collect();
    let mut ctx = Ctx {
        db,
        config,
        now_ms,
        report: JobsReport::default(),
        notifier,
        customers: meters
            .iter()
            .map(|m| (m.id.to_string(), m.customer.clone()))
            .collect(),
    };
    for job in ["supervision", "events", "balance", "pattern"] {
        let Some(lock) = db.alarms().try_lock_job(job).await? else {
            ctx.report.jobs_skipped.push(job);
            continue;
        };
        let result = match job {
            "supervision" => ctx.supervision(&meters).await,
            "events" => ctx.events(&meters).await,
            "balance" if config.balance.enabled => ctx.balance(&meters).await,
            "pattern" if config.pattern.enabled => ctx.pattern(&meters).await,
            _ => Ok(()),
        };
        lock.release().await;
        result?;
    }
    Ok(ctx.report)
}

struct Ctx<'a> {
    db: &'a Database,
    config: &'a AlarmConfig,
    now_ms: i64,
    report: JobsReport,
    /// Newly opened alarms notify through it (none: tests and tools that only want alarms).
    notifier: Option<&'a Notifier>,
    /// Each active meter's customer, for the notification's audience.
    customers: HashMap<String, Option<String>>,
}

/// Evidence that goes into a case when an alarm of a theft/tamper kind opens.
struct CaseInput {
    meter: String,
    score: Option<f64>,
    evidence: Value,
}

impl Ctx<'_> {
    fn alarms(&self) -> &dyn AlarmStore {
        self.db.alarms()
    }

    /// Raises (or refreshes) an alarm and, for theft/tamper kinds, files its evidence into the
    /// suspected meter's case.
    async fn raise(&mut self, alarm: NewAlarm, case: Option<CaseInput>) -> Result<i64, Error> {
        let raised = self.alarms().raise_alarm(&alarm).await?;
        if raised.created {
            self.report.alarms_opened += 1;
            // The alarm is stored; a failing notification is logged and counted by the
            // notifier and does not fail the job.
            if let Some(n) = self.notifier {
                let customer = self.customers.get(&alarm.meter).cloned().flatten();
                if let Some(incident) = crate::notify::Incident::alarm(&alarm, customer) {
                    n.raise_logged(&incident).await;
                }
            }
        }
        if let (true, None, Some(case)) = (alarm.kind.opens_case(), raised.alarm.case_id, case) {
            let mut item = json!({
                "alarm_id": raised.alarm.id,
                "kind": alarm.kind.as_str(),
                "meter": alarm.meter,
                "at_ms": alarm.at_ms,
                "message": alarm.message,
            });
            if let (Some(obj), Value::Object(extra)) = (item.as_object_mut(), case.evidence) {
                obj.extend(extra);
            }
            let (_, created) = self
                .alarms()
                .file_case_evidence(&CaseEvidence {
                    alarm_id: raised.alarm.id,
                    meter: case.meter,
                    title: alarm.message.clone(),
                    score: case.score,
                    item,
                    at_ms: alarm.at_ms,
                })
                .await?;
            if created {
                self.report.cases_opened += 1;
            }
        }
        Ok(raised.alarm.id)
    }

    async fn clear(&mut self, key: &str, at_ms: i64) -> Result<(), Error> {
        self.report.alarms_cleared += self.alarms().clear_alarms(key, at_ms).await?;
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Supervision: a meter silent for N reporting intervals is offline (seed 002).

    async fn supervision(&mut self, meters: &[Meter]) -> Result<(), Error> {
        let active: HashMap<String, String> = self
            .alarms()
            .alarms(&AlarmFilter {
                kind: Some(AlarmKind::Offline),
                active: Some(true),
                limit: 10_000,
                ..AlarmFilter::default()
            })
            .await?
            .into_iter()
            .map(|a| (a.meter, a.dedup_key))
            .collect();
        for m in meters {
            let Some(last_ms) = m.last_seen_ms else {
                continue; // Never delivered: no route to call damaged yet.
            };
            let interval_ms = i64::from(m.reporting_interval_s.max(1)) * 1000;
            let limit_ms = interval_ms * i64::from(self.config.offline_after_intervals.max(1));
            let silent_ms = self.now_ms - last_ms;
            let key = format!("offline:{}", m.id);
            if silent_ms > limit_ms {
                self.raise(
                    NewAlarm {
                        meter: m.id.to_string(),
                        kind: AlarmKind::Offline,
                        severity: AlarmSeverity::High,
                        dedup_key: key,
                        scope: AlarmScope::Ongoing,
                        at_ms: self.now_ms,
                        message: format!(
                            "{} silent for {} s ({} reporting intervals of {} s): data route damaged?",
                            m.id,
                            silent_ms / 1000,
                            silent_ms / interval_ms,
                            m.reporting_interval_s
                        ),
                        details: json!({ "last_seen_ms": last_ms, "silent_s": silent_ms / 1000, "reporting_interval_s": m.reporting_interval_s }),
                    },
                    None,
                )
                .await?;
            } else if active.contains_key(m.id.as_str()) {
                self.clear(&key, last_ms).await?;
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Events: overload/limiter and power quality, and the tamper rules over events + readings.

    async fn events(&mut self, meters: &[Meter]) -> Result<(), Error> {
        const JOB: &str = "events";
        let cursor_ms: i64 = self
            .alarms()
            .job_state(JOB, "cursor_ms")
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let from_ms = if cursor_ms == 0 {
            self.now_ms - self.config.event_lookback_s.max(0) * 1000
        } else {
            cursor_ms - self.config.event_lookback_s.max(0) * 1000
        };
        let to_ms = self.now_ms + 1;
        let store = self.db.store();
        for m in meters {
            let events = store.events(&m.id, from_ms, to_ms).await?;
            for e in &events {
                self.event_alarm(m, e).await?;
            }
            let readings = store
                .readings(&m.id, from_ms, to_ms, self.config.max_readings_per_run)
                .await?;
            self.tamper(m, &events, &readings).await?;
        }
        self.alarms()
            .set_job_state(JOB, "cursor_ms", &self.now_ms.to_string(), self.now_ms)
            .await
    }

    async fn event_alarm(&mut self, m: &Meter, e: &StoredEvent) -> Result<(), Error> {
        let meter = m.id.to_string();
        let ev = &e.event;
        match ev.class {
            EventClass::Limiter => {
                let sub = limiter_kind(ev);
                let (kind, severity, raise) = match sub.as_str() {
                    "over_threshold" | "overload_cutoff" => {
                        (AlarmKind::Overload, AlarmSeverity::Medium, true)
                    }
                    "under_threshold" => (AlarmKind::Overload, AlarmSeverity::Medium, false),
                    "emergency_started" => (AlarmKind::Limiter, AlarmSeverity::Low, true),
                    "emergency_ended" => (AlarmKind::Limiter, AlarmSeverity::Low, false),
                    _ => return Ok(()),
                };
                if raise {
                    let message = match (kind, ev.value) {
                        (AlarmKind::Overload, _) => format!(
                            "{meter}: limiter cut the supply for overload ({})",
                            ev.detail.as_deref().map_or("no detail", shorten)
                        ),
                        _ => format!("{meter}: limiter emergency profile active"),
                    };
                    self.raise(
                        NewAlarm {
                            meter: meter.clone(),
                            kind,
                            severity,
                            dedup_key: format!("{}:{meter}:{}", kind.as_str(), e.t_ms),
                            scope: AlarmScope::Episode,
                            at_ms: e.t_ms,
                            message,
                            details: event_json(e),
                        },
                        None,
                    )
                    .await?;
                } else {
                    self.clear_matching(&meter, kind, e.t_ms, |_| true).await?;
                }
            }
            EventClass::PowerQuality => {
                let severity = if ev.code == "power_loss" {
                    AlarmSeverity::Medium
                } else {
                    AlarmSeverity::Low
                };
                if ev.active == Some(false) {
                    let code = ev.code.clone();
                    self.clear_matching(&meter, AlarmKind::PowerQuality, e.t_ms, move |a| {
                        a["code"].as_str() == Some(code.as_str())
                    })
                    .await?;
                } else {
                    let key = format!("power_quality:{meter}:{}:{}", ev.code, e.t_ms);
                    self.raise(
                        NewAlarm {
                            meter: meter.clone(),
                            kind: AlarmKind::PowerQuality,
                            severity,
                            dedup_key: key.clone(),
                            scope: AlarmScope::Episode,
                            at_ms: e.t_ms,
                            message: format!("{meter}: {}", ev.code.replace('_', " ")),
                            details: event_json(e),
                        },
                        None,
                    )
                    .await?;
                    if ev.active.is_none() {
                        // A momentary event (a sag that came and went): over as it is reported.
                        self.clear(&key, e.t_ms).await?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Clears the meter's active alarms of `kind` opened at or before `at_ms` whose details
    /// satisfy `matches`.
    async fn clear_matching(
        &mut self,
        meter: &str,
        kind: AlarmKind,
        at_ms: i64,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<(), Error> {
        let active = self
            .alarms()
            .alarms(&AlarmFilter {
                meter: Some(meter.to_owned()),
                kind: Some(kind),
                active: Some(true),
                limit: 1000,
                ..AlarmFilter::default()
            })
            .await?;
        for a in active {
            if a.opened_ms <= at_ms && matches(&a.details) {
                self.clear(&a.dedup_key, at_ms).await?;
            }
        }
        Ok(())
    }

    async fn tamper(
        &mut self,
        m: &Meter,
        events: &[StoredEvent],
        readings: &[StoredReading],
    ) -> Result<(), Error> {
        let mut inputs: Vec<(i64, TamperInput)> = events
            .iter()
            .filter_map(|e| tamper_input(e).map(|i| (e.t_ms, i)))
            .collect();
        inputs.extend(readings.iter().map(|r| (r.t_ms, reading_input(r))));
        if inputs.is_empty() {
            return Ok(());
        }
        // Stable: an event and a reading at the same instant keep event-first order.
        inputs.sort_by_key(|(t, _)| *t);
        let cfg = TamperConfig {
            export_allowed: m.allowed_export,
            ..TamperConfig::default()
        };
        let meter = m.id.to_string();
        let inputs: Vec<TamperInput> = inputs.into_iter().map(|(_, i)| i).collect();
        let findings = tamper::detect_tamper(&meter, cfg, &inputs);
        if findings.is_empty() {
            return Ok(());
        }
        let known = self
            .alarms()
            .alarms(&AlarmFilter {
                meter: Some(meter.clone()),
                kind: Some(AlarmKind::Tamper),
                limit: 1000,
                ..AlarmFilter::default()
            })
            .await?;
        let mut known: Vec<(String, i64, Option<i64>, String)> = known
            .into_iter()
            .filter_map(|a| {
                Some((
                    a.details["rule"].as_str()?.to_owned(),
                    a.details["start_ms"].as_i64()?,
                    a.cleared_ms,
                    a.dedup_key,
                ))
            })
            .collect();
        for f in findings {
            let rule = f.rule.name();
            let start_ms = f.start_s * 1000;
            let end_ms = f.end_s.map(|e| e * 1000);
            // The same episode seen before (maybe from a different window start): an alarm of
            // this rule that started no later and had not ended before this one started.
            let same = known
                .iter()
                .filter(|(r, s, cleared, _)| {
                    r == rule
                        && *s <= end_ms.unwrap_or(start_ms)
                        && cleared.is_none_or(|c| c >= start_ms)
                })
                .max_by_key(|k| k.1)
                .cloned();
            match (same, end_ms) {
                (Some((_, _, None, key)), Some(end)) => {
                    self.clear(&key, end).await?;
                    if let Some(k) = known.iter_mut().find(|k| k.3 == key) {
                        k.2 = Some(end);
                    }
                }
                (Some(_), _) => {}
                (None, end) => {
                    let key = format!("tamper:{meter}:{rule}:{start_ms}");
                    let severity = match f.severity {
                        tamper::Severity::Low => AlarmSeverity::Low,
                        tamper::Severity::Medium => AlarmSeverity::Medium,
                        tamper::Severity::High => AlarmSeverity::High,
                        tamper::Severity::Critical => AlarmSeverity::Critical,
                    };
                    let window: Vec<Value> = events
                        .iter()
                        .filter(|e| (e.t_ms - start_ms).abs() <= 3_600_000)
                        .take(50)
                        .map(event_json)
                        .collect();
                    let message = format!("{meter}: {}", f.message);
                    self.raise(
                        NewAlarm {
                            meter: meter.clone(),
                            kind: AlarmKind::Tamper,
                            severity,
                            dedup_key: key.clone(),
                            scope: AlarmScope::Episode,
                            at_ms: start_ms,
                            message,
                            details: json!({ "rule": rule, "start_ms": start_ms, "severity": format!("{:?}", f.severity).to_lowercase() }),
                        },
                        Some(CaseInput {
                            meter: meter.clone(),
                            score: None,
                            evidence: json!({ "rule": rule, "start_ms": start_ms, "end_ms": end, "events": window }),
                        }),
                    )
                    .await?;
                    if let Some(end) = end {
                        self.clear(&key, end).await?;
                    }
                    known.push((rule.to_owned(), start_ms, end, key));
                }
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Energy balance per observer.

    async fn balance(&mut self, meters: &[Meter]) -> Result<(), Error> {
        let settings = &self.config.balance;
        let class = settings.accuracy_class().map_err(Error::invalid)?;
        let bucket_ms = settings.bucket_s.max(1) * 1000;
        let mut children: BTreeMap<&MeterId, Vec<&Meter>> = BTreeMap::new();
        for m in meters {
            if let Some(p) = &m.parent {
                children.entry(p).or_default().push(m);
            }
        }
        // The newest reading time of each meter: an interval is complete once every meter
        // of the balance has reported past its end.
        let latest_ms: HashMap<MeterId, i64> = self
            .db
            .store()
            .latest_readings()
            .await?
            .into_iter()
            .map(|r| (r.meter, r.t_ms))
            .collect();
        for (observer_id, kids) in children {
            let Some(observer) = meters.iter().find(|m| &m.id == observer_id) else {
                continue; // The parent is not an active meter.
            };
            let topology = topology(settings, class, observer, &kids);
            if let Err(e) = topology.validate() {
                self.report
                    .diagnostics
                    .push(format!("balance at {observer_id}: {e}"));
                continue;
            }
            self.balance_one(observer, &kids, &topology, bucket_ms, &latest_ms)
                .await?;
        }
        Ok(())
    }

    async fn balance_one(
        &mut self,
        observer: &Meter,
        kids: &[&Meter],
        topology: &BalanceTopology,
        bucket_ms: i64,
        latest_ms: &HashMap<MeterId, i64>,
    ) -> Result<(), Error> {
        const JOB: &str = "balance";
        let settings = &self.config.balance;
        let store = self.db.store();
        let all: Vec<&Meter> = std::iter::once(observer)
            .chain(kids.iter().copied())
            .collect();
        // The last complete interval: every meter has reported past its end.
        let mut latest = i64::MAX;
        let mut earliest = i64::MIN;
        for m in &all {
            let first = store.readings(&m.id, 0, self.now_ms + 1, 1).await?;
            let (Some(first), Some(&last)) = (first.first(), latest_ms.get(&m.id)) else {
                return Ok(()); // A meter without data: nothing to balance yet.
            };
            earliest = earliest.max(first.t_ms);
            latest = latest.min(last.min(self.now_ms));
        }
        let end_ms = (latest.div_euclid(bucket_ms) - 1) * bucket_ms;
        let start_of_data = (earliest.div_euclid(bucket_ms) + 1) * bucket_ms;
        let cursor_key = format!("cursor:{}", observer.id);
        let cursor: i64 = self
            .alarms()
            .job_state(JOB, &cursor_key)
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(i64::MIN);
        if end_ms <= start_of_data || end_ms <= cursor {
            return Ok(()); // Nothing new since the last run.
        }
        let fingerprint: Vec<String> = kids.iter().map(|k| k.id.to_string()).collect();
        let calibration = self
            .calibration(
                observer,
                &all,
                topology,
                bucket_ms,
                start_of_data,
                end_ms,
                &fingerprint,
            )
            .await?;
        let window = settings.window_buckets.max(1) as i64 * bucket_ms;
        let from_ms = (end_ms - window).max(start_of_data);
        // One more interval after `end_ms` as context: it settles whether the newest judged
        // interval's excess is only energy a late stamp moved across their boundary.
        let intervals =
            interval_readings(&*store, &all, from_ms, end_ms + bucket_ms, bucket_ms).await?;
        let day_offset_s = observer
            .tz()
            .map(|tz| {
                tz.offset_from_utc_datetime(
                    &chrono::DateTime::from_timestamp_millis(end_ms)
                        .unwrap_or_default()
                        .naive_utc(),
                )
                .fix()
                .local_minus_utc()
            })
            .unwrap_or(0);
        let cfg = balance::BalanceConfig {
            lookahead_intervals: 1,
            ..settings.analytics_config(i64::from(day_offset_s))
        };
        let report = balance::evaluate_balance(topology, calibration.as_ref(), &intervals, &cfg);
        for d in &report.diagnostics {
            self.report
                .diagnostics
                .push(format!("balance at {}: {}", observer.id, d.message));
        }
        let key = format!("theft_balance:{}", observer.id);
        if report.findings.is_empty() {
            self.clear(&key, end_ms).await?;
        } else {
            let suspect = match kids {
                [only] => only.id.to_string(),
                _ => observer.id.to_string(),
            };
            let (message, details, evidence) =
                balance_evidence(observer, kids, &report, calibration.as_ref(), &cfg);
            self.raise(
                NewAlarm {
                    meter: observer.id.to_string(),
                    kind: AlarmKind::TheftBalance,
                    severity: AlarmSeverity::High,
                    dedup_key: key,
                    scope: AlarmScope::Ongoing,
                    at_ms: report
                        .findings
                        .iter()
                        .map(|f| f.end_s * 1000)
                        .max()
                        .unwrap_or(end_ms),
                    message,
                    details,
                },
                Some(CaseInput {
                    meter: suspect,
                    score: None,
                    evidence,
                }),
            )
            .await?;
        }
        self.alarms()
            .set_job_state(JOB, &cursor_key, &end_ms.to_string(), self.now_ms)
            .await
    }

    /// The observer's calibration: learnt once from its first `calibration_buckets` intervals,
    /// and only if the uncalibrated model finds nothing there. Kept in the job state with the
    /// children it was learnt for (a topology change learns again).
    #[allow(clippy::too_many_arguments)]
    async fn calibration(
        &mut self,
        observer: &Meter,
        all: &[&Meter],
        topology: &BalanceTopology,
        bucket_ms: i64,
        start_of_data: i64,
        end_ms: i64,
        fingerprint: &[String],
    ) -> Result<Option<Calibration>, Error> {
        const JOB: &str = "balance";
        let settings = &self.config.balance;
        if settings.flat_percent.is_some() {
            return Ok(None);
        }
        let key = format!("calibration:{}", observer.id);
        if let Some(saved) = self.alarms().job_state(JOB, &key).await?
            && let Ok(v) = serde_json::from_str::<Value>(&saved)
            && v["children"] == json!(fingerprint)
        {
            return Ok(calibration_from_json(&v["calibration"]));
        }
        let n = settings.calibration_buckets.max(48) as i64;
        let period_end = start_of_data + n * bucket_ms;
        if period_end > end_ms {
            return Ok(None); // Still collecting the calibration period.
        }
        let store = self.db.store();
        let intervals =
            interval_readings(&*store, all, start_of_data, period_end, bucket_ms).await?;
        let cfg = settings.analytics_config(0);
        let unc = balance::evaluate_balance(topology, None, &intervals, &cfg);
        let (cal, diags) = balance::calibrate(topology, &intervals, &cfg);
        let (cal, note) = match cal {
            _ if !unc.findings.is_empty() => (
                None,
                format!(
                    "not calibrated: the uncalibrated model already finds unexplained energy in the first {n} intervals ({})",
                    unc.findings[0].message
                ),
            ),
            None => (
                None,
                format!(
                    "not calibrated: {}",
                    diags
                        .last()
                        .map_or("calibration failed", |d| d.message.as_str())
                ),
            ),
            Some(c) => (
                Some(c),
                format!("calibrated on {} honest intervals", c.intervals),
            ),
        };
        self.report
            .diagnostics
            .push(format!("balance at {}: {note}", observer.id));
        let saved = json!({
            "children": fingerprint,
            "note": note,
            "from_ms": start_of_data,
            "to_ms": period_end,
            "calibration": cal.as_ref().map(calibration_json),
        });
        self.alarms()
            .set_job_state(JOB, &key, &saved.to_string(), self.now_ms)
            .await?;
        Ok(cal)
    }

    // -----------------------------------------------------------------------------------------
    // Consumption-pattern scoring over daily rollups.

    async fn pattern(&mut self, meters: &[Meter]) -> Result<(), Error> {
        const JOB: &str = "pattern";
        let settings = &self.config.pattern;
        let last: i64 = self
            .alarms()
            .job_state(JOB, "last_run_ms")
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(i64::MIN);
        if self.now_ms.saturating_sub(last) < settings.every_s.max(1) * 1000 {
            return Ok(());
        }
        let store = self.db.store();
        let from_ms = self.now_ms - settings.days.max(1) * 86_400_000;
        let mut histories = Vec::new();
        for m in meters {
            let tz = m.tz().unwrap_or(chrono_tz::UTC);
            let rows = store
                .rollups(&m.id, Resolution::Day, from_ms, self.now_ms)
                .await?;
            let days: Vec<(i32, f32)> = rows
                .iter()
                .filter(|r| r.end_ms <= self.now_ms) // Only whole days.
                .filter_map(|r| {
                    let local = tz.timestamp_millis_opt(r.start_ms).single()?.date_naive();
                    let day = analytics::days_from_civil(
                        chrono::Datelike::year(&local),
                        chrono::Datelike::month(&local),
                        chrono::Datelike::day(&local),
                    );
                    Some((day, (r.energy.import_wh / 1000.0) as f32))
                })
                .collect();
            let (Some(first), Some(last)) = (days.first(), days.last()) else {
                continue;
            };
            let mut kwh = vec![f32::NAN; (last.0 - first.0 + 1).max(0) as usize];
            for (d, v) in &days {
                kwh[(d - first.0) as usize] = *v;
            }
            histories.push(MeterHistory {
                meter_id: m.id.to_string(),
                first_day: first.0,
                intervals_per_day: 1,
                kwh,
            });
        }
        let set = analytics::extract_features(&histories, &PatternConfig::default());
        let labels = self.alarms().case_labels().await?;
        let thieves = labels.iter().filter(|l| l.1).count();
        let honest = labels.len() - thieves;
        let min = settings.min_labels_per_class.max(1);
        let (scores, model) = if thieves >= min && honest >= min {
            match GbtModel::train(&set, &labels, &GbtParams::default()) {
                Ok((model, _)) => (model.score(&set), "supervised"),
                Err(e) => {
                    self.report
                        .diagnostics
                        .push(format!("pattern model not trained: {e}"));
                    (analytics::score_unsupervised(&set), "unsupervised")
                }
            }
        } else {
            (analytics::score_unsupervised(&set), "unsupervised")
        };
        let active: Vec<String> = self
            .alarms()
            .alarms(&AlarmFilter {
                kind: Some(AlarmKind::TheftPattern),
                active: Some(true),
                limit: 10_000,
                ..AlarmFilter::default()
            })
            .await?
            .into_iter()
            .map(|a| a.dedup_key)
            .collect();
        for s in scores {
            let key = format!("theft_pattern:{}", s.meter_id);
            if s.score >= settings.alarm_score {
                let message = format!(
                    "{}: consumption pattern scores {:.2} ({model}): {}",
                    s.meter_id,
                    s.score,
                    s.reasons.join("; ")
                );
                self.raise(
                    NewAlarm {
                        meter: s.meter_id.clone(),
                        kind: AlarmKind::TheftPattern,
                        severity: AlarmSeverity::Medium,
                        dedup_key: key,
                        scope: AlarmScope::Ongoing,
                        at_ms: self.now_ms,
                        message,
                        details: json!({ "score": s.score, "reasons": s.reasons, "model": model }),
                    },
                    Some(CaseInput {
                        meter: s.meter_id.clone(),
                        score: Some(s.score),
                        evidence: json!({ "score": s.score, "reasons": s.reasons, "model": model }),
                    }),
                )
                .await?;
            } else if active.contains(&key) {
                self.clear(&key, self.now_ms).await?;
            }
        }
        for d in set.excluded.iter().take(20) {
            self.report.diagnostics.push(format!(
                "pattern: {} excluded: {}",
                d.meter_id.as_deref().unwrap_or("?"),
                d.message
            ));
        }
        self.alarms()
            .set_job_state(JOB, "last_run_ms", &self.now_ms.to_string(), self.now_ms)
            .await
    }
}

/// `over_threshold`, `under_threshold`, `emergency_started`, ... from a limiter event: the
/// agent sends code `limiter` with the limiter event as JSON in `detail`; other meters may
/// send the specific code directly.
fn limiter_kind(ev: &schema::Event) -> String {
    if ev.code != "limiter" {
        return ev.code.clone();
    }
    ev.detail
        .as_deref()
        .and_then(|d| serde_json::from_str::<Value>(d).ok())
        .and_then(|v| v["limiter"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn shorten(s: &str) -> &str {
    match s.char_indices().nth(160) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn event_json(e: &StoredEvent) -> Value {
    json!({
        "t_ms": e.t_ms,
        "class": crate::event_class_name(e.event.class),
        "code": e.event.code,
        "active": e.event.active,
        "value": e.event.value,
        "detail": e.event.detail.as_deref().map(shorten),
    })
}

/// An event as a tamper-rule input, if it is one.
fn tamper_input(e: &StoredEvent) -> Option<TamperInput> {
    let at_s = e.t_ms.div_euclid(1000);
    let ev = &e.event;
    let condition = |c| {
        Some(TamperInput::Condition {
            at_s,
            condition: c,
            active: ev.active.unwrap_or(true),
        })
    };
    match (ev.class, ev.code.as_str()) {
        (EventClass::Tamper, "cover_open") => condition(MeterCondition::CoverOpen),
        (EventClass::Tamper, "magnetic_field" | "magnetic") => {
            condition(MeterCondition::MagneticField)
        }
        (EventClass::Tamper, "current_mismatch" | "ct_bypass") => {
            condition(MeterCondition::CurrentMismatch)
        }
        (EventClass::Tamper, "reverse_energy") => condition(MeterCondition::ReverseEnergy),
        (EventClass::Tamper, "current_without_voltage") => {
            condition(MeterCondition::CurrentWithoutVoltage)
        }
        (EventClass::PowerQuality, "power_loss") => condition(MeterCondition::PowerLoss),
        (EventClass::Boot, "restarted") => Some(TamperInput::Restarted { at_s }),
        (EventClass::Clock, "clock_jump") => Some(TamperInput::ClockJump {
            at_s,
            delta_s: (ev.value.unwrap_or(0.0) / 1000.0) as i64,
        }),
        _ => None,
    }
}

/// A reading as a tamper-rule input. The server's receive time of each reading is not stored,
/// so `received_s` is the reading's own time: clock rules here judge time going backwards;
/// a clock running ahead is caught by ingest's timestamp checks and the meter's clock events.
fn reading_input(r: &StoredReading) -> TamperInput {
    let at_s = r.t_ms.div_euclid(1000);
    let mut sample = ReadingSample {
        at_s,
        received_s: at_s,
        active_power_w: r.reading.total.p_w,
        ..ReadingSample::default()
    };
    for p in &r.reading.phases {
        let i = match p.phase {
            Phase::A => 0,
            Phase::B => 1,
            Phase::C => 2,
        };
        sample.voltage_v[i] = Some(p.v_rms);
        sample.current_a[i] = Some(p.i_rms);
    }
    TamperInput::Reading(sample)
}

fn topology(
    settings: &BalanceSettings,
    class: balance::AccuracyClass,
    observer: &Meter,
    kids: &[&Meter],
) -> BalanceTopology {
    let oc = settings
        .observers
        .get(observer.id.as_str())
        .cloned()
        .unwrap_or_default();
    let spec = |id: &MeterId| MeterSpec {
        meter_id: id.to_string(),
        class,
        basic_current_a: settings.basic_current_a,
        resolution_wh: settings.resolution_wh,
    };
    let service = oc.service.unwrap_or(settings.service).segment();
    BalanceTopology {
        observer: spec(&observer.id),
        three_phase: oc.three_phase,
        transformer: oc.transformer.as_ref().map(BalanceSettings::transformer),
        feeder: oc.feeder.iter().map(|l| l.segment()).collect(),
        children: kids
            .iter()
            .enumerate()
            .map(|(i, k)| ChildSpec {
                meter: spec(&k.id),
                // Single-phase children of a three-phase feeder meter are spread over the
                // phases in id order unless configured otherwise.
                connection: if oc.three_phase {
                    [Connection::PhaseA, Connection::PhaseB, Connection::PhaseC][i % 3]
                } else {
                    Connection::PhaseA
                },
                service: Some(service),
            })
            .collect(),
        nominal_voltage_v: settings.nominal_voltage_v,
        power_factor: settings.power_factor,
    }
}

/// A meter's net energy counter (import − export, Wh) over time, per boot.
struct Curve {
    points: Vec<(i64, u64, f64)>,
    max_gap_ms: i64,
}

impl Curve {
    /// The counter at `t_ms`, interpolated linearly between the readings around it (energy is
    /// conserved across a gap; only its split between intervals is estimated).
    fn at(&self, t_ms: i64) -> Option<(u64, f64)> {
        let i = self.points.partition_point(|p| p.0 < t_ms);
        if let Some(p) = self.points.get(i)
            && p.0 == t_ms
        {
            return Some((p.1, p.2));
        }
        let (a, b) = (self.points.get(i.checked_sub(1)?)?, self.points.get(i)?);
        if a.1 != b.1 || b.0 - a.0 > self.max_gap_ms {
            return None;
        }
        let f = (t_ms - a.0) as f64 / (b.0 - a.0) as f64;
        Some((a.1, a.2 + f * (b.2 - a.2)))
    }

    fn energy(&self, from_ms: i64, to_ms: i64) -> Option<f64> {
        let (boot_a, a) = self.at(from_ms)?;
        let (boot_b, b) = self.at(to_ms)?;
        (boot_a == boot_b).then_some(b - a)
    }
}

/// Per-interval energies of the observer (first) and its children over `[from_ms, to_ms)`.
async fn interval_readings(
    store: &dyn crate::Store,
    all: &[&Meter],
    from_ms: i64,
    to_ms: i64,
    bucket_ms: i64,
) -> Result<Vec<IntervalReading>, Error> {
    let mut curves = Vec::with_capacity(all.len());
    for m in all {
        let interval_ms = i64::from(m.reporting_interval_s.max(1)) * 1000;
        let margin = interval_ms * 3;
        let expected = ((to_ms - from_ms + 2 * margin) / interval_ms).max(1) * 2 + 10;
        let rows = store
            .readings(
                &m.id,
                from_ms - margin,
                to_ms + margin + 1,
                expected.min(2_000_000) as u32,
            )
            .await?;
        curves.push(Curve {
            points: rows
                .iter()
                .map(|r| {
                    let c = &r.reading.counters;
                    (r.t_ms, r.boot_id, c.import_wh - c.export_wh)
                })
                .collect(),
            max_gap_ms: (interval_ms * 3).max(bucket_ms),
        });
    }
    let mut out = Vec::new();
    let mut t = from_ms;
    while t + bucket_ms <= to_ms {
        let e = |c: &Curve| c.energy(t, t + bucket_ms);
        out.push(IntervalReading {
            start_s: t.div_euclid(1000),
            duration_s: bucket_ms as f64 / 1000.0,
            observer_wh: curves.first().and_then(e),
            children_wh: curves.iter().skip(1).map(e).collect(),
            conductor_temp_c: None,
        });
        t += bucket_ms;
    }
    Ok(out)
}

fn calibration_json(c: &Calibration) -> Value {
    json!({
        "gain": c.gain, "loss_scale": c.loss_scale, "constant_w": c.constant_w,
        "s0_wh": c.s0_wh, "s1": c.s1, "s2": c.s2, "intervals": c.intervals,
    })
}

fn calibration_from_json(v: &Value) -> Option<Calibration> {
    let f = |k: &str| v[k].as_f64();
    Some(Calibration {
        gain: f("gain")?,
        loss_scale: f("loss_scale")?,
        constant_w: f("constant_w")?,
        s0_wh: f("s0_wh")?,
        s1: f("s1")?,
        s2: f("s2")?,
        intervals: v["intervals"].as_u64()? as usize,
    })
}

/// The alarm message, alarm details and case evidence of a balance report.
fn balance_evidence(
    observer: &Meter,
    kids: &[&Meter],
    report: &BalanceReport,
    calibration: Option<&Calibration>,
    cfg: &balance::BalanceConfig,
) -> (String, Value, Value) {
    let strongest = report
        .findings
        .iter()
        .max_by(|a, b| a.excess_wh.total_cmp(&b.excess_wh))
        .expect("called with findings");
    let observed: f64 = report.intervals.iter().map(|i| i.observer_wh).sum();
    let residual: f64 = report.intervals.iter().map(|i| i.residual_wh).sum();
    let pct = if observed > 0.0 {
        100.0 * residual / observed
    } else {
        0.0
    };
    let children: Vec<String> = kids.iter().map(|k| k.id.to_string()).collect();
    let message = format!(
        "energy balance at {}: {:.1} % of the observed energy unexplained by {} and the line losses ({})",
        observer.id,
        pct,
        children.join(", "),
        strongest.message
    );
    let mode = match cfg.mode {
        balance::BalanceMode::LossModel => json!("loss_model"),
        balance::BalanceMode::FlatPercent(p) => json!({ "flat_percent": p }),
    };
    let findings: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            json!({
                "alarm": format!("{:?}", f.alarm).to_lowercase(),
                "start_ms": f.start_s * 1000,
                "end_ms": f.end_s * 1000,
                "excess_wh": f.excess_wh,
                "message": f.message,
            })
        })
        .collect();
    let series: Vec<Value> = report
        .intervals
        .iter()
        .map(|i| {
            json!({
                "start_ms": i.start_s * 1000,
                "observer_wh": i.observer_wh,
                "children_wh": i.children_wh,
                "loss_wh": i.loss_wh,
                "residual_wh": i.residual_wh,
                "threshold_wh": i.threshold_wh,
                "alarm": i.alarm,
                "cusum": i.cusum,
            })
        })
        .collect();
    let diagnostics: Vec<&str> = report
        .diagnostics
        .iter()
        .map(|d| d.message.as_str())
        .collect();
    let details = json!({
        "observer": observer.id.as_str(),
        "children": children,
        "unexplained_pct": pct,
        "mode": mode,
        "calibrated": calibration.is_some(),
        "findings": findings,
    });
    let evidence = json!({
        "observer": observer.id.as_str(),
        "children": children,
        "unexplained_pct": pct,
        "mode": mode,
        "calibrated": calibration.is_some(),
        "findings": findings,
        "residual_series": series,
        "diagnostics": diagnostics,
    });
    (message, details, evidence)
}
