//! Limiter and relay-controller tests: overload cut-off (seed 001 Fig. 10), release, emergency
//! profile, and reconnection per control mode.

use super::*;

const V: f64 = 230.0;

fn limiter(threshold_w: f64, over_s: u32, under_s: u32) -> LimiterConfig {
    LimiterConfig {
        threshold_normal_w: threshold_w,
        threshold_emergency_w: None,
        min_over_threshold_duration_s: over_s,
        min_under_threshold_duration_s: under_s,
        emergency_profile: None,
        emergency_profile_group_ids: Vec::new(),
    }
}

fn controller(mode: u8, config: LimiterConfig) -> RelayController {
    RelayController::new(
        DisconnectControl::new(ControlState::Connected, ControlMode::new(mode).unwrap()),
        Some(Limiter::new(config)),
    )
}

/// Seed 001 Fig. 10(b): the current rises from 0 to 10 A, varies, peaks at 20 A, and the relay
/// cuts it to 0 because the power exceeded the authorised limit. Windows every 200 ms; the
/// current the meter sees is 0 once the relay is open.
fn fig10_current_a(t_s: f64) -> f64 {
    if t_s < 10.0 {
        t_s
    } else if t_s < 20.0 {
        10.0 + 3.0 * ((t_s - 10.0) * 0.7).sin()
    } else {
        20.0
    }
}

#[test]
fn overload_cut_off_as_in_seed_001_fig_10_and_manual_reconnection_in_mode_1() {
    // 4 kW authorised (17.4 A at 230 V), 5 s over threshold before cutting, 30 s to release.
    let mut rc = controller(1, limiter(4000.0, 5, 30));
    let mut relay_closed = true;
    let mut cut_at = None;
    let mut events = Vec::new();
    for step in 0..600u64 {
        let now_ms = step * 200;
        let t = now_ms as f64 / 1000.0;
        let p = if relay_closed {
            V * fig10_current_a(t)
        } else {
            0.0
        };
        let out = rc.observe_power(now_ms, 0, p);
        if let Some(a) = out.relay {
            relay_closed = a == RelayAction::Close;
            if a == RelayAction::Open {
                cut_at.get_or_insert(t);
            }
        }
        events.extend(out.events);
    }
    // 20 A × 230 V = 4600 W from t = 20 s; cut after 5 s above the limit; 0 W from 25.2 s,
    // so the limiter releases at 55.2 s.
    assert_eq!(cut_at, Some(25.0));
    assert!(!relay_closed);
    assert_eq!(rc.disconnect().state(), ControlState::ReadyForReconnection);
    // The limiter released after 30 s at 0 W, but mode 1 does not enable local reconnection
    // (h): the customer must press the button.
    assert!(events.iter().any(|e| matches!(
        e,
        ControlEvent::Limiter(LimiterEvent::UnderThreshold { now_ms: 55_200, .. })
    )));
    assert!(events.iter().any(|e| matches!(
        e,
        ControlEvent::TriggerRefused {
            trigger: Trigger::LocalReconnect,
            state: ControlState::ReadyForReconnection,
            ..
        }
    )));
    let out = rc.trigger(200_000, Trigger::ManualReconnect).unwrap();
    assert_eq!(out.relay, Some(RelayAction::Close));
    assert_eq!(rc.disconnect().state(), ControlState::Connected);
}

#[test]
fn mode_5_reconnects_locally_when_the_power_stays_low() {
    let mut rc = controller(5, limiter(3000.0, 2, 10));
    let mut closed = true;
    let mut moves = Vec::new();
    for step in 0..200u64 {
        let now_ms = step * 200;
        let demand = if now_ms < 20_000 { 3500.0 } else { 1000.0 };
        let out = rc.observe_power(now_ms, 0, if closed { demand } else { 0.0 });
        if let Some(a) = out.relay {
            closed = a == RelayAction::Close;
            moves.push((now_ms, a));
        }
    }
    // Cut at 2 s; 0 W from the next window (2.2 s), released 10 s later by h
    // (local_reconnect); the load, seen again from 12.4 s, is still too high, so cut again
    // 2 s after; then the load drops at 20 s and the relay stays closed.
    assert_eq!(
        moves,
        [
            (2_000, RelayAction::Open),
            (12_200, RelayAction::Close),
            (14_400, RelayAction::Open),
            (24_600, RelayAction::Close),
        ]
    );
    assert_eq!(rc.disconnect().state(), ControlState::Connected);
}

#[test]
fn short_peaks_like_a_motor_inrush_do_not_trip() {
    let mut l = Limiter::new(limiter(3000.0, 5, 10));
    for step in 0..100u64 {
        let now_ms = step * 200;
        // 4.8 s above the threshold, then below, repeatedly.
        let p = if (now_ms % 10_000) < 4_800 {
            5000.0
        } else {
            100.0
        };
        assert_eq!(l.observe(now_ms, 0, p).action, None, "at {now_ms} ms");
    }
    assert_eq!(l.state(), LimiterState::Normal);
}

#[test]
fn nan_power_changes_nothing() {
    let mut l = Limiter::new(limiter(3000.0, 1, 1));
    l.observe(0, 0, 5000.0);
    assert_eq!(l.observe(5_000, 0, f64::NAN).action, None);
    assert_eq!(l.state(), LimiterState::Over { since_ms: 0 });
    assert_eq!(
        l.observe(5_200, 0, 5000.0).action,
        Some(LimiterAction::Disconnect)
    );
}

#[test]
fn emergency_profile_lowers_the_threshold_for_its_group_and_duration() {
    let mut config = limiter(5000.0, 0, 0);
    config.threshold_emergency_w = Some(2000.0);
    config.emergency_profile = Some(EmergencyProfile {
        id: 7,
        activation_unix_s: 1_000,
        duration_s: 60,
    });
    config.emergency_profile_group_ids = vec![3, 7];
    let mut l = Limiter::new(config.clone());
    assert_eq!(l.threshold_active_w(999), 5000.0);
    assert_eq!(l.threshold_active_w(1_000), 2000.0);
    assert_eq!(l.threshold_active_w(1_060), 5000.0);

    let step = l.observe(0, 999, 3000.0);
    assert_eq!(step.action, None);
    let step = l.observe(1_000, 1_000, 3000.0);
    assert_eq!(
        step.events[0],
        LimiterEvent::EmergencyStarted {
            now_ms: 1_000,
            profile_id: 7
        }
    );
    assert_eq!(step.action, Some(LimiterAction::Disconnect));
    assert!(l.emergency_active());
    let step = l.observe(61_000, 1_060, 0.0);
    assert_eq!(
        step.events[0],
        LimiterEvent::EmergencyEnded {
            now_ms: 61_000,
            profile_id: 7
        }
    );
    assert_eq!(step.action, Some(LimiterAction::Reconnect));

    // A meter outside the group ignores the profile.
    config.emergency_profile_group_ids = vec![1];
    let mut l = Limiter::new(config);
    assert_eq!(l.observe(1_000, 1_000, 3000.0).action, None);
}

#[test]
fn a_remote_disconnection_cannot_be_undone_by_the_limiter_or_the_button() {
    let mut rc = controller(5, limiter(1000.0, 0, 0));
    let out = rc.trigger(0, Trigger::RemoteDisconnect).unwrap();
    assert_eq!(out.relay, Some(RelayAction::Open));
    // The limiter sees 0 W and releases: local_reconnect is refused in `disconnected`.
    let out = rc.observe_power(1_000, 0, 0.0);
    assert_eq!(out.relay, None);
    let err = rc.trigger(2_000, Trigger::ManualReconnect).unwrap_err();
    assert_eq!(err.state, ControlState::Disconnected);
    assert_eq!(rc.disconnect().state(), ControlState::Disconnected);
    // Remote reconnection in mode 5 is d: ready_for_reconnection, then the button closes.
    let out = rc.trigger(3_000, Trigger::RemoteReconnect).unwrap();
    assert_eq!(out.relay, None);
    assert_eq!(rc.disconnect().state(), ControlState::ReadyForReconnection);
    assert_eq!(
        rc.trigger(4_000, Trigger::ManualReconnect).unwrap().relay,
        Some(RelayAction::Close)
    );
}

#[test]
fn limiter_config_round_trips_and_rejects_unknown_fields() {
    let c: LimiterConfig = toml::from_str("threshold_normal_w = 4600\n").unwrap();
    assert_eq!(c.min_over_threshold_duration_s, 10);
    assert_eq!(c.min_under_threshold_duration_s, 60);
    let err = toml::from_str::<LimiterConfig>("threshold_normal_w = 1\nthreshold = 2\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `threshold`"), "{err}");
    let json = serde_json::to_string(&ControlEvent::Limiter(LimiterEvent::OverThreshold {
        now_ms: 5,
        active_power_w: 4600.0,
        threshold_w: 4000.0,
    }))
    .unwrap();
    assert_eq!(
        json,
        r#"{"kind":"limiter","limiter":"over_threshold","now_ms":5,"active_power_w":4600.0,"threshold_w":4000.0}"#
    );
}

#[test]
fn the_controller_state_persists_as_json_and_mode_changes_apply() {
    let mut rc = controller(2, limiter(1000.0, 0, 0));
    rc.trigger(0, Trigger::RemoteDisconnect).unwrap();
    // The pipeline persists the disconnect control so a remotely disconnected meter stays
    // disconnected after a restart.
    let saved = serde_json::to_string(rc.disconnect()).unwrap();
    let restored: DisconnectControl = serde_json::from_str(&saved).unwrap();
    assert_eq!(restored.state(), ControlState::Disconnected);
    assert_eq!(restored.mode().code(), 2);
    assert_eq!(
        rc.set_mode(ControlMode::NONE).relay,
        Some(RelayAction::Close)
    );
    assert_eq!(rc.disconnect().state(), ControlState::Connected);
}
