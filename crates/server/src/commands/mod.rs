//! The command dispatcher (DESIGN §3.4): carries QUEUED commands to their meters and keeps
//! their life cycle moving.
//!
//! Each round (every `poll_interval`, or at once when the API queues a command) it
//! 1. marks commands past their expiry EXPIRED (`Store::expire_commands`);
//! 2. seals each QUEUED command with its meter's key (`schema::seal_commands`, the same
//!    [`KeySource`] ingest verifies with) and publishes it on the meter's `down` topic through a
//!    [`DownLink`]; success moves it to SENT, and to DELIVERED when the link reports that the
//!    meter itself acknowledged the publish (the embedded broker does; an external broker
//!    only confirms it took the message);
//! 3. re-sends SENT commands the meter has not confirmed, when the meter reconnects or after
//!    `resend_after`.
//!
//! The meter's `ack` record then moves the command to SUCCEEDED/FAILED/EXPIRED inside the
//! ingest transaction that stores it (`store::ack_transition`). A command to an offline meter
//! stays QUEUED until the meter is back or it expires.
//!
//! Each sealed `down` envelope carries `(epoch, seq)` for the meter's replay window: the epoch
//! is the dispatcher's start time in ms, so a restarted server never reuses a pair.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use schema::MeterId;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::broker::{BrokerHandle, MqttError};
use crate::source::external::ExternalSource;
use crate::{CommandStatus, ErrorKind, KeySource, Store, StoredCommand};

/// How far a publish on `down` got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownOutcome {
    /// The meter acknowledged the message (DELIVERED).
    Delivered,
    /// A broker took the message; whether the meter got it is not known (SENT).
    Accepted,
}

/// Something that can publish on a meter's `down` topic.
#[async_trait]
pub trait DownLink: Send + Sync + 'static {
    /// Publishes `payload` on `meter`'s `down` topic at QoS 1.
    async fn publish_down(&self, meter: &MeterId, payload: Bytes)
    -> Result<DownOutcome, MqttError>;

    /// The meters connected now, when the link can tell (used to wait for offline meters and
    /// to re-send on reconnection); `None` when it cannot.
    fn connected(&self) -> Option<HashSet<MeterId>>;
}

#[async_trait]
impl DownLink for BrokerHandle {
    async fn publish_down(
        &self,
        meter: &MeterId,
        payload: Bytes,
    ) -> Result<DownOutcome, MqttError> {
        BrokerHandle::publish_down(self, meter, payload).await?;
        Ok(DownOutcome::Delivered)
    }

    fn connected(&self) -> Option<HashSet<MeterId>> {
        Some(self.connected_meters().into_iter().collect())
    }
}

#[async_trait]
impl DownLink for ExternalSource {
    async fn publish_down(
        &self,
        meter: &MeterId,
        payload: Bytes,
    ) -> Result<DownOutcome, MqttError> {
        ExternalSource::publish_down(self, meter, payload).await?;
        Ok(DownOutcome::Accepted)
    }

    fn connected(&self) -> Option<HashSet<MeterId>> {
        None
    }
}

#[async_trait]
impl<T: DownLink> DownLink for Arc<T> {
    async fn publish_down(
        &self,
        meter: &MeterId,
        payload: Bytes,
    ) -> Result<DownOutcome, MqttError> {
        T::publish_down(self, meter, payload).await
    }

    fn connected(&self) -> Option<HashSet<MeterId>> {
        T::connected(self)
    }
}

/// Dispatcher settings.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// How often it looks for work without being woken.
    pub poll_interval: Duration,
    /// A SENT command the meter has not confirmed is sent again after this long.
    pub resend_after: Duration,
    /// Longest wait for one publish (the meter's PUBACK on the embedded broker).
    pub publish_timeout: Duration,
    /// Most unfinished commands looked at per round.
    pub batch: u32,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            resend_after: Duration::from_secs(30),
            publish_timeout: Duration::from_secs(10),
            batch: 1_000,
        }
    }
}

struct Shared {
    store: Arc<dyn Store>,
    keys: Arc<dyn KeySource>,
    link: Arc<dyn DownLink>,
    config: DispatcherConfig,
    epoch: u64,
    seq: AtomicU64,
    /// Commands being published now (not picked again until done).
    in_flight: Mutex<HashSet<i64>>,
    /// When each command was last published by this process.
    last_attempt: Mutex<HashMap<i64, Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding these locks; recover rather than stop dispatching.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The running dispatcher.
pub struct Dispatcher {
    wake: Arc<Notify>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// Starts dispatching commands of `store` through `link`, sealing with `keys`.
    pub fn start(
        store: Arc<dyn Store>,
        keys: Arc<dyn KeySource>,
        link: Arc<dyn DownLink>,
        config: DispatcherConfig,
    ) -> Self {
        let shared = Arc::new(Shared {
            store,
            keys,
            link,
            config,
            epoch: crate::now_ms().max(1) as u64,
            seq: AtomicU64::new(1),
            in_flight: Mutex::new(HashSet::new()),
            last_attempt: Mutex::new(HashMap::new()),
        });
        let wake = Arc::new(Notify::new());
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(shared, wake.clone(), stop_rx));
        Self { wake, stop, task }
    }

    /// The handle that wakes the dispatcher (give it to the API: `AppState::with_dispatcher`).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Stops the loop (publishes under way finish on their own).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn run(shared: Arc<Shared>, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    let mut known: Option<HashSet<MeterId>> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        if let Err(e) = round(&shared, &mut known).await {
            tracing::warn!(error = %e, "command dispatcher round failed; retrying");
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(shared.config.poll_interval) => {}
        }
    }
}

/// One pass over the unfinished commands.
async fn round(
    shared: &Arc<Shared>,
    known: &mut Option<HashSet<MeterId>>,
) -> Result<(), crate::Error> {
    let now = crate::now_ms();
    let expired = shared.store.expire_commands(now).await?;
    if expired > 0 {
        metrics::counter!("wattline_commands_expired_total").increment(expired);
        tracing::info!(expired, "commands expired");
    }
    let connected = shared.link.connected();
    if let Some(c) = &connected {
        metrics::gauge!("wattline_broker_connected_meters").set(c.len() as f64);
    }
    // Meters that (re)connected since the last round get their unconfirmed commands again.
    let reconnected: HashSet<MeterId> = match (&connected, known.as_ref()) {
        (Some(now), Some(before)) => now.difference(before).cloned().collect(),
        (Some(now), None) => now.clone(),
        _ => HashSet::new(),
    };
    *known = connected.clone();

    let commands = shared
        .store
        .unfinished_commands(shared.config.batch)
        .await?;
    {
        // Forget attempts of commands that are done.
        let open: HashSet<i64> = commands.iter().map(|c| c.id).collect();
        lock(&shared.last_attempt).retain(|id, _| open.contains(id));
    }
    for cmd in commands {
        if cmd.command.expires_ms <= now || lock(&shared.in_flight).contains(&cmd.id) {
            continue;
        }
        let meter = &cmd.command.meter;
        let online = connected.as_ref().is_none_or(|c| c.contains(meter));
        let due = match cmd.status {
            CommandStatus::Queued => online,
            CommandStatus::Sent => {
                let stale = lock(&shared.last_attempt)
                    .get(&cmd.id)
                    .is_none_or(|t| t.elapsed() >= shared.config.resend_after);
                online && (reconnected.contains(meter) || stale)
            }
            _ => false,
        };
        if due {
            lock(&shared.in_flight).insert(cmd.id);
            lock(&shared.last_attempt).insert(cmd.id, Instant::now());
            tokio::spawn(send(shared.clone(), cmd));
        }
    }
    metrics::gauge!("wattline_commands_in_flight").set(lock(&shared.in_flight).len() as f64);
    Ok(())
}

/// Seals and publishes one command, then records how far it got.
async fn send(shared: Arc<Shared>, cmd: StoredCommand) {
    let id = cmd.id;
    send_inner(&shared, &cmd).await;
    lock(&shared.in_flight).remove(&id);
}

async fn send_inner(shared: &Shared, cmd: &StoredCommand) {
    let meter = &cmd.command.meter;
    let Some(key) = shared.keys.key(meter) else {
        // Nobody can ever open it: say so instead of retrying forever.
        move_to(
            shared,
            cmd.id,
            CommandStatus::Failed,
            "the server holds no key for this meter, so the command cannot be sealed",
        )
        .await;
        return;
    };
    let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
    let sealed = match schema::seal_commands(&key, meter, shared.epoch, seq, &[cmd.to_wire()]) {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            move_to(
                shared,
                cmd.id,
                CommandStatus::Failed,
                &format!("could not seal the command: {e}"),
            )
            .await;
            return;
        }
    };
    let published = tokio::time::timeout(
        shared.config.publish_timeout,
        shared.link.publish_down(meter, sealed),
    )
    .await;
    match published {
        Ok(Ok(outcome)) => {
            metrics::counter!("wattline_commands_published_total").increment(1);
            if cmd.status == CommandStatus::Queued {
                move_to(
                    shared,
                    cmd.id,
                    CommandStatus::Sent,
                    "published on the meter's down topic",
                )
                .await;
            }
            if outcome == DownOutcome::Delivered {
                move_to(
                    shared,
                    cmd.id,
                    CommandStatus::Delivered,
                    "the meter acknowledged receipt (MQTT PUBACK)",
                )
                .await;
            }
        }
        Ok(Err(e)) => {
            // Offline or gone mid-publish: the command waits for the next round.
            tracing::debug!(command = cmd.id, %meter, error = %e, "command not published yet");
        }
        Err(_) => {
            tracing::info!(command = cmd.id, %meter, "no PUBACK from the meter in time; will re-send");
        }
    }
}

/// Moves a command; a transition the meter's ack already overtook is not an error.
async fn move_to(shared: &Shared, id: i64, status: CommandStatus, note: &str) {
    match shared
        .store
        .set_command_status(id, status, "system", note, crate::now_ms())
        .await
    {
        Ok(_) => {}
        Err(e) if matches!(e.kind(), ErrorKind::InvalidTransition { .. }) => {
            tracing::debug!(command = id, error = %e, "command moved on meanwhile");
        }
        Err(e) => tracing::warn!(command = id, error = %e, "could not record a command status"),
    }
}
