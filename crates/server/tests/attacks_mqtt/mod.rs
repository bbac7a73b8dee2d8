//! The MQTT attack suite (issue 5): real embedded broker with real TLS, real ingest, real
//! SQLite, keys from the real key store. Each test checks that the attack fails, that an honest
//! meter keeps being stored, and that the attempt was counted.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use schema::{Batch, Body, Heartbeat, MeterId, MeterKey, Record, seal_batch, topic};
use server::broker::{self, BrokerConfig, BrokerHandle};
use server::keystore::{CertRecord, KeyStore, KeyStoreConfig, MasterKey};
use server::pki::{CertificateAuthority, IssuedCert};
use server::{Database, Ingest, IngestConfig, KeySource, Meter, SqliteStore};
use tokio::sync::mpsc;

struct Rig {
    dir: PathBuf,
    ca: CertificateAuthority,
    keys: Arc<KeyStore>,
    ingest: Arc<Ingest>,
    broker: BrokerHandle,
    db: Database,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Enrolled {
    id: MeterId,
    key: MeterKey,
    cert: IssuedCert,
}

impl Rig {
    async fn start(tweak: impl FnOnce(&mut BrokerConfig)) -> Rig {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = std::env::temp_dir().join(format!(
            "wattline-attacks-{}-{}-{}",
            std::process::id(),
            server::now_ms(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let db = Database::Sqlite(SqliteStore::open(&dir).await.unwrap());
        let master = MasterKey::create(&dir.join("master.key")).unwrap();
        let keys = KeyStore::open(db.clone(), master, KeyStoreConfig::default())
            .await
            .unwrap();
        let ca = CertificateAuthority::generate("attack-suite ca").unwrap();
        let server_cert = ca
            .issue_server(&["localhost"], &[IpAddr::V4(Ipv4Addr::LOCALHOST)])
            .unwrap();
        let tls = broker::server_config(ca.cert_pem(), &server_cert.cert_pem, &server_cert.key_pem)
            .unwrap();
        let ingest = Arc::new(Ingest::start(
            db.store(),
            keys.clone() as Arc<dyn KeySource>,
            IngestConfig::default(),
        ));
        let (tx, rx) = mpsc::channel(1024);
        let mut config = BrokerConfig::tls(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), tls);
        config.revocations = keys.revocations();
        tweak(&mut config);
        let broker = broker::start(config, tx).await.unwrap();
        let feeder = ingest.clone();
        tokio::spawn(async move { server::source::feed(rx, &feeder).await });
        Rig {
            dir,
            ca,
            keys,
            ingest,
            broker,
            db,
        }
    }

    async fn enrol(&self, name: &str) -> Enrolled {
        let id = MeterId::parse(name).unwrap();
        let (_, key) = self
            .keys
            .rotate_with_grace(&id, Duration::ZERO)
            .await
            .unwrap();
        let (cert, not_after_ms) = self.ca.issue_meter_for(&id, 30).unwrap();
        self.keys
            .record_cert(&CertRecord {
                serial: cert.serial_hex().unwrap(),
                meter: id.clone(),
                issued_ms: server::now_ms(),
                not_after_ms,
                revoked: None,
            })
            .await
            .unwrap();
        self.db
            .store()
            .upsert_meter(&Meter::new(id.clone(), "keystore"))
            .await
            .unwrap();
        Enrolled { id, key, cert }
    }

    fn port(&self) -> u16 {
        self.broker.local_addr().port()
    }

    async fn heartbeats(&self, meter: &MeterId) -> usize {
        self.db
            .store()
            .meter(meter)
            .await
            .unwrap()
            .and_then(|m| m.last_seen_ms)
            .map_or(0, |_| 1)
    }
}

fn rand_suffix() -> u64 {
    u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()),
    )
}

fn client_tls(ca_pem: &str, identity: Option<&IssuedCert>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match identity {
        Some(id) => {
            let chain = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    })
}

/// A client whose event loop runs in a task; `events` yields `Ok(packet)` or `Err(text)`
/// (the loop stops at the first error).
struct Client {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Packet, String>>,
}

fn connect(
    rig: &Rig,
    client_id: &str,
    ca_pem: &str,
    identity: Option<&IssuedCert>,
    max_packet: Option<usize>,
) -> Client {
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", rig.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
        client_tls(ca_pem, identity),
    )));
    if let Some(max) = max_packet {
        opts.set_max_packet_size(max, max);
    }
    let (client, eventloop) = AsyncClient::new(opts, 4096);
    let (tx, events) = mpsc::unbounded_channel();
    tokio::spawn(drive(eventloop, tx));
    Client { client, events }
}

async fn drive(mut eventloop: EventLoop, tx: mpsc::UnboundedSender<Result<Packet, String>>) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(p)) => {
                if tx.send(Ok(p)).is_err() {
                    return;
                }
            }
            Ok(Event::Outgoing(_)) => {}
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
                return;
            }
        }
    }
}

impl Client {
    /// Waits for CONNACK (true) or an error (false).
    async fn connected(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Ok(Packet::ConnAck(a)))) => {
                    return a.code == rumqttc::ConnectReturnCode::Success;
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_))) | Ok(None) => return false,
                Err(_) => panic!("neither CONNACK nor an error within 10 s"),
            }
        }
    }

    /// Waits until the connection fails (the server closed it).
    async fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_))) | Ok(None) => return true,
                Err(_) => return false,
            }
        }
    }

    /// Publishes and waits for its PUBACK (the record is committed).
    async fn publish_acked(&mut self, topic_name: &str, payload: Vec<u8>) {
        self.client
            .publish(topic_name, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Ok(Packet::PubAck(_)))) => return,
                Ok(Some(Ok(_))) => {}
                other => panic!("no PUBACK: {other:?}"),
            }
        }
    }
}

fn heartbeat_batch(meter: &MeterId, boot_id: u64, seq: u64) -> Batch {
    Batch {
        meter: meter.clone(),
        boot_id,
        records: vec![Record {
            seq,
            t_ms: server::now_ms(),
            body: Body::Heartbeat(Heartbeat {
                uptime_s: seq * 60,
                outbox_records: 0,
            }),
        }],
    }
}

/// An honest meter connected and storing: every call sends one more heartbeat and waits
/// until it is acknowledged (stored).
struct Honest {
    meter: Enrolled,
    client: Client,
    seq: u64,
}

impl Honest {
    async fn connect(rig: &Rig) -> Honest {
        let meter = rig.enrol("honest-1").await;
        let mut client = connect(
            rig,
            meter.id.as_str(),
            rig.ca.cert_pem(),
            Some(&meter.cert),
            None,
        );
        assert!(client.connected().await, "the honest meter connects");
        Honest {
            meter,
            client,
            seq: 0,
        }
    }

    /// Sends one heartbeat and checks it is stored (ingest's stored counter grows).
    async fn still_served(&mut self, rig: &Rig) {
        self.seq += 1;
        let before = rig.ingest.stats().stored();
        let payload = seal_batch(
            &self.meter.key,
            &heartbeat_batch(&self.meter.id, 1, self.seq),
        )
        .unwrap();
        self.client
            .publish_acked(&topic::up(&self.meter.id), payload)
            .await;
        assert_eq!(
            rig.ingest.stats().stored(),
            before + 1,
            "the honest meter's record is stored"
        );
        assert!(rig.heartbeats(&self.meter.id).await > 0);
    }
}

async fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_valid_certificate_are_refused() {
    let rig = Rig::start(|_| {}).await;
    let mut honest = Honest::connect(&rig).await;
    honest.still_served(&rig).await;

    // No client certificate.
    let mut none = connect(&rig, "mallory", rig.ca.cert_pem(), None, None);
    assert!(!none.connected().await);
    // A certificate from another CA with a valid-looking meter id.
    let rogue_ca = CertificateAuthority::generate("rogue ca").unwrap();
    let rogue = rogue_ca.issue_client("honest-1").unwrap();
    let mut other = connect(&rig, "honest-1", rig.ca.cert_pem(), Some(&rogue), None);
    assert!(!other.connected().await);
    eventually("both refusals counted", Duration::from_secs(5), || {
        rig.broker.stats().tls_refused >= 2
    })
    .await;
    // The impostor did not take over the honest meter's session.
    assert_eq!(rig.broker.stats().takeovers, 0);
    honest.still_served(&rig).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_certificates_are_refused_and_live_sessions_closed() {
    let rig = Rig::start(|_| {}).await;
    let mut honest = Honest::connect(&rig).await;
    let victim = rig.enrol("stolen-1").await;
    let mut live = connect(
        &rig,
        "stolen-1",
        rig.ca.cert_pem(),
        Some(&victim.cert),
        None,
    );
    assert!(live.connected().await);

    // Revocation of a live connection: closed within seconds, counted.
    rig.keys
        .revoke_meter(&victim.id, "meter reported stolen")
        .await
        .unwrap();
    assert!(
        live.closed_within(Duration::from_secs(3)).await,
        "the live session of the revoked meter is closed"
    );
    assert_eq!(rig.broker.stats().revoked_closed, 1);

    // A new connection with the revoked certificate is refused right after the handshake.
    let mut again = connect(
        &rig,
        "stolen-1",
        rig.ca.cert_pem(),
        Some(&victim.cert),
        None,
    );
    assert!(!again.connected().await);
    eventually("the refusal is counted", Duration::from_secs(5), || {
        rig.broker.stats().revoked_refused == 1
    })
    .await;

    // Its envelopes reaching ingest another way (an external broker, a relay) are quarantined
    // with the reason.
    let q_before = rig.ingest.stats().quarantined();
    let payload = seal_batch(&victim.key, &heartbeat_batch(&victim.id, 1, 1)).unwrap();
    let (acked, done) = tokio::sync::oneshot::channel();
    rig.ingest
        .submit(&topic::up(&victim.id), payload, Box::new(acked))
        .await
        .unwrap();
    done.await.unwrap();
    assert_eq!(rig.ingest.stats().quarantined(), q_before + 1);
    let quarantine = rig.db.store().quarantine(10).await.unwrap();
    assert!(
        quarantine
            .iter()
            .any(|q| q.entry.reason.contains("revoked") && q.entry.reason.contains("stolen")),
        "{quarantine:?}"
    );
    honest.still_served(&rig).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_or_subscribing_outside_the_own_topics_is_refused() {
    let rig = Rig::start(|_| {}).await;
    let mut honest = Honest::connect(&rig).await;
    let attacker = rig.enrol("attacker-1").await;

    // Publish a (validly sealed, by the attacker) envelope on the honest meter's topic.
    let mut a = connect(
        &rig,
        "attacker-1",
        rig.ca.cert_pem(),
        Some(&attacker.cert),
        None,
    );
    assert!(a.connected().await);
    let forged = seal_batch(&attacker.key, &heartbeat_batch(&honest.meter.id, 1, 99)).unwrap();
    a.client
        .publish(topic::up(&honest.meter.id), QoS::AtLeastOnce, false, forged)
        .await
        .unwrap();
    assert!(a.closed_within(Duration::from_secs(5)).await);
    assert_eq!(rig.broker.stats().acl_denied_publish, 1);

    // Subscribe to the honest meter's command topic.
    let mut s = connect(
        &rig,
        "attacker-1",
        rig.ca.cert_pem(),
        Some(&attacker.cert),
        None,
    );
    assert!(s.connected().await);
    s.client
        .subscribe(topic::down(&honest.meter.id), QoS::AtLeastOnce)
        .await
        .unwrap();
    assert!(s.closed_within(Duration::from_secs(5)).await);
    assert_eq!(rig.broker.stats().acl_denied_subscribe, 1);
    // Nothing of the attacker's reached the store as the honest meter's data.
    assert_eq!(rig.ingest.stats().stored(), 0);
    honest.still_served(&rig).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_modified_and_wrongly_keyed_envelopes_are_refused() {
    let rig = Rig::start(|_| {}).await;
    let mut honest = Honest::connect(&rig).await;
    honest.still_served(&rig).await;
    let attacker = rig.enrol("attacker-2").await;
    let mut a = connect(
        &rig,
        "attacker-2",
        rig.ca.cert_pem(),
        Some(&attacker.cert),
        None,
    );
    assert!(a.connected().await);
    let up = topic::up(&attacker.id);

    // Replay: the same envelope twice is stored once.
    let original = seal_batch(&attacker.key, &heartbeat_batch(&attacker.id, 7, 1)).unwrap();
    a.publish_acked(&up, original.clone()).await;
    let stored = rig.ingest.stats().stored();
    let dup = rig.ingest.stats().duplicate();
    a.publish_acked(&up, original.clone()).await;
    assert_eq!(
        rig.ingest.stats().stored(),
        stored,
        "a replay stores nothing"
    );
    assert_eq!(rig.ingest.stats().duplicate(), dup + 1, "and is counted");

    // Modified ciphertext, modified header, sealed with another meter's key, garbage.
    let mut cipher = seal_batch(&attacker.key, &heartbeat_batch(&attacker.id, 7, 2)).unwrap();
    let last = cipher.len() - 1;
    cipher[last] ^= 0x01;
    let mut header = seal_batch(&attacker.key, &heartbeat_batch(&attacker.id, 7, 3)).unwrap();
    // Find the boot id 7 in the header and change it: the AEAD covers the header.
    let at = header
        .iter()
        .position(|&b| b == 7)
        .expect("boot id byte in header");
    header[at] = 8;
    let wrong_key = seal_batch(&honest.meter.key, &heartbeat_batch(&attacker.id, 7, 4)).unwrap();
    let random_key =
        seal_batch(&MeterKey::generate(), &heartbeat_batch(&attacker.id, 7, 5)).unwrap();
    let q = rig.ingest.stats().quarantined();
    for payload in [
        cipher,
        header,
        wrong_key,
        random_key,
        b"not an envelope".to_vec(),
    ] {
        a.publish_acked(&up, payload).await;
    }
    assert_eq!(
        rig.ingest.stats().quarantined(),
        q + 5,
        "every forgery quarantined"
    );
    assert_eq!(rig.ingest.stats().stored(), stored, "none stored");
    let reasons: Vec<String> = rig
        .db
        .store()
        .quarantine(10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.entry.reason)
        .collect();
    assert!(reasons.iter().all(|r| !r.is_empty()), "{reasons:?}");
    honest.still_served(&rig).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_from_one_client_are_throttled_while_others_are_stored() {
    let rig = Rig::start(|c| {
        c.max_publishes_per_s = 20;
        c.publish_burst = 20;
    })
    .await;
    let mut honest = Honest::connect(&rig).await;
    let flooder = rig.enrol("flooder-1").await;
    let mut f = connect(
        &rig,
        "flooder-1",
        rig.ca.cert_pem(),
        Some(&flooder.cert),
        None,
    );
    assert!(f.connected().await);

    // 200 malformed payloads at QoS 0 as fast as the client can: the broker throttles it.
    let up = topic::up(&flooder.id);
    let started = Instant::now();
    let flood = {
        let client = f.client.clone();
        tokio::spawn(async move {
            for i in 0..200u32 {
                let junk = vec![(i % 251) as u8; 512];
                if client
                    .publish(up.clone(), QoS::AtMostOnce, false, junk)
                    .await
                    .is_err()
                {
                    break;
                }
            }
        })
    };
    // Meanwhile the honest meter's records keep being stored.
    for _ in 0..5 {
        honest.still_served(&rig).await;
    }
    flood.await.unwrap();
    eventually(
        "the flood is throttled and counted",
        Duration::from_secs(30),
        || rig.broker.stats().rate_limited > 0,
    )
    .await;
    // 200 messages at 20/s with a burst of 20 take at least ~9 s to get through: the limit
    // held (we do not wait for all of them).
    eventually("some junk quarantined", Duration::from_secs(10), || {
        rig.ingest.stats().quarantined() > 0
    })
    .await;
    let elapsed = started.elapsed();
    let received = rig.broker.stats().publishes_received;
    let allowed = 20.0 + 20.0 * elapsed.as_secs_f64() + 5.0 + 6.0;
    assert!(
        (received as f64) <= allowed,
        "{received} publishes accepted in {elapsed:?} exceeds the limit"
    );

    // An oversized packet closes the flooder's connection, and only that one.
    let mut big = connect(
        &rig,
        "flooder-1",
        rig.ca.cert_pem(),
        Some(&flooder.cert),
        Some(4 * 1024 * 1024),
    );
    assert!(big.connected().await);
    let before = rig.broker.stats().protocol_errors;
    big.client
        .publish(
            topic::up(&flooder.id),
            QoS::AtLeastOnce,
            false,
            vec![0u8; schema::MAX_ENVELOPE_BYTES + 4096],
        )
        .await
        .unwrap();
    assert!(big.closed_within(Duration::from_secs(10)).await);
    assert_eq!(rig.broker.stats().protocol_errors, before + 1);
    honest.still_served(&rig).await;
}
