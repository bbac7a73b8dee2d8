//! Settings of the alarm jobs (the `[alarms]` table of the server config). Every field has a
//! default, so an empty table runs all jobs with production values; `wattline demo` shortens
//! the intervals (see [`AlarmConfig::demo`]).
//!
//! ```toml
//! [alarms]
//! every_s = 60                  # how often the jobs run
//! offline_after_intervals = 5   # silent this many reporting intervals ⇒ offline alarm
//! event_lookback_s = 21600      # events re-read behind the cursor (late deliveries)
//!
//! [alarms.balance]
//! bucket_s = 900                # energy-balance interval (15 min; the demo's follows its meters)
//! window_buckets = 96           # intervals evaluated per run (CUSUM context)
//! calibration_buckets = 96      # first intervals of an observer used as its honest period
//! flat_percent = 2.0            # optional: the seed's flat rule instead of the loss model
//! class = "1"                   # meters' accuracy class: "2", "1", "0.5S", "0.2S" or a percent
//! basic_current_a = 5.0
//! resolution_wh = 0.1
//! nominal_voltage_v = 230.0
//! power_factor = 0.95
//! service = { length_m = 30.0, cross_section_mm2 = 16.0, material = "copper" }
//!
//! [alarms.balance.observers.pole-7]   # per observer meter (its id)
//! three_phase = true
//! feeder = [{ length_m = 250.0, cross_section_mm2 = 95.0, material = "aluminium", uniform = true }]
//! transformer = { rated_kva = 250.0, no_load_loss_w = 425.0, load_loss_w = 3250.0 }
//!
//! [alarms.pattern]
//! every_s = 86400
//! days = 400
//! alarm_score = 0.9
//! ```

use std::collections::BTreeMap;

use analytics::balance::{
    AccuracyClass, BalanceConfig, BalanceMode, Conductor, LineSegment, LoadDistribution, Material,
    Transformer,
};
use serde::Deserialize;

/// All alarm jobs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlarmConfig {
    /// Seconds between runs of the jobs.
    pub every_s: u64,
    /// A meter silent for this many of its reporting intervals gets an `offline` alarm.
    pub offline_after_intervals: u32,
    /// Events and readings up to this far behind the last processed time are read again, so
    /// late deliveries (a meter's outbox after an outage) and the tamper rules' debounce
    /// context are not lost. Re-reading never duplicates an alarm.
    pub event_lookback_s: i64,
    /// At most this many readings per meter and run feed the tamper rules.
    pub max_readings_per_run: u32,
    /// Energy balance.
    pub balance: BalanceSettings,
    /// Consumption-pattern scoring.
    pub pattern: PatternSettings,
}

impl Default for AlarmConfig {
    fn default() -> Self {
        Self {
            every_s: 60,
            offline_after_intervals: 5,
            event_lookback_s: 6 * 3600,
            max_readings_per_run: 20_000,
            balance: BalanceSettings::default(),
            pattern: PatternSettings::default(),
        }
    }
}

impl AlarmConfig {
    /// Short intervals for `wattline demo` with its default 10 s reporting interval (see
    /// [`AlarmConfig::demo_for_interval`]).
    pub fn demo() -> Self {
        Self::demo_for_interval(10)
    }

    /// Short intervals for `wattline demo`, whose meters report every `reporting_interval_s`
    /// seconds: theft and tamper cases appear within minutes.
    ///
    /// The balance interval is 10 s (or the reporting interval when longer). Not shorter:
    /// meters stamp a reading with the end of the period it measured, but their readings fall
    /// on their own reporting instants, so each interval boundary is interpolated between two
    /// readings and a load that changes within a reporting interval is split between two
    /// balance intervals only approximately; in a 2 s interval that error is a sizeable share
    /// of the class-limit threshold. (Energy moved across a boundary this way shows as a
    /// negative neighbour and does not alarm, see `analytics::balance::evaluate_balance`.) The
    /// calibration's 48 intervals then take 8 minutes; until they have passed (or for good,
    /// once the uncalibrated model has seen unexplained energy in them) the class-limit
    /// thresholds decide, which find the demo's slow theft once it passes ~2.5 % of the load.
    /// The simulated meters keep their registers in fractions of a Wh, so the register
    /// resolution is 1 mWh rather than the production 0.1 Wh.
    pub fn demo_for_interval(reporting_interval_s: u32) -> Self {
        Self {
            every_s: 5,
            event_lookback_s: 900,
            balance: BalanceSettings {
                bucket_s: i64::from(reporting_interval_s.max(10)),
                window_buckets: 60,
                calibration_buckets: 48,
                resolution_wh: 0.001,
                ..BalanceSettings::default()
            },
            ..Self::default()
        }
    }
}

impl AlarmConfig {
    /// Range and consistency checks of every key, so a bad value stops the server at start
    /// rather than a job at its first run; the message names the table and the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.every_s == 0 {
            return Err("[alarms] every_s: must be at least 1".into());
        }
        if self.offline_after_intervals == 0 {
            return Err("[alarms] offline_after_intervals: must be at least 1".into());
        }
        if self.event_lookback_s < 0 {
            return Err(format!(
                "[alarms] event_lookback_s: must not be negative, got {}",
                self.event_lookback_s
            ));
        }
        if self.max_readings_per_run == 0 {
            return Err("[alarms] max_readings_per_run: must be at least 1".into());
        }
        self.balance.validate()?;
        let p = &self.pattern;
        if p.every_s < 1 {
            return Err(format!(
                "[alarms.pattern] every_s: must be at least 1, got {}",
                p.every_s
            ));
        }
        if p.days < 1 {
            return Err(format!(
                "[alarms.pattern] days: must be at least 1, got {}",
                p.days
            ));
        }
        if !(p.alarm_score > 0.0 && p.alarm_score <= 1.0) {
            return Err(format!(
                "[alarms.pattern] alarm_score: must be in (0, 1], got {}",
                p.alarm_score
            ));
        }
        Ok(())
    }
}

/// A line segment in the config.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    /// Route length, metres (one way).
    pub length_m: f64,
    /// Phase conductor cross-section, mm².
    pub cross_section_mm2: f64,
    /// Neutral cross-section, mm² (default: the phase's).
    #[serde(default)]
    pub neutral_mm2: Option<f64>,
    /// `copper` or `aluminium`.
    #[serde(default = "copper")]
    pub material: MaterialName,
    /// Loads tapped evenly along the segment (a street feeder) rather than at its end.
    #[serde(default)]
    pub uniform: bool,
}

fn copper() -> MaterialName {
    MaterialName::Copper
}

/// Conductor material names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaterialName {
    /// Annealed copper.
    Copper,
    /// Aluminium.
    Aluminium,
}

impl LineConfig {
    fn validate(&self, key: &str) -> Result<(), String> {
        if !(self.length_m >= 0.0 && self.length_m.is_finite()) {
            return Err(format!(
                "{key}: length_m must be 0 or more, got {}",
                self.length_m
            ));
        }
        let neutral = self.neutral_mm2.unwrap_or(self.cross_section_mm2);
        if !(self.cross_section_mm2 > 0.0 && neutral > 0.0) {
            return Err(format!(
                "{key}: cross_section_mm2 and neutral_mm2 must be positive"
            ));
        }
        Ok(())
    }

    pub(crate) fn segment(&self) -> LineSegment {
        let material = match self.material {
            MaterialName::Copper => Material::Copper,
            MaterialName::Aluminium => Material::Aluminium,
        };
        LineSegment {
            length_m: self.length_m,
            phase: Conductor {
                material,
                cross_section_mm2: self.cross_section_mm2,
            },
            neutral: Conductor {
                material,
                cross_section_mm2: self.neutral_mm2.unwrap_or(self.cross_section_mm2),
            },
            distribution: if self.uniform {
                LoadDistribution::Uniform
            } else {
                LoadDistribution::Lumped
            },
        }
    }
}

/// A transformer between an observer and its children.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerConfig {
    /// Rating, kVA.
    pub rated_kva: f64,
    /// Iron loss, W.
    pub no_load_loss_w: f64,
    /// Copper loss at rated load, W.
    pub load_loss_w: f64,
}

/// Per-observer network description.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ObserverConfig {
    /// A three-phase feeder meter (children spread over the phases) rather than a
    /// single-phase line sensor before one house (seed 003).
    pub three_phase: bool,
    /// Shared segments between the observer and the service lines.
    pub feeder: Vec<LineConfig>,
    /// The service line of each child (default: [`BalanceSettings::service`]).
    pub service: Option<LineConfig>,
    /// A transformer downstream of the observer.
    pub transformer: Option<TransformerConfig>,
}

/// Energy balance per observer meter (a meter that is some meters' `parent`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalanceSettings {
    /// Whether the job runs.
    pub enabled: bool,
    /// Balance interval, seconds (900 = 15 min; short in the demo).
    pub bucket_s: i64,
    /// Intervals evaluated per run, ending at the last complete one (CUSUM and day context).
    pub window_buckets: usize,
    /// The first this many complete intervals of an observer are its calibration period; it is
    /// used only when the uncalibrated model finds nothing in it (a house stealing from the
    /// start is never "calibrated honest"). At least 48.
    pub calibration_buckets: usize,
    /// The seed's flat rule, percent, instead of the loss model (for comparison).
    pub flat_percent: Option<f64>,
    /// Accuracy class of the meters: `2`, `1`, `0.5S`, `0.2S`, or a flat percent like `1.5%`.
    pub class: String,
    /// Basic current Ib of the meters, A.
    pub basic_current_a: f64,
    /// Register resolution, Wh.
    pub resolution_wh: f64,
    /// Phase-to-neutral voltage, V.
    pub nominal_voltage_v: f64,
    /// Assumed load power factor.
    pub power_factor: f64,
    /// Conductor temperature, °C.
    pub conductor_temp_c: f64,
    /// Default service line of a child meter.
    pub service: LineConfig,
    /// Per observer (by meter id).
    pub observers: BTreeMap<String, ObserverConfig>,
}

impl Default for BalanceSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            bucket_s: 900,
            window_buckets: 96,
            calibration_buckets: 96,
            flat_percent: None,
            class: "1".into(),
            basic_current_a: 5.0,
            resolution_wh: 0.1,
            nominal_voltage_v: 230.0,
            power_factor: 0.95,
            conductor_temp_c: 25.0,
            service: LineConfig {
                length_m: 30.0,
                cross_section_mm2: 16.0,
                neutral_mm2: None,
                material: MaterialName::Copper,
                uniform: false,
            },
            observers: BTreeMap::new(),
        }
    }
}

impl BalanceSettings {
    /// The accuracy class, or a sentence saying what is wrong with it.
    pub(crate) fn accuracy_class(&self) -> Result<AccuracyClass, String> {
        let c = self.class.trim();
        Ok(match c {
            "2" => AccuracyClass::Class2,
            "1" => AccuracyClass::Class1,
            "0.5S" | "0.5s" => AccuracyClass::Class05S,
            "0.2S" | "0.2s" => AccuracyClass::Class02S,
            other => match other
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<f64>().ok())
            {
                Some(p) if p > 0.0 && p < 50.0 => AccuracyClass::Percent(p),
                _ => {
                    return Err(format!(
                        "[alarms.balance] class: {other:?} is not one of 2, 1, 0.5S, 0.2S or a percent like 1.5%"
                    ));
                }
            },
        })
    }

    fn validate(&self) -> Result<(), String> {
        let t = "[alarms.balance]";
        if self.bucket_s < 1 {
            return Err(format!(
                "{t} bucket_s: must be at least 1, got {}",
                self.bucket_s
            ));
        }
        if self.window_buckets == 0 {
            return Err(format!("{t} window_buckets: must be at least 1"));
        }
        if self.calibration_buckets < 48 {
            return Err(format!(
                "{t} calibration_buckets: the calibration needs at least 48 intervals, got {}",
                self.calibration_buckets
            ));
        }
        if let Some(p) = self.flat_percent
            && !(p > 0.0 && p < 100.0)
        {
            return Err(format!("{t} flat_percent: must be in (0, 100), got {p}"));
        }
        self.accuracy_class()?;
        let positive = [
            ("basic_current_a", self.basic_current_a),
            ("nominal_voltage_v", self.nominal_voltage_v),
        ];
        for (key, v) in positive {
            if !(v > 0.0 && v.is_finite()) {
                return Err(format!("{t} {key}: must be positive, got {v}"));
            }
        }
        if !(self.resolution_wh >= 0.0 && self.resolution_wh.is_finite()) {
            return Err(format!(
                "{t} resolution_wh: must be 0 or more, got {}",
                self.resolution_wh
            ));
        }
        if !(self.power_factor > 0.0 && self.power_factor <= 1.0) {
            return Err(format!(
                "{t} power_factor: must be in (0, 1], got {}",
                self.power_factor
            ));
        }
        if !(-50.0..=250.0).contains(&self.conductor_temp_c) {
            return Err(format!(
                "{t} conductor_temp_c: must be -50 to 250 °C, got {}",
                self.conductor_temp_c
            ));
        }
        self.service.validate(&format!("{t} service"))?;
        for (id, o) in &self.observers {
            let t = format!("[alarms.balance.observers.{id}]");
            for (i, l) in o.feeder.iter().enumerate() {
                l.validate(&format!("{t} feeder[{i}]"))?;
            }
            if let Some(l) = &o.service {
                l.validate(&format!("{t} service"))?;
            }
            if let Some(tr) = &o.transformer {
                let ok = tr.rated_kva > 0.0 && tr.no_load_loss_w >= 0.0 && tr.load_loss_w >= 0.0;
                if !ok {
                    return Err(format!(
                        "{t} transformer: rated_kva must be positive and the losses 0 or more"
                    ));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn analytics_config(&self, day_offset_s: i64) -> BalanceConfig {
        BalanceConfig {
            mode: match self.flat_percent {
                Some(p) => BalanceMode::FlatPercent(p),
                None => BalanceMode::LossModel,
            },
            conductor_temp_c: self.conductor_temp_c,
            day_offset_s,
            ..BalanceConfig::default()
        }
    }

    pub(crate) fn transformer(t: &TransformerConfig) -> Transformer {
        Transformer {
            rated_kva: t.rated_kva,
            no_load_loss_w: t.no_load_loss_w,
            load_loss_w: t.load_loss_w,
        }
    }
}

/// Consumption-pattern scoring over daily rollups.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PatternSettings {
    /// Whether the job runs.
    pub enabled: bool,
    /// Seconds between scorings (daily data changes once a day).
    pub every_s: i64,
    /// Days of history scored.
    pub days: i64,
    /// A score at or above this raises a `theft_pattern` alarm.
    pub alarm_score: f64,
    /// The supervised model is trained from case labels once there are this many of each
    /// class; below that the unsupervised score is used.
    pub min_labels_per_class: usize,
}

impl Default for PatternSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            every_s: 86_400,
            days: 400,
            alarm_score: 0.9,
            min_labels_per_class: 10,
        }
    }
}
