//! End to end through the real server: a meter whose own path to the server is cut hands its
//! sealed envelopes to a neighbouring meter, which publishes them on its `relay` topic; the
//! server's ingest opens them with the origin's key and stores them — complete, no holes — and
//! `wattline agent status` says `routed via` on the origin and counts what the neighbour
//! forwarded.

use std::time::Duration;

use crate::fleet::{Fleet, wait_until};
use crate::util::{free_port, wattline};

#[test]
fn a_meter_cut_off_from_the_server_is_stored_through_its_neighbour() {
    let listen = free_port();
    let nowhere = free_port();
    let fleet = Fleet::start_with("neighbour", &["nb-fwd", "nb-origin"], |meter, text| {
        if meter == "nb-fwd" {
            return text + &format!("\n[neighbour]\nlisten = \"127.0.0.1:{listen}\"\n");
        }
        // The origin's broker port leads nowhere; its neighbour is nb-fwd.
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("port = ") {
                    format!("port = {nowhere}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        text + &format!(
            "\n[neighbour]\nvia = [{{ meter = \"nb-fwd\", addr = \"127.0.0.1:{listen}\" }}]\nafter_s = 1\n"
        )
    });
    wait_until(
        "readings of nb-origin stored through nb-fwd",
        Duration::from_secs(120),
        || fleet.stored()[1].0.len() >= 8,
    );
    let origin = fleet.agent_status(1);
    assert_eq!(origin["uplink"]["link"]["state"], "routed_via", "{origin}");
    assert_eq!(origin["uplink"]["link"]["meter"], "nb-fwd", "{origin}");
    let shown = wattline([
        "agent",
        "status",
        "--config",
        fleet.bundles[1].to_str().unwrap(),
    ]);
    assert!(
        shown.stdout.contains("routed via nb-fwd (127.0.0.1:"),
        "{}",
        shown.stdout
    );
    let fwd = fleet.agent_status(0);
    assert!(
        fwd["forwarder"]["forwarded"]["nb-origin"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{fwd}"
    );
    let (readings, gaps) = &fleet.stored()[1];
    assert!(
        gaps.is_empty(),
        "holes in nb-origin's stored sequence {gaps:?}\nserver log:\n{}",
        fleet.server_logs()
    );
    let first = readings.iter().map(|r| r.seq).min().unwrap();
    assert!(first <= 3, "the first stored reading has seq {first}");
}
