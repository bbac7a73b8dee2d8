//! SPI ADC tests over the byte streams in `testdata/spi_adc` (see its README for their origin).

use metrology::{Analyzer, AnalyzerConfig, NominalFrequency, WindowReport};

use super::*;
use crate::sources::{ErrorKind, SourceOutput};

const MCP3208: &[u8] = include_bytes!("../../../testdata/spi_adc/mcp3208_v_i_4khz.miso");
const MCP3008: &[u8] = include_bytes!("../../../testdata/spi_adc/mcp3008_v_i_4khz.miso");

fn config(chip: Chip, v_scale: f64, i_scale: f64) -> SpiAdcConfig {
    SpiAdcConfig {
        device: "/dev/spidev0.0".into(),
        chip,
        spi_hz: 1_000_000,
        sample_rate_hz: 4000.0,
        channels: vec![
            ChannelMap {
                adc_channel: 0,
                signal: SignalName::V,
                scale: v_scale,
                offset_counts: None,
            },
            ChannelMap {
                adc_channel: 1,
                signal: SignalName::I,
                scale: i_scale,
                offset_counts: None,
            },
        ],
        chunk_frames: 800,
    }
}

fn analyze(samples: &[f64]) -> Vec<WindowReport> {
    let mut a =
        Analyzer::new(AnalyzerConfig::single_phase(4000.0, NominalFrequency::Hz50)).unwrap();
    let mut w = Vec::new();
    a.push_frames(samples, |r| w.push(*r)).unwrap();
    w
}

fn mean(w: &[WindowReport], f: impl Fn(&WindowReport) -> f64) -> f64 {
    w.iter().map(&f).sum::<f64>() / w.len() as f64
}

async fn collect(mut src: SpiAdcSource) -> (Vec<f64>, Vec<SampleChunk>) {
    let mut all = Vec::new();
    let mut chunks = Vec::new();
    while let Some(out) = src.next().await.unwrap() {
        let SourceOutput::Samples(c) = out else {
            panic!("spi_adc yields samples only")
        };
        all.extend_from_slice(&c.samples);
        chunks.push(c);
    }
    (all, chunks)
}

#[tokio::test]
async fn mcp3208_stream_measures_the_recorded_load_after_skew_alignment() {
    let cfg = config(Chip::Mcp3208, 0.25, 0.005);
    let src =
        SpiAdcSource::with_transfer(&cfg, Box::new(RecordedSpi::new(MCP3208.to_vec()))).unwrap();
    let (samples, chunks) = collect(src).await;
    assert_eq!(chunks.len(), 5, "4000 frames in chunks of 800");
    assert_eq!(chunks[1].t0_s, 0.2);
    assert!(
        chunks
            .iter()
            .all(|c| c.layout == FrameLayout::SinglePhase && !c.discontinuity)
    );
    let w = analyze(&samples);
    // Truth: 230 V, 5 A, PF 0.8 → 920 W, 690 var; 12-bit quantisation costs < 0.1 %.
    assert!((mean(&w, |w| w.phases[0].v_rms) - 230.0).abs() < 0.2);
    assert!((mean(&w, |w| w.phases[0].i_rms) - 5.0).abs() < 0.005);
    assert!((mean(&w, |w| w.phases[0].p_w) - 920.0).abs() < 1.0);
    let pf = mean(&w, |w| w.phases[0].pf);
    assert!((pf - 0.8).abs() < 0.0005, "aligned pf {pf}");

    // The same bytes without alignment show the 24 µs skew as a PF error ten times larger.
    let plan = FramePlan::new(&cfg).unwrap();
    let mut raw = Vec::new();
    plan.decode_frames(MCP3208, &mut raw).unwrap();
    let pf_raw = mean(&analyze(&raw), |w| w.phases[0].pf);
    assert!((pf_raw - 0.8).abs() > 0.004, "unaligned pf {pf_raw}");
}

#[tokio::test]
async fn mcp3008_stream_is_decoded_with_its_10_bit_layout() {
    let cfg = config(Chip::Mcp3008, 1.0, 0.02);
    let src =
        SpiAdcSource::with_transfer(&cfg, Box::new(RecordedSpi::new(MCP3008.to_vec()))).unwrap();
    let (samples, _) = collect(src).await;
    let w = analyze(&samples);
    assert!((mean(&w, |w| w.phases[0].v_rms) - 230.0).abs() < 1.0);
    assert!((mean(&w, |w| w.phases[0].p_w) - 920.0).abs() < 8.0);
    assert!((mean(&w, |w| w.phases[0].pf) - 0.8).abs() < 0.003);
}

#[test]
fn the_commands_sent_are_the_datasheet_ones_in_channel_order() {
    let cfg = config(Chip::Mcp3208, 0.25, 0.005);
    let plan = FramePlan::new(&cfg).unwrap();
    assert_eq!(plan.frame_command(), [0x06, 0x00, 0x00, 0x06, 0x40, 0x00]);
    let mut spi = RecordedSpi::new(MCP3208[..12].to_vec());
    let cmd = plan.frame_command().repeat(2);
    let mut rx = vec![0; 12];
    spi.transfer(&cmd, &mut rx, 6, 250).unwrap();
    assert_eq!(spi.mosi(), cmd.as_slice());
    assert_eq!(rx, &MCP3208[..12]);
    assert_eq!(
        spi.transfer(&cmd, &mut rx, 6, 250).unwrap_err().kind(),
        io::ErrorKind::UnexpectedEof
    );
}

#[tokio::test]
async fn a_corrupt_conversion_is_reported_and_the_next_chunk_is_marked_discontinuous() {
    let mut bytes = MCP3208.to_vec();
    // Frame 900 (chunk 1), conversion 1: MISO stuck high.
    let at = 900 * 6 + 3;
    bytes[at..at + 3].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    let cfg = config(Chip::Mcp3208, 0.25, 0.005);
    let mut src = SpiAdcSource::with_transfer(&cfg, Box::new(RecordedSpi::new(bytes))).unwrap();
    assert!(matches!(
        src.next().await.unwrap(),
        Some(SourceOutput::Samples(_))
    ));
    let err = src.next().await.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Device(_)));
    let msg = err.to_string();
    assert!(
        msg.contains("frame 100, conversion 1 (adc channel 1)") && msg.contains("no null bit"),
        "{msg}"
    );
    let Some(SourceOutput::Samples(next)) = src.next().await.unwrap() else {
        panic!()
    };
    assert!(next.discontinuity);
    assert_eq!(next.t0_s, 0.4);
}

#[test]
fn bad_channel_maps_are_rejected_with_the_field_named() {
    let base = config(Chip::Mcp3208, 0.25, 0.005);
    let mut c = base.clone();
    c.channels[1].adc_channel = 0;
    assert!(
        FramePlan::new(&c)
            .unwrap_err()
            .to_string()
            .contains("adc_channel 0 is mapped twice")
    );
    let mut c = base.clone();
    c.channels[1].signal = SignalName::Ia;
    assert!(
        FramePlan::new(&c)
            .unwrap_err()
            .to_string()
            .contains("need exactly v and i")
    );
    let mut c = base.clone();
    c.channels[0].offset_counts = Some(5000.0);
    assert!(
        FramePlan::new(&c)
            .unwrap_err()
            .to_string()
            .contains("channels[0].offset_counts")
    );
    let mut c = base.clone();
    c.channels[0].adc_channel = 8;
    assert!(
        FramePlan::new(&c)
            .unwrap_err()
            .to_string()
            .contains("channels[0].adc_channel")
    );
    let mut c = base.clone();
    c.spi_hz = 100_000;
    c.sample_rate_hz = 4000.0;
    let err = FramePlan::new(&c).unwrap_err().to_string();
    assert!(err.contains("longer than a frame"), "{err}");
    let three: Vec<ChannelMap> = ["va", "vb", "vc", "ia", "ib", "ic", "in"]
        .iter()
        .enumerate()
        .map(|(n, s)| ChannelMap {
            adc_channel: n as u8,
            signal: serde_json::from_str(&format!("\"{s}\"")).unwrap(),
            scale: 1.0,
            offset_counts: None,
        })
        .collect();
    let c = SpiAdcConfig {
        channels: three,
        ..base
    };
    assert_eq!(
        FramePlan::new(&c).unwrap().layout(),
        FrameLayout::ThreePhaseWithNeutral
    );
}
