//! Four-quadrant energy registers that do not drift.
//!
//! Each register keeps whole milliwatt-hours in a `u64` and the remainder (< 1 mWh) in an
//! `f64`. Adding a window's energy touches only the small remainder, so the rounding error of an
//! addition is ~1e-19 Wh instead of growing with the register's value as a plain `f64` sum
//! does (at 8760 kWh an `f64` ulp is ~2e-9 Wh; millions of additions of a 0.2-s window would
//! lose it). A `u64` of mWh lasts 2·10^10 kWh.

/// One monotonic register: whole milli-units plus a fraction.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Register {
    milli: u64,
    frac: f64,
}

impl Register {
    fn from_value(value: f64) -> Self {
        let value = if value.is_finite() && value > 0.0 {
            value
        } else {
            0.0
        };
        let milli = libm::floor(value * 1000.0);
        Self {
            milli: milli as u64,
            frac: (value - milli / 1000.0).max(0.0),
        }
    }

    fn add(&mut self, amount: f64) {
        // Registers only grow; callers route the sign to the right register.
        if !(amount.is_finite() && amount > 0.0) {
            return;
        }
        self.frac += amount;
        if self.frac >= 1e-3 {
            let whole = libm::floor(self.frac * 1000.0);
            self.milli += whole as u64;
            self.frac -= whole * 1e-3;
            if self.frac < 0.0 {
                // floor(x·1000)/1000 can exceed x by one rounding step.
                self.frac = 0.0;
            }
        }
    }

    fn value(&self) -> f64 {
        self.milli as f64 / 1000.0 + self.frac
    }
}

/// Import/export active energy and four-quadrant reactive energy (IEC 62053-23 / DLMS
/// registers 1.8.0, 2.8.0, 5.8.0–8.8.0). Quadrants: I (+P, +Q), II (−P, +Q), III (−P, −Q),
/// IV (+P, −Q); each reactive register counts the magnitude of Q while the power is in its
/// quadrant. P > 0 is import.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EnergyRegisters {
    import: Register,
    export: Register,
    q: [Register; 4],
}

impl EnergyRegisters {
    /// All registers at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers restored from persisted values (negative or non-finite values restore as 0).
    pub fn from_wh(import_wh: f64, export_wh: f64, quadrants_varh: [f64; 4]) -> Self {
        Self {
            import: Register::from_value(import_wh),
            export: Register::from_value(export_wh),
            q: quadrants_varh.map(Register::from_value),
        }
    }

    /// Adds a constant active power `p_w` and reactive power `q_var` held for `duration_s`.
    /// Non-finite inputs and non-positive durations add nothing.
    pub fn add(&mut self, p_w: f64, q_var: f64, duration_s: f64) {
        if !(duration_s.is_finite() && duration_s > 0.0 && p_w.is_finite() && q_var.is_finite()) {
            return;
        }
        let hours = duration_s / 3600.0;
        let p_wh = p_w * hours;
        let q_varh = q_var * hours;
        if p_w >= 0.0 {
            self.import.add(p_wh);
        } else {
            self.export.add(-p_wh);
        }
        let quadrant = match (p_w >= 0.0, q_var >= 0.0) {
            (true, true) => 0,
            (false, true) => 1,
            (false, false) => 2,
            (true, false) => 3,
        };
        self.q[quadrant].add(q_varh.abs());
    }

    /// Imported active energy (P > 0) in Wh.
    pub fn import_wh(&self) -> f64 {
        self.import.value()
    }

    /// Exported active energy (P < 0) in Wh.
    pub fn export_wh(&self) -> f64 {
        self.export.value()
    }

    /// Reactive energy in quadrant I (+P, +Q) in varh.
    pub fn q1_varh(&self) -> f64 {
        self.q[0].value()
    }

    /// Reactive energy in quadrant II (−P, +Q) in varh.
    pub fn q2_varh(&self) -> f64 {
        self.q[1].value()
    }

    /// Reactive energy in quadrant III (−P, −Q) in varh.
    pub fn q3_varh(&self) -> f64 {
        self.q[2].value()
    }

    /// Reactive energy in quadrant IV (+P, −Q) in varh.
    pub fn q4_varh(&self) -> f64 {
        self.q[3].value()
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for EnergyRegisters {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("EnergyRegisters", 6)?;
        s.serialize_field("import_wh", &self.import_wh())?;
        s.serialize_field("export_wh", &self.export_wh())?;
        s.serialize_field("q1_varh", &self.q1_varh())?;
        s.serialize_field("q2_varh", &self.q2_varh())?;
        s.serialize_field("q3_varh", &self.q3_varh())?;
        s.serialize_field("q4_varh", &self.q4_varh())?;
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_kilowatt_for_a_year_is_8760_kwh_within_1_wh() {
        let mut registers = EnergyRegisters::new();
        // Windows of 10 cycles at a frequency that wanders around 50 Hz, so the increments are
        // not all the same float; the durations are summed exactly alongside.
        let year_s = 365.0 * 24.0 * 3600.0;
        let mut t_s = 0.0_f64;
        let mut comp = 0.0_f64;
        let mut k = 0u64;
        while t_s < year_s {
            let freq_hz = 50.0 + 0.01 * ((k % 7) as f64 - 3.0);
            let dt = (10.0 / freq_hz).min(year_s - t_s);
            registers.add(1000.0, 0.0, dt);
            // Kahan sum of the durations: the truth the registers must match.
            let y = dt - comp;
            let t = t_s + y;
            comp = (t - t_s) - y;
            t_s = t;
            k += 1;
        }
        let expected_wh = 1000.0 * t_s / 3600.0;
        assert!((expected_wh - 8_760_000.0).abs() < 1e-3);
        assert!(
            (registers.import_wh() - expected_wh).abs() < 1.0,
            "{} vs {}",
            registers.import_wh(),
            expected_wh
        );
        // Far better than the bar: the error is below a milliwatt-hour.
        assert!((registers.import_wh() - expected_wh).abs() < 1e-3);
    }

    #[test]
    fn quadrants_follow_the_signs_of_p_and_q() {
        let mut r = EnergyRegisters::new();
        r.add(100.0, 50.0, 3600.0);
        r.add(-100.0, 40.0, 3600.0);
        r.add(-100.0, -30.0, 3600.0);
        r.add(100.0, -20.0, 3600.0);
        assert_eq!(r.import_wh(), 200.0);
        assert_eq!(r.export_wh(), 200.0);
        assert_eq!(
            [r.q1_varh(), r.q2_varh(), r.q3_varh(), r.q4_varh()],
            [50.0, 40.0, 30.0, 20.0]
        );
    }

    #[test]
    fn bad_increments_add_nothing_and_restore_round_trips() {
        let mut r = EnergyRegisters::from_wh(1234.5678, 1.0, [1.0, 2.0, 3.0, 4.0]);
        r.add(f64::NAN, 1.0, 1.0);
        r.add(1.0, 1.0, -1.0);
        r.add(1.0, f64::INFINITY, 1.0);
        assert!((r.import_wh() - 1234.5678).abs() < 1e-9);
        assert_eq!(r.q4_varh(), 4.0);
    }
}
