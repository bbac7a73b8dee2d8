//! The DLMS poller: the server as a head-end polling configured DLMS/COSEM meters
//! (`[[dlms.meters]]`) on a schedule, their readings entering the same ingest as MQTT meters.
//!
//! Each poll opens one association ([`super::session`]) and reads, in this order: the energy
//! registers (active import/export, reactive quadrants I–IV) with their scalers, the
//! instantaneous values (per-phase voltage, current, power, PF, THD; total power, PF,
//! frequency), then the clock, then the load profile 1-0:99.1.0.255 from the last captured
//! row up to that clock time and the standard, fraud and disconnector event logs from the
//! last recorded entry (selective access by range). Registers before the clock means
//! every profile row captured after the clock reading was also captured after the registers
//! were read, so counters never go backwards from one record to the next.
//!
//! The rows and the register snapshot become `reading` records of the meter — monotonic
//! counters, `(boot_id, seq)` from the meter's cursor ([`crate::store::dlms`]) — sealed with
//! the meter's key from the key store (created at the first poll, as enrolment does) and
//! handed to [`Ingest::submit`] on the meter's `up` topic: verification, validation,
//! idempotency, quarantine, rollups and the live stream all apply as for an MQTT meter.
//!
//! Exactly once across restarts: the envelopes are written into the cursor (with the
//! advanced cursor) *before* they are submitted and cleared after ingest committed them; a
//! crash in between re-submits the same bytes, which ingest counts as duplicates. A failed
//! poll (refused connection, rejected association, timeout, database) is logged with the
//! meter and the reason, counted (`wattline_dlms_polls_total{result="failed"}`) and retried
//! after 5 s, doubling up to `retry_max_s`; the meter stores nothing meanwhile, so it shows
//! offline exactly like a silent MQTT meter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::dlms::cosem::{ScalerUnit, class_id};
use ::dlms::{ClientAuthentication, Data, DeviationConvention, Obis};
use schema::{
    Batch, Body, EnergyCounters, Event, EventClass, MeterId, MeterKey, Phase, PhaseReading,
    Reading, Record, TotalReading,
};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::config::{AssociationSetting, DeviationSetting, DlmsMeterConfig, DlmsSection};
use super::session::{
    KeyFile, Selection, Session, SessionConfig, SessionError, Target, meter_invocation_counter,
};
use crate::keystore::KeyStore;
use crate::store::dlms::{PollState, PolledPoint};
use crate::{Database, Ingest, MeterStatus};

/// The load profile of the wattline convention (and most meters): 1-0:99.1.0.255.
pub const LOAD_PROFILE: Obis = Obis::new(1, 0, 99, 1, 0, 255);

/// Active import/export and reactive quadrants I–IV, total (the order of
/// [`EnergyCounters`]); `wattline dlms read --energy` reads the same registers.
pub const ENERGY: [Obis; 6] = [
    Obis::new(1, 0, 1, 8, 0, 255),
    Obis::new(1, 0, 2, 8, 0, 255),
    Obis::new(1, 0, 5, 8, 0, 255),
    Obis::new(1, 0, 6, 8, 0, 255),
    Obis::new(1, 0, 7, 8, 0, 255),
    Obis::new(1, 0, 8, 8, 0, 255),
];

/// Per phase L1..L3, OBIS C of: voltage, current, active power, power factor.
const PHASE_C: [[u8; 4]; 3] = [[32, 31, 21, 33], [52, 51, 41, 53], [72, 71, 61, 73]];
/// OBIS E of the THD of a phase voltage or current.
const THD_E: u8 = 124;

/// The standard, fraud and disconnector event logs (IDIS numbering, as the agent's COSEM
/// server keeps them).
const EVENT_LOGS: [Obis; 3] = [
    Obis::new(0, 0, 99, 98, 0, 255),
    Obis::new(0, 0, 99, 98, 1, 255),
    Obis::new(0, 0, 99, 98, 2, 255),
];

/// An event-log entry as a wattline event: the IDIS event codes of the standard (log 0),
/// fraud (1) and disconnector (2) logs map to the codes an agent sends for the same thing, so
/// the tamper rules and alarms treat a DLMS meter like any other; other codes keep their
/// number (`dlms_fraud_51`).
fn event_from_log(log: usize, code: u16) -> Event {
    let (class, name, active) = match (log, code) {
        (0, 1) => (EventClass::PowerQuality, "power_loss", Some(true)),
        (0, 2) => (EventClass::PowerQuality, "power_loss", Some(false)),
        (0, 3) => (EventClass::Clock, "clock_adjusted", None),
        (1, 40..=49) => {
            let name = match code {
                40 | 41 => "cover_open",
                42 | 43 => "magnetic_field",
                44 | 45 => "current_mismatch",
                46 | 47 => "reverse_energy",
                _ => "current_without_voltage",
            };
            (EventClass::Tamper, name, Some(code.is_multiple_of(2)))
        }
        (2, 59) => (EventClass::Relay, "remote_disconnect", None),
        (2, 60) => (EventClass::Relay, "remote_reconnect", None),
        (2, 61) => (EventClass::Relay, "manual_disconnect", None),
        (2, 62) => (EventClass::Relay, "manual_reconnect", None),
        (2, 63) => (EventClass::Relay, "local_disconnect", None),
        (2, 64) => (EventClass::Relay, "local_reconnect", None),
        (2, 65) => (EventClass::Limiter, "limiter", None),
        (2, 66) => (EventClass::Relay, "trigger_refused", None),
        (0, _) => (EventClass::Other, "", None),
        (1, _) => (EventClass::Tamper, "", None),
        _ => (EventClass::Relay, "", None),
    };
    let log_name = ["standard", "fraud", "disconnector"][log.min(2)];
    Event {
        class,
        code: if name.is_empty() {
            format!("dlms_{log_name}_{code}")
        } else {
            name.to_owned()
        },
        active,
        value: None,
        detail: Some(format!("DLMS {log_name} event log, event code {code}")),
    }
}

/// Most records sealed into one envelope (well inside `schema::MAX_RECORDS_PER_BATCH`).
const RECORDS_PER_ENVELOPE: usize = 512;
/// The first retry after a failed poll; the wait doubles up to `retry_max_s`.
const FIRST_RETRY: Duration = Duration::from_secs(5);
/// How long a poll waits for ingest to commit its envelopes.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(60);

/// What the poller knows about one meter, for `/metrics`-like views and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeterPollStatus {
    /// Polls that stored their records.
    pub polls_ok: u64,
    /// Polls that failed.
    pub polls_failed: u64,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// When the last poll succeeded, Unix ms.
    pub last_ok_ms: Option<i64>,
    /// Why the last poll failed, if it did (cleared by a success).
    pub last_error: Option<String>,
    /// Records handed to ingest so far.
    pub records: u64,
}

type StatusMap = Arc<Mutex<HashMap<MeterId, MeterPollStatus>>>;

/// The running poller: one task per meter.
pub struct PollerHandle {
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    status: StatusMap,
}

impl std::fmt::Debug for PollerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollerHandle")
            .field("meters", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl PollerHandle {
    /// The poll status of `meter`, if it is configured.
    pub fn status(&self, meter: &MeterId) -> Option<MeterPollStatus> {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(meter)
            .cloned()
    }

    /// Stops polling: a poll under way finishes (its envelopes are committed or stay pending
    /// in the cursor for the next start).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for mut task in self.tasks {
            if tokio::time::timeout(Duration::from_secs(30), &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
    }
}

/// The secret an association needs, loaded at start. Never printed.
#[derive(Clone)]
enum Credentials {
    None,
    Password(Vec<u8>),
    Keys(KeyFile),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::None => "None",
            Credentials::Password(_) => "Password(<redacted>)",
            Credentials::Keys(_) => "Keys(<redacted>)",
        })
    }
}

fn read_secret(path: &std::path::Path, key: &str) -> Result<String, String> {
    crate::keystore::check_owner_only(path).map_err(|e| format!("{key}: {e}"))?;
    std::fs::read_to_string(path).map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))
}

fn credentials(i: usize, m: &DlmsMeterConfig) -> Result<Credentials, String> {
    let key = |k: &str| format!("[dlms] meters[{i}].{k}");
    match m.association {
        AssociationSetting::Public => Ok(Credentials::None),
        AssociationSetting::Lls => {
            let path = m
                .password_file
                .as_ref()
                .ok_or_else(|| format!("{}: required", key("password_file")))?;
            let text = read_secret(path, &key("password_file"))?;
            let password = text.lines().next().unwrap_or("").as_bytes().to_vec();
            if password.is_empty() {
                return Err(format!(
                    "{}: the first line of {} is empty",
                    key("password_file"),
                    path.display()
                ));
            }
            Ok(Credentials::Password(password))
        }
        AssociationSetting::Hls => {
            let path = m
                .key_file
                .as_ref()
                .ok_or_else(|| format!("{}: required", key("key_file")))?;
            let text = read_secret(path, &key("key_file"))?;
            let keys = KeyFile::parse(&path.display().to_string(), &text)
                .map_err(|e| format!("{}: {e}", key("key_file")))?;
            // Checked now so a bad key file stops the start, not every poll.
            keys.authentication(&key("key_file"))?;
            Ok(Credentials::Keys(keys))
        }
    }
}

/// Starts one polling task per configured meter (none without meters). Credential files are
/// read now: a missing or unreadable one is an error naming its key.
pub fn start(
    db: Database,
    keys: Arc<KeyStore>,
    ingest: Arc<Ingest>,
    section: &DlmsSection,
) -> Result<Option<PollerHandle>, String> {
    if section.meters.is_empty() {
        return Ok(None);
    }
    section.validate()?;
    let (stop, stop_rx) = watch::channel(false);
    let status: StatusMap = Arc::default();
    let mut pollers = Vec::new();
    for (i, m) in section.meters.iter().enumerate() {
        let meter =
            MeterId::parse(&m.meter).map_err(|e| format!("[dlms] meters[{i}].meter: {e}"))?;
        status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(meter.clone(), MeterPollStatus::default());
        pollers.push(MeterPoller {
            credentials: credentials(i, m)?,
            config: m.clone(),
            meter,
            db: db.clone(),
            keys: keys.clone(),
            ingest: ingest.clone(),
            state: None,
            key: None,
            status: status.clone(),
        });
    }
    let tasks = pollers
        .into_iter()
        .map(|p| tokio::spawn(p.run(stop_rx.clone())))
        .collect();
    Ok(Some(PollerHandle {
        tasks,
        stop,
        status,
    }))
}

/// One meter's polling loop.
struct MeterPoller {
    config: DlmsMeterConfig,
    meter: MeterId,
    credentials: Credentials,
    db: Database,
    keys: Arc<KeyStore>,
    ingest: Arc<Ingest>,
    /// The cursor, loaded at the first poll.
    state: Option<PollState>,
    key: Option<MeterKey>,
    status: StatusMap,
}

impl MeterPoller {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut failures = 0u32;
        loop {
            if *stop.borrow() {
                return;
            }
            let wait = match self.poll_once().await {
                Ok(records) => {
                    failures = 0;
                    metrics::counter!("wattline_dlms_polls_total", "result" => "ok").increment(1);
                    tracing::debug!(meter = %self.meter, records, "dlms poll stored");
                    self.update_status(|s| {
                        s.polls_ok += 1;
                        s.consecutive_failures = 0;
                        s.last_ok_ms = Some(crate::now_ms());
                        s.last_error = None;
                        s.records += records as u64;
                    });
                    self.config.period()
                }
                Err(why) => {
                    failures = failures.saturating_add(1);
                    metrics::counter!("wattline_dlms_polls_total", "result" => "failed")
                        .increment(1);
                    let wait = FIRST_RETRY
                        .saturating_mul(1 << (failures - 1).min(16))
                        .min(Duration::from_secs(self.config.retry_max_s));
                    tracing::warn!(meter = %self.meter, address = %self.config.address, failures,
                        retry_in_s = wait.as_secs(), error = %why, "dlms poll failed");
                    self.update_status(|s| {
                        s.polls_failed += 1;
                        s.consecutive_failures = failures;
                        s.last_error = Some(why.clone());
                    });
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                r = stop.changed() => if r.is_err() || *stop.borrow() { return },
            }
        }
    }

    fn update_status(&self, f: impl FnOnce(&mut MeterPollStatus)) {
        let mut map = self.status.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(self.meter.clone()).or_default());
    }

    /// One poll: returns the number of records handed to ingest.
    async fn poll_once(&mut self) -> Result<usize, String> {
        let meter = self.meter.clone();
        match self.db.store().meter(&meter).await {
            Err(e) => return Err(format!("reading meter {meter} from the store: {e}")),
            Ok(None) => {
                return Err(format!(
                    "meter {meter} is not registered: register it first (`wattline meter enroll {meter}` or POST /api/v1/meters)"
                ));
            }
            Ok(Some(m)) if m.status != MeterStatus::Active => {
                return Err(format!(
                    "meter {meter} is deregistered; not storing its readings"
                ));
            }
            Ok(Some(mut m)) => {
                // Online/offline and the offline alarm count in reporting intervals: for a
                // polled meter that is the poll period.
                let period_s = u32::try_from(self.config.poll_every_s).unwrap_or(u32::MAX);
                if m.reporting_interval_s != period_s {
                    m.reporting_interval_s = period_s;
                    self.db.store().upsert_meter(&m).await.map_err(|e| {
                        format!("setting the reporting interval of {meter} to the poll period: {e}")
                    })?;
                    tracing::info!(%meter, period_s, "dlms meter's reporting interval set to its poll period");
                }
            }
        }
        let key = match &self.key {
            Some(k) => k.clone(),
            None => {
                let key = match self.keys.current_key(&meter).await {
                    Ok(Some((_, k))) => k,
                    // A DLMS meter has no enrolment bundle: the server makes its sealing key,
                    // kept encrypted in the key store like an enrolled meter's.
                    Ok(None) => {
                        self.keys
                            .rotate(&meter)
                            .await
                            .map_err(|e| format!("creating the sealing key of {meter}: {e}"))?
                            .1
                    }
                    Err(e) => return Err(format!("reading the sealing key of {meter}: {e}")),
                };
                self.key = Some(key.clone());
                key
            }
        };
        if self.state.is_none() {
            let loaded = self
                .db
                .dlms()
                .poll_state(&meter)
                .await
                .map_err(|e| format!("reading the poll cursor of {meter}: {e}"))?;
            self.state =
                Some(loaded.unwrap_or_else(|| PollState::new(meter.clone(), random_boot_id())));
        }
        // Envelopes of an earlier poll that were never acknowledged (a crash, a database
        // failure) go first, as they are.
        self.flush_pending().await?;

        let state = self.state.as_ref().expect("loaded above");
        let now_s = crate::now_ms().div_euclid(1000);
        let backfill_from_s = now_s - i64::from(self.config.backfill_h) * 3600;
        let from_s = state.last_capture_s.map_or(backfill_from_s, |t| t + 1);
        let event_from_s = state.last_event_s.map_or(backfill_from_s, |t| t + 1);
        let session_config = SessionConfig {
            address: resolve(&self.config.address)?,
            transport: self.config.transport(),
            server_logical_device: self.config.server_logical_device,
            timeout: Duration::from_secs(self.config.timeout_s),
            clock_deviation: match self.config.clock_deviation {
                DeviationSetting::UtcMinusLocal => DeviationConvention::UtcMinusLocal,
                DeviationSetting::LocalMinusUtc => DeviationConvention::LocalMinusUtc,
            },
        };
        let association = self.config.association;
        let credentials = self.credentials.clone();
        let read = tokio::task::spawn_blocking(move || {
            read_meter(
                &session_config,
                association,
                &credentials,
                from_s,
                event_from_s,
            )
        })
        .await
        .map_err(|e| format!("the poll task failed: {e}"))?
        .map_err(|e| e.to_string())?;

        let state = self.state.as_mut().expect("loaded above");
        let mut next = state.clone();
        let batches = build_batches(&mut next, &read, self.config.poll_every_s);
        let records: usize = batches.iter().map(|b| b.records.len()).sum();
        let mut envelopes = Vec::with_capacity(batches.len());
        for b in &batches {
            envelopes.push(
                schema::seal_batch(&key, b)
                    .map_err(|e| format!("sealing the readings of {meter}: {e}"))?,
            );
        }
        next.pending = envelopes;
        // The advanced cursor and its envelopes are durable before ingest sees them.
        self.db
            .dlms()
            .save_poll_state(&next)
            .await
            .map_err(|e| format!("saving the poll cursor of {meter}: {e}"))?;
        *state = next;
        self.flush_pending().await?;
        Ok(records)
    }

    /// Submits the pending envelopes, waits for their commit, then clears them.
    async fn flush_pending(&mut self) -> Result<(), String> {
        let state = self.state.as_mut().expect("loaded before flushing");
        if state.pending.is_empty() {
            return Ok(());
        }
        let topic = schema::topic::up(&self.meter);
        for envelope in &state.pending {
            let (tx, rx) = oneshot::channel::<()>();
            self.ingest
                .submit(&topic, envelope.clone(), Box::new(tx))
                .await
                .map_err(|e| format!("handing the readings of {} to ingest: {e}", self.meter))?;
            match tokio::time::timeout(COMMIT_TIMEOUT, rx).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(format!(
                        "ingest could not commit the readings of {} (database unavailable?); kept to submit again",
                        self.meter
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "ingest did not commit the readings of {} within {} s; kept to submit again",
                        self.meter,
                        COMMIT_TIMEOUT.as_secs()
                    ));
                }
            }
        }
        let mut cleared = state.clone();
        cleared.pending.clear();
        self.db
            .dlms()
            .save_poll_state(&cleared)
            .await
            .map_err(|e| format!("saving the poll cursor of {}: {e}", self.meter))?;
        *state = cleared;
        Ok(())
    }
}

fn resolve(address: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {address}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address} resolves to no address"))
}

fn random_boot_id() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the OS random source is available");
    // Positive as an i64, like the agent's boot ids, so both backends store it as is.
    u64::from_be_bytes(b) >> 1
}

/// What one poll read from the meter.
#[derive(Debug, Clone, PartialEq)]
struct MeterRead {
    /// The meter's clock, Unix seconds (read after the registers).
    clock_s: i64,
    counters: EnergyCounters,
    phases: Vec<PhaseReading>,
    total_p_w: Option<f64>,
    total_pf: Option<f64>,
    freq_hz: Option<f64>,
    /// Load-profile rows captured from the cursor up to `clock_s`: time and counters,
    /// oldest first.
    profile: Vec<PolledPoint>,
    /// The profile's capture period, seconds.
    profile_period_s: u32,
    /// Event-log entries from the event cursor up to `clock_s`: time (Unix s) and event.
    events: Vec<(i64, Event)>,
}

/// An open session with the meter's scalers remembered.
struct Reader {
    session: Session,
    scalers: HashMap<Obis, Option<ScalerUnit>>,
}

impl Reader {
    /// A register's value scaled to its unit; `None` when the meter does not give it.
    fn value(&mut self, class: u16, obis: Obis) -> Result<Option<f64>, SessionError> {
        let target = Target::new(class, obis, 2);
        let raw = match self.session.get(target, None)? {
            Ok(d) => d,
            Err(r) => {
                tracing::debug!(%target, result = %r.name(), "dlms poll: value not given");
                return Ok(None);
            }
        };
        let Some(raw) = raw.as_f64() else {
            return Ok(None);
        };
        Ok(Some(match self.scaler(target)? {
            Some(su) => su.apply(raw),
            None => raw,
        }))
    }

    fn scaler(&mut self, target: Target) -> Result<Option<ScalerUnit>, SessionError> {
        if let Some(su) = self.scalers.get(&target.obis) {
            return Ok(*su);
        }
        let su = self.session.scaler_unit(target)?;
        self.scalers.insert(target.obis, su);
        Ok(su)
    }
}

fn authentication(credentials: &Credentials) -> Result<ClientAuthentication, SessionError> {
    Ok(match credentials {
        Credentials::None => ClientAuthentication::None,
        Credentials::Password(p) => ClientAuthentication::Lls {
            password: p.clone(),
        },
        Credentials::Keys(k) => k
            .authentication("key_file")
            .map_err(|e| SessionError::from_message(&e))?,
    })
}

/// Opens the association, reads everything a poll needs, releases. Blocking.
fn read_meter(
    config: &SessionConfig,
    association: AssociationSetting,
    credentials: &Credentials,
    from_s: i64,
    event_from_s: i64,
) -> Result<MeterRead, SessionError> {
    let association = association.association();
    let first_counter = match association {
        super::Association::Management => meter_invocation_counter(config)
            .map_err(|e| e.context("reading the invocation counter before the hls association"))?,
        _ => 1,
    };
    let session = Session::open(
        config,
        association,
        authentication(credentials)?,
        first_counter,
    )?;
    let mut reader = Reader {
        session,
        scalers: HashMap::new(),
    };
    let result = read_all(&mut reader, from_s, event_from_s);
    // Release even after a failure, so the meter frees the association at once.
    let _ = reader.session.release();
    result
}

fn read_all(r: &mut Reader, from_s: i64, event_from_s: i64) -> Result<MeterRead, SessionError> {
    let mut energy = [0.0f64; 6];
    for (i, obis) in ENERGY.iter().enumerate() {
        match r.value(class_id::REGISTER, *obis)? {
            Some(v) => energy[i] = v,
            // Without active import there is no reading worth storing.
            None if i == 0 => {
                return Err(SessionError::from_message(&format!(
                    "the meter did not give active energy import {obis} in this association (a public association usually cannot read energy: use lls or hls)"
                )));
            }
            // Registers the meter does not have stay at zero (a constant counter).
            None => {}
        }
    }
    let counters = EnergyCounters {
        import_wh: energy[0],
        export_wh: energy[1],
        q1_varh: energy[2],
        q2_varh: energy[3],
        q3_varh: energy[4],
        q4_varh: energy[5],
    };
    let mut phases = Vec::new();
    for (i, [v, c, p, pf]) in PHASE_C.iter().enumerate() {
        let o = |c: u8, e: u8| Obis::new(1, 0, c, 7, e, 255);
        let Some(v_rms) = r.value(class_id::REGISTER, o(*v, 0))? else {
            break;
        };
        let i_rms = r.value(class_id::REGISTER, o(*c, 0))?.unwrap_or(0.0);
        let s_va = v_rms * i_rms;
        let p_w = r.value(class_id::REGISTER, o(*p, 0))?;
        let pf = r.value(class_id::REGISTER, o(*pf, 0))?;
        let p_w = p_w.or_else(|| pf.map(|pf| pf * s_va)).unwrap_or(0.0);
        phases.push(PhaseReading {
            phase: [Phase::A, Phase::B, Phase::C][i],
            v_rms,
            i_rms,
            p_w,
            q_var: None,
            s_va,
            pf: pf.unwrap_or(if s_va > 0.0 { p_w / s_va } else { 1.0 }),
            v_thd_pct: r.value(class_id::REGISTER, o(*v, THD_E))?,
            i_thd_pct: r.value(class_id::REGISTER, o(*c, THD_E))?,
        });
    }
    let total_p_w = match r.value(class_id::REGISTER, Obis::new(1, 0, 16, 7, 0, 255))? {
        Some(p) => Some(p),
        None => r.value(class_id::REGISTER, Obis::new(1, 0, 1, 7, 0, 255))?,
    };
    let total_pf = r.value(class_id::REGISTER, Obis::new(1, 0, 13, 7, 0, 255))?;
    let freq_hz = r.value(class_id::REGISTER, Obis::new(1, 0, 14, 7, 0, 255))?;

    // The clock after the registers (see the module documentation).
    let clock_target = Target::new(class_id::CLOCK, Obis::CLOCK, 2);
    let clock = r.session.get(clock_target, None)?.map_err(|e| {
        SessionError::from_message(&format!("the meter refused its clock ({})", e.name()))
    })?;
    let clock_s = r.session.client().unix_time(&clock).ok_or_else(|| {
        SessionError::from_message("the meter's clock is not a complete date-time")
    })?;

    let mut profile = Vec::new();
    let mut profile_period_s = 0;
    if from_s <= clock_s {
        match r.session.read_profile(
            LOAD_PROFILE,
            Selection::Range {
                from_s,
                to_s: clock_s,
            },
        )? {
            Err((target, why)) => {
                tracing::debug!(%target, result = %why.name(), "dlms poll: no load profile");
            }
            Ok(p) => {
                profile_period_s = p.period_s;
                let clock_col = p
                    .columns
                    .iter()
                    .position(|c| c.class_id == class_id::CLOCK && c.attribute_id == 2);
                let energy_cols: Vec<Option<usize>> = ENERGY
                    .iter()
                    .map(|o| {
                        p.columns.iter().position(|c| {
                            c.logical_name == *o && c.attribute_id == 2 && c.data_index == 0
                        })
                    })
                    .collect();
                if let (Some(tc), Some(_)) = (clock_col, energy_cols[0]) {
                    let mut scales = [None; 6];
                    for (i, col) in energy_cols.iter().enumerate() {
                        if let Some(col) = col {
                            let c = &p.columns[*col];
                            scales[i] = r.scaler(Target::new(c.class_id, c.logical_name, 2))?;
                        }
                    }
                    for row in &p.rows {
                        let Some(t_s) = row.get(tc).and_then(|d| r.session.client().unix_time(d))
                        else {
                            continue;
                        };
                        if t_s < from_s || t_s > clock_s {
                            continue;
                        }
                        let mut e = [0.0f64; 6];
                        for (i, col) in energy_cols.iter().enumerate() {
                            let v = col.and_then(|c| row.get(c)).and_then(Data::as_f64);
                            e[i] = match (v, scales[i]) {
                                (Some(v), Some(su)) => su.apply(v),
                                (Some(v), None) => v,
                                (None, _) => 0.0,
                            };
                        }
                        profile.push(PolledPoint {
                            t_s,
                            counters: EnergyCounters {
                                import_wh: e[0],
                                export_wh: e[1],
                                q1_varh: e[2],
                                q2_varh: e[3],
                                q3_varh: e[4],
                                q4_varh: e[5],
                            },
                        });
                    }
                    profile.sort_by_key(|p| p.t_s);
                } else {
                    tracing::debug!("dlms poll: the load profile has no clock or import column");
                }
            }
        }
    }
    let mut events = Vec::new();
    if event_from_s <= clock_s {
        for (log, obis) in EVENT_LOGS.iter().enumerate() {
            let range = Selection::Range {
                from_s: event_from_s,
                to_s: clock_s,
            };
            let p = match r.session.read_profile(*obis, range)? {
                Ok(p) => p,
                Err((target, why)) => {
                    tracing::debug!(%target, result = %why.name(), "dlms poll: no event log");
                    continue;
                }
            };
            let Some(tc) = p.columns.iter().position(|c| c.class_id == class_id::CLOCK) else {
                continue;
            };
            let Some(cc) = p.columns.iter().position(|c| c.class_id != class_id::CLOCK) else {
                continue;
            };
            for row in &p.rows {
                let t = row.get(tc).and_then(|d| r.session.client().unix_time(d));
                let code = row
                    .get(cc)
                    .and_then(Data::as_i128)
                    .and_then(|c| u16::try_from(c).ok());
                // Only whole seconds the meter's clock has left: another entry may still be
                // logged in the second the clock was read, so that second waits for the next
                // poll (the cursor moves to the newest second taken, so nothing is read twice
                // and nothing logged later in the same second is skipped).
                if let (Some(t_s), Some(code)) = (t, code)
                    && (event_from_s..clock_s).contains(&t_s)
                {
                    events.push((t_s, event_from_log(log, code)));
                }
            }
        }
        events.sort_by_key(|(t, _)| *t);
    }
    Ok(MeterRead {
        clock_s,
        counters,
        phases,
        total_p_w,
        total_pf,
        freq_hz,
        profile,
        profile_period_s,
        events,
    })
}

fn backwards(earlier: &EnergyCounters, later: &EnergyCounters) -> bool {
    !later.is_monotonic_after(earlier)
}

fn max_counters(a: &EnergyCounters, b: &EnergyCounters) -> EnergyCounters {
    EnergyCounters {
        import_wh: a.import_wh.max(b.import_wh),
        export_wh: a.export_wh.max(b.export_wh),
        q1_varh: a.q1_varh.max(b.q1_varh),
        q2_varh: a.q2_varh.max(b.q2_varh),
        q3_varh: a.q3_varh.max(b.q3_varh),
        q4_varh: a.q4_varh.max(b.q4_varh),
    }
}

/// Turns what a poll read into batches (one per boot, at most [`RECORDS_PER_ENVELOPE`]
/// records each) and advances `state` past them.
fn build_batches(state: &mut PollState, read: &MeterRead, poll_every_s: u64) -> Vec<Batch> {
    let mut batches: Vec<Batch> = Vec::new();
    // A reading moves the last point (its counters); an event does not.
    let mut push = |state: &mut PollState, t_s: i64, point: Option<PolledPoint>, body: Body| {
        let record = Record {
            seq: state.next_seq,
            t_ms: t_s * 1000,
            body,
        };
        state.next_seq += 1;
        if point.is_some() {
            state.last_point = point;
        }
        match batches.last_mut() {
            Some(b) if b.boot_id == state.boot_id && b.records.len() < RECORDS_PER_ENVELOPE => {
                b.records.push(record)
            }
            _ => batches.push(Batch {
                meter: state.meter.clone(),
                boot_id: state.boot_id,
                records: vec![record],
            }),
        }
    };
    // A register below the last recorded one: the meter's registers were reset (or the
    // meter replaced). Like an agent, that is a new boot, never negative consumption.
    let new_boot_if_backwards = |state: &mut PollState, counters: &EnergyCounters| {
        if let Some(last) = &state.last_point
            && backwards(&last.counters, counters)
        {
            tracing::warn!(meter = %state.meter, "dlms meter registers went backwards: a new boot");
            state.boot_id = random_boot_id();
            state.next_seq = 1;
            state.last_point = None;
        }
    };
    let interval = |state: &PollState, t_s: i64, default_s: f64| -> f64 {
        match &state.last_point {
            Some(l) if t_s > l.t_s => ((t_s - l.t_s) as f64).min(86_400.0),
            _ => default_s.clamp(1.0, 86_400.0),
        }
    };
    let period_s = if read.profile_period_s > 0 {
        f64::from(read.profile_period_s)
    } else {
        poll_every_s as f64
    };
    // Events first: they carry no counters, so their place among the readings is free.
    for (t_s, event) in &read.events {
        push(state, *t_s, None, Body::Event(event.clone()));
    }
    if let Some(t) = read.events.iter().map(|(t, _)| *t).max() {
        state.last_event_s = Some(state.last_event_s.map_or(t, |l| l.max(t)));
    }
    let mut last_row: Option<EnergyCounters> = None;
    for row in &read.profile {
        new_boot_if_backwards(state, &row.counters);
        let interval_s = interval(state, row.t_s, period_s);
        // Mean power over the capture period from the counter differences (Wh → W).
        let (p_w, q_var) = match &state.last_point {
            Some(l) if row.t_s > l.t_s => {
                let h = (row.t_s - l.t_s) as f64 / 3600.0;
                let c = &row.counters;
                let d = |a: f64, b: f64| a - b;
                let p = (d(c.import_wh, l.counters.import_wh)
                    - d(c.export_wh, l.counters.export_wh))
                    / h;
                let q = (d(c.q1_varh, l.counters.q1_varh) + d(c.q2_varh, l.counters.q2_varh)
                    - d(c.q3_varh, l.counters.q3_varh)
                    - d(c.q4_varh, l.counters.q4_varh))
                    / h;
                (p, Some(q))
            }
            _ => (0.0, None),
        };
        let s_va = p_w.hypot(q_var.unwrap_or(0.0));
        let reading = Reading {
            interval_s,
            // The profile has no frequency column; 0 means "not measured".
            freq_hz: 0.0,
            phases: Vec::new(),
            total: TotalReading {
                p_w,
                q_var,
                s_va,
                pf: if s_va > 0.0 { p_w / s_va } else { 1.0 },
            },
            counters: row.counters,
        };
        push(state, row.t_s, Some(*row), Body::Reading(reading));
        last_row = Some(row.counters);
    }
    // The registers were read before the clock, so a row captured in between may hold
    // slightly more than the snapshot; the counters at the clock time are at least both.
    let counters = match &last_row {
        Some(r) => max_counters(r, &read.counters),
        None => read.counters,
    };
    new_boot_if_backwards(state, &counters);
    let interval_s = interval(state, read.clock_s, poll_every_s as f64);
    let s_va: f64 = read.phases.iter().map(|p| p.s_va).sum();
    let p_w = read
        .total_p_w
        .unwrap_or_else(|| read.phases.iter().map(|p| p.p_w).sum());
    let reading = Reading {
        interval_s,
        freq_hz: read.freq_hz.unwrap_or(0.0),
        phases: read.phases.clone(),
        total: TotalReading {
            p_w,
            q_var: None,
            s_va: s_va.max(p_w.abs()),
            pf: read
                .total_pf
                .unwrap_or(if s_va > 0.0 { p_w / s_va } else { 1.0 }),
        },
        counters,
    };
    push(
        state,
        read.clock_s,
        Some(PolledPoint {
            t_s: read.clock_s,
            counters,
        }),
        Body::Reading(reading),
    );
    if let Some(last) = read.profile.last() {
        state.last_capture_s = Some(state.last_capture_s.map_or(last.t_s, |t| t.max(last.t_s)));
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(import_wh: f64) -> EnergyCounters {
        EnergyCounters {
            import_wh,
            ..Default::default()
        }
    }

    fn read(clock_s: i64, import_wh: f64, rows: &[(i64, f64)]) -> MeterRead {
        MeterRead {
            clock_s,
            counters: c(import_wh),
            phases: Vec::new(),
            total_p_w: Some(100.0),
            total_pf: Some(1.0),
            freq_hz: Some(50.0),
            profile: rows
                .iter()
                .map(|&(t_s, wh)| PolledPoint {
                    t_s,
                    counters: c(wh),
                })
                .collect(),
            profile_period_s: 900,
            events: Vec::new(),
        }
    }

    fn seqs(batches: &[Batch]) -> Vec<(u64, u64)> {
        batches
            .iter()
            .flat_map(|b| b.records.iter().map(move |r| (b.boot_id, r.seq)))
            .collect()
    }

    #[test]
    fn rows_then_snapshot_advance_the_cursor_without_gaps() {
        let mut s = PollState::new(MeterId::parse("d-1").unwrap(), 7);
        let b = build_batches(&mut s, &read(2000, 12.0, &[(900, 10.0), (1800, 11.0)]), 60);
        assert_eq!(seqs(&b), [(7, 1), (7, 2), (7, 3)]);
        assert_eq!((s.next_seq, s.last_capture_s), (4, Some(1800)));
        // Mean power of the second row: 1 Wh over 900 s = 4 W.
        let Body::Reading(r) = &b[0].records[1].body else {
            panic!()
        };
        assert!((r.total.p_w - 4.0).abs() < 1e-9, "{}", r.total.p_w);
        assert_eq!(r.interval_s, 900.0);
        let b = build_batches(&mut s, &read(2900, 13.0, &[(2700, 12.5)]), 60);
        assert_eq!(seqs(&b), [(7, 4), (7, 5)]);
        assert_eq!(s.last_capture_s, Some(2700));
    }

    #[test]
    fn a_row_captured_between_register_and_clock_reads_never_makes_counters_go_back() {
        let mut s = PollState::new(MeterId::parse("d-1").unwrap(), 7);
        let b = build_batches(&mut s, &read(1000, 9.5, &[(999, 10.0)]), 60);
        let counters: Vec<f64> = b[0]
            .records
            .iter()
            .map(|r| match &r.body {
                Body::Reading(x) => x.counters.import_wh,
                _ => panic!(),
            })
            .collect();
        assert_eq!(counters, [10.0, 10.0]);
    }

    #[test]
    fn event_log_codes_map_to_the_events_an_agent_sends() {
        let e = event_from_log(1, 42);
        assert_eq!(
            (e.class, e.code.as_str(), e.active),
            (EventClass::Tamper, "magnetic_field", Some(true))
        );
        let e = event_from_log(1, 41);
        assert_eq!((e.code.as_str(), e.active), ("cover_open", Some(false)));
        assert_eq!(event_from_log(2, 59).code, "remote_disconnect");
        assert_eq!(event_from_log(2, 65).class, EventClass::Limiter);
        assert_eq!(event_from_log(0, 1).code, "power_loss");
        let e = event_from_log(1, 201);
        assert_eq!(
            (e.class, e.code.as_str()),
            (EventClass::Tamper, "dlms_fraud_201")
        );
        assert_eq!(event_from_log(0, 77).code, "dlms_standard_77");
    }

    #[test]
    fn events_take_seqs_but_never_move_the_counter_point() {
        let mut s = PollState::new(MeterId::parse("d-1").unwrap(), 7);
        let mut r = read(2000, 12.0, &[(900, 10.0)]);
        r.events = vec![(950, event_from_log(1, 42)), (1000, event_from_log(1, 43))];
        let b = build_batches(&mut s, &r, 60);
        let kinds: Vec<&str> = b[0].records.iter().map(|r| r.body.kind()).collect();
        assert_eq!(kinds, ["event", "event", "reading", "reading"]);
        assert_eq!((s.next_seq, s.last_event_s), (5, Some(1000)));
        assert_eq!(s.last_point.unwrap().t_s, 2000);
    }

    #[test]
    fn registers_going_backwards_start_a_new_boot() {
        let mut s = PollState::new(MeterId::parse("d-1").unwrap(), 7);
        build_batches(&mut s, &read(1000, 500.0, &[]), 60);
        let b = build_batches(&mut s, &read(2000, 3.0, &[]), 60);
        assert_eq!(b.len(), 1);
        assert_ne!(b[0].boot_id, 7);
        assert_eq!(b[0].records[0].seq, 1);
        assert_eq!(s.next_seq, 2);
    }

    /// A crash after ingest committed a poll's envelopes but before the cursor was cleared:
    /// the next start submits the same bytes again, and ingest counts them as duplicates.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pending_envelopes_are_submitted_at_the_next_poll_exactly_once() {
        let dir = std::env::temp_dir().join(format!(
            "wattline-dlms-pending-{}-{}",
            std::process::id(),
            crate::now_ms()
        ));
        let db = Database::Sqlite(crate::SqliteStore::open(&dir).await.unwrap());
        let keys = KeyStore::open(
            db.clone(),
            crate::keystore::MasterKey::from_bytes([7; 32]),
            crate::keystore::KeyStoreConfig::default(),
        )
        .await
        .unwrap();
        let ingest = Arc::new(Ingest::start(
            db.store(),
            keys.clone(),
            crate::IngestConfig::default(),
        ));
        let meter = MeterId::parse("dlms-p").unwrap();
        db.store()
            .upsert_meter(&crate::Meter::new(meter.clone(), "keystore:dlms-p"))
            .await
            .unwrap();
        let (_, key) = keys.rotate(&meter).await.unwrap();
        let mut state = PollState::new(meter.clone(), 11);
        let now_s = crate::now_ms() / 1000;
        let batches = build_batches(&mut state, &read(now_s, 12.0, &[(now_s - 60, 10.0)]), 60);
        state.pending = vec![schema::seal_batch(&key, &batches[0]).unwrap()];
        db.dlms().save_poll_state(&state).await.unwrap();

        // Nothing listens at the meter's address: the poll fails after the pending flush.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap().to_string();
        drop(closed);
        let mut config = DlmsMeterConfig::new("dlms-p", &addr);
        config.association = AssociationSetting::Public;
        let mut poller = MeterPoller {
            config,
            meter: meter.clone(),
            credentials: Credentials::None,
            db: db.clone(),
            keys: keys.clone(),
            ingest: ingest.clone(),
            state: None,
            key: None,
            status: Arc::default(),
        };
        let e = poller.poll_once().await.unwrap_err();
        assert!(e.contains("cannot connect"), "{e}");
        let stored = db.store().readings(&meter, 0, i64::MAX, 100).await.unwrap();
        assert_eq!(stored.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);
        let saved = db.dlms().poll_state(&meter).await.unwrap().unwrap();
        assert!(saved.pending.is_empty());
        assert_eq!(saved.next_seq, 3);

        // The same envelope again (the crash case): stored once, counted as duplicates.
        db.dlms().save_poll_state(&state).await.unwrap();
        poller.state = None;
        poller.poll_once().await.unwrap_err();
        assert_eq!(
            db.store()
                .readings(&meter, 0, i64::MAX, 100)
                .await
                .unwrap()
                .len(),
            2
        );
        assert_eq!(ingest.stats().duplicate(), 2);
        assert_eq!(ingest.stats().quarantined(), 0);
        drop(poller);
        Arc::try_unwrap(ingest).ok().unwrap().shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn long_backlogs_split_into_envelopes_of_bounded_size() {
        let mut s = PollState::new(MeterId::parse("d-1").unwrap(), 7);
        let rows: Vec<(i64, f64)> = (0..1200).map(|i| (i * 900, i as f64)).collect();
        let b = build_batches(&mut s, &read(1200 * 900, 2000.0, &rows), 60);
        assert_eq!(
            b.iter().map(|b| b.records.len()).collect::<Vec<_>>(),
            [512, 512, 177]
        );
        assert_eq!(s.next_seq, 1202);
    }
}
