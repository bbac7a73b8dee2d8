//! Unit tests of the COSEM server's parts: persisted invocation counters and load profile,
//! event codes, and the objects read through a real `dlms` client and server in memory.

use std::sync::{Arc, Mutex};

use dlms::apdu::AttributeDescriptor;
use dlms::cosem::{CaptureObject, ScalerUnit, decode_buffer};
use dlms::{
    Client, ClientAuthentication, ClientConfig, CounterStore, Data, Env, Event, MemoryCounterStore,
    Obis, Server,
};
use schema::EnergyCounters;

use super::*;
use crate::control::ControlEvent;

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "wattline-cosem-{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const PEER: dlms::SystemTitle = [0x4D, 0x4D, 0x4D, 0, 0, 0, 0, 1];

#[test]
fn transmit_counter_is_never_reused_after_a_restart_and_replays_stay_rejected() {
    let dir = tempdir("counters");
    let path = dir.join("ic.json");
    let mut used = Vec::new();
    {
        let mut s = FileCounterStore::open(&path).unwrap();
        for _ in 0..5 {
            used.push(s.next_transmit().unwrap());
        }
        s.accept_received(&PEER, 41).unwrap();
        assert!(s.accept_received(&PEER, 41).is_err(), "replay");
        // Dropped without any orderly shutdown: the file is all that remains.
    }
    let mut s = FileCounterStore::open(&path).unwrap();
    let next = s.next_transmit().unwrap();
    assert!(
        used.iter().all(|u| next > *u),
        "{next} after {used:?} must be fresh"
    );
    assert_eq!(s.last_received(&PEER), Some(41));
    assert!(
        s.accept_received(&PEER, 40).is_err(),
        "replay after restart"
    );
    s.accept_received(&PEER, 42).unwrap();
    // Burn past a reservation block: the reservation on disk moves along.
    for _ in 0..1500 {
        s.next_transmit().unwrap();
    }
    let last = s.next_transmit().unwrap();
    drop(s);
    assert!(FileCounterStore::open(&path).unwrap().next_transmit_value() > last);

    std::fs::write(&path, "{not json").unwrap();
    let err = FileCounterStore::open(&path).unwrap_err();
    assert!(err.contains("damaged"), "{err}");
}

fn counters(wh: f64) -> EnergyCounters {
    EnergyCounters {
        import_wh: wh,
        export_wh: 1.0,
        q1_varh: 2.0,
        q2_varh: 3.0,
        q3_varh: 4.0,
        q4_varh: 5.0,
    }
}

#[test]
fn load_profile_survives_restart_drops_a_torn_line_and_keeps_its_capacity() {
    let dir = tempdir("profile");
    let path = dir.join("lp.csv");
    {
        let mut p = LoadProfileStore::open(&path, 3).unwrap();
        for i in 0..5 {
            p.capture(ProfileRow {
                unix_s: 1000 + i * 60,
                counters: counters(i as f64 * 10.0),
            })
            .unwrap();
        }
        // Not after the newest row: ignored.
        p.capture(ProfileRow {
            unix_s: 1000,
            counters: counters(0.0),
        })
        .unwrap();
        assert_eq!(p.rows().len(), 3);
    }
    // A crash in the middle of an append.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, b"1300,40.5,1").unwrap();
    drop(f);
    let p = LoadProfileStore::open(&path, 3).unwrap();
    assert_eq!(p.damaged_lines, 1);
    let times: Vec<i64> = p.rows().iter().map(|r| r.unix_s).collect();
    assert_eq!(times, [1120, 1180, 1240]);
    assert_eq!(p.rows()[2].counters.import_wh, 40.0);
    // The damaged line was cut out of the file.
    let p = LoadProfileStore::open(&path, 3).unwrap();
    assert_eq!(p.damaged_lines, 0);
    assert_eq!(p.rows().len(), 3);
}

#[test]
fn events_land_in_their_logs_with_idis_codes() {
    let relay = MeterEvent {
        at_unix_ms: 5_000,
        kind: EventKind::Control {
            event: ControlEvent::RelayStateChanged {
                now_ms: 1,
                from: ControlState::Connected,
                to: ControlState::Disconnected,
                transition: crate::control::Transition::B,
                trigger: Trigger::RemoteDisconnect,
            },
        },
    };
    let cover = MeterEvent {
        at_unix_ms: 6_000,
        kind: EventKind::Raised {
            condition: Condition::CoverOpen,
            value: None,
        },
    };
    let outage = MeterEvent {
        at_unix_ms: 7_000,
        kind: EventKind::Raised {
            condition: Condition::PowerLoss,
            value: Some(0.0),
        },
    };
    assert_eq!(event_code(&relay), Some((EventLogKind::Disconnector, 59)));
    assert_eq!(event_code(&cover), Some((EventLogKind::Fraud, 40)));
    assert_eq!(event_code(&outage), Some((EventLogKind::Standard, 1)));
    let mut logs = EventLogs {
        logs: Default::default(),
        capacity: 2,
    };
    for e in [&cover, &cover, &cover, &relay] {
        logs.push(e);
    }
    assert_eq!(logs.logs[EventLogKind::Fraud as usize].len(), 2, "bounded");
    assert_eq!(
        logs.logs[EventLogKind::Disconnector as usize],
        [EventEntry {
            at_unix_ms: 5_000,
            code: 59
        }]
    );
}

#[test]
fn config_checks_keys_and_redacts_them() {
    let mut c = CosemConfig::demo("127.0.0.1:0".parse().unwrap());
    c.validate().unwrap();
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("demo-lls") && !shown.contains("D0D1"),
        "{shown}"
    );
    c.block_cipher_key = "0011".into();
    assert!(c.validate().unwrap_err().contains("block_cipher_key"));
    let text = "listen = \"127.0.0.1:4059\"\nsystem_title = \"4D4D4D0000BC614E\"\nlls_password = \"x\"\nblock_cipher_key = \"000102030405060708090A0B0C0D0E0F\"\nauthentication_key = \"D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF\"\nclient_system_title = \"4D4D4D0000000001\"\n";
    let parsed: CosemConfig = toml::from_str(text).unwrap();
    assert_eq!(parsed.capture_period_s, 900);
    assert!(toml::from_str::<CosemConfig>(&format!("{text}bogus = 1\n")).is_err());
}

/// A reader association (LLS) reading the agent's objects through a real client and server.
#[test]
fn reader_reads_live_registers_instantaneous_values_and_the_profile_by_range() {
    let dir = tempdir("objects");
    let config = CosemConfig::demo("127.0.0.1:0".parse().unwrap());
    let shared = open_shared(&config, &dir, "house-7", &[]).unwrap();
    {
        let mut live = shared.lock_live();
        live.counters = counters(12_345.6);
        live.phases = vec![PhaseValues {
            v_rms: 230.04,
            i_rms: 8.6957,
            p_w: 2000.2,
            pf: 0.999,
            v_thd_pct: Some(1.25),
            i_thd_pct: Some(3.5),
        }];
        live.total_p_w = 2000.2;
        live.total_pf = 0.999;
        live.freq_hz = Some(50.01);
        live.relay = Some(ControlState::Connected);
        live.control_mode = 1;
    }
    for i in 0..4 {
        shared
            .lock_profile()
            .capture(ProfileRow {
                unix_s: 1_700_000_000 + i * 900,
                counters: counters(100.0 * i as f64),
            })
            .unwrap();
    }
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let mut objects = AgentObjects::new(shared, tx, 900);
    let mut server = Server::new(config.server_config().unwrap());
    let mut server_counters = MemoryCounterStore::new(1);
    let mut client = Client::new(ClientConfig::new(
        17,
        ClientAuthentication::Lls {
            password: b"demo-lls".to_vec(),
        },
    ));
    let mut cc = MemoryCounterStore::new(1);
    let random = Arc::new(Mutex::new(0u8));
    let mut run = |client: &mut Client, mut apdu: Vec<u8>| -> dlms::Result<Event> {
        loop {
            let mut fill = |b: &mut [u8]| {
                let mut r = random.lock().unwrap();
                for x in b.iter_mut() {
                    *r = r.wrapping_add(1);
                    *x = *r;
                }
            };
            let mut env = Env {
                objects: &mut objects,
                counters: &mut server_counters,
                random: &mut fill,
            };
            let reply = server.handle_apdu(17, &apdu, &mut env).unwrap();
            match client.handle(&reply, &mut cc)? {
                Event::Send(next) => apdu = next,
                other => return Ok(other),
            }
        }
    };
    let aarq = client.associate(&mut MemoryCounterStore::new(1)).unwrap();
    assert_eq!(run(&mut client, aarq).unwrap(), Event::Associated);
    let mut try_get = |client: &mut Client, class_id, instance, attribute_id, access| {
        let d = AttributeDescriptor {
            class_id,
            instance,
            attribute_id,
        };
        let req = client
            .get(d, access, &mut MemoryCounterStore::new(1))
            .unwrap();
        run(client, req)
    };
    let mut get = |client: &mut Client, class_id, instance, attribute_id, access| match try_get(
        client,
        class_id,
        instance,
        attribute_id,
        access,
    ) {
        Ok(Event::Value(v)) => v,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        get(&mut client, 3, obis::ACTIVE_IMPORT, 2, None),
        Data::DoubleLongUnsigned(12_346)
    );
    assert_eq!(
        get(&mut client, 3, obis::REACTIVE_Q4, 2, None),
        Data::DoubleLongUnsigned(5)
    );
    let voltage = Obis::new(1, 0, 32, 7, 0, 255);
    assert_eq!(
        get(&mut client, 3, voltage, 2, None),
        Data::LongUnsigned(2300)
    );
    assert_eq!(
        ScalerUnit::from_data(&get(&mut client, 3, voltage, 3, None)),
        Some(ScalerUnit {
            scaler: -1,
            unit: 35
        })
    );
    let thd_i = Obis::new(1, 0, 31, 7, 124, 255);
    assert_eq!(get(&mut client, 3, thd_i, 2, None), Data::LongUnsigned(350));
    assert_eq!(
        get(&mut client, 3, obis::FREQUENCY, 2, None),
        Data::LongUnsigned(5001)
    );
    // The profile: capture objects, then a range of two rows decoded with them.
    let co =
        CaptureObject::list_from_data(&get(&mut client, 7, obis::LOAD_PROFILE, 3, None)).unwrap();
    assert_eq!(co.len(), 7);
    let dt = |i: i64| {
        dlms::DateTime::from_unix(
            1_700_000_000 + i * 900,
            0,
            dlms::DeviationConvention::UtcMinusLocal,
        )
    };
    let t = |i: i64| Data::OctetString(dt(i).to_bytes().to_vec());
    let range = dlms::range_selection(&co[0], dt(1), dt(2));
    let buffer = get(&mut client, 7, obis::LOAD_PROFILE, 2, Some(range));
    let rows = decode_buffer(&buffer, &co, 900).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].values[1], Data::DoubleLongUnsigned(100));
    assert_eq!(rows[1].values[0], t(2));
    let by_entry = get(
        &mut client,
        7,
        obis::LOAD_PROFILE,
        2,
        Some(dlms::entry_selection(4, 4)),
    );
    let rows = decode_buffer(&by_entry, &co, 900).unwrap();
    assert_eq!(rows[0].values[1], Data::DoubleLongUnsigned(300));
    // The disconnect control shows the live relay state.
    assert_eq!(
        get(&mut client, 70, obis::DISCONNECT_CONTROL, 3, None),
        Data::Enum(1)
    );
    // Single phase: no L2 objects.
    let l2 = Obis::new(1, 0, 52, 7, 0, 255);
    assert!(
        try_get(&mut client, 3, l2, 2, None).is_err(),
        "L2 voltage is undefined"
    );
}
