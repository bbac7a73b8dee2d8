//! The ingest pipeline (DESIGN §3.3): verify → decode → validate → one transaction per group
//! of deliveries → acknowledge → live stream, with the rollups refreshed by a task of their own.
//! It does not know which broker delivered the bytes: its input is `(topic, payload, delivery
//! handle)`, and a handle is acknowledged only after the transaction holding that delivery's
//! records (or its quarantine entry) committed. A handle dropped without acknowledgement (the
//! database failed) lets the broker deliver again; ingest is idempotent, so that is safe.
//!
//! The rollup refresh re-reads each dirty quarter hour of raw readings; on the writer's path it
//! delayed every delivery queued behind it (the p99 of the server-side latency). It runs beside
//! the writer instead: the dirty ranges are written in the readings' transaction, and a refresh
//! clears a range only if no write touched it since it was read (its generation), so running
//! beside the writer never leaves a stale rollup.

mod latency;
mod validate;

pub use latency::LatencyHistogram;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use schema::{
    Batch, Body, Direction, Envelope, MAX_ENVELOPE_BYTES, MeterId, MeterKey, Record, ReplayWindow,
    Verdict,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::store::{
    BatchWrite, CounterPoint, Meter, MeterStatus, Neighbours, NewQuarantine, SeqRun, Store,
    WriteSet,
};
use crate::{Error, ErrorKind, rollup};
use validate::Bounds;

/// How a broker adapter learns that a delivery is safely stored (MQTT: send the PUBACK).
pub trait Acknowledge: Send + 'static {
    /// Called once, after the commit.
    fn acknowledge(self: Box<Self>);
}

impl Acknowledge for oneshot::Sender<()> {
    fn acknowledge(self: Box<Self>) {
        // The adapter may have gone away; nothing is lost, the broker redelivers.
        let _ = (*self).send(());
    }
}

/// Where the pipeline finds each meter's 256-bit key.
pub trait KeySource: Send + Sync + 'static {
    /// The key of `meter`, if it has one.
    fn key(&self, meter: &MeterId) -> Option<MeterKey>;

    /// Every key accepted for `meter` now, newest first: more than one during a key
    /// rotation's grace period (see `crate::keystore`).
    fn keys(&self, meter: &MeterId) -> Vec<MeterKey> {
        self.key(meter).into_iter().collect()
    }

    /// Told after an envelope of `meter` opened with `keys(meter)[index]`.
    fn opened_with(&self, _meter: &MeterId, _index: usize) {}

    /// Why `meter` must not deliver at all (revoked), if so: its envelopes are quarantined
    /// with this reason.
    fn refused(&self, _meter: &MeterId) -> Option<String> {
        None
    }
}

/// Keys held in memory (loaded from key files at start or added at enrolment).
#[derive(Default)]
pub struct KeyRing {
    keys: RwLock<HashMap<MeterId, MeterKey>>,
}

impl KeyRing {
    /// An empty ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a meter's key.
    pub fn insert(&self, meter: MeterId, key: MeterKey) {
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(meter, key);
    }

    /// Forgets a meter's key.
    pub fn remove(&self, meter: &MeterId) {
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(meter);
    }
}

impl KeySource for KeyRing {
    fn key(&self, meter: &MeterId) -> Option<MeterKey> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(meter)
            .cloned()
    }
}

/// Ingest settings.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Most deliveries written in one transaction.
    pub max_deliveries_per_tx: usize,
    /// Deliveries waiting for the writer before `submit` waits (back-pressure to the broker).
    pub queue_len: usize,
    /// How far ahead of the server clock a record may be, ms.
    pub max_future_ms: i64,
    /// How far behind a record may be, ms: the raw retention period (older data would
    /// rewrite rollups whose raw rows are gone).
    pub max_age_ms: i64,
    /// A meter clock further ahead than this is logged as drifting, ms.
    pub drift_note_ms: i64,
    /// Live channel capacity (slow subscribers miss batches, never block ingest).
    pub live_capacity: usize,
    /// Keep rollups up to date (off for raw-throughput benchmarks).
    pub rollups: bool,
    /// Under a steady stream, the rollup task recomputes the dirty rollups at most this often
    /// (all dirty meters in one transaction); when commits pause it does so after `rollup_idle`.
    /// Each refresh re-reads the dirty quarter hours, so under a steady stream rollups lag raw
    /// data by up to this long in exchange for throughput (5 s rather than 1 s: 200 meters at
    /// 50,000 readings/s went from about 38,000 to 40,000–50,000 stored per second on SQLite,
    /// BENCHMARKS.md).
    pub rollup_every: Duration,
    /// How long no group may commit before the dirty rollups are recomputed.
    pub rollup_idle: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_deliveries_per_tx: 256,
            queue_len: 4096,
            max_future_ms: 24 * 3_600_000,
            max_age_ms: 400 * 86_400_000,
            drift_note_ms: 5 * 60_000,
            live_capacity: 1024,
            rollups: true,
            rollup_every: Duration::from_secs(5),
            rollup_idle: Duration::from_millis(20),
        }
    }
}

/// Records just stored, as published on the live channel.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveBatch {
    /// The meter.
    pub meter: MeterId,
    /// The boot.
    pub boot_id: u64,
    /// The records stored now (not duplicates, not quarantined), in seq order.
    pub records: Vec<Record>,
}

/// Counters of what ingest did, also exported as `wattline_ingest_records_total{result}`, and
/// the server-side latency, exported as `wattline_ingest_latency_seconds`.
#[derive(Debug, Default)]
pub struct IngestStats {
    stored: AtomicU64,
    duplicate: AtomicU64,
    quarantined: AtomicU64,
    unknown_kinds: AtomicU64,
    deliveries: AtomicU64,
    write_failures: AtomicU64,
    relayed: AtomicU64,
    latency: LatencyHistogram,
}

impl IngestStats {
    /// Records stored.
    pub fn stored(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }
    /// Records already stored (re-delivery or replay).
    pub fn duplicate(&self) -> u64 {
        self.duplicate.load(Ordering::Relaxed)
    }
    /// Envelopes and records sent to quarantine.
    pub fn quarantined(&self) -> u64 {
        self.quarantined.load(Ordering::Relaxed)
    }
    /// Records of kinds this build does not know (stored raw).
    pub fn unknown_kinds(&self) -> u64 {
        self.unknown_kinds.load(Ordering::Relaxed)
    }
    /// Deliveries acknowledged.
    pub fn deliveries(&self) -> u64 {
        self.deliveries.load(Ordering::Relaxed)
    }
    /// Transactions that failed (their deliveries were not acknowledged).
    pub fn write_failures(&self) -> u64 {
        self.write_failures.load(Ordering::Relaxed)
    }
    /// Envelopes that opened after arriving through a neighbour's `relay` topic.
    pub fn relayed(&self) -> u64 {
        self.relayed.load(Ordering::Relaxed)
    }
    /// Server-side latency of every acknowledged delivery: from the source handing it to
    /// ingest (the broker's delivery) until its group committed, was acknowledged and its
    /// records were on the live stream.
    pub fn latency(&self) -> &LatencyHistogram {
        &self.latency
    }

    fn count(&self, result: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        let field = match result {
            "stored" => &self.stored,
            "duplicate" => &self.duplicate,
            _ => &self.quarantined,
        };
        field.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("wattline_ingest_records_total", "result" => result).increment(n);
    }
}

struct Delivery {
    topic: String,
    payload: Vec<u8>,
    ack: Box<dyn Acknowledge>,
    received_at: Instant,
}

/// A running pipeline. Cloning the handle is cheap; [`shutdown`](Self::shutdown) drains it.
pub struct Ingest {
    tx: mpsc::Sender<Delivery>,
    live: broadcast::Sender<Arc<LiveBatch>>,
    stats: Arc<IngestStats>,
    worker: JoinHandle<()>,
    rollups: Option<JoinHandle<()>>,
}

impl Ingest {
    /// Starts the writer task, and the rollup task when `config.rollups`, on the current tokio
    /// runtime. Rollups left dirty by an earlier run (a crash between commit and rollup) are
    /// recomputed first by the rollup task.
    pub fn start(store: Arc<dyn Store>, keys: Arc<dyn KeySource>, config: IngestConfig) -> Self {
        let (tx, rx) = mpsc::channel(config.queue_len.max(1));
        let (live, _) = broadcast::channel(config.live_capacity.max(1));
        let stats = Arc::new(IngestStats::default());
        let (committed_tx, committed_rx) = watch::channel(0u64);
        let rollups = config.rollups.then(|| {
            tokio::spawn(refresh_rollups_beside_the_writer(
                store.clone(),
                config.clone(),
                committed_rx,
            ))
        });
        let worker = Worker {
            store,
            keys,
            config,
            live: live.clone(),
            stats: stats.clone(),
            windows: HashMap::new(),
            meters: HashMap::new(),
            committed: committed_tx,
        };
        let worker = tokio::spawn(worker.run(rx));
        Self {
            tx,
            live,
            stats,
            worker,
            rollups,
        }
    }

    /// Hands one delivery to the pipeline; waits while the queue is full. `ack` is called
    /// after the commit that stored (or quarantined) it. The server-side latency counts from
    /// this call; a source that knows when the broker delivered uses
    /// [`submit_received`](Self::submit_received).
    pub async fn submit(
        &self,
        topic: &str,
        payload: Vec<u8>,
        ack: Box<dyn Acknowledge>,
    ) -> Result<(), Error> {
        self.submit_received(topic, payload, ack, Instant::now())
            .await
    }

    /// [`submit`](Self::submit) for a delivery the source received at `received_at`: the
    /// server-side latency ([`IngestStats::latency`]) counts from then.
    pub async fn submit_received(
        &self,
        topic: &str,
        payload: Vec<u8>,
        ack: Box<dyn Acknowledge>,
        received_at: Instant,
    ) -> Result<(), Error> {
        self.tx
            .send(Delivery {
                topic: topic.to_owned(),
                payload,
                ack,
                received_at,
            })
            .await
            .map_err(|_| Error::new(ErrorKind::Closed))
    }

    /// Stored records as they commit.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveBatch>> {
        self.live.subscribe()
    }

    /// What ingest did so far.
    pub fn stats(&self) -> &IngestStats {
        &self.stats
    }

    /// A shared handle on the counters (for `/metrics` and pages that outlive a borrow).
    pub fn stats_handle(&self) -> Arc<IngestStats> {
        self.stats.clone()
    }

    /// The live channel's sender, so the HTTP side can subscribe per request.
    pub fn live_sender(&self) -> broadcast::Sender<Arc<LiveBatch>> {
        self.live.clone()
    }

    /// Stops accepting deliveries, finishes those queued, waits for the writer, then for the
    /// rollup task's last refresh.
    pub async fn shutdown(self) {
        drop(self.tx);
        let _ = self.worker.await;
        if let Some(rollups) = self.rollups {
            let _ = rollups.await;
        }
    }
}

/// The rollup task: recomputes the dirty rollups at start (work left by a crash), then after
/// each pause of `rollup_idle` in the commits, at least every `rollup_every` under a steady
/// stream, and once more when the writer has stopped. `committed` changes after every commit
/// that stored readings.
async fn refresh_rollups_beside_the_writer(
    store: Arc<dyn Store>,
    config: IngestConfig,
    mut committed: watch::Receiver<u64>,
) {
    let refresh = || async {
        if let Err(e) = rollup::refresh_dirty(store.as_ref()).await {
            tracing::warn!(error = %e, "rollup refresh failed; the ranges stay dirty and are retried");
        }
    };
    refresh().await;
    let mut writer_running = true;
    while writer_running {
        if committed.changed().await.is_err() {
            break;
        }
        let dirty_since = Instant::now();
        loop {
            let left = config.rollup_every.saturating_sub(dirty_since.elapsed());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(config.rollup_idle.min(left), committed.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => {
                    writer_running = false;
                    break;
                }
                Err(_) => break,
            }
        }
        refresh().await;
    }
    // The writer stopped: whatever it committed last is settled before shutdown returns.
    refresh().await;
}

/// A delivery after verification: what to write, and what to count once committed.
struct Prepared {
    ack: Box<dyn Acknowledge>,
    batch: Option<BatchWrite>,
    /// Seqs the replay window already knew as committed.
    window_duplicates: u64,
    quarantine: Vec<NewQuarantine>,
    /// Records verified and validated one by one, waiting for the monotonic check against
    /// their stored neighbours (looked up once for the whole group).
    unchecked: Option<Unchecked>,
}

/// A delivery's records before the monotonic check.
struct Unchecked {
    topic: String,
    owner: MeterId,
    relayer: Option<MeterId>,
    boot_id: u64,
    records: Vec<Record>,
}

impl Unchecked {
    /// The run of reading seqs whose stored neighbours the check needs, if any reading.
    fn run(&self) -> Option<SeqRun> {
        let mut seqs = self.records.iter().filter_map(|r| match &r.body {
            Body::Reading(_) => Some(r.seq),
            _ => None,
        });
        let first = seqs.next()?;
        let last = seqs.next_back().unwrap_or(first);
        Some(SeqRun {
            meter: self.owner.clone(),
            boot_id: self.boot_id,
            first_seq: first,
            last_seq: last,
        })
    }
}

impl Prepared {
    fn refuse(
        &mut self,
        topic: &str,
        received_ms: i64,
        meter: Option<&MeterId>,
        reason: String,
        raw: &[u8],
    ) {
        let keep = raw.len().min(QUARANTINE_KEEP_BYTES);
        self.quarantine.push(NewQuarantine {
            received_ms,
            source: topic.to_owned(),
            meter_claimed: meter.map(|m| m.to_string()),
            reason,
            raw: raw[..keep].to_vec(),
            raw_len: raw.len() as u64,
        });
    }
}

struct Worker {
    store: Arc<dyn Store>,
    keys: Arc<dyn KeySource>,
    config: IngestConfig,
    live: broadcast::Sender<Arc<LiveBatch>>,
    stats: Arc<IngestStats>,
    windows: HashMap<MeterId, ReplayWindow>,
    meters: HashMap<MeterId, (Meter, Instant)>,
    /// Bumped after every commit that stored readings; the rollup task watches it.
    committed: watch::Sender<u64>,
}

/// How long a meter row is trusted before it is read again (deregistration takes effect
/// within this time).
const METER_CACHE: Duration = Duration::from_secs(5);
/// Most bytes of an oversized payload kept in the quarantine.
const QUARANTINE_KEEP_BYTES: usize = 64 * 1024;

enum Parsed {
    Up(MeterId),
    Relay(MeterId),
}

fn parse_topic(topic: &str) -> Option<Parsed> {
    let rest = topic
        .strip_prefix(schema::topic::PREFIX)?
        .strip_prefix('/')?;
    let (meter, kind) = rest.split_once('/')?;
    let meter = MeterId::parse(meter).ok()?;
    match kind {
        "up" => Some(Parsed::Up(meter)),
        "relay" => Some(Parsed::Relay(meter)),
        _ => None,
    }
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::Receiver<Delivery>) {
        // Rollups are derived data, refreshed by their own task: the dirty ranges are in the
        // store, so a crash before the refresh only delays them.
        while let Some(first) = rx.recv().await {
            let mut group = vec![first];
            while group.len() < self.config.max_deliveries_per_tx {
                match rx.try_recv() {
                    Ok(d) => group.push(d),
                    Err(_) => break,
                }
            }
            if self.process(group).await {
                self.committed.send_modify(|n| *n += 1);
            }
        }
    }

    async fn meter(&mut self, id: &MeterId) -> Result<Option<Meter>, Error> {
        if let Some((m, at)) = self.meters.get(id)
            && at.elapsed() < METER_CACHE
        {
            return Ok(Some(m.clone()));
        }
        let m = self.store.meter(id).await?;
        if let Some(m) = &m {
            self.meters.insert(id.clone(), (m.clone(), Instant::now()));
        }
        Ok(m)
    }

    /// Writes one group; true when something was committed (rollups may be stale).
    async fn process(&mut self, group: Vec<Delivery>) -> bool {
        let received_ms = crate::now_ms();
        let mut prepared = Vec::with_capacity(group.len());
        // When each delivery in `prepared` reached ingest.
        let mut received = Vec::with_capacity(group.len());
        // Readings of this group not yet written, per (meter, boot), for the monotonic check.
        let mut pending: HashMap<(MeterId, u64), Vec<CounterPoint>> = HashMap::new();
        for d in group {
            match self.prepare(d.topic, d.payload, received_ms).await {
                Ok(mut p) => {
                    p.ack = d.ack;
                    prepared.push(p);
                    received.push(d.received_at);
                }
                Err(e) => {
                    // The store could not be read: leave the delivery unacknowledged.
                    tracing::error!(error = %e, "ingest could not verify a delivery; not acknowledged");
                    self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // Monotonic counters: one neighbour lookup for the whole group, then each delivery in
        // order against its stored neighbours and the readings of earlier deliveries.
        let runs: Vec<SeqRun> = prepared
            .iter()
            .filter_map(|p| p.unchecked.as_ref()?.run())
            .collect();
        let found = if runs.is_empty() {
            Ok(Vec::new())
        } else {
            self.store.neighbours_of_runs(&runs).await
        };
        match found {
            Ok(found) => {
                let mut found = found.into_iter();
                for p in &mut prepared {
                    if let Some(u) = p.unchecked.take() {
                        let n = match u.run() {
                            Some(_) => found.next().unwrap_or_default(),
                            None => Neighbours::default(),
                        };
                        self.check_and_finish(p, u, n, received_ms, &mut pending);
                    }
                }
            }
            Err(e) => {
                // The store could not be read: leave those deliveries unacknowledged.
                let before = prepared.len();
                let mut k = 0;
                received.retain(|_| {
                    k += 1;
                    prepared[k - 1].unchecked.is_none()
                });
                prepared.retain(|p| p.unchecked.is_none());
                tracing::error!(error = %e, deliveries = before - prepared.len(), "ingest could not read the stored neighbours; not acknowledged");
                self.stats
                    .write_failures
                    .fetch_add((before - prepared.len()) as u64, Ordering::Relaxed);
            }
        }
        let mut set = WriteSet::default();
        let mut index = Vec::new();
        for (i, p) in prepared.iter().enumerate() {
            if let Some(b) = &p.batch {
                set.batches.push(b.clone());
                index.push(i);
            }
            set.quarantine.extend(p.quarantine.iter().cloned());
        }
        let outcome = if set.batches.is_empty() && set.quarantine.is_empty() {
            Ok(Default::default())
        } else {
            self.write_with_retry(&set).await
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, deliveries = prepared.len(), "ingest transaction failed; deliveries not acknowledged, the broker will redeliver");
                self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        };
        // Committed: count, acknowledge, remember in the replay windows, publish.
        let mut outcomes = vec![None; prepared.len()];
        for (k, i) in index.into_iter().enumerate() {
            outcomes[i] = outcome.batches.get(k).cloned();
        }
        let mut live = Vec::new();
        for (p, o) in prepared.into_iter().zip(outcomes) {
            self.stats.count("quarantined", p.quarantine.len() as u64);
            self.stats.count("duplicate", p.window_duplicates);
            if let (Some(batch), Some(o)) = (p.batch, o) {
                self.stats.count("stored", o.stored.len() as u64);
                self.stats.count("duplicate", o.duplicate.len() as u64);
                self.stats.count("quarantined", o.conflicting.len() as u64);
                let window = self.windows.entry(batch.meter.clone()).or_default();
                for &seq in o.stored.iter().chain(&o.duplicate) {
                    window.accept(batch.boot_id, seq);
                }
                let stored: Vec<Record> = batch
                    .records
                    .into_iter()
                    .filter(|r| o.stored.binary_search(&r.seq).is_ok())
                    .collect();
                let unknown = stored
                    .iter()
                    .filter(|r| matches!(r.body, Body::Unknown { .. }))
                    .count() as u64;
                if unknown > 0 {
                    self.stats
                        .unknown_kinds
                        .fetch_add(unknown, Ordering::Relaxed);
                    metrics::counter!("wattline_ingest_unknown_kind_records_total")
                        .increment(unknown);
                    tracing::warn!(meter = %batch.meter, records = unknown, "records of unknown kinds stored raw");
                }
                if !stored.is_empty() {
                    live.push(Arc::new(LiveBatch {
                        meter: batch.meter,
                        boot_id: batch.boot_id,
                        records: stored,
                    }));
                }
            }
            p.ack.acknowledge();
            self.stats.deliveries.fetch_add(1, Ordering::Relaxed);
        }
        let wrote = !live.is_empty();
        for b in live {
            // No subscriber is fine: the records are stored.
            let _ = self.live.send(b);
        }
        // Every prepared delivery was acknowledged (one the store could not verify was not,
        // and is not counted: it comes back as a redelivery).
        let on_live = Instant::now();
        for at in received {
            let latency = on_live.saturating_duration_since(at);
            self.stats.latency.record(latency);
            metrics::histogram!("wattline_ingest_latency_seconds").record(latency.as_secs_f64());
        }
        wrote
    }

    async fn write_with_retry(&self, set: &WriteSet) -> Result<crate::WriteOutcome, Error> {
        let mut delay = Duration::from_millis(50);
        let mut attempt = 0;
        loop {
            match self.store.write(set).await {
                Ok(o) => return Ok(o),
                Err(e) if attempt < 3 => {
                    tracing::warn!(error = %e, attempt, "ingest transaction failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Verifies, decodes and validates one delivery. `Err` only when the store cannot be
    /// read; everything wrong with the delivery itself becomes a quarantine entry.
    async fn prepare(
        &mut self,
        topic: String,
        payload: Vec<u8>,
        received_ms: i64,
    ) -> Result<Prepared, Error> {
        let mut out = Prepared {
            ack: Box::new(NoAck),
            batch: None,
            window_duplicates: 0,
            quarantine: Vec::new(),
            unchecked: None,
        };
        let Some(parsed) = parse_topic(&topic) else {
            let shown: String = topic.chars().take(120).collect();
            out.refuse(
                &topic,
                received_ms,
                None,
                format!("topic {shown:?} is not a wattline uplink topic (expected wattline/v1/m/{{meter}}/up or /relay)"),
                &payload,
            );
            return Ok(out);
        };
        if payload.len() > MAX_ENVELOPE_BYTES {
            let sender = match &parsed {
                Parsed::Up(m) | Parsed::Relay(m) => m.clone(),
            };
            out.refuse(
                &topic,
                received_ms,
                Some(&sender),
                format!(
                    "envelope of {} bytes exceeds the limit of {MAX_ENVELOPE_BYTES} bytes; first {} bytes kept",
                    payload.len(),
                    payload.len().min(QUARANTINE_KEEP_BYTES)
                ),
                &payload,
            );
            return Ok(out);
        }
        let envelope = match Envelope::parse(&payload) {
            Ok(e) => e,
            Err(e) => {
                let sender = match &parsed {
                    Parsed::Up(m) | Parsed::Relay(m) => m.clone(),
                };
                out.refuse(
                    &topic,
                    received_ms,
                    Some(&sender),
                    format!("cannot parse the envelope: {e}"),
                    &payload,
                );
                return Ok(out);
            }
        };
        let owner = envelope.header().meter.clone();
        let relayer = match &parsed {
            Parsed::Up(sender) => {
                if sender != &owner {
                    out.refuse(
                        &topic,
                        received_ms,
                        Some(&owner),
                        format!("envelope names meter {owner} but was published on meter {sender}'s topic"),
                        &payload,
                    );
                    return Ok(out);
                }
                None
            }
            Parsed::Relay(relayer) => Some(relayer.clone()),
        };
        if let Some(relayer) = &relayer {
            match self.meter(relayer).await? {
                Some(m) if m.status == MeterStatus::Active => {}
                _ => {
                    out.refuse(
                        &topic,
                        received_ms,
                        Some(&owner),
                        format!("relaying meter {relayer} is not an enrolled, active meter"),
                        &payload,
                    );
                    return Ok(out);
                }
            }
        }
        let meter = match self.meter(&owner).await? {
            None => {
                out.refuse(
                    &topic,
                    received_ms,
                    Some(&owner),
                    format!("unknown meter {owner}: not enrolled"),
                    &payload,
                );
                return Ok(out);
            }
            Some(m) if m.status != MeterStatus::Active => {
                out.refuse(
                    &topic,
                    received_ms,
                    Some(&owner),
                    format!("meter {owner} is deregistered"),
                    &payload,
                );
                return Ok(out);
            }
            Some(m) => m,
        };
        if let Some(why) = self.keys.refused(&owner) {
            out.refuse(&topic, received_ms, Some(&owner), why, &payload);
            return Ok(out);
        }
        let keys = self.keys.keys(&owner);
        if keys.is_empty() {
            out.refuse(
                &topic,
                received_ms,
                Some(&owner),
                format!(
                    "no key loaded for meter {owner} (key_ref {:?})",
                    meter.key_ref
                ),
                &payload,
            );
            return Ok(out);
        }
        // Newest key first; an older one is accepted only within a rotation's grace period.
        let mut opened = Err(None);
        for (i, key) in keys.iter().enumerate() {
            match envelope.open(key, &owner, Direction::Up) {
                Ok(p) => {
                    opened = Ok((i, p));
                    break;
                }
                Err(e) => {
                    if i == 0 {
                        opened = Err(Some(e));
                    }
                }
            }
        }
        let plaintext = match opened {
            Ok((i, p)) => {
                self.keys.opened_with(&owner, i);
                p
            }
            Err(e) => {
                let e = e.map_or_else(|| "no key".to_owned(), |e| e.to_string());
                out.refuse(
                    &topic,
                    received_ms,
                    Some(&owner),
                    format!("envelope from meter {owner} refused: {e}"),
                    &payload,
                );
                return Ok(out);
            }
        };
        let header = envelope.header();
        let batch =
            match Batch::decode_records(owner.clone(), header.boot_id, header.seq, &plaintext) {
                Ok(b) => b,
                Err(e) => {
                    out.refuse(
                        &topic,
                        received_ms,
                        Some(&owner),
                        format!("batch from meter {owner} does not decode: {e}"),
                        &payload,
                    );
                    return Ok(out);
                }
            };
        let boot_id = batch.boot_id;
        let bounds = Bounds {
            received_ms,
            oldest_ms: received_ms - self.config.max_age_ms,
            newest_ms: received_ms + self.config.max_future_ms,
        };
        let window = self.windows.get(&owner);
        let mut records = Vec::with_capacity(batch.records.len());
        for r in batch.records {
            // The window only holds committed seqs, so Duplicate is certain; TooOld and
            // Fresh go to the store, the final authority.
            if window.is_some_and(|w| w.check(boot_id, r.seq) == Verdict::Duplicate) {
                out.window_duplicates += 1;
                continue;
            }
            match validate::check_record(&r, &bounds) {
                Ok(()) => records.push(r),
                Err(why) => refuse_record(&mut out, &topic, &owner, boot_id, &r, why, received_ms),
            }
        }
        out.unchecked = Some(Unchecked {
            topic,
            owner,
            relayer,
            boot_id,
            records,
        });
        Ok(out)
    }

    /// Checks the counters of `u`'s readings against their stored neighbours `n` and the
    /// readings of earlier deliveries of the group (`pending`), and makes `out`'s batch.
    fn check_and_finish(
        &mut self,
        out: &mut Prepared,
        u: Unchecked,
        mut n: Neighbours,
        received_ms: i64,
        pending: &mut HashMap<(MeterId, u64), Vec<CounterPoint>>,
    ) {
        let Unchecked {
            topic,
            owner,
            relayer,
            boot_id,
            mut records,
        } = u;
        let readings: Vec<(usize, u64, schema::EnergyCounters)> = records
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match &r.body {
                Body::Reading(x) => Some((i, r.seq, x.counters)),
                _ => None,
            })
            .collect();
        if let (Some(first), Some(last)) = (readings.first(), readings.last()) {
            for p in pending.get(&(owner.clone(), boot_id)).into_iter().flatten() {
                if p.seq < first.1 && n.before.is_none_or(|b| b.seq < p.seq) {
                    n.before = Some(*p);
                }
                if p.seq > last.1 && n.after.is_none_or(|a| a.seq > p.seq) {
                    n.after = Some(*p);
                }
            }
            let seqs: Vec<(u64, schema::EnergyCounters)> =
                readings.iter().map(|&(_, s, c)| (s, c)).collect();
            let refused = validate::check_monotonic(boot_id, &seqs, n.before, n.after);
            let mut refused_at = vec![false; records.len()];
            for (k, why) in refused {
                let i = readings[k].0;
                refuse_record(out, &topic, &owner, boot_id, &records[i], why, received_ms);
                refused_at[i] = true;
            }
            let mut i = 0;
            records.retain(|_| {
                i += 1;
                !refused_at[i - 1]
            });
        }
        let entry = pending.entry((owner.clone(), boot_id)).or_default();
        for r in &records {
            if let Body::Reading(x) = &r.body {
                entry.push(CounterPoint {
                    boot_id,
                    seq: r.seq,
                    t_ms: r.t_ms,
                    counters: x.counters,
                    p_w: x.total.p_w,
                });
            }
        }
        let newest = records.iter().map(|r| r.t_ms).max();
        // Only a clock ahead of ours is certain drift; a record behind may be a backfill.
        let clock_drift_ms = newest.map(|t| t - received_ms).filter(|&d| d > 0);
        if let Some(d) = clock_drift_ms
            && d > self.config.drift_note_ms
        {
            tracing::warn!(meter = %owner, drift_ms = d, "meter clock runs ahead of the server clock");
        }
        if let Some(relayer) = relayer {
            // Counted, so an operator sees meters whose own link is down (seed 002's "routed").
            self.stats.relayed.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("wattline_ingest_relayed_envelopes_total").increment(1);
            tracing::debug!(meter = %owner, %relayer, "envelope arrived by relay");
        }
        if !records.is_empty() {
            out.batch = Some(BatchWrite {
                meter: owner,
                boot_id,
                records,
                received_ms,
                clock_drift_ms,
                source: topic,
            });
        }
    }
}

fn refuse_record(
    out: &mut Prepared,
    topic: &str,
    meter: &MeterId,
    boot_id: u64,
    r: &Record,
    why: String,
    received_ms: i64,
) {
    let raw = r.to_cbor().unwrap_or_default();
    out.quarantine.push(NewQuarantine {
        received_ms,
        source: topic.to_owned(),
        meter_claimed: Some(meter.to_string()),
        reason: format!(
            "{} record boot {boot_id} seq {}: {why}",
            r.body.kind(),
            r.seq
        ),
        raw_len: raw.len() as u64,
        raw,
    });
}

/// Placeholder handle while a delivery is being prepared (replaced before use).
struct NoAck;

impl Acknowledge for NoAck {
    fn acknowledge(self: Box<Self>) {}
}
