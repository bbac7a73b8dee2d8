//! The `Store` trait (DESIGN §3.5), the rows it reads and writes, and the two implementations:
//! SQLite ([`SqliteStore`]) and PostgreSQL ([`PgStore`]). Each implementation file is the one
//! place that knows its SQL dialect; everything here is dialect-free.

use std::sync::LazyLock;

use async_trait::async_trait;
use schema::{Action, EnergyCounters, MeterId, Phase, PhaseReading, Reading, Record, TotalReading};

use crate::Error;

pub(crate) mod accounts;
pub(crate) mod alarms;
pub(crate) mod billing;
pub(crate) mod dlms;
pub(crate) mod extensions;
pub(crate) mod keys;
pub(crate) mod postgres;
pub(crate) mod sqlite;
#[cfg(test)]
pub(crate) mod suite;

pub use self::billing::{
    BillState, BillingStore, MessageStatus, NewMessage, NewPayment, NotificationPref, PaymentMode,
    PrepaidState, StoredBill, StoredBillLine, StoredMessage, StoredPayment, StoredTariff,
    TariffAssignment,
};
pub use extensions::Database;
pub use postgres::{PgConfig, PgStore};
pub use sqlite::SqliteStore;

/// A customer: the person or organisation meters are assigned to (seed 004).
#[derive(Debug, Clone, PartialEq)]
pub struct Customer {
    /// Stable id chosen by the operator.
    pub id: String,
    /// Display name.
    pub name: String,
    /// IANA time zone of the customer's bills and charts, e.g. `Europe/Berlin`.
    pub time_zone: String,
}

/// Whether a meter may deliver data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeterStatus {
    /// Enrolled and delivering.
    Active,
    /// Removed from service: its envelopes are quarantined.
    Deregistered,
}

impl MeterStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            MeterStatus::Active => "active",
            MeterStatus::Deregistered => "deregistered",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, Error> {
        match s {
            "active" => Ok(MeterStatus::Active),
            "deregistered" => Ok(MeterStatus::Deregistered),
            other => Err(Error::invalid(format!("unknown meter status {other:?}"))),
        }
    }
}

/// An enrolled meter.
#[derive(Debug, Clone, PartialEq)]
pub struct Meter {
    /// Its id (also its certificate common name and topic level).
    pub id: MeterId,
    /// Where its 256-bit key lives (a key file name or a secret-store reference); the key
    /// itself is never stored in the database.
    pub key_ref: String,
    /// The observer meter upstream that measures this meter's feeder (energy balance, seed 000).
    pub parent: Option<MeterId>,
    /// Site (building, substation, feeder) label.
    pub site: Option<String>,
    /// The customer the meter is assigned to.
    pub customer: Option<String>,
    /// IANA time zone its rollups are computed in (normally the customer's).
    pub time_zone: String,
    /// Expected reporting interval, seconds.
    pub reporting_interval_s: u32,
    /// Whether export (P < 0) is expected (a PV house) rather than a tamper sign.
    pub allowed_export: bool,
    /// Active or deregistered.
    pub status: MeterStatus,
    /// When the server last stored something from it, Unix ms UTC (maintained by ingest).
    pub last_seen_ms: Option<i64>,
    /// Meter clock minus server clock at the last delivery, ms (maintained by ingest).
    pub clock_drift_ms: Option<i64>,
}

impl Meter {
    /// An active meter with the defaults: UTC, 60 s interval, no export, no parent.
    pub fn new(id: MeterId, key_ref: impl Into<String>) -> Self {
        Self {
            id,
            key_ref: key_ref.into(),
            parent: None,
            site: None,
            customer: None,
            time_zone: "UTC".into(),
            reporting_interval_s: 60,
            allowed_export: false,
            status: MeterStatus::Active,
            last_seen_ms: None,
            clock_drift_ms: None,
        }
    }

    /// The parsed time zone.
    pub fn tz(&self) -> Result<chrono_tz::Tz, Error> {
        parse_tz(&self.time_zone)
    }
}

pub(crate) fn parse_tz(name: &str) -> Result<chrono_tz::Tz, Error> {
    name.parse::<chrono_tz::Tz>()
        .map_err(|_| Error::invalid(format!("unknown time zone {name:?}")))
}

/// A stored reading with its key.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReading {
    /// The meter.
    pub meter: MeterId,
    /// Counter epoch.
    pub boot_id: u64,
    /// Position in the boot.
    pub seq: u64,
    /// End of the interval, Unix ms UTC.
    pub t_ms: i64,
    /// The quantities and counters as received.
    pub reading: Reading,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// The meter.
    pub meter: MeterId,
    /// Counter epoch.
    pub boot_id: u64,
    /// Position in the boot.
    pub seq: u64,
    /// When it happened, Unix ms UTC.
    pub t_ms: i64,
    /// The event as received.
    pub event: schema::Event,
}

/// Aggregation levels. Buckets are aligned in the meter's local time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resolution {
    /// Quarter of an hour (every UTC offset in use is a multiple of 15 minutes, so these
    /// buckets are the same in every zone).
    Min15,
    /// Local hour (in Asia/Kolkata it starts at :30 UTC).
    Hour,
    /// Local calendar day: 23 or 25 hours on DST change days.
    Day,
    /// Local calendar month.
    Month,
}

impl Resolution {
    /// All levels, finest first.
    pub const ALL: [Resolution; 4] = [
        Resolution::Min15,
        Resolution::Hour,
        Resolution::Day,
        Resolution::Month,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Min15 => "15m",
            Resolution::Hour => "1h",
            Resolution::Day => "1d",
            Resolution::Month => "1mo",
        }
    }

    /// Nominal length, seconds (for choosing a resolution; real buckets may differ by DST).
    pub fn nominal_s(self) -> i64 {
        match self {
            Resolution::Min15 => 900,
            Resolution::Hour => 3_600,
            Resolution::Day => 86_400,
            Resolution::Month => 30 * 86_400,
        }
    }
}

/// One rollup bucket: energy from counter differences plus the peak power seen.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollup {
    /// Level.
    pub resolution: Resolution,
    /// Bucket start, Unix ms UTC (a local-time boundary).
    pub start_ms: i64,
    /// Bucket end (exclusive), Unix ms UTC.
    pub end_ms: i64,
    /// Energy that flowed in the bucket: the sum of counter differences between consecutive
    /// readings of the same boot whose later reading ends in the bucket.
    pub energy: EnergyCounters,
    /// Readings that ended in the bucket.
    pub readings: u64,
    /// Highest total active power of those readings, W.
    pub max_p_w: Option<f64>,
}

/// What a range query returns: raw readings, or rollups when the span is long.
#[derive(Debug, Clone, PartialEq)]
pub enum Series {
    /// Raw readings, oldest first.
    Raw(Vec<StoredReading>),
    /// Rollup buckets of one level, oldest first.
    Rollups(Resolution, Vec<Rollup>),
}

/// A command's place in its life cycle (DESIGN §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandStatus {
    /// Created, waiting for the meter.
    Queued,
    /// Published to the meter's `down` topic.
    Sent,
    /// The broker confirmed delivery to the meter.
    Delivered,
    /// The meter acknowledged success.
    Succeeded,
    /// The meter could not carry it out (or rejected it).
    Failed,
    /// Its expiry passed before it completed.
    Expired,
}

impl CommandStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Queued => "QUEUED",
            CommandStatus::Sent => "SENT",
            CommandStatus::Delivered => "DELIVERED",
            CommandStatus::Succeeded => "SUCCEEDED",
            CommandStatus::Failed => "FAILED",
            CommandStatus::Expired => "EXPIRED",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "QUEUED" => CommandStatus::Queued,
            "SENT" => CommandStatus::Sent,
            "DELIVERED" => CommandStatus::Delivered,
            "SUCCEEDED" => CommandStatus::Succeeded,
            "FAILED" => CommandStatus::Failed,
            "EXPIRED" => CommandStatus::Expired,
            other => return Err(Error::invalid(format!("unknown command status {other:?}"))),
        })
    }

    /// True for SUCCEEDED, FAILED and EXPIRED: nothing follows them.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            CommandStatus::Succeeded | CommandStatus::Failed | CommandStatus::Expired
        )
    }

    /// Whether the life cycle allows `self → next`. Steps may be skipped forwards (an ack can
    /// arrive before the broker's delivery confirmation), never backwards, and a final status
    /// is final.
    pub fn can_become(self, next: CommandStatus) -> bool {
        use CommandStatus::*;
        !self.is_final()
            && match next {
                Queued => false,
                Sent => self == Queued,
                Delivered => matches!(self, Queued | Sent),
                Succeeded | Failed | Expired => true,
            }
    }
}

/// A new command as an operator issues it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCommand {
    /// Target meter.
    pub meter: MeterId,
    /// What to do.
    pub action: Action,
    /// Who issued it (user name or `system`).
    pub issued_by: String,
    /// Why, for the audit log.
    pub reason: String,
    /// When it was issued, Unix ms UTC.
    pub issued_ms: i64,
    /// After this it must not be carried out, Unix ms UTC.
    pub expires_ms: i64,
}

/// A stored command.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCommand {
    /// Store-assigned id; its decimal form is the wire command id.
    pub id: i64,
    /// The command as issued.
    pub command: NewCommand,
    /// Current status.
    pub status: CommandStatus,
    /// When the status last changed, Unix ms UTC.
    pub updated_ms: i64,
    /// The meter's or the system's explanation of the last change.
    pub detail: Option<String>,
}

impl StoredCommand {
    /// The wire form to seal for the meter.
    pub fn to_wire(&self) -> schema::Command {
        schema::Command {
            id: self.id.to_string(),
            issued_ms: self.command.issued_ms,
            expires_ms: self.command.expires_ms,
            action: self.command.action.clone(),
        }
    }
}

/// One line of a command's append-only audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// The command.
    pub command_id: i64,
    /// When, Unix ms UTC.
    pub at_ms: i64,
    /// Who (user, `system`, `meter:<id>`).
    pub actor: String,
    /// Status before (`None` for creation).
    pub from: Option<CommandStatus>,
    /// Status after.
    pub to: CommandStatus,
    /// Why.
    pub note: String,
}

/// Something ingest refused, kept with its raw bytes for a person to look at.
#[derive(Debug, Clone, PartialEq)]
pub struct NewQuarantine {
    /// When the server received it, Unix ms UTC.
    pub received_ms: i64,
    /// Where it came from (the MQTT topic).
    pub source: String,
    /// The meter it claims to be from, when that could be read.
    pub meter_claimed: Option<String>,
    /// Why it was refused, in a sentence.
    pub reason: String,
    /// The bytes (the whole envelope, or the one record's CBOR); see `raw_len`.
    pub raw: Vec<u8>,
    /// Length of what was received; larger than `raw.len()` when an oversized payload was cut.
    pub raw_len: u64,
}

/// A stored quarantine entry.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantineEntry {
    /// Store-assigned id.
    pub id: i64,
    /// The entry.
    pub entry: NewQuarantine,
}

/// Records of one verified batch to store.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchWrite {
    /// The meter (already verified).
    pub meter: MeterId,
    /// Its boot.
    pub boot_id: u64,
    /// Records that passed validation.
    pub records: Vec<Record>,
    /// When the server received the envelope, Unix ms UTC.
    pub received_ms: i64,
    /// Meter clock minus server clock, when it could be estimated.
    pub clock_drift_ms: Option<i64>,
    /// The topic it came on (for quarantining conflicting copies).
    pub source: String,
}

/// Everything one ingest transaction writes: verified batches and quarantine entries.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WriteSet {
    /// Verified batches.
    pub batches: Vec<BatchWrite>,
    /// Refused envelopes and records.
    pub quarantine: Vec<NewQuarantine>,
}

/// What happened to each batch of a [`WriteSet`], in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WriteOutcome {
    /// One entry per batch.
    pub batches: Vec<BatchOutcome>,
}

/// What happened to the records of one batch.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BatchOutcome {
    /// Seqs stored now.
    pub stored: Vec<u64>,
    /// Seqs already stored with the same timestamp (re-delivery or replay).
    pub duplicate: Vec<u64>,
    /// Seqs already stored with a different timestamp: the new copy went to quarantine.
    pub conflicting: Vec<u64>,
}

/// A run of missing seqs in one boot of a meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The boot.
    pub boot_id: u64,
    /// First missing seq.
    pub from_seq: u64,
    /// Last missing seq (inclusive).
    pub to_seq: u64,
}

/// A reading's counters, as rollups need them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CounterPoint {
    /// Counter epoch.
    pub boot_id: u64,
    /// Position in the boot.
    pub seq: u64,
    /// End of the interval, Unix ms UTC.
    pub t_ms: i64,
    /// Counters at that time.
    pub counters: EnergyCounters,
    /// Total active power, W.
    pub p_w: f64,
}

/// The stored readings nearest to a run of seqs in one boot (for the monotonic check).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Neighbours {
    /// The reading with the highest seq below the run.
    pub before: Option<CounterPoint>,
    /// The reading with the lowest seq above the run.
    pub after: Option<CounterPoint>,
}

/// A run of seqs of one boot whose stored [`Neighbours`] are wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqRun {
    /// The meter.
    pub meter: MeterId,
    /// The boot.
    pub boot_id: u64,
    /// Lowest seq of the run.
    pub first_seq: u64,
    /// Highest seq of the run.
    pub last_seq: u64,
}

/// Readings a rollup refresh needs: those in the range plus, per boot, the reading just
/// before the range (the baseline for the first difference).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RollupInputs {
    /// Readings with `from_ms < t_ms <= to_ms`, ordered by boot and seq.
    pub in_range: Vec<CounterPoint>,
    /// Per boot present in `in_range`, the reading before its first one there.
    pub baselines: Vec<CounterPoint>,
}

/// A range of readings whose rollups must be recomputed (written with the readings, so a
/// crash between commit and rollup leaves the work recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyRange {
    /// The meter.
    pub meter: MeterId,
    /// Earliest reading end time touched, Unix ms UTC.
    pub from_ms: i64,
    /// Latest reading end time touched (or the next reading's), Unix ms UTC.
    pub to_ms: i64,
    /// Bumped by every write into the range: a refresh clears the range only when the
    /// generation it planned from is still current (a gap filled inside the range changes
    /// neither bound, but changes this).
    pub generation: i64,
}

/// New rows for one rollup level of one meter: they replace the level's rows with `start_ms`
/// in `[from_ms, to_ms)`.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupLevel {
    /// Level.
    pub resolution: Resolution,
    /// First bucket start replaced, Unix ms UTC.
    pub from_ms: i64,
    /// End of the replaced span (exclusive), Unix ms UTC.
    pub to_ms: i64,
    /// The recomputed buckets.
    pub rows: Vec<Rollup>,
}

/// A meter's recomputed rollup levels, and the dirty range they settle (if any).
#[derive(Debug, Clone, PartialEq)]
pub struct RollupUpdate {
    /// The meter.
    pub meter: MeterId,
    /// Every level, finest first.
    pub levels: Vec<RollupLevel>,
    /// Cleared in the same transaction when it is still exactly as read (a range that grew, or
    /// was written into, meanwhile stays dirty).
    pub clear: Option<DirtyRange>,
}

/// What a retention run removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionReport {
    /// Raw readings deleted.
    pub readings_deleted: u64,
    /// Readings older than the cutoff kept because their 15-minute rollup does not exist yet.
    pub readings_kept_without_rollup: u64,
    /// Whole partitions dropped (PostgreSQL).
    pub partitions_dropped: u64,
}

/// The storage contract. Both implementations pass the same suite (`store/suite.rs`).
///
/// All times are Unix milliseconds UTC. Writes of ingest data go through [`Store::write`],
/// one transaction per call, so an acknowledgement sent after it returns is backed by a
/// commit.
#[async_trait]
pub trait Store: Send + Sync {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// Highest migration applied.
    async fn schema_version(&self) -> Result<u32, Error>;

    /// Creates or replaces a customer.
    async fn upsert_customer(&self, customer: &Customer) -> Result<(), Error>;
    /// A customer by id.
    async fn customer(&self, id: &str) -> Result<Option<Customer>, Error>;
    /// All customers, by id.
    async fn customers(&self) -> Result<Vec<Customer>, Error>;

    /// Creates or updates a meter (registration, assignment, deregistration). Ingest-owned
    /// fields (`last_seen_ms`, `clock_drift_ms`) are left as they are.
    async fn upsert_meter(&self, meter: &Meter) -> Result<(), Error>;
    /// A meter by id.
    async fn meter(&self, id: &MeterId) -> Result<Option<Meter>, Error>;
    /// All meters, by id.
    async fn meters(&self) -> Result<Vec<Meter>, Error>;

    /// The stored readings of `(meter, boot_id)` just below `first_seq` and just above
    /// `last_seq`.
    async fn neighbours(
        &self,
        meter: &MeterId,
        boot_id: u64,
        first_seq: u64,
        last_seq: u64,
    ) -> Result<Neighbours, Error>;

    /// [`neighbours`](Self::neighbours) of every run, in order. Ingest asks once per group of
    /// deliveries, so a backend answers them together (one blocking call on SQLite, pipelined
    /// queries on PostgreSQL) instead of one wait per delivery on the writer's path.
    async fn neighbours_of_runs(&self, runs: &[SeqRun]) -> Result<Vec<Neighbours>, Error> {
        let mut out = Vec::with_capacity(runs.len());
        for r in runs {
            out.push(
                self.neighbours(&r.meter, r.boot_id, r.first_seq, r.last_seq)
                    .await?,
            );
        }
        Ok(out)
    }

    /// Stores batches and quarantine entries in one transaction. Idempotent on
    /// `(meter, boot_id, seq)`; records the dirty rollup ranges in the same transaction.
    async fn write(&self, set: &WriteSet) -> Result<WriteOutcome, Error>;

    /// Raw readings with `from_ms <= t_ms < to_ms`, oldest first, at most `limit`.
    async fn readings(
        &self,
        meter: &MeterId,
        from_ms: i64,
        to_ms: i64,
        limit: u32,
    ) -> Result<Vec<StoredReading>, Error>;
    /// The newest reading of each meter.
    async fn latest_readings(&self) -> Result<Vec<StoredReading>, Error>;
    /// Missing seqs per boot of a meter (between the lowest and highest stored seq).
    async fn gaps(&self, meter: &MeterId) -> Result<Vec<Gap>, Error>;
    /// Events with `from_ms <= t_ms < to_ms`, oldest first.
    async fn events(
        &self,
        meter: &MeterId,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<StoredEvent>, Error>;
    /// The newest event of `meter` with `code`, however old (the relay state a meter last
    /// reported may be months old).
    async fn latest_event(&self, meter: &MeterId, code: &str)
    -> Result<Option<StoredEvent>, Error>;
    /// Records of kinds this build does not know, stored raw: `(meter, boot, seq, kind, cbor)`.
    async fn unknown_records(
        &self,
        meter: &MeterId,
    ) -> Result<Vec<(u64, u64, String, Vec<u8>)>, Error>;

    /// Rollup inputs for `from_ms < t_ms <= to_ms`.
    async fn rollup_inputs(
        &self,
        meter: &MeterId,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<RollupInputs, Error>;
    /// Rollups of one level with `start_ms` in `[from_ms, to_ms)`, oldest first.
    async fn rollups(
        &self,
        meter: &MeterId,
        resolution: Resolution,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Rollup>, Error>;
    /// Writes the recomputed levels of several meters and clears their dirty ranges in ONE
    /// transaction (one commit for a whole refresh round instead of one per level and meter).
    async fn apply_rollups(&self, updates: &[RollupUpdate]) -> Result<(), Error>;
    /// Ranges whose rollups are stale.
    async fn dirty_ranges(&self) -> Result<Vec<DirtyRange>, Error>;

    /// Deletes raw readings that end before `cutoff_ms` and whose 15-minute rollup exists.
    async fn apply_retention(&self, cutoff_ms: i64) -> Result<RetentionReport, Error>;

    /// Queues a command and writes its first audit line.
    async fn create_command(&self, command: &NewCommand) -> Result<StoredCommand, Error>;
    /// Moves a command along its life cycle and appends to the audit log.
    async fn set_command_status(
        &self,
        id: i64,
        status: CommandStatus,
        actor: &str,
        note: &str,
        at_ms: i64,
    ) -> Result<StoredCommand, Error>;
    /// Commands of a meter, optionally of one status, newest first.
    async fn commands(
        &self,
        meter: &MeterId,
        status: Option<CommandStatus>,
    ) -> Result<Vec<StoredCommand>, Error>;
    /// The audit log of a command, oldest first.
    async fn command_audit(&self, id: i64) -> Result<Vec<AuditEntry>, Error>;
    /// A command by id.
    async fn command(&self, id: i64) -> Result<Option<StoredCommand>, Error>;
    /// Commands of every meter that are not final (QUEUED, SENT, DELIVERED), oldest first, at
    /// most `limit` (the command dispatcher's work list).
    async fn unfinished_commands(&self, limit: u32) -> Result<Vec<StoredCommand>, Error>;
    /// Marks every unfinished command whose expiry is before `now_ms` as EXPIRED.
    async fn expire_commands(&self, now_ms: i64) -> Result<u64, Error>;

    /// Quarantine entries, newest first.
    async fn quarantine(&self, limit: u32) -> Result<Vec<QuarantineEntry>, Error>;
}

/// Most points a range query returns before it switches to a coarser level.
pub const MAX_POINTS: i64 = 5_000;

/// Readings of `meter` in `[from_ms, to_ms)` at the finest resolution that keeps the answer
/// under [`MAX_POINTS`]: raw when the span holds few readings at the meter's interval,
/// otherwise 15-minute, hourly, daily or monthly rollups.
pub async fn readings_auto(
    store: &dyn Store,
    meter: &Meter,
    from_ms: i64,
    to_ms: i64,
) -> Result<Series, Error> {
    let span_s = (to_ms - from_ms).max(0) / 1000;
    let interval_s = i64::from(meter.reporting_interval_s.max(1));
    if span_s / interval_s <= MAX_POINTS {
        let rows = store
            .readings(&meter.id, from_ms, to_ms, MAX_POINTS as u32 + 1)
            .await?;
        return Ok(Series::Raw(rows));
    }
    let level = Resolution::ALL
        .into_iter()
        .find(|r| span_s / r.nominal_s() <= MAX_POINTS)
        .unwrap_or(Resolution::Month);
    let rows = store.rollups(&meter.id, level, from_ms, to_ms).await?;
    Ok(Series::Rollups(level, rows))
}

/// Per-phase columns of the `readings` table, in order, for phases a, b, c.
const PHASE_FIELDS: [&str; 8] = [
    "v_rms",
    "i_rms",
    "p_w",
    "q_var",
    "s_va",
    "pf",
    "v_thd_pct",
    "i_thd_pct",
];

/// The quantity columns of a reading, in the order of [`reading_values`]: both dialects
/// build their statements from this one list.
pub(crate) static READING_COLUMNS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut cols: Vec<String> = [
        "interval_s",
        "freq_hz",
        "p_w",
        "q_var",
        "s_va",
        "pf",
        "import_wh",
        "export_wh",
        "q1_varh",
        "q2_varh",
        "q3_varh",
        "q4_varh",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for phase in ["a", "b", "c"] {
        for f in PHASE_FIELDS {
            cols.push(format!("{f}_{phase}"));
        }
    }
    cols
});

/// Index of the first per-phase column.
const PHASE_START: usize = 12;

/// A reading's quantities as nullable numbers in [`READING_COLUMNS`] order.
pub(crate) fn reading_values(r: &Reading) -> Vec<Option<f64>> {
    let c = &r.counters;
    let mut v = vec![
        Some(r.interval_s),
        Some(r.freq_hz),
        Some(r.total.p_w),
        r.total.q_var,
        Some(r.total.s_va),
        Some(r.total.pf),
        Some(c.import_wh),
        Some(c.export_wh),
        Some(c.q1_varh),
        Some(c.q2_varh),
        Some(c.q3_varh),
        Some(c.q4_varh),
    ];
    v.resize(READING_COLUMNS.len(), None);
    for p in &r.phases {
        let base = PHASE_START
            + PHASE_FIELDS.len()
                * match p.phase {
                    Phase::A => 0,
                    Phase::B => 1,
                    Phase::C => 2,
                };
        let fields = [
            Some(p.v_rms),
            Some(p.i_rms),
            Some(p.p_w),
            p.q_var,
            Some(p.s_va),
            Some(p.pf),
            p.v_thd_pct,
            p.i_thd_pct,
        ];
        v[base..base + PHASE_FIELDS.len()].copy_from_slice(&fields);
    }
    v
}

/// Rebuilds a reading from [`READING_COLUMNS`] values; a phase is present when its voltage is.
pub(crate) fn reading_from_values(v: &[Option<f64>]) -> Reading {
    let n = |i: usize| v.get(i).copied().flatten().unwrap_or(0.0);
    let mut phases = Vec::new();
    for (k, phase) in [Phase::A, Phase::B, Phase::C].into_iter().enumerate() {
        let base = PHASE_START + PHASE_FIELDS.len() * k;
        if v.get(base).copied().flatten().is_none() {
            continue;
        }
        phases.push(PhaseReading {
            phase,
            v_rms: n(base),
            i_rms: n(base + 1),
            p_w: n(base + 2),
            q_var: v[base + 3],
            s_va: n(base + 4),
            pf: n(base + 5),
            v_thd_pct: v[base + 6],
            i_thd_pct: v[base + 7],
        });
    }
    Reading {
        interval_s: n(0),
        freq_hz: n(1),
        phases,
        total: TotalReading {
            p_w: n(2),
            q_var: v[3],
            s_va: n(4),
            pf: n(5),
        },
        counters: EnergyCounters {
            import_wh: n(6),
            export_wh: n(7),
            q1_varh: n(8),
            q2_varh: n(9),
            q3_varh: n(10),
            q4_varh: n(11),
        },
    }
}

/// Counter columns, in [`EnergyCounters`] field order.
pub(crate) const COUNTER_COLUMNS: [&str; 6] = [
    "import_wh",
    "export_wh",
    "q1_varh",
    "q2_varh",
    "q3_varh",
    "q4_varh",
];

pub(crate) fn counters_from(v: [f64; 6]) -> EnergyCounters {
    EnergyCounters {
        import_wh: v[0],
        export_wh: v[1],
        q1_varh: v[2],
        q2_varh: v[3],
        q3_varh: v[4],
        q4_varh: v[5],
    }
}

pub(crate) fn counters_array(c: &EnergyCounters) -> [f64; 6] {
    [
        c.import_wh,
        c.export_wh,
        c.q1_varh,
        c.q2_varh,
        c.q3_varh,
        c.q4_varh,
    ]
}

/// Seqs and boot ids are `u64` on the wire; both databases store signed 64-bit integers, so
/// they are stored with the same bits (ingest refuses seqs above `i64::MAX`, so seq order is
/// kept; boot ids are only compared for equality).
/// What `other_records` keeps of a record that is neither a reading nor an event: whether this
/// build knows its kind, and its body (an unknown kind's CBOR exactly as it arrived).
pub(crate) fn other_record_body(r: &Record) -> Result<(bool, Vec<u8>), Error> {
    match &r.body {
        schema::Body::Unknown { body_cbor, .. } => Ok((false, body_cbor.clone())),
        _ => Ok((
            true,
            r.to_cbor().map_err(|e| Error::invalid(e.to_string()))?,
        )),
    }
}

pub(crate) fn to_db(x: u64) -> i64 {
    x as i64
}

pub(crate) fn from_db(x: i64) -> u64 {
    x as u64
}

/// Turns the per-record dedup facts of one batch into an outcome: `existing` holds
/// `(seq, t_ms)` already stored for the batch's boot.
pub(crate) fn classify(
    batch: &BatchWrite,
    existing: &std::collections::HashMap<u64, i64>,
) -> (Vec<usize>, BatchOutcome, Vec<NewQuarantine>) {
    let mut fresh = Vec::new();
    let mut outcome = BatchOutcome::default();
    let mut quarantine = Vec::new();
    for (i, r) in batch.records.iter().enumerate() {
        match existing.get(&r.seq) {
            None => fresh.push(i),
            Some(&t) if t == r.t_ms => outcome.duplicate.push(r.seq),
            Some(&t) => {
                outcome.conflicting.push(r.seq);
                let raw = r.to_cbor().unwrap_or_default();
                quarantine.push(NewQuarantine {
                    received_ms: batch.received_ms,
                    source: batch.source.clone(),
                    meter_claimed: Some(batch.meter.to_string()),
                    reason: format!(
                        "record boot {} seq {} is already stored with time {} ms; this copy says {} ms (a meter must never reuse a seq)",
                        batch.boot_id, r.seq, t, r.t_ms
                    ),
                    raw_len: raw.len() as u64,
                    raw,
                });
            }
        }
    }
    (fresh, outcome, quarantine)
}

/// Ack status → command status and note.
pub(crate) fn ack_transition(ack: &schema::Ack) -> (CommandStatus, String) {
    use schema::AckStatus;
    let status = match ack.status {
        AckStatus::Succeeded => CommandStatus::Succeeded,
        AckStatus::Expired => CommandStatus::Expired,
        AckStatus::Failed | AckStatus::Rejected | AckStatus::Other => CommandStatus::Failed,
    };
    let note = match (&ack.reason, ack.status) {
        (Some(r), s) => format!("meter says {s:?}: {r}").to_lowercase(),
        (None, s) => format!("meter says {s:?}").to_lowercase(),
    };
    (status, note)
}
