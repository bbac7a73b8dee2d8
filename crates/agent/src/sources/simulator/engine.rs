//! Waveform synthesis: the scenario's loads turned into voltage and current samples.
//!
//! Every quantity that changes slowly (a load's power, an inrush envelope, the PV irradiance,
//! the frequency) is evaluated once per block of one nominal cycle; within a block each phase's
//! current is a short harmonic series in the phase's own voltage angle,
//!
//! ```text
//! i_p(t) = g_p · v_p(t) + Σ_k [ a_pk · sin(k·θ_p(t)) + b_pk · cos(k·θ_p(t)) ]
//! ```
//!
//! (`g_p` is the conductance of the resistive loads, so their current follows the voltage's own
//! distortion). Per sample, the fundamental phasor `(sin θ, cos θ)` advances by one complex
//! multiplication, the other phases are fixed rotations of it, and the harmonics come from the
//! Chebyshev recurrence `sin kθ = 2 cos θ · sin (k−1)θ − sin (k−2)θ`: no trigonometric call per
//! sample. The phasor is recomputed exactly at each block start, so rounding never accumulates.
//!
//! Conventions follow DESIGN §3.2: import is positive power, currents lag for inductive loads,
//! and the neutral channel is `i_n = −(i_a + i_b + i_c)` as metrology computes it when the
//! neutral is not measured, so a healthy installation has zero residual.

use std::f64::consts::{PI, SQRT_2};

use super::config::{Bypass, Load, LoadKind, MeterPosition, PhaseSel, Scenario, TamperKind};
use super::rng::{Gaussian, hash_unit};
use crate::sources::{Error, FrameLayout, SampleChunk, Signal, SignalKind};

/// Highest harmonic order the synthesis supports (voltage or current).
pub const MAX_ORDER: usize = 25;
const N: usize = MAX_ORDER + 1;
/// Odd harmonics of the rectifier model.
const RECTIFIER_ORDERS: [usize; 7] = [3, 5, 7, 9, 11, 13, 15];
/// Length of the PV cloud segments in seconds, and of the fade between them.
const CLOUD_SEGMENT_S: f64 = 60.0;
const CLOUD_FADE_S: f64 = 10.0;

/// Harmonic coefficients of one phase's current in one block.
#[derive(Clone, Copy, Debug)]
struct Coeffs {
    g: f64,
    a: [f64; N],
    b: [f64; N],
    kmax: usize,
}

impl Coeffs {
    const ZERO: Coeffs = Coeffs {
        g: 0.0,
        a: [0.0; N],
        b: [0.0; N],
        kmax: 1,
    };

    fn add_sin(&mut self, k: usize, amp: f64) {
        self.a[k] += amp;
        self.kmax = self.kmax.max(k);
    }

    fn add_cos(&mut self, k: usize, amp: f64) {
        self.b[k] += amp;
        self.kmax = self.kmax.max(k);
    }

    fn scale(&mut self, f: f64) {
        self.g *= f;
        for k in 0..N {
            self.a[k] *= f;
            self.b[k] *= f;
        }
    }
}

/// A deterministic meter simulation: call [`Simulator::generate`] repeatedly for consecutive
/// chunks. Pure computation, no clock: pacing is the source's job.
#[derive(Clone, Debug)]
pub struct Simulator {
    scenario: Scenario,
    position: MeterPosition,
    layout: FrameLayout,
    fs: f64,
    seed: u64,
    /// Fundamental angle of phase a at the next frame, in [0, 2π).
    theta: f64,
    /// Index of the next frame.
    next_frame: u64,
    total_frames: Option<u64>,
    noise: Gaussian,
    block: usize,
    signals: Vec<Signal>,
    /// Voltage harmonic amplitudes (peak volts), index = order.
    v_amp: [f64; N],
    v_kmax: usize,
    /// Whether the meter's disconnect relay lets the loads draw (see [`Simulator::set_load_connected`]).
    load_connected: bool,
}

impl Simulator {
    /// Validate `scenario` and prepare a simulation of the meter at `position`. `seed`
    /// overrides the scenario's seed.
    pub fn new(
        scenario: Scenario,
        position: MeterPosition,
        seed: Option<u64>,
    ) -> Result<Simulator, Error> {
        validate(&scenario)?;
        let layout = if scenario.phases == 1 {
            FrameLayout::SinglePhase
        } else {
            FrameLayout::ThreePhaseWithNeutral
        };
        let seed = seed.unwrap_or(scenario.seed);
        let fs = scenario.sample_rate_hz;
        let total_frames = scenario.duration_s.map(|d| (d * fs).floor() as u64);
        let block = (fs / scenario.supply.frequency_hz).round().max(1.0) as usize;
        let mut v_amp = [0.0; N];
        let vpk = SQRT_2 * scenario.supply.voltage_v;
        v_amp[1] = vpk;
        let mut v_kmax = 1;
        for &(order, frac) in &scenario.supply.harmonics {
            v_amp[order as usize] += vpk * frac;
            v_kmax = v_kmax.max(order as usize);
        }
        let signals = if position == MeterPosition::House {
            tamper_signals(&scenario)
        } else {
            Vec::new()
        };
        Ok(Simulator {
            noise: Gaussian::new(seed ^ 0x005E_ED0F_5A11_0000),
            scenario,
            position,
            layout,
            fs,
            seed,
            theta: 0.0,
            next_frame: 0,
            total_frames,
            block,
            signals,
            v_amp,
            v_kmax,
            load_connected: true,
        })
    }

    /// Opens or closes the meter's disconnect relay: while open, every load wired through the
    /// meter stops drawing (the meter still measures the supply voltage); a load wired around
    /// the meter (a full bypass) keeps drawing, as it would on a real installation.
    pub fn set_load_connected(&mut self, connected: bool) {
        self.load_connected = connected;
    }

    /// The frame layout of the chunks: `v,i` or `va,vb,vc,ia,ib,ic,in`.
    pub fn layout(&self) -> FrameLayout {
        self.layout
    }

    /// Frames per second.
    pub fn sample_rate_hz(&self) -> f64 {
        self.fs
    }

    /// Simulated time of the next frame, in seconds.
    pub fn time_s(&self) -> f64 {
        self.next_frame as f64 / self.fs
    }

    /// Frames left before the scenario ends, or `None` for an endless scenario.
    pub fn frames_left(&self) -> Option<u64> {
        self.total_frames.map(|t| t.saturating_sub(self.next_frame))
    }

    /// The tamper-input changes in `[from_s, to_s)`, in time order (house meter only: the
    /// observer's cover and sensors are not touched).
    pub fn signals_between(&self, from_s: f64, to_s: f64) -> impl Iterator<Item = Signal> + '_ {
        self.signals
            .iter()
            .copied()
            .filter(move |s| s.t_s >= from_s && s.t_s < to_s)
    }

    /// The next `frames` frames (fewer at the end of a finite scenario; an empty chunk after it).
    pub fn generate(&mut self, frames: usize) -> SampleChunk {
        let mut samples = Vec::new();
        let t0_s = self.time_s();
        self.generate_into(&mut samples, frames);
        SampleChunk {
            t0_s,
            sample_rate_hz: self.fs,
            layout: self.layout,
            samples,
            discontinuity: false,
        }
    }

    /// Like [`Simulator::generate`], but writes the interleaved frames into `out` (cleared
    /// first), so a caller can reuse one buffer and allocate nothing per chunk. Returns the
    /// number of frames written.
    pub fn generate_into(&mut self, out: &mut Vec<f64>, frames: usize) -> usize {
        let frames = match self.frames_left() {
            Some(left) => frames.min(left as usize),
            None => frames,
        };
        out.clear();
        out.reserve(frames * self.layout.channels());
        let mut done = 0;
        while done < frames {
            // Blocks are aligned to absolute frame numbers, so the chunking chosen by the caller
            // does not change the signal.
            let into_block = (self.next_frame % self.block as u64) as usize;
            let len = (self.block - into_block).min(frames - done);
            self.block_into(out, len);
            done += len;
        }
        frames
    }

    fn block_into(&mut self, out: &mut Vec<f64>, len: usize) {
        // Slow quantities are evaluated at the start of the (aligned) block.
        let block_start = self.next_frame - self.next_frame % self.block as u64;
        let t = block_start as f64 / self.fs;
        let s = &self.scenario.supply;
        let f = s.frequency_hz + s.frequency_drift_hz * (2.0 * PI * t / s.drift_period_s).sin();
        let dtheta = 2.0 * PI * f / self.fs;
        let phases = self.layout.phases();
        let powered = !in_any(&s.outages, t);

        let mut meas = [Coeffs::ZERO; 3];
        let mut neutral = [Coeffs::ZERO; 3];
        if powered {
            self.load_coeffs(t, &mut meas, &mut neutral);
        }
        let sv = self.scenario.noise.voltage_v;
        let si = self.scenario.noise.current_a;
        let has_neutral = self.layout.neutral_channel().is_some();
        let v_kmax = if powered { self.v_kmax } else { 0 };
        let v_amp = self.v_amp;
        // Phase offsets of b and c: −120° and +120° (sequence a, b, c).
        let (sin120, cos120) = (2.0 * PI / 3.0).sin_cos();
        let offsets = [(0.0, 1.0), (-sin120, cos120), (sin120, cos120)];
        let (mut s1, mut c1) = self.theta.sin_cos();
        let (sd, cd) = dtheta.sin_cos();
        let mut v = [0.0; 3];
        let mut i = [0.0; 3];
        for _ in 0..len {
            let mut i_n = 0.0;
            for p in 0..phases {
                let (so, co) = offsets[p];
                // sin/cos of θ_p = θ + offset.
                let sp = s1 * co + c1 * so;
                let cp = c1 * co - s1 * so;
                let (vp, ip, inp) = if v_kmax == 0 {
                    (0.0, 0.0, 0.0)
                } else {
                    synth(sp, cp, &v_amp, v_kmax, &meas[p], &neutral[p])
                };
                v[p] = vp;
                i[p] = ip;
                i_n -= inp;
            }
            for vp in &v[..phases] {
                out.push(vp + sv * self.noise.next());
            }
            for ip in &i[..phases] {
                out.push(ip + si * self.noise.next());
            }
            if has_neutral {
                out.push(i_n + si * self.noise.next());
            }
            let s_next = s1 * cd + c1 * sd;
            c1 = c1 * cd - s1 * sd;
            s1 = s_next;
        }
        self.theta = (self.theta + dtheta * len as f64).rem_euclid(2.0 * PI);
        self.next_frame += len as u64;
    }

    /// The current coefficients of every phase at time `t`, as the meter measures them
    /// (`meas`) and as they flow back through the meter's neutral (`neutral`).
    fn load_coeffs(&self, t: f64, meas: &mut [Coeffs; 3], neutral: &mut [Coeffs; 3]) {
        let sc = &self.scenario;
        let v_rms = sc.supply.voltage_v;
        let observer = self.position == MeterPosition::Observer;
        for load in &sc.loads {
            let Some(t_on) = self.time_on(load, t) else {
                continue;
            };
            if !self.load_connected && !observer && load.bypass != Bypass::Full {
                continue; // behind the open relay
            }
            let mut c = Coeffs::ZERO;
            load_current(
                &mut c,
                load,
                t,
                t_on,
                v_rms,
                sc.start_time_of_day_s,
                self.seed,
            );
            let (shares, n): (&[usize], f64) = match load.phase {
                PhaseSel::A => (&[0], 1.0),
                PhaseSel::B => (&[1], 1.0),
                PhaseSel::C => (&[2], 1.0),
                PhaseSel::Abc => (&[0, 1, 2], 3.0),
            };
            c.scale(1.0 / n);
            // What this meter sees of the load: everything at the observer; at the house,
            // nothing of a full bypass and only the neutral return of a phase-only bypass.
            let (in_phase, in_neutral) = match (observer, load.bypass) {
                (true, _) | (false, Bypass::None) => (true, true),
                (false, Bypass::Full) => (false, false),
                (false, Bypass::PhaseOnly) => (false, true),
            };
            for &p in shares {
                if in_phase {
                    add(&mut meas[p], &c);
                }
                if in_neutral {
                    add(&mut neutral[p], &c);
                }
            }
        }
        if observer {
            return;
        }
        for tamper in &sc.tampers {
            if t < tamper.from_s || t >= tamper.to_s {
                continue;
            }
            let factor = match tamper.kind {
                TamperKind::Magnetic => tamper.current_factor,
                TamperKind::ReversedCt => -1.0,
                TamperKind::CoverOpen => continue,
            };
            match tamper.phase {
                Some(sel) => {
                    for &p in phase_indices(sel) {
                        meas[p].scale(factor);
                    }
                }
                None => {
                    for p in 0..3 {
                        meas[p].scale(factor);
                        // A magnet saturates the neutral CT too; a reversed CT is one CT.
                        if tamper.kind == TamperKind::Magnetic {
                            neutral[p].scale(factor);
                        }
                    }
                }
            }
        }
    }

    /// Seconds since `load` last switched on (by its schedule, or when the supply came back),
    /// or `None` when it is off at `t`.
    fn time_on(&self, load: &Load, t: f64) -> Option<f64> {
        let sc = &self.scenario;
        let start = if load.on.is_empty() {
            0.0
        } else {
            let (tm, base) = match sc.repeat_s {
                Some(r) => {
                    let k = (t / r).floor();
                    (t - k * r, k * r)
                }
                None => (t, 0.0),
            };
            let &(from, _) = load.on.iter().find(|(from, to)| tm >= *from && tm < *to)?;
            base + from
        };
        // After an outage every load starts again (a motor has its inrush again).
        let restart = sc
            .supply
            .outages
            .iter()
            .filter(|(_, to)| *to <= t)
            .map(|(_, to)| *to)
            .fold(start, f64::max);
        Some(t - restart)
    }
}

// The loop indexes four arrays by harmonic order; iterators over zips of them read worse.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn synth(
    sp: f64,
    cp: f64,
    v_amp: &[f64; N],
    v_kmax: usize,
    m: &Coeffs,
    n: &Coeffs,
) -> (f64, f64, f64) {
    let mut v = v_amp[1] * sp;
    let mut im = m.a[1] * sp + m.b[1] * cp;
    let mut inn = n.a[1] * sp + n.b[1] * cp;
    let kmax = v_kmax.max(m.kmax).max(n.kmax);
    if kmax > 1 {
        // Chebyshev recurrence for sin kθ and cos kθ.
        let two_c = 2.0 * cp;
        let (mut s_prev, mut s_cur) = (0.0, sp);
        let (mut c_prev, mut c_cur) = (1.0, cp);
        for k in 2..=kmax {
            let s_next = two_c * s_cur - s_prev;
            let c_next = two_c * c_cur - c_prev;
            s_prev = s_cur;
            s_cur = s_next;
            c_prev = c_cur;
            c_cur = c_next;
            v += v_amp[k] * s_cur;
            im += m.a[k] * s_cur + m.b[k] * c_cur;
            inn += n.a[k] * s_cur + n.b[k] * c_cur;
        }
    }
    (v, m.g * v + im, n.g * v + inn)
}

fn add(into: &mut Coeffs, c: &Coeffs) {
    into.g += c.g;
    for k in 0..N {
        into.a[k] += c.a[k];
        into.b[k] += c.b[k];
    }
    into.kmax = into.kmax.max(c.kmax);
}

fn phase_indices(sel: PhaseSel) -> &'static [usize] {
    match sel {
        PhaseSel::A => &[0],
        PhaseSel::B => &[1],
        PhaseSel::C => &[2],
        PhaseSel::Abc => &[0, 1, 2],
    }
}

fn in_any(intervals: &[(f64, f64)], t: f64) -> bool {
    intervals.iter().any(|(from, to)| t >= *from && t < *to)
}

/// The current of one load (all of it, before splitting over phases) at time `t`, `t_on`
/// seconds after it switched on.
fn load_current(
    c: &mut Coeffs,
    load: &Load,
    t: f64,
    t_on: f64,
    v_rms: f64,
    start_tod_s: f64,
    seed: u64,
) {
    match load.kind {
        LoadKind::Resistive { power_w } => {
            // P = V² · G at nominal voltage.
            c.g += power_w / (v_rms * v_rms);
        }
        LoadKind::Motor {
            power_w,
            pf,
            inrush_factor,
            inrush_s,
        } => {
            let i1 = power_w / (v_rms * pf);
            let envelope = 1.0 + (inrush_factor - 1.0) * (-t_on / inrush_s).exp();
            let amp = SQRT_2 * i1 * envelope;
            // i = A·sin(θ − φ), lagging by φ = acos(pf).
            let phi = pf.acos();
            c.add_sin(1, amp * phi.cos());
            c.add_cos(1, -amp * phi.sin());
        }
        LoadKind::Rectifier { power_w, thd } => {
            let a1 = SQRT_2 * power_w / v_rms;
            c.add_sin(1, a1);
            // Amplitudes ∝ 1/n with alternating signs, so the pulses peak with the voltage as a
            // capacitor-input rectifier's do; scaled so that sqrt(Σ I_n²)/I_1 = thd.
            let norm = RECTIFIER_ORDERS
                .iter()
                .map(|&n| 1.0 / (n * n) as f64)
                .sum::<f64>()
                .sqrt();
            for n in RECTIFIER_ORDERS {
                let sign = if (n / 2) % 2 == 0 { 1.0 } else { -1.0 };
                c.add_sin(n, sign * a1 * thd / norm / n as f64);
            }
        }
        LoadKind::Pv {
            peak_power_w,
            sunrise_s,
            sunset_s,
            cloudiness,
        } => {
            let tod = (start_tod_s + t).rem_euclid(86_400.0);
            let p = peak_power_w
                * irradiance(tod, sunrise_s, sunset_s)
                * cloud_factor(t, cloudiness, seed);
            // An inverter injects current in phase with the voltage: export, negative power.
            c.add_sin(1, -SQRT_2 * p / v_rms);
        }
        LoadKind::Battery { power_w } => {
            c.add_sin(1, SQRT_2 * power_w / v_rms);
        }
        LoadKind::EvCharger { power_w, ramp_s } => {
            let ramp = if ramp_s > 0.0 {
                (t_on / ramp_s).min(1.0)
            } else {
                1.0
            };
            let a1 = SQRT_2 * power_w * ramp / v_rms;
            c.add_sin(1, a1);
            // An active-PFC charger still leaves a few per cent of 5th harmonic.
            c.add_sin(5, 0.03 * a1);
        }
    }
}

/// Clear-sky irradiance as a fraction of peak: a half sine between sunrise and sunset.
fn irradiance(tod_s: f64, sunrise_s: f64, sunset_s: f64) -> f64 {
    if tod_s <= sunrise_s || tod_s >= sunset_s {
        return 0.0;
    }
    (PI * (tod_s - sunrise_s) / (sunset_s - sunrise_s)).sin()
}

/// Cloud attenuation at simulated time `t`: each minute is cloudy with probability
/// `cloudiness` (a stateless hash of the seed and the minute, so the same seed gives the same
/// sky whatever the chunking), a cloud passes 25–60 % of the light, and consecutive minutes fade
/// into each other over 10 s as real cloud edges do.
pub(crate) fn cloud_factor(t: f64, cloudiness: f64, seed: u64) -> f64 {
    if cloudiness <= 0.0 {
        return 1.0;
    }
    let segment = |k: u64| {
        if hash_unit(seed, 2 * k) < cloudiness {
            0.25 + 0.35 * hash_unit(seed, 2 * k + 1)
        } else {
            1.0
        }
    };
    let k = (t / CLOUD_SEGMENT_S).floor().max(0.0) as u64;
    let into = t - k as f64 * CLOUD_SEGMENT_S;
    let here = segment(k);
    let fade_start = CLOUD_SEGMENT_S - CLOUD_FADE_S;
    if into < fade_start {
        here
    } else {
        let w = (into - fade_start) / CLOUD_FADE_S;
        here + (segment(k + 1) - here) * w
    }
}

fn tamper_signals(sc: &Scenario) -> Vec<Signal> {
    let mut out = Vec::new();
    for t in &sc.tampers {
        let kind = match t.kind {
            TamperKind::Magnetic => SignalKind::MagneticField,
            TamperKind::CoverOpen => SignalKind::CoverOpen,
            TamperKind::ReversedCt => continue,
        };
        out.push(Signal {
            t_s: t.from_s,
            kind,
            active: true,
        });
        out.push(Signal {
            t_s: t.to_s,
            kind,
            active: false,
        });
    }
    out.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
    out
}

fn positive(what: &str, x: f64) -> Result<(), Error> {
    if x.is_finite() && x > 0.0 {
        Ok(())
    } else {
        Err(Error::scenario(format!(
            "{what} must be a positive number, got {x}"
        )))
    }
}

fn intervals(what: &str, list: &[(f64, f64)]) -> Result<(), Error> {
    for (from, to) in list {
        if !(from.is_finite() && to.is_finite() && from < to && *from >= 0.0) {
            return Err(Error::scenario(format!(
                "{what}: interval [{from}, {to}] must have 0 <= from < to"
            )));
        }
    }
    Ok(())
}

/// Check every value of a scenario, naming the offending field.
pub(crate) fn validate(sc: &Scenario) -> Result<(), Error> {
    if sc.phases != 1 && sc.phases != 3 {
        return Err(Error::scenario(format!(
            "phases must be 1 or 3, got {}",
            sc.phases
        )));
    }
    if !(sc.sample_rate_hz.is_finite() && (1_000.0..=1_000_000.0).contains(&sc.sample_rate_hz)) {
        return Err(Error::scenario(format!(
            "sample_rate_hz must be between 1000 and 1000000, got {}",
            sc.sample_rate_hz
        )));
    }
    if let Some(d) = sc.duration_s {
        positive("duration_s", d)?;
    }
    if let Some(r) = sc.repeat_s {
        positive("repeat_s", r)?;
    }
    let s = &sc.supply;
    positive("supply.voltage_v", s.voltage_v)?;
    if !(40.0..=70.0).contains(&s.frequency_hz) {
        return Err(Error::scenario(format!(
            "supply.frequency_hz must be within 40..70, got {}",
            s.frequency_hz
        )));
    }
    if !(s.frequency_drift_hz.is_finite() && s.frequency_drift_hz.abs() <= 5.0) {
        return Err(Error::scenario(format!(
            "supply.frequency_drift_hz must be at most 5 Hz, got {}",
            s.frequency_drift_hz
        )));
    }
    positive("supply.drift_period_s", s.drift_period_s)?;
    for &(order, frac) in &s.harmonics {
        let order_ok = (2..=MAX_ORDER as u32).contains(&order);
        if !(order_ok && frac.is_finite() && (0.0..=0.5).contains(&frac)) {
            return Err(Error::scenario(format!(
                "supply.harmonics: [{order}, {frac}] needs an order 2..={MAX_ORDER} and a fraction 0..=0.5"
            )));
        }
    }
    intervals("supply.outages", &s.outages)?;
    for (what, x) in [
        ("noise.voltage_v", sc.noise.voltage_v),
        ("noise.current_a", sc.noise.current_a),
    ] {
        if !(x.is_finite() && x >= 0.0) {
            return Err(Error::scenario(format!(
                "{what} must be zero or positive, got {x}"
            )));
        }
    }
    for (n, load) in sc.loads.iter().enumerate() {
        let at = format!("load {} ({:?})", n + 1, load.name);
        if sc.phases == 1 && load.phase != PhaseSel::A {
            return Err(Error::scenario(format!(
                "{at}: a single-phase scenario has only phase a"
            )));
        }
        intervals(&format!("{at}.on"), &load.on)?;
        match load.kind {
            LoadKind::Resistive { power_w } => positive(&format!("{at}.power_w"), power_w)?,
            LoadKind::Motor {
                power_w,
                pf,
                inrush_factor,
                inrush_s,
            } => {
                positive(&format!("{at}.power_w"), power_w)?;
                if !(pf > 0.0 && pf <= 1.0) {
                    return Err(Error::scenario(format!(
                        "{at}.pf must be in (0, 1], got {pf}"
                    )));
                }
                if !(inrush_factor.is_finite() && inrush_factor >= 1.0) {
                    return Err(Error::scenario(format!(
                        "{at}.inrush_factor must be >= 1, got {inrush_factor}"
                    )));
                }
                positive(&format!("{at}.inrush_s"), inrush_s)?;
            }
            LoadKind::Rectifier { power_w, thd } => {
                positive(&format!("{at}.power_w"), power_w)?;
                if !(thd.is_finite() && (0.0..=3.0).contains(&thd)) {
                    return Err(Error::scenario(format!(
                        "{at}.thd must be within 0..=3, got {thd}"
                    )));
                }
            }
            LoadKind::Pv {
                peak_power_w,
                sunrise_s,
                sunset_s,
                cloudiness,
            } => {
                positive(&format!("{at}.peak_power_w"), peak_power_w)?;
                let day_ok = (0.0..86_400.0).contains(&sunrise_s)
                    && sunrise_s < sunset_s
                    && sunset_s <= 86_400.0;
                if !day_ok {
                    return Err(Error::scenario(format!(
                        "{at}: need 0 <= sunrise_s < sunset_s <= 86400, got {sunrise_s} and {sunset_s}"
                    )));
                }
                if !(0.0..=1.0).contains(&cloudiness) {
                    return Err(Error::scenario(format!(
                        "{at}.cloudiness must be within 0..=1, got {cloudiness}"
                    )));
                }
            }
            LoadKind::Battery { power_w } => {
                if !power_w.is_finite() {
                    return Err(Error::scenario(format!("{at}.power_w must be a number")));
                }
            }
            LoadKind::EvCharger { power_w, ramp_s } => {
                positive(&format!("{at}.power_w"), power_w)?;
                if !(ramp_s.is_finite() && ramp_s >= 0.0) {
                    return Err(Error::scenario(format!(
                        "{at}.ramp_s must be zero or positive, got {ramp_s}"
                    )));
                }
            }
        }
    }
    for (n, t) in sc.tampers.iter().enumerate() {
        let at = format!("tamper {}", n + 1);
        intervals(&at, &[(t.from_s, t.to_s)])?;
        if sc.phases == 1 && t.phase.is_some_and(|p| p != PhaseSel::A) {
            return Err(Error::scenario(format!(
                "{at}: a single-phase scenario has only phase a"
            )));
        }
        if !(t.current_factor.is_finite() && (0.0..=1.0).contains(&t.current_factor)) {
            return Err(Error::scenario(format!(
                "{at}.current_factor must be within 0..=1, got {}",
                t.current_factor
            )));
        }
    }
    Ok(())
}
