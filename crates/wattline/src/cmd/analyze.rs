//! `wattline analyze FILE`: metrology on a recorded waveform (DESIGN §3.2), as a table or JSON lines.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use metrology::{
    Analyzer, AnalyzerConfig, ClipLimits, EnergyRegisters, Layout, NominalFrequency, WindowFlags,
    WindowReport,
};
use serde::Serialize;
use waveform::{Format, ReadOptions, Waveform};

use super::{BadInput, Failure, Outcome, is_broken_pipe};

pub const EXAMPLES: &str = "\
Examples:
  wattline analyze testdata/pump_230v_pf08_8khz.csv
  wattline analyze testdata/three_phase_unbalanced_10khz.csv --rate 10000 --json
  wattline analyze testdata/pv_export_60hz_int16.wav --v-scale 400 --i-scale 20 --nominal 60

Input: CSV with a header row, columns v,i or va,vb,vc,ia,ib,ic[,in] and an optional t (seconds;
without it --rate is required); or WAV (PCM 16/24/32-bit or float) with the channels in the same
order. Output: one row per IEC 61000-4-30 window (10 cycles at 50 Hz, 12 at 60 Hz) and a summary
with the energy registers; --json prints one JSON object per line instead, with the harmonic
subgroups and angles of orders 0 to 50. Flags: short (fewer cycles than a window), no-voltage,
frequency out of range, too few samples per cycle, and clipped (a sample at an integer WAV
file's full scale).
Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad input.";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recording: a CSV or WAV file.
    pub file: PathBuf,
    /// Sample rate in Hz. Required for CSV without a t column; checked against t or the WAV
    /// header otherwise.
    #[arg(long, value_name = "HZ", value_parser = positive_number)]
    pub rate: Option<f64>,
    /// Multiply voltage samples by this (CSV: to volts; WAV: the voltage at full scale).
    #[arg(long, value_name = "X", default_value_t = 1.0, value_parser = nonzero_number)]
    pub v_scale: f64,
    /// Multiply current samples by this (CSV: to amperes; WAV: the current at full scale).
    #[arg(long, value_name = "X", default_value_t = 1.0, value_parser = nonzero_number)]
    pub i_scale: f64,
    /// Nominal mains frequency: sets the window length (10 cycles at 50 Hz, 12 at 60 Hz).
    #[arg(long, value_name = "HZ", default_value = "50", value_parser = ["50", "60"])]
    pub nominal: String,
    /// Print one JSON object per line (windows, then a summary) instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn positive_number(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("{text:?} is not a positive number")),
    }
}

fn nonzero_number(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() && x != 0.0 => Ok(x),
        _ => Err(format!("{text:?} is not a finite, non-zero number")),
    }
}

/// Frames handed to the analyser per call: big enough to amortise the call, small enough to
/// keep memory constant (8192 frames of 7 channels are 448 KiB).
const FRAMES_PER_PUSH: usize = 8192;

pub fn run(args: &Args) -> Outcome {
    let path = &args.file;
    let name = path.display();
    let file = File::open(path)
        .with_context(|| format!("cannot open {name}"))
        .bad_input()?;
    let size_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = progress_bar(size_bytes);
    let options = ReadOptions {
        rate_hz: args.rate,
        v_scale: args.v_scale,
        i_scale: args.i_scale,
    };
    let counted = Counted {
        inner: file,
        bar: bar.clone(),
    };
    let mut recording = Waveform::open(counted, &options).map_err(|e| reader_failure(path, e))?;
    let nominal = if args.nominal == "60" {
        NominalFrequency::Hz60
    } else {
        NominalFrequency::Hz50
    };
    let layout = recording.layout();
    let rate_hz = recording.sample_rate_hz();
    // Report window starts on the file's own time axis (a scope's t starts before the trigger).
    let start_s = recording.start_time_s().unwrap_or(0.0);
    let mut config = match layout {
        Layout::SinglePhase => AnalyzerConfig::single_phase(rate_hz, nominal),
        Layout::ThreePhaseFourWire { neutral_measured } => {
            AnalyzerConfig::three_phase(rate_hz, nominal, neutral_measured)
        }
    };
    // An integer WAV file says where its converter saturated: windows holding such a sample are
    // flagged `clipped`. CSV numbers carry no full scale.
    if let Some((v_abs, i_abs)) = recording.saturation() {
        config.clip = ClipLimits { v_abs, i_abs };
    }
    let mut analyzer = Analyzer::new(config)
        .map_err(|e| anyhow!("{name}: a sample rate of {rate_hz} Hz cannot be analysed: {e}"))
        .bad_input()?;

    let stdout = std::io::stdout();
    let mut out = Output {
        sink: std::io::BufWriter::with_capacity(1 << 16, stdout.lock()),
        bar: bar.clone(),
        json: args.json,
        text: String::new(),
    };
    let mut summary = Summary::new(layout);
    if !args.json {
        out.text.push_str(&describe(
            path,
            recording.format(),
            layout,
            rate_hz,
            nominal,
        ));
        table_header(&mut out.text, layout);
    }

    let channels = layout.channels();
    let mut frames: Vec<f64> = Vec::with_capacity(FRAMES_PER_PUSH * channels);
    let mut windows: Vec<WindowReport> = Vec::new();
    let mut samples: u64 = 0;
    let read_error = loop {
        frames.clear();
        match recording.read_frames(&mut frames, FRAMES_PER_PUSH) {
            Ok(0) => break None,
            Ok(n) => samples += n as u64,
            Err(e) => break Some(e),
        }
        analyzer
            .push_frames(&frames, |report| windows.push(*report))
            .with_context(|| format!("{name}: analysis failed"))?;
        if !emit(&mut out, &mut summary, &mut windows, start_s)? {
            return Ok(());
        }
    };
    // Analyse what came before a bad line, then report the line: the windows printed so far
    // are true, and the error says exactly where the file went wrong.
    analyzer
        .finish(|report| windows.push(*report))
        .with_context(|| format!("{name}: analysis failed"))?;
    if !emit(&mut out, &mut summary, &mut windows, start_s)? {
        return Ok(());
    }
    if let Some(e) = read_error {
        let _ = out.flush();
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
        return Err(reader_failure(path, e));
    }
    let energy = *analyzer.energy();
    summary.write(&mut out, &energy, samples, rate_hz);
    if !out.flush()? {
        return Ok(());
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    summary.diagnose(path, samples as f64 / rate_hz, rate_hz, nominal)
}

/// A reader failure as a CLI failure: the file's name, then where and what.
fn reader_failure(path: &Path, e: waveform::Error) -> Failure {
    let bad = e.is_bad_input();
    let error = anyhow!("{}: {e}", path.display());
    if bad {
        Failure::BadInput(error)
    } else {
        Failure::Runtime(error)
    }
}

/// A byte-count progress bar on stderr when it is a terminal; none in a pipe.
fn progress_bar(size_bytes: u64) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() || size_bytes == 0 {
        return None;
    }
    let bar = ProgressBar::with_draw_target(Some(size_bytes), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{spinner} analysing [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}

/// Counts the bytes read into the progress bar.
struct Counted<R> {
    inner: R,
    bar: Option<ProgressBar>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(bar) = &self.bar {
            bar.inc(n as u64);
        }
        Ok(n)
    }
}

/// Buffered stdout that steps around the progress bar and treats a closed pipe as the end.
struct Output<W: Write> {
    sink: W,
    bar: Option<ProgressBar>,
    json: bool,
    text: String,
}

impl<W: Write> Output<W> {
    /// Writes the pending text; `Ok(false)` when stdout was closed (e.g. piped into `head`).
    fn write_pending(&mut self) -> Result<bool, Failure> {
        if self.text.is_empty() {
            return Ok(true);
        }
        let result = match &self.bar {
            // Hide the bar while writing so rows on a terminal do not interleave with it.
            Some(bar) => bar.suspend(|| {
                self.sink
                    .write_all(self.text.as_bytes())
                    .and_then(|()| self.sink.flush())
            }),
            None => self.sink.write_all(self.text.as_bytes()),
        };
        self.text.clear();
        match result {
            Ok(()) => Ok(true),
            Err(e) if is_broken_pipe(&e) => Ok(false),
            Err(e) => Err(Failure::Runtime(anyhow!("cannot write the output: {e}"))),
        }
    }

    fn flush(&mut self) -> Result<bool, Failure> {
        if !self.write_pending()? {
            return Ok(false);
        }
        match self.sink.flush() {
            Ok(()) => Ok(true),
            Err(e) if is_broken_pipe(&e) => Ok(false),
            Err(e) => Err(Failure::Runtime(anyhow!("cannot write the output: {e}"))),
        }
    }
}

/// Prints and accumulates the windows the analyser produced; `Ok(false)` when stdout closed.
fn emit<W: Write>(
    out: &mut Output<W>,
    summary: &mut Summary,
    windows: &mut Vec<WindowReport>,
    start_s: f64,
) -> Result<bool, Failure> {
    for mut report in windows.drain(..) {
        report.t0_s += start_s;
        summary.add(&report);
        if out.json {
            let line = WindowLine {
                kind: "window",
                report: &report,
            };
            let json = serde_json::to_string(&line)
                .map_err(|e| Failure::Runtime(anyhow!("cannot encode a window as JSON: {e}")))?;
            out.text.push_str(&json);
            out.text.push('\n');
        } else {
            table_rows(&mut out.text, &report);
        }
    }
    out.write_pending()
}

#[derive(Serialize)]
struct WindowLine<'a> {
    kind: &'static str,
    #[serde(flatten)]
    report: &'a WindowReport,
}

fn describe(
    path: &Path,
    format: Format,
    layout: Layout,
    rate_hz: f64,
    nominal: NominalFrequency,
) -> String {
    let kind = match format {
        Format::Csv => "CSV",
        Format::Wav => "WAV",
    };
    let wiring = match layout {
        Layout::SinglePhase => "single phase",
        Layout::ThreePhaseFourWire {
            neutral_measured: true,
        } => "three phase, four wire, measured neutral",
        Layout::ThreePhaseFourWire {
            neutral_measured: false,
        } => "three phase, four wire",
    };
    let legend = if layout.phases() > 1 {
        "Σ rows: totals; V and I are the effective V_e and I_e, S is S_e (IEEE 1459-2010 §3.2.2)\n"
    } else {
        ""
    };
    format!(
        "{}: {kind}, {wiring} ({}), {} samples/s, {} Hz nominal ({} cycles per window)\n{legend}\n",
        path.display(),
        layout.channel_names().join(", "),
        trim_number(rate_hz),
        nominal.hz(),
        nominal.cycles_per_window(),
    )
}

/// A rate without needless decimals: 8000, 33333.333.
fn trim_number(x: f64) -> String {
    let text = format!("{x:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

const TABLE_HEADER: &str = "      t0_s  cyc    f_Hz  ph    V_rms    I_rms       P_W     Q_var      S_VA      PF     DPF   angle°  THD_V%  THD_I%  flags";

fn table_header(text: &mut String, _layout: Layout) {
    text.push_str(TABLE_HEADER);
    text.push('\n');
}

fn table_rows(text: &mut String, w: &WindowReport) {
    use std::fmt::Write as _;
    let flags = flag_names(&w.flags);
    for (k, p) in w.phases.iter().enumerate() {
        let phase = ["a", "b", "c"][k.min(2)];
        let (t0, f) = if k == 0 {
            (
                format!("{:10.3} {:4}", w.t0_s, w.cycles),
                format!("{:7.3}", w.freq_hz),
            )
        } else {
            (" ".repeat(15), " ".repeat(7))
        };
        let start = text.len();
        let _ = writeln!(
            text,
            "{t0} {f}  {phase:>2} {:8.2} {:8.4} {:9.2} {:9.2} {:9.2} {:7.4} {:7.4} {:8.2} {:7.2} {:7.2}  {}",
            p.v_rms,
            p.i_rms,
            p.p_w,
            p.q_var,
            p.s_va,
            p.pf,
            p.dpf,
            p.angle_deg,
            p.v_thd_pct,
            p.i_thd_pct,
            if k == 0 { flags.as_str() } else { "" },
        );
        trim_line_end(text, start);
    }
    if w.phases.len() > 1 {
        let t = &w.total;
        let mut extra = String::new();
        if let Some(i_n) = w.i_n_rms {
            let _ = write!(extra, "In {i_n:.3} A");
        }
        if let (Some(v_u), Some(i_u)) = (w.v_unbalance_pct, w.i_unbalance_pct) {
            let _ = write!(extra, ", unbalance V {v_u:.2} % I {i_u:.2} %");
        }
        let start = text.len();
        let _ = writeln!(
            text,
            "{:23}  {:>2} {:8.2} {:8.4} {:9.2} {:9.2} {:9.2} {:7.4} {:>7} {:>8} {:>7} {:>7}  {extra}",
            "", "Σ", t.v_e_rms, t.i_e_rms, t.p_w, t.q_var, t.s_va, t.pf, "", "", "", "",
        );
        trim_line_end(text, start);
    }
}

/// Removes the spaces a line of `text` starting at `start` ends with (an empty flags column).
fn trim_line_end(text: &mut String, start: usize) {
    let line = text[start..].trim_end();
    let keep = start + line.len();
    text.truncate(keep);
    text.push('\n');
}

fn flag_names(flags: &WindowFlags) -> String {
    let names = [
        (flags.short, "short"),
        (flags.clipped, "clipped"),
        (flags.no_voltage, "no-voltage"),
        (flags.frequency_out_of_range, "freq-out-of-range"),
        (flags.too_few_samples_per_cycle, "few-samples-per-cycle"),
    ];
    names
        .iter()
        .filter(|(set, _)| *set)
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join(",")
}

/// Duration-weighted sums of one phase's quantities.
#[derive(Debug, Default, Clone, Copy)]
struct PhaseSums {
    v_rms: f64,
    i_rms: f64,
    p_w: f64,
    q_var: f64,
    s_va: f64,
    p1_w: f64,
    s1_va: f64,
    v_thd_pct: f64,
    i_thd_pct: f64,
}

/// What the summary line needs, accumulated window by window in constant memory.
struct Summary {
    layout: Layout,
    windows: u64,
    flagged: u64,
    /// Windows in which a voltage was present but no mains cycle was found, or the frequency
    /// was out of range: the signs of a wrong `--rate` or `--nominal`.
    no_cycles_with_voltage: u64,
    out_of_range: u64,
    few_samples: u64,
    duration_s: f64,
    cycles: u64,
    phases: [PhaseSums; 3],
    total: PhaseSums,
    max_v_rms: f64,
}

#[derive(Serialize)]
struct SummaryLine<'a> {
    kind: &'static str,
    windows: u64,
    flagged_windows: u64,
    duration_s: f64,
    samples: u64,
    freq_hz: f64,
    phases: Vec<PhaseMean<'a>>,
    total: TotalMean,
    import_wh: f64,
    export_wh: f64,
    q1_varh: f64,
    q2_varh: f64,
    q3_varh: f64,
    q4_varh: f64,
}

#[derive(Serialize)]
struct PhaseMean<'a> {
    phase: &'a str,
    v_rms: f64,
    i_rms: f64,
    p_w: f64,
    q_var: f64,
    s_va: f64,
    pf: f64,
    dpf: f64,
    v_thd_pct: f64,
    i_thd_pct: f64,
}

#[derive(Serialize)]
struct TotalMean {
    p_w: f64,
    q_var: f64,
    s_va: f64,
    pf: f64,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a / b }
}

impl Summary {
    fn new(layout: Layout) -> Self {
        Summary {
            layout,
            windows: 0,
            flagged: 0,
            no_cycles_with_voltage: 0,
            out_of_range: 0,
            few_samples: 0,
            duration_s: 0.0,
            cycles: 0,
            phases: [PhaseSums::default(); 3],
            total: PhaseSums::default(),
            max_v_rms: 0.0,
        }
    }

    fn add(&mut self, w: &WindowReport) {
        let d = w.duration_s;
        self.windows += 1;
        self.flagged += u64::from(w.flags.any());
        self.duration_s += d;
        self.cycles += u64::from(w.cycles);
        if w.flags.no_voltage {
            let v_max = w.phases.iter().map(|p| p.v_rms).fold(0.0, f64::max);
            if v_max >= 5.0 {
                self.no_cycles_with_voltage += 1;
            }
        }
        self.out_of_range += u64::from(w.flags.frequency_out_of_range);
        self.few_samples += u64::from(w.flags.too_few_samples_per_cycle);
        for (sums, p) in self.phases.iter_mut().zip(w.phases.iter()) {
            sums.v_rms += p.v_rms * d;
            sums.i_rms += p.i_rms * d;
            sums.p_w += p.p_w * d;
            sums.q_var += p.q_var * d;
            sums.s_va += p.s_va * d;
            sums.p1_w += p.p1_w * d;
            sums.s1_va += p.s1_va * d;
            sums.v_thd_pct += p.v_thd_pct * d;
            sums.i_thd_pct += p.i_thd_pct * d;
            self.max_v_rms = self.max_v_rms.max(p.v_rms);
        }
        self.total.p_w += w.total.p_w * d;
        self.total.q_var += w.total.q_var * d;
        self.total.s_va += w.total.s_va * d;
    }

    fn line<'a>(&self, energy: &EnergyRegisters, samples: u64) -> SummaryLine<'a> {
        let d = self.duration_s;
        let mean = |x: f64| ratio(x, d);
        let phases = self.phases[..self.layout.phases()]
            .iter()
            .zip(["a", "b", "c"])
            .map(|(s, phase)| PhaseMean {
                phase,
                v_rms: mean(s.v_rms),
                i_rms: mean(s.i_rms),
                p_w: mean(s.p_w),
                q_var: mean(s.q_var),
                s_va: mean(s.s_va),
                // The mean PF is the ratio of the mean powers, not the mean of per-window ratios.
                pf: ratio(s.p_w, s.s_va),
                dpf: ratio(s.p1_w, s.s1_va),
                v_thd_pct: mean(s.v_thd_pct),
                i_thd_pct: mean(s.i_thd_pct),
            })
            .collect();
        SummaryLine {
            kind: "summary",
            windows: self.windows,
            flagged_windows: self.flagged,
            duration_s: d,
            samples,
            freq_hz: ratio(self.cycles as f64, d),
            phases,
            total: TotalMean {
                p_w: mean(self.total.p_w),
                q_var: mean(self.total.q_var),
                s_va: mean(self.total.s_va),
                pf: ratio(self.total.p_w, self.total.s_va),
            },
            import_wh: energy.import_wh(),
            export_wh: energy.export_wh(),
            q1_varh: energy.q1_varh(),
            q2_varh: energy.q2_varh(),
            q3_varh: energy.q3_varh(),
            q4_varh: energy.q4_varh(),
        }
    }

    fn write<W: Write>(
        &self,
        out: &mut Output<W>,
        energy: &EnergyRegisters,
        samples: u64,
        rate_hz: f64,
    ) {
        use std::fmt::Write as _;
        let line = self.line(energy, samples);
        if out.json {
            // Plain numbers and strings: serialising them cannot fail.
            if let Ok(json) = serde_json::to_string(&line) {
                out.text.push_str(&json);
                out.text.push('\n');
            }
            return;
        }
        let text = &mut out.text;
        let _ = writeln!(
            text,
            "\nsummary: {} window(s), {} flagged; {:.3} s, {} samples at {} samples/s; mean frequency {:.3} Hz",
            line.windows,
            line.flagged_windows,
            line.duration_s,
            samples,
            trim_number(rate_hz),
            line.freq_hz,
        );
        // The window table's columns from `ph` on, without the angle and flags.
        let columns = TABLE_HEADER[25..]
            .trim_end_matches("flags")
            .trim_end()
            .replace("angle°", "      ");
        let _ = writeln!(text, "{:<25}{columns}", "  mean");
        for p in &line.phases {
            let _ = writeln!(
                text,
                "  {:21}  {:>2} {:8.2} {:8.4} {:9.2} {:9.2} {:9.2} {:7.4} {:7.4} {:>8} {:7.2} {:7.2}",
                "",
                p.phase,
                p.v_rms,
                p.i_rms,
                p.p_w,
                p.q_var,
                p.s_va,
                p.pf,
                p.dpf,
                "",
                p.v_thd_pct,
                p.i_thd_pct,
            );
        }
        if line.phases.len() > 1 {
            let t = &line.total;
            let _ = writeln!(
                text,
                "  {:21}  {:>2} {:8} {:8} {:9.2} {:9.2} {:9.2} {:7.4}",
                "", "Σ", "", "", t.p_w, t.q_var, t.s_va, t.pf,
            );
        }
        let _ = writeln!(
            text,
            "\nenergy: import {:.4} Wh, export {:.4} Wh; reactive Q1 {:.4}, Q2 {:.4}, Q3 {:.4}, Q4 {:.4} varh",
            line.import_wh, line.export_wh, line.q1_varh, line.q2_varh, line.q3_varh, line.q4_varh,
        );
        if self.few_samples > 0 {
            let _ = writeln!(
                text,
                "note: {} window(s) had fewer than 20 samples per cycle; harmonics and the fundamental are less accurate",
                self.few_samples
            );
        }
    }

    /// Turns a recording in which no window found the mains cycle into an error (exit 2): the
    /// rate or the nominal frequency is almost certainly wrong.
    fn diagnose(
        &self,
        path: &Path,
        length_s: f64,
        rate_hz: f64,
        nominal: NominalFrequency,
    ) -> Outcome {
        let name = path.display();
        let f = nominal.hz();
        let rate = trim_number(rate_hz);
        // A whole cycle between two rising zero crossings needs up to two cycles of signal.
        if self.windows == 0 || (self.cycles == 0 && length_s < 2.0 / f) {
            return Err(Failure::BadInput(anyhow!(
                "{name}: the recording lasts {:.1} ms at {rate} samples/s, too short to hold a whole {f} Hz cycle",
                length_s * 1e3
            )));
        }
        if self.no_cycles_with_voltage == self.windows {
            return Err(Failure::BadInput(anyhow!(
                "{name}: a voltage is present but no {f} Hz cycle was found at {rate} samples/s; check --rate and --nominal"
            )));
        }
        if self.out_of_range == self.windows {
            return Err(Failure::BadInput(anyhow!(
                "{name}: every window's frequency lies outside {f} Hz ± 15 % at {rate} samples/s; check --rate and --nominal"
            )));
        }
        Ok(())
    }
}
