//! The lossless core against a real broker: every scenario ends by checking what an idempotent
//! ingest stored, record by record.

use std::time::Duration;

use schema::{Action, Body, Command, MeterKey, Record};

use crate::support::agent::{AgentProcess, Setup, setup, status};
use crate::support::broker::Broker;
use crate::support::ingest::Ingest;
use crate::support::pki::Pki;
use crate::support::{free_port, tempdir, wait_for};

fn readings(records: &[(u64, Record)]) -> Vec<(u64, i64, f64)> {
    records
        .iter()
        .filter_map(|(_, r)| match &r.body {
            Body::Reading(x) => Some((r.seq, r.t_ms, x.counters.import_wh)),
            _ => None,
        })
        .collect()
}

fn event_codes(records: &[(u64, Record)]) -> Vec<String> {
    records
        .iter()
        .filter_map(|(_, r)| match &r.body {
            Body::Event(e) => Some(e.code.clone()),
            _ => None,
        })
        .collect()
}

/// Waits until ingest holds every record the stopped agent made (seqs `0..next_seq` of its
/// status); on timeout the panic says which seqs are missing, what the agent's final status
/// says about its outbox, and the agent's log, so a failure tells a lost record from a slow
/// delivery.
fn wait_all_stored(ingest: &Ingest, setup: &Setup, agent: &AgentProcess, timeout: Duration) {
    let st = status(setup).expect("final status");
    let meter = setup.meter.to_string();
    let start = std::time::Instant::now();
    loop {
        let have: std::collections::BTreeSet<u64> = ingest
            .records_of(&meter)
            .iter()
            .map(|(_, r)| r.seq)
            .collect();
        let missing: Vec<u64> = (0..st.next_seq).filter(|q| !have.contains(q)).collect();
        if missing.is_empty() {
            return;
        }
        if start.elapsed() > timeout {
            panic!(
                "after {timeout:?} ingest lacks seqs {missing:?} of 0..{} (outbox at stop: {} records, uplink {:?}); agent log:\n{}",
                st.next_seq,
                st.outbox_records,
                st.uplink,
                agent.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every seq of one boot from 0 to the agent's next seq, exactly once, counters monotonic.
fn assert_complete(setup: &Setup, records: &[(u64, Record)]) {
    let st = status(setup).expect("final status");
    assert_eq!(st.outbox_records, 0, "outbox drained at shutdown");
    let boots: std::collections::BTreeSet<u64> = records.iter().map(|(b, _)| *b).collect();
    assert_eq!(boots.len(), 1, "one boot: {boots:?}");
    let mut seqs: Vec<u64> = records.iter().map(|(_, r)| r.seq).collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (0..st.next_seq).collect::<Vec<_>>(),
        "every record exactly once"
    );
    let mut by_seq = readings(records);
    by_seq.sort_by_key(|r| r.0);
    for w in by_seq.windows(2) {
        assert!(w[1].2 >= w[0].2, "import_wh went backwards: {w:?}");
    }
}

#[test]
fn kill_9_mid_stream_then_restart_loses_and_duplicates_nothing() {
    let dir = tempdir("kill9");
    let pki = Pki::new(&dir);
    let port = free_port();
    let _broker = Broker::start(&dir, &pki, port);
    let s = setup(&dir, &pki, port, "m-kill", "real_time", "");
    let ingest = Ingest::start(&pki, port, &[(s.meter.clone(), s.key.clone())]);

    let mut first = AgentProcess::spawn(&s);
    wait_for("5 readings", Duration::from_secs(60), || {
        readings(&ingest.records_of("m-kill")).len() >= 5
    });
    first.kill_9();
    let before = readings(&ingest.records_of("m-kill"));
    let last_before = before.iter().map(|r| r.2).fold(0.0, f64::max);

    let mut second = AgentProcess::spawn(&s);
    wait_for("5 more readings", Duration::from_secs(60), || {
        readings(&ingest.records_of("m-kill")).len() >= before.len() + 5
    });
    second.terminate();
    wait_all_stored(&ingest, &s, &second, Duration::from_secs(10));
    let records = ingest.records_of("m-kill");
    assert_complete(&s, &records);
    let starts = event_codes(&records)
        .iter()
        .filter(|c| *c == "agent_started")
        .count();
    assert_eq!(starts, 2, "{:?}", event_codes(&records));
    // Counters continue across the kill: no reset, nothing negative.
    let after = readings(&records);
    assert!(
        after.last().unwrap().2 > last_before,
        "counters continue after the restart"
    );
    assert!(last_before > 0.0);
    eprintln!(
        "kill -9: {} records, {} duplicates dropped by ingest",
        records.len(),
        ingest.stored.lock().unwrap().duplicates
    );
}

#[test]
fn broker_outage_backfills_everything_in_order_with_original_timestamps() {
    let outage_s: u64 = std::env::var("WATTLINE_TEST_OUTAGE_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let dir = tempdir("outage");
    let pki = Pki::new(&dir);
    let port = free_port();
    let mut broker = Broker::start(&dir, &pki, port);
    let s = setup(&dir, &pki, port, "m-outage", "real_time", "");
    let ingest = Ingest::start(&pki, port, &[(s.meter.clone(), s.key.clone())]);
    let mut agent = AgentProcess::spawn(&s);
    wait_for("3 readings", Duration::from_secs(60), || {
        readings(&ingest.records_of("m-outage")).len() >= 3
    });

    broker.stop();
    let stopped_at = schema_now_ms();
    std::thread::sleep(Duration::from_secs(outage_s));
    let during = status(&s).unwrap();
    assert_ne!(
        during.uplink["link"]["state"], "connected",
        "{:?}",
        during.uplink
    );
    assert!(
        during.outbox_records as f64 >= outage_s as f64 * 0.8,
        "backlog {}",
        during.outbox_records
    );
    broker.restart();
    assert!(!broker.log().contains("Error"), "{}", broker.log());
    wait_for("the backlog to drain", Duration::from_secs(90), || {
        status(&s).is_some_and(|st| st.outbox_records <= 2)
    });
    agent.terminate();
    wait_all_stored(&ingest, &s, &agent, Duration::from_secs(20));
    let records = ingest.records_of("m-outage");
    assert_complete(&s, &records);
    // In order: first deliveries arrive in seq order.
    let arrival: Vec<u64> = records.iter().map(|(_, r)| r.seq).collect();
    assert!(
        arrival.windows(2).all(|w| w[0] < w[1]),
        "out of order: {arrival:?}"
    );
    // Original timestamps: readings made during the outage are spread over it, ~1 s apart.
    let outage: Vec<(u64, i64, f64)> = readings(&records)
        .into_iter()
        .filter(|r| r.1 > stopped_at && r.1 < stopped_at + outage_s as i64 * 1000)
        .collect();
    assert!(
        outage.len() as f64 >= outage_s as f64 * 0.8,
        "{} readings during the outage",
        outage.len()
    );
    for w in outage.windows(2) {
        let gap = w[1].1 - w[0].1;
        assert!(
            (500..=2500).contains(&gap),
            "timestamps not original: {gap} ms apart"
        );
    }
    eprintln!(
        "outage {outage_s} s: {} records, backlog peaked at {}",
        records.len(),
        during.outbox_records
    );
}

#[test]
fn full_outbox_follows_its_when_full_policy_visibly() {
    let dir = tempdir("full");
    let pki = Pki::new(&dir);
    // Nobody listens on this port: the uplink never connects, the outbox only fills.
    let port = free_port();
    let small = |policy: &str| {
        format!(
            "[outbox]\nmax_bytes = 8192\nsegment_bytes = 1024\nwhen_full = \"{policy}\"\nfsync = false\n"
        )
    };
    let drop = setup(
        &dir,
        &pki,
        port,
        "m-drop",
        "as_fast_as_possible",
        &small("drop_oldest_readings"),
    );
    let block = setup(
        &dir,
        &pki,
        port,
        "m-block",
        "as_fast_as_possible",
        &small("block"),
    );
    let mut a = AgentProcess::spawn(&drop);
    let mut b = AgentProcess::spawn(&block);
    wait_for("readings dropped", Duration::from_secs(60), || {
        status(&drop).is_some_and(|st| st.outbox_dropped_readings_total > 10)
    });
    wait_for("producer blocked", Duration::from_secs(60), || {
        status(&block).is_some_and(|st| st.outbox_full_refusals_total > 0)
    });
    let (d, k) = (status(&drop).unwrap(), status(&block).unwrap());
    assert!(
        d.outbox_bytes <= 8192 && k.outbox_bytes <= 8192,
        "{} {}",
        d.outbox_bytes,
        k.outbox_bytes
    );
    assert_eq!(d.outbox_when_full, "drop_oldest_readings");
    assert_eq!(k.outbox_when_full, "block");
    assert_eq!(k.outbox_dropped_readings_total, 0, "block never drops");
    // Blocked means blocked: nothing more is appended while the uplink is away.
    let appended = k.outbox_appended_total;
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(status(&block).unwrap().outbox_appended_total, appended);
    a.terminate();
    b.terminate();
    assert!(
        a.log_text().contains("policy drop_oldest_readings"),
        "{}",
        a.log_text()
    );
    assert!(
        b.log_text().contains("producer blocked"),
        "{}",
        b.log_text()
    );
    // The drop policy kept every event (the agent_started event is the oldest record).
    let st = status(&drop).unwrap();
    assert!(st.outbox_records > 0);
}

#[test]
fn damaged_outbox_and_register_files_are_reported_and_counters_never_reset() {
    let dir = tempdir("damage");
    let pki = Pki::new(&dir);
    let port = free_port();
    // First run without a broker: records stay on disk.
    let s = setup(
        &dir,
        &pki,
        port,
        "m-damage",
        "real_time",
        "[outbox]\nsegment_bytes = 2048\n",
    );
    let mut a = AgentProcess::spawn(&s);
    wait_for("8 readings queued", Duration::from_secs(60), || {
        status(&s).is_some_and(|st| st.outbox_records >= 10)
    });
    a.kill_9();
    let before = status(&s).unwrap();

    // A torn register slot and a torn outbox tail plus a flipped bit in an older segment.
    let regs = s.data_dir.join("registers");
    std::fs::write(regs.join("registers.a"), b"torn").unwrap();
    let outbox = s.data_dir.join("outbox");
    let mut segments: Vec<_> = std::fs::read_dir(&outbox)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wlq"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 2, "{segments:?}");
    let mut last = std::fs::read(segments.last().unwrap()).unwrap();
    last.extend_from_slice(&[0x55; 37]);
    std::fs::write(segments.last().unwrap(), last).unwrap();
    let mut first = std::fs::read(&segments[0]).unwrap();
    let mid = first.len() / 2;
    first[mid] ^= 0x20;
    std::fs::write(&segments[0], first).unwrap();

    let _broker = Broker::start(&dir, &pki, port);
    let ingest = Ingest::start(&pki, port, &[(s.meter.clone(), s.key.clone())]);
    let mut b = AgentProcess::spawn(&s);
    wait_for("backlog delivered", Duration::from_secs(60), || {
        status(&s).is_some_and(|st| st.outbox_records == 0 && st.pid != before.pid)
    });
    b.terminate();
    let records = ingest.records_of("m-damage");
    let codes = event_codes(&records);
    assert!(
        codes.iter().any(|c| c == "register_slot_damaged"),
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| *c == "outbox_damaged").count(),
        2,
        "{codes:?}"
    );
    let st = status(&s).unwrap();
    assert_eq!(st.boot_id, before.boot_id, "no silent reset: same boot");
    let mut r = readings(&records);
    r.sort_by_key(|x| x.0);
    for w in r.windows(2) {
        assert!(w[1].2 >= w[0].2, "import_wh went backwards: {w:?}");
    }
    assert!(r.last().unwrap().2 >= before.counters.import_wh - 2000.0 / 3600.0 * 1.5);
    // Exactly the record hit by the flipped bit is missing, and it is reported.
    let mut seqs: Vec<u64> = records.iter().map(|(_, r)| r.seq).collect();
    seqs.sort_unstable();
    let missing = (0..st.next_seq)
        .filter(|q| seqs.binary_search(q).is_err())
        .count();
    assert!(missing <= 1, "{missing} records missing");
}

#[test]
fn commands_are_acknowledged_replays_ignored_and_malformed_ones_rejected() {
    let dir = tempdir("commands");
    let pki = Pki::new(&dir);
    let port = free_port();
    let _broker = Broker::start(&dir, &pki, port);
    let s = setup(&dir, &pki, port, "m-cmd", "real_time", "");
    let ingest = Ingest::start(&pki, port, &[(s.meter.clone(), s.key.clone())]);
    let mut agent = AgentProcess::spawn(&s);
    wait_for("connected", Duration::from_secs(60), || {
        status(&s).is_some_and(|st| st.uplink["link"]["state"] == "connected")
    });
    let now = schema_now_ms();
    let cmd = |id: &str, action: Action, expires_ms: i64| Command {
        id: id.into(),
        issued_ms: now,
        expires_ms,
        action,
    };
    let disconnect = schema::seal_commands(
        &s.key,
        &s.meter,
        1,
        1,
        &[cmd("c-1", Action::RelayDisconnect, now + 60_000)],
    )
    .unwrap();
    ingest.send_raw(&s.meter, disconnect.clone());
    ingest.send_raw(&s.meter, disconnect.clone()); // replayed envelope: ignored
    ingest.send_commands(
        &s.meter,
        &s.key,
        2,
        &[
            cmd(
                "c-2",
                Action::ReportingInterval { interval_s: 2 },
                now + 60_000,
            ),
            cmd(
                "c-3",
                Action::ReportingInterval { interval_s: 0 },
                now + 60_000,
            ),
            Command {
                issued_ms: now - 60_000,
                ..cmd("c-4", Action::RelayConnect, now - 1)
            },
        ],
    );
    // Sealed with someone else's key: refused, never acknowledged.
    ingest.send_commands(
        &s.meter,
        &MeterKey::generate(),
        3,
        &[cmd("c-5", Action::RelayConnect, now + 60_000)],
    );
    let acks = || -> Vec<schema::Ack> {
        ingest
            .records_of("m-cmd")
            .into_iter()
            .filter_map(|(_, r)| match r.body {
                Body::Ack(a) => Some(a),
                _ => None,
            })
            .collect()
    };
    wait_for("4 acks", Duration::from_secs(30), || acks().len() >= 4);
    std::thread::sleep(Duration::from_secs(2));
    let got = acks();
    assert_eq!(got.len(), 4, "{got:?}");
    let find = |id: &str| {
        got.iter()
            .find(|a| a.command_id.as_deref() == Some(id))
            .unwrap_or_else(|| panic!("no ack for {id}: {got:?}"))
    };
    assert_eq!(find("c-1").status, schema::AckStatus::Succeeded);
    assert_eq!(find("c-2").status, schema::AckStatus::Succeeded);
    assert_eq!(find("c-3").status, schema::AckStatus::Rejected);
    assert!(
        find("c-3")
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("reporting interval")
    );
    assert_eq!(find("c-4").status, schema::AckStatus::Expired);
    let st = status(&s).unwrap();
    assert_eq!(st.relay_state, "disconnected");
    assert_eq!(st.reporting_interval_s, 2);
    assert_eq!(
        st.uplink["command_envelopes_refused"], 2,
        "replay and wrong key: {:?}",
        st.uplink
    );
    let codes = event_codes(&ingest.records_of("m-cmd"));
    assert!(
        codes.iter().any(|c| c == "relay_state_changed"),
        "{codes:?}"
    );
    agent.terminate();
    // The last will / clean shutdown leaves `offline` as the retained status.
    let status_msgs = ingest.stored.lock().unwrap().status.clone();
    assert!(
        status_msgs.iter().any(|(_, p)| p == "online"),
        "{status_msgs:?}"
    );

    // After a restart the replay window is still there: the old envelope is refused again, a
    // new one is taken.
    let mut agent = AgentProcess::spawn(&s);
    wait_for("connected again", Duration::from_secs(60), || {
        status(&s).is_some_and(|st| {
            st.uplink["link"]["state"] == "connected" && st.uplink["command_envelopes_refused"] == 0
        })
    });
    ingest.send_raw(&s.meter, disconnect);
    ingest.send_commands(
        &s.meter,
        &s.key,
        4,
        &[cmd("c-6", Action::RelayConnect, now + 60_000)],
    );
    wait_for("the ack of c-6", Duration::from_secs(30), || {
        acks()
            .iter()
            .any(|a| a.command_id.as_deref() == Some("c-6"))
    });
    std::thread::sleep(Duration::from_secs(1));
    let again = acks();
    assert_eq!(
        again
            .iter()
            .filter(|a| a.command_id.as_deref() == Some("c-1"))
            .count(),
        1,
        "c-1 taken twice: {again:?}"
    );
    let st = status(&s).unwrap();
    assert_eq!(
        st.uplink["command_envelopes_refused"], 1,
        "the replay after the restart: {:?}",
        st.uplink
    );
    agent.terminate();
}

fn schema_now_ms() -> i64 {
    agent::pipeline::unix_now_ms()
}

#[test]
fn a_meter_cannot_publish_for_another_meter() {
    // The broker ACL binds topics to the certificate identity: m-a's certificate publishing
    // on m-b's `up` reaches nobody.
    let dir = tempdir("acl");
    let pki = Pki::new(&dir);
    let port = free_port();
    let _broker = Broker::start(&dir, &pki, port);
    let key_b = MeterKey::generate();
    let meter_b = schema::MeterId::parse("m-b").unwrap();
    let ingest = Ingest::start(&pki, port, &[(meter_b.clone(), key_b.clone())]);
    std::thread::sleep(Duration::from_secs(1));
    let id = pki.client("m-a");
    let tls = agent::uplink::client_config(&pki.ca_file, &id.cert, &id.key).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut opts = rumqttc::MqttOptions::new("m-a", "127.0.0.1", port);
        opts.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(std::sync::Arc::new(tls)),
        ));
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 10);
        let batch = schema::Batch {
            meter: meter_b.clone(),
            boot_id: 1,
            records: vec![Record {
                seq: 0,
                t_ms: 0,
                body: Body::Heartbeat(schema::Heartbeat {
                    uptime_s: 0,
                    outbox_records: 0,
                }),
            }],
        };
        let forged = schema::seal_batch(&key_b, &batch).unwrap();
        client
            .publish(
                schema::topic::up(&meter_b),
                rumqttc::QoS::AtLeastOnce,
                false,
                forged,
            )
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
        }
    });
    assert_eq!(ingest.count(), 0, "the broker let m-a publish as m-b");
}
