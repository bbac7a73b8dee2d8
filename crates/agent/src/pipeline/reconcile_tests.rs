//! A crash between queueing a record and saving the registers: the restart must take the
//! next `seq` after the queued record and its counters, even when the broker already
//! acknowledged it.

use super::*;
use crate::outbox::tests::reading_with;
use crate::outbox::{OutboxConfig, WhenFull};

#[test]
fn registers_behind_an_acknowledged_newest_record_move_forward() {
    let dir = std::env::temp_dir().join(format!("wattline-reconcile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut registers, _) = RegisterStore::open(&dir.join("registers"), 0).unwrap();
    let boot = registers.state().boot_id;
    let config = OutboxConfig {
        max_bytes: 1 << 20,
        segment_bytes: 4096,
        when_full: WhenFull::Block,
        fsync: false,
    };
    let (mut outbox, _) = Outbox::open(&dir.join("outbox"), config.clone()).unwrap();
    // Registers saved through seq 9; seq 10 queued and acknowledged, then the crash.
    let mut state = *registers.state();
    state.next_seq = 10;
    state.counters.import_wh = 90.0;
    registers.save(state).unwrap();
    for seq in 0..=10 {
        outbox
            .append(boot, &reading_with(seq, seq as f64 * 10.0))
            .unwrap();
    }
    outbox.ack_through(10).unwrap();
    drop(outbox);

    let (outbox, _) = Outbox::open(&dir.join("outbox"), config).unwrap();
    assert_eq!(outbox.stats().depth_records, 0);
    reconcile(&mut registers, &outbox).unwrap();
    assert_eq!(registers.state().next_seq, 11, "seq 10 is never reused");
    assert_eq!(registers.state().counters.import_wh, 100.0);
    let _ = std::fs::remove_dir_all(&dir);
}
