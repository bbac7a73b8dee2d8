//! Property tests: random harmonic content, frequency and sample rate; the DESIGN §6 bar must
//! hold on every clean window.

use proptest::prelude::*;

use crate::signals::{Signal, Tone, assert_meets_bar, clean};

fn tone(order: u32) -> impl Strategy<Value = Tone> {
    (
        0.0..0.15f64,
        -180.0..180.0f64,
        0.0..0.6f64,
        -180.0..180.0f64,
    )
        .prop_map(move |(v, v_deg, i, i_deg)| {
            Tone::new(
                f64::from(order),
                230.0 * v / f64::from(order),
                v_deg,
                10.0 * i,
                i_deg,
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_harmonic_content_meets_the_bar(
        freq in 45.0..65.0f64,
        fs in 3000.0..20000.0f64,
        angle in -180.0..180.0f64,
        i_rms in 0.5..20.0f64,
        harmonics in proptest::collection::vec((2u32..=13).prop_flat_map(tone), 0..6),
    ) {
        let mut tones = vec![Tone::new(1.0, 230.0, 0.0, i_rms, -angle)];
        // Keep orders unique (two tones of one order would be one tone) and below fs/4.
        for t in harmonics {
            if !tones.iter().any(|x| x.order == t.order) && t.order * freq < fs / 4.0 {
                tones.push(t);
            }
        }
        let sig = Signal { tones, ..Signal::sine(freq, fs, 0.0, 0.0, 0.0) };
        let (windows, _) = sig.analyze(0.8, 2000);
        let good = clean(&windows);
        prop_assert!(!good.is_empty());
        for w in &good {
            prop_assert!((w.freq_hz - freq).abs() < 1e-3, "freq {} vs {}", w.freq_hz, freq);
            assert_meets_bar(w, &sig.truth(), 1.0, "property");
        }
    }
}
