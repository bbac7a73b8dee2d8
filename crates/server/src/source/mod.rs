//! Ingest sources: where the ingest pipeline's `(topic, payload, delivery handle)` come from.
//!
//! Both sources hand the pipeline the same [`Delivery`] on a bounded `tokio::sync::mpsc`
//! channel; a full channel stops the source reading from the network, so load turns into
//! back-pressure on the meters, never into drops.
//! - **embedded broker** ([`crate::broker`]): the delivery carries the sender's certificate
//!   identity; acknowledging it sends the meter's PUBACK;
//! - **external broker** ([`external`]): Mosquitto/EMQX/NATS consumed through an MQTT shared
//!   subscription with manual acknowledgement; acknowledging sends the PUBACK to that broker.
//!
//! In both cases the pipeline calls [`Delivery::ack`] only after the records are committed. A
//! delivery dropped without `ack` (ingest failed, database down, process stopping) is a
//! *negative* acknowledgement: the source makes the message come again — the embedded broker
//! closes the meter's connection so its outbox resends from the first unacknowledged envelope,
//! the external source reconnects its persistent session so the broker redelivers.

pub mod external;

use std::time::Instant;

use bytes::Bytes;
use schema::MeterId;

/// Which wattline topic a message came on (DESIGN §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    /// `…/{meter}/up`: a sealed batch of the meter's own records.
    Up,
    /// `…/{meter}/relay`: envelopes of other meters this meter forwards.
    Relay,
    /// `…/{meter}/status`: `online` / `offline` (retained, last will).
    Status,
    /// `…/{meter}/down`: sealed commands to the meter.
    Down,
}

impl TopicKind {
    /// The last topic level.
    pub fn as_str(self) -> &'static str {
        match self {
            TopicKind::Up => "up",
            TopicKind::Relay => "relay",
            TopicKind::Status => "status",
            TopicKind::Down => "down",
        }
    }
}

/// Splits `wattline/v1/m/{meter}/{kind}` into the meter and the kind; `None` for anything else.
pub fn parse_topic(topic: &str) -> Option<(MeterId, TopicKind)> {
    let rest = topic
        .strip_prefix(schema::topic::PREFIX)?
        .strip_prefix('/')?;
    let (meter, kind) = rest.split_once('/')?;
    let kind = match kind {
        "up" => TopicKind::Up,
        "relay" => TopicKind::Relay,
        "status" => TopicKind::Status,
        "down" => TopicKind::Down,
        _ => return None,
    };
    Some((MeterId::parse(meter).ok()?, kind))
}

/// How a delivery ended, as the source sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// Committed: the source may acknowledge to the sender.
    Committed,
    /// Not committed: the source must make the message come again.
    Retry,
}

type AckFn = Box<dyn FnOnce(AckOutcome) + Send + 'static>;

/// One message for the ingest pipeline, acknowledged to its sender only through [`Self::ack`].
pub struct Delivery {
    /// The MQTT topic it was published on.
    pub topic: String,
    /// The payload as received (a sealed envelope on `up`/`relay`, text on `status`).
    pub payload: Bytes,
    /// The sender's identity from its TLS client certificate, when the source knows it (the
    /// embedded broker). With an external broker it is `None`: that broker's ACL binds the
    /// topic to the certificate, and the envelope's meter and key are checked by ingest anyway.
    pub sender: Option<MeterId>,
    /// When the source received it (for server-side latency).
    pub received_at: Instant,
    ack: Option<AckFn>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("topic", &self.topic)
            .field("payload_bytes", &self.payload.len())
            .field("sender", &self.sender)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// A delivery whose outcome is reported to `on_ack` (exactly once: on `ack`, or as
    /// [`AckOutcome::Retry`] when dropped unacknowledged).
    pub fn new(
        topic: String,
        payload: Bytes,
        sender: Option<MeterId>,
        on_ack: impl FnOnce(AckOutcome) + Send + 'static,
    ) -> Self {
        Self {
            topic,
            payload,
            sender,
            received_at: Instant::now(),
            ack: Some(Box::new(on_ack)),
        }
    }

    /// The topic's meter and kind, when it is a wattline topic.
    pub fn parsed_topic(&self) -> Option<(MeterId, TopicKind)> {
        parse_topic(&self.topic)
    }

    /// Acknowledges the delivery: call only after its records (or its quarantine entry) are
    /// committed.
    pub fn ack(mut self) {
        if let Some(f) = self.ack.take() {
            f(AckOutcome::Committed);
        }
    }

    /// Gives the delivery back unacknowledged: the source arranges a redelivery.
    pub fn retry(mut self) {
        if let Some(f) = self.ack.take() {
            f(AckOutcome::Retry);
        }
    }
}

/// The acknowledgement half of a [`Delivery`], for the ingest pipeline's
/// [`Acknowledge`](crate::Acknowledge): `acknowledge` after the commit; dropped without it means
/// "not committed, send again".
pub struct DeliveryAck {
    ack: Option<AckFn>,
}

impl crate::Acknowledge for DeliveryAck {
    fn acknowledge(mut self: Box<Self>) {
        if let Some(f) = self.ack.take() {
            f(AckOutcome::Committed);
        }
    }
}

impl Drop for DeliveryAck {
    fn drop(&mut self) {
        if let Some(f) = self.ack.take() {
            f(AckOutcome::Retry);
        }
    }
}

impl Delivery {
    /// Splits the delivery into topic, payload and its acknowledgement.
    pub fn into_parts(mut self) -> (String, Bytes, DeliveryAck) {
        let ack = DeliveryAck {
            ack: self.ack.take(),
        };
        (
            std::mem::take(&mut self.topic),
            std::mem::take(&mut self.payload),
            ack,
        )
    }
}

/// Feeds every delivery from a source into the ingest pipeline until the source's channel
/// closes or the pipeline stops. The pipeline acknowledges after its commit; a delivery it
/// could not take is dropped unacknowledged, which makes its source arrange a redelivery.
pub async fn feed(mut deliveries: tokio::sync::mpsc::Receiver<Delivery>, ingest: &crate::Ingest) {
    while let Some(delivery) = deliveries.recv().await {
        let received_at = delivery.received_at;
        let (topic, payload, ack) = delivery.into_parts();
        if let Err(e) = ingest
            .submit_received(&topic, payload.to_vec(), Box::new(ack), received_at)
            .await
        {
            tracing::warn!(error = %e, "ingest stopped; the source will redeliver");
            return;
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(f) = self.ack.take() {
            f(AckOutcome::Retry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn topics_parse_only_when_they_are_ours() {
        let (m, k) = parse_topic("wattline/v1/m/house-7/up").unwrap();
        assert_eq!((m.as_str(), k), ("house-7", TopicKind::Up));
        assert_eq!(
            parse_topic("wattline/v1/m/a/status").unwrap().1,
            TopicKind::Status
        );
        for bad in [
            "wattline/v1/m/house-7/up/x",
            "wattline/v1/m/House/up",
            "wattline/v1/m//up",
            "wattline/v1/m/+/up",
            "wattline/v2/m/a/up",
            "wattline/v1/m/a/other",
            "",
        ] {
            assert!(parse_topic(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_dropped_delivery_asks_for_a_retry_exactly_once() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let d = Delivery::new("t".into(), Bytes::new(), None, move |o| {
            s.lock().unwrap().push(o)
        });
        drop(d);
        let s = seen.clone();
        let d = Delivery::new("t".into(), Bytes::new(), None, move |o| {
            s.lock().unwrap().push(o)
        });
        d.ack();
        assert_eq!(
            *seen.lock().unwrap(),
            vec![AckOutcome::Retry, AckOutcome::Committed]
        );
    }
}
