//! Attribute encodings of the interface classes a meter exposes: data (1), register (3), clock
//! (8), disconnect control (70) and limiter (71). Blue Book (DLMS UA 1000-1 ed. 12) chapter 4.

use alloc::vec;
use alloc::vec::Vec;

use crate::Obis;
use crate::apdu::DataAccessResult;
use crate::axdr::{Data, DateTime};

/// Interface class ids (Blue Book 4.1.3).
pub mod class_id {
    pub const DATA: u16 = 1;
    pub const REGISTER: u16 = 3;
    pub const PROFILE_GENERIC: u16 = 7;
    pub const CLOCK: u16 = 8;
    pub const ASSOCIATION_LN: u16 = 15;
    pub const SECURITY_SETUP: u16 = 64;
    pub const DISCONNECT_CONTROL: u16 = 70;
    pub const LIMITER: u16 = 71;
}

/// Attribute 1 of every class: the logical name as an octet-string.
pub fn logical_name(obis: Obis) -> Data {
    Data::OctetString(obis.0.to_vec())
}

/// Units (Blue Book 4.3.2, table of `unit` enumeration values) used by wattline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Unit {
    Second = 7,
    Watt = 27,
    VoltAmpere = 28,
    Var = 29,
    WattHour = 30,
    VoltAmpereHour = 31,
    VarHour = 32,
    Ampere = 33,
    Volt = 35,
    Hertz = 44,
    Percent = 56,
    Unitless = 255,
}

impl Unit {
    /// The symbol printed after a value.
    pub fn symbol(code: u8) -> &'static str {
        match code {
            7 => "s",
            27 => "W",
            28 => "VA",
            29 => "var",
            30 => "Wh",
            31 => "VAh",
            32 => "varh",
            33 => "A",
            35 => "V",
            44 => "Hz",
            56 => "%",
            _ => "",
        }
    }
}

/// A register's scaler and unit: the value means `value × 10^scaler unit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalerUnit {
    pub scaler: i8,
    pub unit: u8,
}

impl ScalerUnit {
    pub fn to_data(self) -> Data {
        Data::Structure(vec![Data::Integer(self.scaler), Data::Enum(self.unit)])
    }

    pub fn from_data(d: &Data) -> Option<ScalerUnit> {
        match d.as_list()? {
            [Data::Integer(s), Data::Enum(u)] => Some(ScalerUnit {
                scaler: *s,
                unit: *u,
            }),
            _ => None,
        }
    }

    /// `raw × 10^scaler`.
    pub fn apply(self, raw: f64) -> f64 {
        let mut v = raw;
        let mut s = self.scaler as i32;
        while s > 0 {
            v *= 10.0;
            s -= 1;
        }
        while s < 0 {
            v /= 10.0;
            s += 1;
        }
        v
    }
}

/// A register (class 3): value with scaler and unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Register {
    pub logical_name: Obis,
    pub value: Data,
    pub scaler_unit: ScalerUnit,
}

impl Register {
    /// Attributes 1..=3.
    pub fn get(&self, attribute_id: i8) -> Result<Data, DataAccessResult> {
        match attribute_id {
            1 => Ok(logical_name(self.logical_name)),
            2 => Ok(self.value.clone()),
            3 => Ok(self.scaler_unit.to_data()),
            _ => Err(DataAccessResult::ObjectUndefined),
        }
    }
}

/// Clock (class 8) attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct ClockAttributes {
    pub logical_name: Obis,
    pub time: DateTime,
    /// Attribute 3: deviation of local standard time to UTC, minutes, same sign as `time`.
    pub time_zone_min: i16,
    pub status: u8,
    pub daylight_savings_enabled: bool,
    /// Attribute 9 clock_base: 1 = internal crystal.
    pub clock_base: u8,
}

impl ClockAttributes {
    pub fn get(&self, attribute_id: i8) -> Result<Data, DataAccessResult> {
        let unspecified = DateTime {
            year: 0xffff,
            month: 0xff,
            day: 0xff,
            day_of_week: 0xff,
            hour: 0xff,
            minute: 0xff,
            second: 0xff,
            hundredths: 0xff,
            deviation_min: DateTime::DEVIATION_UNSPECIFIED,
            clock_status: 0xff,
        };
        Ok(match attribute_id {
            1 => logical_name(self.logical_name),
            // Blue Book 4.5.1: time is an octet-string(12) holding a date-time.
            2 => Data::OctetString(self.time.to_bytes().to_vec()),
            3 => Data::Long(self.time_zone_min),
            4 => Data::Unsigned(self.status),
            5 | 6 => Data::OctetString(unspecified.to_bytes().to_vec()),
            7 => Data::Integer(if self.daylight_savings_enabled { 60 } else { 0 }),
            8 => Data::Boolean(self.daylight_savings_enabled),
            9 => Data::Enum(self.clock_base),
            _ => return Err(DataAccessResult::ObjectUndefined),
        })
    }

    /// Decodes attribute 2 as sent by a server (octet-string(12), or date-time by some meters).
    pub fn time_from_data(d: &Data) -> Option<DateTime> {
        match d {
            Data::DateTime(dt) => Some(*dt),
            Data::OctetString(b) if b.len() == 12 => {
                let mut a = [0u8; 12];
                a.copy_from_slice(b);
                Some(DateTime::from_bytes(&a))
            }
            _ => None,
        }
    }
}

/// Disconnect control (class 70) `control_state` (Blue Book 4.5.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlState {
    Disconnected = 0,
    Connected = 1,
    ReadyForReconnection = 2,
}

/// Attributes of a disconnect control object from the relay's state.
pub fn disconnect_control_attribute(
    obis: Obis,
    attribute_id: i8,
    state: ControlState,
    control_mode: u8,
) -> Result<Data, DataAccessResult> {
    Ok(match attribute_id {
        1 => logical_name(obis),
        2 => Data::Boolean(state == ControlState::Connected),
        3 => Data::Enum(state as u8),
        4 => Data::Enum(control_mode),
        _ => return Err(DataAccessResult::ObjectUndefined),
    })
}

/// Attributes of a limiter (class 71) monitoring `monitored` (class, obis, attribute).
#[allow(clippy::too_many_arguments)]
pub fn limiter_attribute(
    obis: Obis,
    attribute_id: i8,
    monitored: (u16, Obis, i8),
    threshold_active: Data,
    threshold_normal: Data,
    threshold_emergency: Data,
    min_over_threshold_duration_s: u32,
    min_under_threshold_duration_s: u32,
) -> Result<Data, DataAccessResult> {
    Ok(match attribute_id {
        1 => logical_name(obis),
        2 => Data::Structure(vec![
            Data::LongUnsigned(monitored.0),
            logical_name(monitored.1),
            Data::Integer(monitored.2),
        ]),
        3 => threshold_active,
        4 => threshold_normal,
        5 => threshold_emergency,
        6 => Data::DoubleLongUnsigned(min_over_threshold_duration_s),
        7 => Data::DoubleLongUnsigned(min_under_threshold_duration_s),
        8 => Data::Structure(vec![
            Data::LongUnsigned(0),
            Data::OctetString(vec![0xff; 12]),
            Data::DoubleLongUnsigned(0),
        ]),
        9 => Data::Array(Vec::new()),
        10 => Data::Boolean(false),
        11 => Data::Structure(vec![
            Data::Structure(vec![
                logical_name(Obis::new(0, 0, 10, 0, 106, 255)),
                Data::LongUnsigned(1),
            ]),
            Data::Structure(vec![
                logical_name(Obis::new(0, 0, 10, 0, 106, 255)),
                Data::LongUnsigned(2),
            ]),
        ]),
        _ => return Err(DataAccessResult::ObjectUndefined),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_attributes_encode_as_the_blue_book_says() {
        let r = Register {
            logical_name: Obis::new(1, 0, 1, 8, 0, 255),
            value: Data::DoubleLongUnsigned(1234),
            scaler_unit: ScalerUnit {
                scaler: 0,
                unit: Unit::WattHour as u8,
            },
        };
        assert_eq!(r.get(1).unwrap().to_vec(), [0x09, 6, 1, 0, 1, 8, 0, 255]);
        assert_eq!(
            r.get(3).unwrap().to_vec(),
            [0x02, 0x02, 0x0F, 0x00, 0x16, 30]
        );
        assert_eq!(r.get(4), Err(DataAccessResult::ObjectUndefined));
        let su = ScalerUnit::from_data(&r.get(3).unwrap()).unwrap();
        assert_eq!(ScalerUnit { scaler: -2, ..su }.apply(12345.0), 123.45);
        assert_eq!(Unit::symbol(30), "Wh");
    }

    #[test]
    fn clock_time_is_an_octet_string_and_reads_back() {
        let t = DateTime::from_unix(1_700_000_000, 0, crate::DeviationConvention::UtcMinusLocal);
        let c = ClockAttributes {
            logical_name: Obis::CLOCK,
            time: t,
            time_zone_min: 0,
            status: 0,
            daylight_savings_enabled: false,
            clock_base: 1,
        };
        let d = c.get(2).unwrap();
        assert!(matches!(&d, Data::OctetString(b) if b.len() == 12));
        assert_eq!(ClockAttributes::time_from_data(&d), Some(t));
        assert_eq!(
            ClockAttributes::time_from_data(&Data::OctetString(alloc::vec![1, 2])),
            None
        );
    }

    #[test]
    fn disconnect_control_reports_output_state() {
        let o = Obis::new(0, 0, 96, 3, 10, 255);
        assert_eq!(
            disconnect_control_attribute(o, 2, ControlState::Connected, 1),
            Ok(Data::Boolean(true))
        );
        assert_eq!(
            disconnect_control_attribute(o, 3, ControlState::ReadyForReconnection, 1),
            Ok(Data::Enum(2))
        );
        assert!(disconnect_control_attribute(o, 5, ControlState::Connected, 1).is_err());
    }
}
