//! One meter connection: TLS handshake, identity, CONNECT, then a single task that reads
//! packets, enforces the ACL, hands messages to ingest, and writes PUBACKs in arrival order as
//! the commits come back.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, LastWill, Packet, PubAck, Publish, SubAck, SubscribeReasonCode,
    UnsubAck,
};
use rumqttc::mqttbytes::{Error as CodecError, Protocol, QoS, has_wildcards, valid_topic};
use schema::{MeterId, topic};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::{Outbound, SessionEntry, Shared, count_refusal, lock};
use crate::source::{AckOutcome, Delivery};

/// Why a session ended; decides whether the will is published.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// DISCONNECT received, server shutdown or taken over: no will.
    Clean,
    /// Anything else (socket closed, refusal, timeout, protocol error): publish the will.
    Abnormal,
}

pub(super) async fn serve(
    shared: Arc<Shared>,
    connection: u64,
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    shutdown: watch::Receiver<bool>,
) {
    let timeout = shared.config.connect_timeout;
    match acceptor {
        None => session(shared, connection, stream, peer, None, shutdown).await,
        Some(acceptor) => {
            let tls = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    count_refusal(&shared.stats.tls_refused, "tls");
                    tracing::warn!(%peer, error = %e, "mqtt tls handshake refused");
                    return;
                }
                Err(_) => {
                    count_refusal(&shared.stats.tls_refused, "tls_timeout");
                    tracing::warn!(%peer, "mqtt tls handshake timed out");
                    return;
                }
            };
            let identity = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .ok_or_else(|| "no client certificate".to_owned())
                .and_then(|leaf| {
                    let serial = super::serial_hex(leaf.as_ref())?;
                    let cn = super::common_name(leaf.as_ref())?;
                    let meter =
                        MeterId::parse(&cn).map_err(|e| format!("common name {cn:?}: {e}"))?;
                    Ok((meter, serial))
                });
            match identity {
                Ok((meter, serial)) => {
                    let revocations = &shared.config.revocations;
                    let revoked = if revocations.serial_revoked(&serial) {
                        Some(format!("certificate {serial} is revoked"))
                    } else {
                        revocations
                            .meter_revoked(&meter)
                            .map(|why| format!("meter is revoked: {why}"))
                    };
                    if let Some(why) = revoked {
                        count_refusal(&shared.stats.revoked_refused, "revoked");
                        tracing::warn!(%peer, %meter, %serial, reason = %why,
                            "mqtt connection with a revoked certificate refused");
                        let mut tls = tls;
                        let _ = tls.shutdown().await;
                        return;
                    }
                    let identity = CertIdentity { meter, serial };
                    session(shared, connection, tls, peer, Some(identity), shutdown).await
                }
                Err(why) => {
                    count_refusal(&shared.stats.identity_refused, "identity");
                    tracing::warn!(%peer, reason = %why, "mqtt client certificate has no meter identity");
                }
            }
        }
    }
}

/// Who the verified client certificate says the peer is.
struct CertIdentity {
    meter: MeterId,
    serial: String,
}

/// Reads until one whole packet is in `buf` and returns it; `Ok(None)` at end of stream.
async fn read_packet<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Packet>, String> {
    loop {
        match Packet::read(buf, max) {
            Ok(p) => return Ok(Some(p)),
            Err(CodecError::InsufficientBytes(_)) => {}
            Err(e) => return Err(format!("malformed packet: {e}")),
        }
        if reader.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Ok(None);
        }
    }
}

async fn write_packets<W: AsyncWrite + Unpin>(
    writer: &mut W,
    packets: &[Packet],
    max: usize,
    timeout: Duration,
) -> Result<(), String> {
    let mut out = BytesMut::new();
    for p in packets {
        p.write(&mut out, max).map_err(|e| format!("encode: {e}"))?;
    }
    match tokio::time::timeout(timeout, writer.write_all(&out)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("write timed out".into()),
    }
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    connection: u64,
    stream: S,
    peer: SocketAddr,
    cert_identity: Option<CertIdentity>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Subscribed before CONNECT is read: a revocation from now on is seen by the session.
    let mut revocations = shared.config.revocations.subscribe();
    let serial = cert_identity.as_ref().map(|c| c.serial.clone());
    let cert_identity = cert_identity.map(|c| c.meter);
    let cfg = shared.config.clone();
    let max = cfg.max_packet_bytes;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut buf = BytesMut::with_capacity(4096);

    // CONNECT, within the connect timeout.
    let connect =
        match tokio::time::timeout(cfg.connect_timeout, read_packet(&mut reader, &mut buf, max))
            .await
        {
            Ok(Ok(Some(Packet::Connect(c)))) => c,
            Ok(Ok(None)) => return,
            Ok(Ok(Some(other))) => {
                count_refusal(&shared.stats.protocol_errors, "protocol");
                tracing::warn!(%peer, packet = ?other, "mqtt: first packet is not CONNECT");
                return;
            }
            Ok(Err(why)) => {
                count_refusal(&shared.stats.protocol_errors, "protocol");
                tracing::warn!(%peer, reason = %why, "mqtt: bad CONNECT");
                return;
            }
            Err(_) => {
                count_refusal(&shared.stats.connect_refused, "connect_timeout");
                tracing::warn!(%peer, "mqtt: no CONNECT in time");
                return;
            }
        };
    let refuse = |code: ConnectReturnCode| Packet::ConnAck(ConnAck::new(code, false));
    if connect.protocol != Protocol::V4 {
        count_refusal(&shared.stats.connect_refused, "protocol_version");
        let _ = write_packets(
            &mut writer,
            &[refuse(ConnectReturnCode::RefusedProtocolVersion)],
            max,
            cfg.write_timeout,
        )
        .await;
        return;
    }
    // The identity is the certificate name; the client id must be empty or equal to it, so
    // logs and other brokers' views agree. On a plain listener the client id is all we have.
    let meter = match &cert_identity {
        Some(m) if connect.client_id.is_empty() || connect.client_id == m.as_str() => m.clone(),
        Some(m) => {
            count_refusal(&shared.stats.identity_refused, "client_id");
            tracing::warn!(%peer, meter = %m, client_id = %connect.client_id,
                "mqtt: client id differs from the certificate name");
            let _ = write_packets(
                &mut writer,
                &[refuse(ConnectReturnCode::BadClientId)],
                max,
                cfg.write_timeout,
            )
            .await;
            return;
        }
        None => match MeterId::parse(&connect.client_id) {
            Ok(m) => m,
            Err(e) => {
                count_refusal(&shared.stats.identity_refused, "client_id");
                tracing::warn!(%peer, client_id = %connect.client_id, error = %e,
                    "mqtt: plain-listener client id is not a meter id");
                let _ = write_packets(
                    &mut writer,
                    &[refuse(ConnectReturnCode::BadClientId)],
                    max,
                    cfg.write_timeout,
                )
                .await;
                return;
            }
        },
    };
    if let Some(will) = &connect.last_will
        && (!super::may_publish(&meter, &will.topic) || will.qos == QoS::ExactlyOnce)
    {
        count_refusal(&shared.stats.acl_denied_publish, "acl_will");
        tracing::warn!(%peer, %meter, topic = %will.topic, "mqtt: last will outside the meter's topics refused");
        let _ = write_packets(
            &mut writer,
            &[refuse(ConnectReturnCode::NotAuthorized)],
            max,
            cfg.write_timeout,
        )
        .await;
        return;
    }

    // Register, replacing an older connection of the same meter (MQTT 3.1.1 §3.1.4).
    let (outbound_tx, mut outbound_rx) = mpsc::channel::<Outbound>(64);
    let previous = lock(&shared.sessions).insert(
        meter.clone(),
        SessionEntry {
            connection,
            outbound: outbound_tx,
            down_subscribed: false,
        },
    );
    if let Some(old) = previous {
        shared.stats.takeovers.fetch_add(1, Ordering::Relaxed);
        let _ = old.outbound.try_send(Outbound::TakenOver);
    }
    shared.stats.connected.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%peer, %meter, "mqtt session connected");

    let mut state = Session {
        shared: shared.clone(),
        meter: meter.clone(),
        peer,
        pending: VecDeque::new(),
        committed: HashSet::new(),
        next_seq: 0,
        outgoing: HashMap::new(),
        next_pkid: 0,
        serial,
        bucket: TokenBucket::new(cfg.max_publishes_per_s, cfg.publish_burst),
    };
    let end = if let Err(why) = write_packets(
        &mut writer,
        &[Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            false,
        ))],
        max,
        cfg.write_timeout,
    )
    .await
    {
        tracing::debug!(%peer, %meter, reason = %why, "mqtt: connack not written");
        End::Abnormal
    } else {
        state
            .run(
                &mut reader,
                &mut writer,
                &mut buf,
                &mut outbound_rx,
                &mut shutdown,
                &mut revocations,
                connect.keep_alive,
            )
            .await
    };

    {
        let mut sessions = lock(&shared.sessions);
        if sessions
            .get(&meter)
            .is_some_and(|s| s.connection == connection)
        {
            sessions.remove(&meter);
        }
    }
    shared.stats.connected.fetch_sub(1, Ordering::Relaxed);
    if let (End::Abnormal, Some(will)) = (end, connect.last_will) {
        publish_will(&shared, &meter, will).await;
    }
    let _ = writer.shutdown().await;
}

async fn publish_will(shared: &Shared, meter: &MeterId, will: LastWill) {
    shared.stats.wills_published.fetch_add(1, Ordering::Relaxed);
    if will.retain {
        retain(shared, &will.topic, &will.message);
    }
    // The will has no sender waiting for a PUBACK: its outcome needs no action.
    let delivery = Delivery::new(will.topic, will.message, Some(meter.clone()), |_| {});
    let _ = shared.ingest.send(delivery).await;
}

fn retain(shared: &Shared, topic_name: &str, payload: &Bytes) {
    let mut retained = lock(&shared.retained);
    if payload.is_empty() {
        retained.remove(topic_name);
    } else {
        retained.insert(topic_name.to_owned(), payload.clone());
    }
}

struct Session {
    shared: Arc<Shared>,
    meter: MeterId,
    peer: SocketAddr,
    /// QoS 1 PUBLISHes in arrival order: (our sequence number, packet id).
    pending: VecDeque<(u64, u16)>,
    /// Sequence numbers ingest committed that are not yet at the front of `pending`.
    committed: HashSet<u64>,
    next_seq: u64,
    /// Our `down` PUBLISHes waiting for the meter's PUBACK.
    outgoing: HashMap<u16, tokio::sync::oneshot::Sender<()>>,
    next_pkid: u16,
    /// The certificate serial (TLS listener only).
    serial: Option<String>,
    bucket: TokenBucket,
}

/// PUBLISHes a connection may send: `rate` per second on average, `burst` at once.
struct TokenBucket {
    rate_per_s: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(rate_per_s: u32, burst: u32) -> Self {
        Self {
            rate_per_s: f64::from(rate_per_s.max(1)),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            at: Instant::now(),
        }
    }

    /// Takes one token; returns how long to wait first when the bucket is empty.
    fn take(&mut self) -> Duration {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.rate_per_s;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.at = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate_per_s)
        }
    }
}

impl Session {
    // The reader, writer and the per-connection state are handed in separately so the TLS and
    // plain transports share this loop; grouping them would only add a struct used once.
    #[allow(clippy::too_many_arguments)]
    async fn run<R, W>(
        &mut self,
        reader: &mut R,
        writer: &mut W,
        buf: &mut BytesMut,
        outbound: &mut mpsc::Receiver<Outbound>,
        shutdown: &mut watch::Receiver<bool>,
        revocations: &mut watch::Receiver<u64>,
        keep_alive_s: u16,
    ) -> End
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let cfg = self.shared.config.clone();
        let (acks_tx, mut acks_rx) = mpsc::unbounded_channel::<(u64, AckOutcome)>();
        // MQTT 3.1.1 §3.1.2.10: the server closes after one and a half keep-alive periods.
        let keep_alive =
            (keep_alive_s > 0).then(|| Duration::from_millis(u64::from(keep_alive_s) * 1500));
        let mut last_rx = Instant::now();
        // A revocation between the handshake check and here is caught at once.
        revocations.mark_changed();
        loop {
            let mut replies: Vec<Packet> = Vec::new();
            // Whole packets already buffered, as far as the unacknowledged limit allows; the
            // rest stays in `buf` until commits free room.
            while self.pending.len() < cfg.max_unacked_per_connection {
                let packet = match Packet::read(buf, cfg.max_packet_bytes) {
                    Ok(p) => p,
                    Err(CodecError::InsufficientBytes(_)) => break,
                    Err(e) => {
                        count_refusal(&self.shared.stats.protocol_errors, "protocol");
                        tracing::warn!(peer = %self.peer, meter = %self.meter, error = %e,
                            "mqtt: malformed or oversized packet, closing");
                        return End::Abnormal;
                    }
                };
                let step = self.on_packet(packet, &acks_tx, &mut replies).await;
                if step != Ok(None) {
                    let _ =
                        write_packets(writer, &replies, cfg.max_packet_bytes, cfg.write_timeout)
                            .await;
                    return match step {
                        Ok(Some(end)) => end,
                        _ => End::Abnormal,
                    };
                }
            }
            if !replies.is_empty() {
                if let Err(why) =
                    write_packets(writer, &replies, cfg.max_packet_bytes, cfg.write_timeout).await
                {
                    tracing::debug!(peer = %self.peer, meter = %self.meter, reason = %why, "mqtt write failed");
                    return End::Abnormal;
                }
                replies.clear();
            }
            let deadline = keep_alive.map(|k| tokio::time::Instant::from_std(last_rx + k));
            let may_read = self.pending.len() < cfg.max_unacked_per_connection;
            tokio::select! {
                _ = shutdown.changed() => return End::Clean,
                Ok(()) = revocations.changed() => {
                    revocations.borrow_and_update();
                    if let Some(why) = self.revoked() {
                        count_refusal(&self.shared.stats.revoked_closed, "revoked_live");
                        tracing::warn!(peer = %self.peer, meter = %self.meter, reason = %why,
                            "mqtt session closed: revoked");
                        return End::Abnormal;
                    }
                }
                _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await },
                    if deadline.is_some() => {
                    count_refusal(&self.shared.stats.keepalive_timeouts, "keepalive");
                    tracing::info!(peer = %self.peer, meter = %self.meter, "mqtt keep-alive expired");
                    return End::Abnormal;
                }
                read = reader.read_buf(buf), if may_read => {
                    match read {
                        Ok(0) | Err(_) => return End::Abnormal,
                        Ok(_) => last_rx = Instant::now(),
                    }
                }
                Some((seq, outcome)) = acks_rx.recv() => {
                    if outcome == AckOutcome::Retry {
                        self.shared.stats.ingest_retries.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(peer = %self.peer, meter = %self.meter,
                            "ingest did not commit a delivery; closing so the meter resends");
                        return End::Abnormal;
                    }
                    self.committed.insert(seq);
                    while let Ok((seq, outcome)) = acks_rx.try_recv() {
                        if outcome == AckOutcome::Retry {
                            self.shared.stats.ingest_retries.fetch_add(1, Ordering::Relaxed);
                            return End::Abnormal;
                        }
                        self.committed.insert(seq);
                    }
                    while let Some(&(seq, pkid)) = self.pending.front() {
                        if !self.committed.remove(&seq) {
                            break;
                        }
                        self.pending.pop_front();
                        replies.push(Packet::PubAck(PubAck::new(pkid)));
                    }
                    self.shared.stats.pubacks_sent.fetch_add(replies.len() as u64, Ordering::Relaxed);
                }
                Some(out) = outbound.recv() => match out {
                    Outbound::TakenOver => {
                        tracing::info!(peer = %self.peer, meter = %self.meter, "mqtt session taken over by a newer connection");
                        return End::Clean;
                    }
                    Outbound::Down { payload, delivered } => {
                        let pkid = self.allocate_pkid();
                        let mut publish = Publish::from_bytes(topic::down(&self.meter), QoS::AtLeastOnce, payload);
                        publish.pkid = pkid;
                        self.outgoing.insert(pkid, delivered);
                        self.shared.stats.down_published.fetch_add(1, Ordering::Relaxed);
                        replies.push(Packet::Publish(publish));
                    }
                },
            }
            if !replies.is_empty()
                && let Err(why) =
                    write_packets(writer, &replies, cfg.max_packet_bytes, cfg.write_timeout).await
            {
                tracing::debug!(peer = %self.peer, meter = %self.meter, reason = %why, "mqtt write failed");
                return End::Abnormal;
            }
        }
    }

    fn revoked(&self) -> Option<String> {
        let list = &self.shared.config.revocations;
        if let Some(serial) = &self.serial
            && list.serial_revoked(serial)
        {
            return Some(format!("certificate {serial} is revoked"));
        }
        list.meter_revoked(&self.meter)
            .map(|why| format!("meter is revoked: {why}"))
    }

    fn allocate_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
            if !self.outgoing.contains_key(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }

    /// Handles one packet; `Ok(Some(end))` ends the session, `Err(())` ends it abnormally.
    async fn on_packet(
        &mut self,
        packet: Packet,
        acks: &mpsc::UnboundedSender<(u64, AckOutcome)>,
        replies: &mut Vec<Packet>,
    ) -> Result<Option<End>, ()> {
        let stats = &self.shared.stats;
        match packet {
            Packet::Publish(p) => {
                if p.qos == QoS::ExactlyOnce || !valid_topic(&p.topic) || has_wildcards(&p.topic) {
                    count_refusal(&stats.protocol_errors, "protocol");
                    tracing::warn!(peer = %self.peer, meter = %self.meter, topic = %p.topic, qos = ?p.qos,
                        "mqtt: unsupported publish (QoS 2 or invalid topic), closing");
                    return Err(());
                }
                if !super::may_publish(&self.meter, &p.topic) {
                    count_refusal(&stats.acl_denied_publish, "acl_publish");
                    tracing::warn!(peer = %self.peer, meter = %self.meter, topic = %p.topic,
                        "mqtt: publish outside the meter's own topics refused, closing");
                    return Err(());
                }
                let wait = self.bucket.take();
                if !wait.is_zero() {
                    // Not reading is the throttle: the sender's TCP window fills up.
                    count_refusal(&stats.rate_limited, "rate_limited");
                    tracing::debug!(peer = %self.peer, meter = %self.meter, wait_ms = wait.as_millis() as u64,
                        "mqtt: publish rate above the limit, throttling");
                    tokio::time::sleep(wait).await;
                }
                stats.publishes_received.fetch_add(1, Ordering::Relaxed);
                if p.retain {
                    retain(&self.shared, &p.topic, &p.payload);
                }
                let delivery = if p.qos == QoS::AtLeastOnce {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    self.pending.push_back((seq, p.pkid));
                    let acks = acks.clone();
                    Delivery::new(p.topic, p.payload, Some(self.meter.clone()), move |o| {
                        let _ = acks.send((seq, o));
                    })
                } else {
                    Delivery::new(p.topic, p.payload, Some(self.meter.clone()), |_| {})
                };
                // Awaiting here is the back-pressure: a full ingest queue stops this reader.
                if self.shared.ingest.send(delivery).await.is_err() {
                    tracing::warn!("mqtt: ingest pipeline stopped; closing the connection");
                    return Err(());
                }
            }
            Packet::Subscribe(s) => {
                let codes: Vec<SubscribeReasonCode> = s
                    .filters
                    .iter()
                    .map(|f| {
                        if super::may_subscribe(&self.meter, &f.path) {
                            // QoS 2 is granted as QoS 1, the highest we support.
                            SubscribeReasonCode::Success(if f.qos == QoS::AtMostOnce {
                                QoS::AtMostOnce
                            } else {
                                QoS::AtLeastOnce
                            })
                        } else {
                            SubscribeReasonCode::Failure
                        }
                    })
                    .collect();
                let denied: Vec<&str> = s
                    .filters
                    .iter()
                    .filter(|f| !super::may_subscribe(&self.meter, &f.path))
                    .map(|f| f.path.as_str())
                    .collect();
                replies.push(Packet::SubAck(SubAck::new(s.pkid, codes)));
                if !denied.is_empty() {
                    count_refusal(&stats.acl_denied_subscribe, "acl_subscribe");
                    tracing::warn!(peer = %self.peer, meter = %self.meter, filters = ?denied,
                        "mqtt: subscription outside the meter's own down topic refused, closing");
                    return Err(());
                }
                if let Some(entry) = lock(&self.shared.sessions).get_mut(&self.meter) {
                    entry.down_subscribed = true;
                }
            }
            Packet::Unsubscribe(u) => {
                if u.topics.iter().any(|t| *t == topic::down(&self.meter))
                    && let Some(entry) = lock(&self.shared.sessions).get_mut(&self.meter)
                {
                    entry.down_subscribed = false;
                }
                replies.push(Packet::UnsubAck(UnsubAck::new(u.pkid)));
            }
            Packet::PubAck(ack) => {
                if let Some(delivered) = self.outgoing.remove(&ack.pkid) {
                    stats.down_acked.fetch_add(1, Ordering::Relaxed);
                    let _ = delivered.send(());
                }
            }
            Packet::PingReq => replies.push(Packet::PingResp),
            Packet::Disconnect => return Ok(Some(End::Clean)),
            other => {
                count_refusal(&stats.protocol_errors, "protocol");
                tracing::warn!(peer = %self.peer, meter = %self.meter, packet = ?other,
                    "mqtt: unexpected packet, closing");
                return Err(());
            }
        }
        Ok(None)
    }
}
