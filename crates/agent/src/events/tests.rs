//! Tamper rules, debouncing and the event log.

use std::path::PathBuf;

use super::*;
use crate::sources::{Signal, SignalKind};

fn ev(at_unix_ms: i64, kind: EventKind) -> MeterEvent {
    MeterEvent { at_unix_ms, kind }
}

fn phases(list: &[(f64, f64, f64)]) -> ElectricalSnapshot {
    ElectricalSnapshot {
        phases: list
            .iter()
            .map(|&(v_rms, i_rms, p_w)| PhaseSnapshot { v_rms, i_rms, p_w })
            .collect(),
        residual_i_rms: None,
    }
}

fn kinds(events: &[MeterEvent]) -> Vec<String> {
    events.iter().map(|e| e.to_string()).collect()
}

#[test]
fn a_bouncing_cover_switch_raises_one_event_after_the_debounce() {
    let mut d = TamperDetector::new(TamperConfig::default());
    let sig = |t_ms: u64, active| Signal {
        t_s: t_ms as f64 / 1000.0,
        kind: SignalKind::CoverOpen,
        active,
    };
    let mut out = Vec::new();
    for (t, active) in [(0, true), (30, false), (60, true)] {
        out.extend(d.signal(t, t as i64, sig(t, active)));
    }
    out.extend(d.tick(200, 200));
    assert!(out.is_empty(), "not yet: held open only since 60 ms");
    out.extend(d.tick(260, 260));
    assert_eq!(kinds(&out), ["cover open"]);
    assert_eq!(out[0].at_unix_ms, 260);
    assert_eq!(d.active(), [Condition::CoverOpen]);
    // Closed: cleared only after a second.
    assert!(d.signal(1_000, 1_000, sig(1_000, false)).is_empty());
    assert!(d.tick(1_900, 1_900).is_empty());
    assert_eq!(kinds(&d.tick(2_000, 2_000)), ["cover open cleared"]);
    // The button is not a tamper input.
    let press = Signal {
        t_s: 3.0,
        kind: SignalKind::ManualButton,
        active: true,
    };
    assert!(d.signal(3_000, 3_000, press).is_empty() && d.tick(9_000, 9_000).is_empty());
}

#[test]
fn reverse_energy_only_on_a_meter_not_allowed_to_export() {
    let export = phases(&[(230.0, 3.0, -600.0)]);
    let mut d = TamperDetector::new(TamperConfig::default());
    let mut out = Vec::new();
    for t in (0..=2_000).step_by(200) {
        out.extend(d.electrical(t, t as i64, &export));
    }
    assert_eq!(kinds(&out), ["reverse energy (-600.000)"]);
    assert_eq!(out[0].at_unix_ms, 2_000);
    // Noise around zero is not reverse energy.
    let mut d = TamperDetector::new(TamperConfig::default());
    for t in (0..=10_000).step_by(200) {
        assert!(
            d.electrical(t, 0, &phases(&[(230.0, 0.05, -5.0)]))
                .is_empty()
        );
    }
    let mut pv = TamperDetector::new(TamperConfig {
        export_allowed: true,
        ..TamperConfig::default()
    });
    for t in (0..=10_000).step_by(200) {
        assert!(pv.electrical(t, 0, &export).is_empty());
    }
}

#[test]
fn current_without_voltage_on_one_phase_is_not_a_power_loss() {
    let mut d = TamperDetector::new(TamperConfig::default());
    let snap = phases(&[(230.0, 2.0, 460.0), (0.0, 3.0, 0.0), (231.0, 1.0, 231.0)]);
    let mut out = Vec::new();
    for t in (0..=2_000).step_by(200) {
        out.extend(d.electrical(t, 0, &snap));
    }
    assert_eq!(kinds(&out), ["current without voltage on phase b (3.000)"]);
}

#[test]
fn power_loss_and_restore_with_their_own_debounce() {
    let mut d = TamperDetector::new(TamperConfig::default());
    let on = phases(&[(230.0, 1.0, 230.0)]);
    let off = phases(&[(0.0, 0.0, 0.0)]);
    let mut out = Vec::new();
    // A 200 ms dip is power quality, not an outage.
    for (t, s) in [(0, &on), (200, &off), (400, &on), (600, &on)] {
        out.extend(d.electrical(t, t as i64, s));
    }
    assert!(out.is_empty());
    for t in (1_000..=1_600).step_by(200) {
        out.extend(d.electrical(t, t as i64, &off));
    }
    assert_eq!(kinds(&out), ["power loss (0.000)"]);
    out.clear();
    for t in (2_000..=3_000).step_by(200) {
        out.extend(d.electrical(t, t as i64, &on));
    }
    assert_eq!(kinds(&out), ["power loss cleared"]);
    assert_eq!(out[0].at_unix_ms, 3_000);
}

#[test]
fn residual_current_above_the_limit_is_a_mismatch() {
    let mut d = TamperDetector::new(TamperConfig::default());
    let mut snap = phases(&[
        (230.0, 5.0, 1150.0),
        (230.0, 5.0, 1150.0),
        (230.0, 5.0, 1150.0),
    ]);
    // 0.4 A residual at 5 A is within CT tolerance (limit max(0.5 A, 10 % of 5 A)).
    snap.residual_i_rms = Some(0.4);
    for t in (0..=10_000).step_by(200) {
        assert!(d.electrical(t, 0, &snap).is_empty());
    }
    snap.residual_i_rms = Some(2.0);
    let mut out = Vec::new();
    for t in (10_200..=12_200).step_by(200) {
        out.extend(d.electrical(t, 0, &snap));
    }
    assert_eq!(kinds(&out), ["phase/neutral current mismatch (2.000)"]);
}

#[test]
fn clock_steps_are_reported_and_drift_is_not() {
    let mut d = TamperDetector::new(TamperConfig::default());
    assert_eq!(d.clock(0, 1_000_000), None);
    // 1.5 s of drift accumulated over many observations is not a jump.
    let mut wall = 1_000_000;
    for k in 1..=100 {
        wall += 1_015;
        assert_eq!(d.clock(k * 1_000, wall), None);
    }
    let e = d.clock(101_000, wall + 1_000 + 3_600_000).unwrap();
    assert_eq!(
        e.kind,
        EventKind::ClockJump {
            delta_ms: 3_600_000
        }
    );
    let e = d
        .clock(102_000, wall + 1_000 + 3_600_000 + 1_000 - 10_000)
        .unwrap();
    assert_eq!(e.kind, EventKind::ClockJump { delta_ms: -10_000 });
}

#[test]
fn the_simulated_theft_scenario_raises_mismatch_and_reverse_energy() {
    use crate::sources::simulator::{MeterPosition, Scenario, Simulator};
    use metrology::{Analyzer, AnalyzerConfig, NominalFrequency};

    let sc = Scenario::from_toml(
        r#"
        phases = 3
        [noise]
        current_a = 0.01
        [[load]]
        name = "house"
        kind = { type = "resistive", power_w = 1500 }
        phase = "abc"
        [[load]]
        name = "hidden heater"
        kind = { type = "resistive", power_w = 2300 }
        phase = "a"
        bypass = "phase_only"
        [[tamper]]
        kind = "reversed_ct"
        phase = "b"
        from_s = 0
        to_s = 100
        "#,
        "theft.toml",
    )
    .unwrap();
    let mut sim = Simulator::new(sc, MeterPosition::House, None).unwrap();
    let config = AnalyzerConfig::three_phase(8000.0, NominalFrequency::Hz50, true);
    let mut analyzer = Analyzer::new(config).unwrap();
    let mut detector = TamperDetector::new(TamperConfig::default());
    let mut residual = ResidualCurrent::new();
    let mut events = Vec::new();
    for _ in 0..20 {
        let chunk = sim.generate(1600);
        residual.feed(&chunk);
        let mut windows = Vec::new();
        analyzer
            .push_frames(&chunk.samples, |w| windows.push(*w))
            .unwrap();
        let residual_i_rms = residual.take_rms_a();
        for w in windows {
            let now_ms = ((w.t0_s + w.duration_s) * 1000.0) as u64;
            let snap = ElectricalSnapshot {
                phases: w
                    .phases
                    .iter()
                    .map(|p| PhaseSnapshot {
                        v_rms: p.v_rms,
                        i_rms: p.i_rms,
                        p_w: p.p_w,
                    })
                    .collect(),
                residual_i_rms,
            };
            events.extend(detector.electrical(now_ms, now_ms as i64, &snap));
        }
    }
    let raised: Vec<Condition> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Raised { condition, .. } => Some(condition),
            _ => None,
        })
        .collect();
    // Phase b reads −500 W: the total (500 + 500 − 500) is import, so no reverse energy — but
    // the reversed CT and the hidden heater both unbalance phase against neutral.
    assert_eq!(raised, [Condition::CurrentMismatch]);
}

fn temp_log(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wattline-events-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("events.log")
}

fn sample_events() -> Vec<MeterEvent> {
    vec![
        ev(
            1,
            EventKind::Raised {
                condition: Condition::CoverOpen,
                value: None,
            },
        ),
        ev(2, EventKind::ClockJump { delta_ms: -5_000 }),
        ev(
            3,
            EventKind::Cleared {
                condition: Condition::CurrentWithoutVoltage { phase: 2 },
            },
        ),
        ev(
            4,
            EventKind::Control {
                event: crate::control::ControlEvent::TriggerRefused {
                    now_ms: 9,
                    trigger: crate::control::Trigger::ManualReconnect,
                    state: crate::control::ControlState::Disconnected,
                    mode: crate::control::ControlMode::new(1).unwrap(),
                },
            },
        ),
    ]
}

#[test]
fn events_survive_a_reopen_with_their_sequence_numbers() {
    let path = temp_log("reopen");
    let (mut log, rec) = EventLog::open(EventLogConfig::new(&path)).unwrap();
    assert_eq!((rec.records, rec.damage.clone()), (0, None));
    for (n, e) in sample_events().iter().enumerate() {
        assert_eq!(log.append(e).unwrap(), n as u64);
    }
    drop(log);
    let (log, rec) = EventLog::open(EventLogConfig::new(&path)).unwrap();
    assert_eq!(rec.records, 4);
    assert_eq!(rec.damage, None);
    assert_eq!(rec.last.as_ref().unwrap().seq, 3);
    assert_eq!(log.next_seq(), 4);
    let back: Vec<MeterEvent> = log
        .read_from(0)
        .unwrap()
        .into_iter()
        .map(|l| l.event)
        .collect();
    assert_eq!(back, sample_events());
    assert_eq!(log.read_from(2).unwrap().len(), 2);
}

#[test]
fn a_torn_last_record_is_cut_off_saved_and_reported() {
    let path = temp_log("torn");
    let (mut log, _) = EventLog::open(EventLogConfig::new(&path)).unwrap();
    for e in &sample_events()[..3] {
        log.append(e).unwrap();
    }
    drop(log);
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&path, &full[..full.len() - 5]).unwrap();
    let (mut log, rec) = EventLog::open(EventLogConfig::new(&path)).unwrap();
    let damage = rec.damage.unwrap();
    assert!(damage.reason.contains("torn record"), "{}", damage.reason);
    assert_eq!(rec.records, 2);
    let saved = std::fs::read(&damage.saved_to).unwrap();
    assert_eq!(saved.len() as u64, damage.bytes);
    assert_eq!(
        &full[damage.offset as usize..full.len() - 5],
        saved.as_slice()
    );
    // Appending continues after the valid prefix, with the lost record's number reused: the
    // torn record was never complete, so it was never sent either.
    assert_eq!(log.append(&sample_events()[3]).unwrap(), 2);
    let (_, rec) = EventLog::open(EventLogConfig::new(&path)).unwrap();
    assert_eq!((rec.records, rec.damage), (3, None));
}

#[test]
fn a_bit_flip_is_detected_by_the_checksum_and_nothing_after_it_is_silently_lost() {
    let path = temp_log("flip");
    let (mut log, _) = EventLog::open(EventLogConfig::new(&path)).unwrap();
    for e in &sample_events() {
        log.append(e).unwrap();
    }
    drop(log);
    let mut bytes = std::fs::read(&path).unwrap();
    // Flip a bit inside the second record's payload.
    let first_len = 16 + u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let second = 8 + first_len;
    bytes[second + 20] ^= 0x04;
    std::fs::write(&path, &bytes).unwrap();
    let (_, rec) = EventLog::open(EventLogConfig::new(&path)).unwrap();
    let damage = rec.damage.unwrap();
    assert_eq!(damage.reason, "checksum mismatch");
    assert_eq!(damage.offset, second as u64);
    assert_eq!(rec.records, 1);
    // The damaged record and the two valid ones after it are kept aside for inspection.
    assert_eq!(std::fs::read(&damage.saved_to).unwrap(), &bytes[second..]);
}

#[test]
fn a_foreign_file_is_not_taken_for_a_log() {
    let path = temp_log("foreign");
    std::fs::write(&path, b"hello world").unwrap();
    let (mut log, rec) = EventLog::open(EventLogConfig::new(&path)).unwrap();
    let damage = rec.damage.unwrap();
    assert_eq!(
        (damage.offset, damage.reason.as_str()),
        (0, "missing or wrong file header")
    );
    // The file is now empty: appending must write a header first.
    assert_eq!(log.append(&sample_events()[0]).unwrap(), 0);
    let (_, rec) = EventLog::open(EventLogConfig::new(&path)).unwrap();
    assert_eq!((rec.records, rec.damage), (1, None));
}

#[test]
fn rotation_keeps_numbering_and_the_previous_file() {
    let path = temp_log("rotate");
    let config = EventLogConfig {
        path: path.clone(),
        fsync: false,
        max_bytes: 1024,
    };
    let (mut log, _) = EventLog::open(config.clone()).unwrap();
    for n in 0..40 {
        assert_eq!(
            log.append(&ev(n, EventKind::ClockJump { delta_ms: n }))
                .unwrap(),
            n as u64
        );
    }
    let mut rotated = path.as_os_str().to_owned();
    rotated.push(".1");
    assert!(PathBuf::from(rotated).exists());
    assert!(std::fs::metadata(&path).unwrap().len() <= 1024);
    let kept = log.read_from(0).unwrap();
    assert!(kept.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    assert_eq!(kept.last().unwrap().seq, 39);
    drop(log);
    let (log, _) = EventLog::open(config).unwrap();
    assert_eq!(log.next_seq(), 40);
}

#[test]
fn event_json_is_flat_and_stable() {
    let e = ev(
        5,
        EventKind::Raised {
            condition: Condition::CurrentWithoutVoltage { phase: 1 },
            value: Some(3.5),
        },
    );
    let json = serde_json::to_string(&e).unwrap();
    assert_eq!(
        json,
        r#"{"at_unix_ms":5,"kind":"raised","condition":"current_without_voltage","phase":1,"value":3.5}"#
    );
    assert_eq!(serde_json::from_str::<MeterEvent>(&json).unwrap(), e);
}
