//! Conversions from `metrology` types to wire types, so the agent builds readings from the
//! engine's reports without restating field by field what each quantity means.

use metrology::{EnergyRegisters, PhaseLabel, PhaseReport, TotalReport};

use crate::record::{EnergyCounters, Phase, PhaseReading, TotalReading};

impl From<&EnergyRegisters> for EnergyCounters {
    fn from(r: &EnergyRegisters) -> Self {
        EnergyCounters {
            import_wh: r.import_wh(),
            export_wh: r.export_wh(),
            q1_varh: r.q1_varh(),
            q2_varh: r.q2_varh(),
            q3_varh: r.q3_varh(),
            q4_varh: r.q4_varh(),
        }
    }
}

impl From<&EnergyCounters> for EnergyRegisters {
    fn from(c: &EnergyCounters) -> Self {
        EnergyRegisters::from_wh(
            c.import_wh,
            c.export_wh,
            [c.q1_varh, c.q2_varh, c.q3_varh, c.q4_varh],
        )
    }
}

impl From<PhaseLabel> for Phase {
    fn from(p: PhaseLabel) -> Self {
        match p {
            PhaseLabel::A => Phase::A,
            PhaseLabel::B => Phase::B,
            PhaseLabel::C => Phase::C,
        }
    }
}

impl From<&PhaseReport> for PhaseReading {
    fn from(r: &PhaseReport) -> Self {
        PhaseReading {
            phase: r.phase.into(),
            v_rms: r.v_rms,
            i_rms: r.i_rms,
            p_w: r.p_w,
            q_var: Some(r.q_var),
            s_va: r.s_va,
            pf: r.pf,
            v_thd_pct: Some(r.v_thd_pct),
            i_thd_pct: Some(r.i_thd_pct),
        }
    }
}

impl From<&TotalReport> for TotalReading {
    fn from(t: &TotalReport) -> Self {
        TotalReading {
            p_w: t.p_w,
            q_var: Some(t.q_var),
            s_va: t.s_va,
            pf: t.pf,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_round_trips_through_the_metrology_registers() {
        let mut r = EnergyRegisters::new();
        r.add(864.0, 648.0, 3600.0);
        r.add(-100.0, -50.0, 36.0);
        let c = EnergyCounters::from(&r);
        assert!((c.import_wh - 864.0).abs() < 1e-6);
        assert!((c.q1_varh - 648.0).abs() < 1e-6);
        assert!((c.export_wh - 1.0).abs() < 1e-6);
        assert!((c.q3_varh - 0.5).abs() < 1e-6);
        let back = EnergyCounters::from(&EnergyRegisters::from(&c));
        assert!((back.import_wh - c.import_wh).abs() < 1e-6);
    }
}
