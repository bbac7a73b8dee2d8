//! Helpers for the unit tests: hex byte vectors written the way specifications print them.

use alloc::vec::Vec;

/// Parses `"C0 01 0A"` (spaces optional) into bytes; panics on bad hex, which only tests call.
pub(crate) fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len().is_multiple_of(2), "odd hex string {s}");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(core::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}
