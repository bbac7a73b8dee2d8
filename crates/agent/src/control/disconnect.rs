//! The disconnect-control state machine of DLMS interface class 70 (Blue Book, DLMS UA 1000-1,
//! "Disconnect control"): states, control modes and transitions a–h.
//!
//! The Blue Book's state diagram, which this file encodes:
//!
//! | transition | trigger             | from                     | to                       |
//! | ---------- | ------------------- | ------------------------ | ------------------------ |
//! | a          | `remote_reconnect`  | disconnected (0)         | connected (1)            |
//! | b          | `remote_disconnect` | connected (1)            | disconnected (0)         |
//! | c          | `remote_disconnect` | ready_for_reconnection (2) | disconnected (0)       |
//! | d          | `remote_reconnect`  | disconnected (0)         | ready_for_reconnection (2) |
//! | e          | `manual_reconnect`  | ready_for_reconnection (2) | connected (1)          |
//! | f          | `manual_disconnect` | connected (1)            | ready_for_reconnection (2) |
//! | g          | `local_disconnect`  | connected (1)            | ready_for_reconnection (2) |
//! | h          | `local_reconnect`   | ready_for_reconnection (2) | connected (1)          |
//!
//! and which transitions each `control_mode` enables:
//!
//! | mode | disconnection               | reconnection                 |
//! | ---- | --------------------------- | ---------------------------- |
//! | 0    | none: always `connected`    | none                         |
//! | 1    | remote b, c; manual f; local g | remote d; manual e        |
//! | 2    | remote b, c; manual f; local g | remote a; manual e        |
//! | 3    | remote b, c; local g        | remote d; manual e           |
//! | 4    | remote b, c; local g        | remote a; manual e           |
//! | 5    | remote b, c; manual f; local g | remote d; manual e; local h |
//! | 6    | remote b, c; local g        | remote d; manual e; local h  |
//!
//! So `remote_reconnect` leads straight to `connected` only in modes 2 and 4 ("direct remote
//! reconnection", transition a); in the other modes it leads to `ready_for_reconnection` (d) and
//! the customer closes the relay with the button (e) — the safety rule that nobody re-energises
//! an installation remotely without someone on site agreeing.
//!
//! A trigger with no enabled transition from the current state is accepted as a no-op (so
//! repeated commands are idempotent) when the mode enables that trigger at all and either
//!
//! - one of its enabled transitions leads to the current state (a second `remote_disconnect`;
//!   `remote_reconnect` in `ready_for_reconnection` under modes 1, 3, 5, 6), or
//! - the relay is already where the trigger would put it (`remote_reconnect` while
//!   `connected`; the limiter's `local_disconnect` while the head end holds the meter
//!   `disconnected`).
//!
//! Every other trigger is refused without any change. In particular nothing but a remote
//! command leaves `disconnected`: neither the button (`manual_reconnect`) nor the limiter's
//! release (`local_reconnect`) can undo a remote disconnection.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::RelayAction;

/// `control_state` (attribute 3) of the disconnect control.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlState {
    /// 0: the output is open, the consumer is disconnected.
    Disconnected,
    /// 1: the output is closed, the consumer is connected.
    Connected,
    /// 2: the output is open, and may be closed manually (or locally, mode 5/6).
    ReadyForReconnection,
}

impl ControlState {
    /// All states, in code order.
    pub const ALL: [ControlState; 3] = [
        ControlState::Disconnected,
        ControlState::Connected,
        ControlState::ReadyForReconnection,
    ];

    /// The DLMS enum code (0, 1, 2).
    pub const fn code(self) -> u8 {
        match self {
            ControlState::Disconnected => 0,
            ControlState::Connected => 1,
            ControlState::ReadyForReconnection => 2,
        }
    }

    /// The state for a DLMS enum code, or `None` for an unknown code.
    pub const fn from_code(code: u8) -> Option<ControlState> {
        match code {
            0 => Some(ControlState::Disconnected),
            1 => Some(ControlState::Connected),
            2 => Some(ControlState::ReadyForReconnection),
            _ => None,
        }
    }

    /// `output_state` (attribute 2): true when the relay is closed. Only `connected` closes it.
    pub const fn output_state(self) -> bool {
        matches!(self, ControlState::Connected)
    }

    /// The snake_case name used in events, logs and the status display.
    pub const fn as_str(self) -> &'static str {
        match self {
            ControlState::Disconnected => "disconnected",
            ControlState::Connected => "connected",
            ControlState::ReadyForReconnection => "ready_for_reconnection",
        }
    }
}

impl fmt::Display for ControlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `control_mode` (attribute 4): which transitions are enabled. See the module table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct ControlMode(u8);

impl ControlMode {
    /// Mode 0: the object is always `connected`; every trigger is refused.
    pub const NONE: ControlMode = ControlMode(0);
    /// Modes 0 to 6.
    pub const ALL: [ControlMode; 7] = [
        ControlMode(0),
        ControlMode(1),
        ControlMode(2),
        ControlMode(3),
        ControlMode(4),
        ControlMode(5),
        ControlMode(6),
    ];

    /// The mode with DLMS code `code`, or `None` above 6.
    pub const fn new(code: u8) -> Option<ControlMode> {
        if code <= 6 {
            Some(ControlMode(code))
        } else {
            None
        }
    }

    /// The DLMS enum code.
    pub const fn code(self) -> u8 {
        self.0
    }

    /// Whether this mode enables `transition` (the module's mode table).
    pub const fn enables(self, transition: Transition) -> bool {
        use Transition::*;
        match (self.0, transition) {
            (0, _) => false,
            (_, B | C | G | E) => true,
            (2 | 4, A) => true,
            (1 | 3 | 5 | 6, D) => true,
            (1 | 2 | 5, F) => true,
            (5 | 6, H) => true,
            _ => false,
        }
    }
}

impl TryFrom<u8> for ControlMode {
    type Error = String;
    fn try_from(code: u8) -> Result<ControlMode, String> {
        ControlMode::new(code).ok_or_else(|| format!("control mode {code} is not one of 0 to 6"))
    }
}

impl From<ControlMode> for u8 {
    fn from(mode: ControlMode) -> u8 {
        mode.0
    }
}

impl fmt::Display for ControlMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What asks the disconnect control to move.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Method 1 `remote_disconnect`, from the head end (a `relay` command).
    RemoteDisconnect,
    /// Method 2 `remote_reconnect`, from the head end.
    RemoteReconnect,
    /// The customer or an engineer on site, e.g. the push button (disconnect).
    ManualDisconnect,
    /// The customer or an engineer on site, e.g. the push button (reconnect).
    ManualReconnect,
    /// An internal function of the meter: the limiter, a supply-supervision monitor.
    LocalDisconnect,
    /// An internal function of the meter releasing its local disconnection.
    LocalReconnect,
}

impl Trigger {
    /// All triggers.
    pub const ALL: [Trigger; 6] = [
        Trigger::RemoteDisconnect,
        Trigger::RemoteReconnect,
        Trigger::ManualDisconnect,
        Trigger::ManualReconnect,
        Trigger::LocalDisconnect,
        Trigger::LocalReconnect,
    ];

    /// Whether the trigger asks for the relay to be closed (a reconnection) rather than opened.
    pub const fn closes_relay(self) -> bool {
        matches!(
            self,
            Trigger::RemoteReconnect | Trigger::ManualReconnect | Trigger::LocalReconnect
        )
    }

    /// The Blue Book method/trigger name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Trigger::RemoteDisconnect => "remote_disconnect",
            Trigger::RemoteReconnect => "remote_reconnect",
            Trigger::ManualDisconnect => "manual_disconnect",
            Trigger::ManualReconnect => "manual_reconnect",
            Trigger::LocalDisconnect => "local_disconnect",
            Trigger::LocalReconnect => "local_reconnect",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The transitions of the Blue Book state diagram, named by their letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// `remote_reconnect`: disconnected → connected (modes 2, 4).
    A,
    /// `remote_disconnect`: connected → disconnected.
    B,
    /// `remote_disconnect`: ready_for_reconnection → disconnected.
    C,
    /// `remote_reconnect`: disconnected → ready_for_reconnection (modes 1, 3, 5, 6).
    D,
    /// `manual_reconnect`: ready_for_reconnection → connected.
    E,
    /// `manual_disconnect`: connected → ready_for_reconnection (modes 1, 2, 5).
    F,
    /// `local_disconnect`: connected → ready_for_reconnection.
    G,
    /// `local_reconnect`: ready_for_reconnection → connected (modes 5, 6).
    H,
}

impl Transition {
    /// All eight transitions.
    pub const ALL: [Transition; 8] = [
        Transition::A,
        Transition::B,
        Transition::C,
        Transition::D,
        Transition::E,
        Transition::F,
        Transition::G,
        Transition::H,
    ];

    /// `(trigger, from, to)` of the transition, as drawn in the Blue Book's state diagram.
    pub const fn edge(self) -> (Trigger, ControlState, ControlState) {
        use ControlState::*;
        match self {
            Transition::A => (Trigger::RemoteReconnect, Disconnected, Connected),
            Transition::B => (Trigger::RemoteDisconnect, Connected, Disconnected),
            Transition::C => (
                Trigger::RemoteDisconnect,
                ReadyForReconnection,
                Disconnected,
            ),
            Transition::D => (Trigger::RemoteReconnect, Disconnected, ReadyForReconnection),
            Transition::E => (Trigger::ManualReconnect, ReadyForReconnection, Connected),
            Transition::F => (Trigger::ManualDisconnect, Connected, ReadyForReconnection),
            Transition::G => (Trigger::LocalDisconnect, Connected, ReadyForReconnection),
            Transition::H => (Trigger::LocalReconnect, ReadyForReconnection, Connected),
        }
    }

    /// The lowercase letter.
    pub const fn letter(self) -> char {
        match self {
            Transition::A => 'a',
            Transition::B => 'b',
            Transition::C => 'c',
            Transition::D => 'd',
            Transition::E => 'e',
            Transition::F => 'f',
            Transition::G => 'g',
            Transition::H => 'h',
        }
    }
}

/// Why a trigger was refused. Its `Display` is the reason an `ack` carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The refused trigger.
    pub trigger: Trigger,
    /// The state the object stays in.
    pub state: ControlState,
    /// The control mode in force.
    pub mode: ControlMode,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is not allowed in state {} under control mode {}",
            self.trigger, self.state, self.mode
        )
    }
}

impl std::error::Error for Refusal {}

/// The result of an accepted trigger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TriggerOutcome {
    /// State before.
    pub from: ControlState,
    /// State after (equal to `from` for an idempotent no-op).
    pub to: ControlState,
    /// The transition taken, `None` for a no-op.
    pub transition: Option<Transition>,
    /// The relay movement needed, `None` when `output_state` does not change.
    pub relay: Option<RelayAction>,
}

/// The disconnect-control object: `control_state` under a `control_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisconnectControl {
    state: ControlState,
    mode: ControlMode,
}

impl DisconnectControl {
    /// An object in `state` under `mode`. Mode 0 forces `connected`, as the Blue Book says the
    /// object is then always connected.
    pub fn new(state: ControlState, mode: ControlMode) -> DisconnectControl {
        let state = if mode == ControlMode::NONE {
            ControlState::Connected
        } else {
            state
        };
        DisconnectControl { state, mode }
    }

    /// `control_state`.
    pub fn state(&self) -> ControlState {
        self.state
    }

    /// `control_mode`.
    pub fn mode(&self) -> ControlMode {
        self.mode
    }

    /// `output_state`: true when the relay is closed.
    pub fn output_state(&self) -> bool {
        self.state.output_state()
    }

    /// Change `control_mode` (attribute 4 written). The state is kept, except that mode 0
    /// connects (returning the relay movement if that closes the relay).
    pub fn set_mode(&mut self, mode: ControlMode) -> Option<RelayAction> {
        self.mode = mode;
        if mode == ControlMode::NONE && self.state != ControlState::Connected {
            self.state = ControlState::Connected;
            return Some(RelayAction::Close);
        }
        None
    }

    /// The transition `trigger` would take from the current state under the current mode.
    pub fn transition_for(&self, trigger: Trigger) -> Option<Transition> {
        Transition::ALL.into_iter().find(|t| {
            let (tr, from, _) = t.edge();
            tr == trigger && from == self.state && self.mode.enables(*t)
        })
    }

    /// Apply `trigger`: take its enabled transition, accept it as a no-op when an enabled
    /// transition for it leads to the current state, or refuse it.
    pub fn apply(&mut self, trigger: Trigger) -> Result<TriggerOutcome, Refusal> {
        let from = self.state;
        if let Some(t) = self.transition_for(trigger) {
            let (_, _, to) = t.edge();
            self.state = to;
            let relay = match (from.output_state(), to.output_state()) {
                (false, true) => Some(RelayAction::Close),
                (true, false) => Some(RelayAction::Open),
                _ => None,
            };
            return Ok(TriggerOutcome {
                from,
                to,
                transition: Some(t),
                relay,
            });
        }
        let enabled: Vec<Transition> = Transition::ALL
            .into_iter()
            .filter(|t| t.edge().0 == trigger && self.mode.enables(*t))
            .collect();
        let reaches_current = enabled.iter().any(|t| t.edge().2 == from);
        let relay_already_there =
            !enabled.is_empty() && trigger.closes_relay() == from.output_state();
        if reaches_current || relay_already_there {
            Ok(TriggerOutcome {
                from,
                to: from,
                transition: None,
                relay: None,
            })
        } else {
            Err(Refusal {
                trigger,
                state: from,
                mode: self.mode,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The expected outcome of every trigger in every state under modes 1–6, written out from
    /// the Blue Book's mode list (module docs) and the no-op rule, independently of the code:
    /// a letter is the transition taken, `=` an accepted no-op, `x` a refusal. Rows are the
    /// states disconnected, connected, ready_for_reconnection; columns the triggers
    /// remote_disconnect, remote_reconnect, manual_disconnect, manual_reconnect,
    /// local_disconnect, local_reconnect.
    const TABLE: [(u8, [&str; 3]); 6] = [
        (1, ["= d = x = x", "b = f = g x", "c = = e = x"]),
        (2, ["= a = x = x", "b = f = g x", "c x = e = x"]),
        (3, ["= d x x = x", "b = x = g x", "c = x e = x"]),
        (4, ["= a x x = x", "b = x = g x", "c x x e = x"]),
        (5, ["= d = x = x", "b = f = g =", "c = = e = h"]),
        (6, ["= d x x = x", "b = x = g =", "c = x e = h"]),
    ];

    fn letter(t: Transition) -> &'static str {
        match t {
            Transition::A => "a",
            Transition::B => "b",
            Transition::C => "c",
            Transition::D => "d",
            Transition::E => "e",
            Transition::F => "f",
            Transition::G => "g",
            Transition::H => "h",
        }
    }

    #[test]
    fn every_mode_state_and_trigger_matches_the_blue_book_table() {
        let mut checked = 0;
        for (mode, rows) in TABLE {
            let mode = ControlMode::new(mode).unwrap();
            for (state, row) in ControlState::ALL.into_iter().zip(rows) {
                let expected: Vec<&str> = row.split(' ').collect();
                for (trigger, want) in Trigger::ALL.into_iter().zip(expected) {
                    let mut dc = DisconnectControl::new(state, mode);
                    let got = match dc.apply(trigger) {
                        Ok(TriggerOutcome {
                            transition: Some(t),
                            from,
                            to,
                            relay,
                        }) => {
                            assert_eq!(from, state);
                            assert_eq!((t.edge().1, t.edge().2), (from, to));
                            assert_eq!(dc.state(), to);
                            let want_relay = match (from.output_state(), to.output_state()) {
                                (false, true) => Some(RelayAction::Close),
                                (true, false) => Some(RelayAction::Open),
                                _ => None,
                            };
                            assert_eq!(relay, want_relay);
                            letter(t)
                        }
                        Ok(o) => {
                            assert_eq!((o.from, o.to, o.relay), (state, state, None));
                            assert_eq!(dc.state(), state);
                            "="
                        }
                        Err(r) => {
                            assert_eq!((r.trigger, r.state, r.mode), (trigger, state, mode));
                            assert_eq!(dc.state(), state, "a refusal changes nothing");
                            "x"
                        }
                    };
                    assert_eq!(got, want, "mode {mode}, state {state}, {trigger}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 6 * 3 * 6);
    }

    #[test]
    fn each_transition_has_the_blue_book_edge_and_modes() {
        use ControlState::*;
        let edges = [
            (
                Transition::A,
                Trigger::RemoteReconnect,
                Disconnected,
                Connected,
                &[2u8, 4][..],
            ),
            (
                Transition::B,
                Trigger::RemoteDisconnect,
                Connected,
                Disconnected,
                &[1, 2, 3, 4, 5, 6],
            ),
            (
                Transition::C,
                Trigger::RemoteDisconnect,
                ReadyForReconnection,
                Disconnected,
                &[1, 2, 3, 4, 5, 6],
            ),
            (
                Transition::D,
                Trigger::RemoteReconnect,
                Disconnected,
                ReadyForReconnection,
                &[1, 3, 5, 6],
            ),
            (
                Transition::E,
                Trigger::ManualReconnect,
                ReadyForReconnection,
                Connected,
                &[1, 2, 3, 4, 5, 6],
            ),
            (
                Transition::F,
                Trigger::ManualDisconnect,
                Connected,
                ReadyForReconnection,
                &[1, 2, 5],
            ),
            (
                Transition::G,
                Trigger::LocalDisconnect,
                Connected,
                ReadyForReconnection,
                &[1, 2, 3, 4, 5, 6],
            ),
            (
                Transition::H,
                Trigger::LocalReconnect,
                ReadyForReconnection,
                Connected,
                &[5, 6],
            ),
        ];
        for (t, trigger, from, to, modes) in edges {
            assert_eq!(t.edge(), (trigger, from, to), "{t:?}");
            for mode in ControlMode::ALL {
                assert_eq!(
                    mode.enables(t),
                    modes.contains(&mode.code()),
                    "{t:?} in mode {mode}"
                );
            }
        }
    }

    #[test]
    fn mode_0_is_always_connected_and_refuses_everything() {
        for state in ControlState::ALL {
            let mut dc = DisconnectControl::new(state, ControlMode::NONE);
            assert_eq!(dc.state(), ControlState::Connected);
            for trigger in Trigger::ALL {
                assert!(dc.apply(trigger).is_err(), "{trigger}");
                assert_eq!(dc.state(), ControlState::Connected);
            }
        }
        let mut dc =
            DisconnectControl::new(ControlState::Disconnected, ControlMode::new(1).unwrap());
        assert_eq!(dc.set_mode(ControlMode::NONE), Some(RelayAction::Close));
        assert!(dc.output_state());
    }

    #[test]
    fn codes_round_trip_and_bad_codes_are_rejected() {
        for s in ControlState::ALL {
            assert_eq!(ControlState::from_code(s.code()), Some(s));
        }
        assert_eq!(ControlState::from_code(3), None);
        assert_eq!(ControlMode::new(7), None);
        let err = serde_json::from_str::<ControlMode>("9")
            .unwrap_err()
            .to_string();
        assert!(err.contains("control mode 9 is not one of 0 to 6"), "{err}");
        assert_eq!(
            serde_json::to_string(&ControlState::ReadyForReconnection).unwrap(),
            "\"ready_for_reconnection\""
        );
        let r = Refusal {
            trigger: Trigger::ManualReconnect,
            state: ControlState::Disconnected,
            mode: ControlMode::new(1).unwrap(),
        };
        assert_eq!(
            r.to_string(),
            "manual_reconnect is not allowed in state disconnected under control mode 1"
        );
    }
}
