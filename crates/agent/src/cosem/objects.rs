//! The agent's COSEM objects ([`dlms::ObjectAccess`]): registers and instantaneous values from
//! the live pipeline state, the persisted load profile, the event logs, and disconnect control
//! and limiter wired to the pipeline's relay controller.

use std::sync::Arc;
use std::time::Duration;

use dlms::apdu::{AttributeDescriptor, DataAccessResult, MethodDescriptor, SelectiveAccess};
use dlms::cosem::{
    CaptureObject, ClockAttributes, ControlState as CosemControlState, ProfileGeneric, Register,
    ScalerUnit, Unit, class_id, disconnect_control_attribute, limiter_attribute, logical_name,
};
use dlms::{
    AccessContext, Data, DateTime, DeviationConvention, Obis, ObjectAccess, ObjectInfo, Role,
};
use tokio::sync::mpsc;

use super::{CosemRequest, CosemShared, EventLogKind, LiveValues};
use crate::control::{ControlState, LimiterConfig, Trigger};

/// Logical names of the agent's objects (IEC 62056-61 / IDIS conventions).
pub mod obis {
    use dlms::Obis;

    pub const ACTIVE_IMPORT: Obis = Obis::new(1, 0, 1, 8, 0, 255);
    pub const ACTIVE_EXPORT: Obis = Obis::new(1, 0, 2, 8, 0, 255);
    pub const REACTIVE_Q1: Obis = Obis::new(1, 0, 5, 8, 0, 255);
    pub const REACTIVE_Q2: Obis = Obis::new(1, 0, 6, 8, 0, 255);
    pub const REACTIVE_Q3: Obis = Obis::new(1, 0, 7, 8, 0, 255);
    pub const REACTIVE_Q4: Obis = Obis::new(1, 0, 8, 8, 0, 255);
    /// Total active power (import positive), the limiter's monitored value.
    pub const ACTIVE_POWER: Obis = Obis::new(1, 0, 16, 7, 0, 255);
    pub const POWER_FACTOR: Obis = Obis::new(1, 0, 13, 7, 0, 255);
    pub const FREQUENCY: Obis = Obis::new(1, 0, 14, 7, 0, 255);
    pub const LOAD_PROFILE: Obis = Obis::new(1, 0, 99, 1, 0, 255);
    pub const STANDARD_EVENT_LOG: Obis = Obis::new(0, 0, 99, 98, 0, 255);
    pub const FRAUD_EVENT_LOG: Obis = Obis::new(0, 0, 99, 98, 1, 255);
    pub const DISCONNECTOR_EVENT_LOG: Obis = Obis::new(0, 0, 99, 98, 2, 255);
    pub const STANDARD_EVENT_CODE: Obis = Obis::new(0, 0, 96, 11, 0, 255);
    pub const FRAUD_EVENT_CODE: Obis = Obis::new(0, 0, 96, 11, 1, 255);
    pub const DISCONNECTOR_EVENT_CODE: Obis = Obis::new(0, 0, 96, 11, 2, 255);
    pub const DISCONNECT_CONTROL: Obis = Obis::new(0, 0, 96, 3, 10, 255);
    pub const LIMITER: Obis = Obis::new(0, 0, 17, 0, 0, 255);

    /// Value group C of the per-phase quantities, phase L1..L3.
    pub const VOLTAGE_C: [u8; 3] = [32, 52, 72];
    pub const CURRENT_C: [u8; 3] = [31, 51, 71];
    pub const POWER_C: [u8; 3] = [21, 41, 61];
    pub const PF_C: [u8; 3] = [33, 53, 73];
    /// Value group E of total harmonic distortion.
    pub const THD_E: u8 = 124;
}

/// How long a COSEM action waits for the pipeline (it may be blocked on a full outbox).
const PIPELINE_TIMEOUT: Duration = Duration::from_secs(10);

/// The objects one COSEM connection sees; cheap to clone per connection.
#[derive(Debug, Clone)]
pub struct AgentObjects {
    shared: Arc<CosemShared>,
    requests: mpsc::Sender<CosemRequest>,
    capture_period_s: u32,
}

fn info(class_id: u16, version: u8, ln: Obis, attributes: u8, public: bool) -> ObjectInfo {
    ObjectInfo {
        class_id,
        version,
        logical_name: ln,
        attribute_count: attributes,
        writable_attributes: 0,
        method_count: 0,
        public,
    }
}

fn su(scaler: i8, unit: Unit) -> ScalerUnit {
    ScalerUnit {
        scaler,
        unit: unit as u8,
    }
}

/// `value / 10^scaler`, rounded, clamped into the integer type's range.
fn scaled(value: f64, scaler: i8) -> f64 {
    (value * 10f64.powi(-i32::from(scaler))).round()
}

fn unsigned32(value: f64, scaler: i8) -> Data {
    Data::DoubleLongUnsigned(scaled(value, scaler).clamp(0.0, u32::MAX as f64) as u32)
}

fn signed32(value: f64, scaler: i8) -> Data {
    Data::DoubleLong(scaled(value, scaler).clamp(i32::MIN as f64, i32::MAX as f64) as i32)
}

fn unsigned16(value: f64, scaler: i8) -> Data {
    Data::LongUnsigned(scaled(value, scaler).clamp(0.0, u16::MAX as f64) as u16)
}

fn signed16(value: f64, scaler: i8) -> Data {
    Data::Long(scaled(value, scaler).clamp(i16::MIN as f64, i16::MAX as f64) as i16)
}

fn time_data(unix_ms: i64) -> Data {
    let dt = DateTime::from_unix(
        unix_ms.div_euclid(1000),
        0,
        DeviationConvention::UtcMinusLocal,
    );
    Data::OctetString(dt.to_bytes().to_vec())
}

fn energy_obis() -> [Obis; 6] {
    [
        obis::ACTIVE_IMPORT,
        obis::ACTIVE_EXPORT,
        obis::REACTIVE_Q1,
        obis::REACTIVE_Q2,
        obis::REACTIVE_Q3,
        obis::REACTIVE_Q4,
    ]
}

fn energy_values(c: &schema::EnergyCounters) -> [f64; 6] {
    [
        c.import_wh,
        c.export_wh,
        c.q1_varh,
        c.q2_varh,
        c.q3_varh,
        c.q4_varh,
    ]
}

fn cosem_state(s: ControlState) -> CosemControlState {
    match s {
        ControlState::Disconnected => CosemControlState::Disconnected,
        ControlState::Connected => CosemControlState::Connected,
        ControlState::ReadyForReconnection => CosemControlState::ReadyForReconnection,
    }
}

fn phase_obis(c: u8, e: u8) -> Obis {
    Obis::new(1, 0, c, 7, e, 255)
}

/// The default limiter settings when none is configured yet: only the threshold is known.
fn limiter_with_threshold(threshold_w: f64) -> LimiterConfig {
    serde_json::from_value(serde_json::json!({ "threshold_normal_w": threshold_w }))
        .expect("limiter config with only the threshold has defaults")
}

impl AgentObjects {
    pub fn new(
        shared: Arc<CosemShared>,
        requests: mpsc::Sender<CosemRequest>,
        capture_period_s: u32,
    ) -> AgentObjects {
        AgentObjects {
            shared,
            requests,
            capture_period_s,
        }
    }

    fn phase_count(&self) -> usize {
        self.shared.lock_live().phases.len().clamp(1, 3)
    }

    /// Register `ln`: `None` when it is not one of ours, `Err` when it has no value yet.
    fn register(&self, live: &LiveValues, ln: Obis) -> Option<Result<Register, DataAccessResult>> {
        let reg = |value: Data, scaler_unit: ScalerUnit| {
            Some(Ok(Register {
                logical_name: ln,
                value,
                scaler_unit,
            }))
        };
        if let Some(i) = energy_obis().iter().position(|o| *o == ln) {
            let unit = if i < 2 { Unit::WattHour } else { Unit::VarHour };
            return reg(unsigned32(energy_values(&live.counters)[i], 0), su(0, unit));
        }
        let not_yet = Some(Err(DataAccessResult::TemporaryFailure));
        match ln {
            obis::ACTIVE_POWER if !live.phases.is_empty() => {
                return reg(signed32(live.total_p_w, 0), su(0, Unit::Watt));
            }
            obis::POWER_FACTOR if !live.phases.is_empty() => {
                return reg(signed16(live.total_pf, -3), su(-3, Unit::Unitless));
            }
            obis::FREQUENCY => {
                return match live.freq_hz {
                    Some(f) => reg(unsigned16(f, -2), su(-2, Unit::Hertz)),
                    None => not_yet,
                };
            }
            obis::ACTIVE_POWER | obis::POWER_FACTOR => return not_yet,
            _ => {}
        }
        let [a, b, c, d, e, f] = ln.0;
        if (a, b, d, f) != (1, 0, 7, 255) {
            return None;
        }
        let find = |table: &[u8; 3]| table.iter().position(|x| *x == c);
        let phase_index = find(&obis::VOLTAGE_C)
            .or_else(|| find(&obis::CURRENT_C))
            .or_else(|| find(&obis::POWER_C))
            .or_else(|| find(&obis::PF_C))?;
        if phase_index >= self.phase_count() {
            return None;
        }
        let Some(p) = live.phases.get(phase_index) else {
            return not_yet;
        };
        let is = |table: &[u8; 3]| table[phase_index] == c;
        match e {
            0 if is(&obis::VOLTAGE_C) => reg(unsigned16(p.v_rms, -1), su(-1, Unit::Volt)),
            0 if is(&obis::CURRENT_C) => reg(unsigned32(p.i_rms, -3), su(-3, Unit::Ampere)),
            0 if is(&obis::POWER_C) => reg(signed32(p.p_w, 0), su(0, Unit::Watt)),
            0 if is(&obis::PF_C) => reg(signed16(p.pf, -3), su(-3, Unit::Unitless)),
            obis::THD_E if is(&obis::VOLTAGE_C) => match p.v_thd_pct {
                Some(v) => reg(unsigned16(v, -2), su(-2, Unit::Percent)),
                None => not_yet,
            },
            obis::THD_E if is(&obis::CURRENT_C) => match p.i_thd_pct {
                Some(v) => reg(unsigned16(v, -2), su(-2, Unit::Percent)),
                None => not_yet,
            },
            _ => None,
        }
    }

    fn load_profile(&self) -> ProfileGeneric {
        let clock = CaptureObject {
            class_id: class_id::CLOCK,
            logical_name: Obis::CLOCK,
            attribute_id: 2,
            data_index: 0,
        };
        let mut capture_objects = vec![clock];
        capture_objects.extend(energy_obis().map(|ln| CaptureObject {
            class_id: class_id::REGISTER,
            logical_name: ln,
            attribute_id: 2,
            data_index: 0,
        }));
        let store = self.shared.lock_profile();
        let rows = store
            .rows()
            .iter()
            .map(|r| {
                let mut row = vec![time_data(r.unix_s * 1000)];
                row.extend(energy_values(&r.counters).map(|v| unsigned32(v, 0)));
                row
            })
            .collect();
        ProfileGeneric {
            logical_name: obis::LOAD_PROFILE,
            capture_objects,
            capture_period_s: self.capture_period_s,
            rows,
            max_entries: store.capacity() as u32,
        }
    }

    fn event_log(&self, kind: EventLogKind) -> ProfileGeneric {
        let code_obis = event_code_obis(kind);
        let events = self.shared.lock_events();
        ProfileGeneric {
            logical_name: event_log_obis(kind),
            capture_objects: vec![
                CaptureObject {
                    class_id: class_id::CLOCK,
                    logical_name: Obis::CLOCK,
                    attribute_id: 2,
                    data_index: 0,
                },
                CaptureObject {
                    class_id: class_id::DATA,
                    logical_name: code_obis,
                    attribute_id: 2,
                    data_index: 0,
                },
            ],
            // Event logs capture asynchronously, on each event.
            capture_period_s: 0,
            rows: events.logs[kind as usize]
                .iter()
                .map(|e| vec![time_data(e.at_unix_ms), Data::Unsigned(e.code)])
                .collect(),
            max_entries: events.capacity as u32,
        }
    }

    /// Sends `request` to the pipeline and waits for its answer (this runs on a connection
    /// thread, never inside the async runtime).
    fn ask_pipeline(
        &self,
        make: impl FnOnce(std::sync::mpsc::Sender<Result<(), String>>) -> CosemRequest,
    ) -> Result<(), DataAccessResult> {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.requests.blocking_send(make(tx)).is_err() {
            tracing::warn!("COSEM request refused: the pipeline has stopped");
            return Err(DataAccessResult::TemporaryFailure);
        }
        match rx.recv_timeout(PIPELINE_TIMEOUT) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => {
                tracing::info!(%reason, "COSEM request refused by the meter");
                Err(DataAccessResult::TemporaryFailure)
            }
            Err(_) => {
                tracing::warn!("COSEM request: no answer from the pipeline in time");
                Err(DataAccessResult::TemporaryFailure)
            }
        }
    }

    fn limiter_config(&self) -> Option<LimiterConfig> {
        self.shared.lock_live().limiter.clone()
    }
}

pub(crate) fn event_log_obis(kind: EventLogKind) -> Obis {
    match kind {
        EventLogKind::Standard => obis::STANDARD_EVENT_LOG,
        EventLogKind::Fraud => obis::FRAUD_EVENT_LOG,
        EventLogKind::Disconnector => obis::DISCONNECTOR_EVENT_LOG,
    }
}

pub(crate) fn event_code_obis(kind: EventLogKind) -> Obis {
    match kind {
        EventLogKind::Standard => obis::STANDARD_EVENT_CODE,
        EventLogKind::Fraud => obis::FRAUD_EVENT_CODE,
        EventLogKind::Disconnector => obis::DISCONNECTOR_EVENT_CODE,
    }
}

const LOGS: [EventLogKind; 3] = [
    EventLogKind::Standard,
    EventLogKind::Fraud,
    EventLogKind::Disconnector,
];

impl ObjectAccess for AgentObjects {
    fn objects(&self) -> Vec<ObjectInfo> {
        let mut list = vec![
            info(class_id::DATA, 0, Obis::LOGICAL_DEVICE_NAME, 2, true),
            info(class_id::CLOCK, 0, Obis::CLOCK, 9, true),
        ];
        list.extend(energy_obis().map(|ln| info(class_id::REGISTER, 0, ln, 3, false)));
        for ln in [obis::ACTIVE_POWER, obis::POWER_FACTOR, obis::FREQUENCY] {
            list.push(info(class_id::REGISTER, 0, ln, 3, false));
        }
        for p in 0..self.phase_count() {
            for (c, e) in [
                (obis::VOLTAGE_C[p], 0),
                (obis::CURRENT_C[p], 0),
                (obis::POWER_C[p], 0),
                (obis::PF_C[p], 0),
                (obis::VOLTAGE_C[p], obis::THD_E),
                (obis::CURRENT_C[p], obis::THD_E),
            ] {
                list.push(info(class_id::REGISTER, 0, phase_obis(c, e), 3, false));
            }
        }
        list.push(info(
            class_id::PROFILE_GENERIC,
            1,
            obis::LOAD_PROFILE,
            8,
            false,
        ));
        for kind in LOGS {
            list.push(info(
                class_id::PROFILE_GENERIC,
                1,
                event_log_obis(kind),
                8,
                false,
            ));
            list.push(info(class_id::DATA, 0, event_code_obis(kind), 2, false));
        }
        list.push(ObjectInfo {
            method_count: 2,
            ..info(
                class_id::DISCONNECT_CONTROL,
                0,
                obis::DISCONNECT_CONTROL,
                4,
                false,
            )
        });
        list.push(ObjectInfo {
            writable_attributes: (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7),
            ..info(class_id::LIMITER, 0, obis::LIMITER, 11, false)
        });
        list
    }

    fn get(
        &mut self,
        _ctx: &AccessContext,
        a: &AttributeDescriptor,
        access: Option<&SelectiveAccess>,
    ) -> Result<Data, DataAccessResult> {
        match (a.class_id, a.instance) {
            (class_id::DATA, Obis::LOGICAL_DEVICE_NAME) => match a.attribute_id {
                1 => Ok(logical_name(a.instance)),
                2 => Ok(Data::OctetString(
                    format!("WTL{}", self.shared.meter_name).into_bytes(),
                )),
                _ => Err(DataAccessResult::ObjectUndefined),
            },
            (class_id::CLOCK, Obis::CLOCK) => {
                let offset = self.shared.lock_live().clock_offset_ms;
                let now_ms = crate::pipeline::unix_now_ms() + offset;
                ClockAttributes {
                    logical_name: Obis::CLOCK,
                    time: DateTime::from_unix(
                        now_ms.div_euclid(1000),
                        0,
                        DeviationConvention::UtcMinusLocal,
                    ),
                    time_zone_min: 0,
                    status: 0,
                    daylight_savings_enabled: false,
                    clock_base: 1,
                }
                .get(a.attribute_id)
            }
            (class_id::REGISTER, ln) => {
                let live = self.shared.lock_live().clone();
                self.register(&live, ln)
                    .ok_or(DataAccessResult::ObjectUndefined)??
                    .get(a.attribute_id)
            }
            (class_id::PROFILE_GENERIC, obis::LOAD_PROFILE) => {
                self.load_profile().get(a.attribute_id, access)
            }
            (class_id::PROFILE_GENERIC, ln) => {
                let kind = LOGS
                    .into_iter()
                    .find(|k| event_log_obis(*k) == ln)
                    .ok_or(DataAccessResult::ObjectUndefined)?;
                self.event_log(kind).get(a.attribute_id, access)
            }
            (class_id::DATA, ln) => {
                let kind = LOGS
                    .into_iter()
                    .find(|k| event_code_obis(*k) == ln)
                    .ok_or(DataAccessResult::ObjectUndefined)?;
                match a.attribute_id {
                    1 => Ok(logical_name(ln)),
                    2 => Ok(Data::Unsigned(
                        self.shared.lock_events().logs[kind as usize]
                            .last()
                            .map_or(0, |e| e.code),
                    )),
                    _ => Err(DataAccessResult::ObjectUndefined),
                }
            }
            (class_id::DISCONNECT_CONTROL, obis::DISCONNECT_CONTROL) => {
                let live = self.shared.lock_live();
                let state = live.relay.ok_or(DataAccessResult::TemporaryFailure)?;
                disconnect_control_attribute(
                    obis::DISCONNECT_CONTROL,
                    a.attribute_id,
                    cosem_state(state),
                    live.control_mode,
                )
            }
            (class_id::LIMITER, obis::LIMITER) => {
                let config = self.limiter_config();
                let (normal, emergency, over, under) = match &config {
                    Some(c) => (
                        c.threshold_normal_w,
                        c.threshold_emergency_w.unwrap_or(0.0),
                        c.min_over_threshold_duration_s,
                        c.min_under_threshold_duration_s,
                    ),
                    // No limiter: thresholds 0 mean "no limit" to the head-end.
                    None => (0.0, 0.0, 0, 0),
                };
                limiter_attribute(
                    obis::LIMITER,
                    a.attribute_id,
                    (class_id::REGISTER, obis::ACTIVE_POWER, 2),
                    signed32(normal, 0),
                    signed32(normal, 0),
                    signed32(emergency, 0),
                    over,
                    under,
                )
            }
            _ => Err(DataAccessResult::ObjectUndefined),
        }
    }

    fn set(
        &mut self,
        ctx: &AccessContext,
        a: &AttributeDescriptor,
        _access: Option<&SelectiveAccess>,
        value: &Data,
    ) -> Result<(), DataAccessResult> {
        if (a.class_id, a.instance) != (class_id::LIMITER, obis::LIMITER)
            || ctx.role != Role::Management
        {
            return Err(DataAccessResult::ReadWriteDenied);
        }
        let number = value.as_i128().ok_or(DataAccessResult::TypeUnmatched)?;
        let mut config = self
            .limiter_config()
            .unwrap_or_else(|| limiter_with_threshold(0.0));
        match a.attribute_id {
            4 if number > 0 => config.threshold_normal_w = number as f64,
            5 => config.threshold_emergency_w = (number > 0).then_some(number as f64),
            6 => {
                config.min_over_threshold_duration_s =
                    u32::try_from(number).map_err(|_| DataAccessResult::TypeUnmatched)?
            }
            7 => {
                config.min_under_threshold_duration_s =
                    u32::try_from(number).map_err(|_| DataAccessResult::TypeUnmatched)?
            }
            4 => return Err(DataAccessResult::TypeUnmatched),
            _ => return Err(DataAccessResult::ReadWriteDenied),
        }
        let client_sap = ctx.client_sap;
        self.ask_pipeline(|reply| CosemRequest::Limiter {
            config,
            client_sap,
            reply,
        })
    }

    fn action(
        &mut self,
        ctx: &AccessContext,
        m: &MethodDescriptor,
        _parameters: Option<&Data>,
    ) -> Result<Option<Data>, DataAccessResult> {
        // The server already allows methods only to the management association; checked again
        // here because this one moves the customer's supply.
        if (m.class_id, m.instance) != (class_id::DISCONNECT_CONTROL, obis::DISCONNECT_CONTROL)
            || ctx.role != Role::Management
        {
            return Err(DataAccessResult::ReadWriteDenied);
        }
        let trigger = match m.method_id {
            1 => Trigger::RemoteDisconnect,
            2 => Trigger::RemoteReconnect,
            _ => return Err(DataAccessResult::ObjectUndefined),
        };
        let client_sap = ctx.client_sap;
        self.ask_pipeline(|reply| CosemRequest::Relay {
            trigger,
            client_sap,
            reply,
        })
        .map(|()| None)
    }
}
