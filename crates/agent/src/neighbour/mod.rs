//! The neighbour link (DESIGN §1 "Relay", seed 002 "Routed"): when a meter's own uplink is
//! down, it hands its sealed envelopes to a neighbouring meter, which publishes them unread on
//! its own `wattline/v1/m/{forwarder}/relay` topic.
//!
//! - **Transport**: TLS with the meters' uplink certificates on both sides ([`tls`]), frames
//!   of [`frame`] (length-prefixed, versioned, bounded).
//! - **Forwarder** ([`Forwarder`], `[neighbour] listen`): learns the origin meter from its
//!   certificate's common name and refuses an envelope whose header names another meter. It
//!   reads only the header — it holds no key for the body. Each envelope is handed to its own
//!   uplink, published with QoS 1 on `relay`, and acknowledged to the origin only after its
//!   broker's PUBACK; otherwise it answers with a refusal and a reason. It bounds what it
//!   holds (bytes pending, connections, envelopes per second per neighbour) and counts what it
//!   forwarded and refused, per origin, in the status file.
//! - **Origin** (`[neighbour] via`, the routing in `route`): when its own uplink has failed
//!   for `after_s`, the uplink drains the outbox through the first neighbour that works, and
//!   removes records only when the neighbour acknowledged them; it keeps retrying its own
//!   uplink with the usual backoff and uses it again as soon as it connects. A record
//!   forwarded and then sent again on `up` is a duplicate, which ingest drops on
//!   `(meter, boot_id, seq)`; nothing is removed without an acknowledgement, so nothing is lost.

pub mod frame;
mod route;
pub mod tls;

pub(crate) use route::{RouteContext, RouteEnd, Router};

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use schema::{Direction, Envelope, MeterId};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use crate::uplink::{LinkState, UplinkStats};
use frame::Frame;

/// The `[neighbour]` section (named so it is not confused with the power relay).
///
/// ```toml
/// [neighbour]
/// listen = "127.0.0.1:7401"                              # forward for neighbours
/// via = [{ meter = "house-8", addr = "192.168.1.8:7401" }] # route through them
/// after_s = 30
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeighbourConfig {
    /// Address on which this meter accepts envelopes of neighbours and forwards them on its
    /// `relay` topic; absent means it forwards for nobody.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Neighbours to route through when the own uplink fails, in order of preference. The
    /// neighbour's certificate must carry `meter` as its common name.
    #[serde(default)]
    pub via: Vec<NeighbourPeer>,
    /// Seconds the own uplink must have been failing before routing through a neighbour
    /// (default 30).
    #[serde(default = "default_after_s")]
    pub after_s: u64,
    /// Forwarder: envelopes accepted per second from one neighbour at most (default 20).
    #[serde(default = "default_max_envelopes_per_s")]
    pub max_envelopes_per_s: f64,
    /// Forwarder: bytes of envelopes accepted and not yet acknowledged by its broker, over all
    /// neighbours (default 4 MiB); beyond that it refuses with "busy".
    #[serde(default = "default_max_pending_bytes")]
    pub max_pending_bytes: usize,
    /// Forwarder: neighbour connections at once at most (default 16).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds to wait for an acknowledgement, on both sides (default 30).
    #[serde(default = "default_ack_timeout_s")]
    pub ack_timeout_s: u64,
}

/// One neighbour to route through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeighbourPeer {
    /// The neighbour's meter id (its certificate's common name).
    pub meter: MeterId,
    /// `HOST:PORT` of its `listen` address.
    pub addr: String,
}

const fn default_after_s() -> u64 {
    30
}
const fn default_max_envelopes_per_s() -> f64 {
    20.0
}
const fn default_max_pending_bytes() -> usize {
    4 * 1024 * 1024
}
const fn default_max_connections() -> usize {
    16
}
const fn default_ack_timeout_s() -> u64 {
    30
}

impl NeighbourConfig {
    /// Range checks; the message names the field.
    pub fn validate(&self, own: &MeterId) -> Result<(), String> {
        if self.listen.is_none() && self.via.is_empty() {
            return Err("neighbour: set listen (forward for neighbours) or via (route through them), or remove the section".into());
        }
        for (i, peer) in self.via.iter().enumerate() {
            let port = peer
                .addr
                .rsplit_once(':')
                .filter(|(host, _)| !host.is_empty())
                .and_then(|(_, port)| port.parse::<u16>().ok())
                .filter(|p| *p != 0);
            if port.is_none() {
                return Err(format!(
                    "neighbour.via[{i}].addr must be HOST:PORT, found {:?}",
                    peer.addr
                ));
            }
            if &peer.meter == own {
                return Err(format!(
                    "neighbour.via[{i}].meter is this meter ({own}): a meter cannot route through itself"
                ));
            }
        }
        if !(self.max_envelopes_per_s.is_finite() && self.max_envelopes_per_s > 0.0) {
            return Err("neighbour.max_envelopes_per_s must be a positive number".into());
        }
        if self.max_pending_bytes < schema::MAX_ENVELOPE_BYTES {
            return Err(format!(
                "neighbour.max_pending_bytes must be at least one envelope ({} bytes)",
                schema::MAX_ENVELOPE_BYTES
            ));
        }
        if self.max_connections == 0 {
            return Err("neighbour.max_connections must be at least 1".into());
        }
        if self.ack_timeout_s == 0 {
            return Err("neighbour.ack_timeout_s must be positive".into());
        }
        Ok(())
    }
}

/// An envelope the forwarder hands to its uplink for `relay`; `reply` fires after the PUBACK.
#[derive(Debug)]
pub struct RelayRequest {
    /// The origin's sealed envelope, as received.
    pub envelope: Vec<u8>,
    /// The origin meter (certificate and header agree).
    pub origin: MeterId,
    /// Sent when the forwarder's broker acknowledged the publish; dropped when it did not.
    pub reply: oneshot::Sender<()>,
}

/// The forwarder's counters, in the status file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ForwarderStats {
    /// The listen address.
    pub listen: String,
    /// Neighbour connections open now.
    pub connections: u64,
    /// Envelopes forwarded (broker acknowledged), per origin meter.
    pub forwarded: BTreeMap<String, u64>,
    /// Envelopes refused, per origin meter (or peer address before the handshake).
    pub refused: BTreeMap<String, u64>,
    /// The last refusal, with its reason.
    pub last_refusal: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A token bucket per origin meter: `rate` per second, bursts up to `rate` (at least one).
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: rate.max(1.0),
            at: now,
        }
    }

    /// Takes one token at `now` if there is one.
    fn take(&mut self, rate: f64, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * rate;
        self.tokens = (self.tokens + refill).min(rate.max(1.0));
        self.at = now.max(self.at);
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// The forwarding side of the neighbour link.
pub struct Forwarder {
    config: NeighbourConfig,
    meter: MeterId,
    tls: tokio_rustls::TlsAcceptor,
    relay: mpsc::Sender<RelayRequest>,
    uplink: Arc<Mutex<UplinkStats>>,
    stats: Arc<Mutex<ForwarderStats>>,
    pending_bytes: Arc<Semaphore>,
    buckets: Mutex<HashMap<MeterId, Bucket>>,
}

/// Per connection: frames read and not yet answered at most (backpressure on the origin).
const MAX_UNANSWERED_PER_CONNECTION: usize = 16;
/// A neighbour connection with no frame for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Time for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Forwarder {
    /// Binds `config.listen` and prepares TLS from the uplink's files. `relay` goes to this
    /// meter's uplink; `uplink` is its live state (a forwarder without an uplink refuses).
    pub async fn bind(
        config: &NeighbourConfig,
        meter: MeterId,
        uplink_config: &crate::uplink::UplinkConfig,
        relay: mpsc::Sender<RelayRequest>,
        uplink: Arc<Mutex<UplinkStats>>,
    ) -> Result<(Arc<Forwarder>, TcpListener), String> {
        let listen = config
            .listen
            .ok_or("neighbour.listen is not set: nothing to bind")?;
        crate::uplink::install_crypto_provider();
        let tls = tls::server_config(
            &uplink_config.ca_file,
            &uplink_config.cert_file,
            &uplink_config.key_file,
        )?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| format!("neighbour.listen {listen}: {e}"))?;
        let bound = listener.local_addr().map_or(listen, |a| a);
        let stats = ForwarderStats {
            listen: bound.to_string(),
            ..ForwarderStats::default()
        };
        let forwarder = Forwarder {
            pending_bytes: Arc::new(Semaphore::new(config.max_pending_bytes)),
            config: config.clone(),
            meter,
            tls: tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
            relay,
            uplink,
            stats: Arc::new(Mutex::new(stats)),
            buckets: Mutex::new(HashMap::new()),
        };
        Ok((Arc::new(forwarder), listener))
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<Mutex<ForwarderStats>> {
        self.stats.clone()
    }

    /// Accepts neighbours until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        if lock(&self.stats).connections >= self.config.max_connections as u64 {
                            tracing::warn!(%peer, "neighbour connection refused: too many connections");
                            continue;
                        }
                        lock(&self.stats).connections += 1;
                        let this = self.clone();
                        let shutdown = shutdown.clone();
                        tokio::spawn(async move {
                            if let Err(e) = this.connection(stream, peer, shutdown).await {
                                tracing::warn!(%peer, error = %e, "neighbour connection ended");
                            }
                            lock(&this.stats).connections -= 1;
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "neighbour accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }

    fn count_refusal(&self, origin: &str, reason: &str) {
        let mut stats = lock(&self.stats);
        *stats.refused.entry(origin.to_owned()).or_default() += 1;
        stats.last_refusal = Some(format!("{origin}: {reason}"));
        tracing::warn!(origin, reason, "neighbour envelope refused");
    }

    async fn connection(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), String> {
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.tls.accept(stream))
            .await
            .map_err(|_| "tls handshake timed out".to_owned())?
            .map_err(|e| format!("tls: {e}"))?;
        let cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or("no client certificate")?;
        let origin = tls::common_name(cert)
            .and_then(|cn| MeterId::parse(&cn).map_err(|e| format!("certificate name: {e}")))?;
        tracing::info!(%peer, %origin, "neighbour connected");
        let (mut reader, mut writer) = tokio::io::split(tls);
        let (replies_tx, mut replies_rx) = mpsc::channel::<Frame>(MAX_UNANSWERED_PER_CONNECTION);
        let write_task = tokio::spawn(async move {
            while let Some(frame) = replies_rx.recv().await {
                let Ok(bytes) = frame.encode() else { continue };
                if writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err() {
                    return;
                }
            }
            let _ = writer.shutdown().await;
        });
        let unanswered = Arc::new(Semaphore::new(MAX_UNANSWERED_PER_CONNECTION));
        let result = loop {
            let Ok(slot) = unanswered.clone().acquire_owned().await else {
                break Ok(());
            };
            let frame = tokio::select! {
                _ = shutdown.changed() => break Ok(()),
                read = tokio::time::timeout(IDLE_TIMEOUT, frame::read_frame(&mut reader)) => read,
            };
            let frame = match frame {
                Err(_) => break Err("idle for too long".to_owned()),
                Ok(Ok(None)) => break Ok(()),
                Ok(Err(e))
                    if e.get_ref()
                        .and_then(|e| e.downcast_ref::<frame::FrameError>())
                        .is_none() =>
                {
                    // The connection failed (reset, cut mid-frame): nothing to answer.
                    break Err(e.to_string());
                }
                Ok(Err(e)) => {
                    // A malformed frame ends the connection: framing is lost after it.
                    let reason = e.to_string();
                    self.count_refusal(origin.as_str(), &reason);
                    let _ = replies_tx
                        .send(Frame::Refused {
                            id: 0,
                            reason: reason.clone(),
                        })
                        .await;
                    break Err(reason);
                }
                Ok(Ok(Some(frame))) => frame,
            };
            let Frame::Envelope { id, bytes } = frame else {
                let reason = format!("frame {} is not an envelope", frame.id());
                self.count_refusal(origin.as_str(), &reason);
                let _ = replies_tx
                    .send(Frame::Refused {
                        id: frame.id(),
                        reason: reason.clone(),
                    })
                    .await;
                break Err(reason);
            };
            match self.admit(&origin, &bytes) {
                Err(reason) => {
                    self.count_refusal(origin.as_str(), &reason);
                    let _ = replies_tx.send(Frame::Refused { id, reason }).await;
                }
                Ok(permit) => {
                    let this = self.clone();
                    let origin = origin.clone();
                    let replies = replies_tx.clone();
                    tokio::spawn(async move {
                        let answer = match this.forward(&origin, bytes).await {
                            Ok(()) => {
                                *lock(&this.stats)
                                    .forwarded
                                    .entry(origin.to_string())
                                    .or_default() += 1;
                                Frame::Ack { id }
                            }
                            Err(reason) => {
                                this.count_refusal(origin.as_str(), &reason);
                                Frame::Refused { id, reason }
                            }
                        };
                        drop(permit);
                        let _ = replies.send(answer).await;
                        drop(slot);
                    });
                }
            }
        };
        drop(replies_tx);
        // Answers still being waited for are written by their tasks before the writer ends.
        let _ = tokio::time::timeout(
            Duration::from_secs(self.config.ack_timeout_s + 1),
            write_task,
        )
        .await;
        result
    }

    /// Checks an envelope before taking it: whose it is (header only: the body is sealed for
    /// the server), whether this meter can forward now, and the bounds.
    fn admit(
        &self,
        origin: &MeterId,
        bytes: &[u8],
    ) -> Result<tokio::sync::OwnedSemaphorePermit, String> {
        let envelope = Envelope::parse(bytes).map_err(|e| format!("not a sealed envelope: {e}"))?;
        let header = envelope.header();
        if &header.meter != origin {
            return Err(format!(
                "envelope of meter {} handed over by meter {origin}: a meter may hand over only its own envelopes",
                header.meter
            ));
        }
        if header.dir != Direction::Up {
            return Err("not an uplink envelope".into());
        }
        if !matches!(lock(&self.uplink).link, LinkState::Connected) {
            return Err(format!(
                "forwarder {} has no uplink connection itself",
                self.meter
            ));
        }
        {
            let rate = self.config.max_envelopes_per_s;
            let mut buckets = lock(&self.buckets);
            let now = Instant::now();
            let bucket = buckets
                .entry(origin.clone())
                .or_insert_with(|| Bucket::full(rate, now));
            if !bucket.take(rate, now) {
                return Err(format!("rate limit of {rate} envelopes per second"));
            }
        }
        let size = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.pending_bytes
            .clone()
            .try_acquire_many_owned(size)
            .map_err(|_| "forwarder busy: too many bytes waiting for its broker".to_owned())
    }

    /// Hands the envelope to the uplink and waits for its broker's PUBACK.
    async fn forward(&self, origin: &MeterId, envelope: Vec<u8>) -> Result<(), String> {
        let (reply, acked) = oneshot::channel();
        let request = RelayRequest {
            envelope,
            origin: origin.clone(),
            reply,
        };
        let timeout = Duration::from_secs(self.config.ack_timeout_s);
        self.relay
            .try_send(request)
            .map_err(|_| "forwarder busy: its uplink queue is full".to_owned())?;
        match tokio::time::timeout(timeout, acked).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(format!(
                "forwarder {}'s uplink lost the connection before its broker acknowledged",
                self.meter
            )),
            Err(_) => Err(format!(
                "forwarder {}'s broker did not acknowledge within {} s",
                self.meter, self.config.ack_timeout_s
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NeighbourConfig, String> {
        toml::from_str::<NeighbourConfig>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_rate_limit_allows_a_burst_of_one_second_then_the_rate() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut bucket = Bucket::full(5.0, t0);
        let burst = (0..10).filter(|_| bucket.take(5.0, t0)).count();
        assert_eq!(burst, 5);
        // One token every 200 ms after that, never more than the burst saved up.
        assert!(!bucket.take(5.0, at(150)));
        assert!(bucket.take(5.0, at(210)));
        assert!(!bucket.take(5.0, at(300)));
        let later = (0..10).filter(|_| bucket.take(5.0, at(60_000))).count();
        assert_eq!(later, 5);
        // A rate below one per second still lets one envelope through, then waits.
        let mut slow = Bucket::full(0.5, t0);
        assert!(slow.take(0.5, t0));
        assert!(!slow.take(0.5, at(1_000)));
        assert!(slow.take(0.5, at(2_100)));
        // A clock read out of order (an earlier `now`) neither refills nor panics.
        assert!(!slow.take(0.5, t0));
    }

    #[test]
    fn validation_errors_name_the_field() {
        let own = MeterId::parse("house-7").unwrap();
        let cases = [
            ("", "set listen"),
            (
                "via = [{ meter = \"house-8\", addr = \"127.0.0.1\" }]",
                "neighbour.via[0].addr must be HOST:PORT",
            ),
            (
                "via = [{ meter = \"house-8\", addr = \":7401\" }]",
                "neighbour.via[0].addr",
            ),
            (
                "via = [{ meter = \"house-7\", addr = \"h:7401\" }]",
                "neighbour.via[0].meter is this meter",
            ),
            (
                "listen = \"127.0.0.1:7401\"\nmax_envelopes_per_s = 0",
                "neighbour.max_envelopes_per_s",
            ),
            (
                "listen = \"127.0.0.1:7401\"\nmax_pending_bytes = 10",
                "neighbour.max_pending_bytes",
            ),
            (
                "listen = \"127.0.0.1:7401\"\nack_timeout_s = 0",
                "neighbour.ack_timeout_s",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap().validate(&own).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
        let ok = parse(
            "listen = \"127.0.0.1:7401\"\nvia = [{ meter = \"house-8\", addr = \"192.168.1.8:7401\" }]",
        )
        .unwrap();
        ok.validate(&own).unwrap();
        assert_eq!(ok.after_s, 30);
        assert!(parse("listen = \"nowhere\"").is_err());
        assert!(
            parse("lisen = \"127.0.0.1:7401\"")
                .unwrap_err()
                .contains("lisen")
        );
    }
}
