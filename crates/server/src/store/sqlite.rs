//! The SQLite store: one WAL-mode file in the data directory, the embedded default. The only
//! file that knows SQLite's dialect. Blocking calls run on tokio's blocking pool; one writer
//! connection (SQLite has one writer anyway) and one reader connection, so queries run while
//! ingest writes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use schema::{Body, MeterId};

use super::*;
use crate::{Error, ErrorKind};

const BACKEND: &str = "sqlite";

/// File name of the database inside the data directory.
pub const SQLITE_FILE: &str = "wattline.sqlite3";

/// Versioned migrations, applied in order, each once, each in its own transaction.
const MIGRATIONS: &[(u32, &str)] = &[
    (
        1,
        r#"
CREATE TABLE customers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    time_zone TEXT NOT NULL
);
CREATE TABLE meters (
    id TEXT PRIMARY KEY,
    key_ref TEXT NOT NULL,
    parent_id TEXT REFERENCES meters(id),
    site TEXT,
    customer_id TEXT REFERENCES customers(id),
    time_zone TEXT NOT NULL,
    reporting_interval_s INTEGER NOT NULL,
    allowed_export INTEGER NOT NULL,
    status TEXT NOT NULL,
    last_seen_ms INTEGER,
    clock_drift_ms INTEGER
);
CREATE TABLE readings (
    meter_id TEXT NOT NULL,
    boot_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    @READING_COLUMNS@,
    PRIMARY KEY (meter_id, boot_id, seq)
) WITHOUT ROWID;
CREATE INDEX readings_by_time ON readings (meter_id, ts_ms);
CREATE TABLE events (
    meter_id TEXT NOT NULL,
    boot_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    class TEXT NOT NULL,
    code TEXT NOT NULL,
    active INTEGER,
    value REAL,
    detail TEXT,
    PRIMARY KEY (meter_id, boot_id, seq)
) WITHOUT ROWID;
CREATE INDEX events_by_time ON events (meter_id, ts_ms);
CREATE TABLE other_records (
    meter_id TEXT NOT NULL,
    boot_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    known INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (meter_id, boot_id, seq)
) WITHOUT ROWID;
CREATE TABLE meter_boots (
    meter_id TEXT NOT NULL,
    boot_id INTEGER NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    highest_seq INTEGER NOT NULL,
    stored INTEGER NOT NULL,
    duplicates INTEGER NOT NULL,
    PRIMARY KEY (meter_id, boot_id)
) WITHOUT ROWID;
CREATE TABLE rollups (
    meter_id TEXT NOT NULL,
    resolution TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    import_wh REAL NOT NULL,
    export_wh REAL NOT NULL,
    q1_varh REAL NOT NULL,
    q2_varh REAL NOT NULL,
    q3_varh REAL NOT NULL,
    q4_varh REAL NOT NULL,
    readings INTEGER NOT NULL,
    max_p_w REAL,
    PRIMARY KEY (meter_id, resolution, start_ms)
) WITHOUT ROWID;
CREATE TABLE rollup_dirty (
    meter_id TEXT PRIMARY KEY,
    from_ms INTEGER NOT NULL,
    to_ms INTEGER NOT NULL
);
CREATE TABLE commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    meter_id TEXT NOT NULL REFERENCES meters(id),
    action TEXT NOT NULL,
    issued_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    issued_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    detail TEXT
);
CREATE INDEX commands_by_meter ON commands (meter_id, status);
CREATE TABLE command_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    command_id INTEGER NOT NULL REFERENCES commands(id),
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    from_status TEXT,
    to_status TEXT NOT NULL,
    note TEXT NOT NULL
);
CREATE TRIGGER command_audit_no_update BEFORE UPDATE ON command_audit
BEGIN SELECT RAISE(ABORT, 'command_audit is append-only'); END;
CREATE TRIGGER command_audit_no_delete BEFORE DELETE ON command_audit
BEGIN SELECT RAISE(ABORT, 'command_audit is append-only'); END;
CREATE TABLE quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ms INTEGER NOT NULL,
    source TEXT NOT NULL,
    meter_claimed TEXT,
    reason TEXT NOT NULL,
    raw BLOB NOT NULL,
    raw_len INTEGER NOT NULL
);
"#,
    ),
    (
        2,
        // Every write into a dirty range bumps its generation, so a refresh running beside the
        // writer clears only the range it planned from, even if a gap inside it was filled
        // meanwhile (the bounds alone would not change).
        "ALTER TABLE rollup_dirty ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;",
    ),
];

/// The stored readings just below and just above `run`.
fn neighbours_on(c: &Connection, run: &SeqRun) -> Result<Neighbours, Error> {
    let base = counter_point_select();
    let (meter, boot) = (run.meter.as_str(), to_db(run.boot_id));
    let before = c
        .prepare_cached(&format!(
            "{base} WHERE meter_id = ?1 AND boot_id = ?2 AND seq < ?3 ORDER BY seq DESC LIMIT 1"
        ))
        .and_then(|mut s| {
            s.query_row(params![meter, boot, to_db(run.first_seq)], counter_point)
                .optional()
        })
        .map_err(db("finding the previous reading"))?;
    let after = c
        .prepare_cached(&format!(
            "{base} WHERE meter_id = ?1 AND boot_id = ?2 AND seq > ?3 ORDER BY seq LIMIT 1"
        ))
        .and_then(|mut s| {
            s.query_row(params![meter, boot, to_db(run.last_seq)], counter_point)
                .optional()
        })
        .map_err(db("finding the next reading"))?;
    Ok(Neighbours { before, after })
}

pub(crate) fn db(doing: &str) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
    move |e| Error::database(BACKEND, doing, e)
}

/// The SQLite [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating when needed) `wattline.sqlite3` in `data_dir` and migrates it.
    pub async fn open(data_dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            Error::new(ErrorKind::Unavailable(format!(
                "cannot create data directory {}: {e}",
                data_dir.display()
            )))
        })?;
        Self::open_file(&data_dir.join(SQLITE_FILE)).await
    }

    /// Opens (creating when needed) the database file at `path` and migrates it.
    pub async fn open_file(path: &Path) -> Result<Self, Error> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let writer = connect(&path)?;
            migrate(&writer)?;
            let reader = connect(&path)?;
            Ok(SqliteStore {
                inner: Arc::new(Inner {
                    writer: Mutex::new(writer),
                    reader: Mutex::new(reader),
                    path,
                }),
            })
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Unavailable(format!("open task failed: {e}"))))?
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on the writer (`write`) or the reader connection on tokio's blocking pool.
    /// Feature-area stores (`store/extensions.rs`) use it too.
    pub(crate) async fn run<R: Send + 'static>(
        &self,
        write: bool,
        f: impl FnOnce(&mut Connection) -> Result<R, Error> + Send + 'static,
    ) -> Result<R, Error> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let lock = if write { &inner.writer } else { &inner.reader };
            // A panic in another call poisons the mutex but leaves the connection usable:
            // SQLite rolls back the unfinished transaction when it is dropped.
            let mut conn = lock.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| Error::database(BACKEND, "running a blocking task", e))?
    }
}

fn connect(path: &Path) -> Result<Connection, Error> {
    let conn = Connection::open(path).map_err(|e| {
        Error::new(ErrorKind::Unavailable(format!(
            "cannot open {}: {e}",
            path.display()
        )))
    })?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(db("setting the busy timeout"))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(db("enabling WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::database(
            BACKEND,
            "enabling WAL",
            format!("journal mode is {mode}"),
        ));
    }
    // FULL: a commit is on disk before `write` returns, so an acknowledgement sent after it
    // survives a power cut too, not only a process crash.
    conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")
        .map_err(db("setting pragmas"))?;
    Ok(conn)
}

fn migrate(conn: &Connection) -> Result<(), Error> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL)",
    )
    .map_err(db("creating schema_migrations"))?;
    let columns = READING_COLUMNS
        .iter()
        .map(|c| format!("{c} REAL"))
        .collect::<Vec<_>>()
        .join(",\n    ");
    let core = MIGRATIONS
        .iter()
        .map(|&(version, sql)| (version, sql.replace("@READING_COLUMNS@", &columns)));
    let extensions = super::extensions::migrations()
        .into_iter()
        .map(|m| (m.version, m.sqlite.to_owned()));
    for (version, sql) in core.chain(extensions) {
        let fail = |e: rusqlite::Error| {
            Error::new(ErrorKind::Migration {
                version,
                detail: e.to_string(),
            })
        };
        // IMMEDIATE takes the write lock first, so two processes starting at once apply
        // each migration once.
        conn.execute_batch("BEGIN IMMEDIATE").map_err(fail)?;
        let applied: Option<i64> = conn
            .query_row(
                "SELECT version FROM schema_migrations WHERE version = ?1",
                [version],
                |r| r.get(0),
            )
            .optional()
            .map_err(fail)?;
        if applied.is_some() {
            conn.execute_batch("COMMIT").map_err(fail)?;
            continue;
        }
        let result = conn.execute_batch(&sql).and_then(|_| {
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_ms) VALUES (?1, ?2)",
                params![version, crate::now_ms()],
            )
        });
        match result {
            Ok(_) => conn.execute_batch("COMMIT").map_err(fail)?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(fail(e));
            }
        }
    }
    Ok(())
}

fn meter_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Vec<Option<String>>, Meter)> {
    // Ids are re-validated by the caller; return raw strings alongside.
    let id: String = r.get(0)?;
    let parent: Option<String> = r.get(2)?;
    let status: String = r.get(8)?;
    let meter = Meter {
        id: MeterId::parse("x").expect("literal id is valid"),
        key_ref: r.get(1)?,
        parent: None,
        site: r.get(3)?,
        customer: r.get(4)?,
        time_zone: r.get(5)?,
        reporting_interval_s: r.get(6)?,
        allowed_export: r.get(7)?,
        status: MeterStatus::Active,
        last_seen_ms: r.get(9)?,
        clock_drift_ms: r.get(10)?,
    };
    Ok((vec![Some(id), parent, Some(status)], meter))
}

fn finish_meter((raw, mut meter): (Vec<Option<String>>, Meter)) -> Result<Meter, Error> {
    let bad = |e: schema::Error| Error::database(BACKEND, "reading a meter", e);
    meter.id = MeterId::parse(raw[0].as_deref().unwrap_or_default()).map_err(bad)?;
    meter.parent = raw[1]
        .as_deref()
        .map(MeterId::parse)
        .transpose()
        .map_err(bad)?;
    meter.status = MeterStatus::parse(raw[2].as_deref().unwrap_or_default())?;
    Ok(meter)
}

const METER_COLUMNS: &str = "id, key_ref, parent_id, site, customer_id, time_zone, reporting_interval_s, allowed_export, status, last_seen_ms, clock_drift_ms";

fn reading_select() -> String {
    format!(
        "SELECT meter_id, boot_id, seq, ts_ms, {} FROM readings",
        READING_COLUMNS.join(", ")
    )
}

fn reading_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, StoredReading)> {
    let mut values = Vec::with_capacity(READING_COLUMNS.len());
    for i in 0..READING_COLUMNS.len() {
        values.push(r.get::<_, Option<f64>>(4 + i)?);
    }
    Ok((
        r.get(0)?,
        StoredReading {
            meter: MeterId::parse("x").expect("literal id is valid"),
            boot_id: from_db(r.get(1)?),
            seq: from_db(r.get(2)?),
            t_ms: r.get(3)?,
            reading: reading_from_values(&values),
        },
    ))
}

fn finish_reading((id, mut reading): (String, StoredReading)) -> Result<StoredReading, Error> {
    reading.meter =
        MeterId::parse(&id).map_err(|e| Error::database(BACKEND, "reading a reading", e))?;
    Ok(reading)
}

fn counter_point(r: &rusqlite::Row<'_>) -> rusqlite::Result<CounterPoint> {
    let mut c = [0.0; 6];
    for (i, v) in c.iter_mut().enumerate() {
        *v = r.get::<_, Option<f64>>(3 + i)?.unwrap_or(0.0);
    }
    Ok(CounterPoint {
        boot_id: from_db(r.get(0)?),
        seq: from_db(r.get(1)?),
        t_ms: r.get(2)?,
        counters: counters_from(c),
        p_w: r.get::<_, Option<f64>>(9)?.unwrap_or(0.0),
    })
}

/// Replaces one level's rows of `meter` inside `tx`.
fn replace_rollup_level(
    tx: &Transaction<'_>,
    meter: &str,
    level: &RollupLevel,
) -> Result<(), Error> {
    tx.execute(
        "DELETE FROM rollups WHERE meter_id = ?1 AND resolution = ?2 AND start_ms >= ?3 AND start_ms < ?4",
        params![meter, level.resolution.as_str(), level.from_ms, level.to_ms],
    )
    .map_err(db("clearing rollups"))?;
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO rollups (meter_id, resolution, start_ms, end_ms, import_wh, export_wh, q1_varh, q2_varh, q3_varh, q4_varh, readings, max_p_w)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .map_err(db("writing rollups"))?;
    for r in &level.rows {
        let e = counters_array(&r.energy);
        stmt.execute(params![
            meter,
            level.resolution.as_str(),
            r.start_ms,
            r.end_ms,
            e[0],
            e[1],
            e[2],
            e[3],
            e[4],
            e[5],
            r.readings as i64,
            r.max_p_w
        ])
        .map_err(db("writing rollups"))?;
    }
    Ok(())
}

fn counter_point_select() -> String {
    format!(
        "SELECT boot_id, seq, ts_ms, {}, p_w FROM readings",
        COUNTER_COLUMNS.join(", ")
    )
}

fn command_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Vec<Value>> {
    (0..10).map(|i| r.get(i)).collect()
}

const COMMAND_COLUMNS: &str =
    "id, meter_id, action, issued_by, reason, issued_ms, expires_ms, status, updated_ms, detail";

fn finish_command(v: Vec<Value>) -> Result<StoredCommand, Error> {
    let bad = |what: &str| Error::database(BACKEND, "reading a command", what);
    let int = |v: &Value| match v {
        Value::Integer(i) => Ok(*i),
        _ => Err(bad("expected an integer")),
    };
    let text = |v: &Value| match v {
        Value::Text(s) => Ok(s.clone()),
        _ => Err(bad("expected text")),
    };
    let action: schema::Action = serde_json::from_str(&text(&v[2])?)
        .map_err(|e| Error::database(BACKEND, "decoding a command action", e))?;
    Ok(StoredCommand {
        id: int(&v[0])?,
        command: NewCommand {
            meter: MeterId::parse(&text(&v[1])?)
                .map_err(|e| Error::database(BACKEND, "reading a command", e))?,
            action,
            issued_by: text(&v[3])?,
            reason: text(&v[4])?,
            issued_ms: int(&v[5])?,
            expires_ms: int(&v[6])?,
        },
        status: CommandStatus::parse(&text(&v[7])?)?,
        updated_ms: int(&v[8])?,
        detail: match &v[9] {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        },
    })
}

fn load_command(conn: &Connection, id: i64) -> Result<Option<StoredCommand>, Error> {
    conn.query_row(
        &format!("SELECT {COMMAND_COLUMNS} FROM commands WHERE id = ?1"),
        [id],
        command_from_row,
    )
    .optional()
    .map_err(db("reading a command"))?
    .map(finish_command)
    .transpose()
}

/// Moves a command and appends the audit line, inside the caller's transaction.
fn transition(
    tx: &Transaction<'_>,
    id: i64,
    status: CommandStatus,
    actor: &str,
    note: &str,
    at_ms: i64,
) -> Result<StoredCommand, Error> {
    let current = load_command(tx, id)?
        .ok_or_else(|| Error::new(ErrorKind::NotFound(format!("command {id}"))))?;
    if !current.status.can_become(status) {
        return Err(Error::new(ErrorKind::InvalidTransition {
            command_id: id,
            from: current.status.as_str().into(),
            to: status.as_str().into(),
        }));
    }
    tx.execute(
        "UPDATE commands SET status = ?2, updated_ms = ?3, detail = ?4 WHERE id = ?1",
        params![id, status.as_str(), at_ms, note],
    )
    .map_err(db("updating a command"))?;
    tx.execute(
        "INSERT INTO command_audit (command_id, at_ms, actor, from_status, to_status, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![id, at_ms, actor, current.status.as_str(), status.as_str(), note],
    )
    .map_err(db("appending to the command audit"))?;
    Ok(StoredCommand {
        status,
        updated_ms: at_ms,
        detail: Some(note.to_owned()),
        ..current
    })
}

fn write_set(conn: &mut Connection, set: &WriteSet) -> Result<WriteOutcome, Error> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db("starting the ingest transaction"))?;
    let mut outcome = WriteOutcome::default();
    let mut quarantine: Vec<NewQuarantine> = set.quarantine.clone();
    let reading_sql = format!(
        "INSERT INTO readings (meter_id, boot_id, seq, ts_ms, received_ms, {}) VALUES ({}) ON CONFLICT DO NOTHING",
        READING_COLUMNS.join(", "),
        (1..=READING_COLUMNS.len() + 5)
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for batch in &set.batches {
        let (Some(first), Some(last)) = (batch.records.first(), batch.records.last()) else {
            outcome.batches.push(BatchOutcome::default());
            continue;
        };
        let meter = batch.meter.as_str();
        let boot = to_db(batch.boot_id);
        let mut existing = HashMap::new();
        {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT seq, ts_ms FROM readings WHERE meter_id = ?1 AND boot_id = ?2 AND seq BETWEEN ?3 AND ?4
                     UNION ALL SELECT seq, ts_ms FROM events WHERE meter_id = ?1 AND boot_id = ?2 AND seq BETWEEN ?3 AND ?4
                     UNION ALL SELECT seq, ts_ms FROM other_records WHERE meter_id = ?1 AND boot_id = ?2 AND seq BETWEEN ?3 AND ?4",
                )
                .map_err(db("preparing the dedup query"))?;
            let rows = stmt
                .query_map(
                    params![meter, boot, to_db(first.seq), to_db(last.seq)],
                    |r| Ok((from_db(r.get(0)?), r.get::<_, i64>(1)?)),
                )
                .map_err(db("looking up stored seqs"))?;
            for row in rows {
                let (seq, t) = row.map_err(db("looking up stored seqs"))?;
                existing.insert(seq, t);
            }
        }
        let (fresh, mut result, conflicts) = classify(batch, &existing);
        quarantine.extend(conflicts);
        let mut t_range: Option<(i64, i64, u64)> = None;
        for i in fresh {
            let r = &batch.records[i];
            let seq = to_db(r.seq);
            let inserted = match &r.body {
                Body::Reading(reading) => {
                    let mut values: Vec<Value> = vec![
                        Value::Text(meter.to_owned()),
                        Value::Integer(boot),
                        Value::Integer(seq),
                        Value::Integer(r.t_ms),
                        Value::Integer(batch.received_ms),
                    ];
                    values.extend(
                        reading_values(reading)
                            .into_iter()
                            .map(|v| v.map_or(Value::Null, Value::Real)),
                    );
                    let n = tx
                        .prepare_cached(&reading_sql)
                        .and_then(|mut s| s.execute(rusqlite::params_from_iter(values)))
                        .map_err(db("inserting a reading"))?;
                    if n == 1 {
                        t_range = Some(match t_range {
                            None => (r.t_ms, r.t_ms, r.seq),
                            Some((a, b, s)) => (a.min(r.t_ms), b.max(r.t_ms), s.max(r.seq)),
                        });
                    }
                    n
                }
                Body::Event(e) => tx
                    .prepare_cached(
                        "INSERT INTO events (meter_id, boot_id, seq, ts_ms, class, code, active, value, detail)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            meter,
                            boot,
                            seq,
                            r.t_ms,
                            crate::event_class_name(e.class),
                            e.code,
                            e.active,
                            e.value,
                            e.detail
                        ])
                    })
                    .map_err(db("inserting an event"))?,
                other => {
                    let (known, body) = other_record_body(r)?;
                    let n = tx
                        .prepare_cached(
                            "INSERT INTO other_records (meter_id, boot_id, seq, ts_ms, kind, known, body)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                        )
                        .and_then(|mut s| {
                            s.execute(params![meter, boot, seq, r.t_ms, other.kind(), known, body])
                        })
                        .map_err(db("inserting a record"))?;
                    if n == 1
                        && let Body::Ack(ack) = other
                    {
                        apply_ack(&tx, &batch.meter, ack, r.t_ms)?;
                    }
                    n
                }
            };
            if inserted == 1 {
                result.stored.push(r.seq);
            } else {
                result.duplicate.push(r.seq);
            }
        }
        if let Some((from, mut to, max_seq)) = t_range {
            // Filling a gap changes the difference of the next stored reading too.
            let next: Option<i64> = tx
                .prepare_cached(
                    "SELECT ts_ms FROM readings WHERE meter_id = ?1 AND boot_id = ?2 AND seq > ?3 ORDER BY seq LIMIT 1",
                )
                .and_then(|mut s| {
                    s.query_row(params![meter, boot, to_db(max_seq)], |r| r.get(0))
                        .optional()
                })
                .map_err(db("finding the next reading"))?;
            to = to.max(next.unwrap_or(to));
            tx.prepare_cached(
                "INSERT INTO rollup_dirty (meter_id, from_ms, to_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (meter_id) DO UPDATE SET from_ms = MIN(from_ms, excluded.from_ms), to_ms = MAX(to_ms, excluded.to_ms),
                   generation = generation + 1",
            )
            .and_then(|mut s| s.execute(params![meter, from, to]))
            .map_err(db("recording the rollup range"))?;
        }
        tx.prepare_cached(
            "INSERT INTO meter_boots (meter_id, boot_id, first_seen_ms, last_seen_ms, highest_seq, stored, duplicates)
             VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6)
             ON CONFLICT (meter_id, boot_id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms,
               highest_seq = MAX(highest_seq, excluded.highest_seq), stored = stored + excluded.stored,
               duplicates = duplicates + excluded.duplicates",
        )
        .and_then(|mut s| {
            s.execute(params![
                meter,
                boot,
                batch.received_ms,
                to_db(last.seq),
                result.stored.len() as i64,
                result.duplicate.len() as i64
            ])
        })
        .map_err(db("updating the boot state"))?;
        tx.prepare_cached(
            "UPDATE meters SET last_seen_ms = ?2, clock_drift_ms = COALESCE(?3, clock_drift_ms) WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![meter, batch.received_ms, batch.clock_drift_ms]))
        .map_err(db("updating the meter"))?;
        outcome.batches.push(result);
    }
    for q in &quarantine {
        tx.prepare_cached(
            "INSERT INTO quarantine (received_ms, source, meter_claimed, reason, raw, raw_len) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut s| {
            s.execute(params![
                q.received_ms,
                q.source,
                q.meter_claimed,
                q.reason,
                q.raw,
                q.raw_len as i64
            ])
        })
        .map_err(db("quarantining"))?;
    }
    tx.commit()
        .map_err(db("committing the ingest transaction"))?;
    Ok(outcome)
}

/// An `ack` record moves its command, when the id names an unfinished command of this meter.
fn apply_ack(
    tx: &Transaction<'_>,
    meter: &MeterId,
    ack: &schema::Ack,
    at_ms: i64,
) -> Result<(), Error> {
    let Some(id) = ack
        .command_id
        .as_deref()
        .and_then(|s| s.parse::<i64>().ok())
    else {
        return Ok(());
    };
    let Some(cmd) = load_command(tx, id)? else {
        return Ok(());
    };
    let (status, note) = ack_transition(ack);
    if &cmd.command.meter == meter && cmd.status.can_become(status) {
        transition(tx, id, status, &format!("meter:{meter}"), &note, at_ms)?;
    }
    Ok(())
}

fn rollup_from_row(res: Resolution, r: &rusqlite::Row<'_>) -> rusqlite::Result<Rollup> {
    let mut c = [0.0; 6];
    for (i, v) in c.iter_mut().enumerate() {
        *v = r.get(2 + i)?;
    }
    Ok(Rollup {
        resolution: res,
        start_ms: r.get(0)?,
        end_ms: r.get(1)?,
        energy: counters_from(c),
        readings: r.get::<_, i64>(8)? as u64,
        max_p_w: r.get(9)?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn schema_version(&self) -> Result<u32, Error> {
        self.run(false, |c| {
            c.query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |r| r.get(0),
            )
            .map_err(db("reading the schema version"))
        })
        .await
    }

    async fn upsert_customer(&self, customer: &Customer) -> Result<(), Error> {
        parse_tz(&customer.time_zone)?;
        let c = customer.clone();
        self.run(true, move |conn| {
            conn.execute(
                "INSERT INTO customers (id, name, time_zone) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, time_zone = excluded.time_zone",
                params![c.id, c.name, c.time_zone],
            )
            .map_err(db("saving a customer"))?;
            Ok(())
        })
        .await
    }

    async fn customers(&self) -> Result<Vec<Customer>, Error> {
        self.run(false, move |c| {
            let mut stmt = c
                .prepare_cached("SELECT id, name, time_zone FROM customers ORDER BY id")
                .map_err(db("listing customers"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(Customer {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        time_zone: r.get(2)?,
                    })
                })
                .map_err(db("listing customers"))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(db("listing customers"))
        })
        .await
    }

    async fn customer(&self, id: &str) -> Result<Option<Customer>, Error> {
        let id = id.to_owned();
        self.run(false, move |c| {
            c.query_row(
                "SELECT id, name, time_zone FROM customers WHERE id = ?1",
                [id],
                |r| {
                    Ok(Customer {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        time_zone: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(db("reading a customer"))
        })
        .await
    }

    async fn upsert_meter(&self, meter: &Meter) -> Result<(), Error> {
        parse_tz(&meter.time_zone)?;
        let m = meter.clone();
        self.run(true, move |conn| {
            conn.execute(
                "INSERT INTO meters (id, key_ref, parent_id, site, customer_id, time_zone, reporting_interval_s, allowed_export, status)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (id) DO UPDATE SET key_ref = excluded.key_ref, parent_id = excluded.parent_id,
                   site = excluded.site, customer_id = excluded.customer_id, time_zone = excluded.time_zone,
                   reporting_interval_s = excluded.reporting_interval_s, allowed_export = excluded.allowed_export,
                   status = excluded.status",
                params![
                    m.id.as_str(),
                    m.key_ref,
                    m.parent.as_ref().map(|p| p.as_str()),
                    m.site,
                    m.customer,
                    m.time_zone,
                    m.reporting_interval_s,
                    m.allowed_export,
                    m.status.as_str()
                ],
            )
            .map_err(db("saving a meter"))?;
            Ok(())
        })
        .await
    }

    async fn meter(&self, id: &MeterId) -> Result<Option<Meter>, Error> {
        let id = id.to_string();
        self.run(false, move |c| {
            c.query_row(
                &format!("SELECT {METER_COLUMNS} FROM meters WHERE id = ?1"),
                [id],
                meter_from_row,
            )
            .optional()
            .map_err(db("reading a meter"))?
            .map(finish_meter)
            .transpose()
        })
        .await
    }

    async fn meters(&self) -> Result<Vec<Meter>, Error> {
        self.run(false, move |c| {
            let mut stmt = c
                .prepare(&format!("SELECT {METER_COLUMNS} FROM meters ORDER BY id"))
                .map_err(db("listing meters"))?;
            let rows = stmt
                .query_map([], meter_from_row)
                .map_err(db("listing meters"))?;
            rows.map(|r| finish_meter(r.map_err(db("listing meters"))?))
                .collect()
        })
        .await
    }

    async fn neighbours(
        &self,
        meter: &MeterId,
        boot_id: u64,
        first_seq: u64,
        last_seq: u64,
    ) -> Result<Neighbours, Error> {
        let run = SeqRun {
            meter: meter.clone(),
            boot_id,
            first_seq,
            last_seq,
        };
        self.run(false, move |c| neighbours_on(c, &run)).await
    }

    async fn neighbours_of_runs(&self, runs: &[SeqRun]) -> Result<Vec<Neighbours>, Error> {
        let runs = runs.to_vec();
        self.run(false, move |c| {
            runs.iter().map(|r| neighbours_on(c, r)).collect()
        })
        .await
    }

    async fn write(&self, set: &WriteSet) -> Result<WriteOutcome, Error> {
        let set = set.clone();
        self.run(true, move |c| write_set(c, &set)).await
    }

    async fn readings(
        &self,
        meter: &MeterId,
        from_ms: i64,
        to_ms: i64,
        limit: u32,
    ) -> Result<Vec<StoredReading>, Error> {
        let meter = meter.to_string();
        self.run(false, move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "{} WHERE meter_id = ?1 AND ts_ms >= ?2 AND ts_ms < ?3 ORDER BY ts_ms, boot_id, seq LIMIT ?4",
                    reading_select()
                ))
                .map_err(db("querying readings"))?;
            let rows = stmt
                .query_map(params![meter, from_ms, to_ms, limit], reading_from_row)
                .map_err(db("querying readings"))?;
            rows.map(|r| finish_reading(r.map_err(db("querying readings"))?))
                .collect()
        })
        .await
    }

    async fn latest_readings(&self) -> Result<Vec<StoredReading>, Error> {
        self.run(false, move |c| {
            let mut stmt = c
                .prepare(&format!(
                    "{} r WHERE ts_ms = (SELECT MAX(ts_ms) FROM readings x WHERE x.meter_id = r.meter_id) ORDER BY meter_id, seq",
                    reading_select()
                ))
                .map_err(db("querying latest readings"))?;
            let rows = stmt
                .query_map([], reading_from_row)
                .map_err(db("querying latest readings"))?;
            let mut out: Vec<StoredReading> = Vec::new();
            for r in rows {
                let r = finish_reading(r.map_err(db("querying latest readings"))?)?;
                // Two readings at the same instant (a reboot): keep the later boot's.
                if out.last().is_some_and(|l| l.meter == r.meter) {
                    out.pop();
                }
                out.push(r);
            }
            Ok(out)
        })
        .await
    }

    async fn gaps(&self, meter: &MeterId) -> Result<Vec<Gap>, Error> {
        let meter = meter.to_string();
        self.run(false, move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT boot_id, prev + 1, seq - 1 FROM (
                       SELECT boot_id, seq, LAG(seq) OVER (PARTITION BY boot_id ORDER BY seq) AS prev FROM (
                         SELECT boot_id, seq FROM readings WHERE meter_id = ?1
                         UNION ALL SELECT boot_id, seq FROM events WHERE meter_id = ?1
                         UNION ALL SELECT boot_id, seq FROM other_records WHERE meter_id = ?1))
                     WHERE seq > prev + 1 ORDER BY boot_id, seq",
                )
                .map_err(db("finding gaps"))?;
            let rows = stmt
                .query_map([meter], |r| {
                    Ok(Gap {
                        boot_id: from_db(r.get(0)?),
                        from_seq: from_db(r.get(1)?),
                        to_seq: from_db(r.get(2)?),
                    })
                })
                .map_err(db("finding gaps"))?;
            rows.map(|r| r.map_err(db("finding gaps"))).collect()
        })
        .await
    }

    async fn events(
        &self,
        meter: &MeterId,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<StoredEvent>, Error> {
        let meter_id = meter.clone();
        self.run(false, move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT boot_id, seq, ts_ms, class, code, active, value, detail FROM events
                     WHERE meter_id = ?1 AND ts_ms >= ?2 AND ts_ms < ?3 ORDER BY ts_ms, boot_id, seq",
                )
                .map_err(db("querying events"))?;
            let rows = stmt
                .query_map(params![meter_id.as_str(), from_ms, to_ms], |r| {
                    event_row(&meter_id, r)
                })
                .map_err(db("querying events"))?;
            rows.map(|r| r.map_err(db("querying events"))).collect()
        })
        .await
    }

    async fn latest_event(
        &self,
        meter: &MeterId,
        code: &str,
    ) -> Result<Option<StoredEvent>, Error> {
        let (meter_id, code) = (meter.clone(), code.to_owned());
        self.run(false, move |c| {
            c.prepare_cached(
                "SELECT boot_id, seq, ts_ms, class, code, active, value, detail FROM events
                 WHERE meter_id = ?1 AND code = ?2 ORDER BY ts_ms DESC, boot_id DESC, seq DESC
                 LIMIT 1",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![meter_id.as_str(), code], |r| {
                    event_row(&meter_id, r)
                })
                .optional()
            })
            .map_err(db("querying the latest event"))
        })
        .await
    }

    async fn unknown_records(
        &self,
        meter: &MeterId,
    ) -> Result<Vec<(u64, u64, String, Vec<u8>)>, Error> {
        let meter = meter.to_string();
        self.run(false, move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT boot_id, seq, kind, body FROM other_records WHERE meter_id = ?1 AND known = 0 ORDER BY boot_id, seq",
                )
                .map_err(db("querying unknown records"))?;
            let rows = stmt
                .query_map([meter], |r| {
                    Ok((from_db(r.get(0)?), from_db(r.get(1)?), r.get(2)?, r.get(3)?))
                })
                .map_err(db("querying unknown records"))?;
            rows.map(|r| r.map_err(db("querying unknown records")))
                .collect()
        })
        .await
    }

    async fn rollup_inputs(
        &self,
        meter: &MeterId,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<RollupInputs, Error> {
        let meter = meter.to_string();
        self.run(false, move |c| {
            let base = counter_point_select();
            let in_range: Vec<CounterPoint> = {
                let mut stmt = c
                    .prepare_cached(&format!(
                        "{base} WHERE meter_id = ?1 AND ts_ms > ?2 AND ts_ms <= ?3 ORDER BY boot_id, seq"
                    ))
                    .map_err(db("reading rollup inputs"))?;
                let rows = stmt
                    .query_map(params![meter, from_ms, to_ms], counter_point)
                    .map_err(db("reading rollup inputs"))?;
                rows.collect::<rusqlite::Result<_>>()
                    .map_err(db("reading rollup inputs"))?
            };
            let mut baselines = Vec::new();
            let mut firsts: Vec<(u64, u64)> = Vec::new();
            for p in &in_range {
                if firsts.last().is_none_or(|&(b, _)| b != p.boot_id) {
                    firsts.push((p.boot_id, p.seq));
                }
            }
            for (boot, seq) in firsts {
                let before = c
                    .prepare_cached(&format!(
                        "{base} WHERE meter_id = ?1 AND boot_id = ?2 AND seq < ?3 ORDER BY seq DESC LIMIT 1"
                    ))
                    .and_then(|mut s| {
                        s.query_row(params![meter, to_db(boot), to_db(seq)], counter_point)
                            .optional()
                    })
                    .map_err(db("reading a rollup baseline"))?;
                baselines.extend(before);
            }
            Ok(RollupInputs {
                in_range,
                baselines,
            })
        })
        .await
    }

    async fn apply_rollups(&self, updates: &[RollupUpdate]) -> Result<(), Error> {
        if updates.is_empty() {
            return Ok(());
        }
        let updates = updates.to_vec();
        self.run(true, move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db("starting a rollup transaction"))?;
            for u in &updates {
                for level in &u.levels {
                    replace_rollup_level(&tx, u.meter.as_str(), level)?;
                }
                if let Some(r) = &u.clear {
                    tx.execute(
                        "DELETE FROM rollup_dirty WHERE meter_id = ?1 AND from_ms = ?2 AND to_ms = ?3 AND generation = ?4",
                        params![r.meter.as_str(), r.from_ms, r.to_ms, r.generation],
                    )
                    .map_err(db("clearing a dirty rollup range"))?;
                }
            }
            tx.commit().map_err(db("committing rollups"))
        })
        .await
    }

    async fn rollups(
        &self,
        meter: &MeterId,
        resolution: Resolution,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Rollup>, Error> {
        let meter = meter.to_string();
        self.run(false, move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT start_ms, end_ms, import_wh, export_wh, q1_varh, q2_varh, q3_varh, q4_varh, readings, max_p_w
                     FROM rollups WHERE meter_id = ?1 AND resolution = ?2 AND start_ms >= ?3 AND start_ms < ?4 ORDER BY start_ms",
                )
                .map_err(db("querying rollups"))?;
            let rows = stmt
                .query_map(params![meter, resolution.as_str(), from_ms, to_ms], |r| {
                    rollup_from_row(resolution, r)
                })
                .map_err(db("querying rollups"))?;
            rows.map(|r| r.map_err(db("querying rollups"))).collect()
        })
        .await
    }

    async fn dirty_ranges(&self) -> Result<Vec<DirtyRange>, Error> {
        self.run(false, move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT meter_id, from_ms, to_ms, generation FROM rollup_dirty ORDER BY meter_id",
                )
                .map_err(db("listing dirty rollups"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .map_err(db("listing dirty rollups"))?;
            let mut out = Vec::new();
            for row in rows {
                let (m, from_ms, to_ms, generation) = row.map_err(db("listing dirty rollups"))?;
                out.push(DirtyRange {
                    meter: MeterId::parse(&m)
                        .map_err(|e| Error::database(BACKEND, "listing dirty rollups", e))?,
                    from_ms,
                    to_ms,
                    generation,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn apply_retention(&self, cutoff_ms: i64) -> Result<RetentionReport, Error> {
        self.run(true, move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db("starting retention"))?;
            // A reading ending at t belongs to the quarter hour containing t - 1 ms. Readings
            // of a meter with stale rollups stay, and so does the newest reading of each boot
            // below the cutoff: it is the baseline of the next difference.
            let deleted = tx
                .execute(
                    "DELETE FROM readings WHERE ts_ms < ?1
                     AND EXISTS (SELECT 1 FROM rollups r WHERE r.meter_id = readings.meter_id AND r.resolution = '15m'
                         AND r.start_ms = ((readings.ts_ms - 1) / 900000) * 900000)
                     AND NOT EXISTS (SELECT 1 FROM rollup_dirty d WHERE d.meter_id = readings.meter_id)
                     AND seq < (SELECT MAX(x.seq) FROM readings x WHERE x.meter_id = readings.meter_id
                         AND x.boot_id = readings.boot_id AND x.ts_ms < ?1)",
                    [cutoff_ms],
                )
                .map_err(db("deleting old readings"))?;
            let kept: i64 = tx
                .query_row("SELECT COUNT(*) FROM readings WHERE ts_ms < ?1", [cutoff_ms], |r| {
                    r.get(0)
                })
                .map_err(db("counting kept readings"))?;
            tx.commit().map_err(db("committing retention"))?;
            Ok(RetentionReport {
                readings_deleted: deleted as u64,
                readings_kept_without_rollup: kept as u64,
                partitions_dropped: 0,
            })
        })
        .await
    }

    async fn create_command(&self, command: &NewCommand) -> Result<StoredCommand, Error> {
        let cmd = command.clone();
        let action = serde_json::to_string(&cmd.action)
            .map_err(|e| Error::invalid(format!("command action: {e}")))?;
        self.run(true, move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db("starting a command transaction"))?;
            tx.execute(
                "INSERT INTO commands (meter_id, action, issued_by, reason, issued_ms, expires_ms, status, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'QUEUED', ?5)",
                params![cmd.meter.as_str(), action, cmd.issued_by, cmd.reason, cmd.issued_ms, cmd.expires_ms],
            )
            .map_err(db("queueing a command"))?;
            let id = tx.last_insert_rowid();
            tx.execute(
                "INSERT INTO command_audit (command_id, at_ms, actor, from_status, to_status, note) VALUES (?1, ?2, ?3, NULL, 'QUEUED', ?4)",
                params![id, cmd.issued_ms, cmd.issued_by, cmd.reason],
            )
            .map_err(db("appending to the command audit"))?;
            tx.commit().map_err(db("committing a command"))?;
            Ok(StoredCommand {
                id,
                updated_ms: cmd.issued_ms,
                command: cmd,
                status: CommandStatus::Queued,
                detail: None,
            })
        })
        .await
    }

    async fn set_command_status(
        &self,
        id: i64,
        status: CommandStatus,
        actor: &str,
        note: &str,
        at_ms: i64,
    ) -> Result<StoredCommand, Error> {
        let (actor, note) = (actor.to_owned(), note.to_owned());
        self.run(true, move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db("starting a command transaction"))?;
            let out = transition(&tx, id, status, &actor, &note, at_ms)?;
            tx.commit().map_err(db("committing a command"))?;
            Ok(out)
        })
        .await
    }

    async fn commands(
        &self,
        meter: &MeterId,
        status: Option<CommandStatus>,
    ) -> Result<Vec<StoredCommand>, Error> {
        let meter = meter.to_string();
        self.run(false, move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {COMMAND_COLUMNS} FROM commands WHERE meter_id = ?1 AND (?2 IS NULL OR status = ?2) ORDER BY id DESC"
                ))
                .map_err(db("listing commands"))?;
            let rows = stmt
                .query_map(params![meter, status.map(|s| s.as_str())], command_from_row)
                .map_err(db("listing commands"))?;
            rows.map(|r| finish_command(r.map_err(db("listing commands"))?))
                .collect()
        })
        .await
    }

    async fn command(&self, id: i64) -> Result<Option<StoredCommand>, Error> {
        self.run(false, move |c| load_command(c, id)).await
    }

    async fn unfinished_commands(&self, limit: u32) -> Result<Vec<StoredCommand>, Error> {
        self.run(false, move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {COMMAND_COLUMNS} FROM commands WHERE status IN ('QUEUED', 'SENT', 'DELIVERED') ORDER BY id LIMIT ?1"
                ))
                .map_err(db("listing unfinished commands"))?;
            let rows = stmt
                .query_map(params![i64::from(limit)], command_from_row)
                .map_err(db("listing unfinished commands"))?;
            rows.map(|r| finish_command(r.map_err(db("listing unfinished commands"))?))
                .collect()
        })
        .await
    }

    async fn command_audit(&self, id: i64) -> Result<Vec<AuditEntry>, Error> {
        self.run(false, move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT at_ms, actor, from_status, to_status, note FROM command_audit WHERE command_id = ?1 ORDER BY id",
                )
                .map_err(db("reading the command audit"))?;
            let rows = stmt
                .query_map([id], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })
                .map_err(db("reading the command audit"))?;
            let mut out = Vec::new();
            for row in rows {
                let (at_ms, actor, from, to, note) =
                    row.map_err(db("reading the command audit"))?;
                out.push(AuditEntry {
                    command_id: id,
                    at_ms,
                    actor,
                    from: from.as_deref().map(CommandStatus::parse).transpose()?,
                    to: CommandStatus::parse(&to)?,
                    note,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn expire_commands(&self, now_ms: i64) -> Result<u64, Error> {
        self.run(true, move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db("starting command expiry"))?;
            let ids: Vec<i64> = {
                let mut stmt = tx
                    .prepare(
                        "SELECT id FROM commands WHERE expires_ms < ?1 AND status IN ('QUEUED', 'SENT', 'DELIVERED')",
                    )
                    .map_err(db("finding expired commands"))?;
                let rows = stmt
                    .query_map([now_ms], |r| r.get(0))
                    .map_err(db("finding expired commands"))?;
                rows.collect::<rusqlite::Result<_>>()
                    .map_err(db("finding expired commands"))?
            };
            for &id in &ids {
                transition(
                    &tx,
                    id,
                    CommandStatus::Expired,
                    "system",
                    "expiry passed before the command completed",
                    now_ms,
                )?;
            }
            tx.commit().map_err(db("committing command expiry"))?;
            Ok(ids.len() as u64)
        })
        .await
    }

    async fn quarantine(&self, limit: u32) -> Result<Vec<QuarantineEntry>, Error> {
        self.run(false, move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, received_ms, source, meter_claimed, reason, raw, raw_len FROM quarantine ORDER BY id DESC LIMIT ?1",
                )
                .map_err(db("listing quarantine"))?;
            let rows = stmt
                .query_map([limit], |r| {
                    Ok(QuarantineEntry {
                        id: r.get(0)?,
                        entry: NewQuarantine {
                            received_ms: r.get(1)?,
                            source: r.get(2)?,
                            meter_claimed: r.get(3)?,
                            reason: r.get(4)?,
                            raw: r.get(5)?,
                            raw_len: r.get::<_, i64>(6)? as u64,
                        },
                    })
                })
                .map_err(db("listing quarantine"))?;
            rows.map(|r| r.map_err(db("listing quarantine"))).collect()
        })
        .await
    }
}

/// An event from `SELECT boot_id, seq, ts_ms, class, code, active, value, detail`.
fn event_row(meter: &MeterId, r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        meter: meter.clone(),
        boot_id: from_db(r.get(0)?),
        seq: from_db(r.get(1)?),
        t_ms: r.get(2)?,
        event: schema::Event {
            class: crate::event_class_parse(&r.get::<_, String>(3)?),
            code: r.get(4)?,
            active: r.get(5)?,
            value: r.get(6)?,
            detail: r.get(7)?,
        },
    })
}
