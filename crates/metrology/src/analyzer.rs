//! The streaming analyzer: buffers calibrated samples, tracks cycles, cuts gapless windows and
//! hands each window's report to the caller. All memory is allocated in [`Analyzer::new`].

use alloc::vec;
use alloc::vec::Vec;

use crate::calibration::PhaseCalibration;
use crate::config::{AnalyzerConfig, Layout};
use crate::energy::EnergyRegisters;
use crate::error::{Error, ErrorKind};
use crate::report::{WindowFlags, WindowReport};
use crate::tracker::{Tracker, raw_crossings};
use crate::window::{Span, WindowEngine};

/// Samples needed after a window's end (4-point interpolation reaches two samples past the last
/// grid point; one more for the boundary weight).
const MARGIN: f64 = 3.0;
/// Samples kept before a window's start for the interpolation.
const HISTORY: usize = 4;
/// Below this many samples per cycle a window is flagged `too_few_samples_per_cycle`.
const MIN_SAMPLES_PER_CYCLE: f64 = 20.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lock {
    /// No window yet: waiting for the first cycle boundary.
    NotStarted,
    /// The current window starts on a cycle boundary.
    Locked,
    /// No cycles are being tracked: windows have the nominal length.
    Unlocked,
}

/// A fractional delay of at least one sample: y[n] = x(n − D) by 4-point Lagrange
/// interpolation, D = k + μ with k ≥ 1, so it never needs a future sample.
#[derive(Debug, Clone, Copy)]
struct DelayLine {
    ring: [f64; 16],
    head: usize,
    k: usize,
    taps: [f64; 4],
}

impl DelayLine {
    fn new(delay: f64) -> Self {
        let k = libm::floor(delay) as usize;
        let mu = delay - k as f64;
        let (a, b, c) = (mu + 1.0, mu - 1.0, mu - 2.0);
        Self {
            ring: [0.0; 16],
            head: 0,
            k,
            // Weights of x[n−k+1], x[n−k], x[n−k−1], x[n−k−2] for the value at n − k − μ.
            taps: [
                -mu * b * c / 6.0,
                a * b * c / 2.0,
                -a * mu * c / 2.0,
                a * mu * b / 6.0,
            ],
        }
    }

    #[inline]
    fn step(&mut self, x: f64) -> f64 {
        self.head = (self.head + 1) & 15;
        self.ring[self.head] = x;
        let at = |back: usize| self.ring[(self.head + 16 - back) & 15];
        let k = self.k;
        self.taps[0] * at(k - 1)
            + self.taps[1] * at(k)
            + self.taps[2] * at(k + 1)
            + self.taps[3] * at(k + 2)
    }
}

/// IEC 61000-4-30 §5.1 10-second frequency: whole cycles inside each 10-s interval of stream
/// time divided by their cumulative duration.
#[derive(Debug, Clone, Copy)]
struct TenSecond {
    interval: u64,
    first: f64,
    last: f64,
    count: u64,
    pending: Option<f64>,
    latest: Option<f64>,
}

impl TenSecond {
    fn crossing(&mut self, pos: f64, fs: f64) {
        let interval = libm::floor(pos / (10.0 * fs)) as u64;
        if interval != self.interval {
            if self.count >= 2 && self.last > self.first {
                let f = (self.count - 1) as f64 * fs / (self.last - self.first);
                self.pending = Some(f);
                self.latest = Some(f);
            }
            self.interval = interval;
            self.count = 0;
        }
        if self.count == 0 {
            self.first = pos;
        }
        self.last = pos;
        self.count += 1;
    }
}

/// Streaming metrology over a single- or three-phase sample stream.
///
/// Push samples in chunks of any size with [`push_single_phase`](Self::push_single_phase) or
/// [`push_frames`](Self::push_frames); each finished window is passed to the closure as a
/// [`WindowReport`] and its energy added to the [`EnergyRegisters`]. Call
/// [`finish`](Self::finish) at the end of a recording to analyse the trailing whole cycles.
///
/// Windows start at the first cycle boundary the tracker finds once its filters have settled
/// (about four cycles in); the samples before it are counted in
/// [`skipped_frames`](Self::skipped_frames), not analysed. Without a voltage to track, windows
/// of the nominal length are cut from the first sample instead and flagged `no_voltage`.
pub struct Analyzer {
    config: AnalyzerConfig,
    fs: f64,
    channels: usize,
    cycles_per_window: u32,
    nominal_len: f64,
    max_len: f64,
    buf: Vec<Vec<f64>>,
    clipped: Vec<bool>,
    len: usize,
    cap: usize,
    /// Absolute frame index of `buf[_][0]`.
    base: u64,
    tracker: Tracker,
    /// Pending cycle boundaries, buffer-local positions, ascending.
    crossings: Vec<f64>,
    crossing_cap: usize,
    lock: Lock,
    /// Buffer-local start of the current window.
    start: f64,
    engine: WindowEngine,
    energy: EnergyRegisters,
    ten: TenSecond,
    delays: Option<Vec<DelayLine>>,
    latency: f64,
    frames_in: u64,
    skipped: f64,
    windows: u64,
    finished: bool,
}

impl Analyzer {
    /// Checks the configuration and allocates every buffer the analysis will need.
    pub fn new(config: AnalyzerConfig) -> Result<Self, Error> {
        config.validate()?;
        let fs = config.sample_rate_hz;
        let f_nom = config.nominal.hz();
        let cycles = config.nominal.cycles_per_window();
        let nominal_len = f64::from(cycles) * fs / f_nom;
        // Windows whose cycles take longer than at 75 % of nominal frequency are not waited for.
        let max_len = f64::from(cycles) * fs / (0.75 * f_nom);
        let max_samples = libm::ceil(max_len) as usize + 16;
        // Room for several windows, so compaction (a copy of the unfinished tail) is rare.
        let cap = 6 * max_samples + 64;
        let channels = config.layout.channels();
        let crossing_cap = 2 * (cap as f64 * f_nom / fs) as usize + 16;
        let cal = &config.calibration;
        let phases_used = &cal.phases[..config.layout.phases()];
        let delays = phases_used
            .iter()
            .any(|p| p.skew_samples != 0.0)
            .then(|| delay_lines(config.layout, &cal.phases));
        Ok(Self {
            fs,
            channels,
            cycles_per_window: cycles,
            nominal_len,
            max_len,
            buf: vec![vec![0.0; cap]; channels],
            clipped: vec![false; cap],
            len: 0,
            cap,
            base: 0,
            tracker: Tracker::new(
                f_nom,
                fs,
                config.min_voltage_v * core::f64::consts::SQRT_2 * 0.7,
            ),
            crossings: Vec::with_capacity(crossing_cap),
            crossing_cap,
            lock: Lock::NotStarted,
            start: -0.5,
            engine: WindowEngine::new(
                fs,
                config.harmonics,
                max_samples + 8,
                cycles,
                config.layout.phases(),
            ),
            energy: EnergyRegisters::new(),
            ten: TenSecond {
                interval: 0,
                first: 0.0,
                last: 0.0,
                count: 0,
                pending: None,
                latest: None,
            },
            latency: if delays.is_some() { 1.0 } else { 0.0 },
            delays,
            frames_in: 0,
            skipped: 0.0,
            windows: 0,
            finished: false,
            config,
        })
    }

    /// The configuration this analyzer runs with.
    pub fn config(&self) -> &AnalyzerConfig {
        &self.config
    }

    /// The energy registers, updated after every window.
    pub fn energy(&self) -> &EnergyRegisters {
        &self.energy
    }

    /// Replaces the energy registers, e.g. with values restored from storage at start-up.
    pub fn set_energy(&mut self, registers: EnergyRegisters) {
        self.energy = registers;
    }

    /// The most recent 10-second frequency (IEC 61000-4-30 §5.1), once a 10-s interval closed.
    pub fn frequency_10s_hz(&self) -> Option<f64> {
        self.ten.latest
    }

    /// Frames pushed so far.
    pub fn frames_pushed(&self) -> u64 {
        self.frames_in
    }

    /// Frames before the first window (while the cycle tracker settled), not analysed.
    pub fn skipped_frames(&self) -> f64 {
        self.skipped
    }

    /// Pushes a single-phase chunk: `v` and `i` must have the same length. Calls `on_window` for
    /// every window the chunk completes.
    ///
    /// A NaN or infinite sample is refused with an error naming it. A long chunk is taken in
    /// buffer-sized segments, so frames well before the bad one may already have been analysed;
    /// [`frames_pushed`](Self::frames_pushed) says how many frames were taken.
    pub fn push_single_phase<F: FnMut(&WindowReport)>(
        &mut self,
        v: &[f64],
        i: &[f64],
        mut on_window: F,
    ) -> Result<(), Error> {
        self.check_open()?;
        if self.config.layout != Layout::SinglePhase {
            return Err(Error::new(ErrorKind::WrongLayout {
                expected: "a single-phase layout; use push_frames for three phases",
            }));
        }
        if v.len() != i.len() {
            return Err(Error::new(ErrorKind::ChannelLengthMismatch {
                v_len: v.len(),
                i_len: i.len(),
            }));
        }
        self.push_with(v.len(), Source::Split(v, i), &mut on_window)
    }

    /// Pushes interleaved frames in the layout's channel order (`[v, i]`, `[va, vb, vc, ia, ib,
    /// ic]` or with `in` appended). The chunk must hold whole frames. Non-finite samples are
    /// handled as in [`push_single_phase`](Self::push_single_phase).
    pub fn push_frames<F: FnMut(&WindowReport)>(
        &mut self,
        frames: &[f64],
        mut on_window: F,
    ) -> Result<(), Error> {
        self.check_open()?;
        let channels = self.channels;
        if !frames.len().is_multiple_of(channels) {
            return Err(Error::new(ErrorKind::PartialFrame {
                len: frames.len(),
                channels,
            }));
        }
        self.push_with(
            frames.len() / channels,
            Source::Interleaved(frames, channels),
            &mut on_window,
        )
    }

    /// Ends the stream: analyses the trailing whole cycles as one window flagged `short`. A
    /// recording shorter than one standard window (say a 3-cycle oscilloscope capture) is
    /// analysed as one window over the whole cycles it holds, found from the raw voltage's zero
    /// crossings. Without any cycle, the data left is reported as one untracked window flagged
    /// `no_voltage` and `short`. Partial cycles after the last boundary are not analysed.
    pub fn finish<F: FnMut(&WindowReport)>(&mut self, mut on_window: F) -> Result<(), Error> {
        self.check_open()?;
        self.finished = true;
        let last_usable = self.len as f64 - MARGIN;
        if self.windows == 0 {
            let mut found = [0.0; 64];
            let count = raw_crossings(&self.buf[0][..self.len], &mut found);
            // At most one standard window's worth of cycles: the engine's buffers and FFT grid
            // are sized for that, and a recording with more whole cycles that never locked
            // (e.g. a wildly wrong --rate) is still reported as one flagged short window.
            let max_crossings = self.cycles_per_window as usize + 1;
            let usable: heapless_slice::Usable =
                heapless_slice::usable(&found[..count], last_usable, max_crossings);
            if usable.count >= 2 {
                let (xa, xb) = (usable.first, usable.last);
                self.skipped = xa + 0.5;
                let flags = WindowFlags {
                    short: true,
                    ..WindowFlags::default()
                };
                self.emit(xa, xb, (usable.count - 1) as u32, flags, &mut on_window);
                return Ok(());
            }
        }
        match self.lock {
            Lock::Locked => {
                let k = self
                    .crossings
                    .iter()
                    .take_while(|&&b| b <= last_usable)
                    .count();
                if k >= 1 {
                    let xb = self.crossings[k - 1];
                    let flags = WindowFlags {
                        short: true,
                        ..WindowFlags::default()
                    };
                    self.emit(self.start, xb, k as u32, flags, &mut on_window);
                }
            }
            Lock::NotStarted | Lock::Unlocked => {
                let end = self.len as f64 - 0.5;
                if end - self.start >= 1.0 {
                    let flags = WindowFlags {
                        short: true,
                        ..WindowFlags::default()
                    };
                    self.emit(self.start, end, 0, flags, &mut on_window);
                }
            }
        }
        Ok(())
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.finished {
            return Err(Error::new(ErrorKind::Finished));
        }
        Ok(())
    }

    /// The error for the first NaN or infinity in `values` (frames of `width` channels starting
    /// at channel `first_channel`), if there is one. Only called once the fused check in
    /// [`ingest`](Self::ingest) has seen one, so the scan's cost does not matter.
    fn non_finite(&self, values: &[f64], width: usize, first_channel: usize) -> Option<Error> {
        let k = values.iter().position(|x| !x.is_finite())?;
        Some(Error::new(ErrorKind::NonFiniteSample {
            frame: self.frames_in + (k / width) as u64,
            channel: self.config.layout.channel_names()[first_channel + k % width],
        }))
    }

    /// Takes the source in segments that fit the buffer. Each segment is checked for NaN and
    /// infinity as it is copied in ([`ingest`](Self::ingest)): on a bad sample the frames
    /// before its segment have been analysed, the rest of the chunk is refused, and the error
    /// names the sample.
    fn push_with<F>(
        &mut self,
        frames: usize,
        source: Source<'_>,
        on_window: &mut F,
    ) -> Result<(), Error>
    where
        F: FnMut(&WindowReport),
    {
        let mut done = 0;
        while done < frames {
            if self.len == self.cap {
                self.compact();
            }
            let take = (frames - done).min(self.cap - self.len);
            self.ingest(done, take, source)?;
            let fresh = self.len..self.len + take;
            self.len += take;
            self.frames_in += take as u64;
            done += take;
            self.track(fresh);
            self.emit_ready(on_window);
        }
        Ok(())
    }

    /// Calibrates frames `from..from + take` of the source into the buffers, with clip flags
    /// and the skew delay lines. Each channel is one tight loop over contiguous output, which
    /// also checks the raw samples for NaN and infinity: the check costs no pass of its own
    /// (a separate pass, the first touch of the input, took 4–11 % of the analysis time in
    /// profiles).
    /// A segment holding a non-finite sample is refused before anything depends on it: the
    /// buffer length, the delay lines and the clip flags are only updated for a clean segment.
    fn ingest(&mut self, from: usize, take: usize, source: Source<'_>) -> Result<(), Error> {
        let layout = self.config.layout;
        let cal = self.config.calibration;
        let at = self.len;
        // (gain, offset) per channel; entries past the layout's channels are not used.
        let gains: [(f64, f64); 7] =
            core::array::from_fn(|ch| channel_calibration(layout, &cal, ch.min(self.channels - 1)));
        let seen = match source {
            Source::Split(v, i) => {
                let mut seen = 0;
                for (ch, src) in [v, i].into_iter().enumerate() {
                    let (gain, offset) = gains[ch];
                    let dst = &mut self.buf[ch][at..at + take];
                    for (d, &x) in dst.iter_mut().zip(&src[from..from + take]) {
                        *d = gain * (x - offset);
                        seen |= exponent_flag(x);
                    }
                }
                seen
            }
            Source::Interleaved(frames, width) => {
                let src = &frames[from * width..(from + take) * width];
                let bufs = &mut self.buf[..];
                // One pass over the frames for the layouts' widths (a pass per channel read the
                // interleaved input six times over).
                if let Ok(bufs) = <&mut [Vec<f64>; 6]>::try_from(&mut *bufs) {
                    calibrate_frames(bufs, at, src, &first(&gains))
                } else if let Ok(bufs) = <&mut [Vec<f64>; 7]>::try_from(&mut *bufs) {
                    calibrate_frames(bufs, at, src, &gains)
                } else if let Ok(bufs) = <&mut [Vec<f64>; 2]>::try_from(&mut *bufs) {
                    calibrate_frames(bufs, at, src, &first(&gains))
                } else {
                    let mut seen = 0;
                    for (ch, buf) in bufs.iter_mut().enumerate() {
                        let (gain, offset) = gains[ch];
                        let dst = &mut buf[at..at + take];
                        for (d, frame) in dst.iter_mut().zip(src.chunks_exact(width)) {
                            *d = gain * (frame[ch] - offset);
                            seen |= exponent_flag(frame[ch]);
                        }
                    }
                    seen
                }
            }
        };
        if seen >> 63 != 0 {
            let error = match source {
                Source::Split(v, i) => self
                    .non_finite(&v[from..from + take], 1, 0)
                    .or_else(|| self.non_finite(&i[from..from + take], 1, 1)),
                Source::Interleaved(values, width) => {
                    self.non_finite(&values[from * width..(from + take) * width], width, 0)
                }
            };
            // Bit 63 is only set by a NaN or infinite sample, which the scan finds.
            return Err(error.unwrap_or(Error::new(ErrorKind::NonFiniteSample {
                frame: self.frames_in,
                channel: layout.channel_names()[0],
            })));
        }
        if let Some(delays) = &mut self.delays {
            for (ch, delay) in delays.iter_mut().enumerate() {
                for d in &mut self.buf[ch][at..at + take] {
                    *d = delay.step(*d);
                }
            }
        }
        let clip = self.config.clip;
        let phases = layout.phases();
        let flags = &mut self.clipped[at..at + take];
        flags.fill(false);
        for ch in 0..self.channels {
            let limit = if ch < phases { clip.v_abs } else { clip.i_abs };
            if limit.is_finite() {
                source.for_each(ch, from, take, |f, x| flags[f] |= x.abs() >= limit);
            }
        }
        Ok(())
    }

    fn track(&mut self, fresh: core::ops::Range<usize>) {
        let base = self.base as f64;
        let fs = self.fs;
        let cap = self.crossing_cap;
        let crossings = &mut self.crossings;
        let ten = &mut self.ten;
        self.tracker.process(&self.buf[0][fresh], |abs| {
            ten.crossing(abs, fs);
            if crossings.len() < cap {
                crossings.push(abs - base);
            }
        });
    }

    fn emit_ready<F: FnMut(&WindowReport)>(&mut self, on_window: &mut F) {
        let c = self.cycles_per_window as usize;
        loop {
            let usable = self.len as f64 - MARGIN;
            match self.lock {
                Lock::NotStarted => {
                    if let Some(&b) = self.crossings.first() {
                        self.crossings.remove(0);
                        if b >= 1.0 {
                            self.skipped = self.base as f64 + b + 0.5;
                            self.start = b;
                            self.lock = Lock::Locked;
                        }
                    } else if self.start + self.nominal_len <= usable {
                        self.lock = Lock::Unlocked;
                    } else {
                        return;
                    }
                }
                Lock::Locked => {
                    if self.crossings.len() >= c {
                        let xb = self.crossings[c - 1];
                        if xb > usable {
                            return;
                        }
                        self.crossings.drain(..c);
                        self.emit(self.start, xb, c as u32, WindowFlags::default(), on_window);
                    } else if self.start + self.max_len <= usable {
                        // The voltage stopped crossing: close the cycles we have, then run free.
                        let k = self.crossings.len();
                        self.lock = Lock::Unlocked;
                        if k > 0 {
                            let xb = self.crossings[k - 1];
                            self.crossings.clear();
                            let flags = WindowFlags {
                                short: true,
                                ..WindowFlags::default()
                            };
                            self.emit(self.start, xb, k as u32, flags, on_window);
                        }
                    } else {
                        return;
                    }
                }
                Lock::Unlocked => {
                    let free_end = self.start + self.nominal_len;
                    match self.crossings.first() {
                        Some(&b) if b <= free_end => {
                            if b > usable {
                                return;
                            }
                            self.crossings.remove(0);
                            self.lock = Lock::Locked;
                            if b - self.start >= 0.5 {
                                self.emit(self.start, b, 0, WindowFlags::default(), on_window);
                            }
                            self.start = b;
                        }
                        _ if free_end <= usable => {
                            self.emit(self.start, free_end, 0, WindowFlags::default(), on_window);
                        }
                        _ => return,
                    }
                }
            }
        }
    }

    /// Analyses [xa, xb) (buffer-local), reports it, books its energy and moves the start.
    fn emit<F: FnMut(&WindowReport)>(
        &mut self,
        xa: f64,
        xb: f64,
        cycles: u32,
        mut flags: WindowFlags,
        on_window: &mut F,
    ) {
        let chans: [&[f64]; 7] =
            core::array::from_fn(|ch| self.buf.get(ch).map_or(&[][..], |b| &b[..self.len]));
        let span = Span { xa, xb, cycles };
        let mut report = self
            .engine
            .analyze(&chans[..self.channels], self.config.layout, span);
        report.t0_s = (self.base as f64 + xa - self.latency) / self.fs;
        let i0 = libm::floor(xa + 0.5).max(0.0) as usize;
        let i1 =
            ((libm::ceil(xb + 0.5) as usize).saturating_sub(1)).min(self.len.saturating_sub(1));
        flags.clipped = self.clipped[i0..=i1.max(i0)].iter().any(|&c| c);
        if cycles == 0 {
            flags.no_voltage = true;
            report.freq_hz = self.config.nominal.hz();
        } else {
            let (lo, hi) = self.config.frequency_range_hz;
            flags.frequency_out_of_range = !(lo..=hi).contains(&report.freq_hz);
            flags.short |= cycles < self.cycles_per_window;
        }
        flags.no_voltage |= report.phases[0].v_rms < self.config.min_voltage_v;
        flags.too_few_samples_per_cycle = self.fs / report.freq_hz < MIN_SAMPLES_PER_CYCLE;
        report.flags = flags;
        report.freq_10s_hz = self.ten.pending.take();
        self.energy
            .add(report.total.p_w, report.total.q_var, report.duration_s);
        self.windows += 1;
        self.start = xb;
        on_window(&report);
    }

    /// Drops samples older than the current window's history to make room.
    fn compact(&mut self) {
        let keep_from = (libm::floor(self.start) as i64 - HISTORY as i64).max(0) as usize;
        let shift = keep_from.min(self.len);
        if shift == 0 {
            return;
        }
        for b in &mut self.buf {
            b.copy_within(shift..self.len, 0);
        }
        self.clipped.copy_within(shift..self.len, 0);
        self.len -= shift;
        self.base += shift as u64;
        self.start -= shift as f64;
        for x in &mut self.crossings {
            *x -= shift as f64;
        }
    }
}

/// Where pushed samples come from: separate voltage and current slices, or interleaved frames
/// of `width` channels.
#[derive(Clone, Copy)]
enum Source<'a> {
    Split(&'a [f64], &'a [f64]),
    Interleaved(&'a [f64], usize),
}

impl Source<'_> {
    fn for_each(self, ch: usize, from: usize, take: usize, mut f: impl FnMut(usize, f64)) {
        match self {
            Source::Split(v, i) => {
                let src = if ch == 0 { v } else { i };
                for (k, &x) in src[from..from + take].iter().enumerate() {
                    f(k, x);
                }
            }
            Source::Interleaved(frames, width) => {
                let src = &frames[from * width..(from + take) * width];
                for (k, frame) in src.chunks_exact(width).enumerate() {
                    f(k, frame[ch]);
                }
            }
        }
    }
}

/// Bit 63 of the result is set exactly when `x` is NaN or ±∞: the exponent field plus one
/// carries out of it only when the field is all ones. OR-ing it over samples is an integer
/// reduction, which the compiler vectorises with the copy beside it (a float sum may not be
/// reordered).
#[inline(always)]
fn exponent_flag(x: f64) -> u64 {
    const EXPONENT: u64 = 0x7ff0_0000_0000_0000;
    const EXPONENT_ONE: u64 = 0x0010_0000_0000_0000;
    (x.to_bits() & EXPONENT).wrapping_add(EXPONENT_ONE)
}

/// Calibrates interleaved frames of `W` channels into the channel buffers from index `at`, in
/// one pass over the frames; returns the OR of the samples' [`exponent_flag`]s.
fn calibrate_frames<const W: usize>(
    bufs: &mut [Vec<f64>; W],
    at: usize,
    frames: &[f64],
    gains: &[(f64, f64); W],
) -> u64 {
    let (frames, _) = frames.as_chunks::<W>();
    let outs = bufs.each_mut().map(|b| &mut b[at..at + frames.len()]);
    let mut seen = 0;
    for (n, frame) in frames.iter().enumerate() {
        for ch in 0..W {
            let (gain, offset) = gains[ch];
            outs[ch][n] = gain * (frame[ch] - offset);
            seen |= exponent_flag(frame[ch]);
        }
    }
    seen
}

/// The first `N` entries of a channel table.
fn first<const N: usize>(table: &[(f64, f64); 7]) -> [(f64, f64); N] {
    core::array::from_fn(|k| table[k])
}

/// (gain, offset) of a channel in frame order.
fn channel_calibration(layout: Layout, cal: &crate::Calibration, ch: usize) -> (f64, f64) {
    let c = match layout {
        Layout::SinglePhase if ch == 0 => cal.phases[0].voltage,
        Layout::SinglePhase => cal.phases[0].current,
        Layout::ThreePhaseFourWire { .. } => match ch {
            0..=2 => cal.phases[ch].voltage,
            3..=5 => cal.phases[ch - 3].current,
            _ => cal.neutral,
        },
    };
    (c.gain, c.offset)
}

/// One delay line per channel: every channel is delayed by one sample, and the leading channel
/// of each phase by its skew on top (see [`PhaseCalibration::skew_samples`]).
fn delay_lines(layout: Layout, phases: &[PhaseCalibration; 3]) -> Vec<DelayLine> {
    (0..layout.channels())
        .map(|ch| {
            let (phase, is_voltage) = match layout {
                Layout::SinglePhase => (0, ch == 0),
                Layout::ThreePhaseFourWire { .. } => (ch % 3, ch < 3),
            };
            let skew = if ch == 6 {
                0.0
            } else {
                phases[phase].skew_samples
            };
            let extra = match (is_voltage, skew > 0.0) {
                (true, true) => skew,
                (false, false) if ch != 6 => -skew,
                _ => 0.0,
            };
            DelayLine::new(1.0 + extra)
        })
        .collect()
}

mod heapless_slice {
    //! Picks the crossings of a short capture that have the history and margin a window needs.
    pub(super) struct Usable {
        pub count: usize,
        pub first: f64,
        pub last: f64,
    }

    /// The first `max` crossings in `[1, last_usable]`.
    pub(super) fn usable(found: &[f64], last_usable: f64, max: usize) -> Usable {
        let mut out = Usable {
            count: 0,
            first: 0.0,
            last: 0.0,
        };
        for &x in found
            .iter()
            .filter(|&&x| x >= 1.0 && x <= last_usable)
            .take(max)
        {
            if out.count == 0 {
                out.first = x;
            }
            out.last = x;
            out.count += 1;
        }
        out
    }
}
