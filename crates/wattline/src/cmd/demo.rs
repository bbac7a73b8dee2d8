//! `wattline demo`: the whole system in one process — the server (SQLite, embedded MQTT/TLS
//! broker, web/API) and a fleet of simulated meters, each a real agent pipeline with its own
//! data directory, client certificate and sealing key, connecting over real MQTT/TLS.
//!
//! Everything lives in the data directory, so a second run resumes: same CA, keys, meters and
//! accounts; the meters' counters continue from their registers.
//!
//! ```text
//! DIR/pki/, DIR/master.key     CA, broker/HTTPS certificates, master key (wattline pki init)
//! DIR/wattline.db              the server's SQLite database
//! DIR/admin-token              bootstrap admin bearer token (0600)
//! DIR/demo-credentials.txt     the demo logins (0600), printed on every run
//! DIR/scenarios/*.toml         the simulator scenarios of the fleet
//! DIR/meters/<id>/             per meter: agent.toml, ca.pem, cert.pem, key.pem, seal.key, data/
//! DIR/dlms/dlms-demo-1.lls     LLS password the server polls the COSEM meter with (0600)
//! ```
//!
//! The first simulated meter also serves its COSEM server (`--cosem`, default 127.0.0.1:4059)
//! with the documented demo credentials (`agent::cosem::CosemConfig::demo`), and the server
//! polls it over DLMS as a second meter id, `dlms-demo-1`: the dashboard shows a DLMS-polled
//! meter beside the MQTT ones.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use schema::MeterId;
use server::http::Role;
use server::pki::files::PkiFiles;
use server::runtime::{EmbeddedMqtt, MqttConfig, Server, ServerConfig, ServerHandle, StoreConfig};
use server::{Customer, Meter};

use super::{BadInput, Failure, Outcome};

pub const EXAMPLES: &str = "\
Examples:
  wattline demo
  wattline demo --data-dir /tmp/wl-demo --http 127.0.0.1:9080 --mqtt 127.0.0.1:9883
  wattline demo --meters 20
  wattline demo --cosem 127.0.0.1:14059

Starts the server and a simulated fleet (resistive, pump, PV house, harmonic load, a bypass
theft and a slow theft each under an observer meter, a meter with a magnet on it, plus --meters
extra houses) in this process. The three suspects appear as cases (/api/v1/cases) within
minutes. The first meter serves DLMS/COSEM on --cosem (LLS password demo-lls, Green Book
example keys); the server polls it as meter dlms-demo-1. While it runs, try:
  wattline dlms read 127.0.0.1:4059 --association reader --password demo-lls --clock --energy
The first run creates the PKI, the meters and the accounts in --data-dir and prints the logins
(also saved to DATA_DIR/demo-credentials.txt, mode 0600); later runs resume. Ctrl-C stops.";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the demo keeps everything (created on the first run).
    #[arg(long, value_name = "DIR", default_value = "wattline-demo")]
    pub data_dir: PathBuf,
    /// Web pages and JSON API listen address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// Embedded MQTT/TLS broker listen address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8883")]
    pub mqtt: SocketAddr,
    /// The first meter's DLMS/COSEM server (TCP wrapper); if the address is taken the demo
    /// runs without it.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4059")]
    pub cosem: SocketAddr,
    /// Extra simulated houses beyond the demo fleet (0 to 500).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub meters: usize,
    /// Reporting interval of the simulated meters, seconds.
    #[arg(
        long = "interval-s",
        value_name = "S",
        default_value_t = 10,
        hide = true
    )]
    pub interval_s: u32,
}

/// One simulated meter of the fleet.
struct DemoMeter {
    id: String,
    scenario: &'static str,
    observer: bool,
    seed: Option<u64>,
    parent: Option<&'static str>,
    customer: Option<&'static str>,
    allowed_export: bool,
    what: String,
}

const SCENARIOS: &[(&str, &str)] = &[
    (
        "resistive",
        include_str!("../../../agent/src/sources/simulator/scenarios/resistive.toml"),
    ),
    (
        "pump",
        include_str!("../../../agent/src/sources/simulator/scenarios/pump.toml"),
    ),
    (
        "pv_house",
        include_str!("../../../agent/src/sources/simulator/scenarios/pv_house.toml"),
    ),
    (
        "harmonic",
        include_str!("../../../agent/src/sources/simulator/scenarios/harmonic.toml"),
    ),
    (
        "bypass_theft",
        include_str!("../../../agent/src/sources/simulator/scenarios/bypass_theft.toml"),
    ),
    (
        "tampered",
        include_str!("../../../agent/src/sources/simulator/scenarios/tampered.toml"),
    ),
    (
        "slow_theft",
        include_str!("../../../agent/src/sources/simulator/scenarios/slow_theft.toml"),
    ),
];

/// The demo customers: id, name.
const CUSTOMERS: &[(&str, &str)] = &[
    ("c-lovelace", "Ada Lovelace"),
    ("c-pump-works", "Pump Works Ltd"),
    ("c-solar", "Sunny Side Farm"),
    ("c-print", "Print Shop"),
    ("c-theft", "Back Street 13"),
    ("c-tamper", "Corner House"),
    ("c-slow", "Mill Lane 4"),
];

fn fleet(extra: usize) -> Vec<DemoMeter> {
    let m = |id: &str, scenario, what: &str| DemoMeter {
        id: id.to_owned(),
        scenario,
        observer: false,
        seed: None,
        parent: None,
        customer: None,
        allowed_export: false,
        what: what.to_owned(),
    };
    let mut v = vec![
        DemoMeter {
            customer: Some("c-lovelace"),
            ..m("demo-resistive", "resistive", "lamp + water heater")
        },
        DemoMeter {
            customer: Some("c-pump-works"),
            ..m("demo-pump", "pump", "induction motor pump")
        },
        DemoMeter {
            customer: Some("c-solar"),
            allowed_export: true,
            ..m("demo-pv", "pv_house", "PV roof, battery, EV (exports)")
        },
        DemoMeter {
            customer: Some("c-print"),
            ..m("demo-harmonic", "harmonic", "non-linear loads (harmonics)")
        },
        DemoMeter {
            observer: true,
            ..m(
                "demo-observer",
                "bypass_theft",
                "utility observer upstream of demo-theft",
            )
        },
        DemoMeter {
            parent: Some("demo-observer"),
            customer: Some("c-theft"),
            ..m("demo-theft", "bypass_theft", "house with a hidden bypass")
        },
        DemoMeter {
            customer: Some("c-tamper"),
            ..m(
                "demo-tampered",
                "tampered",
                "magnet from 30 s, cover opened",
            )
        },
        DemoMeter {
            observer: true,
            ..m(
                "demo-observer-2",
                "slow_theft",
                "utility observer upstream of demo-slow-theft",
            )
        },
        DemoMeter {
            parent: Some("demo-observer-2"),
            customer: Some("c-slow"),
            ..m(
                "demo-slow-theft",
                "slow_theft",
                "hidden load growing from 30 s over 10 minutes",
            )
        },
    ];
    for i in 0..extra {
        v.push(DemoMeter {
            seed: Some(1000 + i as u64),
            ..m(&format!("demo-house-{i:03}"), "resistive", "extra house")
        });
    }
    v
}

pub fn run(args: &Args) -> Outcome {
    if args.meters > 500 {
        return Err(anyhow!("--meters must be 0 to 500, got {}", args.meters)).bad_input();
    }
    if !(1..=900).contains(&args.interval_s) {
        return Err(anyhow!("--interval-s must be 1 to 900")).bad_input();
    }
    // Addresses in use: say which flag changes them, before anything is created.
    for (addr, flag) in [(args.http, "--http"), (args.mqtt, "--mqtt")] {
        if addr.port() != 0
            && let Err(e) = std::net::TcpListener::bind(addr)
        {
            return Err(anyhow!(
                "{addr} is not available ({e}): choose another address with {flag} ADDR"
            ))
            .bad_input();
        }
    }
    if args.cosem.port() == 0 {
        return Err(anyhow!(
            "--cosem needs a fixed port (the server polls it), got {}",
            args.cosem
        ))
        .bad_input();
    }
    // The COSEM meter is a bonus: a taken port is said clearly and the demo goes on without it.
    let cosem = match std::net::TcpListener::bind(args.cosem) {
        Ok(_) => Some(args.cosem),
        Err(e) => {
            eprintln!(
                "warning: {} is not available ({e}): the demo runs without its DLMS/COSEM meter (choose another address with --cosem ADDR)",
                args.cosem
            );
            None
        }
    };
    super::server::init_logging_with("warn,wattline=info");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(run_async(args, cosem))
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    server::keystore::replace_secret_file(path, text)
        .with_context(|| format!("writing {}", path.display()))
}

fn random_secret(chars: usize) -> anyhow::Result<String> {
    // Letters and digits without look-alikes (0/O, 1/l/I), easy to type from the banner.
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = vec![0u8; chars];
    getrandom::fill(&mut bytes).map_err(|e| anyhow!("OS random source: {e}"))?;
    // 256 % 56 != 0: reject the top values so every character is equally likely.
    let mut out = String::with_capacity(chars);
    let mut i = 0;
    while out.len() < chars {
        if i == bytes.len() {
            getrandom::fill(&mut bytes).map_err(|e| anyhow!("OS random source: {e}"))?;
            i = 0;
        }
        let b = bytes[i] as usize;
        i += 1;
        if b < 256 - 256 % ALPHABET.len() {
            out.push(ALPHABET[b % ALPHABET.len()] as char);
        }
    }
    Ok(out)
}

/// The demo accounts: username, role, customer.
const USERS: &[(&str, Role, Option<&str>)] = &[
    ("admin", Role::Admin, None),
    ("operator", Role::Operator, None),
    ("ada", Role::Customer, Some("c-lovelace")),
];

const CREDENTIALS_FILE: &str = "demo-credentials.txt";

/// Creates the demo accounts on the first run; returns the credentials text to print.
async fn ensure_accounts(handle: &ServerHandle, dir: &Path) -> anyhow::Result<String> {
    let path = dir.join(CREDENTIALS_FILE);
    let accounts = handle.database().accounts();
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut all_there = true;
        for (name, _, _) in USERS {
            all_there &= accounts.user_credentials(name).await?.is_some();
        }
        if all_there {
            return Ok(text);
        }
        bail!(
            "{} exists but the accounts it names are not all in the database; remove the data directory {} to start the demo afresh",
            path.display(),
            dir.display()
        );
    }
    let mut text = String::from("# wattline demo logins (created on the first run)\n");
    for (name, role, customer) in USERS {
        let password = random_secret(16)?;
        if accounts.user_credentials(name).await?.is_none() {
            server::auth::create_user(
                handle.state(),
                "demo",
                None,
                name,
                &password,
                *role,
                customer.map(str::to_owned),
            )
            .await
            .map_err(|e| anyhow!("creating the demo user {name}: {}", e.message))?;
        }
        let who = match customer {
            Some(c) => format!("{} (customer {c})", role.as_str()),
            None => role.as_str().to_owned(),
        };
        text.push_str(&format!("{name:<10} {password:<18} {who}\n"));
    }
    write_private(&path, &text)?;
    Ok(text)
}

/// Creates (first run) or refreshes the files of one meter; returns its agent config path.
async fn enrol(
    handle: &ServerHandle,
    pki: &PkiFiles,
    dir: &Path,
    m: &DemoMeter,
    mqtt: SocketAddr,
    interval_s: u32,
    cosem: Option<SocketAddr>,
) -> anyhow::Result<PathBuf> {
    let id = MeterId::parse(&m.id).map_err(|e| anyhow!("meter id {}: {e}", m.id))?;
    let mdir = dir.join("meters").join(&m.id);
    std::fs::create_dir_all(&mdir).with_context(|| format!("creating {}", mdir.display()))?;
    let store = handle.database().store();
    if store.meter(&id).await?.is_none() {
        let mut meter = Meter::new(id.clone(), format!("keystore:{}", m.id));
        meter.parent = m
            .parent
            .map(|p| MeterId::parse(p).map_err(|e| anyhow!("{p}: {e}")))
            .transpose()?;
        meter.customer = m.customer.map(str::to_owned);
        meter.allowed_export = m.allowed_export;
        meter.reporting_interval_s = interval_s;
        meter.site = Some("demo feeder".to_owned());
        store.upsert_meter(&meter).await?;
    }
    let key = match handle.keys().current_key(&id).await? {
        Some((_, key)) => key,
        None => handle.keys().rotate(&id).await?.1,
    };
    write_private(&mdir.join("seal.key"), &key.to_hex())?;
    let (cert, cert_key) = (mdir.join("cert.pem"), mdir.join("key.pem"));
    if !cert.exists() || !cert_key.exists() {
        let issued = pki.load_ca()?.issue_meter(&id)?;
        std::fs::write(&cert, &issued.cert_pem)
            .with_context(|| format!("writing {}", cert.display()))?;
        write_private(&cert_key, &issued.key_pem)?;
    }
    std::fs::write(mdir.join("ca.pem"), pki.ca_cert_pem()?)
        .with_context(|| format!("writing {}", mdir.join("ca.pem").display()))?;
    let scenario = dir.join("scenarios").join(format!("{}.toml", m.scenario));
    let host = if mqtt.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        mqtt.ip()
    };
    let seed = m.seed.map_or(String::new(), |s| format!("seed = {s}\n"));
    let text = format!(
        "# Written by `wattline demo` on every start (the broker port may change).\n\
         meter = {id:?}\n\
         data_dir = \"data\"\n\n\
         [source]\n\
         type = \"simulator\"\n\
         scenario = {scenario:?}\n\
         position = {position:?}\n\
         {seed}\n\
         [pipeline]\n\
         reporting_interval_s = {interval_s}\n\
         heartbeat_s = 60\n\n\
         [uplink]\n\
         host = {host:?}\n\
         port = {port}\n\
         ca_file = \"ca.pem\"\n\
         cert_file = \"cert.pem\"\n\
         key_file = \"key.pem\"\n\
         meter_key_file = \"seal.key\"\n\
         backoff_max_ms = 5000\n",
        id = m.id,
        scenario = scenario.display().to_string(),
        position = if m.observer { "observer" } else { "house" },
        host = host.to_string(),
        port = mqtt.port(),
    );
    let text = match cosem {
        None => text,
        Some(addr) => {
            let c = agent::cosem::CosemConfig::demo(addr);
            format!(
                "{text}\n# The documented demo credentials (README): never for a real meter.\n\
                 [cosem]\n\
                 listen = \"{}\"\n\
                 system_title = {:?}\n\
                 lls_password = {:?}\n\
                 block_cipher_key = {:?}\n\
                 authentication_key = {:?}\n\
                 client_system_title = {:?}\n\
                 capture_period_s = {}\n",
                c.listen,
                c.system_title,
                c.lls_password,
                c.block_cipher_key,
                c.authentication_key,
                c.client_system_title,
                c.capture_period_s,
            )
        }
    };
    let path = mdir.join("agent.toml");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

async fn run_async(args: &Args, cosem: Option<SocketAddr>) -> Outcome {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let dir = args
        .data_dir
        .canonicalize()
        .with_context(|| format!("resolving {}", args.data_dir.display()))?;
    let pki = PkiFiles::new(&dir);
    pki.init(
        "wattline demo CA",
        &["localhost".to_owned(), "127.0.0.1".to_owned()],
    )
    .with_context(|| format!("creating the demo PKI in {}", dir.display()))?;
    let token_path = dir.join("admin-token");
    if !token_path.exists() {
        write_private(&token_path, &format!("{}\n", random_secret(32)?))?;
    }
    let scenarios = dir.join("scenarios");
    std::fs::create_dir_all(&scenarios)
        .with_context(|| format!("creating {}", scenarios.display()))?;
    for (name, text) in SCENARIOS {
        let p = scenarios.join(format!("{name}.toml"));
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    }

    let mut config = ServerConfig {
        data_dir: dir.clone(),
        store: StoreConfig::Sqlite,
        mqtt: MqttConfig::Embedded(EmbeddedMqtt {
            listen: args.mqtt,
            cert_file: None,
            key_file: None,
            ca_file: None,
            allow_plain: false,
            max_unacked_per_connection: 64,
        }),
        // Short alarm intervals: the theft and tamper cases appear within minutes.
        alarms: server::alarms::AlarmConfig::demo_for_interval(args.interval_s),
        ..ServerConfig::default()
    };
    config.http.listen = args.http;
    config.http.admin_token_file = Some(token_path.clone());
    let mut handle = Server::start(&config).await.map_err(|e| {
        let flag = match e.addr_in_use {
            Some(a) if a == args.http => " (choose another address with --http ADDR)",
            Some(_) => " (choose another address with --mqtt ADDR)",
            None => "",
        };
        Failure::Runtime(anyhow!("starting the demo server: {e}{flag}"))
    })?;
    let result = run_fleet(args, &dir, &pki, &mut handle, cosem).await;
    handle.shutdown().await;
    eprintln!("demo stopped; run the same command again to resume");
    result
}

/// The meter id the demo server polls the first meter's COSEM server as.
const DLMS_METER: &str = "dlms-demo-1";

/// Registers [`DLMS_METER`] (first run), writes its LLS password file and starts polling
/// `cosem` every `interval_s`.
async fn poll_cosem_meter(
    handle: &mut ServerHandle,
    dir: &Path,
    cosem: SocketAddr,
    interval_s: u32,
) -> anyhow::Result<()> {
    let id = MeterId::parse(DLMS_METER).map_err(|e| anyhow!("{DLMS_METER}: {e}"))?;
    let store = handle.database().store();
    if store.meter(&id).await?.is_none() {
        let mut meter = Meter::new(id, format!("keystore:{DLMS_METER}"));
        meter.reporting_interval_s = interval_s;
        meter.site = Some("demo feeder (DLMS-polled)".to_owned());
        store.upsert_meter(&meter).await?;
    }
    let secrets = dir.join("dlms");
    std::fs::create_dir_all(&secrets).with_context(|| format!("creating {}", secrets.display()))?;
    let password = secrets.join(format!("{DLMS_METER}.lls"));
    write_private(
        &password,
        &format!("{}\n", agent::cosem::CosemConfig::demo(cosem).lls_password),
    )?;
    let mut m = server::dlms::DlmsMeterConfig::new(DLMS_METER, &cosem.to_string());
    m.password_file = Some(password);
    m.poll_every_s = u64::from(interval_s);
    m.retry_max_s = 30;
    handle
        .poll_dlms(&server::dlms::DlmsSection { meters: vec![m] })
        .map_err(|e| anyhow!("{e}"))
}

async fn run_fleet(
    args: &Args,
    dir: &Path,
    pki: &PkiFiles,
    handle: &mut ServerHandle,
    cosem: Option<SocketAddr>,
) -> Outcome {
    let store = handle.database().store();
    for (id, name) in CUSTOMERS {
        store
            .upsert_customer(&Customer {
                id: (*id).to_owned(),
                name: (*name).to_owned(),
                time_zone: "Europe/Berlin".to_owned(),
            })
            .await
            .map_err(|e| anyhow!("creating demo customer {id}: {e}"))?;
    }
    let mqtt = handle
        .mqtt_addr()
        .ok_or_else(|| anyhow!("the demo needs the embedded broker"))?;
    let fleet = fleet(args.meters);
    let mut configs = Vec::with_capacity(fleet.len());
    for (i, m) in fleet.iter().enumerate() {
        let serves_cosem = if i == 0 { cosem } else { None };
        configs.push(
            enrol(handle, pki, dir, m, mqtt, args.interval_s, serves_cosem)
                .await
                .with_context(|| format!("enrolling {}", m.id))?,
        );
    }
    let credentials = ensure_accounts(handle, dir).await?;

    // The agents: real pipelines, one data directory each, all stopping on one signal.
    agent::uplink::install_crypto_provider();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut agents = Vec::with_capacity(configs.len());
    for path in &configs {
        let config = agent::config::AgentConfig::load(path).map_err(|e| anyhow!(e))?;
        let source = config
            .source
            .build(None)
            .map_err(|e| anyhow!("{}: source: {e}", path.display()))?;
        let id = config.meter.to_string();
        let stop = stop_rx.clone();
        agents.push((
            id.clone(),
            tokio::spawn(async move {
                if let Err(e) = agent::pipeline::run(
                    config,
                    source,
                    agent::pipeline::RunOptions::default(),
                    stop,
                )
                .await
                {
                    tracing::error!(meter = %id, error = %e, "simulated meter stopped");
                }
            }),
        ));
    }

    // The COSEM server starts with the first meter's pipeline; a first poll that finds it
    // not yet listening is retried after 5 s.
    let polled = match cosem {
        Some(addr) => match poll_cosem_meter(handle, dir, addr, args.interval_s).await {
            Ok(()) => Some(addr),
            Err(e) => {
                eprintln!("warning: the demo does not poll its COSEM meter: {e:#}");
                None
            }
        },
        None => None,
    };

    let http = handle.http_addr();
    let mut banner = String::new();
    banner.push_str("\nwattline demo is running\n\n");
    banner.push_str(&format!(
        "  Dashboard   {}/\n",
        handle.state().config.public_url
    ));
    banner.push_str(&format!(
        "  API         http://{http}/api/v1/meters (Bearer token in {})\n",
        dir.join("admin-token").display()
    ));
    banner.push_str(&format!(
        "  Cases       http://{http}/api/v1/cases (the theft and tamper suspects, within minutes)\n"
    ));
    banner.push_str(&format!(
        "  MQTT/TLS    {mqtt} (CA {})\n",
        pki.ca_cert().display()
    ));
    if let Some(addr) = cosem {
        banner.push_str(&format!(
            "  DLMS/COSEM  {addr} ({}, LLS password demo-lls; try `wattline dlms read {addr} --association reader --password demo-lls --clock --energy`)\n",
            fleet[0].id
        ));
    }
    if polled.is_some() {
        banner.push_str(&format!(
            "              polled by the server over DLMS as meter {DLMS_METER}\n"
        ));
    }
    banner.push_str(&format!("  Data dir    {}\n", dir.display()));
    banner.push_str(&format!("  Meters      {}\n", fleet.len()));
    for m in &fleet {
        if m.id.starts_with("demo-house-") {
            continue;
        }
        banner.push_str(&format!("    {:<15} {}\n", m.id, m.what));
    }
    if args.meters > 0 {
        banner.push_str(&format!(
            "    demo-house-000…{:03} extra houses\n",
            args.meters - 1
        ));
    }
    banner.push_str(&format!(
        "\n  Logins (also in {}):\n",
        dir.join(CREDENTIALS_FILE).display()
    ));
    for line in credentials.lines().filter(|l| !l.starts_with('#')) {
        banner.push_str(&format!("    {line}\n"));
    }
    banner.push_str("\n  Ctrl-C to stop.\n");
    println!("{banner}");
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let waited = super::server::wait_for_signal().await;
    eprintln!("stopping the meters…");
    let _ = stop_tx.send(true);
    for (id, task) in agents {
        if tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .is_err()
        {
            tracing::warn!(meter = %id, "simulated meter did not stop in 15 s");
        }
    }
    eprintln!("stopping the server…");
    waited?;
    Ok(())
}
