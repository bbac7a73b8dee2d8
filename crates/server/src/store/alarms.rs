//! Alarms, cases and the alarm jobs' bookkeeping (issue 7 item 4, issue 4 item 5): the
//! [`AlarmStore`] trait and its SQLite and PostgreSQL implementations (migrations 200–299).
//!
//! - An **alarm** is one ongoing condition at one meter (offline, overload, a tamper rule, an
//!   energy-balance or pattern finding). Its `dedup_key` names the condition, so a job that
//!   sees the same condition again only refreshes `last_seen_ms`: one condition, one alarm.
//! - A **case** is the work item an operator follows for a suspected theft or tamper: opened
//!   from alarms with their evidence, moved open → inspecting → confirmed | dismissed, every
//!   move kept in its history with who, when and why. Decided cases are training labels.
//! - **Job state**: the last processed time of each job and other small values (calibrations),
//!   so jobs are incremental and restart-safe; and a job lock so one instance runs each job
//!   (PostgreSQL advisory lock, DESIGN §5; a process-local lock on SQLite).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;

use super::extensions::Migration;
use super::{PgStore, SqliteStore, postgres, sqlite};
use crate::{Error, ErrorKind};

/// The alarm and case tables.
pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    version: 200,
    sqlite: "
        CREATE TABLE alarms (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            meter TEXT NOT NULL,
            kind TEXT NOT NULL,
            severity TEXT NOT NULL,
            dedup_key TEXT NOT NULL,
            opened_ms INTEGER NOT NULL,
            last_seen_ms INTEGER NOT NULL,
            cleared_ms INTEGER,
            status TEXT NOT NULL,
            acknowledged_by TEXT,
            acknowledged_ms INTEGER,
            assigned_to TEXT,
            resolved_by TEXT,
            resolved_ms INTEGER,
            message TEXT NOT NULL,
            details TEXT NOT NULL,
            case_id INTEGER
        );
        CREATE INDEX alarms_by_key ON alarms (dedup_key, id);
        CREATE INDEX alarms_by_meter ON alarms (meter, opened_ms);
        CREATE INDEX alarms_by_time ON alarms (opened_ms);
        CREATE TABLE cases (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            meter TEXT NOT NULL,
            state TEXT NOT NULL,
            title TEXT NOT NULL,
            opened_ms INTEGER NOT NULL,
            updated_ms INTEGER NOT NULL,
            assignee TEXT,
            notes TEXT NOT NULL DEFAULT '',
            score REAL,
            evidence TEXT NOT NULL
        );
        CREATE INDEX cases_by_meter ON cases (meter, state);
        CREATE TABLE case_alarms (
            case_id INTEGER NOT NULL REFERENCES cases (id),
            alarm_id INTEGER NOT NULL REFERENCES alarms (id),
            PRIMARY KEY (case_id, alarm_id)
        );
        CREATE TABLE case_history (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            case_id INTEGER NOT NULL REFERENCES cases (id),
            at_ms INTEGER NOT NULL,
            actor TEXT NOT NULL,
            from_state TEXT,
            to_state TEXT NOT NULL,
            reason TEXT NOT NULL
        );
        CREATE INDEX case_history_by_case ON case_history (case_id, id);
        CREATE TABLE alarm_job_state (
            job TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            updated_ms INTEGER NOT NULL,
            PRIMARY KEY (job, key)
        );
    ",
    postgres: "
        CREATE TABLE alarms (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            meter TEXT NOT NULL,
            kind TEXT NOT NULL,
            severity TEXT NOT NULL,
            dedup_key TEXT NOT NULL,
            opened_ms BIGINT NOT NULL,
            last_seen_ms BIGINT NOT NULL,
            cleared_ms BIGINT,
            status TEXT NOT NULL,
            acknowledged_by TEXT,
            acknowledged_ms BIGINT,
            assigned_to TEXT,
            resolved_by TEXT,
            resolved_ms BIGINT,
            message TEXT NOT NULL,
            details TEXT NOT NULL,
            case_id BIGINT
        );
        CREATE INDEX alarms_by_key ON alarms (dedup_key, id);
        CREATE INDEX alarms_by_meter ON alarms (meter, opened_ms);
        CREATE INDEX alarms_by_time ON alarms (opened_ms);
        CREATE TABLE cases (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            meter TEXT NOT NULL,
            state TEXT NOT NULL,
            title TEXT NOT NULL,
            opened_ms BIGINT NOT NULL,
            updated_ms BIGINT NOT NULL,
            assignee TEXT,
            notes TEXT NOT NULL DEFAULT '',
            score DOUBLE PRECISION,
            evidence TEXT NOT NULL
        );
        CREATE INDEX cases_by_meter ON cases (meter, state);
        CREATE TABLE case_alarms (
            case_id BIGINT NOT NULL REFERENCES cases (id),
            alarm_id BIGINT NOT NULL REFERENCES alarms (id),
            PRIMARY KEY (case_id, alarm_id)
        );
        CREATE TABLE case_history (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            case_id BIGINT NOT NULL REFERENCES cases (id),
            at_ms BIGINT NOT NULL,
            actor TEXT NOT NULL,
            from_state TEXT,
            to_state TEXT NOT NULL,
            reason TEXT NOT NULL
        );
        CREATE INDEX case_history_by_case ON case_history (case_id, id);
        CREATE TABLE alarm_job_state (
            job TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            updated_ms BIGINT NOT NULL,
            PRIMARY KEY (job, key)
        );
    ",
}];

/// Most evidence items a case keeps; later alarms are still linked, their evidence is counted.
const MAX_EVIDENCE_ITEMS: usize = 50;

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $text:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $variant),* }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The stored and API name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }

            /// Parses the stored and API name.
            pub fn parse(s: &str) -> Result<Self, Error> {
                match s {
                    $($text => Ok($name::$variant),)*
                    other => Err(Error::invalid(format!(
                        concat!("unknown ", stringify!($name), " {:?} (expected one of: {})"),
                        other,
                        [$($text),*].join(", ")
                    ))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// What an alarm is about.
    AlarmKind {
        /// The meter stopped reporting ("data route damaged", seed 002).
        Offline => "offline",
        /// The limiter cut the supply for overload (DLMS class 71 over-threshold action).
        Overload => "overload",
        /// Other limiter activity (emergency profile).
        Limiter => "limiter",
        /// A tamper rule fired (cover, magnet, CT bypass, reverse flow, clock, ...).
        Tamper => "tamper",
        /// Energy balance: an observer measured more than its children and the losses explain.
        TheftBalance => "theft_balance",
        /// Consumption-pattern score over the meter's history and its peers.
        TheftPattern => "theft_pattern",
        /// Power-quality condition (sag, swell, interruption, ...).
        PowerQuality => "power_quality",
    }
);

impl AlarmKind {
    /// Whether an alarm of this kind opens a case (suspected theft or tampering).
    pub fn opens_case(self) -> bool {
        matches!(
            self,
            AlarmKind::Tamper | AlarmKind::TheftBalance | AlarmKind::TheftPattern
        )
    }
}

string_enum!(
    /// How urgent an alarm is.
    AlarmSeverity {
        /// Worth a look.
        Low => "low",
        /// Look today.
        Medium => "medium",
        /// Look soon.
        High => "high",
        /// Look now.
        Critical => "critical",
    }
);

string_enum!(
    /// Where an alarm stands with the operators.
    AlarmStatus {
        /// Nobody has looked at it yet.
        Open => "open",
        /// Someone has seen it.
        Acknowledged => "acknowledged",
        /// Closed by an operator.
        Resolved => "resolved",
    }
);

string_enum!(
    /// A case's state: open → inspecting → confirmed | dismissed (open → dismissed for an
    /// obvious false alarm); confirmed and dismissed are final.
    CaseState {
        /// Opened from alarms, nobody working on it yet.
        Open => "open",
        /// An inspection is planned or under way.
        Inspecting => "inspecting",
        /// The inspection found theft or tampering.
        Confirmed => "confirmed",
        /// No theft or tampering.
        Dismissed => "dismissed",
    }
);

impl CaseState {
    /// Whether the case life cycle allows `self → next`.
    pub fn can_become(self, next: CaseState) -> bool {
        use CaseState::*;
        matches!(
            (self, next),
            (Open, Inspecting)
                | (Open, Dismissed)
                | (Inspecting, Confirmed)
                | (Inspecting, Dismissed)
        )
    }

    /// Confirmed or dismissed: nothing follows, and the case is a training label.
    pub fn is_final(self) -> bool {
        matches!(self, CaseState::Confirmed | CaseState::Dismissed)
    }
}

/// How a repeated observation of a `dedup_key` is matched to an existing alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmScope {
    /// The key names a condition that may come back later (a meter offline): it refreshes the
    /// alarm while that is neither cleared nor resolved, and opens a new alarm otherwise.
    Ongoing,
    /// The key names one episode (it contains the episode's start): it always refreshes the
    /// alarm with that key, so re-evaluating old data never opens it twice.
    Episode,
}

/// An alarm a job raises.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlarm {
    /// The meter it is about.
    pub meter: String,
    /// Kind.
    pub kind: AlarmKind,
    /// Severity.
    pub severity: AlarmSeverity,
    /// Names the condition (see [`AlarmScope`]).
    pub dedup_key: String,
    /// How the key is matched.
    pub scope: AlarmScope,
    /// When the condition was seen, Unix ms UTC.
    pub at_ms: i64,
    /// One sentence for people.
    pub message: String,
    /// Machine-readable details (JSON object).
    pub details: Value,
}

/// A stored alarm.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alarm {
    /// Store-assigned id.
    pub id: i64,
    /// The meter it is about.
    pub meter: String,
    /// Kind.
    pub kind: AlarmKind,
    /// Severity.
    pub severity: AlarmSeverity,
    /// The condition's key.
    pub dedup_key: String,
    /// When first seen, Unix ms UTC.
    pub opened_ms: i64,
    /// When last seen.
    pub last_seen_ms: i64,
    /// When the condition ended (the meter reported again, the tamper cleared), if it has.
    pub cleared_ms: Option<i64>,
    /// Operator status.
    pub status: AlarmStatus,
    /// Who acknowledged it.
    pub acknowledged_by: Option<String>,
    /// When.
    pub acknowledged_ms: Option<i64>,
    /// Who is to handle it.
    pub assigned_to: Option<String>,
    /// Who resolved it.
    pub resolved_by: Option<String>,
    /// When.
    pub resolved_ms: Option<i64>,
    /// One sentence for people.
    pub message: String,
    /// Machine-readable details.
    pub details: Value,
    /// The case it belongs to, if any.
    pub case_id: Option<i64>,
}

/// An operator action on an alarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlarmAction {
    /// Seen.
    Acknowledge,
    /// Hand it to someone.
    Assign(String),
    /// Close it.
    Resolve,
}

impl Alarm {
    /// Applies an operator action, or says why it is not possible.
    fn apply(&mut self, action: &AlarmAction, actor: &str, at_ms: i64) -> Result<(), Error> {
        if self.status == AlarmStatus::Resolved {
            return Err(Error::invalid(format!(
                "alarm {} is resolved; nothing more can be done to it",
                self.id
            )));
        }
        match action {
            AlarmAction::Acknowledge => {
                if self.status == AlarmStatus::Open {
                    self.status = AlarmStatus::Acknowledged;
                    self.acknowledged_by = Some(actor.to_owned());
                    self.acknowledged_ms = Some(at_ms);
                }
            }
            AlarmAction::Assign(to) => {
                if to.trim().is_empty() {
                    return Err(Error::invalid("an alarm must be assigned to someone"));
                }
                self.assigned_to = Some(to.trim().to_owned());
            }
            AlarmAction::Resolve => {
                self.status = AlarmStatus::Resolved;
                self.resolved_by = Some(actor.to_owned());
                self.resolved_ms = Some(at_ms);
                if self.acknowledged_by.is_none() {
                    self.acknowledged_by = Some(actor.to_owned());
                    self.acknowledged_ms = Some(at_ms);
                }
            }
        }
        Ok(())
    }
}

/// Which alarms to list.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlarmFilter {
    /// Only this meter's.
    pub meter: Option<String>,
    /// Only this kind.
    pub kind: Option<AlarmKind>,
    /// Only this status.
    pub status: Option<AlarmStatus>,
    /// `Some(true)`: only alarms whose condition still holds; `Some(false)`: only cleared ones.
    pub active: Option<bool>,
    /// Only alarms last seen at or after this time, Unix ms UTC.
    pub since_ms: Option<i64>,
    /// At most this many, newest first (0 means 100).
    pub limit: u32,
}

/// The result of [`AlarmStore::raise_alarm`].
#[derive(Debug, Clone, PartialEq)]
pub struct RaisedAlarm {
    /// The alarm as stored now.
    pub alarm: Alarm,
    /// True when this call opened it (false: an existing alarm was refreshed).
    pub created: bool,
}

/// A case.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Case {
    /// Store-assigned id.
    pub id: i64,
    /// The suspected meter.
    pub meter: String,
    /// Where it stands.
    pub state: CaseState,
    /// One line: what the first alarm said.
    pub title: String,
    /// When opened, Unix ms UTC.
    pub opened_ms: i64,
    /// When it last changed.
    pub updated_ms: i64,
    /// Who works on it.
    pub assignee: Option<String>,
    /// Notes appended by transitions.
    pub notes: String,
    /// Highest theft score among its evidence, when there is one.
    pub score: Option<f64>,
    /// `{"items":[...]}`: one item per alarm with its evidence (residual series, events,
    /// score and reasons), oldest first; `"omitted"` counts items beyond the cap.
    pub evidence: Value,
    /// The alarms that opened or joined it.
    pub alarm_ids: Vec<i64>,
}

/// One line of a case's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseTransition {
    /// The case.
    pub case_id: i64,
    /// When, Unix ms UTC.
    pub at_ms: i64,
    /// Who (user name, or `system` for the jobs).
    pub actor: String,
    /// State before (`None` when the case was opened).
    pub from: Option<CaseState>,
    /// State after.
    pub to: CaseState,
    /// Why.
    pub reason: String,
}

/// Evidence to file for an alarm that opens or joins a case.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseEvidence {
    /// The alarm.
    pub alarm_id: i64,
    /// The suspected meter (the case's meter).
    pub meter: String,
    /// The case title if a new case is opened.
    pub title: String,
    /// A theft score that goes with it, if any.
    pub score: Option<f64>,
    /// The evidence item (JSON object).
    pub item: Value,
    /// When, Unix ms UTC.
    pub at_ms: i64,
}

/// Which cases to list.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CaseFilter {
    /// Only this meter's.
    pub meter: Option<String>,
    /// Only this state.
    pub state: Option<CaseState>,
    /// At most this many, newest first (0 means 100).
    pub limit: u32,
}

/// Held while a job runs; dropping it releases the lock.
pub struct JobLock {
    inner: Option<LockInner>,
}

// The PostgreSQL variant holds a pooled connection; the lock lives for one job run, so its size
// does not matter and boxing it would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum LockInner {
    /// Held for its drop: the guard unlocks the process-local mutex.
    Local {
        _guard: tokio::sync::OwnedMutexGuard<()>,
    },
    Postgres {
        client: deadpool_postgres::Object,
        key: i64,
    },
}

impl std::fmt::Debug for JobLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobLock")
    }
}

impl JobLock {
    /// Releases the lock now (PostgreSQL: before the connection goes back to the pool).
    pub async fn release(mut self) {
        if let Some(LockInner::Postgres { client, key }) = self.inner.take()
            && let Err(e) = client
                .execute("SELECT pg_advisory_unlock($1)", &[&key])
                .await
        {
            tracing::warn!(error = %e, "releasing a job lock failed; the connection is dropped");
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

impl Drop for JobLock {
    fn drop(&mut self) {
        if let Some(LockInner::Postgres { client, .. }) = self.inner.take() {
            // Not released explicitly (a panic or a cancelled job): close the session, which
            // frees its advisory locks, instead of handing a locked connection back to the pool.
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

/// The advisory-lock key of a job: FNV-1a of its name, stable across builds and instances.
fn job_lock_key(job: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"wattline-job:".iter().chain(job.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// Process-local job locks for SQLite (one process owns an SQLite file).
static LOCAL_LOCKS: LazyLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(Default::default);

fn local_lock(scope: &str, job: &str) -> Option<JobLock> {
    let lock = LOCAL_LOCKS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(format!("{scope}\u{0}{job}"))
        .or_default()
        .clone();
    lock.try_lock_owned().ok().map(|g| JobLock {
        inner: Some(LockInner::Local { _guard: g }),
    })
}

/// The alarm and case store.
#[async_trait]
pub trait AlarmStore: Send + Sync {
    /// Opens an alarm, or refreshes the one its `dedup_key` already names (see [`AlarmScope`]).
    async fn raise_alarm(&self, alarm: &NewAlarm) -> Result<RaisedAlarm, Error>;
    /// Marks every uncleared alarm with this key as cleared at `at_ms`; returns how many.
    async fn clear_alarms(&self, dedup_key: &str, at_ms: i64) -> Result<u64, Error>;
    /// An alarm by id.
    async fn alarm(&self, id: i64) -> Result<Option<Alarm>, Error>;
    /// Alarms matching the filter, newest first.
    async fn alarms(&self, filter: &AlarmFilter) -> Result<Vec<Alarm>, Error>;
    /// Acknowledges, assigns or resolves an alarm.
    async fn alarm_action(
        &self,
        id: i64,
        action: &AlarmAction,
        actor: &str,
        at_ms: i64,
    ) -> Result<Alarm, Error>;

    /// Files an alarm's evidence: into the meter's case that is still open or inspecting, or
    /// into a new case. Returns the case and whether it is new.
    async fn file_case_evidence(&self, evidence: &CaseEvidence) -> Result<(Case, bool), Error>;
    /// A case by id.
    async fn case(&self, id: i64) -> Result<Option<Case>, Error>;
    /// Cases matching the filter, newest first.
    async fn cases(&self, filter: &CaseFilter) -> Result<Vec<Case>, Error>;
    /// Moves a case along its life cycle (checked), appending to its history; `assignee`
    /// replaces the assignee when given, `reason` is also appended to the notes.
    async fn transition_case(
        &self,
        id: i64,
        to: CaseState,
        actor: &str,
        reason: &str,
        assignee: Option<&str>,
        at_ms: i64,
    ) -> Result<Case, Error>;
    /// A case's history, oldest first.
    async fn case_history(&self, id: i64) -> Result<Vec<CaseTransition>, Error>;
    /// Training labels: per meter, its latest decided case (`true` = theft confirmed).
    async fn case_labels(&self) -> Result<Vec<(String, bool)>, Error>;

    /// A value a job remembered (its last processed time, a calibration).
    async fn job_state(&self, job: &str, key: &str) -> Result<Option<String>, Error>;
    /// Remembers a value for a job.
    async fn set_job_state(
        &self,
        job: &str,
        key: &str,
        value: &str,
        at_ms: i64,
    ) -> Result<(), Error>;
    /// Takes the job's lock if no one holds it (`None`: another instance runs the job).
    async fn try_lock_job(&self, job: &str) -> Result<Option<JobLock>, Error>;
}

const ALARM_COLUMNS: &str = "id, meter, kind, severity, dedup_key, opened_ms, last_seen_ms, cleared_ms, status, acknowledged_by, acknowledged_ms, assigned_to, resolved_by, resolved_ms, message, details, case_id";
const CASE_COLUMNS: &str =
    "id, meter, state, title, opened_ms, updated_ms, assignee, notes, score, evidence";

/// The raw columns of an alarm row, in [`ALARM_COLUMNS`] order.
type AlarmRow = (
    i64,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    String,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
    String,
    String,
    Option<i64>,
);

fn alarm_from(r: AlarmRow) -> Result<Alarm, Error> {
    Ok(Alarm {
        id: r.0,
        meter: r.1,
        kind: AlarmKind::parse(&r.2)?,
        severity: AlarmSeverity::parse(&r.3)?,
        dedup_key: r.4,
        opened_ms: r.5,
        last_seen_ms: r.6,
        cleared_ms: r.7,
        status: AlarmStatus::parse(&r.8)?,
        acknowledged_by: r.9,
        acknowledged_ms: r.10,
        assigned_to: r.11,
        resolved_by: r.12,
        resolved_ms: r.13,
        message: r.14,
        details: parse_json(&r.15, "alarm details")?,
        case_id: r.16,
    })
}

/// The raw columns of a case row, in [`CASE_COLUMNS`] order.
type CaseRow = (
    i64,
    String,
    String,
    String,
    i64,
    i64,
    Option<String>,
    String,
    Option<f64>,
    String,
);

fn case_from(r: CaseRow, alarm_ids: Vec<i64>) -> Result<Case, Error> {
    Ok(Case {
        id: r.0,
        meter: r.1,
        state: CaseState::parse(&r.2)?,
        title: r.3,
        opened_ms: r.4,
        updated_ms: r.5,
        assignee: r.6,
        notes: r.7,
        score: r.8,
        evidence: parse_json(&r.9, "case evidence")?,
        alarm_ids,
    })
}

fn parse_json(text: &str, what: &str) -> Result<Value, Error> {
    serde_json::from_str(text)
        .map_err(|e| Error::invalid(format!("stored {what} is not JSON: {e}")))
}

fn not_found(what: String) -> Error {
    Error::new(ErrorKind::NotFound(what))
}

/// Whether an existing alarm with the key is refreshed rather than a new one opened.
fn reuses(scope: AlarmScope, cleared_ms: Option<i64>, status: &str) -> bool {
    scope == AlarmScope::Episode
        || (cleared_ms.is_none() && status != AlarmStatus::Resolved.as_str())
}

/// Appends an evidence item to a case's evidence document, keeping at most
/// [`MAX_EVIDENCE_ITEMS`].
fn push_evidence(evidence: &mut Value, item: Value) {
    if !evidence.is_object() {
        *evidence = serde_json::json!({ "items": [] });
    }
    let full = evidence["items"]
        .as_array()
        .is_some_and(|a| a.len() >= MAX_EVIDENCE_ITEMS);
    if full {
        let omitted = evidence["omitted"].as_u64().unwrap_or(0) + 1;
        evidence["omitted"] = Value::from(omitted);
    } else if let Some(items) = evidence["items"].as_array_mut() {
        items.push(item);
    } else {
        evidence["items"] = Value::Array(vec![item]);
    }
}

fn checked_transition(case: &Case, to: CaseState, reason: &str) -> Result<(), Error> {
    if reason.trim().is_empty() {
        return Err(Error::invalid("a case transition needs a reason"));
    }
    if !case.state.can_become(to) {
        return Err(Error::invalid(format!(
            "case {} cannot go from {} to {}",
            case.id, case.state, to
        )));
    }
    Ok(())
}

fn appended_notes(notes: &str, actor: &str, to: CaseState, reason: &str) -> String {
    let line = format!("{actor} → {to}: {}", reason.trim());
    if notes.is_empty() {
        line
    } else {
        format!("{notes}\n{line}")
    }
}

fn limit_of(limit: u32) -> i64 {
    if limit == 0 {
        100
    } else {
        i64::from(limit.min(10_000))
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite

type SqlConn = rusqlite::Connection;

fn sq_alarm_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AlarmRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
        r.get(12)?,
        r.get(13)?,
        r.get(14)?,
        r.get(15)?,
        r.get(16)?,
    ))
}

fn sq_case_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CaseRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
    ))
}

fn sq_alarm(conn: &SqlConn, id: i64) -> Result<Option<Alarm>, Error> {
    conn.query_row(
        &format!("SELECT {ALARM_COLUMNS} FROM alarms WHERE id = ?1"),
        [id],
        sq_alarm_row,
    )
    .optional()
    .map_err(sqlite::db("reading an alarm"))?
    .map(alarm_from)
    .transpose()
}

fn sq_case(conn: &SqlConn, id: i64) -> Result<Option<Case>, Error> {
    let Some(row) = conn
        .query_row(
            &format!("SELECT {CASE_COLUMNS} FROM cases WHERE id = ?1"),
            [id],
            sq_case_row,
        )
        .optional()
        .map_err(sqlite::db("reading a case"))?
    else {
        return Ok(None);
    };
    let mut stmt = conn
        .prepare_cached("SELECT alarm_id FROM case_alarms WHERE case_id = ?1 ORDER BY alarm_id")
        .map_err(sqlite::db("reading a case's alarms"))?;
    let ids = stmt
        .query_map([id], |r| r.get(0))
        .and_then(Iterator::collect)
        .map_err(sqlite::db("reading a case's alarms"))?;
    case_from(row, ids).map(Some)
}

#[async_trait]
impl AlarmStore for SqliteStore {
    async fn raise_alarm(&self, a: &NewAlarm) -> Result<RaisedAlarm, Error> {
        let a = a.clone();
        self.run(true, move |conn| {
            let tx = conn.transaction().map_err(sqlite::db("starting an alarm transaction"))?;
            let details = a.details.to_string();
            let existing: Option<(i64, Option<i64>, String)> = tx
                .query_row(
                    "SELECT id, cleared_ms, status FROM alarms WHERE dedup_key = ?1 ORDER BY id DESC LIMIT 1",
                    [&a.dedup_key],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(sqlite::db("looking up an alarm"))?;
            let (id, created) = match existing {
                Some((id, cleared, status)) if reuses(a.scope, cleared, &status) => {
                    tx.execute(
                        "UPDATE alarms SET last_seen_ms = MAX(last_seen_ms, ?1), message = ?2, details = ?3, severity = ?4 WHERE id = ?5",
                        params![a.at_ms, a.message, details, a.severity.as_str(), id],
                    )
                    .map_err(sqlite::db("refreshing an alarm"))?;
                    (id, false)
                }
                _ => {
                    tx.execute(
                        "INSERT INTO alarms (meter, kind, severity, dedup_key, opened_ms, last_seen_ms, status, message, details)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?5, 'open', ?6, ?7)",
                        params![a.meter, a.kind.as_str(), a.severity.as_str(), a.dedup_key, a.at_ms, a.message, details],
                    )
                    .map_err(sqlite::db("opening an alarm"))?;
                    (tx.last_insert_rowid(), true)
                }
            };
            let alarm = sq_alarm(&tx, id)?.ok_or_else(|| not_found(format!("alarm {id}")))?;
            tx.commit().map_err(sqlite::db("committing an alarm"))?;
            Ok(RaisedAlarm { alarm, created })
        })
        .await
    }

    async fn clear_alarms(&self, dedup_key: &str, at_ms: i64) -> Result<u64, Error> {
        let key = dedup_key.to_owned();
        self.run(true, move |conn| {
            conn.execute(
                "UPDATE alarms SET cleared_ms = ?1 WHERE dedup_key = ?2 AND cleared_ms IS NULL",
                params![at_ms, key],
            )
            .map(|n| n as u64)
            .map_err(sqlite::db("clearing alarms"))
        })
        .await
    }

    async fn alarm(&self, id: i64) -> Result<Option<Alarm>, Error> {
        self.run(false, move |conn| sq_alarm(conn, id)).await
    }

    async fn alarms(&self, f: &AlarmFilter) -> Result<Vec<Alarm>, Error> {
        let f = f.clone();
        self.run(false, move |conn| {
            let active = match f.active {
                None => "",
                Some(true) => " AND cleared_ms IS NULL",
                Some(false) => " AND cleared_ms IS NOT NULL",
            };
            let sql = format!(
                "SELECT {ALARM_COLUMNS} FROM alarms
                 WHERE (?1 IS NULL OR meter = ?1) AND (?2 IS NULL OR kind = ?2)
                   AND (?3 IS NULL OR status = ?3) AND (?4 IS NULL OR last_seen_ms >= ?4){active}
                 ORDER BY id DESC LIMIT ?5"
            );
            let mut stmt = conn.prepare(&sql).map_err(sqlite::db("listing alarms"))?;
            let rows: Vec<AlarmRow> = stmt
                .query_map(
                    params![
                        f.meter,
                        f.kind.map(AlarmKind::as_str),
                        f.status.map(AlarmStatus::as_str),
                        f.since_ms,
                        limit_of(f.limit)
                    ],
                    sq_alarm_row,
                )
                .and_then(Iterator::collect)
                .map_err(sqlite::db("listing alarms"))?;
            rows.into_iter().map(alarm_from).collect()
        })
        .await
    }

    async fn alarm_action(
        &self,
        id: i64,
        action: &AlarmAction,
        actor: &str,
        at_ms: i64,
    ) -> Result<Alarm, Error> {
        let (action, actor) = (action.clone(), actor.to_owned());
        self.run(true, move |conn| {
            let tx = conn.transaction().map_err(sqlite::db("starting an alarm update"))?;
            let mut alarm = sq_alarm(&tx, id)?.ok_or_else(|| not_found(format!("alarm {id}")))?;
            alarm.apply(&action, &actor, at_ms)?;
            tx.execute(
                "UPDATE alarms SET status = ?1, acknowledged_by = ?2, acknowledged_ms = ?3, assigned_to = ?4, resolved_by = ?5, resolved_ms = ?6 WHERE id = ?7",
                params![
                    alarm.status.as_str(),
                    alarm.acknowledged_by,
                    alarm.acknowledged_ms,
                    alarm.assigned_to,
                    alarm.resolved_by,
                    alarm.resolved_ms,
                    id
                ],
            )
            .map_err(sqlite::db("updating an alarm"))?;
            tx.commit().map_err(sqlite::db("committing an alarm update"))?;
            Ok(alarm)
        })
        .await
    }

    async fn file_case_evidence(&self, e: &CaseEvidence) -> Result<(Case, bool), Error> {
        let e = e.clone();
        self.run(true, move |conn| {
            let tx = conn.transaction().map_err(sqlite::db("starting a case transaction"))?;
            let already: Option<i64> = tx
                .query_row("SELECT case_id FROM case_alarms WHERE alarm_id = ?1", [e.alarm_id], |r| r.get(0))
                .optional()
                .map_err(sqlite::db("looking up an alarm's case"))?;
            if let Some(id) = already {
                // Filed before (a job re-ran): idempotent.
                let case = sq_case(&tx, id)?.ok_or_else(|| not_found(format!("case {id}")))?;
                return Ok((case, false));
            }
            let open: Option<(i64, String, Option<f64>)> = tx
                .query_row(
                    "SELECT id, evidence, score FROM cases WHERE meter = ?1 AND state IN ('open', 'inspecting') ORDER BY id DESC LIMIT 1",
                    [&e.meter],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(sqlite::db("looking up a meter's open case"))?;
            let (id, created) = match open {
                Some((id, evidence, score)) => {
                    let mut evidence = parse_json(&evidence, "case evidence")?;
                    push_evidence(&mut evidence, e.item.clone());
                    let score = max_score(score, e.score);
                    tx.execute(
                        "UPDATE cases SET evidence = ?1, score = ?2, updated_ms = MAX(updated_ms, ?3) WHERE id = ?4",
                        params![evidence.to_string(), score, e.at_ms, id],
                    )
                    .map_err(sqlite::db("adding evidence to a case"))?;
                    (id, false)
                }
                None => {
                    let mut evidence = serde_json::json!({ "items": [] });
                    push_evidence(&mut evidence, e.item.clone());
                    tx.execute(
                        "INSERT INTO cases (meter, state, title, opened_ms, updated_ms, score, evidence) VALUES (?1, 'open', ?2, ?3, ?3, ?4, ?5)",
                        params![e.meter, e.title, e.at_ms, e.score, evidence.to_string()],
                    )
                    .map_err(sqlite::db("opening a case"))?;
                    let id = tx.last_insert_rowid();
                    tx.execute(
                        "INSERT INTO case_history (case_id, at_ms, actor, from_state, to_state, reason) VALUES (?1, ?2, 'system', NULL, 'open', ?3)",
                        params![id, e.at_ms, format!("opened from alarm {}: {}", e.alarm_id, e.title)],
                    )
                    .map_err(sqlite::db("writing a case's history"))?;
                    (id, true)
                }
            };
            tx.execute("INSERT INTO case_alarms (case_id, alarm_id) VALUES (?1, ?2)", [id, e.alarm_id])
                .map_err(sqlite::db("linking an alarm to its case"))?;
            tx.execute("UPDATE alarms SET case_id = ?1 WHERE id = ?2", [id, e.alarm_id])
                .map_err(sqlite::db("linking an alarm to its case"))?;
            let case = sq_case(&tx, id)?.ok_or_else(|| not_found(format!("case {id}")))?;
            tx.commit().map_err(sqlite::db("committing a case"))?;
            Ok((case, created))
        })
        .await
    }

    async fn case(&self, id: i64) -> Result<Option<Case>, Error> {
        self.run(false, move |conn| sq_case(conn, id)).await
    }

    async fn cases(&self, f: &CaseFilter) -> Result<Vec<Case>, Error> {
        let f = f.clone();
        self.run(false, move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT id FROM cases WHERE (?1 IS NULL OR meter = ?1) AND (?2 IS NULL OR state = ?2) ORDER BY id DESC LIMIT ?3",
                )
                .map_err(sqlite::db("listing cases"))?;
            let ids: Vec<i64> = stmt
                .query_map(params![f.meter, f.state.map(CaseState::as_str), limit_of(f.limit)], |r| r.get(0))
                .and_then(Iterator::collect)
                .map_err(sqlite::db("listing cases"))?;
            ids.into_iter()
                .filter_map(|id| sq_case(conn, id).transpose())
                .collect()
        })
        .await
    }

    async fn transition_case(
        &self,
        id: i64,
        to: CaseState,
        actor: &str,
        reason: &str,
        assignee: Option<&str>,
        at_ms: i64,
    ) -> Result<Case, Error> {
        let (actor, reason, assignee) = (
            actor.to_owned(),
            reason.to_owned(),
            assignee.map(str::to_owned),
        );
        self.run(true, move |conn| {
            let tx = conn.transaction().map_err(sqlite::db("starting a case transition"))?;
            let case = sq_case(&tx, id)?.ok_or_else(|| not_found(format!("case {id}")))?;
            checked_transition(&case, to, &reason)?;
            let notes = appended_notes(&case.notes, &actor, to, &reason);
            let assignee = assignee.or(case.assignee.clone());
            tx.execute(
                "UPDATE cases SET state = ?1, updated_ms = ?2, notes = ?3, assignee = ?4 WHERE id = ?5",
                params![to.as_str(), at_ms, notes, assignee, id],
            )
            .map_err(sqlite::db("moving a case"))?;
            tx.execute(
                "INSERT INTO case_history (case_id, at_ms, actor, from_state, to_state, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, at_ms, actor, case.state.as_str(), to.as_str(), reason.trim()],
            )
            .map_err(sqlite::db("writing a case's history"))?;
            let case = sq_case(&tx, id)?.ok_or_else(|| not_found(format!("case {id}")))?;
            tx.commit().map_err(sqlite::db("committing a case transition"))?;
            Ok(case)
        })
        .await
    }

    async fn case_history(&self, id: i64) -> Result<Vec<CaseTransition>, Error> {
        self.run(false, move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT at_ms, actor, from_state, to_state, reason FROM case_history WHERE case_id = ?1 ORDER BY id",
                )
                .map_err(sqlite::db("reading a case's history"))?;
            let rows: Vec<(i64, String, Option<String>, String, String)> = stmt
                .query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
                .and_then(Iterator::collect)
                .map_err(sqlite::db("reading a case's history"))?;
            rows.into_iter().map(|r| history_from(id, r)).collect()
        })
        .await
    }

    async fn case_labels(&self) -> Result<Vec<(String, bool)>, Error> {
        self.run(false, move |conn| {
            let mut stmt = conn
                .prepare(LABELS_SQL)
                .map_err(sqlite::db("reading case labels"))?;
            let rows: Vec<(String, String)> = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(Iterator::collect)
                .map_err(sqlite::db("reading case labels"))?;
            Ok(labels_from(rows))
        })
        .await
    }

    async fn job_state(&self, job: &str, key: &str) -> Result<Option<String>, Error> {
        let (job, key) = (job.to_owned(), key.to_owned());
        self.run(false, move |conn| {
            conn.query_row(
                "SELECT value FROM alarm_job_state WHERE job = ?1 AND key = ?2",
                [job, key],
                |r| r.get(0),
            )
            .optional()
            .map_err(sqlite::db("reading job state"))
        })
        .await
    }

    async fn set_job_state(
        &self,
        job: &str,
        key: &str,
        value: &str,
        at_ms: i64,
    ) -> Result<(), Error> {
        let (job, key, value) = (job.to_owned(), key.to_owned(), value.to_owned());
        self.run(true, move |conn| {
            conn.execute(
                "INSERT INTO alarm_job_state (job, key, value, updated_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (job, key) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
                params![job, key, value, at_ms],
            )
            .map(|_| ())
            .map_err(sqlite::db("writing job state"))
        })
        .await
    }

    async fn try_lock_job(&self, job: &str) -> Result<Option<JobLock>, Error> {
        Ok(local_lock(&self.path().display().to_string(), job))
    }
}

/// Per meter, the state of its latest decided case.
const LABELS_SQL: &str = "SELECT meter, state FROM cases c
     WHERE state IN ('confirmed', 'dismissed')
       AND id = (SELECT MAX(id) FROM cases d WHERE d.meter = c.meter AND d.state IN ('confirmed', 'dismissed'))
     ORDER BY meter";

fn labels_from(rows: Vec<(String, String)>) -> Vec<(String, bool)> {
    rows.into_iter()
        .map(|(meter, state)| (meter, state == CaseState::Confirmed.as_str()))
        .collect()
}

fn history_from(
    case_id: i64,
    (at_ms, actor, from, to, reason): (i64, String, Option<String>, String, String),
) -> Result<CaseTransition, Error> {
    Ok(CaseTransition {
        case_id,
        at_ms,
        actor,
        from: from.as_deref().map(CaseState::parse).transpose()?,
        to: CaseState::parse(&to)?,
        reason,
    })
}

fn max_score(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

fn pg_alarm_row(r: &tokio_postgres::Row) -> AlarmRow {
    (
        r.get(0),
        r.get(1),
        r.get(2),
        r.get(3),
        r.get(4),
        r.get(5),
        r.get(6),
        r.get(7),
        r.get(8),
        r.get(9),
        r.get(10),
        r.get(11),
        r.get(12),
        r.get(13),
        r.get(14),
        r.get(15),
        r.get(16),
    )
}

async fn pg_alarm(
    client: &impl deadpool_postgres::GenericClient,
    id: i64,
) -> Result<Option<Alarm>, Error> {
    client
        .query_opt(
            &format!("SELECT {ALARM_COLUMNS} FROM alarms WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(postgres::db("reading an alarm"))?
        .map(|r| alarm_from(pg_alarm_row(&r)))
        .transpose()
}

async fn pg_case(
    client: &impl deadpool_postgres::GenericClient,
    id: i64,
) -> Result<Option<Case>, Error> {
    let Some(r) = client
        .query_opt(
            &format!("SELECT {CASE_COLUMNS} FROM cases WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(postgres::db("reading a case"))?
    else {
        return Ok(None);
    };
    let row: CaseRow = (
        r.get(0),
        r.get(1),
        r.get(2),
        r.get(3),
        r.get(4),
        r.get(5),
        r.get(6),
        r.get(7),
        r.get(8),
        r.get(9),
    );
    let ids = client
        .query(
            "SELECT alarm_id FROM case_alarms WHERE case_id = $1 ORDER BY alarm_id",
            &[&id],
        )
        .await
        .map_err(postgres::db("reading a case's alarms"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    case_from(row, ids).map(Some)
}

impl PgStore {
    async fn alarm_client(&self) -> Result<deadpool_postgres::Object, Error> {
        self.pool
            .get()
            .await
            .map_err(|e| Error::new(ErrorKind::Unavailable(format!("postgres pool: {e}"))))
    }
}

#[async_trait]
impl AlarmStore for PgStore {
    async fn raise_alarm(&self, a: &NewAlarm) -> Result<RaisedAlarm, Error> {
        let mut client = self.alarm_client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(postgres::db("starting an alarm transaction"))?;
        let details = a.details.to_string();
        let existing = tx
            .query_opt(
                "SELECT id, cleared_ms, status FROM alarms WHERE dedup_key = $1 ORDER BY id DESC LIMIT 1 FOR UPDATE",
                &[&a.dedup_key],
            )
            .await
            .map_err(postgres::db("looking up an alarm"))?
            .map(|r| (r.get::<_, i64>(0), r.get::<_, Option<i64>>(1), r.get::<_, String>(2)));
        let (id, created) = match existing {
            Some((id, cleared, status)) if reuses(a.scope, cleared, &status) => {
                tx.execute(
                    "UPDATE alarms SET last_seen_ms = GREATEST(last_seen_ms, $1), message = $2, details = $3, severity = $4 WHERE id = $5",
                    &[&a.at_ms, &a.message, &details, &a.severity.as_str(), &id],
                )
                .await
                .map_err(postgres::db("refreshing an alarm"))?;
                (id, false)
            }
            _ => {
                let id: i64 = tx
                    .query_one(
                        "INSERT INTO alarms (meter, kind, severity, dedup_key, opened_ms, last_seen_ms, status, message, details)
                         VALUES ($1, $2, $3, $4, $5, $5, 'open', $6, $7) RETURNING id",
                        &[&a.meter, &a.kind.as_str(), &a.severity.as_str(), &a.dedup_key, &a.at_ms, &a.message, &details],
                    )
                    .await
                    .map_err(postgres::db("opening an alarm"))?
                    .get(0);
                (id, true)
            }
        };
        let alarm = pg_alarm(&tx, id)
            .await?
            .ok_or_else(|| not_found(format!("alarm {id}")))?;
        tx.commit()
            .await
            .map_err(postgres::db("committing an alarm"))?;
        Ok(RaisedAlarm { alarm, created })
    }

    async fn clear_alarms(&self, dedup_key: &str, at_ms: i64) -> Result<u64, Error> {
        self.alarm_client()
            .await?
            .execute(
                "UPDATE alarms SET cleared_ms = $1 WHERE dedup_key = $2 AND cleared_ms IS NULL",
                &[&at_ms, &dedup_key],
            )
            .await
            .map_err(postgres::db("clearing alarms"))
    }

    async fn alarm(&self, id: i64) -> Result<Option<Alarm>, Error> {
        pg_alarm(&self.alarm_client().await?, id).await
    }

    async fn alarms(&self, f: &AlarmFilter) -> Result<Vec<Alarm>, Error> {
        let active = match f.active {
            None => "",
            Some(true) => " AND cleared_ms IS NULL",
            Some(false) => " AND cleared_ms IS NOT NULL",
        };
        let sql = format!(
            "SELECT {ALARM_COLUMNS} FROM alarms
             WHERE ($1::TEXT IS NULL OR meter = $1) AND ($2::TEXT IS NULL OR kind = $2)
               AND ($3::TEXT IS NULL OR status = $3) AND ($4::BIGINT IS NULL OR last_seen_ms >= $4){active}
             ORDER BY id DESC LIMIT $5"
        );
        let rows = self
            .alarm_client()
            .await?
            .query(
                &sql,
                &[
                    &f.meter,
                    &f.kind.map(AlarmKind::as_str),
                    &f.status.map(AlarmStatus::as_str),
                    &f.since_ms,
                    &limit_of(f.limit),
                ],
            )
            .await
            .map_err(postgres::db("listing alarms"))?;
        rows.iter().map(|r| alarm_from(pg_alarm_row(r))).collect()
    }

    async fn alarm_action(
        &self,
        id: i64,
        action: &AlarmAction,
        actor: &str,
        at_ms: i64,
    ) -> Result<Alarm, Error> {
        let mut client = self.alarm_client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(postgres::db("starting an alarm update"))?;
        tx.execute("SELECT 1 FROM alarms WHERE id = $1 FOR UPDATE", &[&id])
            .await
            .map_err(postgres::db("locking an alarm"))?;
        let mut alarm = pg_alarm(&tx, id)
            .await?
            .ok_or_else(|| not_found(format!("alarm {id}")))?;
        alarm.apply(action, actor, at_ms)?;
        tx.execute(
            "UPDATE alarms SET status = $1, acknowledged_by = $2, acknowledged_ms = $3, assigned_to = $4, resolved_by = $5, resolved_ms = $6 WHERE id = $7",
            &[
                &alarm.status.as_str(),
                &alarm.acknowledged_by,
                &alarm.acknowledged_ms,
                &alarm.assigned_to,
                &alarm.resolved_by,
                &alarm.resolved_ms,
                &id,
            ],
        )
        .await
        .map_err(postgres::db("updating an alarm"))?;
        tx.commit()
            .await
            .map_err(postgres::db("committing an alarm update"))?;
        Ok(alarm)
    }

    async fn file_case_evidence(&self, e: &CaseEvidence) -> Result<(Case, bool), Error> {
        let mut client = self.alarm_client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(postgres::db("starting a case transaction"))?;
        // One meter's cases are filed one at a time, so two alarms never open two cases.
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&job_lock_key(&format!("case:{}", e.meter))],
        )
        .await
        .map_err(postgres::db("locking a meter's cases"))?;
        let already: Option<i64> = tx
            .query_opt(
                "SELECT case_id FROM case_alarms WHERE alarm_id = $1",
                &[&e.alarm_id],
            )
            .await
            .map_err(postgres::db("looking up an alarm's case"))?
            .map(|r| r.get(0));
        if let Some(id) = already {
            let case = pg_case(&tx, id)
                .await?
                .ok_or_else(|| not_found(format!("case {id}")))?;
            return Ok((case, false));
        }
        let open = tx
            .query_opt(
                "SELECT id, evidence, score FROM cases WHERE meter = $1 AND state IN ('open', 'inspecting') ORDER BY id DESC LIMIT 1",
                &[&e.meter],
            )
            .await
            .map_err(postgres::db("looking up a meter's open case"))?
            .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1), r.get::<_, Option<f64>>(2)));
        let (id, created) = match open {
            Some((id, evidence, score)) => {
                let mut evidence = parse_json(&evidence, "case evidence")?;
                push_evidence(&mut evidence, e.item.clone());
                let score = max_score(score, e.score);
                tx.execute(
                    "UPDATE cases SET evidence = $1, score = $2, updated_ms = GREATEST(updated_ms, $3) WHERE id = $4",
                    &[&evidence.to_string(), &score, &e.at_ms, &id],
                )
                .await
                .map_err(postgres::db("adding evidence to a case"))?;
                (id, false)
            }
            None => {
                let mut evidence = serde_json::json!({ "items": [] });
                push_evidence(&mut evidence, e.item.clone());
                let id: i64 = tx
                    .query_one(
                        "INSERT INTO cases (meter, state, title, opened_ms, updated_ms, score, evidence) VALUES ($1, 'open', $2, $3, $3, $4, $5) RETURNING id",
                        &[&e.meter, &e.title, &e.at_ms, &e.score, &evidence.to_string()],
                    )
                    .await
                    .map_err(postgres::db("opening a case"))?
                    .get(0);
                tx.execute(
                    "INSERT INTO case_history (case_id, at_ms, actor, from_state, to_state, reason) VALUES ($1, $2, 'system', NULL, 'open', $3)",
                    &[&id, &e.at_ms, &format!("opened from alarm {}: {}", e.alarm_id, e.title)],
                )
                .await
                .map_err(postgres::db("writing a case's history"))?;
                (id, true)
            }
        };
        tx.execute(
            "INSERT INTO case_alarms (case_id, alarm_id) VALUES ($1, $2)",
            &[&id, &e.alarm_id],
        )
        .await
        .map_err(postgres::db("linking an alarm to its case"))?;
        tx.execute(
            "UPDATE alarms SET case_id = $1 WHERE id = $2",
            &[&id, &e.alarm_id],
        )
        .await
        .map_err(postgres::db("linking an alarm to its case"))?;
        let case = pg_case(&tx, id)
            .await?
            .ok_or_else(|| not_found(format!("case {id}")))?;
        tx.commit()
            .await
            .map_err(postgres::db("committing a case"))?;
        Ok((case, created))
    }

    async fn case(&self, id: i64) -> Result<Option<Case>, Error> {
        pg_case(&self.alarm_client().await?, id).await
    }

    async fn cases(&self, f: &CaseFilter) -> Result<Vec<Case>, Error> {
        let client = self.alarm_client().await?;
        let ids: Vec<i64> = client
            .query(
                "SELECT id FROM cases WHERE ($1::TEXT IS NULL OR meter = $1) AND ($2::TEXT IS NULL OR state = $2) ORDER BY id DESC LIMIT $3",
                &[&f.meter, &f.state.map(CaseState::as_str), &limit_of(f.limit)],
            )
            .await
            .map_err(postgres::db("listing cases"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(c) = pg_case(&client, id).await? {
                out.push(c);
            }
        }
        Ok(out)
    }

    async fn transition_case(
        &self,
        id: i64,
        to: CaseState,
        actor: &str,
        reason: &str,
        assignee: Option<&str>,
        at_ms: i64,
    ) -> Result<Case, Error> {
        let mut client = self.alarm_client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(postgres::db("starting a case transition"))?;
        tx.execute("SELECT 1 FROM cases WHERE id = $1 FOR UPDATE", &[&id])
            .await
            .map_err(postgres::db("locking a case"))?;
        let case = pg_case(&tx, id)
            .await?
            .ok_or_else(|| not_found(format!("case {id}")))?;
        checked_transition(&case, to, reason)?;
        let notes = appended_notes(&case.notes, actor, to, reason);
        let assignee = assignee.map(str::to_owned).or(case.assignee.clone());
        tx.execute(
            "UPDATE cases SET state = $1, updated_ms = $2, notes = $3, assignee = $4 WHERE id = $5",
            &[&to.as_str(), &at_ms, &notes, &assignee, &id],
        )
        .await
        .map_err(postgres::db("moving a case"))?;
        tx.execute(
            "INSERT INTO case_history (case_id, at_ms, actor, from_state, to_state, reason) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&id, &at_ms, &actor, &case.state.as_str(), &to.as_str(), &reason.trim()],
        )
        .await
        .map_err(postgres::db("writing a case's history"))?;
        let case = pg_case(&tx, id)
            .await?
            .ok_or_else(|| not_found(format!("case {id}")))?;
        tx.commit()
            .await
            .map_err(postgres::db("committing a case transition"))?;
        Ok(case)
    }

    async fn case_history(&self, id: i64) -> Result<Vec<CaseTransition>, Error> {
        self.alarm_client()
            .await?
            .query(
                "SELECT at_ms, actor, from_state, to_state, reason FROM case_history WHERE case_id = $1 ORDER BY id",
                &[&id],
            )
            .await
            .map_err(postgres::db("reading a case's history"))?
            .iter()
            .map(|r| history_from(id, (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))))
            .collect()
    }

    async fn case_labels(&self) -> Result<Vec<(String, bool)>, Error> {
        let rows = self
            .alarm_client()
            .await?
            .query(LABELS_SQL, &[])
            .await
            .map_err(postgres::db("reading case labels"))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        Ok(labels_from(rows))
    }

    async fn job_state(&self, job: &str, key: &str) -> Result<Option<String>, Error> {
        Ok(self
            .alarm_client()
            .await?
            .query_opt(
                "SELECT value FROM alarm_job_state WHERE job = $1 AND key = $2",
                &[&job, &key],
            )
            .await
            .map_err(postgres::db("reading job state"))?
            .map(|r| r.get(0)))
    }

    async fn set_job_state(
        &self,
        job: &str,
        key: &str,
        value: &str,
        at_ms: i64,
    ) -> Result<(), Error> {
        self.alarm_client()
            .await?
            .execute(
                "INSERT INTO alarm_job_state (job, key, value, updated_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (job, key) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
                &[&job, &key, &value, &at_ms],
            )
            .await
            .map(|_| ())
            .map_err(postgres::db("writing job state"))
    }

    async fn try_lock_job(&self, job: &str) -> Result<Option<JobLock>, Error> {
        let client = self.alarm_client().await?;
        let key = job_lock_key(job);
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await
            .map_err(postgres::db("taking a job lock"))?
            .get(0);
        Ok(got.then_some(JobLock {
            inner: Some(LockInner::Postgres { client, key }),
        }))
    }
}

#[cfg(test)]
mod tests {
    //! The same cases on SQLite and on PostgreSQL (127.0.0.1:5432, a random schema; skipped
    //! with a message when unreachable, a failure under `CI=true`).

    use super::*;

    fn alarm(meter: &str, key: &str, scope: AlarmScope, at_ms: i64) -> NewAlarm {
        NewAlarm {
            meter: meter.into(),
            kind: AlarmKind::Tamper,
            severity: AlarmSeverity::High,
            dedup_key: key.into(),
            scope,
            at_ms,
            message: format!("{meter}: cover open"),
            details: serde_json::json!({ "rule": "cover_open" }),
        }
    }

    async fn one_condition_is_one_alarm(s: &dyn AlarmStore) {
        let a = s
            .raise_alarm(&alarm("m1", "offline:m1", AlarmScope::Ongoing, 1_000))
            .await
            .unwrap();
        assert!(a.created);
        let b = s
            .raise_alarm(&alarm("m1", "offline:m1", AlarmScope::Ongoing, 5_000))
            .await
            .unwrap();
        assert!(!b.created);
        assert_eq!(b.alarm.id, a.alarm.id);
        assert_eq!((b.alarm.opened_ms, b.alarm.last_seen_ms), (1_000, 5_000));
        // A stale observation never moves last_seen back.
        let c = s
            .raise_alarm(&alarm("m1", "offline:m1", AlarmScope::Ongoing, 2_000))
            .await
            .unwrap();
        assert_eq!(c.alarm.last_seen_ms, 5_000);
        assert_eq!(s.clear_alarms("offline:m1", 6_000).await.unwrap(), 1);
        assert_eq!(s.clear_alarms("offline:m1", 7_000).await.unwrap(), 0);
        let cleared = s.alarm(a.alarm.id).await.unwrap().unwrap();
        assert_eq!(cleared.cleared_ms, Some(6_000));
        // The condition comes back: a new alarm.
        let d = s
            .raise_alarm(&alarm("m1", "offline:m1", AlarmScope::Ongoing, 9_000))
            .await
            .unwrap();
        assert!(d.created);
        assert_ne!(d.alarm.id, a.alarm.id);

        // An episode key is matched even after it cleared: re-reading old data is harmless.
        let e = s
            .raise_alarm(&alarm(
                "m2",
                "tamper:m2:cover_open:100",
                AlarmScope::Episode,
                100,
            ))
            .await
            .unwrap();
        s.clear_alarms("tamper:m2:cover_open:100", 200)
            .await
            .unwrap();
        let again = s
            .raise_alarm(&alarm(
                "m2",
                "tamper:m2:cover_open:100",
                AlarmScope::Episode,
                100,
            ))
            .await
            .unwrap();
        assert!(!again.created);
        assert_eq!(again.alarm.id, e.alarm.id);
        assert_eq!(again.alarm.cleared_ms, Some(200));

        let active = s
            .alarms(&AlarmFilter {
                active: Some(true),
                ..AlarmFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(
            active.iter().map(|a| a.id).collect::<Vec<_>>(),
            vec![d.alarm.id]
        );
        let m2 = s
            .alarms(&AlarmFilter {
                meter: Some("m2".into()),
                kind: Some(AlarmKind::Tamper),
                ..AlarmFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(m2.len(), 1);
        assert_eq!(m2[0].details["rule"], "cover_open");
        let none = s
            .alarms(&AlarmFilter {
                kind: Some(AlarmKind::Overload),
                ..AlarmFilter::default()
            })
            .await
            .unwrap();
        assert!(none.is_empty());
    }

    async fn operators_acknowledge_assign_and_resolve(s: &dyn AlarmStore) {
        let a = s
            .raise_alarm(&alarm("m1", "offline:m1", AlarmScope::Ongoing, 1_000))
            .await
            .unwrap()
            .alarm;
        let ack = s
            .alarm_action(a.id, &AlarmAction::Acknowledge, "olga", 2_000)
            .await
            .unwrap();
        assert_eq!(ack.status, AlarmStatus::Acknowledged);
        assert_eq!(ack.acknowledged_by.as_deref(), Some("olga"));
        let assigned = s
            .alarm_action(
                a.id,
                &AlarmAction::Assign("field team 3".into()),
                "olga",
                3_000,
            )
            .await
            .unwrap();
        assert_eq!(assigned.assigned_to.as_deref(), Some("field team 3"));
        assert!(
            s.alarm_action(a.id, &AlarmAction::Assign("  ".into()), "olga", 3_000)
                .await
                .is_err()
        );
        let resolved = s
            .alarm_action(a.id, &AlarmAction::Resolve, "piet", 4_000)
            .await
            .unwrap();
        assert_eq!(resolved.status, AlarmStatus::Resolved);
        assert_eq!(resolved.resolved_by.as_deref(), Some("piet"));
        assert_eq!(s.alarm(a.id).await.unwrap().unwrap(), resolved);
        let again = s
            .alarm_action(a.id, &AlarmAction::Acknowledge, "olga", 5_000)
            .await;
        assert!(matches!(
            again.unwrap_err().kind(),
            ErrorKind::InvalidInput(_)
        ));
        // Resolved while the condition still holds: the next observation opens a new alarm.
        let b = s
            .raise_alarm(&alarm("m1", "offline:m1", AlarmScope::Ongoing, 6_000))
            .await
            .unwrap();
        assert!(b.created);
        let missing = s
            .alarm_action(9_999, &AlarmAction::Resolve, "olga", 1)
            .await;
        assert!(matches!(
            missing.unwrap_err().kind(),
            ErrorKind::NotFound(_)
        ));
    }

    async fn cases_collect_evidence_and_follow_their_life_cycle(s: &dyn AlarmStore) {
        let a1 = s
            .raise_alarm(&alarm("house-1", "k1", AlarmScope::Episode, 1_000))
            .await
            .unwrap()
            .alarm;
        let a2 = s
            .raise_alarm(&alarm("house-1", "k2", AlarmScope::Episode, 2_000))
            .await
            .unwrap()
            .alarm;
        let file = |alarm_id: i64, score: Option<f64>, at_ms: i64| CaseEvidence {
            alarm_id,
            meter: "house-1".into(),
            title: "magnetic field".into(),
            score,
            item: serde_json::json!({ "alarm_id": alarm_id, "rule": "magnetic_field" }),
            at_ms,
        };
        let (case, created) = s
            .file_case_evidence(&file(a1.id, None, 1_000))
            .await
            .unwrap();
        assert!(created);
        assert_eq!(case.state, CaseState::Open);
        let (same, created) = s
            .file_case_evidence(&file(a2.id, Some(0.7), 2_000))
            .await
            .unwrap();
        assert!(!created);
        assert_eq!(same.id, case.id);
        assert_eq!(same.alarm_ids, vec![a1.id, a2.id]);
        assert_eq!(same.evidence["items"].as_array().unwrap().len(), 2);
        assert_eq!(same.score, Some(0.7));
        // Filing the same alarm again (a job re-ran) changes nothing.
        let (again, created) = s
            .file_case_evidence(&file(a2.id, Some(0.9), 3_000))
            .await
            .unwrap();
        assert!(!created);
        assert_eq!(again, same);
        assert_eq!(
            s.alarm(a1.id).await.unwrap().unwrap().case_id,
            Some(case.id)
        );

        let refused = s
            .transition_case(
                case.id,
                CaseState::Confirmed,
                "olga",
                "looks bad",
                None,
                4_000,
            )
            .await;
        assert!(matches!(
            refused.unwrap_err().kind(),
            ErrorKind::InvalidInput(_)
        ));
        let no_reason = s
            .transition_case(case.id, CaseState::Inspecting, "olga", "  ", None, 4_000)
            .await;
        assert!(no_reason.is_err());
        let c = s
            .transition_case(
                case.id,
                CaseState::Inspecting,
                "olga",
                "visit booked",
                Some("team 3"),
                5_000,
            )
            .await
            .unwrap();
        assert_eq!(
            (c.state, c.assignee.as_deref()),
            (CaseState::Inspecting, Some("team 3"))
        );
        let c = s
            .transition_case(
                case.id,
                CaseState::Confirmed,
                "team 3",
                "magnet found on the meter",
                None,
                6_000,
            )
            .await
            .unwrap();
        assert_eq!(c.state, CaseState::Confirmed);
        assert_eq!(c.assignee.as_deref(), Some("team 3"));
        assert!(c.notes.contains("magnet found"));
        for to in CaseState::ALL {
            assert!(
                s.transition_case(case.id, *to, "olga", "reopen", None, 7_000)
                    .await
                    .is_err()
            );
        }
        let history = s.case_history(case.id).await.unwrap();
        let steps: Vec<_> = history
            .iter()
            .map(|h| (h.from, h.to, h.actor.as_str()))
            .collect();
        assert_eq!(
            steps,
            vec![
                (None, CaseState::Open, "system"),
                (Some(CaseState::Open), CaseState::Inspecting, "olga"),
                (Some(CaseState::Inspecting), CaseState::Confirmed, "team 3"),
            ]
        );
        assert_eq!(history[2].reason, "magnet found on the meter");

        // A new alarm on a meter whose case is decided opens a new case.
        let a3 = s
            .raise_alarm(&alarm("house-1", "k3", AlarmScope::Episode, 8_000))
            .await
            .unwrap()
            .alarm;
        let (next, created) = s
            .file_case_evidence(&file(a3.id, None, 8_000))
            .await
            .unwrap();
        assert!(created);
        assert_ne!(next.id, case.id);

        // Labels: the latest decided case per meter.
        let a4 = s
            .raise_alarm(&alarm("house-2", "k4", AlarmScope::Episode, 9_000))
            .await
            .unwrap()
            .alarm;
        let (other, _) = s
            .file_case_evidence(&CaseEvidence {
                meter: "house-2".into(),
                ..file(a4.id, None, 9_000)
            })
            .await
            .unwrap();
        s.transition_case(
            other.id,
            CaseState::Dismissed,
            "olga",
            "meter replaced, reading was a fault",
            None,
            10_000,
        )
        .await
        .unwrap();
        assert_eq!(
            s.case_labels().await.unwrap(),
            vec![("house-1".to_owned(), true), ("house-2".to_owned(), false)]
        );
        let open = s
            .cases(&CaseFilter {
                state: Some(CaseState::Open),
                ..CaseFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(open.iter().map(|c| c.id).collect::<Vec<_>>(), vec![next.id]);
        assert_eq!(s.cases(&CaseFilter::default()).await.unwrap().len(), 3);
        assert!(s.case(9_999).await.unwrap().is_none());
    }

    async fn job_state_and_one_runner_per_job(s: &dyn AlarmStore) {
        assert_eq!(s.job_state("balance", "cursor:pole").await.unwrap(), None);
        s.set_job_state("balance", "cursor:pole", "100", 1)
            .await
            .unwrap();
        s.set_job_state("balance", "cursor:pole", "200", 2)
            .await
            .unwrap();
        assert_eq!(
            s.job_state("balance", "cursor:pole")
                .await
                .unwrap()
                .as_deref(),
            Some("200")
        );
        let lock = s.try_lock_job("balance").await.unwrap().expect("free");
        assert!(s.try_lock_job("balance").await.unwrap().is_none(), "held");
        let other = s
            .try_lock_job("pattern")
            .await
            .unwrap()
            .expect("another job is free");
        lock.release().await;
        let again = s.try_lock_job("balance").await.unwrap().expect("released");
        drop(again);
        other.release().await;
        // Dropped without release (a cancelled job): the lock is freed too.
        let mut freed = false;
        for _ in 0..50 {
            if let Some(l) = s.try_lock_job("balance").await.unwrap() {
                l.release().await;
                freed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(freed);
    }

    macro_rules! both_backends {
        ($($name:ident),* $(,)?) => {
            mod on_sqlite {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let t = crate::store::suite::sqlite_database("wattline-alarms").await;
                        super::$name(t.db.alarms()).await;
                    }
                )*
            }
            mod on_postgres {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let Some(t) = crate::store::suite::postgres_database("wl_alarms").await else { return };
                        super::$name(t.db.alarms()).await;
                    }
                )*
            }
        };
    }

    both_backends!(
        one_condition_is_one_alarm,
        operators_acknowledge_assign_and_resolve,
        cases_collect_evidence_and_follow_their_life_cycle,
        job_state_and_one_runner_per_job,
    );
}
