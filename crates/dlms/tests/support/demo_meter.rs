//! An in-memory demo meter object model: clock, energy registers that accrue from a simulated
//! load while the relay is connected, a 15-minute load profile, disconnect control and a
//! limiter. Used by the interoperability tests and the `demo_server` example.

use std::time::{SystemTime, UNIX_EPOCH};

use dlms::apdu::{AttributeDescriptor, DataAccessResult, MethodDescriptor, SelectiveAccess};
use dlms::cosem::{
    CaptureObject, ClockAttributes, ControlState, ProfileGeneric, Register, ScalerUnit, Unit,
    class_id, disconnect_control_attribute, limiter_attribute, logical_name,
};
use dlms::{
    AccessContext, Data, DateTime, DeviationConvention, Obis, ObjectAccess, ObjectInfo, Role,
};

pub const ACTIVE_IMPORT: Obis = Obis::new(1, 0, 1, 8, 0, 255);
pub const ACTIVE_EXPORT: Obis = Obis::new(1, 0, 2, 8, 0, 255);
pub const ACTIVE_POWER: Obis = Obis::new(1, 0, 1, 7, 0, 255);
pub const VOLTAGE_L1: Obis = Obis::new(1, 0, 32, 7, 0, 255);
pub const LOAD_PROFILE: Obis = Obis::new(1, 0, 99, 1, 0, 255);
pub const DISCONNECT_CONTROL: Obis = Obis::new(0, 0, 96, 3, 10, 255);
pub const LIMITER: Obis = Obis::new(0, 0, 17, 0, 0, 255);
pub const CAPTURE_PERIOD_S: u32 = 900;

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Relay operations invoked through COSEM, in order, with the client SAP that invoked them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayOperation {
    RemoteDisconnect(u16),
    RemoteReconnect(u16),
}

#[derive(Debug)]
pub struct DemoMeter {
    pub import_wh: f64,
    pub export_wh: f64,
    pub load_w: f64,
    pub voltage_v: f64,
    last_update_unix: i64,
    pub relay: ControlState,
    pub control_mode: u8,
    pub profile: ProfileGeneric,
    pub limiter_threshold_w: u32,
    pub relay_log: Vec<RelayOperation>,
    pub utc_offset_min: i16,
}

impl DemoMeter {
    /// A meter that has run for a day at `load_w`, its profile filled with one row per quarter.
    pub fn new(now: i64, load_w: f64) -> Self {
        let capture_objects = vec![
            CaptureObject {
                class_id: class_id::CLOCK,
                logical_name: Obis::CLOCK,
                attribute_id: 2,
                data_index: 0,
            },
            CaptureObject {
                class_id: class_id::REGISTER,
                logical_name: ACTIVE_IMPORT,
                attribute_id: 2,
                data_index: 0,
            },
            CaptureObject {
                class_id: class_id::REGISTER,
                logical_name: ACTIVE_EXPORT,
                attribute_id: 2,
                data_index: 0,
            },
        ];
        let mut profile = ProfileGeneric {
            logical_name: LOAD_PROFILE,
            capture_objects,
            capture_period_s: CAPTURE_PERIOD_S,
            rows: Vec::new(),
            max_entries: 96,
        };
        let period = CAPTURE_PERIOD_S as i64;
        let last_boundary = now - now.rem_euclid(period);
        let start = last_boundary - 95 * period;
        let base_wh = 1_000_000.0;
        for i in 0..96 {
            let t = start + i * period;
            let wh = base_wh + load_w * (t - start) as f64 / 3600.0;
            profile.capture(Self::row(t, wh, 0.0, 0));
        }
        let import_wh = base_wh + load_w * (now - start) as f64 / 3600.0;
        DemoMeter {
            import_wh,
            export_wh: 0.0,
            load_w,
            voltage_v: 230.1,
            last_update_unix: now,
            relay: ControlState::Connected,
            control_mode: 1,
            profile,
            limiter_threshold_w: 10_000,
            relay_log: Vec::new(),
            utc_offset_min: 0,
        }
    }

    fn row(t: i64, import_wh: f64, export_wh: f64, offset: i16) -> Vec<Data> {
        let dt = DateTime::from_unix(t, offset, DeviationConvention::UtcMinusLocal);
        vec![
            Data::OctetString(dt.to_bytes().to_vec()),
            Data::DoubleLongUnsigned(import_wh as u32),
            Data::DoubleLongUnsigned(export_wh as u32),
        ]
    }

    /// Accrues energy up to `now` (only while the relay is connected).
    pub fn update(&mut self, now: i64) {
        let dt = (now - self.last_update_unix).max(0) as f64;
        if self.relay == ControlState::Connected {
            self.import_wh += self.load_w * dt / 3600.0;
        }
        self.last_update_unix = now;
    }

    fn register(&self, obis: Obis) -> Option<Register> {
        let wh = ScalerUnit {
            scaler: 0,
            unit: Unit::WattHour as u8,
        };
        Some(match obis {
            ACTIVE_IMPORT => Register {
                logical_name: obis,
                value: Data::DoubleLongUnsigned(self.import_wh as u32),
                scaler_unit: wh,
            },
            ACTIVE_EXPORT => Register {
                logical_name: obis,
                value: Data::DoubleLongUnsigned(self.export_wh as u32),
                scaler_unit: wh,
            },
            ACTIVE_POWER => Register {
                logical_name: obis,
                value: Data::DoubleLong(if self.relay == ControlState::Connected {
                    self.load_w as i32
                } else {
                    0
                }),
                scaler_unit: ScalerUnit {
                    scaler: 0,
                    unit: Unit::Watt as u8,
                },
            },
            VOLTAGE_L1 => Register {
                logical_name: obis,
                value: Data::LongUnsigned((self.voltage_v * 10.0).round() as u16),
                scaler_unit: ScalerUnit {
                    scaler: -1,
                    unit: Unit::Volt as u8,
                },
            },
            _ => return None,
        })
    }
}

fn info(
    class_id: u16,
    version: u8,
    ln: Obis,
    attributes: u8,
    writable: u32,
    methods: u8,
    public: bool,
) -> ObjectInfo {
    ObjectInfo {
        class_id,
        version,
        logical_name: ln,
        attribute_count: attributes,
        writable_attributes: writable,
        method_count: methods,
        public,
    }
}

impl ObjectAccess for DemoMeter {
    fn objects(&self) -> Vec<ObjectInfo> {
        vec![
            info(class_id::DATA, 0, Obis::LOGICAL_DEVICE_NAME, 2, 0, 0, true),
            info(class_id::CLOCK, 0, Obis::CLOCK, 9, 0, 0, true),
            info(class_id::REGISTER, 0, ACTIVE_IMPORT, 3, 0, 0, false),
            info(class_id::REGISTER, 0, ACTIVE_EXPORT, 3, 0, 0, false),
            info(class_id::REGISTER, 0, ACTIVE_POWER, 3, 0, 0, false),
            info(class_id::REGISTER, 0, VOLTAGE_L1, 3, 0, 0, false),
            info(class_id::PROFILE_GENERIC, 1, LOAD_PROFILE, 8, 0, 0, false),
            info(
                class_id::DISCONNECT_CONTROL,
                0,
                DISCONNECT_CONTROL,
                4,
                0,
                2,
                false,
            ),
            info(
                class_id::LIMITER,
                0,
                LIMITER,
                11,
                (1 << 3) | (1 << 4),
                0,
                false,
            ),
        ]
    }

    fn get(
        &mut self,
        _ctx: &AccessContext,
        a: &AttributeDescriptor,
        access: Option<&SelectiveAccess>,
    ) -> Result<Data, DataAccessResult> {
        let now = now_unix();
        self.update(now);
        match (a.class_id, a.instance) {
            (class_id::DATA, Obis::LOGICAL_DEVICE_NAME) => match a.attribute_id {
                1 => Ok(logical_name(a.instance)),
                2 => Ok(Data::OctetString(b"WTL0000000001".to_vec())),
                _ => Err(DataAccessResult::ObjectUndefined),
            },
            (class_id::CLOCK, Obis::CLOCK) => ClockAttributes {
                logical_name: Obis::CLOCK,
                time: DateTime::from_unix(
                    now,
                    self.utc_offset_min,
                    DeviationConvention::UtcMinusLocal,
                ),
                time_zone_min: -self.utc_offset_min,
                status: 0,
                daylight_savings_enabled: false,
                clock_base: 1,
            }
            .get(a.attribute_id),
            (class_id::REGISTER, ln) => self
                .register(ln)
                .ok_or(DataAccessResult::ObjectUndefined)?
                .get(a.attribute_id),
            (class_id::PROFILE_GENERIC, LOAD_PROFILE) => self.profile.get(a.attribute_id, access),
            (class_id::DISCONNECT_CONTROL, DISCONNECT_CONTROL) => disconnect_control_attribute(
                DISCONNECT_CONTROL,
                a.attribute_id,
                self.relay,
                self.control_mode,
            ),
            (class_id::LIMITER, LIMITER) => limiter_attribute(
                LIMITER,
                a.attribute_id,
                (class_id::REGISTER, ACTIVE_POWER, 2),
                Data::DoubleLongUnsigned(self.limiter_threshold_w),
                Data::DoubleLongUnsigned(self.limiter_threshold_w),
                Data::DoubleLongUnsigned(self.limiter_threshold_w),
                60,
                30,
            ),
            _ => Err(DataAccessResult::ObjectUndefined),
        }
    }

    fn set(
        &mut self,
        _ctx: &AccessContext,
        a: &AttributeDescriptor,
        _access: Option<&SelectiveAccess>,
        value: &Data,
    ) -> Result<(), DataAccessResult> {
        match (a.class_id, a.instance, a.attribute_id) {
            (class_id::LIMITER, LIMITER, 3 | 4) => {
                let w = value.as_i128().ok_or(DataAccessResult::TypeUnmatched)?;
                self.limiter_threshold_w =
                    u32::try_from(w).map_err(|_| DataAccessResult::TypeUnmatched)?;
                Ok(())
            }
            _ => Err(DataAccessResult::ReadWriteDenied),
        }
    }

    fn action(
        &mut self,
        ctx: &AccessContext,
        m: &MethodDescriptor,
        _p: Option<&Data>,
    ) -> Result<Option<Data>, DataAccessResult> {
        if (m.class_id, m.instance) != (class_id::DISCONNECT_CONTROL, DISCONNECT_CONTROL)
            || ctx.role != Role::Management
        {
            return Err(DataAccessResult::ReadWriteDenied);
        }
        self.update(now_unix());
        // Blue Book 4.5.8, control mode 1: remote_disconnect (b) from connected or ready,
        // remote_reconnect (d) from disconnected to ready_for_reconnection.
        match (m.method_id, self.relay) {
            (1, ControlState::Connected | ControlState::ReadyForReconnection) => {
                self.relay = ControlState::Disconnected;
                self.relay_log
                    .push(RelayOperation::RemoteDisconnect(ctx.client_sap));
                Ok(None)
            }
            (2, ControlState::Disconnected) => {
                self.relay = ControlState::ReadyForReconnection;
                self.relay_log
                    .push(RelayOperation::RemoteReconnect(ctx.client_sap));
                Ok(None)
            }
            (1 | 2, _) => Err(DataAccessResult::TemporaryFailure),
            _ => Err(DataAccessResult::ObjectUndefined),
        }
    }
}
