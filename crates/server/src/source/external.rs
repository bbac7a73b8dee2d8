//! The external-broker source: Mosquitto, EMQX or NATS's MQTT listener, consumed through an
//! MQTT shared subscription with manual acknowledgement (DESIGN §5).
//!
//! Several server instances subscribe to `$share/{group}/wattline/v1/m/+/up` (and `relay`,
//! `status`) with the same group: the broker hands each message to one of them. The PUBACK for
//! a message goes to the broker only when ingest acknowledged it after its commit (rumqttc
//! `manual_acks`), so an instance killed mid-batch leaves its messages unacknowledged.
//!
//! What happens to those depends on the broker: EMQX re-dispatches them to another member of
//! the group; Mosquitto 2 keeps them in the dead instance's session. The session is therefore
//! persistent (`clean_session = false`) under a client id that is stable for the instance:
//! when it comes back (or a replacement starts with its id) the broker redelivers everything
//! unacknowledged. Ingest is idempotent on `(meter, boot_id, seq)`, so a redelivery of something
//! that was committed just before the crash is stored once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{
    AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeFilter, SubscribeReasonCode,
    TlsConfiguration, Transport,
};
use schema::MeterId;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{AckOutcome, Delivery};
use crate::broker::{MqttError, MqttErrorKind};

/// Where the external broker is and how this instance joins the consumer group.
#[derive(Clone)]
pub struct ExternalConfig {
    /// Broker host (must match its certificate when TLS is used).
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// This instance's client id: stable across restarts, different per instance.
    pub client_id: String,
    /// Shared-subscription group; every instance of one deployment uses the same.
    pub group: String,
    /// TLS with the server's client certificate, or `None` for plain TCP (tests, closed
    /// networks).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// User name and password, when the broker wants them.
    pub credentials: Option<(String, String)>,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
}

impl std::fmt::Debug for ExternalConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials stay out of logs.
        f.debug_struct("ExternalConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("group", &self.group)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl ExternalConfig {
    /// Plain TCP to `host:port` as `client_id` in the group `wattline`.
    pub fn plain(host: &str, port: u16, client_id: &str) -> Self {
        Self {
            host: host.to_owned(),
            port,
            client_id: client_id.to_owned(),
            group: "wattline".to_owned(),
            tls: None,
            credentials: None,
            keep_alive: Duration::from_secs(30),
        }
    }

    /// The shared-subscription filters this source subscribes to.
    pub fn filters(&self) -> Vec<String> {
        ["up", "relay", "status"]
            .iter()
            .map(|kind| format!("$share/{}/{}/+/{kind}", self.group, schema::topic::PREFIX))
            .collect()
    }
}

/// Counters of the external source.
#[derive(Debug, Default)]
pub struct ExternalStats {
    received: AtomicU64,
    acked: AtomicU64,
    retries: AtomicU64,
    connections: AtomicU64,
    connection_failures: AtomicU64,
}

impl ExternalStats {
    /// Messages received from the broker.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
    /// PUBACKs sent after the ingest commit.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }
    /// Deliveries ingest gave back uncommitted (each forces a reconnect and a redelivery).
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
    /// Successful connections (CONNACK accepted).
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
    /// Failed connection attempts and dropped connections.
    pub fn connection_failures(&self) -> u64 {
        self.connection_failures.load(Ordering::Relaxed)
    }
}

/// A running external source.
pub struct ExternalSource {
    client: AsyncClient,
    stats: Arc<ExternalStats>,
    stopping: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for ExternalSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalSource").finish_non_exhaustive()
    }
}

/// Connects and starts consuming; every message becomes a [`Delivery`] on `deliveries`.
pub fn start(
    config: ExternalConfig,
    deliveries: mpsc::Sender<Delivery>,
) -> Result<ExternalSource, MqttError> {
    if config.client_id.is_empty()
        || config.group.is_empty()
        || config.group.contains(['/', '+', '#'])
    {
        return Err(MqttError::new(MqttErrorKind::Config(
            "external broker: client_id must be set and group must be one topic level".into(),
        )));
    }
    let mut opts = MqttOptions::new(&config.client_id, &config.host, config.port);
    opts.set_keep_alive(config.keep_alive);
    // Persistent session: unacknowledged messages survive our crash (see the module docs).
    opts.set_clean_session(false);
    opts.set_manual_acks(true);
    opts.set_max_packet_size(
        schema::MAX_ENVELOPE_BYTES + 1024,
        schema::MAX_ENVELOPE_BYTES + 1024,
    );
    // Acks are queued from ingest without waiting; the broker bounds what is in flight to us
    // (Mosquitto `max_inflight_messages`), so this capacity is never the limit.
    opts.set_request_channel_capacity(65_536);
    if let Some((user, password)) = &config.credentials {
        opts.set_credentials(user, password);
    }
    if let Some(tls) = &config.tls {
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls.clone(),
        )));
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    let stats = Arc::new(ExternalStats::default());
    let stopping = Arc::new(AtomicBool::new(false));
    let filters = config.filters();
    let task = {
        let client = client.clone();
        let stats = stats.clone();
        let stopping = stopping.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                let event = eventloop.poll().await;
                if stopping.load(Ordering::Relaxed) {
                    if matches!(
                        event,
                        Err(_) | Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))
                    ) {
                        return;
                    }
                    continue;
                }
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        stats.connections.fetch_add(1, Ordering::Relaxed);
                        backoff = Duration::from_millis(200);
                        tracing::info!(
                            session_present = ack.session_present,
                            "external broker connected"
                        );
                        let subs = filters
                            .iter()
                            .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                        if let Err(e) = client.try_subscribe_many(subs) {
                            tracing::error!(error = %e, "external broker: cannot queue the subscription");
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                            tracing::error!(codes = ?ack.return_codes,
                                "external broker refused a shared subscription (ACL or $share support)");
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        stats.received.fetch_add(1, Ordering::Relaxed);
                        let delivery = delivery_for(publish, &client, &stats);
                        // Awaiting is the back-pressure: while ingest is full we stop reading
                        // and the broker holds the rest.
                        if deliveries.send(delivery).await.is_err() {
                            tracing::warn!("external source: ingest stopped");
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        stats.connection_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                            "external broker connection failed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
        })
    };
    Ok(ExternalSource {
        client,
        stats,
        stopping,
        task,
    })
}

fn delivery_for(
    publish: rumqttc::Publish,
    client: &AsyncClient,
    stats: &Arc<ExternalStats>,
) -> Delivery {
    let client = client.clone();
    let stats = stats.clone();
    let topic = publish.topic.clone();
    let payload: Bytes = publish.payload.clone();
    Delivery::new(topic, payload, None, move |outcome| match outcome {
        AckOutcome::Committed => {
            if client.try_ack(&publish).is_ok() {
                stats.acked.fetch_add(1, Ordering::Relaxed);
            }
        }
        AckOutcome::Retry => {
            // Drop the connection: the persistent session makes the broker send everything
            // unacknowledged again after the reconnect.
            stats.retries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(topic = %publish.topic, "ingest did not commit; reconnecting for a redelivery");
            let _ = client.try_disconnect();
        }
    })
}

impl ExternalSource {
    /// The counters.
    pub fn stats(&self) -> &ExternalStats {
        &self.stats
    }

    /// Publishes a sealed command on `meter`'s `down` topic at QoS 1 (queued; the broker
    /// delivers it when the meter is subscribed).
    pub async fn publish_down(&self, meter: &MeterId, payload: Bytes) -> Result<(), MqttError> {
        self.client
            .publish_bytes(schema::topic::down(meter), QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|_| MqttError::new(MqttErrorKind::Closed))
    }

    /// Disconnects cleanly (the persistent session keeps anything unacknowledged) and waits
    /// for the event loop to end.
    pub async fn shutdown(self) {
        self.stopping.store(true, Ordering::Relaxed);
        let _ = self.client.disconnect().await;
        let task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .is_err()
        {
            tracing::warn!("external source did not stop in time");
        }
    }

    /// Stops at once without DISCONNECT, as a crash would (tests).
    pub fn abort(self) {
        self.task.abort();
    }
}
