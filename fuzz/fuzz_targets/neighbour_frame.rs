//! Fuzz target: the neighbour-link frame decoder (`schema::neighbour`) must return a frame, a
//! "need more bytes" or an error for any bytes, never panic; a decoded frame re-encodes to
//! exactly the bytes it came from, and a "need" never asks past the announced length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use schema::neighbour::{Decoded, Frame, MAX_FRAME_BODY, PREFIX_LEN};

fuzz_target!(|data: &[u8]| {
    match Frame::decode(data) {
        Ok(Decoded::Frame(frame, used)) => {
            assert!(used <= data.len());
            let again = frame.encode().expect("a decoded frame encodes");
            assert_eq!(again, &data[..used]);
        }
        Ok(Decoded::Need(n)) => {
            assert!(n > 0 && data.len() + n <= PREFIX_LEN + MAX_FRAME_BODY);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
