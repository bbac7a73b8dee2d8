//! `wattline demo` and `wattline server` end to end: the real binary, the real fleet over
//! MQTT/TLS into SQLite, stop with SIGINT, resume on the same directory; a bad server config.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use schema::MeterId;
use server::{SqliteStore, Store};

use crate::util::{repo_root, wattline};

/// The meters every demo run has (the six cases plus the observer).
const FLEET: &[&str] = &[
    "demo-resistive",
    "demo-pump",
    "demo-pv",
    "demo-harmonic",
    "demo-observer",
    "demo-theft",
    "demo-tampered",
];

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "wattline-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `wattline demo` with its banner.
struct Demo {
    child: Child,
    banner: String,
    stderr: std::thread::JoinHandle<String>,
}

impl Demo {
    fn start(dir: &Path) -> Demo {
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
    let dir = TempDir::new("demo");
    let demo = Demo::start(&dir.0);
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
    let creds = std::fs::read_to_string(dir.0.join("demo-credentials.txt")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.0.join("demo-credentials.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "credentials are owner-only");
    let first = wait_for_readings(&dir.0, &[], 2);

    // The API sees the same fleet with the bootstrap admin token.
    let token = std::fs::read_to_string(dir.0.join("admin-token")).unwrap();
    let (status, body) = http_get(&demo.http_addr(), "/api/v1/meters", token.trim());
    assert_eq!(status, 200, "{body}");
    for id in FLEET {
        assert!(body.contains(id), "GET /api/v1/meters lists {id}: {body}");
    }
    let (status, _) = http_get(&demo.http_addr(), "/api/v1/meters", "wrong-token-xxxxxxxx");
    assert_eq!(status, 401);
    demo.stop();

    // After the stop: what was stored, per meter.
    let stopped = readings(&dir.0);
    for ((id, before), (_, after)) in first.iter().zip(&stopped) {
        assert!(after.len() >= before.len(), "{id}");
    }

    // Second run on the same directory: same logins, counters continue, nothing twice.
    let demo = Demo::start(&dir.0);
    for line in creds.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            demo.banner.contains(line.trim()),
            "second run prints the same login {line:?}"
        );
    }
    let resumed = wait_for_readings(&dir.0, &stopped, 2);
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
        let db = server::Database::Sqlite(SqliteStore::open(&dir.0).await.unwrap());
        db.accounts().users().await.unwrap()
    });
    let mut names: Vec<_> = users.iter().map(|u| u.username.clone()).collect();
    names.sort();
    assert_eq!(names, ["ada", "admin", "operator"], "no duplicate users");
}

#[test]
fn demo_names_the_flag_when_a_port_is_in_use() {
    let dir = TempDir::new("demo-port");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let run = wattline([
        "demo",
        "--data-dir",
        dir.0.to_str().unwrap(),
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
    let dir = TempDir::new("server-config");
    let path = dir.0.join("server.toml");
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
        dir.0.join("missing.toml").to_str().unwrap(),
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("missing.toml"), "{}", run.stderr);
}
