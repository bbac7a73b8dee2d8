//! The neighbour link against a real broker and real agent processes: a meter whose own
//! uplink cannot reach the broker drains its outbox through a neighbour's `relay` topic, loses
//! nothing, shows `routed via`, and goes back to its own uplink when the path returns; the
//! forwarder refuses envelopes that are not its peer's own and cannot read what it forwards.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use agent::neighbour::frame::{self, Frame};
use agent::neighbour::tls;
use schema::{Batch, Body, Heartbeat, MeterId, MeterKey, Record};
use tokio::io::AsyncWriteExt;

use crate::support::agent::{AgentProcess, Setup, setup, status};
use crate::support::broker::Broker;
use crate::support::ingest::Ingest;
use crate::support::pki::Pki;
use crate::support::proxy::Proxy;
use crate::support::{free_port, tempdir, wait_for};

fn link_state(s: &Setup) -> String {
    status(s)
        .and_then(|st| {
            st.uplink
                .get("link")
                .and_then(|l| l.get("state"))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

fn relayed_of(ingest: &Ingest, origin: &str, relayer: &str) -> usize {
    ingest
        .stored
        .lock()
        .unwrap()
        .relayed
        .iter()
        .filter(|(o, r, _)| o == origin && r == relayer)
        .count()
}

#[test]
fn a_meter_without_uplink_routes_through_its_neighbour_and_returns_to_its_own_uplink() {
    let dir = tempdir("neighbour-route");
    let pki = Pki::new(&dir);
    let port = free_port();
    let _broker = Broker::start(&dir, &pki, port);
    let listen = free_port();
    let fwd = setup(
        &dir,
        &pki,
        port,
        "m-fwd",
        "real_time",
        &format!("[neighbour]\nlisten = \"127.0.0.1:{listen}\"\n"),
    );
    // The origin's broker address leads nowhere until the test opens the path (the proxy).
    let own_path = free_port();
    let origin = setup(
        &dir,
        &pki,
        own_path,
        "m-origin",
        "real_time",
        &format!(
            "[neighbour]\nvia = [{{ meter = \"m-fwd\", addr = \"127.0.0.1:{listen}\" }}]\nafter_s = 1\nack_timeout_s = 10\n"
        ),
    );
    let ingest = Ingest::start(
        &pki,
        port,
        &[
            (fwd.meter.clone(), fwd.key.clone()),
            (origin.meter.clone(), origin.key.clone()),
        ],
    );
    let mut fwd_agent = AgentProcess::spawn(&fwd);
    wait_for("the forwarder's uplink", Duration::from_secs(30), || {
        link_state(&fwd) == "connected"
    });
    let mut origin_agent = AgentProcess::spawn(&origin);

    wait_for(
        "the origin routed via m-fwd",
        Duration::from_secs(30),
        || link_state(&origin) == "routed_via",
    );
    let shown = status(&origin)
        .unwrap()
        .render(agent::pipeline::unix_now_ms());
    assert!(
        shown.contains("routed via m-fwd (127.0.0.1:"),
        "status shows the route:\n{shown}"
    );
    wait_for(
        "8 records of m-origin via m-fwd",
        Duration::from_secs(60),
        || relayed_of(&ingest, "m-origin", "m-fwd") >= 8,
    );
    let fwd_status = status(&fwd).unwrap();
    let forwarded = fwd_status.forwarder.as_ref().expect("forwarder stats");
    assert!(
        forwarded.forwarded.get("m-origin").copied().unwrap_or(0) > 0,
        "{forwarded:?}"
    );
    let fwd_shown = fwd_status.render(agent::pipeline::unix_now_ms());
    assert!(
        fwd_shown.contains("forwarded") && fwd_shown.contains("m-origin"),
        "{fwd_shown}"
    );
    let origin_status = status(&origin).unwrap();
    assert!(
        origin_status.outbox_records < 20,
        "the outbox drains through the neighbour: {} records waiting",
        origin_status.outbox_records
    );

    // The own path comes back: the origin uses its own uplink again, and only it.
    let _path = Proxy::start(own_path, port);
    wait_for("the origin's own uplink", Duration::from_secs(30), || {
        link_state(&origin) == "connected"
    });
    // Routing ends before the own link is tried, so once it is connected nothing more goes
    // through the neighbour (a second lets the last forwarded publishes reach ingest).
    std::thread::sleep(Duration::from_secs(1));
    let relayed_at_return = relayed_of(&ingest, "m-origin", "m-fwd");
    let stored_at_return = ingest.seqs_of("m-origin").len();
    wait_for(
        "records of m-origin on its own up",
        Duration::from_secs(30),
        || ingest.seqs_of("m-origin").len() >= stored_at_return + 3,
    );
    assert_eq!(
        relayed_of(&ingest, "m-origin", "m-fwd"),
        relayed_at_return,
        "nothing routed once the own uplink is back"
    );

    origin_agent.terminate();
    fwd_agent.terminate();
    // Every record of the origin, exactly once, whichever way it went.
    let st = status(&origin).unwrap();
    assert_eq!(st.outbox_records, 0, "outbox drained");
    wait_for("every record of m-origin", Duration::from_secs(20), || {
        ingest.seqs_of("m-origin").len() as u64 >= st.next_seq
    });
    let seqs = ingest.seqs_of("m-origin");
    let unique: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), seqs.len(), "no record stored twice");
    assert_eq!(
        unique.into_iter().collect::<Vec<_>>(),
        (0..st.next_seq).collect::<Vec<_>>(),
        "every record exactly once"
    );
    let stored = ingest.stored.lock().unwrap();
    assert!(stored.rejected.is_empty(), "{:?}", stored.rejected);
}

/// An envelope of `meter` with one heartbeat record.
fn envelope_of(meter: &MeterId, key: &MeterKey, seq: u64) -> Vec<u8> {
    let batch = Batch {
        meter: meter.clone(),
        boot_id: 1,
        records: vec![Record {
            seq,
            t_ms: agent::pipeline::unix_now_ms(),
            body: Body::Heartbeat(Heartbeat {
                uptime_s: 1,
                outbox_records: 0,
            }),
        }],
    };
    schema::seal_batch(key, &batch).unwrap()
}

#[test]
fn the_forwarder_refuses_envelopes_that_are_not_its_peers_own_and_cannot_read_them() {
    let dir = tempdir("neighbour-refuse");
    let pki = Pki::new(&dir);
    let port = free_port();
    let _broker = Broker::start(&dir, &pki, port);
    let listen = free_port();
    let fwd = setup(
        &dir,
        &pki,
        port,
        "m-fwd",
        "real_time",
        &format!("[neighbour]\nlisten = \"127.0.0.1:{listen}\"\n"),
    );
    // The meter that connects (m-peer) and another meter whose envelope it tries to pass on.
    let peer = MeterId::parse("m-peer").unwrap();
    let peer_key = MeterKey::generate();
    let peer_id = pki.client("m-peer");
    let other = MeterId::parse("m-other").unwrap();
    let other_key = MeterKey::generate();
    let ingest = Ingest::start(
        &pki,
        port,
        &[
            (fwd.meter.clone(), fwd.key.clone()),
            (peer.clone(), peer_key.clone()),
            (other.clone(), other_key.clone()),
        ],
    );
    let mut fwd_agent = AgentProcess::spawn(&fwd);
    wait_for("the forwarder's uplink", Duration::from_secs(30), || {
        link_state(&fwd) == "connected"
    });

    agent::uplink::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ca = pki.ca_file.clone();
    let answers = rt.block_on(async {
        // A neighbour certificate that is not the expected meter is not trusted at all.
        let wrong = tls::client_config(&ca, &peer_id.cert, &peer_id.key, &other).unwrap();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", listen))
            .await
            .unwrap();
        let err = tokio_rustls::TlsConnector::from(Arc::new(wrong))
            .connect("m-other".try_into().unwrap(), tcp)
            .await
            .expect_err("a forwarder that is not the configured neighbour is refused");
        assert!(err.to_string().contains("expected m-other"), "{err}");

        let config = tls::client_config(&ca, &peer_id.cert, &peer_id.key, &fwd.meter).unwrap();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", listen))
            .await
            .unwrap();
        let mut stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect("m-fwd".try_into().unwrap(), tcp)
            .await
            .unwrap();
        let frames = [
            // Another meter's envelope, handed over by m-peer: refused.
            Frame::Envelope {
                id: 1,
                bytes: envelope_of(&other, &other_key, 0),
            },
            // Not an envelope at all: refused.
            Frame::Envelope {
                id: 2,
                bytes: b"not cbor".to_vec(),
            },
            // m-peer's own envelope: forwarded and acknowledged after the broker's PUBACK.
            Frame::Envelope {
                id: 3,
                bytes: envelope_of(&peer, &peer_key, 0),
            },
        ];
        let mut answers = Vec::new();
        for f in frames {
            stream.write_all(&f.encode().unwrap()).await.unwrap();
            answers.push(
                tokio::time::timeout(Duration::from_secs(20), frame::read_frame(&mut stream))
                    .await
                    .expect("an answer")
                    .unwrap()
                    .unwrap(),
            );
        }
        stream.shutdown().await.unwrap();
        answers
    });
    let Frame::Refused { id: 1, reason } = &answers[0] else {
        panic!("{:?}", answers[0])
    };
    assert!(
        reason.contains("envelope of meter m-other handed over by meter m-peer"),
        "{reason}"
    );
    let Frame::Refused { id: 2, reason } = &answers[1] else {
        panic!("{:?}", answers[1])
    };
    assert!(reason.contains("not a sealed envelope"), "{reason}");
    assert_eq!(answers[2], Frame::Ack { id: 3 });

    wait_for("m-peer's record via m-fwd", Duration::from_secs(20), || {
        relayed_of(&ingest, "m-peer", "m-fwd") == 1
    });
    assert_eq!(relayed_of(&ingest, "m-other", "m-fwd"), 0);
    // What the forwarder carried is sealed for the server: its own key does not open it.
    let carried = envelope_of(&peer, &peer_key, 1);
    assert!(schema::open_batch(&fwd.key, &peer, &carried).is_err());
    assert!(schema::open_batch(&peer_key, &peer, &carried).is_ok());

    let mut seen = None;
    let counted = (0..100).any(|_| {
        seen = status(&fwd).and_then(|s| s.forwarder);
        let ok = seen.as_ref().is_some_and(|f| {
            f.refused.get("m-peer") == Some(&2) && f.forwarded.get("m-peer") == Some(&1)
        });
        if !ok {
            std::thread::sleep(Duration::from_millis(100));
        }
        ok
    });
    assert!(counted, "forwarder counts in the status: {seen:?}");
    fwd_agent.terminate();
}

#[test]
fn with_neither_uplink_nor_neighbour_the_status_says_connection_barred_and_keeps_the_records() {
    let dir = tempdir("neighbour-barred");
    let pki = Pki::new(&dir);
    let (nowhere, no_neighbour) = (free_port(), free_port());
    let origin = setup(
        &dir,
        &pki,
        nowhere,
        "m-alone",
        "real_time",
        &format!(
            "[neighbour]\nvia = [{{ meter = \"m-fwd\", addr = \"127.0.0.1:{no_neighbour}\" }}]\nafter_s = 1\n"
        ),
    );
    let _agent = AgentProcess::spawn(&origin);
    wait_for("connection barred", Duration::from_secs(30), || {
        link_state(&origin) == "connection_barred"
    });
    let st = status(&origin).unwrap();
    let shown = st.render(agent::pipeline::unix_now_ms());
    assert!(
        shown.contains("uplink   connection barred (own uplink: ")
            && shown.contains(&format!(
                "neighbours: m-fwd (127.0.0.1:{no_neighbour}): connect"
            )),
        "{shown}"
    );
    wait_for(
        "records kept in the outbox",
        Duration::from_secs(30),
        || status(&origin).is_some_and(|s| s.outbox_records >= 3),
    );
}
