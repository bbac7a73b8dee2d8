//! Fuzz target: the TCP wrapper stream decoder, fed in arbitrary pieces, must yield frames or
//! an error, never panic or buffer beyond its limit.
#![no_main]

use dlms::wrapper::{Packet, Repr, StreamDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Packet::new_checked(data).and_then(|p| Repr::parse(&p));
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let mut decoder = StreamDecoder::new(512);
    for piece in rest.chunks(usize::from(split).max(1)) {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => assert!(frame.apdu.len() <= 512),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        let _ = decoder.needed();
    }
});
