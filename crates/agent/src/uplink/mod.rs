//! The uplink: MQTT 3.1.1 over mutual TLS to the broker (DESIGN §3.3).
//!
//! - publishes sealed batches from the outbox on `up` (QoS 1) and removes records from the
//!   outbox only when the broker's PUBACK for their envelope arrived: rumqttc's `publish`
//!   returns when the request is queued, so the uplink matches each `Outgoing::Publish(pkid)`
//!   (emitted in request order) to the batch it queued, and each `PubAck(pkid)` to that batch;
//!   the outbox is acknowledged up to the longest fully acknowledged prefix;
//! - sets the last will `offline` (retained) on `status`, publishes `online` (retained) on
//!   connect and `offline` on a clean shutdown;
//! - subscribes to `down`, opens the sealed commands, drops replays, and hands the commands to
//!   the pipeline, which answers each with an `ack` record;
//! - reconnects with jittered exponential backoff. Each connection is a fresh MQTT session:
//!   the outbox, not the client library, is the source of truth for what is left to send, so
//!   after a reconnect the uplink rewinds to the first unacknowledged record (a batch whose
//!   PUBACK was lost is sent again; ingest dedups on `(boot_id, seq)`);
//! - bounds the send rate (`max_envelopes_per_s`), so a backlog after an outage drains in
//!   order, with the records' original timestamps, without flooding the broker;
//! - with `[neighbour] via`, routes the outbox through a neighbouring meter while its own
//!   link has been failing for `after_s` (state [`LinkState::RoutedVia`]), between attempts
//!   to reconnect on its own; with `[neighbour] listen`, publishes the envelopes its
//!   neighbours hand over on `relay` and answers each after the PUBACK (see `neighbour`).

mod config;
pub(crate) mod tls;

pub use config::UplinkConfig;
pub use tls::{client_config, install_crypto_provider};

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use schema::{Batch, Command, MeterId, MeterKey, RejectedCommand, ReplayWindow, Verdict, topic};
use serde::Serialize;
use tokio::sync::{Notify, mpsc, watch};

use crate::neighbour::{RelayRequest, RouteContext, RouteEnd, Router};
use crate::outbox::Outbox;

/// How long a clean shutdown waits for queued records to be acknowledged.
const DRAIN_ON_SHUTDOWN: Duration = Duration::from_secs(3);

/// Connection state as `wattline agent status` shows it (the seed 002 LCD messages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LinkState {
    /// Connecting (TCP, TLS, MQTT CONNECT).
    Connecting,
    /// Connected; the broker accepted the session.
    Connected,
    /// The link failed; retrying after a backoff.
    Disconnected {
        /// Why.
        reason: String,
    },
    /// The broker or the TLS layer refused this meter (certificate, ACL, authorisation):
    /// retrying will not help until someone fixes the enrolment. Still retried, slowly.
    ConnectionBarred {
        /// Why.
        reason: String,
    },
    /// The own link is down and the outbox drains through a neighbouring meter (seed 002's
    /// "Routed"); the own link is retried between routing periods.
    RoutedVia {
        /// The neighbour's meter id.
        meter: String,
        /// Its address.
        addr: String,
        /// Why the own link is down.
        own_uplink: String,
    },
}

/// Uplink counters for metrics and status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UplinkStats {
    /// Current state.
    pub link: LinkState,
    /// Envelopes published (PUBLISH sent).
    pub envelopes_published: u64,
    /// Envelopes the broker acknowledged.
    pub envelopes_acked: u64,
    /// Connection attempts that failed.
    pub connection_failures: u64,
    /// `down` envelopes accepted.
    pub command_envelopes: u64,
    /// `down` envelopes refused (tag, meter, malformed) or replayed.
    pub command_envelopes_refused: u64,
    /// Own envelopes a neighbour forwarded and acknowledged.
    pub envelopes_routed: u64,
    /// Routing attempts through a neighbour that failed (connect, TLS, refusal).
    pub neighbour_failures: u64,
    /// Envelopes of neighbours published on `relay` and acknowledged by the broker.
    pub relayed_acked: u64,
}

impl Default for UplinkStats {
    fn default() -> Self {
        Self {
            link: LinkState::Connecting,
            envelopes_published: 0,
            envelopes_acked: 0,
            connection_failures: 0,
            command_envelopes: 0,
            command_envelopes_refused: 0,
            envelopes_routed: 0,
            neighbour_failures: 0,
            relayed_acked: 0,
        }
    }
}

/// Commands opened from one `down` envelope.
pub type CommandDelivery = Vec<Result<Command, RejectedCommand>>;

/// What the uplink shares with the pipeline.
#[derive(Debug, Clone)]
pub struct UplinkHandles {
    /// The outbox it drains.
    pub outbox: Arc<Mutex<Outbox>>,
    /// Notified whenever acknowledged records left the outbox (room for a blocked producer).
    pub space: Arc<Notify>,
    /// Live counters.
    pub stats: Arc<Mutex<UplinkStats>>,
}

/// The uplink task of one meter.
pub struct Uplink {
    config: UplinkConfig,
    meter: MeterId,
    key: MeterKey,
    tls: Arc<rustls::ClientConfig>,
    handles: UplinkHandles,
    commands: mpsc::Sender<CommandDelivery>,
    down_window: ReplayWindow,
    /// Where the replay window is persisted (`None`: in memory only).
    window_file: Option<std::path::PathBuf>,
    /// Neighbours to route through when the own link fails.
    router: Option<Router>,
    /// Envelopes of neighbours to publish on `relay` (this meter forwards).
    relay_requests: Option<mpsc::Receiver<RelayRequest>>,
}

/// One PUBLISH we queued and wait to see acknowledged.
#[derive(Debug)]
struct InFlight {
    /// Packet id, known once rumqttc emitted `Outgoing::Publish`.
    pkid: Option<u16>,
    /// Last outbox position in the envelope; `None` for the status message.
    last_position: Option<u64>,
    queued_at: Instant,
    acked: bool,
    /// A neighbour's envelope: told when the broker acknowledged it.
    relay_reply: Option<tokio::sync::oneshot::Sender<()>>,
}

enum SessionEnd {
    Shutdown,
    Failed {
        reason: String,
        barred: bool,
        was_connected: bool,
    },
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock must not stop metering: keep going with the
    // data as it is (the outbox's on-disk state is always consistent).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// First line of the replay window file; then one `boot_id highest_seq` line per boot.
const WINDOW_FILE_HEADER: &str = "wattline command replay window v1\n";

/// The marks of a replay window file, or `None` when it is not one.
fn parse_marks(text: &str) -> Option<Vec<(u64, u64)>> {
    let rest = text.strip_prefix(WINDOW_FILE_HEADER)?;
    rest.lines()
        .map(|l| {
            let (a, b) = l.split_once(' ')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect()
}

/// A number in [0, 1) from the OS-seeded std hasher: enough to spread reconnects of a fleet.
fn jitter_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

impl Uplink {
    /// Prepares the uplink; fails when the TLS files cannot be loaded.
    pub fn new(
        config: UplinkConfig,
        meter: MeterId,
        key: MeterKey,
        handles: UplinkHandles,
        commands: mpsc::Sender<CommandDelivery>,
    ) -> Result<Self, String> {
        config.validate()?;
        install_crypto_provider();
        let tls = client_config(&config.ca_file, &config.cert_file, &config.key_file)?;
        Ok(Self {
            config,
            meter,
            key,
            tls: Arc::new(tls),
            handles,
            commands,
            down_window: ReplayWindow::new(),
            window_file: None,
            router: None,
            relay_requests: None,
        })
    }

    /// Routes through the neighbours of `[neighbour] via` when the own link fails.
    pub fn with_neighbours(
        mut self,
        config: &crate::neighbour::NeighbourConfig,
    ) -> Result<Self, String> {
        self.router = Router::new(config, &self.config)?;
        Ok(self)
    }

    /// Publishes the envelopes a [`crate::neighbour::Forwarder`] hands over on `relay`.
    pub fn with_relay_requests(mut self, requests: mpsc::Receiver<RelayRequest>) -> Self {
        self.relay_requests = Some(requests);
        self
    }

    /// Keeps the command replay window in `path` (written atomically after every accepted
    /// command envelope) and starts from what it holds, so commands taken before a restart are
    /// not taken again. A missing file is a first start; an unreadable one is reported and
    /// replaced (the command expiry still bounds any replay).
    pub fn with_replay_state(mut self, path: std::path::PathBuf) -> Self {
        match std::fs::read_to_string(&path) {
            Ok(text) => match parse_marks(&text) {
                Some(marks) => self.down_window = ReplayWindow::restored(&marks),
                None => tracing::error!(
                    path = %path.display(),
                    "command replay window file is damaged; starting with an empty window"
                ),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read the command replay window")
            }
        }
        self.window_file = Some(path);
        self
    }

    fn save_window(&self) {
        let Some(path) = &self.window_file else {
            return;
        };
        let mut text = String::from(WINDOW_FILE_HEADER);
        for (boot, seq) in self.down_window.high_marks() {
            text.push_str(&format!("{boot} {seq}\n"));
        }
        let tmp = path.with_extension("tmp");
        let written = std::fs::File::create(&tmp).and_then(|mut f| {
            use std::io::Write;
            f.write_all(text.as_bytes())?;
            f.sync_all()
        });
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
            tracing::error!(path = %path.display(), error = %e, "cannot persist the command replay window");
        }
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut failures: u32 = 0;
        // Since when the own link has been failing without a successful session.
        let mut failing_since: Option<Instant> = None;
        loop {
            if *shutdown.borrow() {
                return;
            }
            // While routed, the status keeps saying so during the retry of the own link.
            if !matches!(lock(&self.handles.stats).link, LinkState::RoutedVia { .. }) {
                self.set_link(LinkState::Connecting);
            }
            let mut relay_requests = self.relay_requests.take();
            let end = self.session(&mut shutdown, &mut relay_requests).await;
            self.relay_requests = relay_requests;
            let (reason, barred) = match end {
                SessionEnd::Shutdown => return,
                SessionEnd::Failed {
                    reason,
                    barred,
                    was_connected,
                } => {
                    if was_connected {
                        failures = 0;
                        failing_since = None;
                    }
                    (reason, barred)
                }
            };
            let failing_since = *failing_since.get_or_insert_with(Instant::now);
            if *shutdown.borrow() {
                return;
            }
            failures = failures.saturating_add(1);
            lock(&self.handles.stats).connection_failures += 1;
            // Exponential backoff with "equal jitter": half fixed, half random, so a fleet that
            // lost the broker together does not reconnect together.
            let exp = self
                .config
                .backoff_min_ms
                .saturating_mul(1u64 << failures.min(20).saturating_sub(1))
                .min(self.config.backoff_max_ms);
            let delay_ms = exp / 2 + (jitter_fraction() * (exp / 2) as f64) as u64;
            tracing::warn!(meter = %self.meter, %reason, barred, retry_in_ms = delay_ms, "uplink down");
            let until = Instant::now() + Duration::from_millis(delay_ms);
            let mut state = if barred {
                LinkState::ConnectionBarred {
                    reason: reason.clone(),
                }
            } else {
                LinkState::Disconnected {
                    reason: reason.clone(),
                }
            };
            if let Some(router) = self
                .router
                .as_ref()
                .filter(|r| failing_since.elapsed() >= r.after)
            {
                let ctx = RouteContext {
                    meter: &self.meter,
                    key: &self.key,
                    config: &self.config,
                    handles: &self.handles,
                };
                match router.route(&ctx, &reason, until, &mut shutdown).await {
                    RouteEnd::Shutdown => return,
                    // Time to try the own link again; the status keeps `routed via`.
                    RouteEnd::Routed => continue,
                    RouteEnd::NoneWorked(neighbours) => {
                        // Nothing works: the seed 002 LCD's "connection barred".
                        state = LinkState::ConnectionBarred {
                            reason: format!("own uplink: {reason}; neighbours: {neighbours}"),
                        };
                    }
                }
            }
            self.set_link(state);
            tokio::select! {
                _ = tokio::time::sleep_until(until.into()) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    fn set_link(&self, link: LinkState) {
        lock(&self.handles.stats).link = link;
    }

    fn options(&self) -> MqttOptions {
        let mut opts = MqttOptions::new(self.meter.as_str(), &self.config.host, self.config.port);
        opts.set_keep_alive(Duration::from_secs(self.config.keep_alive_s));
        opts.set_clean_session(true);
        // rumqttc's own inflight window is kept well above ours so its packet ids never
        // collide with an unacknowledged publish of ours.
        opts.set_inflight(self.config.max_inflight.saturating_mul(4).max(16));
        opts.set_max_packet_size(
            schema::MAX_ENVELOPE_BYTES + 1024,
            schema::MAX_ENVELOPE_BYTES + 1024,
        );
        opts.set_last_will(LastWill::new(
            topic::status(&self.meter),
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            self.tls.clone(),
        )));
        opts
    }

    async fn session(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        relay_requests: &mut Option<mpsc::Receiver<RelayRequest>>,
    ) -> SessionEnd {
        let (client, mut eventloop) = AsyncClient::new(self.options(), 64);
        lock(&self.handles.outbox).rewind();
        let mut inflight: VecDeque<InFlight> = VecDeque::new();
        let mut connected = false;
        let mut drain_until: Option<Instant> = None;
        let mut tokens = 1.0f64;
        let mut last_refill = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ack_timeout = Duration::from_secs(self.config.ack_timeout_s);
        let up = topic::up(&self.meter);
        let down = topic::down(&self.meter);
        let status = topic::status(&self.meter);
        let relay = topic::relay(&self.meter);
        let fail = |reason: String, barred: bool, was_connected: bool| SessionEnd::Failed {
            reason,
            barred,
            was_connected,
        };
        loop {
            tokio::select! {
                _ = shutdown.changed(), if drain_until.is_none() => {
                    if !connected {
                        return SessionEnd::Shutdown;
                    }
                    // Graceful: give what is queued a short while to be delivered first.
                    drain_until = Some(Instant::now() + DRAIN_ON_SHUTDOWN);
                }
                event = eventloop.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected = true;
                        self.set_link(LinkState::Connected);
                        tracing::info!(meter = %self.meter, host = %self.config.host, "uplink connected");
                        inflight.push_back(InFlight { pkid: None, last_position: None, queued_at: Instant::now(), acked: false, relay_reply: None });
                        if let Err(e) = client.try_publish(&status, QoS::AtLeastOnce, true, "online") {
                            return fail(format!("queueing status: {e}"), false, true);
                        }
                        if let Err(e) = client.try_subscribe(&down, QoS::AtLeastOnce) {
                            return fail(format!("queueing subscribe: {e}"), false, true);
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if let Some(f) = inflight.iter_mut().find(|f| f.pkid.is_none()) {
                            f.pkid = Some(pkid);
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::AwaitAck(pkid))) => {
                        return fail(format!("packet id {pkid} still unacknowledged"), false, connected);
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(f) = inflight.iter_mut().find(|f| f.pkid == Some(ack.pkid) && !f.acked) {
                            f.acked = true;
                            if let Some(reply) = f.relay_reply.take() {
                                lock(&self.handles.stats).relayed_acked += 1;
                                let _ = reply.send(());
                            }
                        }
                        if let Err(e) = self.release_acked(&mut inflight) {
                            return fail(e, false, connected);
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == down => {
                        self.handle_down(&p.payload);
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        if ack.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) {
                            // The ACL refused our own `down`: commands cannot reach us.
                            tracing::error!(meter = %self.meter, topic = %down, "broker refused the command subscription");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let barred = matches!(e, ConnectionError::ConnectionRefused(_) | ConnectionError::Tls(_));
                        return fail(describe(&e), barred, connected);
                    }
                },
                Some(request) = next_relay_request(relay_requests), if connected && inflight.len() < 2 * usize::from(self.config.max_inflight) => {
                    // A neighbour's envelope, already sealed by its meter: published as is.
                    if let Err(e) = client.try_publish(&relay, QoS::AtLeastOnce, false, request.envelope) {
                        return fail(format!("queueing relay publish: {e}"), false, true);
                    }
                    tracing::debug!(origin = %request.origin, "forwarding a neighbour's envelope");
                    inflight.push_back(InFlight { pkid: None, last_position: None, queued_at: Instant::now(), acked: false, relay_reply: Some(request.reply) });
                }
                _ = tick.tick(), if connected => {
                    let now = Instant::now();
                    let rate = self.config.max_envelopes_per_s;
                    tokens = (tokens + now.duration_since(last_refill).as_secs_f64() * rate).min(rate.max(1.0));
                    last_refill = now;
                    if let Some(deadline) = drain_until {
                        let drained = inflight.is_empty() && !lock(&self.handles.outbox).has_unsent();
                        if drained || now >= deadline {
                            self.close(&client, &mut eventloop, &status).await;
                            return SessionEnd::Shutdown;
                        }
                    }
                    if inflight.front().is_some_and(|f| now.duration_since(f.queued_at) > ack_timeout) {
                        return fail("publish not acknowledged in time".into(), false, true);
                    }
                    while tokens >= 1.0 && inflight.len() < usize::from(self.config.max_inflight) {
                        match self.queue_next_batch(&client, &up) {
                            Ok(Some(last_position)) => {
                                tokens -= 1.0;
                                inflight.push_back(InFlight { pkid: None, last_position: Some(last_position), queued_at: now, acked: false, relay_reply: None });
                            }
                            Ok(None) => break,
                            Err(e) => return fail(e, false, true),
                        }
                    }
                }
            }
        }
    }

    /// Seals and queues the next batch; returns its last outbox position.
    fn queue_next_batch(&self, client: &AsyncClient, up: &str) -> Result<Option<u64>, String> {
        let entries = lock(&self.handles.outbox)
            .next_batch(self.config.batch_max_records)
            .map_err(|e| e.to_string())?;
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(None);
        };
        let last_position = last.position;
        let batch = Batch {
            meter: self.meter.clone(),
            boot_id: first.boot_id,
            records: entries.into_iter().map(|e| e.record).collect(),
        };
        let sealed = schema::seal_batch(&self.key, &batch).map_err(|e| e.to_string())?;
        client
            .try_publish(up, QoS::AtLeastOnce, false, sealed)
            .map_err(|e| format!("queueing publish: {e}"))?;
        lock(&self.handles.stats).envelopes_published += 1;
        Ok(Some(last_position))
    }

    /// Pops the acknowledged prefix and acknowledges its records in the outbox.
    fn release_acked(&self, inflight: &mut VecDeque<InFlight>) -> Result<(), String> {
        let mut through = None;
        let mut envelopes = 0;
        while inflight.front().is_some_and(|f| f.acked) {
            let f = inflight.pop_front().expect("front exists");
            if let Some(p) = f.last_position {
                through = Some(p);
                envelopes += 1;
            }
        }
        if let Some(p) = through {
            lock(&self.handles.outbox)
                .ack_through(p)
                .map_err(|e| e.to_string())?;
            lock(&self.handles.stats).envelopes_acked += envelopes;
            self.handles.space.notify_waiters();
        }
        Ok(())
    }

    fn handle_down(&mut self, payload: &[u8]) {
        let refused = |this: &Self, reason: String| {
            lock(&this.handles.stats).command_envelopes_refused += 1;
            tracing::warn!(meter = %this.meter, %reason, "command envelope refused");
        };
        match schema::open_commands(&self.key, &self.meter, payload) {
            Err(e) => refused(self, e.to_string()),
            Ok((header, commands)) => match self.down_window.accept(header.boot_id, header.seq) {
                Verdict::Fresh => {
                    self.save_window();
                    lock(&self.handles.stats).command_envelopes += 1;
                    if self.commands.try_send(commands).is_err() {
                        refused(self, "command queue full".into());
                    }
                }
                verdict => refused(
                    self,
                    format!(
                        "replayed command envelope ({}, {}): {verdict:?}",
                        header.boot_id, header.seq
                    ),
                ),
            },
        }
    }

    /// Clean shutdown: `offline` (retained) then DISCONNECT, so the will is not needed.
    async fn close(&self, client: &AsyncClient, eventloop: &mut EventLoop, status: &str) {
        let _ = client.try_publish(status, QoS::AtLeastOnce, true, "offline");
        let _ = client.try_disconnect();
        let deadline = tokio::time::sleep(Duration::from_secs(2));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                event = eventloop.poll() => match event {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
                    Ok(_) => {}
                },
            }
        }
    }
}

/// The next envelope a neighbour handed over; pending forever when this meter forwards for
/// nobody (or the forwarder is gone).
async fn next_relay_request(
    requests: &mut Option<mpsc::Receiver<RelayRequest>>,
) -> Option<RelayRequest> {
    match requests {
        Some(rx) => match rx.recv().await {
            Some(r) => Some(r),
            None => {
                *requests = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => {
            format!("broker refused the connection: {code:?}")
        }
        ConnectionError::Tls(e) => format!("tls: {e}"),
        other => other.to_string(),
    }
}
