//! Our client against our server over a real loopback TCP connection with the TCP wrapper.

use std::sync::{Arc, Mutex};

use dlms::apdu::{AttributeDescriptor, MethodDescriptor};
use dlms::cosem::{CaptureObject, ControlState, decode_buffer};
use dlms::{
    Client, ClientAuthentication, ClientConfig, CounterStore, Data, DateTime, DeviationConvention,
    ErrorKind, Event, Keys, MemoryCounterStore, Obis, ServerConfig, entry_selection,
    range_selection,
};

use crate::support::demo_meter::{self, DemoMeter, RelayOperation};
use crate::support::tcp::{ClientConn, TestServer};

pub const SERVER_TITLE: [u8; 8] = [0x4D, 0x4D, 0x4D, 0x00, 0x00, 0xBC, 0x61, 0x4E];
pub const CLIENT_TITLE: [u8; 8] = [0x4D, 0x4D, 0x4D, 0x00, 0x00, 0x00, 0x00, 0x01];

pub fn demo_server() -> (
    TestServer,
    Arc<Mutex<DemoMeter>>,
    Arc<Mutex<MemoryCounterStore>>,
) {
    let meter = Arc::new(Mutex::new(DemoMeter::new(demo_meter::now_unix(), 1500.0)));
    let counters = Arc::new(Mutex::new(MemoryCounterStore::new(1)));
    let config = ServerConfig::wattline(
        SERVER_TITLE,
        b"demo-lls",
        Keys::GREEN_BOOK_EXAMPLE,
        CLIENT_TITLE,
    );
    let server = TestServer::spawn(config, meter.clone(), counters.clone());
    (server, meter, counters)
}

fn attr(class_id: u16, instance: Obis, attribute_id: i8) -> AttributeDescriptor {
    AttributeDescriptor {
        class_id,
        instance,
        attribute_id,
    }
}

fn hls() -> ClientAuthentication {
    ClientAuthentication::HlsGmac {
        keys: Keys::GREEN_BOOK_EXAMPLE,
        system_title: CLIENT_TITLE,
        challenge: b"K56iVagYwattline".to_vec(),
    }
}

fn connect(server: &TestServer, sap: u16, auth: ClientAuthentication) -> ClientConn {
    ClientConn::connect(
        server.addr,
        Client::new(ClientConfig::new(sap, auth)),
        MemoryCounterStore::new(1),
    )
    .unwrap()
}

fn get(c: &mut ClientConn, a: AttributeDescriptor) -> Result<Data, String> {
    let req = c
        .client
        .get(a, None, &mut c.counters)
        .map_err(|e| e.to_string())?;
    match c.exchange(req)? {
        Event::Value(d) => Ok(d),
        other => Err(format!("unexpected {other:?}")),
    }
}

#[test]
fn public_association_reads_clock_and_counter_but_not_energy() {
    let (server, _meter, _) = demo_server();
    let mut c = connect(&server, 16, ClientAuthentication::None);
    assert_eq!(c.associate().unwrap(), Event::Associated);
    let t = get(&mut c, attr(8, Obis::CLOCK, 2)).unwrap();
    let dt = dlms::cosem::ClockAttributes::time_from_data(&t).unwrap();
    let unix = dt.to_unix(DeviationConvention::UtcMinusLocal).unwrap();
    assert!((unix - demo_meter::now_unix()).abs() < 5, "clock {dt:?}");
    assert!(matches!(
        get(&mut c, attr(1, Obis::INVOCATION_COUNTER, 2)).unwrap(),
        Data::DoubleLongUnsigned(_)
    ));
    let denied = get(&mut c, attr(3, demo_meter::ACTIVE_IMPORT, 2)).unwrap_err();
    assert!(
        denied.contains("code 3"),
        "read-write-denied expected: {denied}"
    );
    let req = c.client.release().unwrap();
    assert_eq!(c.exchange(req).unwrap(), Event::Released);
}

#[test]
fn lls_reader_reads_registers_and_profile_with_block_transfer_and_selective_access() {
    let (server, meter, _) = demo_server();
    let mut c = connect(
        &server,
        17,
        ClientAuthentication::Lls {
            password: b"demo-lls".to_vec(),
        },
    );
    assert_eq!(c.associate().unwrap(), Event::Associated);
    let before = meter.lock().unwrap().import_wh as u32;
    let Data::DoubleLongUnsigned(wh) = get(&mut c, attr(3, demo_meter::ACTIVE_IMPORT, 2)).unwrap()
    else {
        panic!()
    };
    let after = {
        let mut m = meter.lock().unwrap();
        m.update(demo_meter::now_unix());
        m.import_wh as u32
    };
    assert!(before <= wh && wh <= after, "{before} <= {wh} <= {after}");
    assert_eq!(
        get(&mut c, attr(3, demo_meter::VOLTAGE_L1, 3)).unwrap(),
        Data::Structure(vec![Data::Integer(-1), Data::Enum(35)])
    );

    // The whole buffer (96 rows, several kB) needs block transfer at a 1024-byte PDU.
    let capture =
        CaptureObject::list_from_data(&get(&mut c, attr(7, demo_meter::LOAD_PROFILE, 3)).unwrap())
            .unwrap();
    let buffer = get(&mut c, attr(7, demo_meter::LOAD_PROFILE, 2)).unwrap();
    assert!(
        buffer.buffer_len() > 2048,
        "buffer of {} bytes",
        buffer.buffer_len()
    );
    let rows = decode_buffer(&buffer, &capture, demo_meter::CAPTURE_PERIOD_S).unwrap();
    assert_eq!(rows.len(), 96);
    assert_eq!(
        rows,
        decode_buffer(
            &Data::Array(
                meter
                    .lock()
                    .unwrap()
                    .profile
                    .rows
                    .iter()
                    .cloned()
                    .map(Data::Structure)
                    .collect()
            ),
            &capture,
            900
        )
        .unwrap()
    );

    let req = c
        .client
        .get(
            attr(7, demo_meter::LOAD_PROFILE, 2),
            Some(entry_selection(95, 0)),
            &mut c.counters,
        )
        .unwrap();
    let Event::Value(Data::Array(last_two)) = c.exchange(req).unwrap() else {
        panic!()
    };
    assert_eq!(last_two.len(), 2);

    let m = meter.lock().unwrap();
    let t = |i: usize| dlms::cosem::ClockAttributes::time_from_data(&m.profile.rows[i][0]).unwrap();
    let (from, to): (DateTime, DateTime) = (t(10), t(13));
    drop(m);
    let req = c
        .client
        .get(
            attr(7, demo_meter::LOAD_PROFILE, 2),
            Some(range_selection(&capture[0], from, to)),
            &mut c.counters,
        )
        .unwrap();
    let Event::Value(Data::Array(range)) = c.exchange(req).unwrap() else {
        panic!()
    };
    assert_eq!(range.len(), 4);

    // A reader may not disconnect.
    let dc = MethodDescriptor {
        class_id: 70,
        instance: demo_meter::DISCONNECT_CONTROL,
        method_id: 1,
    };
    let req = c
        .client
        .action(dc, Some(Data::Integer(0)), &mut c.counters)
        .unwrap();
    assert!(c.exchange(req).unwrap_err().contains("code 3"));
    assert!(meter.lock().unwrap().relay_log.is_empty());
}

#[test]
fn wrong_lls_password_is_rejected_with_diagnostic() {
    let (server, _, _) = demo_server();
    let mut c = connect(
        &server,
        17,
        ClientAuthentication::Lls {
            password: b"wrong".to_vec(),
        },
    );
    let e = c.associate().unwrap_err();
    assert!(e.contains("diagnostic (code 13)"), "{e}");
    let mut c = connect(&server, 99, ClientAuthentication::None);
    assert!(c.associate().is_err(), "unknown client SAP");
}

#[test]
fn management_hls_gmac_disconnects_reconnects_and_writes_with_suite_0() {
    let (server, meter, counters) = demo_server();
    let mut c = connect(&server, 1, hls());
    assert_eq!(c.associate().unwrap(), Event::Associated);
    assert_eq!(c.client.server_system_title(), Some(SERVER_TITLE));
    let dc = |m| MethodDescriptor {
        class_id: 70,
        instance: demo_meter::DISCONNECT_CONTROL,
        method_id: m,
    };
    let req = c
        .client
        .action(dc(1), Some(Data::Integer(0)), &mut c.counters)
        .unwrap();
    assert_eq!(c.exchange(req).unwrap(), Event::ActionDone(None));
    assert_eq!(
        get(&mut c, attr(70, demo_meter::DISCONNECT_CONTROL, 3)).unwrap(),
        Data::Enum(ControlState::Disconnected as u8)
    );
    let req = c
        .client
        .action(dc(2), Some(Data::Integer(0)), &mut c.counters)
        .unwrap();
    assert_eq!(c.exchange(req).unwrap(), Event::ActionDone(None));
    assert_eq!(
        meter.lock().unwrap().relay_log,
        vec![
            RelayOperation::RemoteDisconnect(1),
            RelayOperation::RemoteReconnect(1)
        ]
    );

    let threshold = attr(71, demo_meter::LIMITER, 3);
    let req = c
        .client
        .set(threshold, &Data::DoubleLongUnsigned(7_500), &mut c.counters)
        .unwrap();
    assert_eq!(c.exchange(req).unwrap(), Event::Written);
    assert_eq!(meter.lock().unwrap().limiter_threshold_w, 7_500);
    // The invocation counter object shows the last counter accepted from the management client.
    let Data::DoubleLongUnsigned(ic) = get(&mut c, attr(1, Obis::INVOCATION_COUNTER, 2)).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        Some(ic),
        counters.lock().unwrap().last_received(&CLIENT_TITLE)
    );
}

#[test]
fn replayed_ciphered_request_is_refused_with_invocation_counter_error() {
    let (server, _, counters) = demo_server();
    let mut c = connect(&server, 1, hls());
    c.associate().unwrap();
    let req = c
        .client
        .get(attr(8, Obis::CLOCK, 2), None, &mut c.counters)
        .unwrap();
    c.exchange(req.clone()).unwrap();
    // The same bytes again: a replay.
    let reply = c.raw(&req).unwrap();
    assert_eq!(reply[0], 0xD8, "exception-response");
    assert_eq!(reply[2], 6, "invocation-counter-error");
    let dlms::Apdu::ExceptionResponse(e) = dlms::Apdu::parse(&reply).unwrap() else {
        panic!()
    };
    assert_eq!(
        e.invocation_counter,
        counters
            .lock()
            .unwrap()
            .last_received(&CLIENT_TITLE)
            .map(|l| l + 1)
    );
    // A tampered request is refused as a deciphering error.
    let mut bad = c
        .client
        .get(attr(8, Obis::CLOCK, 2), None, &mut c.counters)
        .unwrap();
    let n = bad.len();
    bad[n - 1] ^= 1;
    let reply = c.raw(&bad).unwrap();
    assert_eq!(&reply[..3], &[0xD8, 0x01, 0x05]);
}

#[test]
fn hls_with_wrong_key_fails_and_plain_requests_are_refused_in_ciphered_association() {
    let (server, _, _) = demo_server();
    let mut keys = Keys::GREEN_BOOK_EXAMPLE;
    keys.authentication_key[15] ^= 0xff;
    let mut c = connect(
        &server,
        1,
        ClientAuthentication::HlsGmac {
            keys,
            system_title: CLIENT_TITLE,
            challenge: b"12345678".to_vec(),
        },
    );
    let e = c.associate().unwrap_err();
    assert!(e.contains("diagnostic (code 13)"), "{e}");
    // Associated for real, a plain GET is not accepted.
    let mut c = connect(&server, 1, hls());
    c.associate().unwrap();
    let plain = dlms::Apdu::GetRequest(dlms::apdu::GetRequest::Normal {
        invoke_id: dlms::apdu::InvokeId::confirmed(1),
        attribute: attr(8, Obis::CLOCK, 2),
        access: None,
    });
    let reply = c.raw(&plain.to_vec()).unwrap();
    assert_eq!(reply[0], 0xD8);
}

#[test]
fn get_next_with_a_wrong_block_number_aborts_the_transfer() {
    let (server, _, _) = demo_server();
    let mut c = connect(
        &server,
        17,
        ClientAuthentication::Lls {
            password: b"demo-lls".to_vec(),
        },
    );
    c.associate().unwrap();
    let first = dlms::Apdu::GetRequest(dlms::apdu::GetRequest::Normal {
        invoke_id: dlms::apdu::InvokeId::confirmed(2),
        attribute: attr(7, demo_meter::LOAD_PROFILE, 2),
        access: None,
    });
    let reply = dlms::Apdu::parse(&c.raw(&first.to_vec()).unwrap()).unwrap();
    assert!(matches!(
        reply,
        dlms::Apdu::GetResponse(dlms::apdu::GetResponse::WithDataBlock {
            block_number: 1,
            last_block: false,
            ..
        })
    ));
    let next = |n| {
        dlms::Apdu::GetRequest(dlms::apdu::GetRequest::Next {
            invoke_id: dlms::apdu::InvokeId::confirmed(2),
            block_number: n,
        })
        .to_vec()
    };
    let reply = dlms::Apdu::parse(&c.raw(&next(7)).unwrap()).unwrap();
    assert!(matches!(
        reply,
        dlms::Apdu::GetResponse(dlms::apdu::GetResponse::WithDataBlock {
            raw: Err(dlms::apdu::DataAccessResult::DataBlockNumberInvalid),
            ..
        })
    ));
    // After the error the transfer is gone: a correct number now finds nothing in progress, and
    // a fresh GET starts again at block 1.
    let reply = dlms::Apdu::parse(&c.raw(&next(1)).unwrap()).unwrap();
    assert!(matches!(
        reply,
        dlms::Apdu::GetResponse(dlms::apdu::GetResponse::WithDataBlock {
            raw: Err(dlms::apdu::DataAccessResult::NoLongGetInProgress),
            ..
        })
    ));
    let reply = dlms::Apdu::parse(&c.raw(&first.to_vec()).unwrap()).unwrap();
    assert!(matches!(
        reply,
        dlms::Apdu::GetResponse(dlms::apdu::GetResponse::WithDataBlock {
            block_number: 1,
            ..
        })
    ));
}

#[test]
fn trailing_bytes_after_a_value_fail_unless_tolerated() {
    // A meter that appends two bytes after the value of a GET response.
    let reply = [0xC4, 0x01, 0x41, 0x00, 0x11, 0x05, 0xAA, 0xBB];
    for tolerate in [false, true] {
        let mut cfg = ClientConfig::new(16, ClientAuthentication::None);
        cfg.tolerate_trailing_bytes = tolerate;
        let mut client = Client::new(cfg);
        let mut counters = MemoryCounterStore::new(1);
        client.associate(&mut counters).unwrap();
        let aare = dlms::Apdu::parse(&[
            0x61, 0x29, 0xA1, 0x09, 0x06, 0x07, 0x60, 0x85, 0x74, 0x05, 0x08, 0x01, 0x01, 0xA2,
            0x03, 0x02, 0x01, 0x00, 0xA3, 0x05, 0xA1, 0x03, 0x02, 0x01, 0x00, 0xBE, 0x10, 0x04,
            0x0E, 0x08, 0x00, 0x06, 0x5F, 0x1F, 0x04, 0x00, 0x00, 0x50, 0x1F, 0x01, 0xF4, 0x00,
            0x07,
        ])
        .unwrap()
        .to_vec();
        assert_eq!(
            client.handle(&aare, &mut counters).unwrap(),
            Event::Associated
        );
        client
            .get(attr(1, Obis::LOGICAL_DEVICE_NAME, 2), None, &mut counters)
            .unwrap();
        let r = client.handle(&reply, &mut counters);
        if tolerate {
            assert_eq!(r.unwrap(), Event::Value(Data::Unsigned(5)));
            assert_eq!(client.trailing_bytes_ignored(), 2);
        } else {
            assert_eq!(
                r.unwrap_err().kind(),
                &ErrorKind::TrailingBytes { count: 2 }
            );
        }
    }
}

#[test]
fn client_counter_out_of_sync_is_recovered_by_reading_the_counter_object() {
    let (server, _, _) = demo_server();
    // First session advances the server's view of our counter.
    let mut c = connect(&server, 1, hls());
    c.associate().unwrap();
    for _ in 0..3 {
        get(&mut c, attr(8, Obis::CLOCK, 2)).unwrap();
    }
    drop(c);
    // A client that lost its counter (restart without persistence) is refused ...
    let mut stale = connect(&server, 1, hls());
    assert!(stale.associate().is_err());
    // ... until it reads 0.0.43.1.0.255 over the public association and continues above it.
    let mut public = connect(&server, 16, ClientAuthentication::None);
    public.associate().unwrap();
    let Data::DoubleLongUnsigned(last) =
        get(&mut public, attr(1, Obis::INVOCATION_COUNTER, 2)).unwrap()
    else {
        panic!()
    };
    let mut c = ClientConn::connect(
        server.addr,
        Client::new(ClientConfig::new(1, hls())),
        MemoryCounterStore::new(last + 1),
    )
    .unwrap();
    assert_eq!(c.associate().unwrap(), Event::Associated);
}

#[test]
fn our_client_over_hdlc_reads_profile_and_operates_relay_with_small_segments() {
    use crate::support::tcp::{Framing, HdlcClientConn};
    let meter = Arc::new(Mutex::new(DemoMeter::new(demo_meter::now_unix(), 1500.0)));
    let counters = Arc::new(Mutex::new(MemoryCounterStore::new(1)));
    let config = ServerConfig::wattline(
        SERVER_TITLE,
        b"demo-lls",
        Keys::GREEN_BOOK_EXAMPLE,
        CLIENT_TITLE,
    );
    let server = TestServer::spawn_with(Framing::Hdlc, config, meter.clone(), counters);
    // 64-byte information fields: every APDU above that is segmented by HDLC, and the profile
    // buffer is additionally split by GET block transfer.
    let mut c = HdlcClientConn::connect(
        server.addr,
        Client::new(ClientConfig::new(1, hls())),
        MemoryCounterStore::new(1),
        64,
    )
    .unwrap();
    assert_eq!(c.associate().unwrap(), Event::Associated);
    let req = c
        .client
        .get(attr(7, demo_meter::LOAD_PROFILE, 2), None, &mut c.counters)
        .unwrap();
    let Event::Value(Data::Array(rows)) = c.exchange(req).unwrap() else {
        panic!()
    };
    assert_eq!(rows.len(), 96);
    let dc = MethodDescriptor {
        class_id: 70,
        instance: demo_meter::DISCONNECT_CONTROL,
        method_id: 1,
    };
    let req = c
        .client
        .action(dc, Some(Data::Integer(0)), &mut c.counters)
        .unwrap();
    assert_eq!(c.exchange(req).unwrap(), Event::ActionDone(None));
    assert_eq!(meter.lock().unwrap().relay, ControlState::Disconnected);
    c.close().unwrap();
}

#[test]
fn clock_deviation_sign_is_a_per_meter_setting() {
    // A meter in CET (UTC+1) that sends deviation +60 (local minus UTC), against the Blue Book.
    let unix = 1_700_000_000;
    let sent = Data::OctetString(
        DateTime::from_unix(unix, 60, DeviationConvention::LocalMinusUtc)
            .to_bytes()
            .to_vec(),
    );
    let mut cfg = ClientConfig::new(16, ClientAuthentication::None);
    assert_eq!(
        Client::new(cfg.clone()).unix_time(&sent),
        Some(unix + 7200),
        "read with the standard sign: two hours off"
    );
    cfg.clock_deviation = DeviationConvention::LocalMinusUtc;
    assert_eq!(Client::new(cfg).unix_time(&sent), Some(unix));
}
