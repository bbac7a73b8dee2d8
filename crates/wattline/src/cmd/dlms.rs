//! `wattline dlms read HOST:PORT`: the head-end DLMS/COSEM client on the command line — the
//! server's I/O session (`server::dlms::session`: TCP wrapper or HDLC over TCP driving the
//! sans-IO `dlms::Client`, shared with the server's poller) plus argument parsing and
//! printing, with register values scaled and printed with their units.

use std::fmt::Write as _;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use ::dlms::apdu::DataAccessResult;
use ::dlms::cosem::{CaptureObject, ScalerUnit, Unit, class_id};
use ::dlms::{Client, ClientAuthentication, Data, DateTime, DeviationConvention, Obis};
use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use server::dlms::session::{self, KeyFile, Refused, Selection, Session, SessionConfig, Target};

use super::{BadInput, Failure, Outcome};

pub const EXAMPLES: &str = "\
Examples:
  wattline dlms read 127.0.0.1:4059 --clock
  wattline dlms read 127.0.0.1:4059 --association reader --password-file lls.txt --energy --instantaneous
  wattline dlms read 127.0.0.1:4059 --association reader --password demo-lls --obis 3/1.0.1.8.0.255/2
  wattline dlms read 127.0.0.1:4059 --association management --key-file meter.keys \\
      --profile 1.0.99.1.0.255 --from 2026-11-21T00:00Z --to 2026-11-21T06:00Z
  wattline dlms read 127.0.0.1:4059 --association reader --password demo-lls --profile 1.0.99.1.0.255 --entries 1..4 --json
  wattline dlms read 127.0.0.1:4059 --list-objects
  wattline dlms read 127.0.0.1:4060 --hdlc --clock

Associations (wattline convention, logical device 1): public = client SAP 16, no security,
public objects only; reader = SAP 17 with an LLS password; management = SAP 1 with HLS-GMAC and
security suite 0 (AES-128-GCM). A key file holds `block_key = HEX`, `auth_key = HEX` and
`system_title = HEX` lines (# starts a comment). Before a management association the client reads
the meter's invocation counter 0-0:43.1.0.255 over the public association unless
--invocation-counter is given. The demo meter (`cargo run -p dlms --example demo_server`) uses
the LLS password demo-lls and the Green Book example keys: block key 000102030405060708090A0B0C0D0E0F,
auth key D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF, client system title 4D4D4D0000000001.
Register values (class 3, 4, 5) are scaled with their scaler_unit (attribute 3).
Times are ISO 8601 (2026-11-21T06:00Z, 2026-11-21T07:00+01:00, 2026-11-21 = midnight UTC).
Exit codes: 0 ok, 1 runtime failure (connection, association, a read the meter refused),
2 bad usage or input.";

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Associate with a meter and read attributes, profiles or the object list.
    #[command(after_help = EXAMPLES)]
    Read(Box<ReadArgs>),
}

/// Which association to open (client SAP per the wattline convention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Association {
    /// Client SAP 16: no security, public objects only.
    Public,
    /// Client SAP 17: low-level security (password).
    Reader,
    /// Client SAP 1: HLS-GMAC with security suite 0 authenticated encryption.
    Management,
}

impl Association {
    fn session(self) -> session::Association {
        match self {
            Association::Public => session::Association::Public,
            Association::Reader => session::Association::Reader,
            Association::Management => session::Association::Management,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ReadArgs {
    /// The meter's address (the TCP wrapper's usual port is 4059).
    #[arg(value_name = "HOST:PORT")]
    pub address: String,
    /// Which association to open.
    #[arg(long, value_enum, default_value_t = Association::Public)]
    pub association: Association,
    /// LLS password for the reader association (prefer --password-file: command lines are
    /// visible to other users).
    #[arg(long, value_name = "PASSWORD", conflicts_with = "password_file")]
    pub password: Option<String>,
    /// File whose first line is the LLS password.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Global unicast encryption key (16 bytes hex) for the management association.
    #[arg(long, value_name = "HEX")]
    pub block_key: Option<String>,
    /// Authentication key (16 bytes hex) for the management association.
    #[arg(long, value_name = "HEX")]
    pub auth_key: Option<String>,
    /// Our (the client's) system title (8 bytes hex) for the management association.
    #[arg(long, value_name = "HEX")]
    pub system_title: Option<String>,
    /// File with `block_key`, `auth_key` and `system_title` lines; flags override it.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// First invocation counter to send (management); default: the meter's counter + 1, read
    /// over the public association.
    #[arg(long, value_name = "N")]
    pub invocation_counter: Option<u32>,
    /// Server logical device address.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub server_address: u16,
    /// HDLC physical (lower) server address, with --hdlc.
    #[arg(long, value_name = "N", default_value_t = 17)]
    pub physical_address: u8,
    /// HDLC (IEC 62056-46) over TCP, as through a serial-to-TCP converter, instead of the TCP
    /// wrapper.
    #[arg(long)]
    pub hdlc: bool,
    /// Seconds to wait for connecting and for each answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub timeout: f64,
    /// An attribute to read, CLASS/A.B.C.D.E.F/ATTR (e.g. 3/1.0.1.8.0.255/2); repeatable.
    #[arg(long = "obis", value_name = "CLASS/OBIS/ATTR")]
    pub obis: Vec<String>,
    /// Read the clock (8/0.0.1.0.0.255/2).
    #[arg(long)]
    pub clock: bool,
    /// Read the energy registers: active import/export and reactive quadrants I–IV (total).
    #[arg(long)]
    pub energy: bool,
    /// Read instantaneous values: voltage, current per phase, active power, PF, frequency.
    #[arg(long)]
    pub instantaneous: bool,
    /// Read a profile generic buffer (class 7), e.g. 1.0.99.1.0.255.
    #[arg(long, value_name = "OBIS")]
    pub profile: Option<String>,
    /// Profile rows captured at or after this time (with --to).
    #[arg(long, value_name = "TIME", requires_all = ["profile", "to"])]
    pub from: Option<String>,
    /// Profile rows captured at or before this time (with --from).
    #[arg(long, value_name = "TIME", requires_all = ["profile", "from"])]
    pub to: Option<String>,
    /// Profile rows by entry number, 1-based and inclusive, e.g. 1..10.
    #[arg(
        long,
        value_name = "FROM..TO",
        requires = "profile",
        conflicts_with = "from"
    )]
    pub entries: Option<String>,
    /// List the objects of the association (association LN object_list).
    #[arg(long)]
    pub list_objects: bool,
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The meter sends the date-time deviation as local − UTC (many deployed meters) instead of
    /// the Blue Book's UTC − local.
    #[arg(long)]
    pub deviation_local_minus_utc: bool,
}

pub fn run(args: &Args) -> Outcome {
    match &args.action {
        Action::Read(a) => read(a),
    }
}

/// Parses `CLASS/A.B.C.D.E.F/ATTR`.
fn parse_target(s: &str) -> anyhow::Result<Target> {
    let parts: Vec<&str> = s.split('/').collect();
    let [class, obis, attribute] = parts[..] else {
        bail!("--obis {s:?}: expected CLASS/A.B.C.D.E.F/ATTR, e.g. 3/1.0.1.8.0.255/2");
    };
    let class_id = class
        .trim()
        .parse::<u16>()
        .map_err(|_| anyhow!("--obis {s:?}: class {class:?} is not a number 0..=65535"))?;
    let obis = parse_obis(obis).with_context(|| format!("--obis {s:?}"))?;
    let attribute = attribute
        .trim()
        .parse::<i8>()
        .ok()
        .filter(|a| *a >= 1)
        .ok_or_else(|| anyhow!("--obis {s:?}: attribute {attribute:?} is not a number 1..=127"))?;
    Ok(Target::new(class_id, obis, attribute))
}

fn parse_obis(s: &str) -> anyhow::Result<Obis> {
    s.parse::<Obis>()
        .map_err(|e| anyhow!("obis code {s:?}: {}", e.kind()))
}

/// Parses an ISO 8601 time: `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS]` with `Z` or `±HH:MM`
/// (a space may replace `T`; no zone means UTC). Returns Unix seconds.
fn parse_time(s: &str) -> anyhow::Result<i64> {
    let bad = || anyhow!("time {s:?} is not YYYY-MM-DD[THH:MM[:SS]][Z|±HH:MM]");
    let t = s.trim();
    let (date, rest) = t.split_at(t.len().min(10));
    let d: Vec<&str> = date.split('-').collect();
    let [y, m, day] = d[..] else {
        return Err(bad());
    };
    let year: i64 = y.parse().map_err(|_| bad())?;
    let month: u8 = m.parse().map_err(|_| bad())?;
    let day: u8 = day.parse().map_err(|_| bad())?;
    if y.len() != 4 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(bad());
    }
    let mut secs = 0i64;
    let mut zone = rest;
    if let Some(time) = rest.strip_prefix(['T', ' ']) {
        let end = time.find(['Z', '+', '-']).unwrap_or(time.len());
        let (hms, z) = time.split_at(end);
        zone = z;
        let f: Vec<&str> = hms.split(':').collect();
        let (h, mi, se) = match f[..] {
            [h, mi] => (h, mi, "0"),
            [h, mi, se] => (h, mi, se),
            _ => return Err(bad()),
        };
        let (h, mi, se): (i64, i64, i64) = (
            h.parse().map_err(|_| bad())?,
            mi.parse().map_err(|_| bad())?,
            se.parse().map_err(|_| bad())?,
        );
        if h > 23 || mi > 59 || se > 59 || h < 0 || mi < 0 || se < 0 {
            return Err(bad());
        }
        secs = h * 3600 + mi * 60 + se;
    } else if !rest.is_empty() {
        return Err(bad());
    }
    let offset_s = match zone {
        "" | "Z" => 0,
        z => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let (h, m) = z[1..].split_once(':').ok_or_else(bad)?;
            let (h, m): (i64, i64) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            if h > 14 || m > 59 {
                return Err(bad());
            }
            sign * (h * 3600 + m * 60)
        }
    };
    // Round trip through the civil calendar to reject dates such as 2026-02-31.
    let midnight = DateTime::from_unix(0, 0, DeviationConvention::UtcMinusLocal);
    let probe = DateTime {
        year: year as u16,
        month,
        day,
        ..midnight
    };
    let days_s = probe
        .to_unix(DeviationConvention::UtcMinusLocal)
        .ok_or_else(bad)?;
    let back = DateTime::from_unix(days_s, 0, DeviationConvention::UtcMinusLocal);
    if (back.year as i64, back.month, back.day) != (year, month, day) {
        return Err(bad());
    }
    Ok(days_s + secs - offset_s)
}

/// Parses `FROM..TO` (1-based, inclusive).
fn parse_entries(s: &str) -> anyhow::Result<(u32, u32)> {
    let bad = || anyhow!("--entries {s:?}: expected FROM..TO with 1 <= FROM <= TO, e.g. 1..96");
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    let (a, b): (u32, u32) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a == 0 || b < a {
        return Err(bad());
    }
    Ok((a, b))
}

/// Everything to read, validated before connecting.
#[derive(Debug)]
struct Plan {
    /// Attributes, and whether each comes from a preset (a preset object the meter does not
    /// have is reported, not a failure).
    targets: Vec<(Target, bool)>,
    profile: Option<(Obis, Selection)>,
    list_objects: bool,
}

const INSTANTANEOUS: [Obis; 9] = [
    Obis::new(1, 0, 32, 7, 0, 255),
    Obis::new(1, 0, 52, 7, 0, 255),
    Obis::new(1, 0, 72, 7, 0, 255),
    Obis::new(1, 0, 31, 7, 0, 255),
    Obis::new(1, 0, 51, 7, 0, 255),
    Obis::new(1, 0, 71, 7, 0, 255),
    Obis::new(1, 0, 1, 7, 0, 255),
    Obis::new(1, 0, 13, 7, 0, 255),
    Obis::new(1, 0, 14, 7, 0, 255),
];

fn plan(args: &ReadArgs) -> anyhow::Result<Plan> {
    let mut targets = Vec::new();
    if args.clock {
        targets.push((Target::new(class_id::CLOCK, Obis::CLOCK, 2), true));
    }
    if args.energy {
        targets.extend(
            server::dlms::poller::ENERGY
                .iter()
                .map(|o| (Target::new(3, *o, 2), true)),
        );
    }
    if args.instantaneous {
        targets.extend(INSTANTANEOUS.iter().map(|o| (Target::new(3, *o, 2), true)));
    }
    for s in &args.obis {
        targets.push((parse_target(s)?, false));
    }
    let profile = match &args.profile {
        None => None,
        Some(p) => {
            let obis = parse_obis(p).context("--profile")?;
            let selection = match (&args.from, &args.to, &args.entries) {
                (Some(f), Some(t), _) => {
                    let (from_s, to_s) = (
                        parse_time(f).context("--from")?,
                        parse_time(t).context("--to")?,
                    );
                    if to_s < from_s {
                        bail!("--to {t:?} is before --from {f:?}");
                    }
                    Selection::Range { from_s, to_s }
                }
                (_, _, Some(e)) => {
                    let (from, to) = parse_entries(e)?;
                    Selection::Entries { from, to }
                }
                _ => Selection::All,
            };
            Some((obis, selection))
        }
    };
    if targets.is_empty() && profile.is_none() && !args.list_objects {
        bail!(
            "nothing to read: give --obis, --clock, --energy, --instantaneous, --profile or --list-objects"
        );
    }
    Ok(Plan {
        targets,
        profile,
        list_objects: args.list_objects,
    })
}

/// How to authenticate, with secrets already loaded.
fn authentication(args: &ReadArgs) -> Result<ClientAuthentication, Failure> {
    match args.association {
        Association::Public => Ok(ClientAuthentication::None),
        Association::Reader => {
            let password = match (&args.password, &args.password_file) {
                (Some(p), _) => p.clone().into_bytes(),
                (None, Some(path)) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read password file {}", path.display()))
                        .bad_input()?;
                    text.lines().next().unwrap_or("").as_bytes().to_vec()
                }
                (None, None) => {
                    return Err(Failure::BadInput(anyhow!(
                        "the reader association needs --password or --password-file"
                    )));
                }
            };
            if password.is_empty() {
                return Err(Failure::BadInput(anyhow!("the lls password is empty")));
            }
            Ok(ClientAuthentication::Lls { password })
        }
        Association::Management => {
            let mut keys = match &args.key_file {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read key file {}", path.display()))
                        .bad_input()?;
                    KeyFile::parse(&path.display().to_string(), &text)
                        .map_err(|e| Failure::BadInput(anyhow!(e)))?
                }
                None => KeyFile::default(),
            };
            // Flags override the file.
            for (flag, slot) in [
                (&args.block_key, &mut keys.block_key),
                (&args.auth_key, &mut keys.auth_key),
                (&args.system_title, &mut keys.system_title),
            ] {
                if let Some(v) = flag {
                    *slot = Some(v.clone());
                }
            }
            for (what, slot) in [
                ("--block-key", &keys.block_key),
                ("--auth-key", &keys.auth_key),
                ("--system-title", &keys.system_title),
            ] {
                if slot.is_none() {
                    return Err(Failure::BadInput(anyhow!(
                        "the management association needs {what} (flag or --key-file)"
                    )));
                }
            }
            keys.authentication("--key-file")
                .map_err(|e| Failure::BadInput(anyhow!(e)))
        }
    }
}

fn resolve(address: &str) -> Result<SocketAddr, Failure> {
    let port_ok = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok {
        return Err(Failure::BadInput(anyhow!(
            "meter address {address:?} is not HOST:PORT (e.g. 127.0.0.1:4059)"
        )));
    }
    address
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {address}"))?
        .next()
        .ok_or_else(|| Failure::Runtime(anyhow!("{address} resolves to no address")))
}

fn read(args: &ReadArgs) -> Outcome {
    let plan = plan(args).bad_input()?;
    if !(args.timeout.is_finite() && args.timeout > 0.0 && args.timeout < 86_400.0) {
        return Err(Failure::BadInput(anyhow!(
            "--timeout {} is not a number of seconds between 0 and 86400",
            args.timeout
        )));
    }
    let authentication = authentication(args)?;
    let addr = resolve(&args.address)?;
    let config = session_config(addr, args);
    let first_counter = match (args.association, args.invocation_counter) {
        (Association::Management, Some(n)) => n,
        (Association::Management, None) => session::meter_invocation_counter(&config)
            .context("reading the invocation counter 0-0:43.1.0.255 before the management association (or give --invocation-counter)")?,
        _ => 1,
    };
    let mut session = Session::open(
        &config,
        args.association.session(),
        authentication,
        first_counter,
    )
    .map_err(anyhow::Error::from)?;
    let mut out = Output::new(args.json);
    let mut refused = 0usize;
    let result = (|| -> anyhow::Result<()> {
        for (target, preset) in &plan.targets {
            let record = read_target(&mut session, *target)?;
            // A preset object the meter does not have is expected; anything else refused is not.
            if let Err(r) = record.value
                && !(*preset && DataAccessResult::from(r.0) == DataAccessResult::ObjectUndefined)
            {
                refused += 1;
            }
            out.attribute(&record, session.client());
        }
        out.flush_table()?;
        if let Some((obis, selection)) = plan.profile
            && !profile(&mut session, &mut out, obis, selection)?
        {
            refused += 1;
        }
        if plan.list_objects && !object_list(&mut session, &mut out)? {
            refused += 1;
        }
        Ok(())
    })();
    // Release even after a failure, so the meter frees the association at once.
    let released = session.release();
    result?;
    if let Err(e) = released {
        eprintln!("warning: releasing the association failed: {e:#}");
    }
    if refused > 0 {
        return Err(Failure::Runtime(anyhow!(
            "the meter refused {refused} read(s); see the rows marked error"
        )));
    }
    Ok(())
}

/// Where and how to reach the meter, from the flags.
fn session_config(addr: SocketAddr, args: &ReadArgs) -> SessionConfig {
    SessionConfig {
        address: addr,
        transport: if args.hdlc {
            session::Transport::Hdlc {
                physical_address: args.physical_address,
            }
        } else {
            session::Transport::Wrapper
        },
        server_logical_device: args.server_address,
        timeout: Duration::from_secs_f64(args.timeout),
        clock_deviation: if args.deviation_local_minus_utc {
            DeviationConvention::LocalMinusUtc
        } else {
            DeviationConvention::UtcMinusLocal
        },
    }
}

/// One attribute read with its meaning applied.
struct Record {
    target: Target,
    value: Result<Data, Refused>,
    scaler_unit: Option<ScalerUnit>,
}

fn read_target(session: &mut Session, target: Target) -> anyhow::Result<Record> {
    let value = session.get(target, None)?;
    let scaler_unit = match &value {
        Ok(_) => session.scaler_unit(target)?,
        Err(_) => None,
    };
    Ok(Record {
        target,
        value,
        scaler_unit,
    })
}

/// A value as text and, when numeric, as a number with its unit.
struct Shown {
    text: String,
    number: Option<f64>,
    unit: &'static str,
    unix_s: Option<i64>,
}

fn show(value: &Data, target: Target, su: Option<ScalerUnit>, client: &Client) -> Shown {
    let unit = su.map_or("", |s| Unit::symbol(s.unit));
    if let (Some(su), Some(raw)) = (su, value.as_f64()) {
        let v = su.apply(raw);
        let decimals = (-(su.scaler as i32)).max(0) as usize;
        return Shown {
            text: format!("{v:.decimals$}"),
            number: Some(v),
            unit,
            unix_s: None,
        };
    }
    let is_time = target.class_id == class_id::CLOCK && target.attribute == 2;
    if is_time && let Some(dt) = ::dlms::cosem::ClockAttributes::time_from_data(value) {
        return Shown {
            text: format_time(&dt, client),
            number: None,
            unit: "",
            unix_s: client.unix_time(value),
        };
    }
    Shown {
        text: format_data(value),
        number: value.as_f64().filter(|_| !matches!(value, Data::Enum(_))),
        unit,
        unix_s: None,
    }
}

/// A COSEM date-time as ISO 8601 in the meter's local time with its UTC offset; unspecified
/// fields print as `*`.
fn format_time(dt: &DateTime, client: &Client) -> String {
    let field = |v: u32, spec: bool, w: usize| {
        if spec {
            format!("{v:0w$}")
        } else {
            "*".repeat(w)
        }
    };
    let mut s = format!(
        "{}-{}-{}T{}:{}:{}",
        field(dt.year as u32, dt.year != 0xffff, 4),
        field(dt.month as u32, (1..=12).contains(&dt.month), 2),
        field(dt.day as u32, (1..=31).contains(&dt.day), 2),
        field(dt.hour as u32, dt.hour < 24, 2),
        field(dt.minute as u32, dt.minute < 60, 2),
        field(dt.second as u32, dt.second < 60, 2),
    );
    if dt.deviation_min != DateTime::DEVIATION_UNSPECIFIED {
        let offset = client.config().clock_deviation.offset_min(dt.deviation_min);
        if offset == 0 {
            s.push('Z');
        } else {
            let sign = if offset < 0 { '-' } else { '+' };
            let a = offset.unsigned_abs();
            let _ = write!(s, "{sign}{:02}:{:02}", a / 60, a % 60);
        }
    }
    s
}

fn format_data(d: &Data) -> String {
    match d {
        Data::Null => "null".into(),
        Data::Boolean(b) => b.to_string(),
        Data::OctetString(b) | Data::VisibleString(b) => {
            if !b.is_empty() && b.iter().all(|c| (0x20..0x7f).contains(c)) {
                String::from_utf8_lossy(b).into_owned()
            } else {
                hex(b)
            }
        }
        Data::Utf8String(s) => s.clone(),
        Data::Array(items) | Data::Structure(items) => {
            let inner: Vec<String> = items.iter().map(format_data).collect();
            format!("[{}]", inner.join(", "))
        }
        Data::Enum(e) => format!("enum {e}"),
        Data::Float32(f) => f.to_string(),
        Data::Float64(f) => f.to_string(),
        other => match other.as_i128() {
            Some(v) => v.to_string(),
            None => format!("{other:?}"),
        },
    }
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .fold(String::with_capacity(2 * b.len()), |mut s, x| {
            let _ = write!(s, "{x:02X}");
            s
        })
}

/// Reads a profile's capture objects, period and buffer, and prints the rows. Returns false if
/// the meter refused a part of it.
fn profile(
    session: &mut Session,
    out: &mut Output,
    obis: Obis,
    selection: Selection,
) -> anyhow::Result<bool> {
    let profile = match session.read_profile(obis, selection)? {
        Ok(p) => p,
        Err((target, r)) => {
            out.refused(target, r)?;
            return Ok(false);
        }
    };
    let (columns, rows) = (profile.columns, profile.rows);
    let mut units = Vec::with_capacity(columns.len());
    for c in &columns {
        let t = Target::new(c.class_id, c.logical_name, c.attribute_id);
        units.push(if c.data_index == 0 {
            session.scaler_unit(t)?
        } else {
            None
        });
    }
    out.profile(obis, &columns, &units, &rows, session.client())?;
    Ok(true)
}

fn class_name(class: u16) -> &'static str {
    match class {
        1 => "data",
        3 => "register",
        4 => "extended register",
        5 => "demand register",
        7 => "profile generic",
        8 => "clock",
        15 => "association ln",
        64 => "security setup",
        70 => "disconnect control",
        71 => "limiter",
        _ => "",
    }
}

/// One object_list entry: class, version, logical name and this association's rights.
struct ObjectEntry {
    class_id: u16,
    version: u8,
    obis: Obis,
    read: Vec<i8>,
    write: Vec<i8>,
    methods: Vec<i8>,
}

fn parse_object_entry(d: &Data) -> Option<ObjectEntry> {
    let [
        Data::LongUnsigned(class),
        Data::Unsigned(version),
        Data::OctetString(ln),
        rights,
    ] = d.as_list()?
    else {
        return None;
    };
    let obis = Obis(ln.as_slice().try_into().ok()?);
    let (mut read, mut write, mut methods) = (Vec::new(), Vec::new(), Vec::new());
    if let Some([attributes, method_rights, ..]) = rights.as_list() {
        for a in attributes.as_list()? {
            if let Some([Data::Integer(id), Data::Enum(mode), ..]) = a.as_list() {
                // attribute_access_mode (Blue Book 4.4.4): bit 0 read, bit 1 write.
                if mode & 1 != 0 {
                    read.push(*id);
                }
                if mode & 2 != 0 {
                    write.push(*id);
                }
            }
        }
        for m in method_rights.as_list()? {
            match m.as_list() {
                Some([Data::Integer(id), Data::Enum(mode)]) if *mode != 0 => methods.push(*id),
                Some([Data::Integer(id), Data::Boolean(true)]) => methods.push(*id),
                _ => {}
            }
        }
    }
    Some(ObjectEntry {
        class_id: *class,
        version: *version,
        obis,
        read,
        write,
        methods,
    })
}

fn object_list(session: &mut Session, out: &mut Output) -> anyhow::Result<bool> {
    let target = Target::new(class_id::ASSOCIATION_LN, Obis::CURRENT_ASSOCIATION, 2);
    let data = match session.get(target, None)? {
        Ok(d) => d,
        Err(r) => {
            out.refused(target, r)?;
            return Ok(false);
        }
    };
    let items = data
        .as_list()
        .ok_or_else(|| anyhow!("the object list is not an array"))?;
    let entries = items
        .iter()
        .enumerate()
        .map(|(i, d)| {
            parse_object_entry(d).ok_or_else(|| {
                anyhow!(
                    "object list entry {} is not {{class, version, name, rights}}",
                    i + 1
                )
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    out.objects(&entries)?;
    Ok(true)
}

fn ids(v: &[i8]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.iter().map(i8::to_string).collect::<Vec<_>>().join(",")
}

/// Table or JSON-lines output on stdout.
struct Output {
    json: bool,
    rows: Vec<Vec<String>>,
}

const ATTRIBUTE_HEADER: [&str; 4] = ["OBJECT", "CLASS/ATTR", "VALUE", "UNIT"];

impl Output {
    fn new(json: bool) -> Self {
        Output {
            json,
            rows: Vec::new(),
        }
    }

    fn line(&self, v: Value) -> anyhow::Result<()> {
        emit(&format!("{v}\n"))
    }

    fn attribute(&mut self, r: &Record, client: &Client) {
        let t = r.target;
        let (text, unit, json_value) = match &r.value {
            Ok(d) => {
                let s = show(d, t, r.scaler_unit, client);
                let mut j = json!({
                    "obis": t.obis.to_string(), "class": t.class_id, "attribute": t.attribute,
                    "value": s.number.map_or(Value::String(s.text.clone()), |n| json!(n)),
                    "unit": s.unit,
                });
                if let Some(u) = s.unix_s {
                    j["unix_s"] = json!(u);
                }
                (s.text, s.unit.to_string(), j)
            }
            Err(e) => (
                format!("error: {}", e.name()),
                String::new(),
                json!({
                    "obis": t.obis.to_string(), "class": t.class_id, "attribute": t.attribute,
                    "error": e.name(),
                }),
            ),
        };
        if self.json {
            self.rows.push(vec![json_value.to_string()]);
        } else {
            self.rows.push(vec![
                t.obis.to_string(),
                format!("{}/{}", t.class_id, t.attribute),
                text,
                unit,
            ]);
        }
    }

    fn refused(&mut self, t: Target, e: Refused) -> anyhow::Result<()> {
        if self.json {
            self.line(json!({
                "obis": t.obis.to_string(), "class": t.class_id, "attribute": t.attribute,
                "error": e.name(),
            }))
        } else {
            emit(&format!("{t}: error: {}\n", e.name()))
        }
    }

    /// Prints the attribute rows collected so far.
    fn flush_table(&mut self) -> anyhow::Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.rows);
        if self.json {
            return emit(
                &rows
                    .iter()
                    .map(|r| format!("{}\n", r[0]))
                    .collect::<String>(),
            );
        }
        emit(&table(&ATTRIBUTE_HEADER.map(String::from), &rows))
    }

    fn profile(
        &mut self,
        obis: Obis,
        columns: &[CaptureObject],
        units: &[Option<ScalerUnit>],
        rows: &[Vec<Data>],
        client: &Client,
    ) -> anyhow::Result<()> {
        let targets: Vec<Target> = columns
            .iter()
            .map(|c| Target::new(c.class_id, c.logical_name, c.attribute_id))
            .collect();
        let mut text_rows = Vec::with_capacity(rows.len());
        let mut json = String::new();
        for (n, row) in rows.iter().enumerate() {
            let shown: Vec<Shown> = row
                .iter()
                .zip(targets.iter().zip(units))
                .map(|(v, (t, su))| show(v, *t, *su, client))
                .collect();
            if self.json {
                let cols: Vec<Value> = shown
                    .iter()
                    .zip(&targets)
                    .map(|(s, t)| {
                        let mut j = json!({
                            "obis": t.obis.to_string(), "class": t.class_id, "attribute": t.attribute,
                            "value": s.number.map_or(Value::String(s.text.clone()), |n| json!(n)),
                            "unit": s.unit,
                        });
                        if let Some(u) = s.unix_s {
                            j["unix_s"] = json!(u);
                        }
                        j
                    })
                    .collect();
                let line = json!({"profile": obis.to_string(), "row": n + 1, "columns": cols});
                let _ = writeln!(json, "{line}");
            } else {
                text_rows.push(shown.into_iter().map(|s| s.text).collect());
            }
        }
        if self.json {
            return emit(&json);
        }
        let header: Vec<String> = targets
            .iter()
            .zip(units)
            .map(|(t, su)| match su.map(|s| Unit::symbol(s.unit)) {
                Some(u) if !u.is_empty() => format!("{} [{u}]", t.obis),
                _ if t.class_id == class_id::CLOCK => format!("{} (time)", t.obis),
                _ => t.obis.to_string(),
            })
            .collect();
        emit(&format!(
            "profile {obis}: {} row(s)\n{}",
            rows.len(),
            table(&header, &text_rows)
        ))
    }

    fn objects(&mut self, entries: &[ObjectEntry]) -> anyhow::Result<()> {
        if self.json {
            let mut s = String::new();
            for e in entries {
                let line = json!({
                    "obis": e.obis.to_string(), "class": e.class_id, "class_name": class_name(e.class_id),
                    "version": e.version, "read": e.read, "write": e.write, "methods": e.methods,
                });
                let _ = writeln!(s, "{line}");
            }
            return emit(&s);
        }
        let header = ["OBJECT", "CLASS", "VERSION", "READ", "WRITE", "METHODS"].map(String::from);
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| {
                vec![
                    e.obis.to_string(),
                    match class_name(e.class_id) {
                        "" => e.class_id.to_string(),
                        n => format!("{} {n}", e.class_id),
                    },
                    e.version.to_string(),
                    ids(&e.read),
                    ids(&e.write),
                    ids(&e.methods),
                ]
            })
            .collect();
        emit(&format!(
            "object list: {} object(s)\n{}",
            entries.len(),
            table(&header, &rows)
        ))
    }
}

/// Left-aligned columns separated by two spaces.
fn table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut s = String::new();
    for r in std::iter::once(header).chain(rows.iter().map(Vec::as_slice)) {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        let _ = writeln!(s, "{}", line.join("  ").trim_end());
    }
    s
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn emit(s: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(s.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if !super::is_broken_pipe(&e) => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_bad_ones_say_why() {
        let t = parse_target("3/1.0.1.8.0.255/2").unwrap();
        assert_eq!(t, Target::new(3, Obis::new(1, 0, 1, 8, 0, 255), 2));
        assert_eq!(parse_target("8/0-0:1.0.0.255/2").unwrap().obis, Obis::CLOCK);
        let e = parse_target("3/1.0.1.8.0/2").unwrap_err().to_string();
        assert!(e.contains("1.0.1.8.0"), "{e}");
        assert!(
            format!("{:#}", parse_target("3/1.0.1.8.0/2").unwrap_err()).contains("fewer than six")
        );
        assert!(parse_target("3/1.0.1.8.0.255").is_err());
        assert!(parse_target("x/1.0.1.8.0.255/2").is_err());
        assert!(parse_target("3/1.0.1.8.0.255/0").is_err());
    }

    #[test]
    fn times_parse_as_iso_8601() {
        assert_eq!(parse_time("1970-01-01").unwrap(), 0);
        assert_eq!(parse_time("2026-11-21T06:00Z").unwrap(), 1_795_240_800);
        assert_eq!(
            parse_time("2026-11-21 07:00:00+01:00").unwrap(),
            1_795_240_800
        );
        assert_eq!(parse_time("2026-11-21T05:30-00:30").unwrap(), 1_795_240_800);
        for bad in [
            "2026-02-31",
            "2026-11-21T25:00",
            "yesterday",
            "2026-11-21T06:00+1",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn entries_and_hex_are_checked() {
        assert_eq!(parse_entries("1..10").unwrap(), (1, 10));
        assert!(parse_entries("0..3").is_err());
        assert!(parse_entries("5..3").is_err());
        assert_eq!(
            session::parse_hex::<8>("t", "4D4D4D00 00000001").unwrap(),
            [0x4D, 0x4D, 0x4D, 0, 0, 0, 0, 1]
        );
        assert!(session::parse_hex::<8>("t", "4D4D4D").is_err());
    }

    #[test]
    fn registers_are_scaled_with_their_unit() {
        let client = Client::new(::dlms::ClientConfig::new(16, ClientAuthentication::None));
        let v = Target::new(3, Obis::new(1, 0, 32, 7, 0, 255), 2);
        let su = ScalerUnit {
            scaler: -1,
            unit: Unit::Volt as u8,
        };
        let s = show(&Data::LongUnsigned(2301), v, Some(su), &client);
        assert_eq!((s.text.as_str(), s.unit), ("230.1", "V"));
        assert_eq!(s.number, Some(230.1));
        let dt = DateTime::from_unix(1_795_240_800, 60, DeviationConvention::UtcMinusLocal);
        let c = Target::new(8, Obis::CLOCK, 2);
        let s = show(&Data::OctetString(dt.to_bytes().to_vec()), c, None, &client);
        assert_eq!(s.text, "2026-11-21T07:00:00+01:00");
        assert_eq!(s.unix_s, Some(1_795_240_800));
    }
}
