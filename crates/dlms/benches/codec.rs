//! Criterion benchmarks of the hot paths a head-end polling many meters runs: decoding a
//! load-profile buffer, suite 0 protection of an APDU, and an HDLC frame round trip.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dlms::apdu::{GetDataResult, GetResponse, InvokeId};
use dlms::hdlc::{Address, Control, Packet, Repr};
use dlms::security::{self, SecurityControl};
use dlms::{Apdu, Data, DateTime, DeviationConvention, Keys};
use std::hint::black_box;

/// A GET response carrying one day of 15-minute rows: time, import Wh, export Wh.
fn profile_response() -> Vec<u8> {
    let rows = (0..96)
        .map(|i| {
            let t = DateTime::from_unix(
                1_700_000_000 + i * 900,
                60,
                DeviationConvention::UtcMinusLocal,
            );
            Data::Structure(vec![
                Data::OctetString(t.to_bytes().to_vec()),
                Data::DoubleLongUnsigned(1_000_000 + i as u32 * 375),
                Data::DoubleLongUnsigned(0),
            ])
        })
        .collect();
    Apdu::GetResponse(GetResponse::Normal {
        invoke_id: InvokeId::confirmed(1),
        result: GetDataResult::Data(Data::Array(rows)),
    })
    .to_vec()
}

fn benches(c: &mut Criterion) {
    let response = profile_response();
    let mut g = c.benchmark_group("apdu");
    g.throughput(Throughput::Bytes(response.len() as u64));
    g.bench_function("parse_profile_96_rows", |b| {
        b.iter(|| Apdu::parse(black_box(&response)).unwrap())
    });
    let parsed = Apdu::parse(&response).unwrap();
    g.bench_function("emit_profile_96_rows", |b| {
        b.iter(|| black_box(&parsed).to_vec())
    });
    g.finish();

    let keys = Keys::GREEN_BOOK_EXAMPLE;
    let title = [0x4D, 0x4D, 0x4D, 0x00, 0x00, 0xBC, 0x61, 0x4E];
    let plain = vec![0xC4u8; 1024];
    let mut g = c.benchmark_group("suite0");
    g.throughput(Throughput::Bytes(plain.len() as u64));
    g.bench_function("encrypt_1k", |b| {
        b.iter(|| {
            security::encrypt(
                &keys,
                SecurityControl::AUTHENTICATED_ENCRYPTION,
                &title,
                7,
                black_box(&plain),
            )
            .unwrap()
        })
    });
    let payload = security::encrypt(
        &keys,
        SecurityControl::AUTHENTICATED_ENCRYPTION,
        &title,
        7,
        &plain,
    )
    .unwrap();
    g.bench_function("decrypt_1k", |b| {
        b.iter(|| {
            security::decrypt(
                &keys,
                SecurityControl::AUTHENTICATED_ENCRYPTION,
                &title,
                7,
                black_box(&payload),
            )
            .unwrap()
        })
    });
    g.finish();

    let frame = Repr {
        segmented: false,
        destination: Address::Two {
            upper: 1,
            lower: 0x11,
        },
        source: Address::One(0x10),
        control: Control::I {
            send_seq: 1,
            recv_seq: 1,
            poll: true,
        },
        info: vec![0xC4; 128],
    };
    let bytes = frame.emit().unwrap();
    let mut g = c.benchmark_group("hdlc");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("emit_128", |b| b.iter(|| black_box(&frame).emit().unwrap()));
    g.bench_function("parse_128", |b| {
        b.iter(|| Repr::parse(&Packet::new_checked(black_box(&bytes[..])).unwrap()).unwrap())
    });
    g.finish();
}

criterion_group!(codec, benches);
criterion_main!(codec);
