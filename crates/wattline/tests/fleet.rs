//! A small real deployment for end-to-end tests: `wattline pki init`, enrolled meters, `wattline
//! server` with an admin token, and one `wattline agent` per meter (simulator source, reporting
//! every second) talking MQTT/TLS to it — each a separate process, stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use schema::MeterId;
use server::{SqliteStore, Store};

use crate::util::{free_port, wattline};

/// The admin bearer token the server is configured with.
pub const ADMIN_TOKEN: &str = "fleet-test-admin-token-0123456789";

/// A child process killed when dropped (a failing test leaves nothing running).
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The deployment. Fields drop in order: processes first, then the directory.
pub struct Fleet {
    pub server: Option<Proc>,
    pub agents: Vec<Proc>,
    pub meters: Vec<String>,
    pub bundles: Vec<PathBuf>,
    pub data: PathBuf,
    pub config: PathBuf,
    pub http: u16,
    pub dir: PathBuf,
    server_starts: u32,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.agents.clear();
        self.server = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn(args: &[&str], log: &Path) -> Proc {
    let log = std::fs::File::create(log).unwrap();
    Proc(
        Command::new(env!("CARGO_BIN_EXE_wattline"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("wattline starts"),
    )
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Polls `ok` every 300 ms until it holds; fails the test after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

impl Fleet {
    /// Initialises the PKI, enrols `meters`, starts the server and one agent per meter.
    pub fn start(tag: &str, meters: &[&str]) -> Fleet {
        Fleet::start_with(tag, meters, |_, text| text)
    }

    /// As [`Fleet::start`], with `edit(meter, agent.toml text)` changing each agent config
    /// before its agent starts.
    pub fn start_with(tag: &str, meters: &[&str], edit: impl Fn(&str, String) -> String) -> Fleet {
        let dir = std::env::temp_dir().join(format!(
            "wattline-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let data = dir.join("data");
        let data_s = data.to_str().unwrap().to_owned();
        let run = wattline(["pki", "init", "--data-dir", &data_s]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let (http, mqtt) = (free_port(), free_port());
        let token = dir.join("admin-token");
        std::fs::write(&token, ADMIN_TOKEN).unwrap();
        let config = dir.join("server.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {data_s:?}\n[http]\nlisten = \"127.0.0.1:{http}\"\nadmin_token_file = {:?}\n[mqtt]\nlisten = \"127.0.0.1:{mqtt}\"\n",
                token.to_str().unwrap()
            ),
        )
        .unwrap();
        let mut bundles = Vec::new();
        for m in meters {
            let out = dir.join(m);
            let run = wattline([
                "meter",
                "enroll",
                m,
                "--data-dir",
                &data_s,
                "--out",
                out.to_str().unwrap(),
                "--server-host",
                "127.0.0.1",
                "--server-port",
                &mqtt.to_string(),
            ]);
            assert_eq!(run.code, 0, "{}", run.stderr);
            // Report every second and retry quickly: many records in a few seconds.
            let path = out.join("agent.toml");
            let text = std::fs::read_to_string(&path).unwrap();
            let text = text.replace("[uplink]\n", "[uplink]\nbackoff_max_ms = 1000\n")
                + "\n[pipeline]\nreporting_interval_s = 1\n";
            std::fs::write(&path, edit(m, text)).unwrap();
            bundles.push(path);
        }
        let mut fleet = Fleet {
            server: None,
            agents: Vec::new(),
            meters: meters.iter().map(|m| (*m).to_owned()).collect(),
            bundles,
            data,
            config,
            http,
            dir,
            server_starts: 0,
        };
        fleet.start_server();
        fleet.agents = fleet
            .bundles
            .iter()
            .enumerate()
            .map(|(i, b)| {
                spawn(
                    &["agent", "--config", b.to_str().unwrap()],
                    &fleet.dir.join(format!("agent-{i}.log")),
                )
            })
            .collect();
        fleet
    }

    /// Starts (again) the server; its stderr goes to `server-N.log`.
    pub fn start_server(&mut self) {
        self.server_starts += 1;
        let log = self.dir.join(format!("server-{}.log", self.server_starts));
        self.server = Some(spawn(
            &["server", "--config", self.config.to_str().unwrap()],
            &log,
        ));
    }

    /// Kills the server with SIGKILL: no shutdown, no flush.
    pub fn kill_server(&mut self) {
        if let Some(mut p) = self.server.take() {
            p.0.kill().unwrap();
            p.0.wait().unwrap();
        }
    }

    /// What the server logged so far, every start.
    pub fn server_logs(&self) -> String {
        (1..=self.server_starts)
            .map(|i| {
                std::fs::read_to_string(self.dir.join(format!("server-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// `(stored readings, gaps)` per meter, read beside the running server.
    pub fn stored(&self) -> Vec<(Vec<server::StoredReading>, Vec<server::Gap>)> {
        rt().block_on(async {
            let store = SqliteStore::open(&self.data).await.unwrap();
            let mut out = Vec::new();
            for m in &self.meters {
                let id = MeterId::parse(m).unwrap();
                let r = store.readings(&id, 0, i64::MAX, 1_000_000).await.unwrap();
                out.push((r, store.gaps(&id).await.unwrap()));
            }
            out
        })
    }

    /// The agent's `status --json` of meter `i`.
    pub fn agent_status(&self, i: usize) -> serde_json::Value {
        let b = self.bundles[i].to_str().unwrap();
        let status = wattline(["agent", "status", "--json", "--config", b]);
        assert_eq!(status.code, 0, "{}", status.stderr);
        serde_json::from_str(&status.stdout).unwrap()
    }

    /// An API call with the admin token through curl: `(HTTP status, body)`.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let url = format!("http://127.0.0.1:{}/api/v1{path}", self.http);
        let mut cmd = Command::new("curl");
        cmd.args(["--silent", "--show-error", "--max-time", "10", "-X", method])
            .args(["-H", &format!("authorization: Bearer {ADMIN_TOKEN}")])
            .args(["--write-out", "\n%{http_code}"]);
        if let Some(b) = body {
            cmd.args(["-H", "content-type: application/json", "--data", b]);
        }
        let out = cmd
            .arg(&url)
            .output()
            .expect("curl runs (Debian package curl)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (
            code.trim().parse().unwrap_or(0),
            serde_json::from_str(body).unwrap_or(serde_json::Value::String(body.to_owned())),
        )
    }
}
