//! Fuzz target: the wire decoders of `schema` (envelope and header, record batch, command list,
//! single record) must return a value or an error, never panic; any plaintext sealed under a
//! key opens again to the same bytes, and a decoded batch re-encodes to a stable encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use schema::{Batch, Direction, Envelope, MeterId, MeterKey, Record, decode_commands, open_batch};

fuzz_target!(|data: &[u8]| {
    let key = MeterKey::from_bytes([7; 32]);
    let meter = MeterId::parse("fuzz-meter").expect("valid id");

    // Outer envelope and header, and the whole open path (fails at the tag for random data).
    if let Ok(envelope) = Envelope::parse(data) {
        let _ = envelope.open(&key, &envelope.header().meter.clone(), Direction::Up);
    }
    let _ = open_batch(&key, &meter, data);

    // The plaintext decoders, reached directly (behind the AEAD they see only sealed data).
    if let Ok(batch) = Batch::decode_records(meter.clone(), 1, first_seq(data), data) {
        let again = batch.encode_records().expect("decoded batch re-encodes");
        let back = Batch::decode_records(meter.clone(), 1, batch.records[0].seq, &again)
            .expect("re-encoded batch decodes");
        // Compare encodings, not values: a NaN reading is valid CBOR and never equals itself.
        assert_eq!(back.encode_records().expect("re-encodes"), again);
    }
    let _ = decode_commands(data);
    if let Ok(record) = Record::from_cbor(data) {
        let bytes = record.to_cbor().expect("decoded record re-encodes");
        let back = Record::from_cbor(&bytes).expect("re-encoded record decodes");
        assert_eq!(back.to_cbor().expect("re-encodes"), bytes);
    }

    // Seal/open round trip of arbitrary plaintext.
    if data.len() <= schema::MAX_PLAINTEXT_BYTES {
        let sealed = Envelope::seal(&key, Direction::Down, &meter, 2, 3, data).expect("seals");
        let opened = Envelope::parse(&sealed)
            .expect("parses")
            .open(&key, &meter, Direction::Down)
            .expect("opens");
        assert_eq!(opened, data);
    }
});

/// The first record's seq as the header would state it, so valid batches get past that check.
fn first_seq(data: &[u8]) -> u64 {
    let Ok(ciborium::Value::Array(items)) = ciborium::from_reader::<ciborium::Value, _>(data)
    else {
        return 0;
    };
    items
        .first()
        .and_then(|r| r.as_map())
        .and_then(|m| m.iter().find(|(k, _)| k.as_text() == Some("seq")))
        .and_then(|(_, v)| v.as_integer())
        .and_then(|i| u64::try_from(i).ok())
        .unwrap_or(0)
}
