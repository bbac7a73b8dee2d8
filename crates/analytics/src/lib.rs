//! `analytics`: pure detectors of electricity theft and meter tampering.
//!
//! Nothing here does I/O or reads a clock: callers pass readings, events and histories in and get
//! findings plus diagnostics back. Analytics over field data never fails on messy data; only a
//! malformed *file* (fed line by line to a parser here) or an invalid configuration is an
//! [`Error`].
//!
//! - [`balance`]: energy balance of an observer meter (a line sensor before a house, a feeder or
//!   transformer meter) against the meters behind it, with a technical-loss model (line I²R,
//!   neutral current, transformer), thresholds from the meters' accuracy classes, calibration on
//!   an honest period, CUSUM, and the seed's flat 2 % rule for comparison.
//! - [`tamper`]: debounced tamper rules over a meter's events and readings (cover, magnet,
//!   phase/neutral mismatch, reverse flow, current without voltage, power cycling, clock).
//! - [`pattern`]: consumption-pattern features against a meter's own history and its peers, an
//!   unsupervised score, and [`GbtModel`], gradient-boosted trees trained from inspection results;
//!   histories come from [`HistoryParser`] (long `meter_id,date,kwh` or wide SGCC-style CSV).
//! - [`synth`]: realistic synthetic households and the six theft attacks of Jokar et al. (2016),
//!   used by the evaluation; [`eval`] computes ROC-AUC, PR-AUC and MAP@N.
//!
//! ```
//! use analytics::{extract_features, parse_histories, score_unsupervised, PatternConfig, ValueLimits};
//!
//! // Two years of daily data for 40 meters; meter m07 drops to 30 % in the second year.
//! let mut csv = String::from("meter_id,date,kwh\n");
//! for m in 0..40 {
//!     for d in 0..730 {
//!         let (y, mo, da) = analytics::civil_from_days(analytics::days_from_civil(2022, 1, 1) + d);
//!         let mut kwh = 8.0 + (m % 5) as f64 + ((d * 7 + m * 3) % 11) as f64 * 0.3;
//!         if m == 7 && d >= 365 {
//!             kwh *= 0.3;
//!         }
//!         csv.push_str(&format!("m{m:02},{y}-{mo:02}-{da:02},{kwh:.2}\n"));
//!     }
//! }
//! let batch = parse_histories(&csv, ValueLimits::default()).unwrap();
//! let features = extract_features(&batch.histories, &PatternConfig::default());
//! let mut scores = score_unsupervised(&features);
//! analytics::rank(&mut scores);
//! assert_eq!(scores[0].meter_id, "m07");
//! assert!(scores[0].reasons[0].contains("fell"));
//! ```

pub mod balance;
mod error;
pub mod eval;
mod gbt;
mod history;
pub mod pattern;
pub mod synth;
pub mod tamper;

pub use error::{Error, ErrorKind};
pub use gbt::{GbtModel, GbtParams, parse_labels};
pub use history::{
    DayNumber, Diagnostic, HistoryBatch, HistoryParser, MeterHistory, ValueLimits, civil_from_days,
    days_from_civil, format_day, parse_date_time, parse_histories,
};
pub use pattern::{
    FeatureSet, MeterFeatures, PatternConfig, TheftScore, extract_features, feature_names, rank,
    score_unsupervised,
};
