//! `wattline analyze` on the bundled recordings (known answers) and on bad input.

use serde_json::Value;

use crate::util::{Scratch, close, testdata, wattline};

fn f(v: &Value, path: &[&str]) -> f64 {
    let mut x = v;
    for key in path {
        x = match key.parse::<usize>() {
            Ok(i) => &x[i],
            Err(_) => &x[*key],
        };
    }
    x.as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number in {v}"))
}

/// Runs `analyze --json` and splits the output into windows and the summary.
fn analyze_json(args: &[&str]) -> (Vec<Value>, Value) {
    let mut all = vec!["analyze", "--json"];
    all.extend_from_slice(args);
    let run = wattline(&all);
    assert_eq!(run.code, 0, "{all:?}: {}", run.stderr);
    let mut lines = run.json_lines();
    let summary = lines.pop().expect("a summary line");
    assert_eq!(summary["kind"], "summary");
    assert!(lines.iter().all(|l| l["kind"] == "window"));
    assert_eq!(summary["windows"].as_u64(), Some(lines.len() as u64));
    (lines, summary)
}

#[test]
fn pump_recording_gives_seed_000_answers() {
    // testdata/pump_230v_pf08_8khz.csv: P = P1 = 864 W and Q1 = 648 var exactly by construction
    // (no harmonic order in both V and I), V1 = 230 V, 2 % 5th in V, 8 % 3rd + 3 % 7th in I.
    let (windows, summary) = analyze_json(&[&testdata("pump_230v_pf08_8khz.csv")]);
    // The analyser starts at the first tracked cycle and ends with the trailing whole cycles
    // as a short window: 14 full windows and one of 5 cycles.
    assert_eq!(windows.len(), 15);
    for (k, w) in windows.iter().enumerate() {
        let short = k == windows.len() - 1;
        assert_eq!(w["flags"]["short"], short);
        assert_eq!(w["cycles"], if short { 5 } else { 10 });
        close(
            "duration",
            f(w, &["duration_s"]),
            if short { 0.1 } else { 0.2 },
            1e-6,
        );
        close("freq", f(w, &["freq_hz"]), 50.0, 0.001);
        let p = &w["phases"][0];
        assert_eq!(p["phase"], "a");
        close("p_w", f(p, &["p_w"]), 864.0, 0.5);
        close("q_var", f(p, &["q_var"]), 648.0, 0.5);
        close("dpf", f(p, &["dpf"]), 0.8, 0.0005);
        close("angle", f(p, &["angle_deg"]), 36.87, 0.03);
        let v_rms = 230.0 * (1.0f64 + 0.02 * 0.02).sqrt();
        close("v_rms", f(p, &["v_rms"]), v_rms, 0.05);
        let i_rms = 864.0 / 184.0 * (1.0f64 + 0.08 * 0.08 + 0.03 * 0.03).sqrt();
        close("i_rms", f(p, &["i_rms"]), i_rms, 0.002);
        close("pf", f(p, &["pf"]), 864.0 / (v_rms * i_rms), 0.0005);
        close("v_thd", f(p, &["v_thd_pct"]), 2.0, 0.05);
        close("i_thd", f(p, &["i_thd_pct"]), (64.0f64 + 9.0).sqrt(), 0.05);
        close("h5", f(p, &["v_harmonics", "5"]), 4.6, 0.05);
        assert_eq!(p["v_harmonics"].as_array().map(Vec::len), Some(51));
        // The harmonic phasors' angles, order by order; the fundamental's is V1's.
        for key in ["v_harmonic_angles_deg", "i_harmonic_angles_deg"] {
            assert_eq!(p[key].as_array().map(Vec::len), Some(51), "{key}");
        }
        close(
            "v1 angle",
            f(p, &["v_harmonic_angles_deg", "1"]),
            f(p, &["v1_phase_deg"]),
            1e-3,
        );
        close(
            "i1 angle",
            f(p, &["i_harmonic_angles_deg", "1"]),
            f(p, &["i1_phase_deg"]),
            1e-3,
        );
        close("total p", f(w, &["total", "p_w"]), f(p, &["p_w"]), 1e-9);
    }
    // The registers hold the energy of the analysed windows.
    let hours = f(&summary, &["duration_s"]) / 3600.0;
    close("duration", hours * 3600.0, 2.9, 1e-6);
    close("import", f(&summary, &["import_wh"]), 864.0 * hours, 1e-4);
    close("q1", f(&summary, &["q1_varh"]), 648.0 * hours, 1e-4);
    for register in ["export_wh", "q2_varh", "q3_varh", "q4_varh"] {
        assert_eq!(f(&summary, &[register]), 0.0, "{register}");
    }
    close("mean p", f(&summary, &["phases", "0", "p_w"]), 864.0, 0.2);
    close(
        "mean dpf",
        f(&summary, &["phases", "0", "dpf"]),
        0.8,
        0.0005,
    );
    assert_eq!(summary["samples"], 24_000);
}

#[test]
fn pump_table_is_readable() {
    let run = wattline(["analyze", &testdata("pump_230v_pf08_8khz.csv")]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("single phase (v, i), 8000 samples/s"));
    assert!(run.stdout.contains("P_W"));
    assert!(run.stdout.contains("summary: 15 window(s), 1 flagged"));
    assert!(
        run.stdout.contains("energy: import 0.6960 Wh"),
        "{}",
        run.stdout
    );
    // A pipe gets no progress bar.
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

#[test]
fn three_phase_unbalanced_with_measured_neutral() {
    let file = testdata("three_phase_unbalanced_10khz.csv");
    let run = wattline(["analyze", &file]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--rate"), "{}", run.stderr);

    let (windows, summary) = analyze_json(&[&file, "--rate", "10000"]);
    assert_eq!(windows.len(), 10);
    // Per phase: V·I·cos θ1 and V·I·sin θ1 (the 3rd-harmonic currents meet no 3rd-harmonic
    // voltage, so they add no power).
    let expected = [
        (230.0, 10.0, 0.95f64.acos()),
        (228.0, 6.0, 0.85f64.acos()),
        (232.0, 3.0, -(0.98f64.acos())),
    ];
    let w = &windows[3];
    for (k, (v, i, theta)) in expected.iter().enumerate() {
        let p = &w["phases"][k];
        assert_eq!(p["phase"], ["a", "b", "c"][k]);
        close("p", f(p, &["p_w"]), v * i * theta.cos(), 0.005 * v * i);
        close("q", f(p, &["q_var"]), v * i * theta.sin(), 0.005 * v * i);
        close("v", f(p, &["v_rms"]), *v, 0.05);
    }
    let p_total: f64 = expected.iter().map(|(v, i, t)| v * i * t.cos()).sum();
    close("total p", f(w, &["total", "p_w"]), p_total, 5.0);
    assert!(
        f(w, &["i_n_rms"]) > 1.0,
        "unbalanced loads and 3rd harmonics load the neutral"
    );
    assert!(f(w, &["i_unbalance_pct"]) > 10.0);
    assert!(f(w, &["v_unbalance_pct"]) < 2.0);
    let hours = f(&summary, &["duration_s"]) / 3600.0;
    close(
        "import",
        f(&summary, &["import_wh"]),
        p_total * hours,
        0.005,
    );
    assert_eq!(summary["phases"].as_array().map(Vec::len), Some(3));
}

#[test]
fn wav_pv_export_is_quadrant_ii() {
    let (windows, summary) = analyze_json(&[
        &testdata("pv_export_60hz_int16.wav"),
        "--v-scale",
        "400",
        "--i-scale",
        "20",
        "--nominal",
        "60",
    ]);
    assert_eq!(windows.len(), 15, "3 s of 12-cycle windows at 60 Hz");
    for w in &windows {
        let short = w["flags"]["short"] == true;
        assert!(short || w["cycles"] == 12);
        close("freq", f(w, &["freq_hz"]), 60.0, 0.001);
        let p = &w["phases"][0];
        close("p", f(p, &["p_w"]), -2500.0, 5.0);
        close("q", f(p, &["q_var"]), 2500.0 * 0.98f64.acos().tan(), 5.0);
        close("v", f(p, &["v_rms"]), 240.0, 0.2);
    }
    assert_eq!(f(&summary, &["import_wh"]), 0.0);
    let hours = f(&summary, &["duration_s"]) / 3600.0;
    close("export", f(&summary, &["export_wh"]), 2500.0 * hours, 0.005);
    assert!(f(&summary, &["q2_varh"]) > 0.4);
}

#[test]
fn three_cycle_scope_capture_is_one_short_window() {
    let (windows, summary) = analyze_json(&[&testdata("scope_3cycles_resistive.csv")]);
    assert_eq!(windows.len(), 1, "{windows:?}");
    let w = &windows[0];
    assert_eq!(w["flags"]["short"], true);
    assert_eq!(w["cycles"], 3);
    // On the capture's own time axis: the first whole cycle starts at the rising zero crossing
    // 20 ms before the trigger.
    close("t0", f(w, &["t0_s"]), -0.020, 5e-4);
    let p = &w["phases"][0];
    close("p", f(p, &["p_w"]), 120.0, 0.6);
    close("pf", f(p, &["pf"]), 1.0, 0.002);
    close("v", f(p, &["v_rms"]), 240.0, 0.5);
    assert_eq!(summary["flagged_windows"], 1);
}

/// Runs `analyze` on a scratch file and returns (exit code, stderr).
fn analyze_bad(name: &str, content: &[u8], extra: &[&str]) -> (i32, String, String) {
    let scratch = Scratch::new();
    let path = scratch.file(name, content);
    let mut args = vec!["analyze", path.as_str()];
    args.extend_from_slice(extra);
    let run = wattline(&args);
    (run.code, run.stderr, path)
}

#[test]
fn bad_csv_cells_name_file_line_and_column() {
    let cases: &[(&[u8], &[&str], &str)] = &[
        (
            b"v,i\n1,2\n3,abc\n",
            &["--rate", "8000"],
            "line 3, column 2 (i): \"abc\" is not a number",
        ),
        (
            b"v,i\nNaN,2\n",
            &["--rate", "8000"],
            "line 2, column 1 (v): \"NaN\" is not a finite number",
        ),
        (
            b"v,i\n1,2\n3\n",
            &["--rate", "8000"],
            "line 3, column 2 (i): the row has 1 cells but the header has 2 columns",
        ),
        (
            b"v,i,w\n1,2,3\n",
            &["--rate", "8000"],
            "line 1, column 3: unknown column \"w\"",
        ),
        (
            b"v,v\n",
            &["--rate", "8000"],
            "line 1, column 2: column \"v\" appears twice",
        ),
        (
            b"va,vb,vc,ia,ib\n",
            &["--rate", "8000"],
            "line 1: the header lacks column(s) ic",
        ),
        (b"", &["--rate", "8000"], "the recording holds no samples"),
        (
            b"v,i\n",
            &["--rate", "8000"],
            "the recording holds no samples",
        ),
        (
            b"t,v,i\n0,1,2\n0.001,1,2\n0.0015,1,2\n",
            &[],
            "line 4, column 1 (t): the time step is",
        ),
        (
            b"t,v,i\n0,1,2\n0.001,1,2\n0.0005,1,2\n",
            &[],
            "line 4, column 1 (t): time goes from",
        ),
    ];
    for (content, extra, message) in cases {
        let (code, stderr, path) = analyze_bad("bad.csv", content, extra);
        assert_eq!(code, 2, "{message}: {stderr}");
        let expected = format!("error: {path}: {message}");
        assert!(
            stderr.starts_with(&expected),
            "expected {expected:?}\n     got {stderr:?}"
        );
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
}

#[test]
fn a_bad_row_late_in_a_file_is_reported_after_the_good_windows() {
    // Beyond the reader's look-ahead (65536 rows), so analysis has started when it is found.
    let mut csv = String::from("t,v,i\n");
    for n in 0..80_000 {
        let t = n as f64 / 8000.0;
        let x = (std::f64::consts::TAU * 50.0 * t).sin();
        csv.push_str(&format!("{t:.6},{:.3},{:.4}\n", 325.0 * x, 5.0 * x));
    }
    csv.push_str("10.000000,1,x\n");
    let scratch = Scratch::new();
    let path = scratch.file("late.csv", &csv);
    let run = wattline(["analyze", "--json", path.as_str()]);
    assert_eq!(run.code, 2);
    assert_eq!(
        run.stderr,
        format!("error: {path}: line 80002, column 3 (i): \"x\" is not a number\n")
    );
    assert!(run.json_lines().len() >= 45, "the good 10 s were analysed");
}

#[test]
fn missing_file_and_wrong_rates_are_bad_input() {
    let run = wattline(["analyze", "no/such/file.csv"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .starts_with("error: cannot open no/such/file.csv: "),
        "{}",
        run.stderr
    );

    // The pump file's t column says 8 kHz.
    let pump = testdata("pump_230v_pf08_8khz.csv");
    let run = wattline(["analyze", &pump, "--rate", "44100"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("--rate 44100 Hz disagrees with the file's own rate of 8000"),
        "{}",
        run.stderr
    );

    // The three-phase file really is 10 kHz: a rate ten times off finds no mains cycle.
    let three = testdata("three_phase_unbalanced_10khz.csv");
    for rate in ["1000", "100000"] {
        let run = wattline(["analyze", &three, "--rate", rate, "--json"]);
        assert_eq!(run.code, 2, "--rate {rate}: {}", run.stderr);
        assert!(
            run.stderr.contains("check --rate"),
            "--rate {rate}: {}",
            run.stderr
        );
    }
    // Fewer samples than two cycles: said plainly, not blamed on the rate.
    let scratch = Scratch::new();
    let tiny = scratch.file("tiny.csv", "v,i\n0,0\n100,1\n200,2\n");
    let run = wattline(["analyze", &tiny, "--rate", "8000"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("too short to hold a whole 50 Hz cycle"),
        "{}",
        run.stderr
    );

    let run = wattline(["analyze", &three, "--rate", "50"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("50 Hz"), "{}", run.stderr);
}

/// An integer WAV file's largest code is where its converter saturated: windows holding such a
/// sample are flagged `clipped`, the others are not. A hundred frames of the bundled recording's
/// voltage are set to +full scale around t = 1.5 s.
#[test]
fn saturated_wav_samples_flag_their_windows_clipped() {
    let mut wav = std::fs::read(testdata("pv_export_60hz_int16.wav")).expect("bundled wav");
    assert_eq!(&wav[36..40], b"data", "a 44-byte header");
    let (first, count) = (12_000usize, 100usize);
    for frame in first..first + count {
        let at = 44 + 4 * frame; // frames of (v, i) as 16-bit samples
        wav[at..at + 2].copy_from_slice(&i16::MAX.to_le_bytes());
    }
    let scratch = Scratch::new();
    let path = scratch.file("clipped.wav", &wav);
    let scales = ["--v-scale", "400", "--i-scale", "20", "--nominal", "60"];
    let mut args = vec![path.as_str()];
    args.extend_from_slice(&scales);
    let (windows, _) = analyze_json(&args);
    let (t_first, t_last) = (first as f64 / 8000.0, (first + count - 1) as f64 / 8000.0);
    let mut flagged = 0;
    for w in &windows {
        let (t0, t1) = (f(w, &["t0_s"]), f(w, &["t0_s"]) + f(w, &["duration_s"]));
        let holds = t0 <= t_last && t1 >= t_first;
        assert_eq!(w["flags"]["clipped"], holds, "window at {t0} s");
        flagged += usize::from(holds);
    }
    assert!(flagged >= 1);
    // The untouched recording has no clipped window, and CSV numbers carry no full scale.
    let mut args = vec![testdata("pv_export_60hz_int16.wav")];
    args.extend(scales.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (windows, _) = analyze_json(&args);
    assert!(windows.iter().all(|w| w["flags"]["clipped"] == false));
}

#[test]
fn bad_wav_files_name_the_byte() {
    let wav = std::fs::read(testdata("pv_export_60hz_int16.wav")).expect("bundled wav");
    let (code, stderr, path) = analyze_bad("cut.wav", &wav[..30], &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with(&format!("error: {path}: byte 30: the file ends inside")),
        "{stderr}"
    );
    let mut mono = wav.clone();
    mono[22] = 1; // one channel
    let (code, stderr, _) = analyze_bad("mono.wav", &mono, &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("byte 22: 1 channels do not match a layout"),
        "{stderr}"
    );
}

#[test]
fn generator_reproduces_the_bundled_recordings() {
    // The test data is made by `wattline make-testdata`, not by hand: regenerating it must give
    // the same bytes.
    let scratch = Scratch::new();
    let run = wattline([
        "make-testdata",
        "--out",
        scratch.dir.to_str().expect("utf-8 temp dir"),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for name in [
        "pump_230v_pf08_8khz.csv",
        "three_phase_unbalanced_10khz.csv",
        "pv_export_60hz_int16.wav",
        "scope_3cycles_resistive.csv",
    ] {
        let made = std::fs::read(scratch.dir.join(name)).expect("generated file");
        let bundled = std::fs::read(testdata(name)).expect("bundled file");
        assert!(
            made == bundled,
            "{name} differs from what make-testdata writes"
        );
    }
}
