//! Interoperability of the agent's COSEM server with the Gurux DLMS client for Python (PyPI
//! `gurux-dlms`, an independent implementation used only as a test peer): a real agent
//! pipeline with the simulator source serves its COSEM server over the TCP wrapper, and the
//! existing Gurux harness (`crates/dlms/tests/gurux_client.py`) reads it with the public, LLS
//! and HLS-GMAC + suite 0 associations and operates the relay, which the agent's real relay
//! state machine carries out. No MQTT broker is needed: the uplink keeps retrying meanwhile.
//!
//! Needs `python3` with `gurux-dlms==1.0.203`; `WATTLINE_SKIP_GURUX=1` skips outside CI only.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::support::agent::{setup, status};
use crate::support::pki::Pki;
use crate::support::{free_port, tempdir, wait_for};

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

fn gurux(port: u16, mode: &str, extra: &[&str]) -> Vec<String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dlms/tests/gurux_client.py");
    let out = Command::new(python())
        .arg(&script)
        .args(["127.0.0.1", &port.to_string(), mode])
        .args(extra)
        .output()
        .expect("start python3");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "gurux client ({mode}) failed (is `pip install gurux-dlms==1.0.203` done?):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(str::to_owned).collect()
}

fn line<'a>(lines: &'a [String], event: &str) -> &'a str {
    let pat = format!("\"event\": \"{event}\"");
    lines
        .iter()
        .find(|l| l.contains(&pat))
        .unwrap_or_else(|| panic!("no {event} in {lines:?}"))
}

#[test]
fn gurux_reads_the_agent_and_operates_its_relay() {
    if skip() {
        return;
    }
    let dir = tempdir("cosem-gurux");
    let pki = Pki::new(&dir);
    let cosem_port = free_port();
    // Nothing listens on the uplink port: the agent meters and serves COSEM regardless.
    let extra = format!(
        "[cosem]\nlisten = \"127.0.0.1:{cosem_port}\"\nsystem_title = \"4D4D4D0000BC614E\"\n\
         lls_password = \"demo-lls\"\nblock_cipher_key = \"000102030405060708090A0B0C0D0E0F\"\n\
         authentication_key = \"D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF\"\n\
         client_system_title = \"4D4D4D0000000001\"\ncapture_period_s = 1\n"
    );
    let s = setup(&dir, &pki, free_port(), "m-cosem", "real_time", &extra);
    let config = agent::config::AgentConfig::load(&s.config).unwrap();
    let source = config.source.build(None).expect("simulator source");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let runner = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(agent::pipeline::run(
            config,
            source,
            agent::pipeline::RunOptions::default(),
            stop_rx,
        ))
    });
    // A few profile rows and some metered energy first.
    wait_for("metered energy", Duration::from_secs(30), || {
        status(&s).is_some_and(|st| st.counters.import_wh > 0.5)
    });
    std::thread::sleep(Duration::from_secs(3));

    let public = gurux(cosem_port, "public", &[]);
    line(&public, "associated");
    assert!(line(&public, "register_denied").contains("\"ok\": true"));
    line(&public, "clock");

    let lls = gurux(cosem_port, "lls", &[]);
    let import = line(&lls, "register");
    assert!(
        import.contains("1.0.1.8.0.255") && import.contains("\"unit\": 30"),
        "{import}"
    );
    let wh: f64 = import
        .split("\"value\": ")
        .nth(1)
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .expect("register value");
    let now_wh = status(&s).unwrap().counters.import_wh;
    assert!(
        wh > 0.0 && wh <= now_wh.ceil() + 1.0,
        "gurux {wh} Wh, agent {now_wh} Wh"
    );
    let by_entry = line(&lls, "profile_by_entry");
    assert!(
        by_entry.contains("\"capture_objects\": 7") && by_entry.contains("\"period\": 1"),
        "{by_entry}"
    );
    line(&lls, "profile_all");
    assert!(
        line(&lls, "disconnect").contains("\"ok\": false"),
        "reader may not operate the relay"
    );
    assert_eq!(status(&s).unwrap().relay_state, "connected");

    let hls = gurux(cosem_port, "hls", &["1"]);
    line(&hls, "associated");
    assert!(
        line(&hls, "disconnect").contains("\"control_state\": 0"),
        "{hls:?}"
    );
    assert!(
        line(&hls, "reconnect").contains("\"control_state\": 2"),
        "{hls:?}"
    );
    wait_for("relay state in the agent", Duration::from_secs(5), || {
        status(&s).is_some_and(|st| st.relay_state == "ready_for_reconnection")
    });
    // The agent's own event log recorded both remote operations.
    let events = std::fs::read(s.data_dir.join("events.log")).unwrap();
    let text = String::from_utf8_lossy(&events);
    assert!(
        text.contains("remote_disconnect") && text.contains("remote_reconnect"),
        "{text}"
    );

    stop_tx.send(true).unwrap();
    runner.join().unwrap().expect("agent run");
    // The invocation counters were persisted for the next start.
    assert!(s.data_dir.join("cosem/invocation_counters.json").exists());
    assert!(
        std::fs::read_to_string(s.data_dir.join("cosem/load_profile.csv"))
            .unwrap()
            .lines()
            .count()
            >= 2
    );
}
