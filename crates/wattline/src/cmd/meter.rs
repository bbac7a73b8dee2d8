//! `wattline meter enroll|rotate-key|renew-cert|revoke|show`: a meter's identity over its life —
//! client certificate, sealing key (encrypted under the master key in the database), the agent
//! bundle it is installed from, renewal, key rotation and revocation (issue 5).
//!
//! The bundle directory holds `agent.toml` (accepted as-is by `wattline agent --config`),
//! `ca.pem`, `ID.pem`, `ID.key` and `ID.sealkey` (both mode 0600). Replaced files are written
//! to a temporary name and renamed, so an agent never reads half a key.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use schema::{MeterId, MeterKey};
use server::http::{AppState, HttpConfig};
use server::keystore::{CertRecord, KeyStore, KeyStoreConfig};
use server::pki::files::PkiFiles;
use server::pki::{IssuedCert, METER_CERT_DAYS};
use server::{Database, Meter};

use super::{BadInput, Failure, Outcome, StoreTarget, cli_actor};

pub const EXAMPLES: &str = "\
Examples:
  wattline meter enroll house-7 --data-dir /var/lib/wattline --customer c-42 --server-host mqtt.example.net
  wattline meter rotate-key house-7 --data-dir /var/lib/wattline
  wattline meter renew-cert house-7 --data-dir /var/lib/wattline
  wattline meter revoke house-7 --data-dir /var/lib/wattline --reason \"meter stolen\"
  wattline meter show house-7 --data-dir /var/lib/wattline

enroll writes a bundle (default DIR/bundles/ID): agent.toml, ca.pem, ID.pem, ID.key,
ID.sealkey. Copy it to the meter and run `wattline agent --config agent.toml` (replace the
simulator [source] with the meter's hardware). rotate-key replaces ID.sealkey in the bundle:
install it on the meter; the server accepts the old key until the meter's first envelope under
the new one (or --grace-hours). renew-cert replaces ID.pem/ID.key; the old certificate stays
valid until it expires or is revoked. revoke refuses the meter's certificates at the broker
(live connections close within seconds) and quarantines its envelopes.";

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Issue the meter's certificate and sealing key, register it, write its agent bundle.
    #[command(after_help = EXAMPLES)]
    Enroll(EnrollArgs),
    /// Make a new sealing key version and write it into the bundle.
    #[command(name = "rotate-key", after_help = EXAMPLES)]
    RotateKey(RotateArgs),
    /// Issue a new client certificate (same meter id) into the bundle.
    #[command(name = "renew-cert", after_help = EXAMPLES)]
    RenewCert(RenewArgs),
    /// Revoke the meter: its certificates and its data from now on.
    #[command(after_help = EXAMPLES)]
    Revoke(RevokeArgs),
    /// Key versions, certificates and revocation of a meter.
    #[command(after_help = EXAMPLES)]
    Show(ShowArgs),
}

#[derive(Debug, clap::Args)]
pub struct Common {
    /// The meter id: `[a-z0-9][a-z0-9-]{0,62}` (its certificate common name).
    pub id: String,
    /// The server: `--data-dir DIR` (initialised by `wattline pki init`) or `--config FILE`.
    #[command(flatten)]
    pub target: StoreTarget,
}

#[derive(Debug, clap::Args)]
pub struct EnrollArgs {
    #[command(flatten)]
    pub common: Common,
    /// The customer the meter is assigned to (must exist).
    #[arg(long, value_name = "C")]
    pub customer: Option<String>,
    /// Where to write the bundle (default DIR/bundles/ID); must not exist or be empty.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The broker host name the meter connects to (must be in the broker certificate).
    #[arg(long, value_name = "HOST", default_value = "localhost")]
    pub server_host: String,
    /// The broker's TLS port.
    #[arg(long, value_name = "PORT", default_value_t = 8883)]
    pub server_port: u16,
    /// Certificate validity, days.
    #[arg(long, value_name = "DAYS", default_value_t = METER_CERT_DAYS)]
    pub cert_days: i64,
}

#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub common: Common,
    /// The bundle to update (default DIR/bundles/ID).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// How long the old key stays accepted if the meter does not switch; 0 refuses it at once
    /// (a leaked key: data sealed with it after now is quarantined).
    #[arg(long, value_name = "H", default_value_t = 30 * 24)]
    pub grace_hours: u64,
}

#[derive(Debug, clap::Args)]
pub struct RenewArgs {
    #[command(flatten)]
    pub common: Common,
    /// The bundle to update (default DIR/bundles/ID).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Certificate validity, days.
    #[arg(long, value_name = "DAYS", default_value_t = METER_CERT_DAYS)]
    pub cert_days: i64,
}

#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    pub common: Common,
    /// Why (kept with the revocation and in the audit trail).
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub common: Common,
}

pub fn run(args: &Args) -> Outcome {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        match &args.action {
            Action::Enroll(a) => enroll(a).await,
            Action::RotateKey(a) => rotate(a).await,
            Action::RenewCert(a) => renew(a).await,
            Action::Revoke(a) => revoke(a).await,
            Action::Show(a) => show(a).await,
        }
    })
}

/// The opened data directory.
struct Opened {
    id: MeterId,
    data_dir: PathBuf,
    files: PkiFiles,
    db: Database,
    keys: Arc<KeyStore>,
}

async fn open(common: &Common) -> Result<Opened, Failure> {
    let id = MeterId::parse(&common.id)
        .map_err(|e| anyhow!("meter id {:?}: {e}", common.id))
        .bad_input()?;
    let config = common.target.server_config()?;
    let data_dir = config.data_dir.clone();
    let files = PkiFiles::new(&data_dir);
    if !files.ca_cert().exists() {
        return Err(anyhow!(
            "{} has no PKI; run `wattline pki init --data-dir {}` first",
            data_dir.display(),
            data_dir.display()
        ))
        .bad_input();
    }
    let master = files.load_master_key().map_err(|e| anyhow!(e))?;
    let db = super::open_store(&config).await?;
    let keys = KeyStore::open(db.clone(), master, KeyStoreConfig::default())
        .await
        .map_err(|e| anyhow!(e))?;
    Ok(Opened {
        id,
        data_dir,
        files,
        db,
        keys,
    })
}

fn bundle_dir(o: &Opened, out: &Option<PathBuf>) -> PathBuf {
    out.clone()
        .unwrap_or_else(|| o.data_dir.join("bundles").join(o.id.as_str()))
}

/// Records a PKI action in the server's audit trail (who, when, what, on what, why): the
/// same append-only trail the web and API actions go to. Failing to record it fails the command.
async fn audit(o: &Opened, action: &str, detail: &str) -> Outcome {
    let state = AppState::new(o.db.clone(), HttpConfig::default());
    server::auth::audit_outcome(
        &state,
        &cli_actor(),
        None,
        action,
        &format!("meter:{}", o.id),
        detail,
        "ok",
    )
    .await
    .map_err(|e| anyhow!("recording {action} in the audit trail: {}", e.message))?;
    Ok(())
}

async fn issue_cert(o: &Opened, days: i64) -> Result<IssuedCert, Failure> {
    if !(1..=3650).contains(&days) {
        return Err(anyhow!(
            "certificate validity must be 1 to 3650 days, not {days}"
        ))
        .bad_input();
    }
    let ca = o.files.load_ca().map_err(|e| anyhow!(e))?;
    let (cert, not_after_ms) = ca.issue_meter_for(&o.id, days).map_err(|e| anyhow!(e))?;
    let serial = cert.serial_hex().map_err(|e| anyhow!(e))?;
    o.keys
        .record_cert(&CertRecord {
            serial,
            meter: o.id.clone(),
            issued_ms: server::now_ms(),
            not_after_ms,
            revoked: None,
        })
        .await
        .map_err(|e| anyhow!(e))?;
    Ok(cert)
}

async fn enroll(args: &EnrollArgs) -> Outcome {
    let o = open(&args.common).await?;
    let out = bundle_dir(&o, &args.out);
    if out.exists()
        && std::fs::read_dir(&out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(anyhow!(
            "bundle directory {} exists and is not empty; choose another --out",
            out.display()
        ))
        .bad_input();
    }
    let store = o.db.store();
    if let Some(why) = o.keys.meter_revoked(&o.id) {
        return Err(anyhow!(
            "meter {} was revoked ({why}); a revoked id is not enrolled again — use a new id",
            o.id
        ))
        .bad_input();
    }
    if store.meter(&o.id).await.map_err(|e| anyhow!(e))?.is_some() {
        return Err(anyhow!(
            "meter {} is already enrolled; use `wattline meter renew-cert` or `rotate-key`",
            o.id
        ))
        .bad_input();
    }
    if let Some(c) = &args.customer
        && store.customer(c).await.map_err(|e| anyhow!(e))?.is_none()
    {
        return Err(anyhow!("customer {c:?} does not exist")).bad_input();
    }
    if args.server_host.trim().is_empty() {
        return Err(anyhow!("--server-host must not be empty")).bad_input();
    }
    let cert = issue_cert(&o, args.cert_days).await?;
    let (version, key) = o
        .keys
        .rotate_with_grace(&o.id, Duration::ZERO)
        .await
        .map_err(|e| anyhow!(e))?;
    let mut meter = Meter::new(o.id.clone(), format!("keystore:v{version}"));
    meter.customer = args.customer.clone();
    store.upsert_meter(&meter).await.map_err(|e| anyhow!(e))?;
    let ca_pem = o.files.ca_cert_pem().map_err(|e| anyhow!(e))?;
    write_bundle(
        &out,
        &o.id,
        &ca_pem,
        &cert,
        &key,
        &args.server_host,
        args.server_port,
    )
    .with_context(|| {
        format!(
            "meter {} is enrolled but its bundle could not be written; re-issue it with \
             `wattline meter renew-cert` and `rotate-key --out DIR`",
            o.id
        )
    })?;
    audit(
        &o,
        "meter.enroll",
        &format!(
            "certificate {}, key v{version}, customer {}",
            cert.serial_hex().unwrap_or_default(),
            args.customer.as_deref().unwrap_or("-")
        ),
    )
    .await?;
    println!("enrolled meter {}; bundle in {}", o.id, out.display());
    Ok(())
}

async fn rotate(args: &RotateArgs) -> Outcome {
    let o = open(&args.common).await?;
    require_enrolled(&o).await?;
    let out = bundle_dir(&o, &args.out);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let grace = Duration::from_secs(args.grace_hours.saturating_mul(3600));
    let (version, key) = o
        .keys
        .rotate_with_grace(&o.id, grace)
        .await
        .map_err(|e| anyhow!(e))?;
    let path = out.join(format!("{}.sealkey", o.id));
    replace_secret(&path, &format!("{}\n", key.to_hex()))?;
    audit(
        &o,
        "meter.rotate_key",
        &format!(
            "key v{version}, old keys accepted for up to {} h",
            args.grace_hours
        ),
    )
    .await?;
    println!(
        "meter {}: sealing key v{version} written to {}; install it on the meter (old key accepted until its first envelope under the new one, at most {} h)",
        o.id,
        path.display(),
        args.grace_hours
    );
    Ok(())
}

async fn renew(args: &RenewArgs) -> Outcome {
    let o = open(&args.common).await?;
    require_enrolled(&o).await?;
    let out = bundle_dir(&o, &args.out);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let cert = issue_cert(&o, args.cert_days).await?;
    replace_secret(&out.join(format!("{}.key", o.id)), &cert.key_pem)?;
    replace_file(&out.join(format!("{}.pem", o.id)), &cert.cert_pem)?;
    let serial = cert.serial_hex().map_err(|e| anyhow!(e))?;
    audit(&o, "meter.renew_cert", &format!("certificate {serial}")).await?;
    println!(
        "meter {}: certificate {serial} written to {}; the previous one stays valid until it expires or is revoked",
        o.id,
        out.display()
    );
    Ok(())
}

async fn revoke(args: &RevokeArgs) -> Outcome {
    let o = open(&args.common).await?;
    if args.reason.trim().is_empty() {
        return Err(anyhow!("--reason must not be empty")).bad_input();
    }
    require_enrolled(&o).await?;
    let serials = o
        .keys
        .revoke_meter(&o.id, &args.reason)
        .await
        .map_err(|e| anyhow!(e))?;
    audit(
        &o,
        "meter.revoke",
        &format!("{}; certificates {}", args.reason.trim(), serials.join(",")),
    )
    .await?;
    println!(
        "meter {} revoked ({} certificate(s)); a running server applies it within seconds",
        o.id,
        serials.len()
    );
    Ok(())
}

async fn show(args: &ShowArgs) -> Outcome {
    let o = open(&args.common).await?;
    require_enrolled(&o).await?;
    let keys =
        o.db.keys()
            .meter_keys(&o.id)
            .await
            .map_err(|e| anyhow!(e))?;
    println!("meter {}", o.id);
    if let Some(why) = o.keys.meter_revoked(&o.id) {
        println!("  REVOKED: {why}");
    }
    for k in keys {
        let state = match k.retire_at_ms {
            None => "current".to_owned(),
            Some(t) if t <= server::now_ms() => "retired".to_owned(),
            Some(t) => format!("accepted until {}", fmt_ms(t)),
        };
        println!(
            "  key v{} created {} ({state})",
            k.version,
            fmt_ms(k.created_ms)
        );
    }
    for c in o.keys.certs(&o.id).await.map_err(|e| anyhow!(e))? {
        let state = match &c.revoked {
            Some((t, why)) => format!("revoked {} ({why})", fmt_ms(*t)),
            None if c.not_after_ms <= server::now_ms() => "expired".into(),
            None => "valid".into(),
        };
        println!(
            "  certificate {} issued {} expires {} ({state})",
            c.serial,
            fmt_ms(c.issued_ms),
            fmt_ms(c.not_after_ms)
        );
    }
    Ok(())
}

/// `YYYY-MM-DD HH:MM UTC` from Unix ms (civil-from-days, H. Hinnant), without a date crate.
fn fmt_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

async fn require_enrolled(o: &Opened) -> Result<(), Failure> {
    if o.db
        .store()
        .meter(&o.id)
        .await
        .map_err(|e| anyhow!(e))?
        .is_none()
    {
        return Err(anyhow!("meter {} is not enrolled", o.id)).bad_input();
    }
    Ok(())
}

/// The agent config of a bundle: paths relative to the file, a simulator source to replace.
fn agent_toml(meter: &MeterId, host: &str, port: u16, scenario: &Path) -> String {
    let q = |s: &str| toml_string(s);
    format!(
        "# wattline agent bundle for meter {meter}, written by `wattline meter enroll`.\n\
         # Paths are relative to this file. Replace [source] with the meter's hardware\n\
         # (pzem004t, spi_adc) on a real device.\n\
         meter = {meter_q}\n\
         data_dir = \"data\"\n\
         \n\
         [source]\n\
         type = \"simulator\"\n\
         scenario = {scenario_q}\n\
         \n\
         [uplink]\n\
         host = {host_q}\n\
         port = {port}\n\
         ca_file = \"ca.pem\"\n\
         cert_file = {cert_q}\n\
         key_file = {key_q}\n\
         meter_key_file = {seal_q}\n",
        meter_q = q(meter.as_str()),
        scenario_q = q(&scenario.display().to_string()),
        host_q = q(host),
        cert_q = q(&format!("{meter}.pem")),
        key_q = q(&format!("{meter}.key")),
        seal_q = q(&format!("{meter}.sealkey")),
    )
}

/// A TOML basic string (quotes, backslashes and control characters escaped).
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The simulator scenario the bundle's agent runs until its [source] is replaced.
const BUNDLE_SCENARIO: &str =
    include_str!("../../../agent/src/sources/simulator/scenarios/resistive.toml");

fn write_bundle(
    out: &Path,
    meter: &MeterId,
    ca_pem: &str,
    cert: &IssuedCert,
    key: &MeterKey,
    host: &str,
    port: u16,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let out = out
        .canonicalize()
        .with_context(|| format!("resolving {}", out.display()))?;
    let scenario = out.join("scenario.toml");
    replace_file(&scenario, BUNDLE_SCENARIO)?;
    replace_file(&out.join("ca.pem"), ca_pem)?;
    replace_file(&out.join(format!("{meter}.pem")), &cert.cert_pem)?;
    replace_secret(&out.join(format!("{meter}.key")), &cert.key_pem)?;
    replace_secret(
        &out.join(format!("{meter}.sealkey")),
        &format!("{}\n", key.to_hex()),
    )?;
    replace_file(
        &out.join("agent.toml"),
        &agent_toml(meter, host, port, &scenario),
    )?;
    Ok(())
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Writes `text` to `path` through a temporary file and a rename.
fn replace_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = tmp_path(path);
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// Like [`replace_file`], the file created with mode 0600 from the start.
fn replace_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    server::keystore::replace_secret_file(path, text).map_err(|e| anyhow!(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        std::env::temp_dir().join(format!("{name}-{}-{nanos}", std::process::id()))
    }

    fn common(id: &str, dir: &Path) -> Common {
        Common {
            id: id.into(),
            target: StoreTarget {
                data_dir: Some(dir.to_path_buf()),
                config: None,
            },
        }
    }

    #[test]
    fn enroll_writes_a_bundle_the_agent_accepts_and_the_server_can_open() {
        let dir = temp_dir("wattline-enroll");
        let files = PkiFiles::new(&dir);
        files
            .init("test ca", &["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        let out = dir.join("bundle-h7");
        let args = EnrollArgs {
            common: common("h-7", &dir),
            customer: None,
            out: Some(out.clone()),
            server_host: "mqtt.example.net".into(),
            server_port: 8883,
            cert_days: 30,
        };
        run(&Args {
            action: Action::Enroll(args),
        })
        .unwrap();

        // The agent's own parser accepts the bundle as written.
        let config = agent::config::AgentConfig::load(&out.join("agent.toml")).unwrap();
        assert_eq!(config.meter.as_str(), "h-7");
        assert_eq!(config.uplink.host, "mqtt.example.net");
        assert_eq!(config.uplink.port, 8883);
        for f in [
            &config.uplink.ca_file,
            &config.uplink.cert_file,
            &config.uplink.key_file,
            &config.uplink.meter_key_file,
        ] {
            assert!(f.is_file(), "{}", f.display());
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in [&config.uplink.key_file, &config.uplink.meter_key_file] {
                let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", f.display());
            }
        }
        // The sealing key in the bundle is the one the server holds (encrypted) for the meter.
        let bundle_key =
            MeterKey::from_hex(&std::fs::read_to_string(&config.uplink.meter_key_file).unwrap())
                .unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let opened = rt.block_on(open(&common("h-7", &dir))).unwrap();
        let (v, server_key) = rt
            .block_on(opened.keys.current_key(&opened.id))
            .unwrap()
            .unwrap();
        assert_eq!((v, server_key.to_hex()), (1, bundle_key.to_hex()));
        assert!(
            rt.block_on(opened.db.store().meter(&opened.id))
                .unwrap()
                .is_some()
        );
        let certs = rt.block_on(opened.keys.certs(&opened.id)).unwrap();
        assert_eq!(certs.len(), 1);
        // The database never holds the key in the clear.
        let db_bytes = std::fs::read(dir.join("wattline.sqlite3")).unwrap();
        assert!(
            !db_bytes
                .windows(64)
                .any(|w| w == bundle_key.to_hex().as_bytes())
        );
        drop(opened);

        // A second enrolment of the same id is refused; rotation replaces the sealing key.
        let again = EnrollArgs {
            common: common("h-7", &dir),
            customer: None,
            out: Some(dir.join("other")),
            server_host: "localhost".into(),
            server_port: 8883,
            cert_days: 30,
        };
        assert!(matches!(
            run(&Args {
                action: Action::Enroll(again)
            }),
            Err(Failure::BadInput(_))
        ));
        run(&Args {
            action: Action::RotateKey(RotateArgs {
                common: common("h-7", &dir),
                out: Some(out.clone()),
                grace_hours: 1,
            }),
        })
        .unwrap();
        let rotated =
            MeterKey::from_hex(&std::fs::read_to_string(&config.uplink.meter_key_file).unwrap())
                .unwrap();
        assert_ne!(rotated.to_hex(), bundle_key.to_hex());
        run(&Args {
            action: Action::RenewCert(RenewArgs {
                common: common("h-7", &dir),
                out: Some(out.clone()),
                cert_days: 30,
            }),
        })
        .unwrap();
        run(&Args {
            action: Action::Revoke(RevokeArgs {
                common: common("h-7", &dir),
                reason: "test".into(),
            }),
        })
        .unwrap();
        let opened = rt.block_on(open(&common("h-7", &dir))).unwrap();
        let certs = rt.block_on(opened.keys.certs(&opened.id)).unwrap();
        assert_eq!(certs.len(), 2);
        assert!(certs.iter().all(|c| c.revoked.is_some()));
        assert!(opened.keys.meter_revoked(&opened.id).is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dates_are_formatted_in_utc() {
        assert_eq!(fmt_ms(0), "1970-01-01 00:00 UTC");
        assert_eq!(fmt_ms(1_709_210_096_000), "2024-02-29 12:34 UTC");
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(toml_string("x\ny"), "\"x\\u000ay\"");
    }
}
