//! Interoperability with the Gurux DLMS library for Python (PyPI `gurux-dlms`), an independent
//! implementation used only as a test peer: the Gurux client reads our server over the TCP
//! wrapper with the public, LLS and HLS-GMAC + suite 0 associations.
//!
//! Needs `python3` with `pip install gurux-dlms`. Set `WATTLINE_SKIP_GURUX=1` to skip where it
//! cannot be installed (never in CI); otherwise a missing package fails the test with that instruction.

use std::path::PathBuf;
use std::process::Command;

use serde_free::Line;

use dlms::CounterStore;

use crate::loopback::demo_server;
use crate::support::demo_meter::{self, RelayOperation};

/// Tiny JSON-lines reader for the script's output (keys and scalar/array values only), so the
/// test needs no JSON dependency.
mod serde_free {
    #[derive(Debug)]
    pub struct Line(pub String);

    impl Line {
        /// The raw text of `"key": value` up to the next top-level comma or brace.
        pub fn get(&self, key: &str) -> Option<&str> {
            let pat = format!("\"{key}\": ");
            let start = self.0.find(&pat)? + pat.len();
            let rest = &self.0[start..];
            let mut depth = 0i32;
            let mut in_str = false;
            for (i, ch) in rest.char_indices() {
                match ch {
                    '"' => in_str = !in_str,
                    '[' | '{' if !in_str => depth += 1,
                    ']' | '}' if !in_str && depth > 0 => depth -= 1,
                    ',' | '}' if !in_str && depth == 0 => return Some(rest[..i].trim()),
                    _ => {}
                }
            }
            Some(rest.trim())
        }

        pub fn event(&self) -> &str {
            self.get("event").unwrap_or("").trim_matches('"')
        }
    }
}

/// `WATTLINE_SKIP_GURUX=1` skips these tests on a developer machine without pip access; in CI
/// (`CI=true`) nothing may be skipped, so the switch is refused there.
fn skip() -> bool {
    let wanted = std::env::var("WATTLINE_SKIP_GURUX").is_ok_and(|v| v == "1");
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        !(wanted && in_ci),
        "WATTLINE_SKIP_GURUX=1 is not honoured in CI: the Gurux interoperability tests must run"
    );
    wanted
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name)
}

fn check_gurux_installed() {
    let out = Command::new(python())
        .args(["-c", "import gurux_dlms"])
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "the interoperability tests need the Gurux DLMS library: run `pip install gurux-dlms` (or set WATTLINE_SKIP_GURUX=1): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_gurux(addr: std::net::SocketAddr, mode: &str, extra: &[String]) -> Vec<Line> {
    run_gurux_over(addr, mode, extra, "wrapper")
}

fn run_gurux_over(
    addr: std::net::SocketAddr,
    mode: &str,
    extra: &[String],
    interface: &str,
) -> Vec<Line> {
    let out = Command::new(python())
        .env("GURUX_INTERFACE", interface)
        .arg(script("gurux_client.py"))
        .args([
            addr.ip().to_string(),
            addr.port().to_string(),
            mode.to_string(),
        ])
        .args(extra)
        .output()
        .expect("start python3");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "gurux client ({mode}) failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(|l| Line(l.to_string())).collect()
}

fn find<'a>(lines: &'a [Line], event: &str) -> &'a Line {
    lines
        .iter()
        .find(|l| l.event() == event)
        .unwrap_or_else(|| panic!("no {event} in {lines:?}"))
}

fn check_clock(lines: &[Line]) {
    let clock = find(lines, "clock")
        .get("value")
        .unwrap()
        .trim_matches('"')
        .to_string();
    // Gurux prints local meter time; the demo meter runs on UTC.
    let now = dlms::DateTime::from_unix(
        demo_meter::now_unix(),
        0,
        dlms::DeviationConvention::UtcMinusLocal,
    );
    let expect = format!(
        "{:04}-{:02}-{:02}T{:02}:",
        now.year, now.month, now.day, now.hour
    );
    assert!(
        clock.starts_with(&expect[..11]),
        "gurux read clock {clock}, meter says {expect}"
    );
}

#[test]
fn gurux_client_reads_public_association() {
    if skip() {
        return;
    }
    check_gurux_installed();
    let (server, _, _) = demo_server();
    let lines = run_gurux(server.addr, "public", &[]);
    find(&lines, "associated");
    check_clock(&lines);
    assert_eq!(
        find(&lines, "register_denied").get("ok"),
        Some("true"),
        "{lines:?}"
    );
    find(&lines, "released");
}

#[test]
fn gurux_client_reads_lls_association() {
    if skip() {
        return;
    }
    check_gurux_installed();
    let (server, meter, _) = demo_server();
    let initial = meter.lock().unwrap().import_wh;
    let lines = run_gurux(server.addr, "lls", &[]);
    check_clock(&lines);
    let reg = lines
        .iter()
        .find(|l| l.event() == "register" && l.get("ln") == Some("\"1.0.1.8.0.255\""))
        .expect("import register");
    let wh: f64 = reg.get("value").unwrap().parse().unwrap();
    let now_wh = {
        let mut m = meter.lock().unwrap();
        m.update(demo_meter::now_unix());
        m.import_wh
    };
    assert!(
        wh >= initial.floor() && wh <= now_wh.ceil(),
        "gurux read {wh} Wh, meter {initial}..{now_wh}"
    );
    assert_eq!(reg.get("unit"), Some("30"), "Wh");
    let by_entry = find(&lines, "profile_by_entry");
    assert_eq!(by_entry.get("capture_objects"), Some("3"));
    assert_eq!(by_entry.get("period"), Some("900"));
    let rows = by_entry.get("rows").unwrap();
    assert_eq!(rows.matches("], [").count() + 1, 10, "{rows}");
    let first_wh = match &meter.lock().unwrap().profile.rows[0][1] {
        dlms::Data::DoubleLongUnsigned(v) => *v,
        other => panic!("{other:?}"),
    };
    assert!(
        rows.contains(&format!("\"{first_wh}\"")),
        "first row energy {first_wh} in {rows}"
    );
    assert_eq!(find(&lines, "profile_all").get("rows"), Some("96"));
    // The reader association may not operate the relay.
    assert_eq!(find(&lines, "disconnect").get("ok"), Some("false"));
    assert!(meter.lock().unwrap().relay_log.is_empty());
}

#[test]
fn gurux_client_operates_relay_over_hls_gmac_suite_0() {
    if skip() {
        return;
    }
    check_gurux_installed();
    let (server, meter, counters) = demo_server();
    // Gurux starts from the counter the meter expects, as a head-end reads it first.
    let next = counters
        .lock()
        .unwrap()
        .last_received(&crate::loopback::CLIENT_TITLE)
        .map_or(1, |c| c + 1);
    let lines = run_gurux(server.addr, "hls", &[next.to_string()]);
    find(&lines, "associated");
    check_clock(&lines);
    assert_eq!(
        find(&lines, "disconnect").get("control_state"),
        Some("0"),
        "{lines:?}"
    );
    assert_eq!(find(&lines, "reconnect").get("control_state"), Some("2"));
    assert_eq!(
        meter.lock().unwrap().relay_log,
        vec![
            RelayOperation::RemoteDisconnect(1),
            RelayOperation::RemoteReconnect(1)
        ]
    );
    assert!(
        counters
            .lock()
            .unwrap()
            .last_received(&crate::loopback::CLIENT_TITLE)
            .unwrap()
            > next
    );
    find(&lines, "released");
}

#[test]
fn gurux_client_reads_and_operates_relay_over_hdlc() {
    use std::sync::{Arc, Mutex};
    if skip() {
        return;
    }
    check_gurux_installed();
    let meter = Arc::new(Mutex::new(demo_meter::DemoMeter::new(
        demo_meter::now_unix(),
        1500.0,
    )));
    let counters = Arc::new(Mutex::new(dlms::MemoryCounterStore::new(1)));
    let config = dlms::ServerConfig::wattline(
        crate::loopback::SERVER_TITLE,
        b"demo-lls",
        dlms::Keys::GREEN_BOOK_EXAMPLE,
        crate::loopback::CLIENT_TITLE,
    );
    let server = crate::support::tcp::TestServer::spawn_with(
        crate::support::tcp::Framing::Hdlc,
        config,
        meter.clone(),
        counters,
    );
    // The LLS reader pulls the 96-row profile through HDLC segmentation and GET block transfer.
    let lines = run_gurux_over(server.addr, "lls", &[], "hdlc");
    find(&lines, "hdlc_connected");
    check_clock(&lines);
    assert_eq!(find(&lines, "profile_all").get("rows"), Some("96"));
    find(&lines, "hdlc_disconnected");
    let lines = run_gurux_over(server.addr, "hls", &["1".to_string()], "hdlc");
    assert_eq!(
        find(&lines, "reconnect").get("control_state"),
        Some("2"),
        "{lines:?}"
    );
    assert_eq!(
        meter.lock().unwrap().relay_log,
        vec![
            RelayOperation::RemoteDisconnect(1),
            RelayOperation::RemoteReconnect(1)
        ]
    );
}

/// A Gurux server process, stopped (stdin closed, then killed) on drop.
struct GuruxServer {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl GuruxServer {
    fn start(mode: &str) -> GuruxServer {
        use std::io::BufRead;
        let mut child = Command::new(python())
            .arg(script("gurux_server.py"))
            .arg(mode)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start python3");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .trim()
            .strip_prefix("READY ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("gurux server said {line:?}"));
        GuruxServer {
            child,
            addr: ([127, 0, 0, 1], port).into(),
        }
    }
}

impl Drop for GuruxServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn our_client_reads(mode: &str, sap: u16, auth: dlms::ClientAuthentication) {
    use dlms::apdu::AttributeDescriptor;
    use dlms::{Client, ClientConfig, Data, Event, MemoryCounterStore, Obis};
    if skip() {
        return;
    }
    check_gurux_installed();
    let server = GuruxServer::start(mode);
    let mut c = crate::support::tcp::ClientConn::connect(
        server.addr,
        Client::new(ClientConfig::new(sap, auth)),
        MemoryCounterStore::new(1),
    )
    .unwrap();
    assert_eq!(c.associate().unwrap(), Event::Associated, "{mode}");
    let mut get = |class_id, instance, attribute_id| {
        let req = c
            .client
            .get(
                AttributeDescriptor {
                    class_id,
                    instance,
                    attribute_id,
                },
                None,
                &mut c.counters,
            )
            .unwrap();
        match c.exchange(req).unwrap() {
            Event::Value(d) => d,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        get(1, Obis::LOGICAL_DEVICE_NAME, 2),
        Data::OctetString(b"GRX0000000001".to_vec())
    );
    let energy = Obis::new(1, 0, 1, 8, 0, 255);
    assert_eq!(get(3, energy, 2).as_i128(), Some(123_456));
    assert_eq!(
        dlms::cosem::ScalerUnit::from_data(&get(3, energy, 3)),
        Some(dlms::cosem::ScalerUnit {
            scaler: -1,
            unit: 30
        })
    );
    let t =
        dlms::cosem::ClockAttributes::time_from_data(&get(8, Obis::CLOCK, 2)).expect("clock time");
    assert!(t.year >= 2024 && (1..=12).contains(&t.month), "{t:?}");
    let req = c.client.release().unwrap();
    assert_eq!(c.exchange(req).unwrap(), Event::Released);
}

#[test]
fn our_client_reads_gurux_server_without_authentication() {
    our_client_reads("none", 16, dlms::ClientAuthentication::None);
}

#[test]
fn our_client_reads_gurux_server_with_lls() {
    our_client_reads(
        "lls",
        17,
        dlms::ClientAuthentication::Lls {
            password: b"demo-lls".to_vec(),
        },
    );
}

// No HLS test against the Gurux server: gurux-dlms for Python 1.0.203 fails inside its own
// ciphered AARQ handling ("Invalid GLO command" while reporting an error), so it cannot act as
// an HLS peer. Our client's HLS-GMAC + suite 0 runs against our server, whose HLS the Gurux
// client above verifies, and both sides reproduce the Green Book vectors.

// No test of our client against a Gurux server over HDLC either: in gurux-dlms for Python
// 1.0.203 the server's SNRM handling fails (`GXHdlcSettings` has no `update`). Our HDLC client
// runs against our HDLC server (loopback tests), which the Gurux client verifies over HDLC.
