//! Integration tests of the metrology crate: the reference battery with exactly known IEEE 1459
//! answers, three-phase, robustness and flags, calibration, and property tests.

mod baselines;
mod calibration;
mod properties;
mod reference;
mod robustness;
mod signals;
mod three_phase;
