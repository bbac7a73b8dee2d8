//! `wattline loadgen`: simulated meters publishing sealed readings at a set rate through a real
//! broker into the real ingest pipeline, measuring acknowledgement and end-to-end latency.
//!
//! The server side runs in this process (SQLite or PostgreSQL store, ingest, live channel), so
//! the end-to-end latency is measured from the meter's publish to the moment the records appear
//! on the server's live stream, on one clock; beside it, the server-side latency ingest records
//! itself (broker delivery → commit → live stream). Meters are real MQTT clients: with the embedded broker
//! each has its own client certificate from a throwaway CA (mutual TLS); with an external broker
//! (`--broker HOST:PORT`, plain MQTT such as the local Mosquitto) the server consumes through a
//! shared subscription with manual acknowledgement, exactly as a scaled-out deployment does.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use rumqttc::{
    AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use schema::{
    Batch, Body, EnergyCounters, MeterId, MeterKey, Phase, PhaseReading, Reading, Record,
    TotalReading, seal_batch,
};
use server::broker::{self, BrokerConfig};
use server::pki::{CertificateAuthority, IssuedCert};
use server::source::external::{self, ExternalConfig};
use server::{Ingest, IngestConfig, KeyRing, Meter, PgConfig, PgStore, SqliteStore, Store};
use tokio::sync::mpsc;

use super::{BadInput, Outcome};

pub const EXAMPLES: &str = "\
Examples:
  wattline loadgen --meters 100 --rate 1000 --duration-s 10
  wattline loadgen --meters 1000 --rate 10000 --batch 10 --duration-s 30
  wattline loadgen --broker 127.0.0.1:1883 --meters 50 --rate 2000
  wattline loadgen --store postgres://postgres@127.0.0.1:5432/test --rate 10000 --batch 10

Without --broker, the embedded broker (mutual TLS, one client certificate per meter) and the
ingest pipeline run in this process. With --broker HOST:PORT the meters publish to that plain
MQTT broker and the server consumes through a shared subscription with manual acks.
--store sqlite (default) writes to a fresh data directory; --store postgres://USER@HOST:PORT/DB
writes into a new schema loadgen_<run> of that database, dropped after the run (the password,
if the server asks for one, comes from PGPASSWORD).
Latency: publish → PUBACK (with the embedded broker sent only after the commit; an external
broker acknowledges on receipt), publish → records on the server's live stream, and the
server-side received → live (from the broker's delivery to ingest until the commit was
acknowledged and the records were on the live stream).";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Simulated meters, each with its own sealing key (and certificate with the embedded broker).
    #[arg(long, default_value_t = 100)]
    pub meters: usize,
    /// Total readings per second over all meters.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// How long to send, seconds.
    #[arg(long = "duration-s", default_value_t = 10.0)]
    pub duration_s: f64,
    /// Readings per sealed envelope.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// `HOST:PORT` of an external plain MQTT broker; without it the embedded broker is used.
    #[arg(long, value_name = "HOST:PORT")]
    pub broker: Option<String>,
    /// Data directory of the SQLite store (default: a fresh temporary directory, removed after).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// `sqlite`, or `postgres://USER@HOST[:PORT]/DBNAME` (a fresh schema, dropped after the run).
    #[arg(long, value_name = "sqlite|URL", default_value = "sqlite")]
    pub store: String,
    /// Under a steady stream, recompute the dirty rollups at most this often, seconds (the
    /// server's `IngestConfig::rollup_every`; default: the server's default).
    #[arg(long = "rollup-every-s", value_name = "S")]
    pub rollup_every_s: Option<f64>,
}

/// The store a run writes into.
#[derive(Debug, Clone)]
enum StoreChoice {
    Sqlite,
    /// Connection settings without the schema (each run makes its own).
    Postgres(PgConfig),
}

/// Parses `--store`: `sqlite` or `postgres://USER@HOST[:PORT]/DBNAME` (also `postgresql://`).
fn parse_store(text: &str) -> anyhow::Result<StoreChoice> {
    if text == "sqlite" {
        return Ok(StoreChoice::Sqlite);
    }
    let shape = "expected sqlite or postgres://USER@HOST[:PORT]/DBNAME";
    let rest = text
        .strip_prefix("postgres://")
        .or_else(|| text.strip_prefix("postgresql://"))
        .ok_or_else(|| anyhow!("--store {text:?}: {shape}"))?;
    let (authority, dbname) = rest
        .split_once('/')
        .ok_or_else(|| anyhow!("--store {text:?}: no database name; {shape}"))?;
    let (user, host_port) = authority
        .rsplit_once('@')
        .ok_or_else(|| anyhow!("--store {text:?}: no user; {shape}"))?;
    if user.contains(':') {
        bail!("--store {text:?}: put the password in PGPASSWORD, not in the URL");
    }
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| anyhow!("--store {text:?}: port {p:?} is not a number 0-65535"))?,
        ),
        None => (host_port, 5432),
    };
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    };
    if !plain(user) || !plain(host) || !plain(dbname) {
        bail!(
            "--store {text:?}: user, host and database must be non-empty and use only letters, digits, '_', '-' and '.'"
        );
    }
    Ok(StoreChoice::Postgres(PgConfig {
        host: host.to_owned(),
        port,
        user: user.to_owned(),
        password: std::env::var("PGPASSWORD").ok(),
        dbname: dbname.to_owned(),
        schema: None,
        pool_size: 8,
    }))
}

/// Drops the run's PostgreSQL schema when the run ends, however it ends.
struct DropSchema {
    config: PgConfig,
    schema: String,
}

impl Drop for DropSchema {
    fn drop(&mut self) {
        match PgStore::drop_schema_blocking(&self.config, &self.schema) {
            Ok(()) => eprintln!("dropped schema {}", self.schema),
            Err(e) => eprintln!("could not drop schema {}: {e}", self.schema),
        }
    }
}

pub fn run(args: &Args) -> Outcome {
    if !(1..=100_000).contains(&args.meters) {
        return Err(anyhow!("--meters must be 1 to 100000, got {}", args.meters)).bad_input();
    }
    if !(args.rate.is_finite() && args.rate > 0.0) {
        return Err(anyhow!(
            "--rate must be a positive number of readings per second"
        ))
        .bad_input();
    }
    if !(args.duration_s.is_finite() && args.duration_s > 0.0 && args.duration_s <= 86_400.0) {
        return Err(anyhow!("--duration-s must be in (0, 86400]")).bad_input();
    }
    if !(1..=schema::MAX_RECORDS_PER_BATCH).contains(&args.batch) {
        return Err(anyhow!(
            "--batch must be 1 to {}",
            schema::MAX_RECORDS_PER_BATCH
        ))
        .bad_input();
    }
    if let Some(s) = args.rollup_every_s
        && !(s.is_finite() && s > 0.0 && s <= 3_600.0)
    {
        return Err(anyhow!("--rollup-every-s must be in (0, 3600]")).bad_input();
    }
    let store = parse_store(&args.store).bad_input()?;
    if matches!(store, StoreChoice::Postgres(_)) && args.data_dir.is_some() {
        return Err(anyhow!("--data-dir is for --store sqlite only")).bad_input();
    }
    let external = match &args.broker {
        None => None,
        Some(text) => {
            let (host, port) = text
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
                .ok_or_else(|| anyhow!("--broker must be HOST:PORT, got {text:?}"))
                .bad_input()?;
            Some((host, port))
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(run_async(args, external, store))?;
    Ok(())
}

/// Send time of every envelope, nanoseconds since the start (0 = not sent yet).
struct SendLog {
    t0: Instant,
    sent_ns: Vec<Vec<AtomicU64>>,
}

impl SendLog {
    fn mark(&self, meter: usize, envelope: usize) {
        let ns = self.t0.elapsed().as_nanos() as u64;
        self.sent_ns[meter][envelope].store(ns.max(1), Ordering::Relaxed);
    }

    fn since_sent(&self, meter: usize, envelope: usize) -> Option<Duration> {
        let sent = self
            .sent_ns
            .get(meter)?
            .get(envelope)?
            .load(Ordering::Relaxed);
        (sent > 0).then(|| {
            Duration::from_nanos((self.t0.elapsed().as_nanos() as u64).saturating_sub(sent))
        })
    }
}

/// The CA of an embedded-broker run and one client TLS configuration per simulated meter.
type MeterTls = (CertificateAuthority, Vec<Arc<rustls::ClientConfig>>);

fn reading(t: u64) -> Reading {
    // A realistic single-phase household: 230 V, a slowly varying load, counters rising with it.
    let p_w = 400.0 + 300.0 * ((t as f64) / 30.0).sin().abs();
    let i_rms = p_w / 230.0 / 0.97;
    Reading {
        interval_s: 1.0,
        freq_hz: 50.0,
        phases: vec![PhaseReading {
            phase: Phase::A,
            v_rms: 230.0,
            i_rms,
            p_w,
            q_var: Some(p_w * 0.25),
            s_va: 230.0 * i_rms,
            pf: 0.97,
            v_thd_pct: Some(2.1),
            i_thd_pct: Some(8.4),
        }],
        total: TotalReading {
            p_w,
            q_var: Some(p_w * 0.25),
            s_va: 230.0 * i_rms,
            pf: 0.97,
        },
        counters: EnergyCounters {
            import_wh: 1_000.0 + t as f64 * 0.15,
            q1_varh: 200.0 + t as f64 * 0.04,
            ..Default::default()
        },
    }
}

fn client_tls(ca_pem: &str, id: &IssuedCert) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let chain =
        CertificateDer::pem_slice_iter(id.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?,
    ))
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

async fn run_async(
    args: &Args,
    external: Option<(String, u16)>,
    choice: StoreChoice,
) -> anyhow::Result<()> {
    let meters = args.meters;
    let total_records = (args.rate * args.duration_s).round().max(1.0) as usize;
    let envelopes_per_meter = total_records.div_ceil(meters * args.batch).max(1);
    let total_envelopes = envelopes_per_meter * meters;
    let total_records = total_envelopes * args.batch;
    let envelope_interval = Duration::from_secs_f64((meters * args.batch) as f64 / args.rate);

    // The server side: the store, meters enrolled, ingest.
    let run_tag = format!("{:x}", server::now_ms() % 0xFFFFFF);
    let temp = args.data_dir.is_none() && matches!(choice, StoreChoice::Sqlite);
    let data_dir = args.data_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("wattline-loadgen-{}", std::process::id()))
    });
    let mut drop_schema = None;
    let store: Arc<dyn Store> = match &choice {
        StoreChoice::Sqlite => Arc::new(
            SqliteStore::open(&data_dir)
                .await
                .with_context(|| format!("opening the store in {}", data_dir.display()))?,
        ),
        StoreChoice::Postgres(config) => {
            let schema = format!("loadgen_{run_tag}_{}", std::process::id());
            let config = PgConfig {
                schema: Some(schema.clone()),
                ..config.clone()
            };
            // Armed before connecting: a failed migration leaves nothing behind either.
            drop_schema = Some(DropSchema {
                config: config.clone(),
                schema: schema.clone(),
            });
            eprintln!(
                "store: PostgreSQL {}:{}/{}, schema {schema}",
                config.host, config.port, config.dbname
            );
            Arc::new(PgStore::connect(&config).await.with_context(|| {
                format!(
                    "connecting to PostgreSQL at {}:{} (database {}, user {})",
                    config.host, config.port, config.dbname, config.user
                )
            })?)
        }
    };
    let backend = match choice {
        StoreChoice::Sqlite => "SQLite",
        StoreChoice::Postgres(_) => "PostgreSQL",
    };
    let keys = KeyRing::new();
    let mut ids = Vec::with_capacity(meters);
    let mut meter_keys = Vec::with_capacity(meters);
    for i in 0..meters {
        let id = MeterId::parse(&format!("lg{run_tag}-{i:05}"))?;
        let key = MeterKey::generate();
        store
            .upsert_meter(&Meter::new(id.clone(), "loadgen"))
            .await?;
        keys.insert(id.clone(), key.clone());
        ids.push(id);
        meter_keys.push(key);
    }
    let index: Arc<HashMap<MeterId, usize>> = Arc::new(
        ids.iter()
            .cloned()
            .enumerate()
            .map(|(i, m)| (m, i))
            .collect(),
    );
    let mut ingest_config = IngestConfig::default();
    if let Some(s) = args.rollup_every_s {
        ingest_config.rollup_every = Duration::from_secs_f64(s);
    }
    let ingest = Arc::new(Ingest::start(store.clone(), Arc::new(keys), ingest_config));

    // Precomputed sealed envelopes (sealing is the meter's work, not the measurement's).
    eprintln!(
        "sealing {total_envelopes} envelopes of {} reading(s) for {meters} meters…",
        args.batch
    );
    let boot_id = server::now_ms() as u64;
    let start_ms = server::now_ms() - (envelopes_per_meter * args.batch) as i64 * 1000;
    let mut envelopes: Vec<Vec<bytes::Bytes>> = Vec::with_capacity(meters);
    for (id, key) in ids.iter().zip(&meter_keys) {
        let mut mine = Vec::with_capacity(envelopes_per_meter);
        for e in 0..envelopes_per_meter {
            let records = (0..args.batch)
                .map(|r| {
                    let seq = (e * args.batch + r + 1) as u64;
                    Record {
                        seq,
                        t_ms: start_ms + seq as i64 * 1000,
                        body: Body::Reading(reading(seq)),
                    }
                })
                .collect();
            let batch = Batch {
                meter: id.clone(),
                boot_id,
                records,
            };
            mine.push(bytes::Bytes::from(seal_batch(key, &batch)?));
        }
        envelopes.push(mine);
    }

    // The broker and the source feeding ingest.
    let (tx, rx) = mpsc::channel(4096);
    let feeder = {
        let ingest = ingest.clone();
        tokio::spawn(async move { server::source::feed(rx, &ingest).await })
    };
    let mut broker_handle = None;
    let mut external_source = None;
    let (host, port, tls): (String, u16, Option<MeterTls>) = match &external {
        None => {
            let ca = CertificateAuthority::generate("wattline loadgen ca")?;
            let server_cert =
                ca.issue_server(&["localhost"], &[IpAddr::V4(Ipv4Addr::LOCALHOST)])?;
            let cfg =
                broker::server_config(ca.cert_pem(), &server_cert.cert_pem, &server_cert.key_pem)?;
            let mut config = BrokerConfig::tls(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), cfg);
            config.max_unacked_per_connection = 256;
            let handle = broker::start(config, tx).await?;
            let port = handle.local_addr().port();
            eprintln!("issuing {meters} client certificates…");
            let mut tls = Vec::with_capacity(meters);
            for id in &ids {
                tls.push(client_tls(ca.cert_pem(), &ca.issue_meter(id)?)?);
            }
            broker_handle = Some(handle);
            ("127.0.0.1".to_owned(), port, Some((ca, tls)))
        }
        Some((host, port)) => {
            let config = ExternalConfig {
                group: format!("loadgen{run_tag}"),
                ..ExternalConfig::plain(host, *port, &format!("wattline-loadgen-{run_tag}"))
            };
            external_source = Some(external::start(config, tx)?);
            // Let the shared subscription settle before the first publish.
            tokio::time::sleep(Duration::from_millis(500)).await;
            (host.clone(), *port, None)
        }
    };

    // Live stream: end-to-end latency per envelope, from the server's live channel.
    let log = Arc::new(SendLog {
        t0: Instant::now(),
        sent_ns: (0..meters)
            .map(|_| {
                (0..envelopes_per_meter)
                    .map(|_| AtomicU64::new(0))
                    .collect()
            })
            .collect(),
    });
    let e2e = Arc::new(Mutex::new(Vec::<Duration>::with_capacity(total_envelopes)));
    let lagged = Arc::new(AtomicU64::new(0));
    let live_task = {
        let mut live = ingest.subscribe();
        let (log, e2e, lagged, index) = (log.clone(), e2e.clone(), lagged.clone(), index.clone());
        let batch = args.batch;
        tokio::spawn(async move {
            loop {
                match live.recv().await {
                    Ok(b) => {
                        let Some(&m) = index.get(&b.meter) else {
                            continue;
                        };
                        let mut last_env = usize::MAX;
                        for r in &b.records {
                            let env = (r.seq as usize - 1) / batch;
                            if env != last_env && (r.seq as usize - 1) % batch == batch - 1 {
                                if let Some(d) = log.since_sent(m, env) {
                                    e2e.lock().unwrap_or_else(|e| e.into_inner()).push(d);
                                }
                                last_env = env;
                            }
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        lagged.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    };

    // The meters.
    eprintln!("connecting {meters} meters to {host}:{port}…");
    let acked = Arc::new(AtomicU64::new(0));
    let ack_latency = Arc::new(Mutex::new(Vec::<Duration>::with_capacity(total_envelopes)));
    let mut clients: Vec<AsyncClient> = Vec::with_capacity(meters);
    let connected = Arc::new(AtomicU64::new(0));
    let tls_configs = tls.as_ref().map(|(_, t)| t.clone());
    for (i, id) in ids.iter().enumerate() {
        let mut opts = MqttOptions::new(id.as_str(), &host, port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_clean_session(true);
        opts.set_inflight(64);
        opts.set_max_packet_size(
            schema::MAX_ENVELOPE_BYTES + 1024,
            schema::MAX_ENVELOPE_BYTES + 1024,
        );
        if let Some(t) = &tls_configs {
            opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                t[i].clone(),
            )));
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 256);
        clients.push(client);
        let (acked, ack_latency, connected) =
            (acked.clone(), ack_latency.clone(), connected.clone());
        tokio::spawn(async move {
            let mut in_flight: HashMap<u16, Instant> = HashMap::new();
            let mut first_connect = true;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if first_connect {
                            connected.fetch_add(1, Ordering::Relaxed);
                            first_connect = false;
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        in_flight.insert(pkid, Instant::now());
                    }
                    Ok(Event::Incoming(Packet::PubAck(a))) => {
                        if let Some(t) = in_flight.remove(&a.pkid) {
                            acked.fetch_add(1, Ordering::Relaxed);
                            ack_latency
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(t.elapsed());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        report_connection_error(&e);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
    }
    let connect_deadline = Instant::now() + Duration::from_secs(60);
    while connected.load(Ordering::Relaxed) < meters as u64 {
        if Instant::now() > connect_deadline {
            bail!(
                "only {} of {meters} meters connected within 60 s",
                connected.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Send: each meter at its share of the rate, staggered so the total is smooth.
    let bar = indicatif::ProgressBar::new(total_records as u64);
    bar.set_message("records stored");
    let send_start = Instant::now();
    let mut senders = Vec::with_capacity(meters);
    for (i, client) in clients.iter().enumerate() {
        let client = client.clone();
        let topic = schema::topic::up(&ids[i]);
        let mine = std::mem::take(&mut envelopes[i]);
        let log = log.clone();
        let offset = envelope_interval.mul_f64(i as f64 / meters as f64);
        senders.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::from_std(send_start + offset),
                envelope_interval,
            );
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for (e, payload) in mine.into_iter().enumerate() {
                tick.tick().await;
                log.mark(i, e);
                if client
                    .publish_bytes(topic.clone(), QoS::AtLeastOnce, false, payload)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }));
    }
    let stats_done = |ingest: &Ingest| {
        let s = ingest.stats();
        s.stored() + s.duplicate() + s.quarantined()
    };
    let mut send_end = None;
    let mut idle_since = Instant::now();
    let mut last_done = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let done = stats_done(&ingest);
        bar.set_position(ingest.stats().stored());
        if send_end.is_none() && senders.iter().all(|s| s.is_finished()) {
            send_end = Some(send_start.elapsed());
        }
        let all_acked = acked.load(Ordering::Relaxed) >= total_envelopes as u64;
        if done >= total_records as u64 && all_acked {
            break;
        }
        if done != last_done {
            last_done = done;
            idle_since = Instant::now();
        } else if send_end.is_some() && idle_since.elapsed() > Duration::from_secs(15) {
            bar.abandon();
            eprintln!("no progress for 15 s; reporting what arrived");
            break;
        }
    }
    let wall = send_start.elapsed();
    bar.finish();

    // Summary.
    let s = ingest.stats();
    let (stored, duplicates, quarantined) = (s.stored(), s.duplicate(), s.quarantined());
    let mut ack_l = ack_latency
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut e2e_l = e2e.lock().unwrap_or_else(|e| e.into_inner()).clone();
    ack_l.sort();
    e2e_l.sort();
    let sent_envelopes: usize = log
        .sent_ns
        .iter()
        .map(|m| m.iter().filter(|t| t.load(Ordering::Relaxed) > 0).count())
        .sum();
    let mode = match &external {
        None => format!("embedded broker (mutual TLS) → ingest → {backend}"),
        Some((h, p)) => {
            format!("external broker {h}:{p} (shared subscription) → ingest → {backend}")
        }
    };
    println!();
    println!(
        "wattline loadgen: {meters} meters, target {:.0} readings/s, {} reading(s)/envelope, {:.1} s",
        args.rate, args.batch, args.duration_s
    );
    println!("path: {mode}");
    println!("{:<28}{:>14}", "", "count");
    println!("{:<28}{:>14}", "envelopes sent", sent_envelopes);
    println!("{:<28}{:>14}", "readings sent", sent_envelopes * args.batch);
    println!(
        "{:<28}{:>14}",
        "envelopes acknowledged",
        acked.load(Ordering::Relaxed)
    );
    println!("{:<28}{:>14}", "readings stored", stored);
    println!("{:<28}{:>14}", "duplicates", duplicates);
    println!("{:<28}{:>14}", "quarantined", quarantined);
    println!(
        "{:<28}{:>14}",
        "live events lagged",
        lagged.load(Ordering::Relaxed)
    );
    println!("{:<28}{:>12}{:>12}{:>12}", "latency", "p50", "p99", "max");
    println!(
        "{:<28}{:>12}{:>12}{:>12}",
        if external.is_none() {
            "publish → PUBACK (commit)"
        } else {
            "publish → PUBACK (broker)"
        },
        ms(percentile(&ack_l, 0.50)),
        ms(percentile(&ack_l, 0.99)),
        ms(ack_l.last().copied().unwrap_or_default())
    );
    println!(
        "{:<28}{:>12}{:>12}{:>12}",
        "publish → live stream",
        ms(percentile(&e2e_l, 0.50)),
        ms(percentile(&e2e_l, 0.99)),
        ms(e2e_l.last().copied().unwrap_or_default())
    );
    let server_side = s.latency();
    println!(
        "{:<28}{:>12}{:>12}{:>12}",
        "server: received → live",
        ms(server_side.quantile(0.50)),
        ms(server_side.quantile(0.99)),
        ms(server_side.max())
    );
    println!(
        "{:<28}{:>14.0}",
        "throughput, readings/s",
        stored as f64 / wall.as_secs_f64()
    );
    if let Some(b) = &broker_handle {
        let st = b.stats();
        println!(
            "broker: {} connected, {} PUBACKs after commit, {} refused by ACL/TLS",
            st.connected,
            st.pubacks_sent,
            st.acl_denied_publish + st.acl_denied_subscribe + st.tls_refused + st.identity_refused
        );
    }

    // Shut down in order: meters, broker/source, feeder, ingest.
    STOPPING.store(true, Ordering::Relaxed);
    for c in &clients {
        let _ = c.try_disconnect();
    }
    if let Some(b) = broker_handle {
        b.shutdown().await;
    }
    if let Some(src) = external_source {
        src.shutdown().await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), feeder).await;
    live_task.abort();
    if let Ok(ingest) = Arc::try_unwrap(ingest) {
        ingest.shutdown().await;
    }
    drop(tls);
    drop(store);
    drop(drop_schema);
    if temp {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    let lost = total_records as u64 - stored.min(total_records as u64);
    if lost > 0 {
        bail!("{lost} of {total_records} readings were not stored");
    }
    Ok(())
}

/// Set when the run is over: the meters' connections closing is then expected.
static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Connection errors of simulated meters are reported once per kind on stderr; the client
/// reconnects on the next poll.
fn report_connection_error(e: &rumqttc::ConnectionError) {
    if STOPPING.load(Ordering::Relaxed) {
        return;
    }
    static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let text = e.to_string();
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if !seen.contains(&text) && seen.len() < 8 {
        eprintln!("meter connection error: {text}");
        seen.push(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse_into_connection_settings() {
        assert!(matches!(
            parse_store("sqlite").unwrap(),
            StoreChoice::Sqlite
        ));
        let StoreChoice::Postgres(c) = parse_store("postgres://root@127.0.0.1:5433/test").unwrap()
        else {
            panic!("not postgres")
        };
        assert_eq!(
            (c.user.as_str(), c.host.as_str(), c.port, c.dbname.as_str()),
            ("root", "127.0.0.1", 5433, "test")
        );
        assert_eq!(c.schema, None, "each run makes its own schema");
        let StoreChoice::Postgres(c) = parse_store("postgresql://postgres@db-1/wattline").unwrap()
        else {
            panic!("not postgres")
        };
        assert_eq!((c.host.as_str(), c.port), ("db-1", 5432));
    }

    #[test]
    fn malformed_store_urls_are_refused_with_the_reason() {
        for (text, why) in [
            (
                "mysql://root@localhost/test",
                "expected sqlite or postgres://",
            ),
            ("postgres://127.0.0.1/test", "no user"),
            ("postgres://root@127.0.0.1", "no database name"),
            ("postgres://root@127.0.0.1:99999/test", "is not a number"),
            ("postgres://root:secret@127.0.0.1/test", "PGPASSWORD"),
            ("postgres://root@127.0.0.1/te st", "only letters"),
            ("postgres://root@/test", "non-empty"),
        ] {
            let e = parse_store(text).unwrap_err().to_string();
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
