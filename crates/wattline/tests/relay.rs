//! A relay command travels the whole way: the API queues it, the server's dispatcher seals it to
//! the meter's `down` topic, the real agent opens it, switches its relay and acknowledges; the
//! command ends SUCCEEDED, the agent reports the new state, and the meter's readings drop to zero
//! power while disconnected (issue 6's "a relay command reaches the agent").

use std::time::Duration;

use crate::fleet::{Fleet, wait_until};

fn command(fleet: &Fleet, kind: &str) -> i64 {
    let body =
        format!(r#"{{"kind":"{kind}","reason":"end-to-end relay test","expires_in_s":600}}"#);
    let (code, v) = fleet.api("POST", "/meters/relay-a/commands", Some(&body));
    assert_eq!(code, 201, "{v}");
    let id = v["id"].as_i64().unwrap();
    wait_until(
        &format!("{kind} #{id} to succeed"),
        Duration::from_secs(60),
        || {
            let (code, v) = fleet.api("GET", &format!("/commands/{id}"), None);
            assert_eq!(code, 200, "{v}");
            let status = v["status"].as_str().unwrap_or("").to_owned();
            assert!(
                !matches!(status.as_str(), "FAILED" | "EXPIRED"),
                "{kind} ended {status}: {v}\nserver log:\n{}",
                fleet.server_logs()
            );
            status == "SUCCEEDED"
        },
    );
    id
}

#[test]
fn a_relay_command_reaches_the_agent_and_the_meter_stops_drawing_power() {
    let fleet = Fleet::start("relay", &["relay-a"]);
    wait_until("readings with power", Duration::from_secs(90), || {
        fleet.stored()[0]
            .0
            .iter()
            .filter(|r| r.reading.total.p_w > 10.0)
            .count()
            >= 2
    });
    command(&fleet, "relay_disconnect");
    wait_until(
        "the agent to report its relay open",
        Duration::from_secs(10),
        || fleet.agent_status(0)["relay_state"] == "disconnected",
    );
    let at_cut = fleet.stored()[0].0.iter().map(|r| r.seq).max().unwrap();
    // The interval that spans the switch averages both sides; from then on the readings stay at
    // zero power (the load is off the line). Three in a row after the cut.
    wait_until(
        "zero-power readings after the cut",
        Duration::from_secs(30),
        || {
            let after: Vec<f64> = fleet.stored()[0]
                .0
                .iter()
                .filter(|r| r.seq > at_cut)
                .map(|r| r.reading.total.p_w)
                .collect();
            let zero_run = after.iter().rev().take_while(|p| p.abs() < 1.0).count();
            assert!(
                after.len() < 6 || zero_run >= 3,
                "power after the cut: {after:?}"
            );
            zero_run >= 3
        },
    );

    command(&fleet, "relay_reconnect");
    // The agent's status file is rewritten every few hundred ms.
    wait_until(
        "the agent to report its relay closed",
        Duration::from_secs(10),
        || fleet.agent_status(0)["relay_state"] != "disconnected",
    );
    // The command is in the audit trail with its reason.
    let (code, v) = fleet.api("GET", "/audit?action=command.create", None);
    assert_eq!(code, 200, "{v}");
    assert!(v.to_string().contains("end-to-end relay test"), "{v}");
}
