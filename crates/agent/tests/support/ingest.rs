//! The test's ingest: subscribes to every meter's `up` and `relay` over mutual TLS, opens each
//! envelope with the key of the meter its header names (on `up` that must be the topic's
//! meter; on `relay` the topic names the forwarding meter) and dedups on `(boot_id, seq)`
//! exactly as the server's ingest does (replay window first, the stored keys as the final
//! authority).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use schema::{Command, MeterId, MeterKey, Record, ReplayWindow, Verdict};

use super::pki::Pki;

/// What ingest stored.
#[derive(Debug, Default)]
pub struct Stored {
    /// First deliveries, in arrival order: (meter, boot_id, record).
    pub records: Vec<(String, u64, Record)>,
    /// Deliveries of a key already stored.
    pub duplicates: u64,
    /// Envelopes that failed to open, with the reason.
    pub rejected: Vec<String>,
    /// Retained/live status messages seen: (meter, payload).
    pub status: Vec<(String, String)>,
    /// First deliveries that came through a neighbour: (origin meter, forwarding meter, seq).
    pub relayed: Vec<(String, String, u64)>,
    keys: HashSet<(String, u64, u64)>,
}

pub struct Ingest {
    pub stored: Arc<Mutex<Stored>>,
    client: AsyncClient,
    stop: Arc<tokio::sync::Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ingest {
    pub fn start(pki: &Pki, port: u16, meters: &[(MeterId, MeterKey)]) -> Ingest {
        agent::uplink::install_crypto_provider();
        let id = pki.client("ingest");
        let tls = agent::uplink::client_config(&pki.ca_file, &id.cert, &id.key).unwrap();
        let mut opts = MqttOptions::new("ingest", "127.0.0.1", port);
        // A persistent session: the broker queues envelopes for ingest while it is away,
        // and keeps the subscription across a broker restart (persistence is on).
        opts.set_clean_session(false);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(512 * 1024, 512 * 1024);
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls),
        )));
        let (client, mut eventloop) = AsyncClient::new(opts, 256);
        let stored = Arc::new(Mutex::new(Stored::default()));
        // Stop is a notification, not a flag polled under a short timeout: cancelling
        // `poll()` part-way through a reconnect restarts the TLS handshake, and on a busy
        // machine a handshake slower than the timeout would never complete.
        let stop = Arc::new(tokio::sync::Notify::new());
        let keys: HashMap<String, MeterKey> = meters
            .iter()
            .map(|(m, k)| (m.to_string(), k.clone()))
            .collect();
        // SUBACKs received: `start` returns only once the broker has granted the subscriptions,
        // or the broker would accept (and PUBACK) a meter's first envelopes with nobody
        // subscribed and drop them — a lost record the agent could not know about.
        let subacks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, st, c, sub) = (
            stored.clone(),
            stop.clone(),
            client.clone(),
            subacks.clone(),
        );
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut windows: HashMap<String, ReplayWindow> = HashMap::new();
                loop {
                    let event = tokio::select! {
                        _ = st.notified() => break,
                        event = eventloop.poll() => event,
                    };
                    match event {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            let _ = c.try_subscribe("wattline/v1/m/+/up", QoS::AtLeastOnce);
                            let _ = c.try_subscribe("wattline/v1/m/+/relay", QoS::AtLeastOnce);
                            let _ = c.try_subscribe("wattline/v1/m/+/status", QoS::AtLeastOnce);
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            let parts: Vec<&str> = p.topic.split('/').collect();
                            let (topic_meter, kind) = (parts[3].to_owned(), parts[4]);
                            let mut stored = s.lock().unwrap();
                            if kind == "status" {
                                stored.status.push((
                                    topic_meter,
                                    String::from_utf8_lossy(&p.payload).into_owned(),
                                ));
                                continue;
                            }
                            // On `relay` the envelope belongs to the meter its header names
                            // (authenticated by that meter's key below); on `up`, to the topic's.
                            let (meter, relayer) = if kind == "relay" {
                                match schema::Envelope::parse(&p.payload) {
                                    Ok(e) => (e.header().meter.to_string(), Some(topic_meter)),
                                    Err(e) => {
                                        stored.rejected.push(format!("relay: {e}"));
                                        continue;
                                    }
                                }
                            } else {
                                (topic_meter, None)
                            };
                            let (Some(key), Ok(meter_id)) =
                                (keys.get(&meter), MeterId::parse(&meter))
                            else {
                                stored.rejected.push(format!("unknown meter {meter}"));
                                continue;
                            };
                            match schema::open_batch(key, &meter_id, &p.payload) {
                                Err(e) => stored.rejected.push(e.to_string()),
                                Ok(batch) => {
                                    let window = windows.entry(meter.clone()).or_default();
                                    for r in batch.records {
                                        let verdict = window.accept(batch.boot_id, r.seq);
                                        let new_key = stored.keys.insert((
                                            meter.clone(),
                                            batch.boot_id,
                                            r.seq,
                                        ));
                                        if verdict == Verdict::Duplicate || !new_key {
                                            stored.duplicates += 1;
                                        } else {
                                            if let Some(relayer) = &relayer {
                                                stored.relayed.push((
                                                    meter.clone(),
                                                    relayer.clone(),
                                                    r.seq,
                                                ));
                                            }
                                            stored.records.push((meter.clone(), batch.boot_id, r));
                                        }
                                    }
                                }
                            }
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            sub.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            });
        });
        let ingest = Ingest {
            stored,
            client,
            stop,
            thread: Some(thread),
        };
        super::wait_for(
            "ingest's three subscriptions",
            Duration::from_secs(30),
            || subacks.load(std::sync::atomic::Ordering::SeqCst) >= 3,
        );
        ingest
    }

    /// Seals `commands` for `meter` and publishes them on its `down`.
    pub fn send_commands(&self, meter: &MeterId, key: &MeterKey, seq: u64, commands: &[Command]) {
        let bytes = schema::seal_commands(key, meter, 1, seq, commands).unwrap();
        self.send_raw(meter, bytes);
    }

    /// Publishes raw bytes on `meter`'s `down`.
    pub fn send_raw(&self, meter: &MeterId, bytes: Vec<u8>) {
        self.client
            .try_publish(schema::topic::down(meter), QoS::AtLeastOnce, false, bytes)
            .unwrap();
    }

    /// The records of `meter` stored so far, with their boot ids, in arrival order.
    pub fn records_of(&self, meter: &str) -> Vec<(u64, Record)> {
        self.stored
            .lock()
            .unwrap()
            .records
            .iter()
            .filter(|(m, _, _)| m == meter)
            .map(|(_, b, r)| (*b, r.clone()))
            .collect()
    }

    /// The seqs of `meter`'s records stored so far, in arrival order.
    pub fn seqs_of(&self, meter: &str) -> Vec<u64> {
        let records = self.records_of(meter);
        records.iter().map(|(_, r)| r.seq).collect()
    }

    /// Readings' (seq, import_wh) stored so far for `meter`.
    pub fn count(&self) -> usize {
        self.stored.lock().unwrap().records.len()
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
