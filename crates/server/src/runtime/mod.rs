//! The server process composed from its parts (DESIGN §3.3–§3.7): [`Server::start`] opens the
//! database, the key store, the MQTT side (embedded broker or external broker source), the
//! ingest pipeline, the HTTP app and the periodic jobs; [`ServerHandle::shutdown`] stops them
//! in the order that loses nothing.
//!
//! # Shutdown order, and why
//! 1. The MQTT side and the DLMS poller (`[dlms]`) stop first: no new deliveries. A meter's PUBACK is only ever sent after
//!    the commit, so whatever was not committed yet is still in the meter's outbox and is sent
//!    again on reconnect (ingest dedups on `(meter, boot_id, seq)`).
//! 2. Ingest drains: deliveries already queued are committed (and acknowledged where the
//!    connection still exists).
//! 3. The periodic jobs and the command dispatcher stop (they all watch one shutdown channel).
//! 4. The HTTP server stops accepting and finishes the requests under way.
//!
//! # Adding a periodic job
//! Add one line in [`Server::start`] pushing the job's `JoinHandle` onto `jobs`; the job takes a
//! clone of `shutdown_rx` (`tokio::sync::watch::Receiver<bool>`) and returns when it turns true.
//!
//! # The jobs
//! Key-store refresh; retention (`[retention]`); the alarm jobs (`[alarms]`), which raise the
//! notification of every newly opened alarm; notification delivery, digests and the peak-hour
//! check (`[notify]`); billing — the monthly bill run and the prepaid checks, raising bill-issued
//! and low-credit notifications (`[billing]`); the monthly consumption report (`[reports]`).
//! The DLMS poller (`[[dlms.meters]]`, [`crate::dlms::poller`]) is an ingest source rather than
//! a job: it stops with the MQTT side, so ingest still commits a poll under way.
//! The notifier is built before anything listens, so a bad `[notify]` file (password, webhook
//! secret) stops the start with its key named; without `smtp_host` the email channel is off
//! and one warning says so.

mod automation;
mod config;

pub use automation::{BillingSection, NotifySection, ReportsSection, SmtpSecuritySetting};
pub use config::{
    ConfigError, EmbeddedMqtt, ExternalMqtt, HttpSection, IngestSection, MqttConfig,
    RetentionSection, ServerConfig, StoreConfig,
};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::broker::{self, BrokerConfig, BrokerHandle, Transport};
use crate::commands::{Dispatcher, DispatcherConfig, DownLink};
use crate::http::{AppState, HttpConfig};
use crate::keystore::KeyStore;
use crate::pki::files::PkiFiles;
use crate::source::external::{self, ExternalConfig, ExternalSource};
use crate::{Database, Error, Ingest, IngestConfig, PgConfig, PgStore, SqliteStore};

/// Why the server could not start: which part, and what went wrong.
#[derive(Debug)]
pub struct StartError {
    /// The listen address that was in use, when that is the reason (the caller may name the
    /// flag or key to change).
    pub addr_in_use: Option<SocketAddr>,
    message: String,
}

impl StartError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            addr_in_use: None,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StartError {}

impl From<Error> for StartError {
    fn from(e: Error) -> Self {
        Self::new(e.to_string())
    }
}

/// The running MQTT side.
enum MqttSide {
    Embedded(Arc<BrokerHandle>),
    External(Arc<ExternalSource>),
}

/// The server.
pub struct Server;

/// A running server: its addresses, its state, and the way to stop it.
pub struct ServerHandle {
    http_addr: SocketAddr,
    mqtt_addr: Option<SocketAddr>,
    state: AppState,
    keys: Arc<KeyStore>,
    ingest: Arc<Ingest>,
    mqtt: MqttSide,
    feeder: JoinHandle<()>,
    dispatcher: Dispatcher,
    http: JoinHandle<()>,
    jobs: Vec<JoinHandle<()>>,
    shutdown_tx: watch::Sender<bool>,
    notifier: crate::notify::Notifier,
    dlms: Option<crate::dlms::PollerHandle>,
}

fn read_file(path: &Path, what: &str) -> Result<String, StartError> {
    std::fs::read_to_string(path)
        .map_err(|e| StartError::new(format!("cannot read {what} {}: {e}", path.display())))
}

fn or_default(p: &Option<PathBuf>, default: PathBuf) -> PathBuf {
    p.clone().unwrap_or(default)
}

/// Opens the store a server with `config` uses (SQLite in the data directory or PostgreSQL);
/// the administration commands (`wattline meter|user`) share it through `--config`.
pub async fn open_database(config: &ServerConfig) -> Result<Database, StartError> {
    Ok(match &config.store {
        StoreConfig::Sqlite => {
            Database::Sqlite(SqliteStore::open(&config.data_dir).await.map_err(|e| {
                StartError::new(format!(
                    "opening the SQLite store in {}: {e}",
                    config.data_dir.display()
                ))
            })?)
        }
        StoreConfig::Postgres {
            host,
            port,
            user,
            dbname,
            password_file,
            schema,
            pool_size,
        } => {
            let password = match password_file {
                Some(p) => Some(
                    read_file(p, "[store] password_file")?
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_owned(),
                ),
                None => None,
            };
            let pg = PgConfig {
                host: host.clone(),
                port: *port,
                user: user.clone(),
                password,
                dbname: dbname.clone(),
                schema: schema.clone(),
                pool_size: *pool_size,
            };
            Database::Postgres(Arc::new(PgStore::connect(&pg).await.map_err(|e| {
                StartError::new(format!("connecting to PostgreSQL at {host}:{port}: {e}"))
            })?))
        }
    })
}

fn client_tls(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| e.to_string())?,
    ))
}

/// Binds `addr`, naming the config key (or flag) when the address is in use.
async fn bind(addr: SocketAddr, key: &str) -> Result<tokio::net::TcpListener, StartError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        let mut err = StartError::new(format!("{key}: cannot listen on {addr}: {e}"));
        if e.kind() == std::io::ErrorKind::AddrInUse {
            err.addr_in_use = Some(addr);
        }
        err
    })
}

/// The retention job: deletes raw readings past `raw_days` whose rollups exist.
fn retention_job(
    db: Database,
    config: RetentionSection,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if config.raw_days == 0 {
            return;
        }
        let every = Duration::from_secs(config.every_s);
        loop {
            let cutoff_ms = crate::now_ms() - i64::from(config.raw_days) * 86_400_000;
            match db.store().apply_retention(cutoff_ms).await {
                Ok(r) => tracing::debug!(report = ?r, "retention ran"),
                Err(e) => tracing::warn!(error = %e, "retention failed; retrying next period"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
            }
        }
    })
}

impl Server {
    /// Starts every part of the server described by `config`. The PKI files and the master key
    /// must exist in `config.data_dir` (`wattline pki init`).
    pub async fn start(config: &ServerConfig) -> Result<ServerHandle, StartError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let pki = PkiFiles::new(&config.data_dir);
        let db = open_database(config).await?;
        let keys = KeyStore::open_in(&config.data_dir, db.clone())
            .await
            .map_err(|e| {
                StartError::new(format!(
                    "opening the key store (master key {}; run `wattline pki init --data-dir {}` first): {e}",
                    pki.master_key().display(),
                    config.data_dir.display()
                ))
            })?;
        // Notification and billing settings are read (and a missing webhook secret created)
        // before anything listens, so a bad file stops the start with its key named.
        let notifier = crate::notify::Notifier::new(
            db.clone(),
            config
                .notify
                .notify_config(&config.data_dir)
                .map_err(StartError::new)?,
        )?;
        let billing_jobs = config.billing.jobs().map_err(StartError::new)?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut jobs: Vec<JoinHandle<()>> = Vec::new();
        jobs.push(keys.spawn_refresh());

        let ingest = Arc::new(Ingest::start(
            db.store(),
            keys.clone(),
            IngestConfig {
                max_deliveries_per_tx: config.ingest.max_deliveries_per_tx,
                queue_len: config.ingest.queue_len,
                max_future_ms: config.ingest.max_future_s as i64 * 1000,
                max_age_ms: config.ingest.max_age_days as i64 * 86_400_000,
                ..IngestConfig::default()
            },
        ));

        // The MQTT side feeds ingest through one channel; a full channel is back-pressure.
        let (tx, rx) = mpsc::channel(config.ingest.queue_len.min(65_536));
        let (mqtt, mqtt_addr, link): (MqttSide, Option<SocketAddr>, Arc<dyn DownLink>) =
            match &config.mqtt {
                MqttConfig::Embedded(EmbeddedMqtt {
                    listen,
                    cert_file,
                    key_file,
                    ca_file,
                    allow_plain,
                    max_unacked_per_connection,
                }) => {
                    let transport = if *allow_plain {
                        tracing::warn!(
                            %listen,
                            "[mqtt] allow_plain = true: the broker listens WITHOUT TLS; anyone on the network can impersonate a meter"
                        );
                        Transport::PlainInsecure
                    } else {
                        let ca = read_file(&or_default(ca_file, pki.ca_cert()), "[mqtt] ca_file")?;
                        let cert = read_file(
                            &or_default(cert_file, pki.broker_cert()),
                            "[mqtt] cert_file",
                        )?;
                        let key_path = or_default(key_file, pki.broker_key());
                        crate::keystore::check_owner_only(&key_path)
                            .map_err(|e| StartError::new(format!("[mqtt] key_file: {e}")))?;
                        let key = read_file(&key_path, "[mqtt] key_file")?;
                        Transport::Tls(broker::server_config(&ca, &cert, &key).map_err(|e| {
                            StartError::new(format!("[mqtt] broker certificate: {e}"))
                        })?)
                    };
                    let mut bc = BrokerConfig::tls(*listen, Arc::new(placeholder_tls()?));
                    bc.transport = transport;
                    bc.max_unacked_per_connection = *max_unacked_per_connection;
                    let handle = broker::start(bc, tx).await.map_err(|e| {
                        let mut err = StartError::new(format!("[mqtt] listen: {e}"));
                        if matches!(e.kind(), broker::MqttErrorKind::Bind { detail, .. } if detail.contains("in use"))
                        {
                            err.addr_in_use = Some(*listen);
                        }
                        err
                    })?;
                    let addr = handle.local_addr();
                    let handle = Arc::new(handle);
                    (MqttSide::Embedded(handle.clone()), Some(addr), handle)
                }
                MqttConfig::External(ExternalMqtt {
                    host,
                    port,
                    client_id,
                    group,
                    tls,
                    ca_file,
                    cert_file,
                    key_file,
                }) => {
                    let mut ec = ExternalConfig::plain(host, *port, client_id);
                    ec.group = group.clone();
                    if *tls {
                        let ca = read_file(&or_default(ca_file, pki.ca_cert()), "[mqtt] ca_file")?;
                        let cert = read_file(
                            cert_file.as_ref().expect("validated: cert_file with tls"),
                            "[mqtt] cert_file",
                        )?;
                        let key = read_file(
                            key_file.as_ref().expect("validated: key_file with tls"),
                            "[mqtt] key_file",
                        )?;
                        ec.tls = Some(client_tls(&ca, &cert, &key).map_err(|e| {
                            StartError::new(format!("[mqtt] client certificate: {e}"))
                        })?);
                    }
                    let source = Arc::new(external::start(ec, tx).map_err(|e| {
                        StartError::new(format!("[mqtt] external broker {host}:{port}: {e}"))
                    })?);
                    (MqttSide::External(source.clone()), None, source)
                }
            };
        let feeder = {
            let ingest = ingest.clone();
            tokio::spawn(async move { crate::source::feed(rx, &ingest).await })
        };

        let dispatcher =
            Dispatcher::start(db.store(), keys.clone(), link, DispatcherConfig::default());

        // DLMS meters are one more ingest source (stopped with the MQTT side).
        let dlms =
            crate::dlms::poller::start(db.clone(), keys.clone(), ingest.clone(), &config.dlms)
                .map_err(StartError::new)?;

        // Periodic jobs: one line each, all stopping on `shutdown_rx`.
        jobs.push(retention_job(
            db.clone(),
            config.retention.clone(),
            shutdown_rx.clone(),
        ));
        jobs.push(crate::alarms::spawn_jobs(
            db.clone(),
            config.alarms.clone(),
            Some(notifier.clone()),
            shutdown_rx.clone(),
        ));
        jobs.push(crate::notify::spawn_jobs(
            notifier.clone(),
            db.clone(),
            config.notify.jobs(),
            shutdown_rx.clone(),
        ));
        jobs.push(crate::billing::spawn_jobs(
            db.clone(),
            billing_jobs,
            Some(notifier.clone()),
            shutdown_rx.clone(),
        ));
        if config.reports.monthly {
            jobs.push(crate::reports::spawn_jobs(
                db.clone(),
                config.reports.dir(&config.data_dir),
                shutdown_rx.clone(),
            ));
        }

        // HTTP.
        let admin_token = match &config.http.admin_token_file {
            Some(p) => {
                let t = read_file(p, "[http] admin_token_file")?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned();
                if t.len() < 16 {
                    return Err(StartError::new(format!(
                        "[http] admin_token_file: the token in {} must have at least 16 characters",
                        p.display()
                    )));
                }
                Some(t)
            }
            None => None,
        };
        let https = config.http.tls_cert_file.is_some();
        let listener = bind(config.http.listen, "[http] listen").await?;
        let http_addr = listener
            .local_addr()
            .map_err(|e| StartError::new(format!("[http] listen: {e}")))?;
        let public_url =
            config.http.public_url.clone().unwrap_or_else(|| {
                format!("{}://{http_addr}", if https { "https" } else { "http" })
            });
        let state = AppState::new(
            db.clone(),
            HttpConfig {
                admin_token,
                secure_cookies: https,
                public_url,
            },
        )
        .with_ingest(&ingest)
        .with_dispatcher(&dispatcher)
        .with_metrics_public(config.http.metrics_public)
        .with_notifier(notifier.clone());
        let app = crate::http::app(state.clone());
        let http = if let (Some(cert), Some(key)) =
            (&config.http.tls_cert_file, &config.http.tls_key_file)
        {
            let tls = crate::pki::https::server_config_from_files(cert, key)
                .map_err(|e| StartError::new(format!("[http] tls_cert_file/tls_key_file: {e}")))?;
            let mut stop = shutdown_rx.clone();
            tokio::spawn(async move {
                tokio::select! {
                    r = crate::pki::https::serve_https(listener, app, tls) => {
                        if let Err(e) = r { tracing::error!(error = %e, "https server failed") }
                    }
                    _ = stop.wait_for(|s| *s) => {}
                }
            })
        } else {
            let mut stop = shutdown_rx.clone();
            tokio::spawn(async move {
                let served = axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "http server failed");
                }
            })
        };
        state.set_ready(true);
        tracing::info!(
            http = %http_addr,
            mqtt = ?mqtt_addr,
            backend = db.backend(),
            data_dir = %config.data_dir.display(),
            "server started"
        );
        Ok(ServerHandle {
            http_addr,
            mqtt_addr,
            state,
            keys,
            ingest,
            mqtt,
            feeder,
            dispatcher,
            http,
            jobs,
            shutdown_tx,
            notifier,
            dlms,
        })
    }
}

/// The broker config constructor wants a TLS config; a plain listener replaces it right away.
fn placeholder_tls() -> Result<rustls::ServerConfig, StartError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = Arc::new(rustls::server::ResolvesServerCertUsingSni::new());
    Ok(rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::new(format!("tls: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(resolver))
}

impl ServerHandle {
    /// Where the HTTP app listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where the embedded broker listens (`None` with an external broker).
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.mqtt_addr
    }

    /// The HTTP state (database, live channel, auth), e.g. to create accounts in-process.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.state.db
    }

    /// The meter key store.
    pub fn keys(&self) -> &Arc<KeyStore> {
        &self.keys
    }

    /// The embedded broker, if it runs.
    pub fn broker(&self) -> Option<&BrokerHandle> {
        match &self.mqtt {
            MqttSide::Embedded(b) => Some(b),
            MqttSide::External(_) => None,
        }
    }

    /// The notifier the jobs raise incidents through (its counters, e.g. for `/metrics`).
    pub fn notifier(&self) -> &crate::notify::Notifier {
        &self.notifier
    }

    /// The DLMS poller, when `[[dlms.meters]]` are configured.
    pub fn dlms_poller(&self) -> Option<&crate::dlms::PollerHandle> {
        self.dlms.as_ref()
    }

    /// Starts polling `section`'s meters now, when the `[dlms]` of the start configuration
    /// was empty (`wattline demo` starts its COSEM meter after the server). An error if a
    /// poller already runs or a credential file cannot be read.
    pub fn poll_dlms(&mut self, section: &crate::dlms::DlmsSection) -> Result<(), StartError> {
        if self.dlms.is_some() {
            return Err(StartError::new(
                "[dlms]: the DLMS poller is already running",
            ));
        }
        self.dlms = crate::dlms::poller::start(
            self.state.db.clone(),
            self.keys.clone(),
            self.ingest.clone(),
            section,
        )
        .map_err(StartError::new)?;
        Ok(())
    }

    /// What ingest did so far.
    pub fn ingest(&self) -> &Ingest {
        &self.ingest
    }

    /// Stops everything in the order described in the module documentation.
    pub async fn shutdown(self) {
        tracing::info!("server stopping");
        self.state.set_ready(false);
        // 1. No new deliveries. The dispatcher holds the other reference to the MQTT side;
        // the DLMS poller finishes a poll under way (ingest still commits it).
        self.dispatcher.shutdown().await;
        if let Some(dlms) = self.dlms {
            dlms.shutdown().await;
        }
        match self.mqtt {
            MqttSide::Embedded(b) => match Arc::try_unwrap(b) {
                Ok(b) => b.shutdown().await,
                Err(b) => drop(b),
            },
            MqttSide::External(s) => match Arc::try_unwrap(s) {
                Ok(s) => s.shutdown().await,
                Err(s) => drop(s),
            },
        }
        // The feeder ends when the MQTT side dropped its sender (it holds the other
        // reference to ingest).
        let mut feeder = self.feeder;
        if tokio::time::timeout(Duration::from_secs(10), &mut feeder)
            .await
            .is_err()
        {
            feeder.abort();
            let _ = feeder.await;
        }
        // 2. Commit what is queued.
        match Arc::try_unwrap(self.ingest) {
            Ok(ingest) => ingest.shutdown().await,
            Err(_) => tracing::warn!("ingest still referenced at shutdown; not drained"),
        }
        // 3 and 4. Jobs (given a moment to finish a pass) and HTTP.
        let _ = self.shutdown_tx.send(true);
        for mut job in self.jobs {
            if tokio::time::timeout(Duration::from_secs(2), &mut job)
                .await
                .is_err()
            {
                job.abort();
                let _ = job.await;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.http).await;
        tracing::info!("server stopped");
    }
}

/// Loads `path` for `wattline server --config` (kept here so the binary stays thin).
pub fn load_config(path: &Path) -> Result<ServerConfig, ConfigError> {
    ServerConfig::load(path)
}

#[cfg(test)]
mod tests;
