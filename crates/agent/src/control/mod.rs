//! Relay control: the DLMS disconnect-control (class 70) and limiter (class 71) state machines.
//!
//! Both are pure state machines: no I/O, no clock. The caller passes the time (`now_ms`, a
//! monotonic millisecond count) and the inputs, and gets back what to do with the relay
//! ([`RelayAction`]) and what to report ([`ControlEvent`]). A thin task drives the real relay
//! (GPIO, or nothing in a simulation) and turns the events into `event` records.
//!
//! - [`DisconnectControl`]: states, control modes 0–6 and transitions a–h of the Blue Book
//!   (DLMS UA 1000-1, interface class 70 "Disconnect control").
//! - [`Limiter`]: overload cut-off and release with the over/under-threshold durations, the
//!   emergency profile and the actions of interface class 71 "Limiter".
//! - [`RelayController`]: the two wired together the way a meter uses them (the limiter's
//!   actions are the local triggers of the disconnect control).

mod disconnect;
mod limiter;

pub use disconnect::{
    ControlMode, ControlState, DisconnectControl, Refusal, Transition, Trigger, TriggerOutcome,
};
pub use limiter::{
    EmergencyProfile, Limiter, LimiterAction, LimiterConfig, LimiterEvent, LimiterState,
    LimiterStep,
};

use serde::{Deserialize, Serialize};

/// What the physical relay (the meter's supply switch) must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayAction {
    /// Close the contacts: the consumer is supplied (`output_state` = true).
    Close,
    /// Open the contacts: the consumer is cut off (`output_state` = false).
    Open,
}

/// Something the control layer reports, to be sent as an `event` record and kept in the event log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ControlEvent {
    /// The disconnect control changed state.
    RelayStateChanged {
        /// Monotonic time of the change.
        now_ms: u64,
        /// State before.
        from: ControlState,
        /// State after.
        to: ControlState,
        /// The Blue Book transition taken.
        transition: Transition,
        /// The trigger that caused it.
        trigger: Trigger,
    },
    /// A trigger was refused because the control mode does not allow it in the current state.
    TriggerRefused {
        /// Monotonic time of the refusal.
        now_ms: u64,
        /// The refused trigger.
        trigger: Trigger,
        /// The state it was refused in.
        state: ControlState,
        /// The control mode in force.
        mode: ControlMode,
    },
    /// The limiter's state changed (threshold crossed for long enough, emergency started/ended).
    Limiter(LimiterEvent),
}

/// The output of one step of the [`RelayController`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ControlOutput {
    /// The relay command to carry out, if the relay must move.
    pub relay: Option<RelayAction>,
    /// Events to log and send, in order.
    pub events: Vec<ControlEvent>,
}

/// The disconnect control and the limiter wired together.
///
/// Remote triggers come from `down` commands, manual ones from the meter's button, local ones
/// from the limiter (over threshold → `local_disconnect`, back under → `local_reconnect`, which
/// the control mode may refuse: modes 1–4 then wait for a manual or remote reconnection).
#[derive(Clone, Debug)]
pub struct RelayController {
    disconnect: DisconnectControl,
    limiter: Option<Limiter>,
}

impl RelayController {
    /// A controller in `state` under `mode`, with an optional limiter.
    pub fn new(disconnect: DisconnectControl, limiter: Option<Limiter>) -> RelayController {
        RelayController {
            disconnect,
            limiter,
        }
    }

    /// The disconnect-control state machine.
    pub fn disconnect(&self) -> &DisconnectControl {
        &self.disconnect
    }

    /// The limiter, if configured.
    pub fn limiter(&self) -> Option<&Limiter> {
        self.limiter.as_ref()
    }

    /// Change the control mode (a configuration command). Mode 0 connects, which may close the
    /// relay.
    pub fn set_mode(&mut self, mode: ControlMode) -> ControlOutput {
        ControlOutput {
            relay: self.disconnect.set_mode(mode),
            events: Vec::new(),
        }
    }

    /// Replace the limiter configuration (a `limiter` command), keeping its timing state.
    pub fn set_limiter_config(&mut self, config: LimiterConfig) {
        match &mut self.limiter {
            Some(l) => l.set_config(config),
            None => self.limiter = Some(Limiter::new(config)),
        }
    }

    /// Apply a remote, manual or local trigger at `now_ms`.
    ///
    /// A refusal changes nothing and is returned as `Err`, so a command can be acknowledged
    /// with the reason (its `Display` is the message) and a refused button press logged.
    pub fn trigger(&mut self, now_ms: u64, trigger: Trigger) -> Result<ControlOutput, Refusal> {
        let outcome = self.disconnect.apply(trigger)?;
        let mut out = ControlOutput::default();
        push_outcome(&mut out, now_ms, trigger, outcome);
        Ok(out)
    }

    /// Feed the monitored active power (watts, import positive) at `now_ms` to the limiter and
    /// carry out what it decides. `now_unix_s` is the wall-clock time, used only for the
    /// emergency profile's activation window.
    pub fn observe_power(
        &mut self,
        now_ms: u64,
        now_unix_s: i64,
        active_power_w: f64,
    ) -> ControlOutput {
        let mut out = ControlOutput::default();
        let Some(limiter) = &mut self.limiter else {
            return out;
        };
        let step = limiter.observe(now_ms, now_unix_s, active_power_w);
        out.events
            .extend(step.events.into_iter().map(ControlEvent::Limiter));
        if let Some(action) = step.action {
            let trigger = match action {
                LimiterAction::Disconnect => Trigger::LocalDisconnect,
                LimiterAction::Reconnect => Trigger::LocalReconnect,
            };
            match self.disconnect.apply(trigger) {
                Ok(outcome) => push_outcome(&mut out, now_ms, trigger, outcome),
                Err(refusal) => out.events.push(ControlEvent::TriggerRefused {
                    now_ms,
                    trigger,
                    state: refusal.state,
                    mode: refusal.mode,
                }),
            }
        }
        out
    }
}

fn push_outcome(out: &mut ControlOutput, now_ms: u64, trigger: Trigger, outcome: TriggerOutcome) {
    if let Some(t) = outcome.transition {
        out.events.push(ControlEvent::RelayStateChanged {
            now_ms,
            from: outcome.from,
            to: outcome.to,
            transition: t,
            trigger,
        });
    }
    if outcome.relay.is_some() {
        out.relay = outcome.relay;
    }
}

#[cfg(test)]
mod tests;
