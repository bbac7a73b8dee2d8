//! Tamper rules over a realistic stream: readings every 30 s, a magnet applied for two minutes,
//! the cover opened during it, and the neutral bypassed afterwards.

use analytics::tamper::{
    MeterCondition, ReadingSample, Severity, TamperConfig, TamperDetector, TamperInput, TamperRule,
};

#[test]
fn a_tampering_session_gives_one_finding_per_rule_in_order() {
    let mut d = TamperDetector::new("m-42", TamperConfig::default());
    let mut findings = Vec::new();
    for k in 0..120i64 {
        let t = 1_767_225_600 + k * 30;
        if k == 10 {
            findings.extend(d.push(&TamperInput::Condition {
                at_s: t,
                condition: MeterCondition::MagneticField,
                active: true,
            }));
        }
        if k == 12 {
            findings.extend(d.push(&TamperInput::Condition {
                at_s: t,
                condition: MeterCondition::CoverOpen,
                active: true,
            }));
        }
        if k == 14 {
            findings.extend(d.push(&TamperInput::Condition {
                at_s: t,
                condition: MeterCondition::MagneticField,
                active: false,
            }));
        }
        let neutral = if k >= 40 { 2.0 } else { 9.0 };
        findings.extend(d.push(&TamperInput::Reading(ReadingSample {
            at_s: t,
            received_s: t + 3,
            voltage_v: [Some(231.0), None, None],
            current_a: [Some(9.0), None, None],
            neutral_current_a: Some(neutral),
            active_power_w: 2000.0,
        })));
    }
    let rules: Vec<(TamperRule, Option<i64>)> = findings
        .iter()
        .map(|f| (f.rule, f.end_s.map(|e| e - f.start_s)))
        .collect();
    assert_eq!(
        rules,
        vec![
            (TamperRule::MagneticField, None),
            (TamperRule::CoverOpen, None),
            (TamperRule::MagneticField, Some(120)),
            (TamperRule::PhaseNeutralMismatch, None),
        ]
    );
    assert_eq!(findings[0].severity, Severity::Critical);
    assert!(
        findings[3].message.contains("neutral 2.00 A"),
        "{}",
        findings[3].message
    );
}
