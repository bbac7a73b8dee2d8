//! Fuzz target: the A-XDR decoder must return a value or an error, never panic; what it
//! decodes must re-encode to bytes that decode to the same encoding.
#![no_main]

use dlms::Data;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Data::parse(data);
    if let Ok((value, used)) = Data::parse_prefix(data) {
        assert!(used <= data.len());
        let bytes = value.to_vec();
        assert_eq!(bytes.len(), value.buffer_len());
        let again = Data::parse(&bytes).expect("re-encoded value decodes");
        assert_eq!(again.to_vec(), bytes);
    }
});
