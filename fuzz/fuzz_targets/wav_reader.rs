//! Fuzz target: the WAV reader must return frames or an error, never panic or over-allocate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waveform::{ReadOptions, WavReader};

/// A valid 16-bit stereo header up to the data size, so the fuzzer reaches the sample decoder
/// quickly; inputs starting with `RIFF` are used as they are, so the header parser is covered too.
const HEADER: &[u8] = b"RIFF\x00\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x02\x00\x40\x1f\x00\x00\x00\x7d\x00\x00\x04\x00\x10\x00data";

fuzz_target!(|data: &[u8]| {
    let file: Vec<u8> = if data.starts_with(b"RIFF") {
        data.to_vec()
    } else {
        [HEADER, data].concat()
    };
    let options = ReadOptions {
        rate_hz: None,
        v_scale: 400.0,
        i_scale: 20.0,
    };
    let Ok(mut recording) = WavReader::new(&file[..], &options) else {
        return;
    };
    let channels = recording.layout().channels();
    let mut frames = Vec::new();
    loop {
        frames.clear();
        match recording.read_frames(&mut frames, 4096) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                assert_eq!(frames.len(), n * channels);
                assert!(frames.iter().all(|x| x.is_finite()));
            }
        }
    }
});
