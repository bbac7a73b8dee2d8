//! The PZEM-004T v3.0 register map (Peacefair "PZEM-004T V3.0 User Manual", Modbus-RTU
//! section) and its decoding.
//!
//! Measurement results are ten **input registers** (function 0x04) from address 0x0000; 32-bit
//! values are split low word first:
//!
//! | address | quantity                     | unit (1 LSB)   |
//! | ------- | ---------------------------- | -------------- |
//! | 0x0000  | voltage                      | 0.1 V          |
//! | 0x0001  | current, low 16 bits         | 0.001 A        |
//! | 0x0002  | current, high 16 bits        |                |
//! | 0x0003  | active power, low 16 bits    | 0.1 W          |
//! | 0x0004  | active power, high 16 bits   |                |
//! | 0x0005  | active energy, low 16 bits   | 1 Wh           |
//! | 0x0006  | active energy, high 16 bits  |                |
//! | 0x0007  | frequency                    | 0.1 Hz         |
//! | 0x0008  | power factor                 | 0.01           |
//! | 0x0009  | alarm status                 | 0xFFFF alarm, 0x0000 none |
//!
//! Parameters are **holding registers** (read 0x03, write 0x06): 0x0001 the power alarm
//! threshold (1 W), 0x0002 the Modbus slave address (1..=247). Function 0x42 resets the energy
//! counter; 0xF8 is the general address a lone device on the bus always answers. The device
//! cannot tell import from export: power and PF are unsigned.

use crate::sources::{DeviceMeasurement, Error, MeasuredPhase};

/// First input register of the measurement block.
pub const MEASUREMENT_START: u16 = 0x0000;
/// Number of input registers in the measurement block.
pub const MEASUREMENT_COUNT: u16 = 10;
/// Holding register of the power alarm threshold (1 W per LSB).
pub const HOLDING_ALARM_THRESHOLD: u16 = 0x0001;
/// Holding register of the Modbus slave address.
pub const HOLDING_ADDRESS: u16 = 0x0002;
/// Custom function code: reset the energy counter.
pub const FUNCTION_RESET_ENERGY: u8 = 0x42;
/// The general slave address.
pub const GENERAL_ADDRESS: u8 = 0xF8;

const ALARM_ON: u16 = 0xFFFF;
const ALARM_OFF: u16 = 0x0000;

/// One reading of the measurement block, in physical units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PzemReading {
    /// Voltage in volts.
    pub voltage_v: f64,
    /// Current in amperes.
    pub current_a: f64,
    /// Active power in watts (unsigned).
    pub power_w: f64,
    /// The device's energy counter in watt-hours.
    pub energy_wh: u32,
    /// Frequency in hertz.
    pub frequency_hz: f64,
    /// Power factor 0..=1 (unsigned).
    pub power_factor: f64,
    /// Whether the power is above the device's alarm threshold.
    pub alarm: bool,
}

fn u32_of(low: u16, high: u16) -> u32 {
    u32::from(high) << 16 | u32::from(low)
}

impl PzemReading {
    /// Decode the ten measurement registers, rejecting values the device cannot produce.
    pub fn decode(regs: &[u16]) -> Result<PzemReading, Error> {
        if regs.len() != MEASUREMENT_COUNT as usize {
            return Err(Error::device(format!(
                "pzem004t answered {} registers, expected {MEASUREMENT_COUNT}",
                regs.len()
            )));
        }
        let alarm = match regs[9] {
            ALARM_ON => true,
            ALARM_OFF => false,
            other => {
                return Err(Error::device(format!(
                    "pzem004t alarm register 0x0009 is 0x{other:04X}, expected 0x0000 or 0xFFFF"
                )));
            }
        };
        if regs[8] > 100 {
            return Err(Error::device(format!(
                "pzem004t power factor register 0x0008 is {}, above 1.00",
                regs[8]
            )));
        }
        Ok(PzemReading {
            voltage_v: f64::from(regs[0]) * 0.1,
            current_a: f64::from(u32_of(regs[1], regs[2])) * 0.001,
            power_w: f64::from(u32_of(regs[3], regs[4])) * 0.1,
            energy_wh: u32_of(regs[5], regs[6]),
            frequency_hz: f64::from(regs[7]) * 0.1,
            power_factor: f64::from(regs[8]) * 0.01,
            alarm,
        })
    }

    /// The register image a device with this reading presents (values rounded to the
    /// register resolution) — what a simulated PZEM serves.
    pub fn encode(&self) -> [u16; MEASUREMENT_COUNT as usize] {
        let q = |x: f64, lsb: f64| (x / lsb).round().clamp(0.0, f64::from(u32::MAX)) as u32;
        let current = q(self.current_a, 0.001);
        let power = q(self.power_w, 0.1);
        [
            q(self.voltage_v, 0.1).min(u32::from(u16::MAX)) as u16,
            current as u16,
            (current >> 16) as u16,
            power as u16,
            (power >> 16) as u16,
            self.energy_wh as u16,
            (self.energy_wh >> 16) as u16,
            q(self.frequency_hz, 0.1).min(u32::from(u16::MAX)) as u16,
            q(self.power_factor, 0.01).min(100) as u16,
            if self.alarm { ALARM_ON } else { ALARM_OFF },
        ]
    }

    /// As a [`DeviceMeasurement`] at source time `t_s`. A frequency of 0 (no voltage) is
    /// reported as unknown.
    pub fn to_measurement(&self, t_s: f64) -> DeviceMeasurement {
        DeviceMeasurement {
            t_s,
            phases: vec![MeasuredPhase {
                v_rms: self.voltage_v,
                i_rms: self.current_a,
                p_w: self.power_w,
                pf: Some(self.power_factor),
            }],
            freq_hz: (self.frequency_hz > 0.0).then_some(self.frequency_hz),
            device_import_wh: Some(f64::from(self.energy_wh)),
            alarm: Some(self.alarm),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_register_block_with_32_bit_values_low_word_first() {
        // 229.8 V, 70.123 A (0x0001_11EB), 16111.5 W (161115 = 0x0002_755B), 123456 Wh
        // (0x0001_E240), 50.0 Hz, PF 0.99, alarm on.
        let regs = [
            2298, 0x11EB, 0x0001, 0x755B, 0x0002, 0xE240, 0x0001, 500, 99, 0xFFFF,
        ];
        let r = PzemReading::decode(&regs).unwrap();
        assert!((r.voltage_v - 229.8).abs() < 1e-9);
        assert!((r.current_a - 70.123).abs() < 1e-9);
        assert!((r.power_w - 16111.5).abs() < 1e-9);
        assert_eq!(r.energy_wh, 123_456);
        assert!((r.frequency_hz - 50.0).abs() < 1e-9);
        assert!((r.power_factor - 0.99).abs() < 1e-9);
        assert!(r.alarm);
        assert_eq!(r.encode(), regs);
    }

    #[test]
    fn rejects_impossible_blocks() {
        let ok = [2300, 0, 0, 0, 0, 0, 0, 500, 100, 0];
        assert!(PzemReading::decode(&ok).is_ok());
        let short = PzemReading::decode(&ok[..9]).unwrap_err().to_string();
        assert!(short.contains("answered 9 registers"), "{short}");
        let mut bad = ok;
        bad[9] = 0x1234;
        assert!(
            PzemReading::decode(&bad)
                .unwrap_err()
                .to_string()
                .contains("0x1234")
        );
        let mut bad = ok;
        bad[8] = 101;
        assert!(
            PzemReading::decode(&bad)
                .unwrap_err()
                .to_string()
                .contains("above 1.00")
        );
    }

    #[test]
    fn no_voltage_means_unknown_frequency() {
        let r = PzemReading::decode(&[0, 0, 0, 0, 0, 7, 0, 0, 0, 0]).unwrap();
        let m = r.to_measurement(1.5);
        assert_eq!(m.freq_hz, None);
        assert_eq!(m.device_import_wh, Some(7.0));
        assert_eq!(m.t_s, 1.5);
    }
}
