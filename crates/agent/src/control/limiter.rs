//! The limiter of DLMS interface class 71 (Blue Book, DLMS UA 1000-1, "Limiter"): overload
//! cut-off and release, with an emergency profile.
//!
//! The Blue Book limiter watches a monitored value (here: total active power in watts, import
//! positive — the overload of seed 001 Fig. 10, where the relay cuts the current once the power
//! exceeds the authorised limit). When the value stays above `threshold_active` for at least
//! `min_over_threshold_duration`, it executes `action_over_threshold`; when it then stays at or
//! below the threshold for at least `min_under_threshold_duration`, it executes
//! `action_under_threshold`. A meter links those actions to the disconnect control's
//! `local_disconnect` (g) and `local_reconnect` (h); whether the reconnection really closes the
//! relay is decided by the disconnect control's mode (only modes 5 and 6 enable h), which is how
//! "reconnection per the control mode" comes about.
//!
//! `threshold_active` is `threshold_normal`, or `threshold_emergency` while an emergency profile
//! is active: its `emergency_profile_id` is in `emergency_profile_group_id_list` and the time is
//! within `[emergency_activation_time, emergency_activation_time + emergency_duration)`.

use serde::{Deserialize, Serialize};

/// Configuration of the limiter (the writable attributes of class 71 that matter to a meter).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimiterConfig {
    /// `threshold_normal`: the authorised active power in watts.
    pub threshold_normal_w: f64,
    /// `threshold_emergency`: the limit in watts while an emergency profile is active.
    /// Without it, an emergency profile changes nothing.
    #[serde(default)]
    pub threshold_emergency_w: Option<f64>,
    /// `min_over_threshold_duration`: how long, in seconds, the power must stay above the
    /// threshold before the relay is cut. Short peaks (a motor's inrush) must not trip it.
    #[serde(default = "default_min_over_threshold_duration_s")]
    pub min_over_threshold_duration_s: u32,
    /// `min_under_threshold_duration`: how long, in seconds, the power must stay at or below the
    /// threshold before the limiter releases (requests local reconnection).
    #[serde(default = "default_min_under_threshold_duration_s")]
    pub min_under_threshold_duration_s: u32,
    /// `emergency_profile`: the emergency period, if one is scheduled.
    #[serde(default)]
    pub emergency_profile: Option<EmergencyProfile>,
    /// `emergency_profile_group_id_list`: the emergency groups this meter belongs to.
    #[serde(default)]
    pub emergency_profile_group_ids: Vec<u16>,
}

const fn default_min_over_threshold_duration_s() -> u32 {
    10
}

const fn default_min_under_threshold_duration_s() -> u32 {
    60
}

/// `emergency_profile` (class 71 attribute 9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmergencyProfile {
    /// `emergency_profile_id`: the group it applies to.
    pub id: u16,
    /// `emergency_activation_time`, as Unix seconds (UTC).
    pub activation_unix_s: i64,
    /// `emergency_duration` in seconds.
    pub duration_s: u32,
}

impl EmergencyProfile {
    fn covers(&self, now_unix_s: i64) -> bool {
        now_unix_s >= self.activation_unix_s
            && now_unix_s
                < self
                    .activation_unix_s
                    .saturating_add(i64::from(self.duration_s))
    }
}

/// What the limiter asks of the disconnect control.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimiterAction {
    /// `action_over_threshold`: trigger `local_disconnect`.
    Disconnect,
    /// `action_under_threshold`: trigger `local_reconnect`.
    Reconnect,
}

/// Where the limiter stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimiterState {
    /// At or below the threshold, nothing pending.
    Normal,
    /// Above the threshold since `since_ms`, not yet long enough.
    Over {
        /// When the power first went above the threshold.
        since_ms: u64,
    },
    /// The over-threshold action was executed; waiting for the power to stay low.
    Tripped {
        /// When the power went at or below the threshold again, if it has.
        under_since_ms: Option<u64>,
    },
}

/// What the limiter reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "limiter", rename_all = "snake_case")]
pub enum LimiterEvent {
    /// Power stayed above the threshold for `min_over_threshold_duration`: overload cut-off.
    OverThreshold {
        /// Monotonic time.
        now_ms: u64,
        /// The power that completed the duration.
        active_power_w: f64,
        /// The threshold in force.
        threshold_w: f64,
    },
    /// Power stayed at or below the threshold for `min_under_threshold_duration`: release.
    UnderThreshold {
        /// Monotonic time.
        now_ms: u64,
        /// The power that completed the duration.
        active_power_w: f64,
        /// The threshold in force.
        threshold_w: f64,
    },
    /// An emergency profile became active: `threshold_emergency_w` now applies.
    EmergencyStarted {
        /// Monotonic time.
        now_ms: u64,
        /// The profile id.
        profile_id: u16,
    },
    /// The emergency profile ended: `threshold_normal_w` applies again.
    EmergencyEnded {
        /// Monotonic time.
        now_ms: u64,
        /// The profile id.
        profile_id: u16,
    },
}

/// The output of one [`Limiter::observe`] step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LimiterStep {
    /// The action to execute, if one is due now.
    pub action: Option<LimiterAction>,
    /// What happened, in order.
    pub events: Vec<LimiterEvent>,
}

/// The limiter state machine. Feed it every new value of the monitored power.
#[derive(Clone, Debug)]
pub struct Limiter {
    config: LimiterConfig,
    state: LimiterState,
    emergency_active: bool,
}

impl Limiter {
    /// A limiter in the `Normal` state.
    pub fn new(config: LimiterConfig) -> Limiter {
        Limiter {
            config,
            state: LimiterState::Normal,
            emergency_active: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LimiterConfig {
        &self.config
    }

    /// Replace the configuration. A pending over-threshold period keeps running against the new
    /// threshold; a trip stays a trip until released.
    pub fn set_config(&mut self, config: LimiterConfig) {
        self.config = config;
    }

    /// The current state.
    pub fn state(&self) -> LimiterState {
        self.state
    }

    /// `emergency_profile_active` as of the last observation.
    pub fn emergency_active(&self) -> bool {
        self.emergency_active
    }

    /// `threshold_active` at `now_unix_s`.
    pub fn threshold_active_w(&self, now_unix_s: i64) -> f64 {
        match (
            self.emergency_profile_in_force(now_unix_s),
            self.config.threshold_emergency_w,
        ) {
            (Some(_), Some(t)) => t,
            _ => self.config.threshold_normal_w,
        }
    }

    fn emergency_profile_in_force(&self, now_unix_s: i64) -> Option<EmergencyProfile> {
        self.config.emergency_profile.filter(|p| {
            self.config.emergency_profile_group_ids.contains(&p.id) && p.covers(now_unix_s)
        })
    }

    /// Observe `active_power_w` at monotonic `now_ms` (wall clock `now_unix_s`, for the
    /// emergency profile) and return the action due, if any.
    pub fn observe(&mut self, now_ms: u64, now_unix_s: i64, active_power_w: f64) -> LimiterStep {
        let mut step = LimiterStep::default();
        let profile = self.emergency_profile_in_force(now_unix_s);
        match (self.emergency_active, profile) {
            (false, Some(p)) => {
                self.emergency_active = true;
                step.events.push(LimiterEvent::EmergencyStarted {
                    now_ms,
                    profile_id: p.id,
                });
            }
            (true, None) => {
                self.emergency_active = false;
                let profile_id = self
                    .config
                    .emergency_profile
                    .map(|p| p.id)
                    .unwrap_or_default();
                step.events
                    .push(LimiterEvent::EmergencyEnded { now_ms, profile_id });
            }
            _ => {}
        }
        let threshold_w = self.threshold_active_w(now_unix_s);
        // A NaN power (a broken sensor reading) is neither over nor under: it changes nothing,
        // so a glitch cannot cut a customer off or end a trip early.
        if active_power_w.is_nan() {
            return step;
        }
        let over = active_power_w > threshold_w;
        let min_over_ms = u64::from(self.config.min_over_threshold_duration_s) * 1000;
        let min_under_ms = u64::from(self.config.min_under_threshold_duration_s) * 1000;
        self.state = match (self.state, over) {
            (LimiterState::Normal, false) => LimiterState::Normal,
            (LimiterState::Normal, true) | (LimiterState::Over { .. }, true) => {
                let since_ms = match self.state {
                    LimiterState::Over { since_ms } => since_ms,
                    _ => now_ms,
                };
                if now_ms.saturating_sub(since_ms) >= min_over_ms {
                    step.action = Some(LimiterAction::Disconnect);
                    step.events.push(LimiterEvent::OverThreshold {
                        now_ms,
                        active_power_w,
                        threshold_w,
                    });
                    LimiterState::Tripped {
                        under_since_ms: None,
                    }
                } else {
                    LimiterState::Over { since_ms }
                }
            }
            (LimiterState::Over { .. }, false) => LimiterState::Normal,
            (LimiterState::Tripped { .. }, true) => LimiterState::Tripped {
                under_since_ms: None,
            },
            (LimiterState::Tripped { under_since_ms }, false) => {
                let since_ms = under_since_ms.unwrap_or(now_ms);
                if now_ms.saturating_sub(since_ms) >= min_under_ms {
                    step.action = Some(LimiterAction::Reconnect);
                    step.events.push(LimiterEvent::UnderThreshold {
                        now_ms,
                        active_power_w,
                        threshold_w,
                    });
                    LimiterState::Normal
                } else {
                    LimiterState::Tripped {
                        under_since_ms: Some(since_ms),
                    }
                }
            }
        };
        step
    }
}
