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
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
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
    #[serde(default, deserialize_with = "mqtt_with_default_mode")]
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
    /// The monthly bill run and the prepaid credit checks.
    #[serde(default)]
    pub billing: super::automation::BillingSection,
    /// Notification delivery: SMTP, webhooks, digests and rate limits.
    #[serde(default)]
    pub notify: super::automation::NotifySection,
    /// The monthly consumption report.
    #[serde(default)]
    pub reports: super::automation::ReportsSection,
    /// Theft, tamper and supervision alarms (intervals, energy-balance network, pattern
    /// scoring); every key has a production default, see [`crate::alarms::AlarmConfig`].
    #[serde(default)]
    pub alarms: crate::alarms::AlarmConfig,
    /// DLMS/COSEM meters the server polls (`[[dlms.meters]]`); absent: none.
    #[serde(default, deserialize_with = "crate::dlms::deserialize_section")]
    pub dlms: crate::dlms::DlmsSection,
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
#[derive(Debug, Clone, PartialEq)]
pub enum MqttConfig {
    /// The built-in broker: meters connect to the server itself over mutual TLS.
    Embedded(EmbeddedMqtt),
    /// An external broker (e.g. Mosquitto, EMQX): the server consumes through a shared
    /// subscription with manual acknowledgement, so several servers can share the load.
    External(ExternalMqtt),
}

/// `[mqtt]` with `mode = "embedded"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedMqtt {
    /// Listen address (default `0.0.0.0:8883`).
    #[serde(default = "default_mqtt_listen")]
    pub listen: SocketAddr,
    /// The broker's certificate, PEM (default `DATA_DIR/pki/broker.pem`).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Its private key, PEM, mode 0600 (default `DATA_DIR/pki/broker.key`).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The CA meters' client certificates must chain to (default `DATA_DIR/pki/ca.pem`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Listen with plain TCP instead of TLS: no encryption, the MQTT client id is trusted
    /// as the meter's identity. Closed lab networks only; logs a warning (default false).
    #[serde(default)]
    pub allow_plain: bool,
    /// PUBLISHes per connection waiting for the database commit (default 64).
    #[serde(default = "default_max_unacked")]
    pub max_unacked_per_connection: usize,
}

/// `[mqtt]` with `mode = "external"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalMqtt {
    /// Broker host.
    pub host: String,
    /// Broker port (default 8883).
    #[serde(default = "default_external_port")]
    pub port: u16,
    /// This server instance's MQTT client id (unique per instance).
    pub client_id: String,
    /// Shared-subscription group name (default `wattline`).
    #[serde(default = "default_group")]
    pub group: String,
    /// Use TLS (default true). With TLS the server presents a client certificate.
    #[serde(default = "default_true")]
    pub tls: bool,
    /// CA the broker's certificate must chain to (default `DATA_DIR/pki/ca.pem`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// This instance's client certificate, PEM (required with TLS).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Its key, PEM, mode 0600 (required with TLS).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// Reads `[mqtt]`: `mode` picks the variant (missing: `"embedded"`, the documented default, so
/// a section that only moves the embedded broker's `listen` needs no `mode` line), and the
/// rest is read through serde_path_to_error so a bad value names its key (`[mqtt] listen: ...`).
fn mqtt_with_default_mode<'de, D>(d: D) -> Result<MqttConfig, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error as _;
    let mut table = toml::Table::deserialize(d)?;
    let mode = match table.remove("mode") {
        None => "embedded".to_owned(),
        Some(toml::Value::String(m)) => m,
        Some(other) => {
            return Err(D::Error::custom(format!(
                "[mqtt] mode: expected \"embedded\" or \"external\", got a {}",
                other.type_str()
            )));
        }
    };
    fn read<T: serde::de::DeserializeOwned>(table: toml::Table) -> Result<T, String> {
        serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| format!("[mqtt] {}: {}", e.path(), e.inner()))
    }
    match mode.as_str() {
        "embedded" => read(table).map(MqttConfig::Embedded),
        "external" => read(table).map(MqttConfig::External),
        other => Err(format!(
            "[mqtt] mode: expected \"embedded\" or \"external\", got {other:?}"
        )),
    }
    .map_err(D::Error::custom)
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig::Embedded(EmbeddedMqtt {
            listen: default_mqtt_listen(),
            cert_file: None,
            key_file: None,
            ca_file: None,
            allow_plain: false,
            max_unacked_per_connection: default_max_unacked(),
        })
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
            MqttConfig::Embedded(EmbeddedMqtt {
                cert_file,
                key_file,
                ca_file,
                ..
            })
            | MqttConfig::External(ExternalMqtt {
                cert_file,
                key_file,
                ca_file,
                ..
            }) => {
                fix_opt(cert_file);
                fix_opt(key_file);
                fix_opt(ca_file);
            }
        }
        fix_opt(&mut self.http.tls_cert_file);
        fix_opt(&mut self.http.tls_key_file);
        fix_opt(&mut self.http.admin_token_file);
        self.notify.resolve_paths(fix_opt);
        fix_opt(&mut self.reports.dir);
        self.dlms.resolve_paths(fix_opt);
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
            MqttConfig::Embedded(EmbeddedMqtt {
                max_unacked_per_connection,
                ..
            }) => {
                if !(1..=65_535).contains(max_unacked_per_connection) {
                    return Err(format!(
                        "[mqtt] max_unacked_per_connection: must be 1 to 65535, got {max_unacked_per_connection}"
                    ));
                }
            }
            MqttConfig::External(ExternalMqtt {
                client_id,
                group,
                tls,
                cert_file,
                key_file,
                ..
            }) => {
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
        self.billing.validate()?;
        self.notify.validate()?;
        self.alarms.validate()?;
        self.dlms.validate()?;
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
        assert_eq!(c.alarms, crate::alarms::AlarmConfig::default());
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let e =
            parse("data_dir = \"d\"\n[http]\nlisten = \"127.0.0.1:80\"\nlisen = 1\n").unwrap_err();
        assert!(e.contains("server.toml") && e.contains("lisen"), "{e}");
        let e = parse("data_dir = \"d\"\n[mqtt]\nlisten = \"nowhere\"\n").unwrap_err();
        assert!(e.contains("server.toml") && e.contains("listen"), "{e}");
        let e = parse("data_dir = \"d\"\n[mqtt]\nmode = \"cloud\"\n").unwrap_err();
        assert!(e.contains("[mqtt] mode") && e.contains("cloud"), "{e}");
        let e = parse(
            "data_dir = \"d\"\n[mqtt]\nmode = \"external\"\nhost = \"h\"\nclientid = \"x\"\n",
        )
        .unwrap_err();
        assert!(e.contains("clientid"), "{e}");
        let c = parse("data_dir = \"d\"\n[mqtt]\nlisten = \"127.0.0.1:18883\"\n").unwrap();
        assert!(
            matches!(c.mqtt, MqttConfig::Embedded(EmbeddedMqtt { listen, .. }) if listen.port() == 18883)
        );
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

    #[test]
    fn dlms_meters_parse_and_errors_name_the_key() {
        let c = parse(
            "data_dir = \"d\"\n[[dlms.meters]]\nmeter = \"sub-4\"\naddress = \"127.0.0.1:4059\"\n\
             password_file = \"sub-4.lls\"\npoll_every_s = 60\n\
             [[dlms.meters]]\nmeter = \"sub-5\"\naddress = \"meter5.example.net:4060\"\ntransport = \"hdlc\"\n\
             association = \"hls\"\nkey_file = \"/etc/wattline/sub-5.keys\"\nclock_deviation = \"local_minus_utc\"\n",
        )
        .unwrap();
        assert_eq!(c.dlms.meters.len(), 2);
        let m = &c.dlms.meters[0];
        assert_eq!((m.meter.as_str(), m.poll_every_s), ("sub-4", 60));
        assert_eq!(m.association, crate::dlms::AssociationSetting::Lls);
        assert!(
            m.password_file.as_ref().unwrap().is_absolute(),
            "relative to the file"
        );
        assert_eq!(
            c.dlms.meters[1].clock_deviation,
            crate::dlms::DeviationSetting::LocalMinusUtc
        );
        assert!(parse("data_dir = \"d\"\n").unwrap().dlms.meters.is_empty());
        let e = parse(
            "data_dir = \"d\"\n[[dlms.meters]]\nmeter = \"m\"\naddress = \"h:1\"\nassociation = \"lsl\"\n",
        )
        .unwrap_err();
        assert!(
            e.contains("[dlms] meters[0].association") && e.contains("lsl"),
            "{e}"
        );
        let e = parse("data_dir = \"d\"\n[[dlms.meters]]\nmeter = \"m\"\naddress = \"h\"\n")
            .unwrap_err();
        assert!(e.contains("[dlms] meters[0].address"), "{e}");
        let e = parse("data_dir = \"d\"\n[[dlms.meters]]\nmeter = \"m\"\naddress = \"h:1\"\n")
            .unwrap_err();
        assert!(
            e.contains("[dlms] meters[0].password_file: required"),
            "{e}"
        );
        let e = parse(
            "data_dir = \"d\"\n[[dlms.meters]]\nmeter = \"m\"\naddress = \"h:1\"\nassociation = \"public\"\npassword = \"x\"\n",
        )
        .unwrap_err();
        assert!(e.contains("password") && !e.contains("\"x\""), "{e}");
        let e = parse(
            "data_dir = \"d\"\n[[dlms.meters]]\nmeter = \"Bad Id\"\naddress = \"h:1\"\nassociation = \"public\"\n",
        )
        .unwrap_err();
        assert!(e.contains("[dlms] meters[0].meter"), "{e}");
    }

    #[test]
    fn alarms_table_parses_and_errors_name_the_key() {
        let c = parse(
            "data_dir = \"d\"\n[alarms]\nevery_s = 30\n[alarms.balance]\nbucket_s = 300\nclass = \"0.5S\"\n\
             [alarms.balance.observers.pole-7]\nthree_phase = true\n\
             transformer = { rated_kva = 250.0, no_load_loss_w = 425.0, load_loss_w = 3250.0 }\n",
        )
        .unwrap();
        assert_eq!(c.alarms.every_s, 30);
        assert_eq!(c.alarms.balance.bucket_s, 300);
        assert!(c.alarms.balance.observers["pole-7"].three_phase);
        // Keys not given keep the production defaults.
        assert_eq!(
            c.alarms.pattern,
            crate::alarms::AlarmConfig::default().pattern
        );
        assert_eq!(
            parse("data_dir = \"d\"\n").unwrap().alarms,
            crate::alarms::AlarmConfig::default()
        );
        let e = parse("data_dir = \"d\"\n[alarms.balance]\nbuckets = 10\n").unwrap_err();
        assert!(e.contains("server.toml") && e.contains("buckets"), "{e}");
        let e = parse("data_dir = \"d\"\n[alarms.balance]\nclass = \"3\"\n").unwrap_err();
        assert!(e.contains("[alarms.balance] class"), "{e}");
        let e = parse("data_dir = \"d\"\n[alarms]\nevery_s = 0\n").unwrap_err();
        assert!(e.contains("[alarms] every_s"), "{e}");
        let e =
            parse("data_dir = \"d\"\n[alarms.balance]\ncalibration_buckets = 10\n").unwrap_err();
        assert!(e.contains("[alarms.balance] calibration_buckets"), "{e}");
        let e = parse(
            "data_dir = \"d\"\n[alarms.balance.observers.pole-7]\nfeeder = [{ length_m = 100.0, cross_section_mm2 = 0.0 }]\n",
        )
        .unwrap_err();
        assert!(
            e.contains("[alarms.balance.observers.pole-7] feeder[0]"),
            "{e}"
        );
    }
}
