//! Load figure for BENCHMARKS.md (ignored by default; run it on purpose):
//! one process, one core, N simulated three-phase 8 kHz meters in real time through the whole
//! pipeline (simulator → metrology → intervals → registers → outbox; the uplink retries a
//! closed port). Prints CPU time per meter-second and the meters one core sustains.
//!
//! `cargo test -p agent --release --test tests -- --ignored fleet --nocapture`
//! (`WATTLINE_FLEET_METERS`, default 50; `WATTLINE_FLEET_SECONDS`, default 20).

use std::time::{Duration, Instant};

use agent::config::AgentConfig;
use agent::pipeline::RunOptions;

use crate::support::pki::Pki;
use crate::support::{agent::setup, free_port, tempdir};

const SCENARIO_3P: &str = "phases = 3\nsample_rate_hz = 8000\n\n\
[[load]]\nname = \"heater\"\nkind = { type = \"resistive\", power_w = 3000 }\nphase = \"abc\"\n\n\
[[load]]\nname = \"pump\"\nkind = { type = \"motor\", power_w = 1500 }\nphase = \"a\"\n\n\
[[load]]\nname = \"pc\"\nkind = { type = \"rectifier\", power_w = 400 }\nphase = \"b\"\n";

/// CPU time (user + system) of this process, from /proc/self/stat, in seconds.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[test]
#[ignore = "load measurement for BENCHMARKS.md; run on purpose with --release"]
fn fleet_of_three_phase_8khz_meters_on_one_core() {
    let meters: usize = std::env::var("WATTLINE_FLEET_METERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seconds: u64 = std::env::var("WATTLINE_FLEET_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempdir("fleet");
    let pki = Pki::new(&dir);
    let port = free_port();
    let mut configs = Vec::new();
    for n in 0..meters {
        let mdir = dir.join(format!("m{n}"));
        std::fs::create_dir_all(&mdir).unwrap();
        let s = setup(&mdir, &pki, port, &format!("fleet-{n}"), "real_time", "");
        std::fs::write(mdir.join("scenario.toml"), SCENARIO_3P).unwrap();
        let mut config = AgentConfig::load(&s.config).unwrap();
        config.pipeline.status_every_ms = 1000;
        configs.push((config, s));
    }
    // One worker thread: everything the meters need runs on one core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let cpu0 = cpu_s();
    let wall0 = Instant::now();
    rt.block_on(async {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for (config, _) in &configs {
            let source = config.source.build(None).unwrap();
            tasks.push(tokio::spawn(agent::pipeline::run(
                config.clone(),
                source,
                RunOptions::default(),
                rx.clone(),
            )));
        }
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        tx.send(true).unwrap();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    });
    let cpu = cpu_s() - cpu0;
    let wall = wall0.elapsed().as_secs_f64();
    // Each meter makes one reading per simulated second; count what each delivered to its outbox.
    let mut behind = 0;
    let mut readings_total = 0u64;
    for (_, s) in &configs {
        let st = crate::support::agent::status(s).unwrap();
        readings_total += st.outbox_appended_total;
        if (st.outbox_appended_total as f64) < seconds as f64 * 0.8 {
            behind += 1;
        }
    }
    let meter_seconds = meters as f64 * seconds as f64;
    let cpu_per_meter_s = cpu / meter_seconds;
    eprintln!(
        "fleet: {meters} three-phase 8 kHz meters, {seconds} s real time, wall {wall:.1} s, CPU {cpu:.2} s \
         => {:.2} ms CPU per meter-second, {:.0} meters per core; {readings_total} records; {behind} meters behind",
        cpu_per_meter_s * 1000.0,
        1.0 / cpu_per_meter_s
    );
    assert_eq!(behind, 0, "meters fell behind real time on one core");
}
