//! Fuzz target: the HDLC stream decoder, SNRM parameter parser and server link must never
//! panic, whatever frames arrive in whatever order.
#![no_main]

use dlms::hdlc::{HdlcServerLink, LinkEvent, LinkParameters, StreamDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = LinkParameters::parse(data);
    let mut decoder = StreamDecoder::new();
    let mut link = HdlcServerLink::new(1, 128);
    decoder.push(data);
    for _ in 0..64 {
        match decoder.next_frame() {
            Ok(Some(frame)) => {
                if let LinkEvent::Apdu { apdu, .. } = link.receive(&frame) {
                    // Answer with the request itself to exercise segmentation.
                    let _ = link.send_apdu(&apdu);
                }
            }
            Ok(None) => break,
            Err(_) => continue,
        }
    }
    let _ = decoder.needed();
});
