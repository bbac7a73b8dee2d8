//! `wattline dlms read` against the demo COSEM meter of the `dlms` crate (the one
//! `cargo run -p dlms --example demo_server` serves), run in-process on a free loopback port.

use std::sync::{Arc, Mutex};

use dlms::{Keys, MemoryCounterStore, ServerConfig};

use crate::util::{Scratch, wattline};

// The demo meter and its TCP server are shared with the dlms crate's own tests and example.
#[allow(dead_code, unused_imports)]
#[path = "../../dlms/tests/support/mod.rs"]
mod support;

use support::demo_meter::{DemoMeter, now_unix};
use support::tcp::{Framing, TestServer};

const SERVER_TITLE: [u8; 8] = [0x4D, 0x4D, 0x4D, 0x00, 0x00, 0xBC, 0x61, 0x4E];
const CLIENT_TITLE: [u8; 8] = [0x4D, 0x4D, 0x4D, 0x00, 0x00, 0x00, 0x00, 0x01];
const KEY_FILE: &str = "\
# Green Book example keys: demo only
block_key = 000102030405060708090A0B0C0D0E0F
auth_key = D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF
system_title = 4D4D4D0000000001
";

/// The demo meter (1500 W load, a day of 15-minute profile rows) on a free loopback port.
fn meter(framing: Framing) -> TestServer {
    let config = ServerConfig::wattline(
        SERVER_TITLE,
        b"demo-lls",
        Keys::GREEN_BOOK_EXAMPLE,
        CLIENT_TITLE,
    );
    let meter = Arc::new(Mutex::new(DemoMeter::new(now_unix(), 1500.0)));
    let counters = Arc::new(Mutex::new(MemoryCounterStore::new(1)));
    TestServer::spawn_with(framing, config, meter, counters)
}

fn read(server: &TestServer, args: &[&str]) -> crate::util::Run {
    let addr = server.addr.to_string();
    let mut all = vec!["dlms", "read", addr.as_str(), "--timeout", "20"];
    all.extend_from_slice(args);
    wattline(all)
}

fn ok(run: &crate::util::Run) {
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
}

fn by_obis<'a>(lines: &'a [serde_json::Value], obis: &str) -> &'a serde_json::Value {
    lines
        .iter()
        .find(|l| l["obis"] == obis)
        .unwrap_or_else(|| panic!("no {obis} in {lines:?}"))
}

#[test]
fn public_association_reads_the_clock() {
    let server = meter(Framing::Wrapper);
    let run = read(&server, &["--clock", "--json"]);
    ok(&run);
    let lines = run.json_lines();
    assert_eq!(lines.len(), 1, "{}", run.stdout);
    let clock = by_obis(&lines, "0-0:1.0.0.255");
    let unix_s = clock["unix_s"].as_i64().expect("clock has unix_s");
    assert!((unix_s - now_unix()).abs() < 60, "clock {unix_s} vs now");
    assert!(clock["value"].as_str().unwrap().ends_with('Z'), "{clock}");

    let table = read(&server, &["--clock"]);
    ok(&table);
    assert!(table.stdout.starts_with("OBJECT"), "{}", table.stdout);
    assert!(
        table.stdout.contains("0-0:1.0.0.255  8/2"),
        "{}",
        table.stdout
    );
}

#[test]
fn reader_association_reads_energy_and_voltage_with_units() {
    let server = meter(Framing::Wrapper);
    let run = read(
        &server,
        &[
            "--association",
            "reader",
            "--password",
            "demo-lls",
            "--energy",
            "--obis",
            "3/1.0.32.7.0.255/2",
            "--json",
        ],
    );
    ok(&run);
    let lines = run.json_lines();
    let import = by_obis(&lines, "1-0:1.8.0.255");
    assert_eq!(import["unit"], "Wh");
    // The demo meter starts its day at 1 000 000 Wh and has run 95–96 quarters at 1500 W.
    let wh = import["value"].as_f64().unwrap();
    assert!((1_035_000.0..1_040_000.0).contains(&wh), "import {wh} Wh");
    assert_eq!(by_obis(&lines, "1-0:2.8.0.255")["value"], 0.0);
    let voltage = by_obis(&lines, "1-0:32.7.0.255");
    assert_eq!(
        (voltage["value"].as_f64(), voltage["unit"].as_str()),
        (Some(230.1), Some("V"))
    );
    // The reactive quadrant registers are not in the demo meter: reported, not fatal.
    assert_eq!(
        by_obis(&lines, "1-0:5.8.0.255")["error"],
        "object-undefined"
    );

    let table = read(
        &server,
        &[
            "--association",
            "reader",
            "--password",
            "demo-lls",
            "--obis",
            "3/1.0.32.7.0.255/2",
        ],
    );
    ok(&table);
    assert!(table.stdout.contains("230.1  V"), "{}", table.stdout);
}

#[test]
fn password_from_a_file_and_the_public_association_refused_energy() {
    let server = meter(Framing::Wrapper);
    let scratch = Scratch::new();
    let file = scratch.file("lls.txt", "demo-lls\n");
    let run = read(
        &server,
        &[
            "--association",
            "reader",
            "--password-file",
            &file,
            "--obis",
            "3/1.0.1.8.0.255/2",
        ],
    );
    ok(&run);
    assert!(run.stdout.contains("Wh"), "{}", run.stdout);

    // Energy registers are not public: the row says so and the exit code is 1.
    let public = read(&server, &["--obis", "3/1.0.1.8.0.255/2"]);
    assert_eq!(public.code, 1, "{}", public.stdout);
    assert!(
        public.stdout.contains("error: read-write-denied"),
        "{}",
        public.stdout
    );
    assert!(
        public.stderr.contains("refused 1 read"),
        "{}",
        public.stderr
    );
}

#[test]
fn management_association_reads_profile_entries_and_a_time_range() {
    let server = meter(Framing::Wrapper);
    let scratch = Scratch::new();
    let keys = scratch.file("meter.keys", KEY_FILE);
    let base = ["--association", "management", "--key-file", keys.as_str()];

    let mut args = base.to_vec();
    args.extend(["--profile", "1.0.99.1.0.255", "--entries", "1..4", "--json"]);
    let run = read(&server, &args);
    ok(&run);
    let rows = run.json_lines();
    assert_eq!(rows.len(), 4, "{}", run.stdout);
    let times: Vec<i64> = rows
        .iter()
        .map(|r| r["columns"][0]["unix_s"].as_i64().expect("time column"))
        .collect();
    assert!(times.windows(2).all(|w| w[1] - w[0] == 900), "{times:?}");
    assert_eq!(rows[0]["columns"][1]["obis"], "1-0:1.8.0.255");
    assert_eq!(rows[0]["columns"][1]["unit"], "Wh");
    assert_eq!(rows[0]["columns"][1]["value"], 1_000_000.0);

    // A second management run must pass the meter's replay check: the client reads the
    // meter's invocation counter first and continues above it.
    let now = now_unix();
    let last = now - now.rem_euclid(900);
    let (from, to) = (last - 2 * 3600, last - 3600);
    let iso = |t: i64| {
        let dt = dlms::DateTime::from_unix(t, 0, dlms::DeviationConvention::UtcMinusLocal);
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second
        )
    };
    let (from_s, to_s) = (iso(from), iso(to));
    let mut args = base.to_vec();
    args.extend([
        "--profile",
        "1.0.99.1.0.255",
        "--from",
        &from_s,
        "--to",
        &to_s,
    ]);
    let run = read(&server, &args);
    ok(&run);
    assert!(
        run.stdout.starts_with("profile 1-0:99.1.0.255: 5 row(s)"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("1-0:1.8.0.255 [Wh]"), "{}", run.stdout);
    assert!(run.stdout.contains(&from_s[..16]), "{}", run.stdout);
    assert!(run.stdout.contains(&to_s[..16]), "{}", run.stdout);

    // Keys on the command line instead of a file, and a wrong auth key is refused.
    let flags = [
        "--association",
        "management",
        "--block-key",
        "000102030405060708090A0B0C0D0E0F",
        "--system-title",
        "4D4D4D0000000001",
        "--clock",
    ];
    let mut good = flags.to_vec();
    good.extend(["--auth-key", "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"]);
    ok(&read(&server, &good));
    let mut bad = flags.to_vec();
    bad.extend(["--auth-key", "00D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"]);
    let run = read(&server, &bad);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stderr.contains("management (hls-gmac) association"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("00D1D2"),
        "a key is echoed: {}",
        run.stderr
    );
}

#[test]
fn object_list_depends_on_the_association() {
    let server = meter(Framing::Wrapper);
    let public = read(&server, &["--list-objects"]);
    ok(&public);
    assert!(
        public.stdout.starts_with("object list:"),
        "{}",
        public.stdout
    );
    assert!(
        public
            .stdout
            .lines()
            .any(|l| l.starts_with("0-0:1.0.0.255 ") && l.contains(" 8 clock ")),
        "{}",
        public.stdout
    );
    assert!(
        !public.stdout.contains("1-0:1.8.0.255"),
        "{}",
        public.stdout
    );

    let reader = read(
        &server,
        &[
            "--association",
            "reader",
            "--password",
            "demo-lls",
            "--list-objects",
            "--json",
        ],
    );
    ok(&reader);
    let objects = reader.json_lines();
    let import = by_obis(&objects, "1-0:1.8.0.255");
    assert_eq!(import["class_name"], "register");
    assert_eq!(import["read"], serde_json::json!([1, 2, 3]));
    assert_eq!(import["write"], serde_json::json!([]));
}

#[test]
fn wrong_password_is_a_runtime_failure_that_does_not_echo_it() {
    let server = meter(Framing::Wrapper);
    let run = read(
        &server,
        &[
            "--association",
            "reader",
            "--password",
            "not-the-pass",
            "--clock",
        ],
    );
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stderr.contains("rejected the reader (lls) association"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("wrong password"), "{}", run.stderr);
    assert!(!run.stderr.contains("not-the-pass"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

#[test]
fn bad_input_exits_2_before_connecting() {
    // No server is needed: input is checked before any connection.
    let cases: [(&[&str], &str); 6] = [
        (&["--obis", "3/1.0.1.8.0/2"], "fewer than six groups"),
        (&["--obis", "1.0.1.8.0.255"], "CLASS/A.B.C.D.E.F/ATTR"),
        (
            &["--profile", "1.0.99.1.0.255", "--entries", "4..1"],
            "--entries",
        ),
        (
            &[
                "--profile",
                "1.0.99.1.0.255",
                "--from",
                "2026-02-31",
                "--to",
                "2026-03-01",
            ],
            "--from",
        ),
        (&["--association", "reader", "--clock"], "--password"),
        (
            &[
                "--association",
                "management",
                "--block-key",
                "00",
                "--auth-key",
                "00",
                "--system-title",
                "00",
                "--clock",
            ],
            "block key",
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["dlms", "read", "127.0.0.1:9"];
        all.extend_from_slice(args);
        let run = wattline(&all);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(expected), "{args:?}: {}", run.stderr);
    }
    let run = wattline(["dlms", "read", "localhost", "--clock"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("HOST:PORT"), "{}", run.stderr);
    let run = wattline(["dlms", "read", "127.0.0.1:4059"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("nothing to read"), "{}", run.stderr);
}

#[test]
fn connection_refused_is_a_runtime_failure() {
    // A port that was free a moment ago: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let run = wattline(["dlms", "read", &format!("127.0.0.1:{port}"), "--clock"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{}",
        run.stderr
    );
}

#[test]
fn hdlc_over_tcp_reads_clock_and_profile() {
    let server = meter(Framing::Hdlc);
    let run = read(
        &server,
        &[
            "--hdlc",
            "--association",
            "reader",
            "--password",
            "demo-lls",
            "--clock",
            "--profile",
            "1.0.99.1.0.255",
            "--json",
        ],
    );
    ok(&run);
    let lines = run.json_lines();
    assert!(by_obis(&lines, "0-0:1.0.0.255")["unix_s"].is_i64());
    // The whole day's buffer (96 rows) needs HDLC segmentation and GET block transfer.
    let rows = lines
        .iter()
        .filter(|l| l["profile"] == "1-0:99.1.0.255")
        .count();
    assert_eq!(rows, 96, "{}", run.stdout);
}

#[test]
fn help_shows_examples() {
    let run = wattline(["dlms", "read", "--help"]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout
            .contains("wattline dlms read 127.0.0.1:4059 --clock"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("--association"), "{}", run.stdout);
}
