//! `wattline demo` and `wattline server` end to end: the real binary, the real fleet over
//! MQTT/TLS into SQLite, stop with SIGINT, resume on the same directory; a bad server config.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use schema::MeterId;
use server::{SqliteStore, Store};

use crate::util::{Scratch, repo_root, wattline};

/// The meters every demo run has (the seven houses plus their two observers).
const FLEET: &[&str] = &[
    "demo-resistive",
    "demo-pump",
    "demo-pv",
    "demo-harmonic",
    "demo-observer",
    "demo-theft",
    "demo-tampered",
    "demo-observer-2",
    "demo-slow-theft",
];

/// A running `wattline demo` with its banner.
struct Demo {
    child: Child,
    banner: String,
    stderr: std::thread::JoinHandle<String>,
}

impl Demo {
    fn start(dir: &Path) -> Demo {
        Demo::start_with(dir, &[])
    }

    /// `start` with more flags.
    fn start_with(dir: &Path, extra: &[&str]) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wattline"))
            .args(["demo", "--data-dir"])
            .arg(dir)
            .args([
                "--http",
                "127.0.0.1:0",
                "--mqtt",
                "127.0.0.1:0",
                "--interval-s",
                "1",
            ])
            .args(extra)
            .current_dir(repo_root())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wattline demo starts");
        let stdout = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut banner = String::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                banner.push_str(&line);
                banner.push('\n');
                if line.contains("Ctrl-C to stop") {
                    let _ = tx.send(banner.clone());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(banner) => Demo {
                child,
                banner,
                stderr,
            },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "no banner within 120 s; stderr:\n{}",
                    stderr.join().unwrap()
                );
            }
        }
    }

    /// The `host:port` of the web/API from the banner.
    fn http_addr(&self) -> String {
        let line = self
            .banner
            .lines()
            .find(|l| l.trim_start().starts_with("API"))
            .unwrap_or_else(|| panic!("no API line in the banner:\n{}", self.banner));
        let url = line.split_whitespace().nth(1).unwrap();
        url.trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_owned()
    }

    /// SIGINT, then the exit status must be success within 60 s.
    fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-INT", &pid]).status().unwrap();
        assert!(status.success());
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                let stderr = self.stderr.join().unwrap();
                assert!(s.success(), "demo exited with {s}; stderr:\n{stderr}");
                assert!(!stderr.contains("panicked"), "{stderr}");
                return stderr;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                panic!("demo did not stop within 60 s of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Stored readings per fleet meter (the store opened beside the running server: SQLite WAL).
fn readings(dir: &Path) -> Vec<(String, Vec<server::StoredReading>)> {
    runtime().block_on(async {
        let store = SqliteStore::open(dir).await.unwrap();
        let mut out = Vec::new();
        for id in FLEET {
            let r = store
                .readings(&MeterId::parse(id).unwrap(), 0, i64::MAX, 100_000)
                .await
                .unwrap();
            out.push(((*id).to_owned(), r));
        }
        out
    })
}

/// Waits until every fleet meter has at least `n` more readings than in `before`.
fn wait_for_readings(
    dir: &Path,
    before: &[(String, Vec<server::StoredReading>)],
    n: usize,
) -> Vec<(String, Vec<server::StoredReading>)> {
    let t0 = Instant::now();
    loop {
        let now = readings(dir);
        let missing: Vec<&str> = now
            .iter()
            .zip(FLEET)
            .filter(|((_, r), id)| {
                let had = before
                    .iter()
                    .find(|(m, _)| m == *id)
                    .map_or(0, |(_, r)| r.len());
                r.len() < had + n
            })
            .map(|(_, id)| *id)
            .collect();
        if missing.is_empty() {
            return now;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "no new readings within 90 s from {missing:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn http_get(addr: &str, path: &str, token: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

#[test]
fn demo_streams_every_meter_into_the_store_and_resumes_where_it_stopped() {
    let dir = Scratch::new();
    let demo = Demo::start(&dir.dir);
    for id in FLEET {
        assert!(
            demo.banner.contains(id),
            "banner lists {id}:\n{}",
            demo.banner
        );
    }
    for user in ["admin", "operator", "ada"] {
        assert!(demo.banner.contains(user), "banner shows login {user}");
    }
    let creds = std::fs::read_to_string(dir.dir.join("demo-credentials.txt")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.dir.join("demo-credentials.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "credentials are owner-only");
    let first = wait_for_readings(&dir.dir, &[], 2);

    // The API sees the same fleet with the bootstrap admin token.
    let token = std::fs::read_to_string(dir.dir.join("admin-token")).unwrap();
    let (status, body) = http_get(&demo.http_addr(), "/api/v1/meters", token.trim());
    assert_eq!(status, 200, "{body}");
    for id in FLEET {
        assert!(body.contains(id), "GET /api/v1/meters lists {id}: {body}");
    }
    let (status, _) = http_get(&demo.http_addr(), "/api/v1/meters", "wrong-token-xxxxxxxx");
    assert_eq!(status, 401);
    demo.stop();

    // After the stop: what was stored, per meter.
    let stopped = readings(&dir.dir);
    for ((id, before), (_, after)) in first.iter().zip(&stopped) {
        assert!(after.len() >= before.len(), "{id}");
    }

    // Second run on the same directory: same logins, counters continue, nothing twice.
    let demo = Demo::start(&dir.dir);
    for line in creds.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            demo.banner.contains(line.trim()),
            "second run prints the same login {line:?}"
        );
    }
    let resumed = wait_for_readings(&dir.dir, &stopped, 2);
    demo.stop();
    for ((id, before), (_, after)) in stopped.iter().zip(&resumed) {
        let last = before.last().unwrap();
        let new: Vec<_> = after
            .iter()
            .filter(|r| (r.boot_id, r.seq) > (last.boot_id, last.seq))
            .collect();
        assert!(!new.is_empty(), "{id}: new readings after the restart");
        let mut keys: Vec<_> = after.iter().map(|r| (r.boot_id, r.seq)).collect();
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n, "{id}: no duplicate (boot_id, seq)");
        assert_eq!(new[0].boot_id, last.boot_id, "{id}: same counter epoch");
        for r in &new {
            let (a, b) = (&last.reading.counters, &r.reading.counters);
            assert!(
                b.import_wh >= a.import_wh && b.export_wh >= a.export_wh,
                "{id}: counters continue ({} -> {} Wh import)",
                a.import_wh,
                b.import_wh
            );
        }
    }
    let users = runtime().block_on(async {
        let db = server::Database::Sqlite(SqliteStore::open(&dir.dir).await.unwrap());
        db.accounts().users().await.unwrap()
    });
    let mut names: Vec<_> = users.iter().map(|u| u.username.clone()).collect();
    names.sort();
    assert_eq!(names, ["ada", "admin", "operator"], "no duplicate users");
}

#[test]
fn demo_names_the_flag_when_a_port_is_in_use() {
    let dir = Scratch::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let run = wattline([
        "demo",
        "--data-dir",
        dir.dir.to_str().unwrap(),
        "--http",
        &addr,
        "--mqtt",
        "127.0.0.1:0",
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("--http") && run.stderr.contains(&addr),
        "{}",
        run.stderr
    );
}

#[test]
fn server_with_a_bad_config_names_the_key_and_exits_2() {
    let dir = Scratch::new();
    let path = dir.dir.join("server.toml");
    std::fs::write(
        &path,
        "data_dir = \".\"\n[http]\nlisten = \"127.0.0.1:0\"\nport = 8080\n",
    )
    .unwrap();
    let run = wattline(["server", "--config", path.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("server.toml") && run.stderr.contains("port"),
        "{}",
        run.stderr
    );
    std::fs::write(&path, "data_dir = \".\"\n[ingest]\nqueue_len = 0\n").unwrap();
    let run = wattline(["server", "--config", path.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("[ingest] queue_len"), "{}", run.stderr);
    let run = wattline([
        "server",
        "--config",
        dir.dir.join("missing.toml").to_str().unwrap(),
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("missing.toml"), "{}", run.stderr);
}

/// The cases the demo's suspects get, with the honest meters that must get none.
const SUSPECTS: &[&str] = &["demo-theft", "demo-tampered", "demo-slow-theft"];
const HONEST: &[&str] = &[
    "demo-resistive",
    "demo-pump",
    "demo-pv",
    "demo-harmonic",
    "demo-observer",
    "demo-observer-2",
];

/// The id of the case on `meter` in a `GET /api/v1/cases` answer, if it has one.
fn case_id(cases: &serde_json::Value, meter: &str) -> Option<i64> {
    cases["cases"]
        .as_array()?
        .iter()
        .find(|c| c["meter"] == meter)
        .and_then(|c| c["id"].as_i64())
}

/// The evidence items of case `id` (`GET /api/v1/cases/{id}`; the list only counts them).
fn case_items(addr: &str, token: &str, id: i64) -> Vec<serde_json::Value> {
    let (status, body) = http_get(addr, &format!("/api/v1/cases/{id}"), token);
    assert_eq!(status, 200, "{body}");
    let detail: serde_json::Value = serde_json::from_str(&body).unwrap();
    detail["case"]["evidence"]["items"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("case {id} without evidence items: {detail:#}"))
}

#[test]
fn demo_shows_the_bypass_the_magnet_and_the_slow_theft_as_cases_within_minutes() {
    // Each case is checked for what found it, not only that it exists: the bypass and the slow
    // theft by the energy balance at their own observer, the tampered meter by its magnet.
    let dir = Scratch::new();
    let demo = Demo::start(&dir.dir);
    let t0 = Instant::now();
    let token = std::fs::read_to_string(dir.dir.join("admin-token")).unwrap();
    let addr = demo.http_addr();
    let token = token.trim();
    let mut seen: Vec<(&str, Duration)> = Vec::new();
    let cases = loop {
        let (status, body) = http_get(&addr, "/api/v1/cases", token);
        assert_eq!(status, 200, "{body}");
        let cases: serde_json::Value = serde_json::from_str(&body).unwrap();
        for m in SUSPECTS {
            if !seen.iter().any(|(s, _)| s == m) && case_id(&cases, m).is_some() {
                seen.push((m, t0.elapsed()));
                eprintln!("case for {m} after {:.0} s", t0.elapsed().as_secs_f64());
            }
        }
        for m in HONEST {
            assert!(
                case_id(&cases, m).is_none(),
                "honest meter {m} got a case after {:.0} s: {cases:#}",
                t0.elapsed().as_secs_f64()
            );
        }
        if seen.len() == SUSPECTS.len() {
            break cases;
        }
        // The slow theft passes the class-limit threshold (~2 % of the house) after about
        // 2.5 minutes of simulated time, and the balance judges an interval once the one after
        // it is in: about 3.5 minutes here, later when a loaded machine slows the meters.
        if t0.elapsed() > Duration::from_secs(420) {
            let stderr = demo.stop();
            panic!(
                "within 420 s only {seen:?} of {SUSPECTS:?} got cases: {cases:#}\ndemo stderr:\n{stderr}"
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let items = |m: &str| case_items(&addr, token, case_id(&cases, m).unwrap());
    let (theft, tampered, slow) = (
        items("demo-theft"),
        items("demo-tampered"),
        items("demo-slow-theft"),
    );
    demo.stop();

    // The bypass: 540 W of 3040 W (17.8 %) missing at demo-observer.
    let bypass = theft
        .iter()
        .find(|i| i["kind"] == "theft_balance" && i["observer"] == "demo-observer")
        .unwrap_or_else(|| panic!("bypass found by the balance at demo-observer: {theft:#?}"));
    let pct = bypass["unexplained_pct"].as_f64().unwrap();
    assert!((10.0..25.0).contains(&pct), "bypass share {pct} %");
    assert!(
        tampered
            .iter()
            .any(|i| i["kind"] == "tamper" && i["rule"] == "magnetic_field"),
        "magnet on demo-tampered: {tampered:#?}"
    );
    // The slow theft: real unexplained energy at the second observer, not a blip.
    let growing = slow
        .iter()
        .find(|i| i["kind"] == "theft_balance" && i["observer"] == "demo-observer-2")
        .unwrap_or_else(|| panic!("slow theft found by the balance at demo-observer-2: {slow:#?}"));
    // Over the last minute the observer saw clearly more than the house (a sustained residual,
    // 0.8 percentage points above the start of the series), where at the start it saw no more
    // than the line losses (a late stamped reading only moves energy between two neighbouring
    // intervals and would average out). Not a fixed share at a wall-clock time: on a loaded
    // machine the simulated meters' time lags the wall clock, so the hidden load is smaller
    // when the case appears (1.1 % seen at 141 s under a full parallel test run).
    let series = growing["residual_series"].as_array().unwrap();
    let share = |rows: &[serde_json::Value]| {
        let sum = |k: &str| rows.iter().map(|r| r[k].as_f64().unwrap()).sum::<f64>();
        100.0 * sum("residual_wh") / sum("observer_wh")
    };
    assert!(series.len() >= 12, "{growing:#}");
    let (first, last) = (share(&series[..6]), share(&series[series.len() - 6..]));
    assert!(
        last > 0.8 && last - first > 0.8 && first < 1.0,
        "slow theft: unexplained {first:.2} % at first, {last:.2} % in the last minute: {growing:#}"
    );
    // The hidden load grows from 30 s of simulated time (the meters start just before the
    // banner) and is 10 W (0.5 %) at 60 s: a case before that would be a false alarm.
    let (_, slow_after) = seen.iter().find(|(m, _)| *m == "demo-slow-theft").unwrap();
    assert!(
        *slow_after > Duration::from_secs(60),
        "slow-theft case after {slow_after:?}, before its hidden load could be seen"
    );
}

#[test]
fn demo_serves_dlms_on_its_cosem_port_and_polls_it_as_a_second_meter() {
    let dir = Scratch::new();
    let port = crate::util::free_port();
    let cosem = format!("127.0.0.1:{port}");
    let demo = Demo::start_with(&dir.dir, &["--cosem", &cosem]);
    assert!(
        demo.banner.contains(&format!("DLMS/COSEM  {cosem}"))
            && demo.banner.contains("dlms-demo-1"),
        "{}",
        demo.banner
    );
    // A user's read against the running demo, as the README shows it.
    let run = wattline([
        "dlms",
        "read",
        cosem.as_str(),
        "--association",
        "reader",
        "--password",
        "demo-lls",
        "--clock",
        "--energy",
        "--json",
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let lines = run.json_lines();
    let clock = lines.iter().find(|l| l["obis"] == "0-0:1.0.0.255").unwrap();
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (clock["unix_s"].as_i64().unwrap() - now_s).abs() < 60,
        "{clock}"
    );
    let import = lines.iter().find(|l| l["obis"] == "1-0:1.8.0.255").unwrap();
    assert_eq!(import["unit"], "Wh", "{import}");

    // The server polls the same meter over DLMS as dlms-demo-1: its readings reach the API.
    let id = MeterId::parse("dlms-demo-1").unwrap();
    let t0 = Instant::now();
    loop {
        let n = runtime().block_on(async {
            let store = SqliteStore::open(&dir.dir).await.unwrap();
            store.readings(&id, 0, i64::MAX, 1000).await.unwrap().len()
        });
        if n >= 2 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no DLMS-polled readings in 60 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let token = std::fs::read_to_string(dir.dir.join("admin-token")).unwrap();
    let to = (now_s + 600) * 1000;
    let (status, body) = http_get(
        &demo.http_addr(),
        &format!("/api/v1/meters/dlms-demo-1/readings?resolution=raw&to={to}"),
        token.trim(),
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let points = v["points"].as_array().unwrap_or_else(|| panic!("{body}"));
    assert!(points.len() >= 2, "{body}");
    let stderr = demo.stop();
    assert!(
        !stderr.contains("dlms poll failed: the meter rejected"),
        "{stderr}"
    );
}

#[test]
fn demo_says_when_its_dlms_cosem_port_is_taken_and_runs_without_it() {
    let dir = Scratch::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let demo = Demo::start_with(&dir.dir, &["--cosem", &addr]);
    assert!(!demo.banner.contains("DLMS/COSEM"), "{}", demo.banner);
    let stderr = demo.stop();
    assert!(
        stderr.contains(&format!("{addr} is not available")) && stderr.contains("--cosem"),
        "{stderr}"
    );
    drop(taken);
}
