//! Tests of the outbox against real files: order, acknowledgement, full policies, damage.

use super::*;
use schema::{Event, EventClass, Heartbeat};

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wattline-outbox-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn heartbeat(seq: u64) -> Record {
    Record {
        seq,
        t_ms: 1_000 + seq as i64,
        body: Body::Heartbeat(Heartbeat {
            uptime_s: seq,
            outbox_records: 0,
        }),
    }
}

fn reading(seq: u64) -> Record {
    reading_with(seq, seq as f64)
}

/// A reading record at `1000 + seq` ms whose import counter is `import_wh`.
pub(crate) fn reading_with(seq: u64, import_wh: f64) -> Record {
    Record {
        seq,
        t_ms: 1_000 + seq as i64,
        body: Body::Reading(schema::Reading {
            interval_s: 1.0,
            freq_hz: 50.0,
            phases: vec![],
            total: schema::TotalReading {
                p_w: 1.0,
                q_var: None,
                s_va: 1.0,
                pf: 1.0,
            },
            counters: schema::EnergyCounters {
                import_wh,
                ..Default::default()
            },
        }),
    }
}

fn event(seq: u64) -> Record {
    Record {
        seq,
        t_ms: 1_000 + seq as i64,
        body: Body::Event(Event {
            class: EventClass::Tamper,
            code: "cover_open".into(),
            active: Some(true),
            value: None,
            detail: None,
        }),
    }
}

fn small(when_full: WhenFull, max_bytes: u64) -> OutboxConfig {
    OutboxConfig {
        max_bytes,
        segment_bytes: 1024,
        when_full,
        fsync: false,
    }
}

fn drain(outbox: &mut Outbox) -> Vec<u64> {
    let mut seqs = Vec::new();
    loop {
        let batch = outbox.next_batch(7).unwrap();
        if batch.is_empty() {
            return seqs;
        }
        seqs.extend(batch.iter().map(|e| e.record.seq));
    }
}

#[test]
fn records_come_out_in_order_and_survive_reopen_until_acked() {
    let dir = tempdir("order");
    let config = small(WhenFull::Block, 1 << 20);
    let (mut outbox, _) = Outbox::open(&dir, config.clone()).unwrap();
    for seq in 0..100 {
        outbox.append(5, &heartbeat(seq)).unwrap();
    }
    assert!(outbox.segments.len() > 3, "rotates segments");
    let batch = outbox.next_batch(30).unwrap();
    assert_eq!(batch.len(), 30);
    assert_eq!(batch[0].record, heartbeat(0));
    outbox.ack_through(batch[29].position).unwrap();
    drop(outbox);

    let (mut outbox, report) = Outbox::open(&dir, config).unwrap();
    assert!(report.damage.is_empty());
    assert_eq!(report.records, 70);
    assert_eq!(outbox.stats().oldest_t_ms, Some(1_030));
    assert_eq!(drain(&mut outbox), (30..100).collect::<Vec<_>>());
    // Not acked yet: a reconnect sends them again.
    outbox.rewind();
    assert_eq!(drain(&mut outbox).len(), 70);
    outbox.ack_through(99).unwrap();
    assert_eq!(outbox.stats().depth_records, 0);
    let files = fs::read_dir(&dir).unwrap().count();
    assert!(files <= 3, "acked segments deleted, {files} files left");
}

#[test]
fn a_batch_never_mixes_boots() {
    let dir = tempdir("boots");
    let (mut outbox, _) = Outbox::open(&dir, small(WhenFull::Block, 1 << 20)).unwrap();
    outbox.append(1, &heartbeat(7)).unwrap();
    outbox.append(1, &heartbeat(8)).unwrap();
    outbox.append(2, &heartbeat(0)).unwrap();
    let a = outbox.next_batch(10).unwrap();
    assert_eq!(a.len(), 2);
    let b = outbox.next_batch(10).unwrap();
    assert_eq!((b.len(), b[0].boot_id), (1, 2));
}

#[test]
fn block_policy_refuses_when_full_and_counts_it() {
    let dir = tempdir("block");
    let (mut outbox, _) = Outbox::open(&dir, small(WhenFull::Block, 2_000)).unwrap();
    let mut refused = None;
    for seq in 0..1000 {
        if let Err(e) = outbox.append(1, &reading(seq)) {
            refused = Some((seq, e));
            break;
        }
    }
    let (seq, err) = refused.expect("fills up");
    assert!(matches!(
        err.kind(),
        ErrorKind::Full {
            policy: WhenFull::Block,
            ..
        }
    ));
    assert_eq!(outbox.stats().full_refusals_total, 1);
    // Delivering makes room again; nothing queued was lost.
    let batch = outbox.next_batch(1000).unwrap();
    assert_eq!(batch.len() as u64, seq);
    outbox.ack_through(batch.last().unwrap().position).unwrap();
    outbox.append(1, &reading(seq)).unwrap();
}

#[test]
fn drop_oldest_readings_keeps_every_event() {
    let dir = tempdir("drop");
    let (mut outbox, _) = Outbox::open(&dir, small(WhenFull::DropOldestReadings, 4_000)).unwrap();
    for seq in 0..400 {
        let record = if seq % 10 == 0 {
            event(seq)
        } else {
            reading(seq)
        };
        outbox.append(1, &record).unwrap();
    }
    let stats = outbox.stats();
    assert!(stats.dropped_readings_total > 0);
    assert!(stats.depth_bytes <= 4_000);
    let seqs = drain(&mut outbox);
    // Every event survived; the newest readings survived; order is kept.
    for seq in (0..400).step_by(10) {
        assert!(seqs.contains(&seq), "event {seq} lost");
    }
    assert!(seqs.contains(&399));
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        stats.appended_total - stats.dropped_readings_total,
        seqs.len() as u64
    );
}

#[test]
fn a_torn_tail_is_cut_and_reported_and_the_rest_kept() {
    let dir = tempdir("torn");
    let config = small(WhenFull::Block, 1 << 20);
    let (mut outbox, _) = Outbox::open(&dir, config.clone()).unwrap();
    for seq in 0..5 {
        outbox.append(1, &heartbeat(seq)).unwrap();
    }
    drop(outbox);
    let seg = segment_path(&dir, 0);
    let len = fs::metadata(&seg).unwrap().len();
    // A crash in the middle of the last write.
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let (mut outbox, report) = Outbox::open(&dir, config.clone()).unwrap();
    assert_eq!(report.damage.len(), 1, "{report:?}");
    assert!(report.damage[0].reason.contains("truncated"), "{report:?}");
    assert_eq!(drain(&mut outbox), vec![0, 1, 2, 3]);
    // Appending after the repair continues cleanly.
    outbox.append(1, &heartbeat(5)).unwrap();
    drop(outbox);
    let (mut outbox, report) = Outbox::open(&dir, config).unwrap();
    assert!(report.damage.is_empty(), "{report:?}");
    assert_eq!(drain(&mut outbox), vec![0, 1, 2, 3, 5]);
}

#[test]
fn a_flipped_bit_in_the_middle_loses_only_that_record() {
    let dir = tempdir("flip");
    let config = small(WhenFull::Block, 1 << 20);
    let (mut outbox, _) = Outbox::open(&dir, config.clone()).unwrap();
    for seq in 0..5 {
        outbox.append(1, &heartbeat(seq)).unwrap();
    }
    let third = outbox.index[2];
    drop(outbox);
    let seg = segment_path(&dir, 0);
    let mut bytes = fs::read(&seg).unwrap();
    bytes[third.offset as usize + 20] ^= 0x04;
    fs::write(&seg, bytes).unwrap();
    let (mut outbox, report) = Outbox::open(&dir, config).unwrap();
    assert_eq!(report.damage.len(), 1);
    assert_eq!(report.damage[0].offset, third.offset);
    assert_eq!(report.damage[0].bytes, u64::from(third.len));
    assert_eq!(drain(&mut outbox), vec![0, 1, 3, 4]);
    assert_eq!(outbox.stats().damaged_bytes_total, u64::from(third.len));
}

#[test]
fn a_damaged_ack_pointer_resends_rather_than_skips() {
    let dir = tempdir("ackfile");
    let config = small(WhenFull::Block, 1 << 20);
    let (mut outbox, _) = Outbox::open(&dir, config.clone()).unwrap();
    for seq in 0..3 {
        outbox.append(1, &heartbeat(seq)).unwrap();
    }
    outbox.ack_through(0).unwrap();
    drop(outbox);
    fs::write(dir.join(ACK_FILE), b"garbage").unwrap();
    let (mut outbox, report) = Outbox::open(&dir, config).unwrap();
    assert_eq!(report.damage.len(), 1);
    assert_eq!(drain(&mut outbox), vec![0, 1, 2]);
}

#[test]
fn the_newest_record_survives_its_acknowledgement_and_a_reopen() {
    // The pipeline saves its registers after the append: a crash in between must still let a
    // restart see the last seq taken, even when the broker acknowledged it meanwhile and the
    // segment holding it is full.
    let dir = tempdir("newest");
    let config = small(WhenFull::Block, 1 << 20);
    let (mut outbox, _) = Outbox::open(&dir, config.clone()).unwrap();
    assert!(outbox.newest_appended().is_none());
    let mut last = 0;
    for seq in 0..60 {
        last = outbox.append(3, &reading(seq)).unwrap();
    }
    outbox.ack_through(last).unwrap();
    assert_eq!(outbox.stats().depth_records, 0);
    assert_eq!(
        outbox.segments.len(),
        1,
        "acknowledged segments are deleted"
    );
    drop(outbox);
    let (outbox, _) = Outbox::open(&dir, config.clone()).unwrap();
    let newest = outbox.newest_appended().expect("newest kept");
    assert_eq!((newest.boot_id, newest.record.seq), (3, 59));
    assert_eq!(newest.record, reading(59));
    assert_eq!(outbox.stats().depth_records, 0, "nothing to resend");

    // Fill the tail segment exactly to the brim, acknowledge it, reopen: still there.
    let (mut outbox, _) = Outbox::open(&dir, config.clone()).unwrap();
    let mut seq = 60;
    while outbox.segments.back().unwrap().bytes + 200 < config.segment_bytes {
        last = outbox.append(3, &reading(seq)).unwrap();
        seq += 1;
    }
    outbox.ack_through(last).unwrap();
    drop(outbox);
    let (outbox, _) = Outbox::open(&dir, config).unwrap();
    assert_eq!(outbox.newest_appended().unwrap().record.seq, seq - 1);
    let _ = fs::remove_dir_all(&dir);
}
