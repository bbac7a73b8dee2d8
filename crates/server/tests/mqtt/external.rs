//! The external-broker source: a shared subscription with manual acknowledgement on the local
//! Mosquitto (plain, 127.0.0.1:1883) with a consumer killed mid-stream, and on a TLS Mosquitto
//! with client certificates and the per-meter ACL.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::QoS;
use schema::MeterId;
use server::source::Delivery;
use server::source::external::{self, ExternalConfig, ExternalSource};
use tokio::sync::mpsc;

use super::support::{TempDir, TestPki, TlsMosquitto, client_tls, drive, eventually, mqtt_client};

const WAIT: Duration = Duration::from_secs(30);

/// Payloads a test consumer committed.
type Committed = Arc<Mutex<HashSet<Bytes>>>;
/// Deliveries a test consumer holds unacknowledged.
type Held = Arc<Mutex<Vec<Delivery>>>;

/// Starts a source whose consumer either acknowledges (after "committing" into `acked`) or holds
/// every delivery of `topic`; deliveries on other topics (other tests on the shared broker) are
/// acknowledged and ignored.
fn consumer(config: ExternalConfig, topic: String, ack: bool) -> (ExternalSource, Committed, Held) {
    let (tx, mut rx) = mpsc::channel::<Delivery>(256);
    let source = external::start(config, tx).unwrap();
    let acked: Committed = Arc::default();
    let held: Held = Arc::default();
    let (a, h) = (acked.clone(), held.clone());
    tokio::spawn(async move {
        while let Some(d) = rx.recv().await {
            if d.topic != topic {
                d.ack();
            } else if ack {
                a.lock().unwrap().insert(d.payload.clone());
                d.ack();
            } else {
                h.lock().unwrap().push(d);
            }
        }
    });
    (source, acked, held)
}

async fn forget_session(client_id: &str) {
    // A clean-session connect discards the persistent session we left on the shared broker.
    let (c, el) = mqtt_client(client_id, 1883, None, |o| {
        o.set_clean_session(true);
    });
    let seen = drive(el);
    eventually("cleanup connect", WAIT, || {
        seen.lock().unwrap().connacks == 1
    })
    .await;
    let _ = c.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_shares_the_load_and_a_killed_consumer_loses_nothing() {
    const N: usize = 200;
    let run = format!("{}-{}", std::process::id(), server::now_ms());
    let meter = format!("shr-{run}");
    let topic = format!("wattline/v1/m/{meter}/up");
    let (id_a, id_b) = (format!("wl-a-{run}"), format!("wl-b-{run}"));
    let config = |id: &str| ExternalConfig {
        group: format!("g{run}"),
        ..ExternalConfig::plain("127.0.0.1", 1883, id)
    };

    // A holds everything it gets (as if ingest were slow), B commits at once.
    let (a, _, a_held) = consumer(config(&id_a), topic.clone(), false);
    let (b, b_acked, _) = consumer(config(&id_b), topic.clone(), true);
    eventually("both consumers subscribed", WAIT, || {
        a.stats().connections() == 1 && b.stats().connections() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (publisher, el) = mqtt_client(&format!("wl-p-{run}"), 1883, None, |_| {});
    let published = drive(el);
    for k in 0..N {
        publisher
            .publish(&topic, QoS::AtLeastOnce, false, format!("{k}").into_bytes())
            .await
            .unwrap();
    }
    eventually("every publish acknowledged by mosquitto", WAIT, || {
        published.lock().unwrap().pubacks == N
    })
    .await;
    eventually("both consumers got a share", WAIT, || {
        !a_held.lock().unwrap().is_empty() && !b_acked.lock().unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held_by_a = a_held.lock().unwrap().len();
    assert!(held_by_a > 0 && held_by_a < N, "A held {held_by_a} of {N}");

    // A dies without DISCONNECT and without acknowledging anything.
    a.abort();
    a_held.lock().unwrap().clear();
    // A comes back under its client id: the broker redelivers what A never acknowledged.
    let (a2, a2_acked, _) = consumer(config(&id_a), topic.clone(), true);
    eventually("every message committed exactly by someone", WAIT, || {
        let all: HashSet<Bytes> = a2_acked
            .lock()
            .unwrap()
            .union(&b_acked.lock().unwrap())
            .cloned()
            .collect();
        all.len() == N
    })
    .await;
    eprintln!(
        "shared subscription: A held {held_by_a} when killed, B committed {}, restarted A committed {}",
        b_acked.lock().unwrap().len(),
        a2_acked.lock().unwrap().len()
    );
    a2.shutdown().await;
    b.shutdown().await;
    forget_session(&id_a).await;
    forget_session(&id_b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_mosquitto_feeds_the_source_with_manual_acks_and_carries_commands() {
    super::support::install_ring();
    let dir = TempDir::new("wattline-mqtt-tls");
    let pki = TestPki::new("wattline test ca");
    let mosquitto = TlsMosquitto::start(&dir.0, &pki);
    let ingest_cert = pki.client("ingest");
    let config = ExternalConfig {
        tls: Some(client_tls(pki.ca.cert_pem(), Some(&ingest_cert))),
        ..ExternalConfig::plain("127.0.0.1", mosquitto.port, "ingest-1")
    };
    let (source, acked, _) = consumer(config, "wattline/v1/m/m1/up".into(), true);
    eventually("source connected", WAIT, || {
        source.stats().connections() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let m1_cert = pki.client("m1");
    let (m1, el) = mqtt_client(
        "m1",
        mosquitto.port,
        Some(client_tls(pki.ca.cert_pem(), Some(&m1_cert))),
        |_| {},
    );
    let meter = drive(el);
    m1.subscribe("wattline/v1/m/m1/down", QoS::AtLeastOnce)
        .await
        .unwrap();
    for k in 0..50 {
        m1.publish("wattline/v1/m/m1/up", QoS::AtLeastOnce, false, vec![k])
            .await
            .unwrap();
    }
    // Mosquitto's ACL drops a publish on another meter's topic without telling the sender.
    m1.publish(
        "wattline/v1/m/m2/up",
        QoS::AtLeastOnce,
        false,
        b"forged".to_vec(),
    )
    .await
    .unwrap();
    eventually("all 50 committed", WAIT, || {
        acked.lock().unwrap().len() == 50
    })
    .await;
    eventually("meter PUBACKs", WAIT, || {
        meter.lock().unwrap().pubacks == 51
    })
    .await;
    assert_eq!(source.stats().acked(), 50, "{}", mosquitto.log());

    source
        .publish_down(&MeterId::parse("m1").unwrap(), Bytes::from_static(b"cmd"))
        .await
        .unwrap();
    eventually("command reached the meter", WAIT, || {
        !meter.lock().unwrap().publishes.is_empty()
    })
    .await;
    assert_eq!(
        meter.lock().unwrap().publishes,
        vec![(
            "wattline/v1/m/m1/down".to_owned(),
            Bytes::from_static(b"cmd")
        )]
    );
    assert_eq!(
        source.stats().received(),
        50,
        "the forged publish never arrived"
    );
    source.shutdown().await;
}
