//! Simulator tests: each load model and tamper measured through the real metrology engine.

use metrology::{Analyzer, AnalyzerConfig, NominalFrequency, WindowReport};

use super::engine::cloud_factor;
use super::*;
use crate::events::ResidualCurrent;
use crate::sources::{FrameLayout, SignalKind};

fn scenario(text: &str) -> Scenario {
    Scenario::from_toml(text, "test.toml").expect("scenario parses")
}

/// Run `seconds` of the simulation through metrology; also return the residual-current RMS
/// of the whole run (three-phase only).
fn analyze(sim: &mut Simulator, seconds: f64) -> (Vec<WindowReport>, Option<f64>) {
    let layout = sim.layout();
    let config = AnalyzerConfig {
        layout: layout.metrology_layout(),
        ..AnalyzerConfig::single_phase(sim.sample_rate_hz(), NominalFrequency::Hz50)
    };
    let mut analyzer = Analyzer::new(config).expect("analyzer");
    let mut windows = Vec::new();
    let mut residual = ResidualCurrent::new();
    let frames = (seconds * sim.sample_rate_hz()) as usize;
    let mut done = 0;
    while done < frames {
        let chunk = sim.generate(1600.min(frames - done));
        if chunk.frames() == 0 {
            break;
        }
        done += chunk.frames();
        residual.feed(&chunk);
        analyzer
            .push_frames(&chunk.samples, |w| windows.push(*w))
            .expect("push");
    }
    (windows, residual.take_rms_a())
}

fn mean(windows: &[WindowReport], f: impl Fn(&WindowReport) -> f64) -> f64 {
    windows.iter().map(&f).sum::<f64>() / windows.len() as f64
}

#[test]
fn resistive_load_gives_its_power_at_unity_pf() {
    let sc = scenario(
        r#"
        [[load]]
        name = "heater"
        kind = { type = "resistive", power_w = 2000 }
        "#,
    );
    let mut sim = Simulator::new(sc, MeterPosition::House, None).unwrap();
    assert_eq!(sim.layout(), FrameLayout::SinglePhase);
    let (w, _) = analyze(&mut sim, 2.0);
    assert!(w.len() >= 9);
    let p = mean(&w, |w| w.phases[0].p_w);
    assert!((p - 2000.0).abs() < 0.5, "p {p}");
    assert!((mean(&w, |w| w.phases[0].pf) - 1.0).abs() < 1e-4);
    assert!((mean(&w, |w| w.phases[0].v_rms) - 230.0).abs() < 0.01);
}

#[test]
fn motor_matches_seed_000_table_1_after_its_inrush() {
    // Seed 000, Table 1: 230 V, PF 0.8 → 864 W, 648 var, 1080 VA.
    let sc = scenario(
        r#"
        [[load]]
        name = "pump"
        kind = { type = "motor", power_w = 864, pf = 0.8, inrush_factor = 6, inrush_s = 0.2 }
        "#,
    );
    let mut sim = Simulator::new(sc, MeterPosition::House, None).unwrap();
    let (w, _) = analyze(&mut sim, 4.0);
    // The first window carries the inrush: several times the running current.
    assert!(
        w[0].phases[0].i_rms > 2.0 * 4.6957,
        "inrush i {}",
        w[0].phases[0].i_rms
    );
    let steady: Vec<_> = w.iter().filter(|w| w.t0_s > 2.0).copied().collect();
    let p = mean(&steady, |w| w.phases[0].p_w);
    let q = mean(&steady, |w| w.phases[0].q_var);
    assert!((p - 864.0).abs() < 0.5, "p {p}");
    assert!((q - 648.0).abs() < 0.5, "q {q}");
    assert!((mean(&steady, |w| w.phases[0].angle_deg) - 36.87).abs() < 0.05);
}

#[test]
fn rectifier_has_the_configured_current_thd() {
    let sc = scenario(
        r#"
        [[load]]
        name = "smps"
        kind = { type = "rectifier", power_w = 300, thd = 0.8 }
        "#,
    );
    let mut sim = Simulator::new(sc, MeterPosition::House, None).unwrap();
    let (w, _) = analyze(&mut sim, 1.0);
    let thd = mean(&w, |w| w.phases[0].i_thd_pct);
    assert!((thd - 80.0).abs() < 1.0, "thd {thd}");
    let p = mean(&w, |w| w.phases[0].p_w);
    assert!((p - 300.0).abs() < 1.0, "p {p}");
    // Distortion makes PF < DPF.
    assert!(mean(&w, |w| w.phases[0].pf) < 0.8);
}

#[test]
fn pv_exports_along_the_day_and_clouds_are_deterministic() {
    let text = r#"
        start_time_of_day_s = 46800
        [[load]]
        name = "roof"
        kind = { type = "pv", peak_power_w = 3000, sunrise_s = 21600, sunset_s = 72000 }
    "#;
    let mut sim = Simulator::new(scenario(text), MeterPosition::House, None).unwrap();
    let (w, _) = analyze(&mut sim, 1.0);
    let p = mean(&w, |w| w.total.p_w);
    // 13:00 is the middle of a 06:00–20:00 day: full sun, exporting.
    assert!((p + 3000.0).abs() < 5.0, "p {p}");

    let night = text.replace("46800", "3600");
    let mut sim = Simulator::new(scenario(&night), MeterPosition::House, None).unwrap();
    let (w, _) = analyze(&mut sim, 0.5);
    assert!(mean(&w, |w| w.total.p_w).abs() < 1.0);

    // Clouds: a function of (seed, time) only, half the minutes cloudy at cloudiness 0.5.
    let a: Vec<f64> = (0..200)
        .map(|m| cloud_factor(m as f64 * 60.0 + 1.0, 0.5, 9))
        .collect();
    let b: Vec<f64> = (0..200)
        .map(|m| cloud_factor(m as f64 * 60.0 + 1.0, 0.5, 9))
        .collect();
    let c: Vec<f64> = (0..200)
        .map(|m| cloud_factor(m as f64 * 60.0 + 1.0, 0.5, 10))
        .collect();
    assert_eq!(a, b);
    assert_ne!(a, c);
    let cloudy = a.iter().filter(|f| **f < 1.0).count();
    assert!(
        (70..130).contains(&cloudy),
        "{cloudy} cloudy minutes of 200"
    );
    assert!(a.iter().all(|f| (0.25..=1.0).contains(f)));
    // Edges fade over 10 s rather than jump.
    let edge: Vec<f64> = (0..=20)
        .map(|s| cloud_factor(50.0 + s as f64, 0.5, 9))
        .collect();
    assert!(edge.windows(2).all(|w| (w[1] - w[0]).abs() < 0.1));
}

#[test]
fn bypass_is_seen_by_the_observer_only() {
    // Seed 003: the observer meter before the house sees the bypassed load, the house meter
    // does not; the theft indicator is (observer − house) / observer.
    let text = r#"
        phases = 3
        [[load]]
        name = "house"
        kind = { type = "resistive", power_w = 3000 }
        phase = "abc"
        [[load]]
        name = "bypassed heater"
        kind = { type = "resistive", power_w = 600 }
        phase = "b"
        bypass = "full"
    "#;
    let mut house = Simulator::new(scenario(text), MeterPosition::House, None).unwrap();
    let mut observer = Simulator::new(scenario(text), MeterPosition::Observer, None).unwrap();
    let (wh, rh) = analyze(&mut house, 1.0);
    let (wo, ro) = analyze(&mut observer, 1.0);
    let ph = mean(&wh, |w| w.total.p_w);
    let po = mean(&wo, |w| w.total.p_w);
    assert!((ph - 3000.0).abs() < 1.0, "house {ph}");
    assert!((po - 3600.0).abs() < 1.0, "observer {po}");
    assert!((po - ph) / po > 0.02);
    // A full bypass leaves no trace in the house meter's own currents.
    assert!(rh.unwrap() < 1e-9 && ro.unwrap() < 1e-9);
}

#[test]
fn an_open_relay_stops_the_loads_behind_it_but_not_a_bypass() {
    let text = r#"
        phases = 3
        [[load]]
        name = "house"
        kind = { type = "resistive", power_w = 3000 }
        phase = "abc"
        [[load]]
        name = "bypassed heater"
        kind = { type = "resistive", power_w = 600 }
        phase = "b"
        bypass = "full"
    "#;
    let mut house = Simulator::new(scenario(text), MeterPosition::House, None).unwrap();
    let (on, _) = analyze(&mut house, 0.5);
    house.set_load_connected(false);
    let (off, _) = analyze(&mut house, 0.5);
    let p_on = mean(&on, |w| w.total.p_w);
    let p_off = mean(&off, |w| w.total.p_w);
    assert!((p_on - 3000.0).abs() < 1.0, "connected {p_on}");
    assert!(p_off.abs() < 0.5, "disconnected {p_off}");
    // The supply voltage is still measured (the meter sits in front of its relay).
    let v_off = mean(&off, |w| w.phases[0].v_rms);
    assert!((v_off - 230.0).abs() < 5.0, "voltage {v_off}");
    // The observer before the house keeps seeing the bypass (the house relay cannot cut it).
    let mut observer = Simulator::new(scenario(text), MeterPosition::Observer, None).unwrap();
    observer.set_load_connected(false);
    let (wo, _) = analyze(&mut observer, 0.5);
    assert!((mean(&wo, |w| w.total.p_w) - 3600.0).abs() < 1.0);
    house.set_load_connected(true);
    let (back, _) = analyze(&mut house, 0.5);
    assert!((mean(&back, |w| w.total.p_w) - 3000.0).abs() < 1.0);
}

#[test]
fn phase_only_bypass_shows_as_residual_current() {
    let text = r#"
        phases = 3
        [[load]]
        name = "house"
        kind = { type = "resistive", power_w = 3000 }
        phase = "abc"
        [[load]]
        name = "hidden"
        kind = { type = "resistive", power_w = 1150 }
        phase = "a"
        bypass = "phase_only"
    "#;
    let mut house = Simulator::new(scenario(text), MeterPosition::House, None).unwrap();
    let (w, residual) = analyze(&mut house, 1.0);
    assert!((mean(&w, |w| w.total.p_w) - 3000.0).abs() < 1.0);
    // 1150 W at 230 V = 5 A returning through the neutral CT but not the phase CT.
    let r = residual.unwrap();
    assert!((r - 5.0).abs() < 0.01, "residual {r}");
}

#[test]
fn reversed_ct_and_magnet_change_what_the_house_meter_reads() {
    let text = r#"
        phases = 3
        [[load]]
        name = "house"
        kind = { type = "resistive", power_w = 3000 }
        phase = "abc"
        [[tamper]]
        kind = "reversed_ct"
        phase = "a"
        from_s = 0
        to_s = 1
        [[tamper]]
        kind = "magnetic"
        from_s = 1
        to_s = 2
        current_factor = 0.5
        [[tamper]]
        kind = "cover_open"
        from_s = 1.5
        to_s = 1.7
    "#;
    let mut sim = Simulator::new(scenario(text), MeterPosition::House, None).unwrap();
    let signals: Vec<_> = sim.signals_between(0.0, 10.0).collect();
    assert_eq!(signals.len(), 4);
    assert_eq!(
        (signals[0].kind, signals[0].active, signals[0].t_s),
        (SignalKind::MagneticField, true, 1.0)
    );
    assert_eq!(
        (signals[1].kind, signals[1].active),
        (SignalKind::CoverOpen, true)
    );
    let (w, residual) = analyze(&mut sim, 1.0);
    let pa = mean(&w, |w| w.phases[0].p_w);
    assert!((pa + 1000.0).abs() < 0.5, "reversed phase a {pa}");
    assert!((mean(&w, |w| w.total.p_w) - 1000.0).abs() < 1.0);
    assert!(
        residual.unwrap() > 8.0,
        "a reversed CT unbalances the currents"
    );
    let (w, _) = analyze(&mut sim, 1.0);
    let p = mean(&w[1..], |w| w.total.p_w);
    assert!((p - 1500.0).abs() < 1.0, "magnet halves the reading: {p}");

    // The observer's meter is not tampered with.
    let mut obs = Simulator::new(scenario(text), MeterPosition::Observer, None).unwrap();
    assert_eq!(obs.signals_between(0.0, 10.0).count(), 0);
    let (w, _) = analyze(&mut obs, 1.0);
    assert!((mean(&w, |w| w.total.p_w) - 3000.0).abs() < 1.0);
}

#[test]
fn frequency_drift_noise_and_seed() {
    let text = r#"
        seed = 5
        [supply]
        frequency_drift_hz = 0.5
        drift_period_s = 4
        harmonics = [[5, 0.04]]
        [noise]
        voltage_v = 0.5
        current_a = 0.01
        [[load]]
        name = "heater"
        kind = { type = "resistive", power_w = 1000 }
    "#;
    let mut sim = Simulator::new(scenario(text), MeterPosition::House, None).unwrap();
    let (w, _) = analyze(&mut sim, 4.0);
    let fmax = w.iter().map(|w| w.freq_hz).fold(0.0, f64::max);
    let fmin = w.iter().map(|w| w.freq_hz).fold(100.0, f64::min);
    assert!(fmax > 50.4 && fmin < 49.6, "{fmin}..{fmax}");
    let vthd = mean(&w, |w| w.phases[0].v_thd_pct);
    assert!((vthd - 4.0).abs() < 0.1, "v thd {vthd}");

    let a = Simulator::new(scenario(text), MeterPosition::House, None)
        .unwrap()
        .generate(800);
    let b = Simulator::new(scenario(text), MeterPosition::House, None)
        .unwrap()
        .generate(800);
    let c = Simulator::new(scenario(text), MeterPosition::House, Some(6))
        .unwrap()
        .generate(800);
    assert_eq!(a, b);
    assert_ne!(a, c);
    // Chunking does not change the signal.
    let mut s = Simulator::new(scenario(text), MeterPosition::House, None).unwrap();
    let mut joined = s.generate(300).samples;
    joined.extend(s.generate(500).samples);
    assert_eq!(joined.len(), a.samples.len());
    let worst = joined
        .iter()
        .zip(&a.samples)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-9, "chunking changed a sample by {worst}");
}

#[test]
fn outage_and_schedule_and_end() {
    let text = r#"
        duration_s = 3.5
        [supply]
        outages = [[1.0, 1.5]]
        [[load]]
        name = "pump"
        kind = { type = "motor", power_w = 1000, inrush_factor = 5, inrush_s = 0.5 }
        [[load]]
        name = "kettle"
        kind = { type = "resistive", power_w = 2000 }
        on = [[2.5, 3.0]]
    "#;
    let mut sim = Simulator::new(scenario(text), MeterPosition::House, None).unwrap();
    let (w, _) = analyze(&mut sim, 10.0);
    assert_eq!(sim.frames_left(), Some(0));
    assert!(sim.generate(100).samples.is_empty());
    let at = |t: f64| w.iter().find(|w| w.t0_s >= t).unwrap();
    assert!(at(1.1).flags.no_voltage);
    // After the outage the motor starts again with its inrush.
    let restart = at(1.5);
    assert!(restart.t0_s < 1.8, "windows resume after the outage");
    assert!(
        restart.phases[0].i_rms > 1.3 * at(0.8).phases[0].i_rms,
        "inrush again: {} vs {}",
        restart.phases[0].i_rms,
        at(0.8).phases[0].i_rms
    );
    // Kettle on 2.5–3.0 s on top of the motor, whose inrush has mostly decayed by then
    // (1 + 4·e^(−t/0.5) times its running power: 150–300 W more at 2.6 s than at 3.1 s).
    let kettle = at(2.6).phases[0].p_w - at(3.1).phases[0].p_w;
    assert!(kettle > 2100.0 && kettle < 2300.0, "kettle {kettle}");
}

#[test]
fn bad_scenarios_are_rejected_with_the_field_named() {
    let cases = [
        ("phases = 2", "phases must be 1 or 3"),
        ("sample_rate_hz = 10", "sample_rate_hz"),
        (
            "[[load]]\nname = \"x\"\nkind = { type = \"motor\", power_w = 100, pf = 1.5 }",
            "load 1 (\"x\").pf",
        ),
        (
            "[[load]]\nname = \"x\"\nkind = { type = \"resistive\", power_w = 100 }\nphase = \"b\"",
            "only phase a",
        ),
        (
            "[[load]]\nname = \"x\"\nkind = { type = \"resistive\", power_w = 100 }\non = [[5, 1]]",
            "from < to",
        ),
        ("[supply]\nvoltage = 230", "unknown field"),
        (
            "[[load]]\nname = \"x\"\nkind = { type = \"toaster\", power_w = 1 }",
            "toaster",
        ),
    ];
    for (text, want) in cases {
        let err = Scenario::from_toml(text, "s.toml").unwrap_err().to_string();
        assert!(
            err.contains(want) && err.contains("s.toml"),
            "{text:?}: {err}"
        );
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn real_time_pacing_releases_chunks_at_their_end() {
    let sc = scenario(
        r#"
        duration_s = 1
        [[tamper]]
        kind = "cover_open"
        from_s = 0.3
        to_s = 0.5
        [[load]]
        name = "heater"
        kind = { type = "resistive", power_w = 100 }
        "#,
    );
    let sim = Simulator::new(sc, MeterPosition::House, None).unwrap();
    let mut src = SimulatorSource::new(sim, Pace::RealTime, 1600);
    let start = tokio::time::Instant::now();
    let mut kinds = Vec::new();
    while let Some(out) = src.next().await.unwrap() {
        let at = start.elapsed().as_secs_f64();
        match out {
            SourceOutput::Samples(c) => kinds.push(format!("chunk {:.1}@{at:.1}", c.t0_s)),
            SourceOutput::Signal(s) => kinds.push(format!("signal {}@{at:.1}", s.active)),
            SourceOutput::Measured(_) => unreachable!("simulator does not emit measurements"),
        }
    }
    assert_eq!(
        kinds,
        [
            "chunk 0.0@0.2",
            "signal true@0.3",
            "chunk 0.2@0.4",
            "signal false@0.5",
            "chunk 0.4@0.6",
            "chunk 0.6@0.8",
            "chunk 0.8@1.0",
        ]
    );
}

#[test]
fn bundled_scenarios_parse_and_the_theft_case_misses_17_8_percent() {
    for (name, _) in BUNDLED {
        let sc = Scenario::bundled(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        Simulator::new(sc, MeterPosition::House, None).unwrap();
    }
    assert!(
        Scenario::bundled("nope")
            .unwrap_err()
            .to_string()
            .contains("\"pv_house\"")
    );
    let run = |position| {
        let mut sim =
            Simulator::new(Scenario::bundled("bypass_theft").unwrap(), position, None).unwrap();
        let (w, _) = analyze(&mut sim, 3.5);
        // After the pump's start-up inrush has died away.
        let steady: Vec<_> = w.iter().filter(|w| w.t0_s > 2.5).copied().collect();
        mean(&steady, |w| w.total.p_w)
    };
    let (observer, house) = (run(MeterPosition::Observer), run(MeterPosition::House));
    let missing = (observer - house) / observer;
    assert!(
        (missing - 0.178).abs() < 0.002,
        "{observer} W vs {house} W: {missing}"
    );
}

#[test]
fn the_pv_house_exports_at_noon() {
    let mut sc = Scenario::bundled("pv_house").unwrap();
    sc.start_time_of_day_s = 46_800.0;
    let mut sim = Simulator::new(sc, MeterPosition::House, None).unwrap();
    let (w, _) = analyze(&mut sim, 1.0);
    let p = mean(&w, |w| w.total.p_w);
    assert!(p < -1000.0, "exporting at 13:00: {p} W");
}
