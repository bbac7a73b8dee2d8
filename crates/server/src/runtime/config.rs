//! The server's configuration file (TOML, `wattline server --config FILE`): one section per
//! component, each a struct whose doc comments are the user documentation and whose unknown
//! keys are errors. See `examples/server.toml` for a complete, commented file.
//!
//! ```toml
//! data_dir = "/var/lib/wattline"      # PKI files, master key, SQLite database
//!
//! [store]
//! backend = "sqlite"                  # or "postgres" with host/port/user/dbname/...
//!
//! [mqtt]
//! mode = "embedded"
//! listen = "0.0.0.0:8883"
//!
//! [http]
//! listen = "127.0.0.1:8080"
//! public_url = "https://meters.example.net"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole server configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The data directory: PKI files and the master key as `wattline pki init` writes them
    /// (`pki/ca.pem`, `pki/broker.pem`, `master.key`, ...) and, with the SQLite backend, the
    /// database. Relative paths in this file are relative to the file's directory.
    pub data_dir: PathBuf,
    /// Where the data lives.
    #[serde(default)]
    pub store: StoreConfig,
    /// How meters' MQTT messages reach the server.
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// The web pages and the JSON API.
    #[serde(default)]
    pub http: HttpSection,
    /// The ingest pipeline.
    #[serde(default)]
    pub ingest: IngestSection,
    /// How long raw readings are kept.
    #[serde(default)]
    pub retention: RetentionSection,
}

/// The `[store]` section: `backend = "sqlite"` (default) or `backend = "postgres"`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    /// One SQLite file (WAL) in `data_dir`: no service to run.
    #[default]
    Sqlite,
    /// PostgreSQL (readings partitioned by month; TimescaleDB when installed).
    Postgres {
        /// Host name or address (default `127.0.0.1`).
        #[serde(default = "default_pg_host")]
        host: String,
        /// Port (default 5432).
        #[serde(default = "default_pg_port")]
        port: u16,
        /// Role to connect as.
        user: String,
        /// Database name.
        dbname: String,
        /// A file holding the password (first line); absent for trust/peer authentication.
        #[serde(default)]
        password_file: Option<PathBuf>,
        /// Schema the tables live in (default: the role's search path, normally `public`).
        #[serde(default)]
        schema: Option<String>,
        /// Connections in the pool (default 8).
        #[serde(default = "default_pool_size")]
        pool_size: usize,
    },
}

fn default_pg_host() -> String {
    "127.0.0.1".to_owned()
}
const fn default_pg_port() -> u16 {
    5432
}
const fn default_pool_size() -> usize {
    8
}

/// The `[mqtt]` section: `mode = "embedded"` (default) or `mode = "external"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum MqttConfig {
    /// The built-in broker: meters connect to the server itself over mutual TLS.
    Embedded {
        /// Listen address (default `0.0.0.0:8883`).
        #[serde(default = "default_mqtt_listen")]
        listen: SocketAddr,
        /// The broker's certificate, PEM (default `DATA_DIR/pki/broker.pem`).
        #[serde(default)]
        cert_file: Option<PathBuf>,
        /// Its private key, PEM, mode 0600 (default `DATA_DIR/pki/broker.key`).
        #[serde(default)]
        key_file: Option<PathBuf>,
        /// The CA meters' client certificates must chain to (default `DATA_DIR/pki/ca.pem`).
        #[serde(default)]
        ca_file: Option<PathBuf>,
        /// Listen with plain TCP instead of TLS: no encryption, the MQTT client id is trusted
        /// as the meter's identity. Closed lab networks only; logs a warning (default false).
        #[serde(default)]
        allow_plain: bool,
        /// PUBLISHes per connection waiting for the database commit (default 64).
        #[serde(default = "default_max_unacked")]
        max_unacked_per_connection: usize,
    },
    /// An external broker (e.g. Mosquitto, EMQX): the server consumes through a shared
    /// subscription with manual acknowledgement, so several servers can share the load.
    External {
        /// Broker host.
        host: String,
        /// Broker port (default 8883).
        #[serde(default = "default_external_port")]
        port: u16,
        /// This server instance's MQTT client id (unique per instance).
        client_id: String,
        /// Shared-subscription group name (default `wattline`).
        #[serde(default = "default_group")]
        group: String,
        /// Use TLS (default true). With TLS the server presents a client certificate.
        #[serde(default = "default_true")]
        tls: bool,
        /// CA the broker's certificate must chain to (default `DATA_DIR/pki/ca.pem`).
        #[serde(default)]
        ca_file: Option<PathBuf>,
        /// This instance's client certificate, PEM (required with TLS).
        #[serde(default)]
        cert_file: Option<PathBuf>,
        /// Its key, PEM, mode 0600 (required with TLS).
        #[serde(default)]
        key_file: Option<PathBuf>,
    },
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig::Embedded {
            listen: default_mqtt_listen(),
            cert_file: None,
            key_file: None,
            ca_file: None,
            allow_plain: false,
            max_unacked_per_connection: default_max_unacked(),
        }
    }
}

fn default_mqtt_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8883))
}
const fn default_max_unacked() -> usize {
    64
}
const fn default_external_port() -> u16 {
    8883
}
fn default_group() -> String {
    "wattline".to_owned()
}
const fn default_true() -> bool {
    true
}

/// The `[http]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Listen address (default `127.0.0.1:8080`).
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
    /// The externally visible base URL (links in mails, CSRF origin checks); default
    /// `http://` or `https://` plus `listen`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// HTTPS certificate, PEM. With `tls_key_file`, the site is served over HTTPS only.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// HTTPS private key, PEM, mode 0600.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// A file holding a bootstrap bearer token with the admin role (first line), for
    /// programs before any account exists. Absent: no such token.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// Serve `/metrics` without credentials (for a scraper on a trusted network; default false).
    #[serde(default)]
    pub metrics_public: bool,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: default_http_listen(),
            public_url: None,
            tls_cert_file: None,
            tls_key_file: None,
            admin_token_file: None,
            metrics_public: false,
        }
    }
}

fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// The `[ingest]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSection {
    /// Deliveries written in one transaction at most (default 256).
    #[serde(default = "default_max_deliveries_per_tx")]
    pub max_deliveries_per_tx: usize,
    /// Deliveries waiting for the writer at most; beyond that the broker stops reading
    /// (back-pressure, never drops; default 4096).
    #[serde(default = "default_queue_len")]
    pub queue_len: usize,
    /// Records further in the future than this are quarantined, seconds (default 300).
    #[serde(default = "default_max_future_s")]
    pub max_future_s: u64,
    /// Records older than this are quarantined, days (default 400).
    #[serde(default = "default_max_age_days")]
    pub max_age_days: u64,
}

impl Default for IngestSection {
    fn default() -> Self {
        Self {
            max_deliveries_per_tx: default_max_deliveries_per_tx(),
            queue_len: default_queue_len(),
            max_future_s: default_max_future_s(),
            max_age_days: default_max_age_days(),
        }
    }
}

const fn default_max_deliveries_per_tx() -> usize {
    256
}
const fn default_queue_len() -> usize {
    4096
}
const fn default_max_future_s() -> u64 {
    300
}
const fn default_max_age_days() -> u64 {
    400
}

/// The `[retention]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    /// Raw readings older than this many days are deleted once their 15-minute rollup exists;
    /// 0 keeps them forever (default 400).
    #[serde(default = "default_raw_days")]
    pub raw_days: u32,
    /// How often the retention job runs, seconds (default 3600).
    #[serde(default = "default_every_s")]
    pub every_s: u64,
}

impl Default for RetentionSection {
    fn default() -> Self {
        Self {
            raw_days: default_raw_days(),
            every_s: default_every_s(),
        }
    }
}

const fn default_raw_days() -> u32 {
    400
}
const fn default_every_s() -> u64 {
    3600
}

/// A configuration error: the file, the key and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ServerConfig {
    /// Reads, resolves and validates `path`. Errors name the file and the key (and for syntax
    /// errors the line).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        let mut config: ServerConfig = toml::from_str(&text)
            .map_err(|e| ConfigError(format!("{}: {}", path.display(), e.to_string().trim())))?;
        config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        config
            .validate()
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        Ok(config)
    }

    /// Makes relative paths relative to `base` (the config file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        let fix_opt = |p: &mut Option<PathBuf>| {
            if let Some(p) = p {
                fix(p);
            }
        };
        fix(&mut self.data_dir);
        if let StoreConfig::Postgres { password_file, .. } = &mut self.store {
            fix_opt(password_file);
        }
        match &mut self.mqtt {
            MqttConfig::Embedded {
                cert_file,
                key_file,
                ca_file,
                ..
            }
            | MqttConfig::External {
                cert_file,
                key_file,
                ca_file,
                ..
            } => {
                fix_opt(cert_file);
                fix_opt(key_file);
                fix_opt(ca_file);
            }
        }
        fix_opt(&mut self.http.tls_cert_file);
        fix_opt(&mut self.http.tls_key_file);
        fix_opt(&mut self.http.admin_token_file);
    }

    /// Range and consistency checks; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if let StoreConfig::Postgres {
            user,
            dbname,
            pool_size,
            ..
        } = &self.store
        {
            if user.is_empty() {
                return Err("[store] user: must not be empty".into());
            }
            if dbname.is_empty() {
                return Err("[store] dbname: must not be empty".into());
            }
            if !(1..=256).contains(pool_size) {
                return Err(format!(
                    "[store] pool_size: must be 1 to 256, got {pool_size}"
                ));
            }
        }
        match &self.mqtt {
            MqttConfig::Embedded {
                max_unacked_per_connection,
                ..
            } => {
                if !(1..=65_535).contains(max_unacked_per_connection) {
                    return Err(format!(
                        "[mqtt] max_unacked_per_connection: must be 1 to 65535, got {max_unacked_per_connection}"
                    ));
                }
            }
            MqttConfig::External {
                client_id,
                group,
                tls,
                cert_file,
                key_file,
                ..
            } => {
                if client_id.is_empty() {
                    return Err("[mqtt] client_id: must not be empty".into());
                }
                if group.is_empty() || group.contains(['/', '+', '#']) {
                    return Err(format!(
                        "[mqtt] group: must be non-empty without '/', '+', '#', got {group:?}"
                    ));
                }
                if *tls && (cert_file.is_none() || key_file.is_none()) {
                    return Err(
                        "[mqtt] cert_file and key_file: required with tls = true (the server's client certificate)"
                            .into(),
                    );
                }
            }
        }
        if self.http.tls_cert_file.is_some() != self.http.tls_key_file.is_some() {
            return Err("[http] tls_cert_file and tls_key_file: give both or neither".into());
        }
        if let Some(url) = &self.http.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!(
                "[http] public_url: must start with http:// or https://, got {url:?}"
            ));
        }
        let i = &self.ingest;
        if !(1..=10_000).contains(&i.max_deliveries_per_tx) {
            return Err(format!(
                "[ingest] max_deliveries_per_tx: must be 1 to 10000, got {}",
                i.max_deliveries_per_tx
            ));
        }
        if !(1..=1_000_000).contains(&i.queue_len) {
            return Err(format!(
                "[ingest] queue_len: must be 1 to 1000000, got {}",
                i.queue_len
            ));
        }
        if i.max_age_days == 0 || i.max_age_days > 36_500 {
            return Err(format!(
                "[ingest] max_age_days: must be 1 to 36500, got {}",
                i.max_age_days
            ));
        }
        if i.max_future_s > 86_400 * 365 {
            return Err(format!(
                "[ingest] max_future_s: must be at most one year, got {}",
                i.max_future_s
            ));
        }
        if self.retention.every_s == 0 {
            return Err("[retention] every_s: must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServerConfig, String> {
        let dir = std::env::temp_dir().join(format!(
            "wattline-config-{}-{}",
            std::process::id(),
            crate::now_ms()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("server.toml");
        std::fs::write(&path, text).unwrap();
        let r = ServerConfig::load(&path).map_err(|e| e.0);
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    #[test]
    fn minimal_file_gets_the_documented_defaults() {
        let c = parse("data_dir = \"data\"\n").unwrap();
        assert!(c.data_dir.ends_with("data") && c.data_dir.is_absolute());
        assert_eq!(c.store, StoreConfig::Sqlite);
        assert_eq!(c.mqtt, MqttConfig::default());
        assert_eq!(c.http.listen, default_http_listen());
        assert_eq!(c.retention.raw_days, 400);
    }

    #[test]
    fn the_documented_example_file_parses() {
        let c: ServerConfig = toml::from_str(include_str!("../../../../examples/server.toml"))
            .expect("examples/server.toml parses");
        c.validate().unwrap();
        assert_eq!(c.http.listen, default_http_listen());
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let e =
            parse("data_dir = \"d\"\n[http]\nlisten = \"127.0.0.1:80\"\nlisen = 1\n").unwrap_err();
        assert!(e.contains("server.toml") && e.contains("lisen"), "{e}");
        let e = parse("data_dir = \"d\"\n[mqtt]\nlisten = \"nowhere\"\n").unwrap_err();
        assert!(e.contains("server.toml") && e.contains("listen"), "{e}");
        let e = parse("data_dir = \"d\"\n[ingest]\nqueue_len = 0\n").unwrap_err();
        assert!(e.contains("[ingest] queue_len"), "{e}");
        let e = parse("[http]\n").unwrap_err();
        assert!(e.contains("data_dir"), "{e}");
        let e =
            parse("data_dir = \"d\"\n[store]\nbackend = \"postgres\"\nuser = \"u\"\n").unwrap_err();
        assert!(e.contains("dbname"), "{e}");
        let e = parse("data_dir = \"d\"\n[http]\ntls_cert_file = \"c.pem\"\n").unwrap_err();
        assert!(e.contains("tls_key_file"), "{e}");
    }
}
