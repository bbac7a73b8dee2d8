//! Supervision alarms, theft and tamper detection jobs, and cases (issue 4 item 5, issue 7
//! items 4–5).
//!
//! - [`spawn_jobs`] runs the jobs periodically (the server runtime starts it once):
//!   supervision (a meter silent for N reporting intervals is `offline`, seed 002),
//!   overload/limiter and power-quality events, the tamper rules of [`analytics::tamper`] over
//!   events and readings, the energy balance of [`analytics::balance`] per observer meter over
//!   the meters whose `parent` it is (loss model from [`AlarmConfig`], calibration on an honest
//!   period, CUSUM for slow theft), and consumption-pattern scoring of daily rollups
//!   ([`analytics::pattern`], supervised once cases have produced labels). [`run_once`] runs
//!   them once at a given time (tests, `wattline` tools).
//! - Alarms of theft and tamper kinds open a case per suspected meter with their evidence; the
//!   routes let operators work alarms and move cases along (`routes.rs`).
//! - Storage is [`AlarmStore`] (`Database::alarms()`), SQLite and PostgreSQL.

mod config;
mod jobs;
mod routes;

pub use crate::store::alarms::{
    Alarm, AlarmAction, AlarmFilter, AlarmKind, AlarmScope, AlarmSeverity, AlarmStatus, AlarmStore,
    Case, CaseEvidence, CaseFilter, CaseState, CaseTransition, JobLock, NewAlarm, RaisedAlarm,
};
pub use config::{
    AlarmConfig, BalanceSettings, LineConfig, MaterialName, ObserverConfig, PatternSettings,
    TransformerConfig,
};
pub use jobs::{JobsReport, run_once, run_once_notifying, spawn_jobs};
pub(crate) use routes::routes;
