//! The origin side: drains the outbox through a neighbour while the own uplink is down.
//!
//! Same rules as the uplink: batches sealed with the meter's own key (the neighbour sees only
//! ciphertext), at most `max_inflight` envelopes unacknowledged, the outbox acknowledged up to
//! the longest acknowledged prefix, and a rewind to the first unacknowledged record at the
//! start of every session, so whatever was in flight when a session ended is sent again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use schema::{Batch, MeterId, MeterKey};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

use super::frame::{self, Frame};
use super::{NeighbourConfig, NeighbourPeer, tls};
use crate::uplink::{LinkState, UplinkConfig, UplinkHandles};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a routing period ended.
#[derive(Debug)]
pub(crate) enum RouteEnd {
    /// Shutdown was signalled.
    Shutdown,
    /// A neighbour carried the outbox until the deadline.
    Routed,
    /// No neighbour could be used: one reason per neighbour.
    NoneWorked(String),
}

/// Routing through the configured neighbours.
pub(crate) struct Router {
    peers: Vec<(NeighbourPeer, tokio_rustls::TlsConnector)>,
    /// How long the own uplink must have been failing first.
    pub(crate) after: Duration,
    ack_timeout: Duration,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Router {
    /// `None` when no neighbour is configured to route through.
    pub(crate) fn new(
        config: &NeighbourConfig,
        uplink: &UplinkConfig,
    ) -> Result<Option<Router>, String> {
        if config.via.is_empty() {
            return Ok(None);
        }
        let mut peers = Vec::new();
        for peer in &config.via {
            let tls = tls::client_config(
                &uplink.ca_file,
                &uplink.cert_file,
                &uplink.key_file,
                &peer.meter,
            )?;
            peers.push((
                peer.clone(),
                tokio_rustls::TlsConnector::from(Arc::new(tls)),
            ));
        }
        Ok(Some(Router {
            peers,
            after: Duration::from_secs(config.after_s),
            ack_timeout: Duration::from_secs(config.ack_timeout_s),
        }))
    }

    /// Routes through the first neighbour that works until `until`; `own` is why the own
    /// uplink is down (shown in the status).
    pub(crate) async fn route(
        &self,
        ctx: &RouteContext<'_>,
        own: &str,
        until: Instant,
        shutdown: &mut watch::Receiver<bool>,
    ) -> RouteEnd {
        let mut reasons = Vec::new();
        for (peer, connector) in &self.peers {
            if Instant::now() >= until {
                break;
            }
            match self
                .session(ctx, peer, connector, own, until, shutdown)
                .await
            {
                Ok(true) => return RouteEnd::Routed,
                Ok(false) => return RouteEnd::Shutdown,
                Err(reason) => {
                    tracing::warn!(meter = %ctx.meter, neighbour = %peer.meter, addr = %peer.addr, %reason, "routing through neighbour failed");
                    lock(&ctx.handles.stats).neighbour_failures += 1;
                    reasons.push(format!("{} ({}): {reason}", peer.meter, peer.addr));
                }
            }
        }
        RouteEnd::NoneWorked(reasons.join("; "))
    }

    /// One connection to `peer`: `Ok(true)` at the deadline, `Ok(false)` on shutdown.
    async fn session(
        &self,
        ctx: &RouteContext<'_>,
        peer: &NeighbourPeer,
        connector: &tokio_rustls::TlsConnector,
        own: &str,
        until: Instant,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<bool, String> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&peer.addr))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| format!("connect: {e}"))?;
        // Meter ids are valid DNS labels; the verifier checks the certificate's common name.
        let name = ServerName::try_from(peer.meter.to_string())
            .map_err(|e| format!("neighbour name: {e}"))?;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| "tls handshake timed out".to_owned())?
            .map_err(|e| format!("tls: {e}"))?;
        let (mut reader, mut writer) = tokio::io::split(stream);
        // Frames are read in their own task: a read cut off half-way would lose the framing.
        let (frames_tx, mut frames) = mpsc::channel(64);
        let read_task = tokio::spawn(async move {
            loop {
                let read = frame::read_frame(&mut reader).await;
                let end = !matches!(read, Ok(Some(_)));
                if frames_tx.send(read).await.is_err() || end {
                    return;
                }
            }
        });
        let result = self
            .drain(ctx, peer, own, until, shutdown, &mut writer, &mut frames)
            .await;
        read_task.abort();
        let _ = writer.shutdown().await;
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn drain<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        ctx: &RouteContext<'_>,
        peer: &NeighbourPeer,
        own: &str,
        until: Instant,
        shutdown: &mut watch::Receiver<bool>,
        writer: &mut W,
        frames: &mut mpsc::Receiver<std::io::Result<Option<Frame>>>,
    ) -> Result<bool, String> {
        lock(&ctx.handles.outbox).rewind();
        lock(&ctx.handles.stats).link = LinkState::RoutedVia {
            meter: peer.meter.to_string(),
            addr: peer.addr.clone(),
            own_uplink: own.to_owned(),
        };
        tracing::info!(meter = %ctx.meter, neighbour = %peer.meter, addr = %peer.addr, "routing through neighbour");
        // (frame id, last outbox position, sent at, acknowledged)
        let mut inflight: VecDeque<(u32, u64, Instant, bool)> = VecDeque::new();
        let mut next_id: u32 = 1;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The uplink's send rate bounds the backfill through a neighbour too.
        let rate = ctx.config.max_envelopes_per_s;
        let mut tokens = 1.0f64;
        let mut last_refill = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return Ok(false),
                read = frames.recv() => match read {
                    Some(Ok(Some(Frame::Ack { id }))) => {
                        let Some(f) = inflight.iter_mut().find(|f| f.0 == id) else {
                            return Err(format!("acknowledgement of unknown frame {id}"));
                        };
                        f.3 = true;
                        let mut through = None;
                        let mut envelopes = 0;
                        while inflight.front().is_some_and(|f| f.3) {
                            through = inflight.pop_front().map(|f| f.1);
                            envelopes += 1;
                        }
                        if let Some(p) = through {
                            lock(&ctx.handles.outbox).ack_through(p).map_err(|e| e.to_string())?;
                            lock(&ctx.handles.stats).envelopes_routed += envelopes;
                            ctx.handles.space.notify_waiters();
                        }
                    }
                    Some(Ok(Some(Frame::Refused { id, reason }))) => {
                        return Err(format!("refused frame {id}: {reason}"));
                    }
                    Some(Ok(Some(other))) => {
                        return Err(format!("unexpected frame {} from the neighbour", other.id()));
                    }
                    Some(Ok(None)) | None => return Err("neighbour closed the connection".into()),
                    Some(Err(e)) => return Err(e.to_string()),
                },
                _ = tick.tick() => {
                    let now = Instant::now();
                    if now >= until && inflight.is_empty() {
                        return Ok(true);
                    }
                    if inflight.front().is_some_and(|f| now.duration_since(f.2) > self.ack_timeout) {
                        return Err(format!("no acknowledgement within {} s", self.ack_timeout.as_secs()));
                    }
                    tokens = (tokens + now.duration_since(last_refill).as_secs_f64() * rate).min(rate.max(1.0));
                    last_refill = now;
                    while now < until && tokens >= 1.0 && inflight.len() < usize::from(ctx.config.max_inflight) {
                        let entries = lock(&ctx.handles.outbox)
                            .next_batch(ctx.config.batch_max_records)
                            .map_err(|e| e.to_string())?;
                        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
                            break;
                        };
                        let last_position = last.position;
                        let batch = Batch {
                            meter: ctx.meter.clone(),
                            boot_id: first.boot_id,
                            records: entries.into_iter().map(|e| e.record).collect(),
                        };
                        let sealed = schema::seal_batch(ctx.key, &batch).map_err(|e| e.to_string())?;
                        let id = next_id;
                        next_id = next_id.wrapping_add(1);
                        let bytes = Frame::Envelope { id, bytes: sealed }.encode().map_err(|e| e.to_string())?;
                        writer.write_all(&bytes).await.map_err(|e| format!("send: {e}"))?;
                        writer.flush().await.map_err(|e| format!("send: {e}"))?;
                        inflight.push_back((id, last_position, now, false));
                        tokens -= 1.0;
                    }
                }
            }
        }
    }
}

/// What routing borrows from the uplink.
pub(crate) struct RouteContext<'a> {
    pub(crate) meter: &'a MeterId,
    pub(crate) key: &'a MeterKey,
    pub(crate) config: &'a UplinkConfig,
    pub(crate) handles: &'a UplinkHandles,
}
