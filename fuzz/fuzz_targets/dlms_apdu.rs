//! Fuzz target: every APDU decoder (xDLMS services, ACSE, initiate, ciphered envelopes) must
//! return a value or an error, never panic; decoded APDUs re-encode stably.
#![no_main]

use dlms::Apdu;
use dlms::apdu::{Aare, Aarq, InitiateRequest, InitiateResponse, Rlrq};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(apdu) = Apdu::parse(data) {
        let bytes = apdu.to_vec();
        let again = Apdu::parse(&bytes).expect("re-encoded apdu decodes");
        assert_eq!(again.to_vec(), bytes);
    }
    let _ = Apdu::parse_prefix(data);
    let _ = Aarq::parse(data);
    let _ = Aare::parse(data);
    let _ = Rlrq::parse(data);
    let _ = InitiateRequest::parse(data);
    let _ = InitiateResponse::parse(data);
    let keys = dlms::Keys::GREEN_BOOK_EXAMPLE;
    if let Some((&sc, rest)) = data.split_first() {
        let _ = dlms::security::decrypt(&keys, dlms::security::SecurityControl(sc), &[0x4D; 8], 1, rest);
        let _ = dlms::security::verify_hls_gmac(&keys, &[0x4D; 8], b"challenge", rest);
    }
});
