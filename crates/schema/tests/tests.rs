//! Integration tests of the wire: round trips, tampering, replay, limits and versioning.

use ciborium::Value;
use schema::{
    Ack, AckStatus, Action, Batch, Body, Command, Direction, EnergyCounters, Envelope, ErrorKind,
    Event, EventClass, Heartbeat, MAX_ENVELOPE_BYTES, MAX_RECORDS_PER_BATCH, MeterId, MeterKey,
    Phase, PhaseReading, Reading, Record, ReplayWindow, TotalReading, Verdict, open_batch,
    open_commands, seal_batch, seal_commands,
};

fn meter() -> MeterId {
    MeterId::parse("house-7").unwrap()
}

fn reading() -> Reading {
    let phase = |phase| PhaseReading {
        phase,
        v_rms: 230.1,
        i_rms: 4.6957,
        p_w: 864.0,
        q_var: Some(648.0),
        s_va: 1080.0,
        pf: 0.8,
        v_thd_pct: Some(1.2),
        i_thd_pct: None,
    };
    Reading {
        interval_s: 60.0,
        freq_hz: 50.002,
        phases: vec![phase(Phase::A), phase(Phase::B), phase(Phase::C)],
        total: TotalReading {
            p_w: 2592.0,
            q_var: Some(1944.0),
            s_va: 3240.0,
            pf: 0.8,
        },
        counters: EnergyCounters {
            import_wh: 123_456.789,
            export_wh: 0.5,
            q1_varh: 1.0,
            q2_varh: 2.0,
            q3_varh: 3.0,
            q4_varh: 4.0,
        },
    }
}

fn batch() -> Batch {
    Batch {
        meter: meter(),
        boot_id: 0x1234_5678_9abc,
        records: vec![
            Record {
                seq: 10,
                t_ms: 1_700_000_000_000,
                body: Body::Reading(reading()),
            },
            Record {
                seq: 11,
                t_ms: 1_700_000_000_100,
                body: Body::Event(Event {
                    class: EventClass::Tamper,
                    code: "cover_open".into(),
                    active: Some(true),
                    value: None,
                    detail: Some("terminal cover".into()),
                }),
            },
            Record {
                seq: 12,
                t_ms: 1_700_000_000_200,
                body: Body::Ack(Ack {
                    command_id: Some("c-1".into()),
                    status: AckStatus::Succeeded,
                    reason: None,
                }),
            },
            Record {
                seq: 14,
                t_ms: 1_700_000_000_300,
                body: Body::Heartbeat(Heartbeat {
                    uptime_s: 99,
                    outbox_records: 3,
                }),
            },
        ],
    }
}

/// Splits a sealed envelope into its header bytes and ciphertext.
fn parts(wire: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let Value::Array(items) = ciborium::from_reader::<Value, _>(wire).unwrap() else {
        panic!("not an array")
    };
    match &items[..] {
        [Value::Bytes(h), Value::Bytes(c)] => (h.clone(), c.clone()),
        _ => panic!("bad shape"),
    }
}

fn join(header: Vec<u8>, ciphertext: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(
        &Value::Array(vec![Value::Bytes(header), Value::Bytes(ciphertext)]),
        &mut out,
    )
    .unwrap();
    out
}

#[test]
fn batch_round_trips_through_a_sealed_envelope() {
    let key = MeterKey::generate();
    let wire = seal_batch(&key, &batch()).unwrap();
    assert_eq!(open_batch(&key, &meter(), &wire).unwrap(), batch());
    let envelope = Envelope::parse(&wire).unwrap();
    assert_eq!(envelope.header().seq, 10);
    assert_eq!(envelope.header().boot_id, 0x1234_5678_9abc);
    assert_eq!(envelope.header().dir, Direction::Up);
}

#[test]
fn the_same_batch_seals_to_different_bytes_each_time() {
    // Fresh random nonce per envelope: identical plaintexts never share keystream.
    let key = MeterKey::generate();
    let a = seal_batch(&key, &batch()).unwrap();
    let b = seal_batch(&key, &batch()).unwrap();
    assert_ne!(a, b);
    assert_ne!(
        Envelope::parse(&a).unwrap().header().nonce,
        Envelope::parse(&b).unwrap().header().nonce
    );
}

#[test]
fn every_single_bit_flip_in_header_ciphertext_or_tag_is_rejected() {
    let key = MeterKey::generate();
    let wire = seal_batch(&key, &batch()).unwrap();
    let (header, ciphertext) = parts(&wire);
    for i in 0..header.len() * 8 {
        let mut h = header.clone();
        h[i / 8] ^= 1 << (i % 8);
        let result = open_batch(&key, &meter(), &join(h, ciphertext.clone()));
        assert!(result.is_err(), "header bit {i} flip accepted");
    }
    // Ciphertext and tag (last 16 bytes): every bit.
    for i in 0..ciphertext.len() * 8 {
        let mut c = ciphertext.clone();
        c[i / 8] ^= 1 << (i % 8);
        let err = open_batch(&key, &meter(), &join(header.clone(), c)).unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::TagMismatch, "ciphertext bit {i}");
    }
}

#[test]
fn truncated_or_extended_envelopes_are_rejected() {
    let key = MeterKey::generate();
    let wire = seal_batch(&key, &batch()).unwrap();
    for len in 0..wire.len() {
        assert!(
            open_batch(&key, &meter(), &wire[..len]).is_err(),
            "len {len}"
        );
    }
    let mut longer = wire.clone();
    longer.push(0);
    assert!(open_batch(&key, &meter(), &longer).is_err());
}

#[test]
fn wrong_key_wrong_meter_and_wrong_direction_are_rejected() {
    let key = MeterKey::generate();
    let wire = seal_batch(&key, &batch()).unwrap();
    let err = open_batch(&MeterKey::generate(), &meter(), &wire).unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::TagMismatch);

    let other = MeterId::parse("house-8").unwrap();
    let err = open_batch(&key, &other, &wire).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::WrongMeter { .. }), "{err}");

    // An uplink envelope reflected to the meter as a command.
    let err = open_commands(&key, &meter(), &wire).unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::WrongDirection);
}

#[test]
fn header_rewritten_to_another_meter_fails_the_tag() {
    // An attacker who re-encodes the header for the meter whose topic they can publish on.
    let key = MeterKey::generate();
    let wire = seal_batch(&key, &batch()).unwrap();
    let (header, ciphertext) = parts(&wire);
    let Value::Map(mut map) = ciborium::from_reader::<Value, _>(&header[..]).unwrap() else {
        panic!()
    };
    for (k, v) in &mut map {
        if k.as_text() == Some("meter") {
            *v = Value::Text("house-8".into());
        }
    }
    let mut h = Vec::new();
    ciborium::into_writer(&Value::Map(map), &mut h).unwrap();
    let other = MeterId::parse("house-8").unwrap();
    let err = open_batch(&key, &other, &join(h, ciphertext)).unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::TagMismatch);
}

#[test]
fn a_replayed_envelope_is_caught_by_the_replay_window() {
    let key = MeterKey::generate();
    let wire = seal_batch(&key, &batch()).unwrap();
    let mut window = ReplayWindow::new();
    for pass in 0..2 {
        let b = open_batch(&key, &meter(), &wire).unwrap();
        let verdicts: Vec<Verdict> = b
            .records
            .iter()
            .map(|r| window.accept(b.boot_id, r.seq))
            .collect();
        let expected = if pass == 0 {
            Verdict::Fresh
        } else {
            Verdict::Duplicate
        };
        assert!(verdicts.iter().all(|v| *v == expected), "{verdicts:?}");
    }
}

#[test]
fn a_restored_window_refuses_what_was_taken_before_the_restart() {
    let mut window = ReplayWindow::new();
    for seq in [1, 2, 5] {
        assert_eq!(window.accept(7, seq), Verdict::Fresh);
    }
    assert_eq!(window.accept(9, 40), Verdict::Fresh);
    let mut marks = window.high_marks();
    marks.sort_unstable();
    assert_eq!(marks, [(7, 5), (9, 40)]);
    let mut again = ReplayWindow::restored(&marks);
    for seq in [1, 2, 5] {
        assert_eq!(again.accept(7, seq), Verdict::Duplicate, "seq {seq}");
    }
    // A hole below the mark is refused too (the safe side); newer ones are taken.
    assert_eq!(again.accept(7, 4), Verdict::Duplicate);
    assert_eq!(again.accept(7, 6), Verdict::Fresh);
    assert_eq!(again.accept(9, 40), Verdict::Duplicate);
    assert_eq!(again.accept(11, 1), Verdict::Fresh);
}

#[test]
fn oversized_envelopes_are_refused_before_decoding() {
    // Not even valid CBOR: the length check must come first.
    let huge = vec![0xffu8; MAX_ENVELOPE_BYTES + 1];
    let err = Envelope::parse(&huge).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::TooLarge {
                what: "envelope",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn too_many_records_are_refused() {
    let mut b = batch();
    b.records = (0..MAX_RECORDS_PER_BATCH as u64 + 1)
        .map(|seq| Record {
            seq,
            t_ms: 0,
            body: Body::Heartbeat(Heartbeat {
                uptime_s: 0,
                outbox_records: 0,
            }),
        })
        .collect();
    let err = seal_batch(&MeterKey::generate(), &b).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::TooLarge { .. }), "{err}");
    b.records.pop();
    assert!(seal_batch(&MeterKey::generate(), &b).is_ok());
}

#[test]
fn records_out_of_order_are_refused() {
    let mut b = batch();
    b.records.swap(0, 1);
    assert!(seal_batch(&MeterKey::generate(), &b).is_err());
}

/// Seals a hand-made plaintext, as a newer meter would.
fn seal_raw(key: &MeterKey, plaintext: &Value) -> Vec<u8> {
    let mut bytes = Vec::new();
    ciborium::into_writer(plaintext, &mut bytes).unwrap();
    Envelope::seal(key, Direction::Up, &meter(), 1, 5, &bytes).unwrap()
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

#[test]
fn unknown_kinds_are_kept_raw_and_unknown_fields_ignored() {
    let key = MeterKey::generate();
    let plaintext = Value::Array(vec![
        Value::Map(vec![
            (text("kind"), text("heartbeat")),
            (text("seq"), Value::Integer(5.into())),
            (text("t_ms"), Value::Integer(7.into())),
            (text("added_in_v9"), text("ignored")),
            (
                text("body"),
                Value::Map(vec![
                    (text("uptime_s"), Value::Integer(1.into())),
                    (text("outbox_records"), Value::Integer(2.into())),
                    (text("battery_pct"), Value::Float(88.0)),
                ]),
            ),
        ]),
        Value::Map(vec![
            (text("kind"), text("gas_reading")),
            (text("seq"), Value::Integer(6.into())),
            (text("t_ms"), Value::Integer(8.into())),
            (
                text("body"),
                Value::Map(vec![(text("m3"), Value::Float(1.5))]),
            ),
        ]),
    ]);
    let b = open_batch(&key, &meter(), &seal_raw(&key, &plaintext)).unwrap();
    assert_eq!(
        b.records[0].body,
        Body::Heartbeat(Heartbeat {
            uptime_s: 1,
            outbox_records: 2
        })
    );
    let Body::Unknown { kind, body_cbor } = &b.records[1].body else {
        panic!("{:?}", b.records[1].body)
    };
    assert_eq!(kind, "gas_reading");
    let raw: Value = ciborium::from_reader(&body_cbor[..]).unwrap();
    assert_eq!(raw, Value::Map(vec![(text("m3"), Value::Float(1.5))]));
    // And it survives re-sealing unchanged (a relay or an archive may do that).
    let again = open_batch(&key, &meter(), &seal_batch(&key, &b).unwrap()).unwrap();
    assert_eq!(again, b);
}

#[test]
fn a_known_kind_with_a_broken_body_names_the_record() {
    let key = MeterKey::generate();
    let plaintext = Value::Array(vec![Value::Map(vec![
        (text("kind"), text("reading")),
        (text("seq"), Value::Integer(5.into())),
        (text("t_ms"), Value::Integer(7.into())),
        (
            text("body"),
            Value::Map(vec![(text("freq_hz"), text("fast"))]),
        ),
    ])]);
    let err = open_batch(&key, &meter(), &seal_raw(&key, &plaintext)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("record 0 (seq 5, kind reading)"), "{msg}");
}

#[test]
fn header_first_seq_must_match_the_records() {
    let key = MeterKey::generate();
    let b = batch();
    let plaintext = b.encode_records().unwrap();
    let wire = Envelope::seal(&key, Direction::Up, &meter(), b.boot_id, 9, &plaintext).unwrap();
    assert!(open_batch(&key, &meter(), &wire).is_err());
}

#[test]
fn commands_round_trip_and_malformed_ones_come_back_rejected() {
    let key = MeterKey::generate();
    let good = Command {
        id: "c-42".into(),
        issued_ms: 10,
        expires_ms: 20,
        action: Action::LimiterSet {
            threshold_w: 5000.0,
            duration_s: 10.0,
        },
    };
    let wire = seal_commands(&key, &meter(), 3, 77, std::slice::from_ref(&good)).unwrap();
    let (header, commands) = open_commands(&key, &meter(), &wire).unwrap();
    assert_eq!((header.boot_id, header.seq), (3, 77));
    assert_eq!(commands, vec![Ok(good)]);

    let bad = Value::Array(vec![Value::Map(vec![(text("id"), text("c-43"))])]);
    let mut bytes = Vec::new();
    ciborium::into_writer(&bad, &mut bytes).unwrap();
    let wire = Envelope::seal(&key, Direction::Down, &meter(), 3, 78, &bytes).unwrap();
    let (_, commands) = open_commands(&key, &meter(), &wire).unwrap();
    let rejected = commands[0].clone().unwrap_err();
    assert_eq!(rejected.id.as_deref(), Some("c-43"));
    assert!(!rejected.reason.is_empty());
}

#[test]
fn keys_parse_from_hex_and_never_print() {
    let key = MeterKey::generate();
    assert_eq!(
        MeterKey::from_hex(&format!("{}\n", key.to_hex())).unwrap(),
        key
    );
    assert_eq!(format!("{key:?}"), "MeterKey(<redacted>)");
    assert!(MeterKey::from_hex("zz").is_err());
    assert!(MeterKey::from_hex(&"g".repeat(64)).is_err());
}
