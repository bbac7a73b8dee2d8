//! The embedded MQTT broker: MQTT 3.1.1 over mutual TLS, the per-meter topic ACL bound to the
//! certificate name, and a privileged in-process path for the server itself (DESIGN §3.3).
//!
//! # Why our own focused broker
//! Measured on the 2-core build machine (see the commit and BENCHMARKS.md): `rmqtt` 0.24 pulls
//! 271 crates into the build (QUIC via quinn, prost, its plugin system), `rumqttd` 0.20 293 and
//! has no per-client ACL; this broker adds **no** crate the agent does not already build
//! (rumqttc's MQTT 3.1.1 codec, tokio-rustls, rustls/ring). What wattline needs from a broker is
//! narrow — meters publish on three of their own topics and read one, the server consumes
//! everything — and the security-relevant parts are exactly the parts we must control:
//! identity from the verified certificate, an exact-topic ACL, and when a meter gets its PUBACK.
//!
//! # What it does
//! - **TLS 1.2/1.3, client certificate required**, verified against the meter CA; the subject
//!   common name is the meter id. No certificate, another CA, or a name that is not a valid
//!   meter id: the handshake or the session is refused and counted. A plain TCP listener exists
//!   only when configured explicitly ([`Transport::PlainInsecure`]) and logs a warning; there the
//!   MQTT client id is the (unauthenticated) identity.
//! - **ACL**: a meter may publish only `wattline/v1/m/{own id}/up|relay|status` and subscribe
//!   only to its own `down` ([`acl`]). A violation is refused, logged, counted, and the
//!   connection closed (for a subscribe, after a SUBACK with the failure code).
//! - **QoS 1, PUBACK after the commit**: every `up`/`relay`/`status` message becomes a
//!   [`Delivery`] for the ingest pipeline; the meter's PUBACK is sent only when ingest
//!   acknowledges it after committing, in the order the PUBLISHes arrived (MQTT 3.1.1 §4.6).
//!   We chose this over "broker keeps the message until the commit" because the meter's disk
//!   outbox already keeps every record until its PUBACK: the PUBACK then means *stored*, the
//!   broker needs no persistence of its own, and a server crash at any moment loses nothing —
//!   the meter resends what was not acknowledged and ingest dedups on `(boot_id, seq)`.
//!   At most `max_unacked_per_connection` PUBLISHes wait per connection; beyond that the broker
//!   stops reading that socket, and a full ingest channel stops every reader: overload turns
//!   into TCP back-pressure on the meters, never into drops.
//! - **Revocation**: a certificate whose serial, or a meter that, is on the
//!   [`RevocationList`] is refused right after the handshake; a live session closes as soon as
//!   the list names it (counted as `revoked_refused` / `revoked_closed`).
//! - **Flood limit**: each connection has a token bucket of PUBLISHes
//!   (`max_publishes_per_s`, `publish_burst`); a client above it is throttled by no longer
//!   reading its socket, counted as `rate_limited`, while other connections are unaffected.
//!   Oversized packets (`max_packet_bytes`) and malformed ones close the connection.
//! - **Retained status and last will**: `status` messages with the retain flag are kept (one per
//!   meter) and the will is published when a connection ends without DISCONNECT.
//! - **Commands**: [`BrokerHandle::publish_down`] sends a sealed command to a connected meter
//!   subscribed to its `down` at QoS 1 and reports the meter's PUBACK (the DELIVERED state).
//!
//! Not supported, on purpose: QoS 2 (refused), persistent sessions (every session starts clean;
//! the meter's outbox and the server's command queue are the durable state), MQTT 5, wildcard
//! subscriptions by meters.

mod acl;
mod cert;
mod connection;
mod revocation;
mod tls;

pub use acl::{may_publish, may_subscribe};
pub use cert::{common_name, serial_hex};
pub use revocation::RevocationList;
pub use tls::server_config;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use schema::MeterId;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::source::Delivery;

/// An error of the MQTT side (broker, sources, certificates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttError {
    kind: MqttErrorKind,
}

/// What went wrong. New variants may be added.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MqttErrorKind {
    /// A certificate, key or TLS setting could not be used.
    Certificate(String),
    /// The listen address could not be bound.
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        detail: String,
    },
    /// The meter is not connected or has not subscribed to its `down` topic.
    NotConnected(MeterId),
    /// The connection to the meter ended before it acknowledged.
    NotDelivered(MeterId),
    /// A configuration value is out of range.
    Config(String),
    /// The ingest pipeline or the broker has stopped.
    Closed,
}

impl MqttError {
    pub(crate) fn new(kind: MqttErrorKind) -> Self {
        Self { kind }
    }

    /// What went wrong.
    pub fn kind(&self) -> &MqttErrorKind {
        &self.kind
    }
}

impl fmt::Display for MqttError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            MqttErrorKind::Certificate(why) => write!(f, "tls: {why}"),
            MqttErrorKind::Bind { addr, detail } => write!(f, "cannot listen on {addr}: {detail}"),
            MqttErrorKind::NotConnected(m) => {
                write!(
                    f,
                    "meter {m} is not connected or not subscribed to its down topic"
                )
            }
            MqttErrorKind::NotDelivered(m) => {
                write!(f, "meter {m} disconnected before acknowledging")
            }
            MqttErrorKind::Config(why) => write!(f, "broker config: {why}"),
            MqttErrorKind::Closed => write!(f, "the broker or the ingest pipeline has stopped"),
        }
    }
}

impl std::error::Error for MqttError {}

/// How meters reach the broker.
#[derive(Clone)]
pub enum Transport {
    /// TLS with client certificates required (see [`server_config`]).
    Tls(Arc<rustls::ServerConfig>),
    /// Plain TCP: no encryption, the client id is trusted as the identity. Tests and closed lab
    /// networks only; starting it logs a warning.
    PlainInsecure,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Tls(_) => "Tls",
            Transport::PlainInsecure => "PlainInsecure",
        })
    }
}

/// Broker settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where to listen (port 0 picks a free port; see [`BrokerHandle::local_addr`]).
    pub listen: SocketAddr,
    /// TLS (the default everywhere) or explicitly insecure plain TCP.
    pub transport: Transport,
    /// Largest MQTT packet accepted: a maximal envelope plus topic and header room.
    pub max_packet_bytes: usize,
    /// PUBLISHes per connection waiting for the ingest commit; more stop reading the socket.
    pub max_unacked_per_connection: usize,
    /// Time allowed for the TLS handshake plus CONNECT.
    pub connect_timeout: Duration,
    /// A write to a meter that does not complete in this time closes its connection.
    pub write_timeout: Duration,
    /// Revoked certificates and meters: refused right after the TLS handshake, and live
    /// sessions close when their certificate or meter is revoked (see
    /// [`crate::keystore::KeyStore::revocations`]).
    pub revocations: Arc<RevocationList>,
    /// PUBLISHes per second one connection may send on average; beyond that the broker stops
    /// reading its socket until the bucket refills (a flood slows its sender, nobody else).
    /// The agent sends at most 10 per second by default.
    pub max_publishes_per_s: u32,
    /// PUBLISHes a connection may send in a burst above the average (outbox catch-up).
    pub publish_burst: u32,
}

impl BrokerConfig {
    /// TLS on `listen` with the defaults.
    pub fn tls(listen: SocketAddr, tls: Arc<rustls::ServerConfig>) -> Self {
        Self {
            listen,
            transport: Transport::Tls(tls),
            max_packet_bytes: schema::MAX_ENVELOPE_BYTES + 1024,
            max_unacked_per_connection: 64,
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            revocations: Arc::new(RevocationList::new()),
            max_publishes_per_s: 50,
            publish_burst: 200,
        }
    }

    fn validate(&self) -> Result<(), MqttError> {
        let bad = |why: &str| Err(MqttError::new(MqttErrorKind::Config(why.to_owned())));
        if self.max_packet_bytes < 1024 {
            return bad("max_packet_bytes must be at least 1024");
        }
        if !(1..=65_535).contains(&self.max_unacked_per_connection) {
            return bad("max_unacked_per_connection must be 1 to 65535");
        }
        if self.connect_timeout.is_zero() || self.write_timeout.is_zero() {
            return bad("timeouts must be positive");
        }
        if self.max_publishes_per_s == 0 || self.publish_burst == 0 {
            return bad("max_publishes_per_s and publish_burst must be positive");
        }
        Ok(())
    }
}

/// Broker counters (also exported through the `metrics` facade as
/// `wattline_broker_*_total`).
#[derive(Debug, Default)]
pub struct BrokerStats {
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connected: AtomicU64,
    pub(crate) tls_refused: AtomicU64,
    pub(crate) identity_refused: AtomicU64,
    pub(crate) connect_refused: AtomicU64,
    pub(crate) acl_denied_publish: AtomicU64,
    pub(crate) acl_denied_subscribe: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
    pub(crate) keepalive_timeouts: AtomicU64,
    pub(crate) takeovers: AtomicU64,
    pub(crate) publishes_received: AtomicU64,
    pub(crate) pubacks_sent: AtomicU64,
    pub(crate) ingest_retries: AtomicU64,
    pub(crate) wills_published: AtomicU64,
    pub(crate) down_published: AtomicU64,
    pub(crate) down_acked: AtomicU64,
    pub(crate) revoked_refused: AtomicU64,
    pub(crate) revoked_closed: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BrokerStatsSnapshot {
    /// TCP connections accepted.
    pub connections_accepted: u64,
    /// Sessions connected now.
    pub connected: u64,
    /// TLS handshakes that failed (no client certificate, unknown CA, bad TLS).
    pub tls_refused: u64,
    /// Verified certificates whose common name is not a valid meter id, or a client id that
    /// differs from the certificate name.
    pub identity_refused: u64,
    /// CONNECTs refused (protocol level, will topic outside the ACL, timeout).
    pub connect_refused: u64,
    /// PUBLISHes refused by the ACL.
    pub acl_denied_publish: u64,
    /// SUBSCRIBEs refused by the ACL.
    pub acl_denied_subscribe: u64,
    /// Malformed or unsupported packets (QoS 2, oversized, wildcard topic, ...).
    pub protocol_errors: u64,
    /// Connections closed because the keep-alive expired.
    pub keepalive_timeouts: u64,
    /// Sessions replaced by a newer connection of the same meter.
    pub takeovers: u64,
    /// PUBLISHes accepted from meters.
    pub publishes_received: u64,
    /// PUBACKs sent after the ingest commit.
    pub pubacks_sent: u64,
    /// Deliveries ingest gave back uncommitted (the connection was closed for a resend).
    pub ingest_retries: u64,
    /// Last wills published.
    pub wills_published: u64,
    /// Commands published on `down`.
    pub down_published: u64,
    /// Commands the meter acknowledged.
    pub down_acked: u64,
    /// Connections refused because their certificate or meter is revoked.
    pub revoked_refused: u64,
    /// Live sessions closed because their certificate or meter was revoked.
    pub revoked_closed: u64,
    /// Times a connection was throttled for publishing faster than its limit.
    pub rate_limited: u64,
}

impl BrokerStats {
    fn snapshot(&self) -> BrokerStatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BrokerStatsSnapshot {
            connections_accepted: g(&self.connections_accepted),
            connected: g(&self.connected),
            tls_refused: g(&self.tls_refused),
            identity_refused: g(&self.identity_refused),
            connect_refused: g(&self.connect_refused),
            acl_denied_publish: g(&self.acl_denied_publish),
            acl_denied_subscribe: g(&self.acl_denied_subscribe),
            protocol_errors: g(&self.protocol_errors),
            keepalive_timeouts: g(&self.keepalive_timeouts),
            takeovers: g(&self.takeovers),
            publishes_received: g(&self.publishes_received),
            pubacks_sent: g(&self.pubacks_sent),
            ingest_retries: g(&self.ingest_retries),
            wills_published: g(&self.wills_published),
            down_published: g(&self.down_published),
            down_acked: g(&self.down_acked),
            revoked_refused: g(&self.revoked_refused),
            revoked_closed: g(&self.revoked_closed),
            rate_limited: g(&self.rate_limited),
        }
    }
}

/// Counts a refusal in the stats and in the metrics facade.
pub(crate) fn count_refusal(counter: &AtomicU64, reason: &'static str) {
    counter.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("wattline_broker_refused_total", "reason" => reason).increment(1);
}

/// A message for a connected meter.
pub(crate) enum Outbound {
    /// A sealed command on the meter's `down`; `delivered` fires on its PUBACK.
    Down {
        payload: Bytes,
        delivered: oneshot::Sender<()>,
    },
    /// A newer connection of the same meter replaced this one.
    TakenOver,
}

pub(crate) struct SessionEntry {
    pub(crate) connection: u64,
    pub(crate) outbound: mpsc::Sender<Outbound>,
    pub(crate) down_subscribed: bool,
}

/// State shared by the accept loop, the connections and the handle.
pub(crate) struct Shared {
    pub(crate) config: BrokerConfig,
    pub(crate) ingest: mpsc::Sender<Delivery>,
    pub(crate) sessions: Mutex<HashMap<MeterId, SessionEntry>>,
    pub(crate) retained: Mutex<BTreeMap<String, Bytes>>,
    pub(crate) stats: BrokerStats,
    next_connection: AtomicU64,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // No code path panics while holding these locks; recover rather than take the broker down.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The running broker.
pub struct BrokerHandle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for BrokerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerHandle")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// Starts the broker: binds `config.listen` and hands every accepted meter message to `ingest`.
pub async fn start(
    config: BrokerConfig,
    ingest: mpsc::Sender<Delivery>,
) -> Result<BrokerHandle, MqttError> {
    config.validate()?;
    let listener = TcpListener::bind(config.listen).await.map_err(|e| {
        MqttError::new(MqttErrorKind::Bind {
            addr: config.listen,
            detail: e.to_string(),
        })
    })?;
    let local_addr = listener.local_addr().map_err(|e| {
        MqttError::new(MqttErrorKind::Bind {
            addr: config.listen,
            detail: e.to_string(),
        })
    })?;
    match &config.transport {
        Transport::Tls(_) => {
            tracing::info!(%local_addr, "mqtt broker listening (tls, client certificates required)")
        }
        Transport::PlainInsecure => tracing::warn!(
            %local_addr,
            "mqtt broker listening on PLAIN TCP: no encryption, client ids are trusted as meter \
             identities; use only on a closed test network"
        ),
    }
    let shared = Arc::new(Shared {
        config,
        ingest,
        sessions: Mutex::new(HashMap::new()),
        retained: Mutex::new(BTreeMap::new()),
        stats: BrokerStats::default(),
        next_connection: AtomicU64::new(1),
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let accept_task = tokio::spawn(accept_loop(shared.clone(), listener, shutdown_rx));
    Ok(BrokerHandle {
        shared,
        local_addr,
        shutdown,
        accept_task,
    })
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = match &shared.config.transport {
        Transport::Tls(cfg) => Some(tokio_rustls::TlsAcceptor::from(cfg.clone())),
        Transport::PlainInsecure => None,
    };
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    shared.stats.connections_accepted.fetch_add(1, Ordering::Relaxed);
                    let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection::serve(
                        shared.clone(),
                        id,
                        stream,
                        peer,
                        acceptor.clone(),
                        shutdown.clone(),
                    ));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "mqtt accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

impl BrokerHandle {
    /// The address the broker listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters now.
    pub fn stats(&self) -> BrokerStatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// The retained message on `topic` (meter status), if any.
    pub fn retained(&self, topic: &str) -> Option<Bytes> {
        lock(&self.shared.retained).get(topic).cloned()
    }

    /// Meters connected now, sorted.
    pub fn connected_meters(&self) -> Vec<MeterId> {
        let mut meters: Vec<MeterId> = lock(&self.shared.sessions).keys().cloned().collect();
        meters.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        meters
    }

    /// Publishes a sealed command envelope on `meter`'s `down` topic at QoS 1. Completes when
    /// the meter acknowledged it (DELIVERED); fails when the meter is not connected and
    /// subscribed (the command stays QUEUED) or disconnects first.
    pub async fn publish_down(&self, meter: &MeterId, payload: Bytes) -> Result<(), MqttError> {
        let outbound = {
            let sessions = lock(&self.shared.sessions);
            match sessions.get(meter) {
                Some(s) if s.down_subscribed => s.outbound.clone(),
                _ => {
                    return Err(MqttError::new(MqttErrorKind::NotConnected(meter.clone())));
                }
            }
        };
        let (delivered, ack) = oneshot::channel();
        outbound
            .send(Outbound::Down { payload, delivered })
            .await
            .map_err(|_| MqttError::new(MqttErrorKind::NotConnected(meter.clone())))?;
        ack.await
            .map_err(|_| MqttError::new(MqttErrorKind::NotDelivered(meter.clone())))
    }

    /// Stops accepting, closes every connection (without publishing wills) and waits for the
    /// accept loop to end.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.accept_task.await;
    }
}
