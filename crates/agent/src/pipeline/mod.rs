//! The pipeline of one meter: source → metrology windows → reporting interval → registers →
//! outbox → uplink, plus commands (relay, limiter, interval, clock) and tamper events, until
//! a shutdown signal.
//!
//! Every record — reading, event, ack, heartbeat — takes the next `seq` of the boot. The
//! record is appended to the outbox (durably) *before* the registers (counters and next `seq`)
//! are saved: a crash in between loses nothing, because at start the registers are reconciled
//! with the outbox's newest record (kept on disk even once acknowledged) and with what it still
//! holds, so a `seq` is never taken twice and a counter never moves back — also when the newest
//! register slot is damaged. A record the outbox refuses (full) takes no `seq`.

mod clock;
mod config;
mod interval;
#[cfg(test)]
mod reconcile_tests;

pub use config::{Nominal, PipelineConfig};
pub use interval::IntervalAccumulator;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrology::{Analyzer, AnalyzerConfig, EnergyRegisters, NominalFrequency};
use schema::{
    Ack, AckStatus, Action, Body, EnergyCounters, Event, EventClass, Heartbeat, MeterKey, Record,
};
use tokio::sync::{Notify, mpsc, watch};

use crate::config::AgentConfig;
use crate::control::{
    ControlEvent, ControlState, DisconnectControl, LimiterConfig, RelayController, Trigger,
};
use crate::cosem::{CosemRequest, CosemShared};
use crate::events::{
    ElectricalSnapshot, EventKind, EventLog, EventLogConfig, MeterEvent, PhaseSnapshot,
    TamperDetector,
};
use crate::outbox::{self, Outbox, WhenFull};
use crate::registers::{OpenReport, RegisterState, RegisterStore};
use crate::sources::{FrameLayout, Source, SourceOutput};
use crate::status::StatusSnapshot;
use crate::uplink::{CommandDelivery, Uplink, UplinkHandles, UplinkStats};

/// Why the agent stopped or could not start.
#[derive(Debug)]
pub struct Error {
    message: String,
}

impl Error {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wall clock, Unix ms.
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Options decided on the command line rather than in the file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Start from zero counters under a new boot id (an explicit operator decision, e.g.
    /// after a meter exchange or when both register slots are damaged).
    pub reset_registers: bool,
}

struct Meter {
    config: AgentConfig,
    registers: RegisterStore,
    outbox: Arc<Mutex<Outbox>>,
    space: Arc<Notify>,
    uplink_stats: Arc<Mutex<UplinkStats>>,
    event_log: EventLog,
    analyzer: Option<(Analyzer, FrameLayout, f64)>,
    energy: EnergyRegisters,
    interval: IntervalAccumulator,
    interval_s: u32,
    last_measurement_t_s: Option<f64>,
    /// Source time at which the running analyzer saw its first sample.
    analyzer_origin_s: f64,
    /// Source time the energy counters refer to (the end of the newest measurement).
    measured_source_s: Option<f64>,
    /// Maps source time to the system clock for reading stamps.
    source_clock: clock::SourceClock,
    controller: RelayController,
    tamper: TamperDetector,
    clock_offset_ms: i64,
    started: Instant,
    last_reading: Option<schema::Reading>,
    source_errors: u64,
    blocked_logged: bool,
    dropped_logged: u64,
    /// Live state read by the COSEM server, when one is configured.
    cosem: Option<Arc<CosemShared>>,
    /// What this meter forwards for its neighbours, when it listens for them.
    forwarder: Option<Arc<Mutex<crate::neighbour::ForwarderStats>>>,
}

/// Runs the agent for `config` with `source` until `shutdown` turns true.
pub async fn run(
    config: AgentConfig,
    source: Box<dyn Source>,
    options: RunOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let key_text = std::fs::read_to_string(&config.uplink.meter_key_file).map_err(|e| {
        Error::new(format!(
            "cannot read meter key {}: {e}",
            config.uplink.meter_key_file.display()
        ))
    })?;
    let key = MeterKey::from_hex(&key_text)
        .map_err(|e| Error::new(format!("{}: {e}", config.uplink.meter_key_file.display())))?;
    let (mut meter, start_events) = Meter::open(config, &options)?;
    // The COSEM server's requests (relay, limiter); the sender lives until the end of `run`
    // even without a COSEM server, so the receiving branch simply never fires.
    let (cosem_tx, cosem_rx) = mpsc::channel(8);
    if let Some(cosem_config) = meter.config.cosem.clone() {
        let past = meter
            .event_log
            .read_from(0)
            .map_err(|e| Error::new(format!("event log: {e}")))?;
        let past: Vec<_> = past.into_iter().map(|l| l.event).collect();
        let shared = crate::cosem::open_shared(
            &cosem_config,
            &meter.config.data_dir,
            &meter.config.meter.to_string(),
            &past,
        )
        .map_err(Error::new)?;
        meter.cosem = Some(shared.clone());
        meter.publish_cosem();
        crate::cosem::start(
            &cosem_config,
            &meter.config.data_dir,
            shared,
            cosem_tx.clone(),
            shutdown.clone(),
        )
        .await
        .map_err(Error::new)?;
    }
    let (commands_tx, commands_rx) = mpsc::channel(32);
    let mut uplink = Uplink::new(
        meter.config.uplink.clone(),
        meter.config.meter.clone(),
        key,
        UplinkHandles {
            outbox: meter.outbox.clone(),
            space: meter.space.clone(),
            stats: meter.uplink_stats.clone(),
        },
        commands_tx,
    )
    .map_err(|e| Error::new(format!("uplink: {e}")))?
    .with_replay_state(meter.config.data_dir.join("down.window"));
    if let Some(neighbour) = meter.config.neighbour.clone() {
        uplink = uplink
            .with_neighbours(&neighbour)
            .map_err(|e| Error::new(format!("neighbour: {e}")))?;
        if neighbour.listen.is_some() {
            let (relay_tx, relay_rx) = mpsc::channel(64);
            let (forwarder, listener) = crate::neighbour::Forwarder::bind(
                &neighbour,
                meter.config.meter.clone(),
                &meter.config.uplink,
                relay_tx,
                meter.uplink_stats.clone(),
            )
            .await
            .map_err(Error::new)?;
            meter.forwarder = Some(forwarder.stats());
            tokio::spawn(forwarder.run(listener, shutdown.clone()));
            uplink = uplink.with_relay_requests(relay_rx);
        }
    }
    let uplink_task = tokio::spawn(uplink.run(shutdown.clone()));
    let result = meter
        .run(source, commands_rx, cosem_rx, start_events, shutdown)
        .await;
    drop(cosem_tx);
    // The uplink sees the same shutdown signal and closes the session cleanly.
    let _ = tokio::time::timeout(Duration::from_secs(5), uplink_task).await;
    meter.write_status();
    result
}

impl Meter {
    fn open(config: AgentConfig, options: &RunOptions) -> Result<(Self, Vec<Event>), Error> {
        let now = unix_now_ms();
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::new(format!("cannot create {}: {e}", dir.display())))?;
        let mut start_events = Vec::new();
        let reg_dir = dir.join("registers");
        let mut registers = if options.reset_registers {
            let previous = RegisterStore::open(&reg_dir, now)
                .ok()
                .map(|(s, _)| s.state().boot_id);
            let store = RegisterStore::reset(&reg_dir, previous, now)
                .map_err(|e| Error::new(e.to_string()))?;
            tracing::warn!(
                boot_id = store.state().boot_id,
                "registers reset by operator"
            );
            start_events.push(event(
                EventClass::Boot,
                "counters_reset",
                None,
                Some("registers reset by operator".into()),
            ));
            store
        } else {
            let (store, report) =
                RegisterStore::open(&reg_dir, now).map_err(|e| Error::new(e.to_string()))?;
            match report {
                OpenReport::Created => {
                    start_events.push(event(EventClass::Boot, "counters_created", None, None));
                }
                OpenReport::Resumed => {}
                OpenReport::ResumedWithDamage(d) => {
                    tracing::error!(damage = %d, "register slot damaged; resumed from the other slot");
                    start_events.push(event(
                        EventClass::Boot,
                        "register_slot_damaged",
                        None,
                        Some(d.to_string()),
                    ));
                }
            }
            store
        };
        let (outbox, report) = Outbox::open(&dir.join("outbox"), config.outbox.clone())
            .map_err(|e| Error::new(e.to_string()))?;
        for d in &report.damage {
            tracing::error!(damage = %d, "outbox damage cut out");
            start_events.push(event(
                EventClass::Boot,
                "outbox_damaged",
                Some(d.bytes as f64),
                Some(d.to_string()),
            ));
        }
        reconcile(&mut registers, &outbox)?;
        let (event_log, recovery) = EventLog::open(EventLogConfig::new(dir.join("events.log")))
            .map_err(|e| Error::new(format!("event log: {e}")))?;
        if let Some(d) = &recovery.damage {
            start_events.push(event(
                EventClass::Boot,
                "event_log_damaged",
                None,
                Some(format!("{d:?}")),
            ));
        }
        let relay_state = load_relay_state(dir).unwrap_or(ControlState::Connected);
        let controller = RelayController::new(
            DisconnectControl::new(relay_state, config.relay.control_mode),
            config
                .relay
                .limiter
                .clone()
                .map(crate::control::Limiter::new),
        );
        let energy = EnergyRegisters::from(&registers.state().counters);
        let interval_s = config.pipeline.reporting_interval_s;
        let tamper = TamperDetector::new(config.events.clone());
        let down_for = recovery
            .last
            .as_ref()
            .map(|l| (now - l.event.at_unix_ms).max(0) as u64);
        let meter = Meter {
            registers,
            outbox: Arc::new(Mutex::new(outbox)),
            space: Arc::new(Notify::new()),
            uplink_stats: Arc::new(Mutex::new(UplinkStats::default())),
            event_log,
            analyzer: None,
            energy,
            interval: IntervalAccumulator::default(),
            interval_s,
            last_measurement_t_s: None,
            analyzer_origin_s: 0.0,
            measured_source_s: None,
            source_clock: clock::SourceClock::default(),
            controller,
            tamper,
            clock_offset_ms: 0,
            started: Instant::now(),
            last_reading: None,
            source_errors: 0,
            blocked_logged: false,
            dropped_logged: 0,
            cosem: None,
            forwarder: None,
            config,
        };
        let mut boot = event(
            EventClass::Boot,
            "agent_started",
            down_for.map(|ms| ms as f64 / 1000.0),
            None,
        );
        boot.detail = Some(format!(
            "boot {}, next seq {}",
            meter.registers.state().boot_id,
            meter.registers.state().next_seq
        ));
        start_events.insert(0, boot);
        Ok((meter, start_events))
    }

    async fn run(
        &mut self,
        mut source: Box<dyn Source>,
        mut commands: mpsc::Receiver<CommandDelivery>,
        mut cosem_requests: mpsc::Receiver<CosemRequest>,
        start_events: Vec<Event>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), Error> {
        for e in start_events {
            self.emit(Body::Event(e), &mut shutdown).await?;
        }
        let mut persist = tokio::time::interval(Duration::from_secs(u64::from(
            self.config.pipeline.persist_every_s,
        )));
        let mut heartbeat = tokio::time::interval(Duration::from_secs(u64::from(
            self.config.pipeline.heartbeat_s,
        )));
        let mut status =
            tokio::time::interval(Duration::from_millis(self.config.pipeline.status_every_ms));
        for t in [&mut persist, &mut heartbeat, &mut status] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        heartbeat.reset();
        let mut source_done = false;
        let mut load_connected = true;
        loop {
            // The relay state as the source should see it (a command, DLMS or the limiter may
            // have changed it in the last turn).
            let connected = self.controller.disconnect().state() == ControlState::Connected;
            if connected != load_connected {
                source.set_load_connected(connected);
                load_connected = connected;
            }
            tokio::select! {
                _ = shutdown.changed() => break,
                output = source.next(), if !source_done => match output {
                    Ok(Some(output)) => self.on_output(output, &mut shutdown).await?,
                    Ok(None) => {
                        tracing::info!(source = source.name(), "source ended");
                        source_done = true;
                    }
                    Err(e) => {
                        self.source_errors += 1;
                        tracing::warn!(source = source.name(), error = %e, "source fault");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
                Some(delivery) = commands.recv() => self.on_commands(delivery, &mut shutdown).await?,
                Some(request) = cosem_requests.recv() => self.on_cosem(request, &mut shutdown).await?,
                _ = persist.tick() => self.persist()?,
                _ = heartbeat.tick() => {
                    let depth = lock(&self.outbox).stats().depth_records;
                    let body = Body::Heartbeat(Heartbeat { uptime_s: self.started.elapsed().as_secs(), outbox_records: depth });
                    self.emit(body, &mut shutdown).await?;
                }
                _ = status.tick() => {
                    let now_ms = self.mono_ms();
                    let events = self.tamper.tick(now_ms, self.now_ms());
                    self.on_meter_events(events, &mut shutdown).await?;
                    if let Some(e) = self.tamper.clock(now_ms, unix_now_ms()) {
                        self.on_meter_events(vec![e], &mut shutdown).await?;
                    }
                    self.write_status();
                }
            }
        }
        self.persist()?;
        tracing::info!("pipeline stopped");
        Ok(())
    }

    fn mono_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Meter clock: the system clock plus the offset a `clock_set` command established.
    fn now_ms(&self) -> i64 {
        unix_now_ms() + self.clock_offset_ms
    }

    fn counters(&self) -> EnergyCounters {
        // Never below what is saved: restoring registers through f64 may round down by an ulp.
        let now = EnergyCounters::from(&self.energy);
        let saved = self.registers.state().counters;
        EnergyCounters {
            import_wh: now.import_wh.max(saved.import_wh),
            export_wh: now.export_wh.max(saved.export_wh),
            q1_varh: now.q1_varh.max(saved.q1_varh),
            q2_varh: now.q2_varh.max(saved.q2_varh),
            q3_varh: now.q3_varh.max(saved.q3_varh),
            q4_varh: now.q4_varh.max(saved.q4_varh),
        }
    }

    fn persist(&mut self) -> Result<(), Error> {
        let state = RegisterState {
            counters: self.counters(),
            saved_at_ms: unix_now_ms(),
            ..*self.registers.state()
        };
        self.registers
            .save(state)
            .map_err(|e| Error::new(e.to_string()))
    }

    async fn on_output(
        &mut self,
        output: SourceOutput,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Error> {
        match output {
            SourceOutput::Samples(chunk) => {
                if chunk.discontinuity
                    || self
                        .analyzer
                        .as_ref()
                        .is_none_or(|(_, l, fs)| *l != chunk.layout || *fs != chunk.sample_rate_hz)
                {
                    self.start_analyzer(chunk.layout, chunk.sample_rate_hz)?;
                    self.analyzer_origin_s = chunk.t0_s;
                }
                let (analyzer, _, _) = self.analyzer.as_mut().expect("started above");
                let mut windows = Vec::new();
                analyzer
                    .push_frames(&chunk.samples, |w| windows.push(*w))
                    .map_err(|e| Error::new(format!("metrology: {e}")))?;
                self.energy = *analyzer.energy();
                if let Some(w) = windows.last() {
                    // The counters now hold the energy up to the end of the newest window.
                    self.measured_source_s = Some(self.analyzer_origin_s + w.t0_s + w.duration_s);
                }
                for w in windows {
                    if let Some(c) = &self.cosem {
                        c.lock_live().set_window(&w);
                    }
                    self.interval.add_window(&w);
                    let snapshot = ElectricalSnapshot {
                        phases: w
                            .phases
                            .iter()
                            .map(|p| PhaseSnapshot {
                                v_rms: p.v_rms,
                                i_rms: p.i_rms,
                                p_w: p.p_w,
                            })
                            .collect(),
                        residual_i_rms: None,
                    };
                    self.after_measurement(&snapshot, w.total.p_w, shutdown)
                        .await?;
                }
            }
            SourceOutput::Measured(m) => {
                let dt = self
                    .last_measurement_t_s
                    .map_or(0.0, |t| (m.t_s - t).max(0.0));
                self.last_measurement_t_s = Some(m.t_s);
                self.measured_source_s = Some(m.t_s);
                let p_total: f64 = m.phases.iter().map(|p| p.p_w).sum();
                // Device readings carry no reactive power sign: integrate active energy only.
                self.energy.add(p_total, 0.0, dt);
                self.interval.add_measurement(&m, dt);
                if let Some(c) = &self.cosem {
                    c.lock_live().set_measured(&m);
                }
                let snapshot = ElectricalSnapshot {
                    phases: m
                        .phases
                        .iter()
                        .map(|p| PhaseSnapshot {
                            v_rms: p.v_rms,
                            i_rms: p.i_rms,
                            p_w: p.p_w,
                        })
                        .collect(),
                    residual_i_rms: None,
                };
                self.after_measurement(&snapshot, p_total, shutdown).await?;
            }
            SourceOutput::Signal(signal) => {
                let events = self.tamper.signal(self.mono_ms(), self.now_ms(), signal);
                self.on_meter_events(events, shutdown).await?;
            }
        }
        Ok(())
    }

    fn start_analyzer(&mut self, layout: FrameLayout, fs: f64) -> Result<(), Error> {
        let nominal = match self.config.pipeline.nominal_hz {
            Nominal::Hz50 => NominalFrequency::Hz50,
            Nominal::Hz60 => NominalFrequency::Hz60,
        };
        let config = match layout {
            FrameLayout::SinglePhase => AnalyzerConfig::single_phase(fs, nominal),
            FrameLayout::ThreePhase => AnalyzerConfig::three_phase(fs, nominal, false),
            FrameLayout::ThreePhaseWithNeutral => AnalyzerConfig::three_phase(fs, nominal, true),
        };
        let mut analyzer =
            Analyzer::new(config).map_err(|e| Error::new(format!("metrology: {e}")))?;
        // Continue the persisted registers: the engine integrates on top of them.
        analyzer.set_energy(self.energy);
        self.analyzer = Some((analyzer, layout, fs));
        Ok(())
    }

    async fn after_measurement(
        &mut self,
        snapshot: &ElectricalSnapshot,
        p_total_w: f64,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Error> {
        let now_ms = self.mono_ms();
        let events = self.tamper.electrical(now_ms, self.now_ms(), snapshot);
        self.on_meter_events(events, shutdown).await?;
        let out = self
            .controller
            .observe_power(now_ms, self.now_ms() / 1000, p_total_w);
        self.on_control(out.events, shutdown).await?;
        self.publish_cosem();
        if self.interval.duration_s() + 1e-9 >= f64::from(self.interval_s) {
            let counters = self.counters();
            if let Some(reading) = self.interval.take(counters) {
                self.last_reading = Some(reading.clone());
                self.emit(Body::Reading(reading), shutdown).await?;
            }
        }
        Ok(())
    }

    async fn on_control(
        &mut self,
        events: Vec<ControlEvent>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Error> {
        if events.is_empty() {
            return Ok(());
        }
        save_relay_state(&self.config.data_dir, self.controller.disconnect().state());
        self.publish_cosem();
        let at = self.now_ms();
        let events = events
            .into_iter()
            .map(|event| MeterEvent {
                at_unix_ms: at,
                kind: EventKind::Control { event },
            })
            .collect();
        self.on_meter_events(events, shutdown).await
    }

    async fn on_meter_events(
        &mut self,
        events: Vec<MeterEvent>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Error> {
        for e in events {
            if let Err(err) = self.event_log.append(&e) {
                tracing::error!(error = %err, "event log append failed");
            }
            if let Some(c) = &self.cosem {
                c.lock_events().push(&e);
            }
            tracing::info!(event = %e, "meter event");
            self.emit(Body::Event(to_wire_event(&e)), shutdown).await?;
        }
        Ok(())
    }

    async fn on_commands(
        &mut self,
        delivery: CommandDelivery,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Error> {
        for item in delivery {
            let ack = match item {
                Err(rejected) => {
                    tracing::warn!(id = ?rejected.id, reason = %rejected.reason, "command rejected");
                    Ack {
                        command_id: rejected.id,
                        status: AckStatus::Rejected,
                        reason: Some(rejected.reason),
                    }
                }
                Ok(command) if command.is_expired(self.now_ms()) => Ack {
                    command_id: Some(command.id),
                    status: AckStatus::Expired,
                    reason: Some(format!("expired at {} ms", command.expires_ms)),
                },
                Ok(command) => {
                    let id = command.id.clone();
                    match self.execute(command.action, shutdown).await? {
                        Ok(note) => Ack {
                            command_id: Some(id),
                            status: AckStatus::Succeeded,
                            reason: note,
                        },
                        Err(reason) => Ack {
                            command_id: Some(id),
                            status: AckStatus::Failed,
                            reason: Some(reason),
                        },
                    }
                }
            };
            self.emit(Body::Ack(ack), shutdown).await?;
        }
        Ok(())
    }

    /// Carries out one command: `Ok(note)` on success, `Err(reason)` when refused.
    async fn execute(
        &mut self,
        action: Action,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Result<Option<String>, String>, Error> {
        let now_ms = self.mono_ms();
        let result = match action {
            Action::RelayConnect | Action::RelayDisconnect => {
                let trigger = if action == Action::RelayConnect {
                    Trigger::RemoteReconnect
                } else {
                    Trigger::RemoteDisconnect
                };
                match self.controller.trigger(now_ms, trigger) {
                    Ok(out) => {
                        self.on_control(out.events, shutdown).await?;
                        Ok(Some(format!(
                            "relay {}",
                            self.controller.disconnect().state()
                        )))
                    }
                    Err(refusal) => Err(refusal.to_string()),
                }
            }
            Action::LimiterSet {
                threshold_w,
                duration_s,
            } => {
                let mut config = self
                    .controller
                    .limiter()
                    .map(|l| l.config().clone())
                    .unwrap_or_else(|| {
                        serde_json::from_value::<LimiterConfig>(
                            serde_json::json!({"threshold_normal_w": threshold_w}),
                        )
                        .expect("limiter config with only the threshold has defaults")
                    });
                config.threshold_normal_w = threshold_w;
                config.min_over_threshold_duration_s = duration_s.round() as u32;
                self.controller.set_limiter_config(config);
                Ok(None)
            }
            Action::ReportingInterval { interval_s } => {
                self.interval_s = interval_s;
                Ok(Some(format!("reporting interval {interval_s} s")))
            }
            Action::ClockSet { unix_ms } => {
                let before = self.now_ms();
                self.clock_offset_ms = unix_ms - unix_now_ms();
                let e = event(
                    EventClass::Clock,
                    "clock_set",
                    Some((unix_ms - before) as f64),
                    None,
                );
                self.emit(Body::Event(e), shutdown).await?;
                Ok(Some(format!(
                    "meter clock moved by {} ms",
                    unix_ms - before
                )))
            }
        };
        self.publish_cosem();
        Ok(result)
    }

    /// Copies what the COSEM objects show (registers, relay, limiter, clock) into the shared
    /// state; the instantaneous values are copied per window in `on_output`.
    fn publish_cosem(&self) {
        let Some(c) = &self.cosem else { return };
        let counters = self.counters();
        let mut live = c.lock_live();
        live.counters = counters;
        live.relay = Some(self.controller.disconnect().state());
        live.control_mode = u8::from(self.controller.disconnect().mode());
        live.limiter = self.controller.limiter().map(|l| l.config().clone());
        live.clock_offset_ms = self.clock_offset_ms;
    }

    /// A relay or limiter change asked over DLMS/COSEM: the same state machine and events as
    /// a `down` command, plus an event naming the DLMS client; the answer goes back to the
    /// COSEM connection.
    async fn on_cosem(
        &mut self,
        request: CosemRequest,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Error> {
        match request {
            CosemRequest::Relay {
                trigger,
                client_sap,
                reply,
            } => match self.controller.trigger(self.mono_ms(), trigger) {
                Ok(out) => {
                    self.on_control(out.events, shutdown).await?;
                    let state = self.controller.disconnect().state();
                    let detail =
                        format!("{trigger:?} by DLMS client SAP {client_sap}: relay {state}");
                    let e = event(EventClass::Relay, "cosem_action", None, Some(detail));
                    self.emit(Body::Event(e), shutdown).await?;
                    let _ = reply.send(Ok(()));
                }
                Err(refusal) => {
                    let _ = reply.send(Err(refusal.to_string()));
                }
            },
            CosemRequest::Limiter {
                config,
                client_sap,
                reply,
            } => {
                let detail = format!(
                    "limiter set by DLMS client SAP {client_sap}: {} W",
                    config.threshold_normal_w
                );
                self.controller.set_limiter_config(config);
                self.publish_cosem();
                let e = event(EventClass::Limiter, "cosem_limiter_set", None, Some(detail));
                self.emit(Body::Event(e), shutdown).await?;
                let _ = reply.send(Ok(()));
            }
        }
        Ok(())
    }

    /// Gives `body` the next `seq`, queues the record, then saves the registers.
    async fn emit(
        &mut self,
        body: Body,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Error> {
        let mut state = *self.registers.state();
        let seq = state.next_seq;
        state.next_seq += 1;
        state.counters = self.counters();
        // A reading is dated by the end of the period it measured (see `clock`); other records
        // by the moment they happen.
        let t_ms = match (&body, self.measured_source_s) {
            (Body::Reading(_), Some(source_s)) => {
                self.source_clock.stamp(source_s, unix_now_ms()) + self.clock_offset_ms
            }
            _ => self.now_ms(),
        };
        let record = Record { seq, t_ms, body };
        loop {
            let result = lock(&self.outbox).append(state.boot_id, &record);
            match result {
                Ok(_) => {
                    self.blocked_logged = false;
                    break;
                }
                Err(e) => match e.kind() {
                    outbox::ErrorKind::Full {
                        policy: WhenFull::Block,
                        ..
                    } => {
                        if !self.blocked_logged {
                            tracing::warn!(
                                seq,
                                "outbox full: producer blocked until the uplink delivers (policy block)"
                            );
                            self.blocked_logged = true;
                        }
                        self.write_status();
                        tokio::select! {
                            _ = self.space.notified() => {}
                            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                            _ = shutdown.changed() => {
                                tracing::warn!(seq, kind = record.body.kind(), "shutdown while blocked on a full outbox: record not queued");
                                return Ok(());
                            }
                        }
                    }
                    outbox::ErrorKind::Full { .. } => {
                        // Only events and acks are left and they fill the disk: keep them,
                        // refuse this record (it takes no seq; the counters stay in memory
                        // and are saved with the next record).
                        tracing::error!(
                            seq,
                            kind = record.body.kind(),
                            "outbox full of events; record refused"
                        );
                        return Ok(());
                    }
                    _ => return Err(Error::new(e.to_string())),
                },
            }
        }
        state.saved_at_ms = unix_now_ms();
        self.registers
            .save(state)
            .map_err(|e| Error::new(e.to_string()))?;
        let dropped = lock(&self.outbox).stats().dropped_readings_total;
        if dropped > self.dropped_logged {
            tracing::warn!(
                dropped_total = dropped,
                newly = dropped - self.dropped_logged,
                "outbox full: dropped oldest readings (policy drop_oldest_readings)"
            );
            self.dropped_logged = dropped;
        }
        Ok(())
    }

    fn write_status(&self) {
        let stats = lock(&self.outbox).stats();
        let uplink = serde_json::to_value(&*lock(&self.uplink_stats)).unwrap_or_default();
        let state = self.registers.state();
        let snapshot = StatusSnapshot {
            meter: self.config.meter.to_string(),
            pid: std::process::id(),
            updated_at_ms: unix_now_ms(),
            uptime_s: self.started.elapsed().as_secs(),
            boot_id: state.boot_id,
            next_seq: state.next_seq,
            reporting_interval_s: self.interval_s,
            counters: self.counters(),
            last_reading: self.last_reading.clone(),
            relay_state: self.controller.disconnect().state().to_string(),
            relay_mode: u8::from(self.controller.disconnect().mode()),
            uplink,
            outbox_records: stats.depth_records,
            outbox_bytes: stats.depth_bytes,
            outbox_oldest_ms: stats.oldest_t_ms,
            outbox_when_full: match self.config.outbox.when_full {
                WhenFull::Block => "block".into(),
                WhenFull::DropOldestReadings => "drop_oldest_readings".into(),
            },
            outbox_dropped_readings_total: stats.dropped_readings_total,
            outbox_full_refusals_total: stats.full_refusals_total,
            outbox_appended_total: stats.appended_total,
            outbox_acked_total: stats.acked_total,
            outbox_damaged_bytes_total: stats.damaged_bytes_total,
            source_errors_total: self.source_errors,
            forwarder: self.forwarder.as_ref().map(|f| lock(f).clone()),
        };
        if let Err(e) = snapshot.write(&self.config.status_path()) {
            tracing::warn!(error = %e, "cannot write status file");
        }
    }
}

/// Makes sure the registers are not behind what the outbox still holds of the same boot.
fn reconcile(registers: &mut RegisterStore, outbox: &Outbox) -> Result<(), Error> {
    let boot = registers.state().boot_id;
    let mut tail = outbox.newest(64).map_err(|e| Error::new(e.to_string()))?;
    tail.extend(outbox.newest_appended().cloned());
    let mut state = *registers.state();
    let mut changed = false;
    for entry in tail.iter().filter(|e| e.boot_id == boot) {
        if entry.record.seq >= state.next_seq {
            state.next_seq = entry.record.seq + 1;
            changed = true;
        }
        if let Body::Reading(r) = &entry.record.body
            && !state.counters.is_monotonic_after(&r.counters)
        {
            let c = &r.counters;
            let s = &mut state.counters;
            s.import_wh = s.import_wh.max(c.import_wh);
            s.export_wh = s.export_wh.max(c.export_wh);
            s.q1_varh = s.q1_varh.max(c.q1_varh);
            s.q2_varh = s.q2_varh.max(c.q2_varh);
            s.q3_varh = s.q3_varh.max(c.q3_varh);
            s.q4_varh = s.q4_varh.max(c.q4_varh);
            changed = true;
        }
    }
    if changed {
        tracing::warn!(
            next_seq = state.next_seq,
            "registers were behind the outbox; moved forward"
        );
        registers
            .save(state)
            .map_err(|e| Error::new(e.to_string()))?;
    }
    Ok(())
}

fn event(class: EventClass, code: &str, value: Option<f64>, detail: Option<String>) -> Event {
    Event {
        class,
        code: code.into(),
        active: None,
        value,
        detail,
    }
}

/// The wire form of a meter event.
pub fn to_wire_event(e: &MeterEvent) -> Event {
    let detail = Some(e.to_string());
    let condition_event =
        |condition: &crate::events::Condition, raised: bool, value: Option<f64>| {
            // The snake_case name the event log uses is the wire code too.
            let code = serde_json::to_value(condition)
                .ok()
                .and_then(|v| {
                    v.get("condition")
                        .and_then(|c| c.as_str())
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| "condition".into());
            Event {
                class: if condition.is_tamper() {
                    EventClass::Tamper
                } else {
                    EventClass::PowerQuality
                },
                code,
                active: Some(raised),
                value,
                detail: detail.clone(),
            }
        };
    match &e.kind {
        EventKind::Raised { condition, value } => condition_event(condition, true, *value),
        EventKind::Cleared { condition } => condition_event(condition, false, None),
        EventKind::ClockJump { delta_ms } => Event {
            class: EventClass::Clock,
            code: "clock_jump".into(),
            active: None,
            value: Some(*delta_ms as f64),
            detail,
        },
        EventKind::Restarted { down_for_ms } => Event {
            class: EventClass::Boot,
            code: "restarted".into(),
            active: None,
            value: down_for_ms.map(|ms| ms as f64 / 1000.0),
            detail,
        },
        EventKind::Control { event } => {
            let (class, code) = match event {
                ControlEvent::RelayStateChanged { .. } => {
                    (EventClass::Relay, "relay_state_changed")
                }
                ControlEvent::TriggerRefused { .. } => (EventClass::Relay, "trigger_refused"),
                ControlEvent::Limiter(_) => (EventClass::Limiter, "limiter"),
            };
            Event {
                class,
                code: code.into(),
                active: None,
                value: None,
                detail: serde_json::to_string(event).ok().or(detail),
            }
        }
    }
}

fn relay_state_path(dir: &std::path::Path) -> PathBuf {
    dir.join("relay.state")
}

fn load_relay_state(dir: &std::path::Path) -> Option<ControlState> {
    let text = std::fs::read_to_string(relay_state_path(dir)).ok()?;
    serde_json::from_str(&text).ok()
}

/// The relay state survives restarts: a disconnected customer stays disconnected.
fn save_relay_state(dir: &std::path::Path, state: ControlState) {
    let path = relay_state_path(dir);
    let tmp = path.with_extension("tmp");
    let ok = serde_json::to_string(&state)
        .map_err(std::io::Error::other)
        .and_then(|t| std::fs::write(&tmp, t))
        .and_then(|_| std::fs::rename(&tmp, &path));
    if let Err(e) = ok {
        tracing::error!(error = %e, "cannot persist relay state");
    }
}
