//! Records, the unit of data a meter produces: `reading`, `event`, `ack`, `heartbeat`, and
//! the batch that carries a run of them inside one sealed envelope.

use ciborium::Value;
use serde::{Deserialize, Serialize};

use crate::cbor;
use crate::{Error, MeterId};

/// Most records one batch (one envelope) may carry.
pub const MAX_RECORDS_PER_BATCH: usize = 1024;

/// A record as the meter produced it. Its key is `(meter, boot_id, seq)`; the meter and the
/// boot are those of the [`Batch`] that carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Position in this boot's stream: increases by one per record the meter produced.
    pub seq: u64,
    /// When the record was produced (end of the interval for a reading), Unix milliseconds UTC.
    /// Backfilled records keep this original time.
    pub t_ms: i64,
    /// What the record says.
    pub body: Body,
}

/// The kinds of record. Kinds this build does not know are kept raw, never dropped.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// Quantities over a reporting interval plus the energy counters at its end.
    Reading(Reading),
    /// Something happened: tamper, relay, limiter, power quality, boot, clock.
    Event(Event),
    /// The result of a command.
    Ack(Ack),
    /// Liveness, sent when there is nothing else to send.
    Heartbeat(Heartbeat),
    /// A kind from a newer meter: its name and the CBOR bytes of its body, as received.
    Unknown {
        /// The `kind` string.
        kind: String,
        /// The record body, CBOR, exactly as it arrived.
        body_cbor: Vec<u8>,
    },
}

impl Body {
    /// The `kind` string on the wire.
    pub fn kind(&self) -> &str {
        match self {
            Body::Reading(_) => "reading",
            Body::Event(_) => "event",
            Body::Ack(_) => "ack",
            Body::Heartbeat(_) => "heartbeat",
            Body::Unknown { kind, .. } => kind,
        }
    }
}

/// The §3.2 quantities summarised over one reporting interval, plus the monotonic counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Length of the interval the quantities cover, seconds.
    pub interval_s: f64,
    /// Mean fundamental frequency over the interval, Hz.
    pub freq_hz: f64,
    /// One entry per measured phase (one for single phase, three for three phase).
    pub phases: Vec<PhaseReading>,
    /// Totals over all phases.
    pub total: TotalReading,
    /// Energy registers at the end of the interval. Monotonic within a boot: a lost reading
    /// loses no energy, and a reset is a new `boot_id`, never a drop.
    pub counters: EnergyCounters,
}

/// Phase label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Phase A (L1), also the single phase of a single-phase meter.
    A,
    /// Phase B (L2).
    B,
    /// Phase C (L3).
    C,
}

/// Mean quantities of one phase over the interval (definitions: DESIGN §3.2, IEEE 1459-2010).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseReading {
    /// Which phase.
    pub phase: Phase,
    /// RMS voltage, V.
    pub v_rms: f64,
    /// RMS current, A.
    pub i_rms: f64,
    /// Active power, W (positive import).
    pub p_w: f64,
    /// Fundamental reactive power Q1, var (positive inductive). Absent when the source cannot
    /// measure its sign (e.g. PZEM-004T).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q_var: Option<f64>,
    /// Apparent power Vrms·Irms, VA.
    pub s_va: f64,
    /// Power factor P/S.
    pub pf: f64,
    /// Voltage THD relative to the fundamental, percent; absent when not measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v_thd_pct: Option<f64>,
    /// Current THD relative to the fundamental, percent; absent when not measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub i_thd_pct: Option<f64>,
}

/// Totals over all phases. `pf` uses the IEEE 1459 effective apparent power for three phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TotalReading {
    /// Total active power, W.
    pub p_w: f64,
    /// Total fundamental reactive power, var; absent when not measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q_var: Option<f64>,
    /// Total (effective) apparent power, VA.
    pub s_va: f64,
    /// Total power factor.
    pub pf: f64,
}

/// Monotonic energy registers (DESIGN §3.2 summary names): import/export active energy and
/// the four-quadrant reactive energy.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct EnergyCounters {
    /// Active energy imported (P > 0), Wh.
    pub import_wh: f64,
    /// Active energy exported (P < 0), Wh.
    pub export_wh: f64,
    /// Reactive energy in quadrant I (+P, +Q), varh.
    pub q1_varh: f64,
    /// Reactive energy in quadrant II (−P, +Q), varh.
    pub q2_varh: f64,
    /// Reactive energy in quadrant III (−P, −Q), varh.
    pub q3_varh: f64,
    /// Reactive energy in quadrant IV (+P, −Q), varh.
    pub q4_varh: f64,
}

impl EnergyCounters {
    /// True when no register of `self` is below the same register of `earlier`: counters
    /// never go backwards within a boot.
    pub fn is_monotonic_after(&self, earlier: &EnergyCounters) -> bool {
        self.import_wh >= earlier.import_wh
            && self.export_wh >= earlier.export_wh
            && self.q1_varh >= earlier.q1_varh
            && self.q2_varh >= earlier.q2_varh
            && self.q3_varh >= earlier.q3_varh
            && self.q4_varh >= earlier.q4_varh
    }
}

/// Event classes (DESIGN §3.3). Classes from newer meters decode as `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventClass {
    /// Cover open, magnetic field, CT bypass, reverse energy, current without voltage.
    Tamper,
    /// Relay state change (DLMS class 70).
    Relay,
    /// Limiter threshold crossed or overload cut-off (DLMS class 71).
    Limiter,
    /// Power quality: sag, swell, interruption, THD, frequency; also power loss/restore.
    PowerQuality,
    /// The agent started (with or without a counter reset).
    Boot,
    /// Clock set or jump.
    Clock,
    /// A class this build does not know.
    #[serde(other)]
    Other,
}

/// Something that happened at the meter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Broad class.
    pub class: EventClass,
    /// Specific code within the class, snake_case, e.g. `cover_open`, `ct_bypass`,
    /// `overload_cutoff`, `power_loss`, `counters_reset`.
    pub code: String,
    /// For conditions that start and end: `true` when raised, `false` when cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// A measured value that goes with the event (its unit is implied by the code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Free text for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Outcome of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckStatus {
    /// Carried out.
    Succeeded,
    /// Understood but could not be carried out (e.g. relay transition not allowed).
    Failed,
    /// Arrived after its expiry; not carried out.
    Expired,
    /// Malformed or not understood; not carried out.
    Rejected,
    /// A status this build does not know.
    #[serde(other)]
    Other,
}

/// The result of a command, sent as a record so it is as durable as a reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    /// The command's id; absent when the command was too malformed to have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// What happened.
    pub status: AckStatus,
    /// Why, for anything other than success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Liveness and backlog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Seconds since the agent started.
    pub uptime_s: u64,
    /// Records waiting in the outbox when the heartbeat was made.
    pub outbox_records: u64,
}

/// Records of one meter and one boot, in `seq` order: the plaintext of an uplink envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The meter that produced the records.
    pub meter: MeterId,
    /// The boot (counter epoch) they belong to.
    pub boot_id: u64,
    /// At least one record, strictly increasing `seq`.
    pub records: Vec<Record>,
}

/// Wire form of a record: `{kind, seq, t_ms, body}`.
#[derive(Serialize)]
struct WireRecord<'a, B: Serialize> {
    kind: &'a str,
    seq: u64,
    t_ms: i64,
    body: &'a B,
}

impl Batch {
    /// First `seq` of the batch (the envelope header repeats it).
    pub fn first_seq(&self) -> Option<u64> {
        self.records.first().map(|r| r.seq)
    }

    /// Encodes the records as a CBOR array (the plaintext that gets sealed).
    pub fn encode_records(&self) -> Result<Vec<u8>, Error> {
        self.check_shape()?;
        let mut items = Vec::with_capacity(self.records.len());
        for r in &self.records {
            items.push(r.to_value()?);
        }
        cbor::to_vec("batch", &Value::Array(items))
    }

    /// Decodes the plaintext of an envelope whose header said `meter`, `boot_id`, `first_seq`.
    /// Checks the record count before building records, that `seq` strictly increases and
    /// starts at `first_seq`. Unknown kinds are kept as [`Body::Unknown`]; unknown fields are
    /// ignored.
    pub fn decode_records(
        meter: MeterId,
        boot_id: u64,
        first_seq: u64,
        plaintext: &[u8],
    ) -> Result<Batch, Error> {
        let value = cbor::value_from_slice("batch", plaintext)?;
        let Value::Array(items) = value else {
            return Err(Error::malformed("batch", "not an array of records"));
        };
        if items.len() > MAX_RECORDS_PER_BATCH {
            return Err(Error::too_large(
                "batch",
                items.len(),
                MAX_RECORDS_PER_BATCH,
            ));
        }
        let mut records = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            records.push(decode_record(index, item)?);
        }
        let batch = Batch {
            meter,
            boot_id,
            records,
        };
        batch.check_shape()?;
        if batch.first_seq() != Some(first_seq) {
            return Err(Error::malformed(
                "batch",
                format_args!(
                    "header says first seq {first_seq}, first record has seq {}",
                    batch.records[0].seq
                ),
            ));
        }
        Ok(batch)
    }

    fn check_shape(&self) -> Result<(), Error> {
        if self.records.is_empty() {
            return Err(Error::malformed("batch", "no records"));
        }
        if self.records.len() > MAX_RECORDS_PER_BATCH {
            return Err(Error::too_large(
                "batch",
                self.records.len(),
                MAX_RECORDS_PER_BATCH,
            ));
        }
        for pair in self.records.windows(2) {
            if pair[1].seq <= pair[0].seq {
                return Err(Error::malformed(
                    "batch",
                    format_args!(
                        "seq {} follows seq {}: not increasing",
                        pair[1].seq, pair[0].seq
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl Record {
    /// Encodes one record as the CBOR map it is inside a batch (for local queues such as the
    /// agent's outbox; the wire always carries whole sealed batches).
    pub fn to_cbor(&self) -> Result<Vec<u8>, Error> {
        cbor::to_vec("record", &self.to_value()?)
    }

    fn to_value(&self) -> Result<Value, Error> {
        let (kind, seq, t_ms) = (self.body.kind(), self.seq, self.t_ms);
        match &self.body {
            Body::Reading(b) => Value::serialized(&WireRecord {
                kind,
                seq,
                t_ms,
                body: b,
            }),
            Body::Event(b) => Value::serialized(&WireRecord {
                kind,
                seq,
                t_ms,
                body: b,
            }),
            Body::Ack(b) => Value::serialized(&WireRecord {
                kind,
                seq,
                t_ms,
                body: b,
            }),
            Body::Heartbeat(b) => Value::serialized(&WireRecord {
                kind,
                seq,
                t_ms,
                body: b,
            }),
            Body::Unknown { body_cbor, .. } => {
                let raw = cbor::value_from_slice("unknown record body", body_cbor)?;
                Value::serialized(&WireRecord {
                    kind,
                    seq,
                    t_ms,
                    body: &raw,
                })
            }
        }
        .map_err(|e| Error::malformed(format!("record seq {seq}"), e))
    }

    /// Decodes what [`to_cbor`](Self::to_cbor) produced.
    pub fn from_cbor(bytes: &[u8]) -> Result<Record, Error> {
        decode_record(0, &cbor::value_from_slice("record", bytes)?)
    }
}

fn decode_record(index: usize, item: &Value) -> Result<Record, Error> {
    let what = format!("record {index}");
    let Value::Map(map) = item else {
        return Err(Error::malformed(what, "not a map"));
    };
    let kind = cbor::map_text(&what, map, "kind")?;
    let seq = cbor::map_u64(&what, map, "seq")?;
    let t_ms = cbor::map_i64(&what, map, "t_ms")?;
    let what = format!("record {index} (seq {seq}, kind {kind})");
    let body =
        cbor::map_get(map, "body").ok_or_else(|| Error::malformed(&what, "missing field body"))?;
    let body = match kind {
        "reading" => Body::Reading(cbor::from_value(&what, body)?),
        "event" => Body::Event(cbor::from_value(&what, body)?),
        "ack" => Body::Ack(cbor::from_value(&what, body)?),
        "heartbeat" => Body::Heartbeat(cbor::from_value(&what, body)?),
        other => Body::Unknown {
            kind: other.to_owned(),
            body_cbor: cbor::to_vec("unknown record body", body)?,
        },
    };
    Ok(Record { seq, t_ms, body })
}
