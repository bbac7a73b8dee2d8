//! Fuzz target: the CSV waveform reader must return frames or an error, never panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waveform::{ReadOptions, Waveform};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the options, so both the `--rate` and the `t`-column paths and the
    // rate checks are explored; the rest is the file.
    let Some((&selector, file)) = data.split_first() else {
        return;
    };
    let rate_hz = match selector % 4 {
        0 => None,
        1 => Some(8000.0),
        2 => Some(f64::from(selector) * 3.0),
        _ => Some(1.0e9),
    };
    let options = ReadOptions {
        rate_hz,
        v_scale: 1.0,
        i_scale: if selector & 0x80 != 0 { 0.01 } else { 1.0 },
    };
    let Ok(mut recording) = Waveform::open(file, &options) else {
        return;
    };
    let channels = recording.layout().channels();
    let mut frames = Vec::new();
    let mut total = 0;
    loop {
        frames.clear();
        match recording.read_frames(&mut frames, 1 + usize::from(selector)) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                assert_eq!(frames.len(), n * channels);
                assert!(frames.iter().all(|x| x.is_finite()));
                total += n;
            }
        }
    }
    // Every frame comes from at least two bytes of input (a digit and a separator).
    assert!(total <= file.len());
});
