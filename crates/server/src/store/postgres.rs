//! The PostgreSQL store, for deployments that outgrow one machine (DESIGN §5): several
//! server instances share it. The only file that knows PostgreSQL's dialect.
//!
//! Readings are partitioned by month of `ts_ms` (declarative range partitioning, partitions
//! created on demand before a write needs them), or a TimescaleDB hypertable when the
//! extension is installed in the database. Writers of the same meter serialise on a
//! transaction-scoped advisory lock, so dedup on `(meter, boot_id, seq)` is exact across
//! instances even though a partitioned table's unique key must include `ts_ms`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, NaiveDate};
use deadpool_postgres::{GenericClient, Object, Pool, Runtime};
use schema::{Body, MeterId};
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use super::*;
use crate::{Error, ErrorKind};

const BACKEND: &str = "postgres";

/// Advisory lock key that serialises migrations and partition creation.
const SCHEMA_LOCK: i64 = 0x7761_7474_6c69_6e65; // "wattline"

/// Connection settings.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Role.
    pub user: String,
    /// Password, when the server asks for one.
    pub password: Option<String>,
    /// Database.
    pub dbname: String,
    /// Schema to keep the tables in (created when missing); `None` uses `public`.
    pub schema: Option<String>,
    /// Most pooled connections.
    pub pool_size: usize,
}

impl Default for PgConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 5432,
            user: "postgres".into(),
            password: None,
            dbname: "wattline".into(),
            schema: None,
            pool_size: 8,
        }
    }
}

pub(crate) fn pg_error(doing: &str, e: tokio_postgres::Error) -> Error {
    let detail = match e.as_db_error() {
        Some(d) => d.message().to_owned(),
        None => e.to_string(),
    };
    Error::database(BACKEND, doing, detail)
}

pub(crate) fn db(doing: &str) -> impl FnOnce(tokio_postgres::Error) -> Error + '_ {
    move |e| pg_error(doing, e)
}

/// How readings are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioning {
    /// Native declarative partitions, one per UTC month.
    Monthly,
    /// A TimescaleDB hypertable.
    Hypertable,
}

/// The PostgreSQL [`Store`].
pub struct PgStore {
    /// Feature-area stores (`store/extensions.rs`) take connections from it too.
    pub(crate) pool: Pool,
    partitioning: Partitioning,
    /// Month starts (Unix ms) whose partition is known to exist.
    partitions: Mutex<HashSet<i64>>,
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

impl PgStore {
    /// Drops `schema` (with everything in it) from the database of `config`, blocking on a
    /// thread of its own so it can run from `Drop` (tests and throw-away schemas; a schema name
    /// that is not a plain identifier is refused). Best effort: failures are returned, not
    /// raised.
    pub fn drop_schema_blocking(config: &PgConfig, schema: &str) -> Result<(), Error> {
        if !is_ident(schema) {
            return Err(Error::invalid(format!(
                "schema name {schema:?} must be [a-z_][a-z0-9_]{{0,62}}"
            )));
        }
        let (config, schema) = (config.clone(), schema.to_owned());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::new(ErrorKind::Unavailable(format!("runtime: {e}"))))?;
            rt.block_on(async {
                let mut pg = tokio_postgres::Config::new();
                pg.host(&config.host)
                    .port(config.port)
                    .user(&config.user)
                    .dbname(&config.dbname);
                if let Some(p) = &config.password {
                    pg.password(p);
                }
                let (client, connection) = pg.connect(NoTls).await.map_err(|e| {
                    Error::new(ErrorKind::Unavailable(format!(
                        "cannot connect to postgres at {}:{}: {e}",
                        config.host, config.port
                    )))
                })?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await
                    .map_err(db("dropping the schema"))
            })
        })
        .join()
        .map_err(|_| Error::new(ErrorKind::Unavailable("schema drop thread panicked".into())))?
    }

    /// Connects, creates the schema when asked, and migrates.
    pub async fn connect(config: &PgConfig) -> Result<Self, Error> {
        let mut cfg = deadpool_postgres::Config::new();
        cfg.host = Some(config.host.clone());
        cfg.port = Some(config.port);
        cfg.user = Some(config.user.clone());
        cfg.password = config.password.clone();
        cfg.dbname = Some(config.dbname.clone());
        if let Some(schema) = &config.schema {
            if !is_ident(schema) {
                return Err(Error::invalid(format!(
                    "schema name {schema:?} must be [a-z_][a-z0-9_]{{0,62}}"
                )));
            }
            cfg.options = Some(format!("-c search_path={schema}"));
        }
        cfg.pool = Some(deadpool_postgres::PoolConfig::new(config.pool_size.max(1)));
        let pool = cfg
            .create_pool(Some(Runtime::Tokio1), NoTls)
            .map_err(|e| Error::new(ErrorKind::Unavailable(format!("postgres pool: {e}"))))?;
        let client = pool.get().await.map_err(|e| {
            Error::new(ErrorKind::Unavailable(format!(
                "cannot connect to postgres at {}:{}: {e}",
                config.host, config.port
            )))
        })?;
        if let Some(schema) = &config.schema {
            client
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .await
                .map_err(db("creating the schema"))?;
        }
        let timescale = client
            .query_opt(
                "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'",
                &[],
            )
            .await
            .map_err(db("detecting timescaledb"))?
            .is_some();
        migrate(client, timescale).await?;
        let client = pool
            .get()
            .await
            .map_err(|e| Error::new(ErrorKind::Unavailable(format!("postgres pool: {e}"))))?;
        let kind: i8 = client
            .query_one(
                "SELECT c.relkind::\"char\" FROM pg_class c WHERE c.oid = 'readings'::regclass",
                &[],
            )
            .await
            .map_err(db("inspecting readings"))?
            .get(0);
        let partitioning = if kind == b'p' as i8 {
            Partitioning::Monthly
        } else {
            Partitioning::Hypertable
        };
        Ok(Self {
            pool,
            partitioning,
            partitions: Mutex::new(HashSet::new()),
        })
    }

    /// How readings are laid out in this database.
    pub fn partitioning(&self) -> Partitioning {
        self.partitioning
    }

    async fn client(&self) -> Result<Object, Error> {
        self.pool
            .get()
            .await
            .map_err(|e| Error::new(ErrorKind::Unavailable(format!("postgres pool: {e}"))))
    }

    /// Creates the monthly partitions the readings of `set` fall in.
    async fn ensure_partitions(&self, set: &WriteSet) -> Result<(), Error> {
        if self.partitioning != Partitioning::Monthly {
            return Ok(());
        }
        let mut months: Vec<i64> = Vec::new();
        {
            let known = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
            for b in &set.batches {
                for r in &b.records {
                    if matches!(r.body, Body::Reading(_)) {
                        let m = month_start(r.t_ms);
                        if !known.contains(&m) && !months.contains(&m) {
                            months.push(m);
                        }
                    }
                }
            }
        }
        if months.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(db("starting partition creation"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await
            .map_err(db("locking for partition creation"))?;
        for &m in &months {
            let (name, to) = partition_of(m);
            tx.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {name} PARTITION OF readings FOR VALUES FROM ({m}) TO ({to})"
            ))
            .await
            .map_err(db("creating a readings partition"))?;
        }
        tx.commit().await.map_err(db("committing partitions"))?;
        self.partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(months);
        Ok(())
    }
}

/// Start of the UTC month containing `t_ms`.
fn month_start(t_ms: i64) -> i64 {
    let d = DateTime::from_timestamp_millis(t_ms).unwrap_or_default();
    NaiveDate::from_ymd_opt(d.year(), d.month(), 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(0, |d| d.and_utc().timestamp_millis())
}

/// Partition name and exclusive upper bound of the month starting at `start_ms`.
fn partition_of(start_ms: i64) -> (String, i64) {
    let d = DateTime::from_timestamp_millis(start_ms).unwrap_or_default();
    let (y, m) = (d.year(), d.month());
    let next = if m == 12 {
        NaiveDate::from_ymd_opt(y + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(y, m + 1, 1)
    };
    let to = next
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(start_ms, |d| d.and_utc().timestamp_millis());
    // Years before 0 or after 9999 never get here: ingest refuses such timestamps.
    (format!("readings_p{y:04}{m:02}"), to)
}

fn migration_sql(version: u32, timescale: bool) -> String {
    let columns = READING_COLUMNS
        .iter()
        .map(|c| format!("{c} DOUBLE PRECISION"))
        .collect::<Vec<_>>()
        .join(",\n    ");
    match version {
        1 => {
            let readings_tail = if timescale {
                ");\nSELECT create_hypertable('readings', 'ts_ms', chunk_time_interval => 2592000000::bigint);"
            } else {
                ") PARTITION BY RANGE (ts_ms);"
            };
            format!(
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
    reporting_interval_s BIGINT NOT NULL,
    allowed_export BOOLEAN NOT NULL,
    status TEXT NOT NULL,
    last_seen_ms BIGINT,
    clock_drift_ms BIGINT
);
CREATE TABLE readings (
    meter_id TEXT NOT NULL,
    boot_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    ts_ms BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    {columns},
    PRIMARY KEY (meter_id, boot_id, seq, ts_ms)
{readings_tail}
CREATE INDEX readings_by_time ON readings (meter_id, ts_ms);
CREATE TABLE events (
    meter_id TEXT NOT NULL,
    boot_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    ts_ms BIGINT NOT NULL,
    class TEXT NOT NULL,
    code TEXT NOT NULL,
    active BOOLEAN,
    value DOUBLE PRECISION,
    detail TEXT,
    PRIMARY KEY (meter_id, boot_id, seq)
);
CREATE INDEX events_by_time ON events (meter_id, ts_ms);
CREATE TABLE other_records (
    meter_id TEXT NOT NULL,
    boot_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    ts_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    known BOOLEAN NOT NULL,
    body BYTEA NOT NULL,
    PRIMARY KEY (meter_id, boot_id, seq)
);
CREATE TABLE meter_boots (
    meter_id TEXT NOT NULL,
    boot_id BIGINT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    highest_seq BIGINT NOT NULL,
    stored BIGINT NOT NULL,
    duplicates BIGINT NOT NULL,
    PRIMARY KEY (meter_id, boot_id)
);
CREATE TABLE rollups (
    meter_id TEXT NOT NULL,
    resolution TEXT NOT NULL,
    start_ms BIGINT NOT NULL,
    end_ms BIGINT NOT NULL,
    import_wh DOUBLE PRECISION NOT NULL,
    export_wh DOUBLE PRECISION NOT NULL,
    q1_varh DOUBLE PRECISION NOT NULL,
    q2_varh DOUBLE PRECISION NOT NULL,
    q3_varh DOUBLE PRECISION NOT NULL,
    q4_varh DOUBLE PRECISION NOT NULL,
    readings BIGINT NOT NULL,
    max_p_w DOUBLE PRECISION,
    PRIMARY KEY (meter_id, resolution, start_ms)
);
CREATE TABLE rollup_dirty (
    meter_id TEXT PRIMARY KEY,
    from_ms BIGINT NOT NULL,
    to_ms BIGINT NOT NULL
);
CREATE TABLE commands (
    id BIGSERIAL PRIMARY KEY,
    meter_id TEXT NOT NULL REFERENCES meters(id),
    action TEXT NOT NULL,
    issued_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    issued_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    status TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    detail TEXT
);
CREATE INDEX commands_by_meter ON commands (meter_id, status);
CREATE TABLE command_audit (
    id BIGSERIAL PRIMARY KEY,
    command_id BIGINT NOT NULL REFERENCES commands(id),
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    from_status TEXT,
    to_status TEXT NOT NULL,
    note TEXT NOT NULL
);
CREATE FUNCTION command_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN RAISE EXCEPTION 'command_audit is append-only'; END $$;
CREATE TRIGGER command_audit_no_change BEFORE UPDATE OR DELETE ON command_audit
FOR EACH ROW EXECUTE FUNCTION command_audit_append_only();
CREATE TABLE quarantine (
    id BIGSERIAL PRIMARY KEY,
    received_ms BIGINT NOT NULL,
    source TEXT NOT NULL,
    meter_claimed TEXT,
    reason TEXT NOT NULL,
    raw BYTEA NOT NULL,
    raw_len BIGINT NOT NULL
);
"#
            )
        }
        // See the SQLite migration 2: a refresh beside the writer clears only what it planned.
        2 => "ALTER TABLE rollup_dirty ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;".to_owned(),
        _ => String::new(),
    }
}

const MIGRATION_VERSIONS: [u32; 2] = [1, 2];

async fn migrate(mut client: Object, timescale: bool) -> Result<(), Error> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_ms BIGINT NOT NULL)",
        )
        .await
        .map_err(db("creating schema_migrations"))?;
    let core = MIGRATION_VERSIONS
        .iter()
        .map(|&version| (version, migration_sql(version, timescale)));
    let extensions = super::extensions::migrations()
        .into_iter()
        .map(|m| (m.version, m.postgres.to_owned()));
    for (version, sql) in core.chain(extensions) {
        let fail = |e: tokio_postgres::Error| {
            Error::new(ErrorKind::Migration {
                version,
                detail: pg_error("migrating", e).to_string(),
            })
        };
        let tx = client.transaction().await.map_err(fail)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await
            .map_err(fail)?;
        let v = version as i32;
        let applied = tx
            .query_opt("SELECT 1 FROM schema_migrations WHERE version = $1", &[&v])
            .await
            .map_err(fail)?
            .is_some();
        if !applied {
            tx.batch_execute(&sql).await.map_err(fail)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_ms) VALUES ($1, $2)",
                &[&v, &crate::now_ms()],
            )
            .await
            .map_err(fail)?;
        }
        // Dropping an uncommitted transaction rolls it back: a failed migration leaves nothing.
        tx.commit().await.map_err(fail)?;
    }
    Ok(())
}

const METER_COLUMNS: &str = "id, key_ref, parent_id, site, customer_id, time_zone, reporting_interval_s, allowed_export, status, last_seen_ms, clock_drift_ms";

fn meter_from_row(r: &tokio_postgres::Row) -> Result<Meter, Error> {
    let bad = |e: schema::Error| Error::database(BACKEND, "reading a meter", e);
    let interval: i64 = r.get(6);
    Ok(Meter {
        id: MeterId::parse(r.get(0)).map_err(bad)?,
        key_ref: r.get(1),
        parent: r
            .get::<_, Option<&str>>(2)
            .map(MeterId::parse)
            .transpose()
            .map_err(bad)?,
        site: r.get(3),
        customer: r.get(4),
        time_zone: r.get(5),
        reporting_interval_s: u32::try_from(interval).unwrap_or(u32::MAX),
        allowed_export: r.get(7),
        status: MeterStatus::parse(r.get(8))?,
        last_seen_ms: r.get(9),
        clock_drift_ms: r.get(10),
    })
}

fn reading_select() -> String {
    format!(
        "SELECT meter_id, boot_id, seq, ts_ms, {} FROM readings",
        READING_COLUMNS.join(", ")
    )
}

fn reading_from_row(r: &tokio_postgres::Row) -> Result<StoredReading, Error> {
    let values: Vec<Option<f64>> = (0..READING_COLUMNS.len()).map(|i| r.get(4 + i)).collect();
    Ok(StoredReading {
        meter: MeterId::parse(r.get(0))
            .map_err(|e| Error::database(BACKEND, "reading a reading", e))?,
        boot_id: from_db(r.get(1)),
        seq: from_db(r.get(2)),
        t_ms: r.get(3),
        reading: reading_from_values(&values),
    })
}

fn counter_point_select() -> String {
    format!(
        "SELECT boot_id, seq, ts_ms, {}, p_w FROM readings",
        COUNTER_COLUMNS.join(", ")
    )
}

fn counter_point(r: &tokio_postgres::Row) -> CounterPoint {
    let mut c = [0.0; 6];
    for (i, v) in c.iter_mut().enumerate() {
        *v = r.get::<_, Option<f64>>(3 + i).unwrap_or(0.0);
    }
    CounterPoint {
        boot_id: from_db(r.get(0)),
        seq: from_db(r.get(1)),
        t_ms: r.get(2),
        counters: counters_from(c),
        p_w: r.get::<_, Option<f64>>(9).unwrap_or(0.0),
    }
}

const COMMAND_COLUMNS: &str =
    "id, meter_id, action, issued_by, reason, issued_ms, expires_ms, status, updated_ms, detail";

fn command_from_row(r: &tokio_postgres::Row) -> Result<StoredCommand, Error> {
    let action: schema::Action = serde_json::from_str(r.get(2))
        .map_err(|e| Error::database(BACKEND, "decoding a command action", e))?;
    Ok(StoredCommand {
        id: r.get(0),
        command: NewCommand {
            meter: MeterId::parse(r.get(1))
                .map_err(|e| Error::database(BACKEND, "reading a command", e))?,
            action,
            issued_by: r.get(3),
            reason: r.get(4),
            issued_ms: r.get(5),
            expires_ms: r.get(6),
        },
        status: CommandStatus::parse(r.get(7))?,
        updated_ms: r.get(8),
        detail: r.get(9),
    })
}

async fn load_command<C: GenericClient>(
    c: &C,
    id: i64,
    for_update: bool,
) -> Result<Option<StoredCommand>, Error> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    c.query_opt(
        &*format!("SELECT {COMMAND_COLUMNS} FROM commands WHERE id = $1{lock}"),
        &[&id],
    )
    .await
    .map_err(db("reading a command"))?
    .map(|r| command_from_row(&r))
    .transpose()
}

async fn transition<C: GenericClient>(
    tx: &C,
    id: i64,
    status: CommandStatus,
    actor: &str,
    note: &str,
    at_ms: i64,
) -> Result<StoredCommand, Error> {
    let current = load_command(tx, id, true)
        .await?
        .ok_or_else(|| Error::new(ErrorKind::NotFound(format!("command {id}"))))?;
    if !current.status.can_become(status) {
        return Err(Error::new(ErrorKind::InvalidTransition {
            command_id: id,
            from: current.status.as_str().into(),
            to: status.as_str().into(),
        }));
    }
    tx.execute(
        "UPDATE commands SET status = $2, updated_ms = $3, detail = $4 WHERE id = $1",
        &[&id, &status.as_str(), &at_ms, &note],
    )
    .await
    .map_err(db("updating a command"))?;
    tx.execute(
        "INSERT INTO command_audit (command_id, at_ms, actor, from_status, to_status, note) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&id, &at_ms, &actor, &current.status.as_str(), &status.as_str(), &note],
    )
    .await
    .map_err(db("appending to the command audit"))?;
    Ok(StoredCommand {
        status,
        updated_ms: at_ms,
        detail: Some(note.to_owned()),
        ..current
    })
}

fn rollup_from_row(res: Resolution, r: &tokio_postgres::Row) -> Rollup {
    let mut c = [0.0; 6];
    for (i, v) in c.iter_mut().enumerate() {
        *v = r.get(2 + i);
    }
    Rollup {
        resolution: res,
        start_ms: r.get(0),
        end_ms: r.get(1),
        energy: counters_from(c),
        readings: r.get::<_, i64>(8) as u64,
        max_p_w: r.get(9),
    }
}

fn reading_insert_sql() -> String {
    let n = READING_COLUMNS.len();
    let aliases: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    let arrays: Vec<String> = (0..n).map(|i| format!("${}::float8[]", i + 6)).collect();
    format!(
        "INSERT INTO readings (meter_id, boot_id, seq, ts_ms, received_ms, {cols})
         SELECT $1, $2, s, t, $5, {aliases} FROM UNNEST($3::int8[], $4::int8[], {arrays}) AS u(s, t, {aliases})
         ON CONFLICT DO NOTHING RETURNING seq",
        cols = READING_COLUMNS.join(", "),
        aliases = aliases.join(", "),
        arrays = arrays.join(", "),
    )
}

/// Replaces one level's rows of `meter` inside `tx`.
async fn replace_rollup_level(
    tx: &tokio_postgres::Transaction<'_>,
    meter: &str,
    level: &RollupLevel,
) -> Result<(), Error> {
    let res = level.resolution.as_str();
    tx.execute(
        "DELETE FROM rollups WHERE meter_id = $1 AND resolution = $2 AND start_ms >= $3 AND start_ms < $4",
        &[&meter, &res, &level.from_ms, &level.to_ms],
    )
    .await
    .map_err(db("clearing rollups"))?;
    let rows = &level.rows;
    if rows.is_empty() {
        return Ok(());
    }
    let mut cols: Vec<Vec<f64>> = (0..6).map(|_| Vec::with_capacity(rows.len())).collect();
    let starts: Vec<i64> = rows.iter().map(|r| r.start_ms).collect();
    let ends: Vec<i64> = rows.iter().map(|r| r.end_ms).collect();
    let counts: Vec<i64> = rows.iter().map(|r| r.readings as i64).collect();
    let maxes: Vec<Option<f64>> = rows.iter().map(|r| r.max_p_w).collect();
    for r in rows {
        for (col, v) in cols.iter_mut().zip(counters_array(&r.energy)) {
            col.push(v);
        }
    }
    tx.execute(
        "INSERT INTO rollups (meter_id, resolution, start_ms, end_ms, import_wh, export_wh, q1_varh, q2_varh, q3_varh, q4_varh, readings, max_p_w)
         SELECT $1, $2, * FROM UNNEST($3::int8[], $4::int8[], $5::float8[], $6::float8[], $7::float8[], $8::float8[], $9::float8[], $10::float8[], $11::int8[], $12::float8[])",
        &[&meter, &res, &starts, &ends, &cols[0], &cols[1], &cols[2], &cols[3], &cols[4], &cols[5], &counts, &maxes],
    )
    .await
    .map_err(db("writing rollups"))?;
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn schema_version(&self) -> Result<u32, Error> {
        let v: i32 = self
            .client()
            .await?
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .await
            .map_err(db("reading the schema version"))?
            .get(0);
        Ok(v as u32)
    }

    async fn upsert_customer(&self, c: &Customer) -> Result<(), Error> {
        parse_tz(&c.time_zone)?;
        self.client()
            .await?
            .execute(
                "INSERT INTO customers (id, name, time_zone) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, time_zone = excluded.time_zone",
                &[&c.id, &c.name, &c.time_zone],
            )
            .await
            .map_err(db("saving a customer"))?;
        Ok(())
    }

    async fn customers(&self) -> Result<Vec<Customer>, Error> {
        Ok(self
            .client()
            .await?
            .query("SELECT id, name, time_zone FROM customers ORDER BY id", &[])
            .await
            .map_err(db("listing customers"))?
            .iter()
            .map(|r| Customer {
                id: r.get(0),
                name: r.get(1),
                time_zone: r.get(2),
            })
            .collect())
    }

    async fn customer(&self, id: &str) -> Result<Option<Customer>, Error> {
        Ok(self
            .client()
            .await?
            .query_opt(
                "SELECT id, name, time_zone FROM customers WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(db("reading a customer"))?
            .map(|r| Customer {
                id: r.get(0),
                name: r.get(1),
                time_zone: r.get(2),
            }))
    }

    async fn upsert_meter(&self, m: &Meter) -> Result<(), Error> {
        parse_tz(&m.time_zone)?;
        let interval = i64::from(m.reporting_interval_s);
        self.client()
            .await?
            .execute(
                "INSERT INTO meters (id, key_ref, parent_id, site, customer_id, time_zone, reporting_interval_s, allowed_export, status)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (id) DO UPDATE SET key_ref = excluded.key_ref, parent_id = excluded.parent_id,
                   site = excluded.site, customer_id = excluded.customer_id, time_zone = excluded.time_zone,
                   reporting_interval_s = excluded.reporting_interval_s, allowed_export = excluded.allowed_export,
                   status = excluded.status",
                &[
                    &m.id.as_str(),
                    &m.key_ref,
                    &m.parent.as_ref().map(|p| p.as_str()),
                    &m.site,
                    &m.customer,
                    &m.time_zone,
                    &interval,
                    &m.allowed_export,
                    &m.status.as_str(),
                ],
            )
            .await
            .map_err(db("saving a meter"))?;
        Ok(())
    }

    async fn meter(&self, id: &MeterId) -> Result<Option<Meter>, Error> {
        self.client()
            .await?
            .query_opt(
                &*format!("SELECT {METER_COLUMNS} FROM meters WHERE id = $1"),
                &[&id.as_str()],
            )
            .await
            .map_err(db("reading a meter"))?
            .map(|r| meter_from_row(&r))
            .transpose()
    }

    async fn meters(&self) -> Result<Vec<Meter>, Error> {
        self.client()
            .await?
            .query(
                &*format!("SELECT {METER_COLUMNS} FROM meters ORDER BY id"),
                &[],
            )
            .await
            .map_err(db("listing meters"))?
            .iter()
            .map(meter_from_row)
            .collect()
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
        let mut found = self.neighbours_of_runs(std::slice::from_ref(&run)).await?;
        Ok(found.pop().unwrap_or_default())
    }

    async fn neighbours_of_runs(&self, runs: &[SeqRun]) -> Result<Vec<Neighbours>, Error> {
        let c = self.client().await?;
        let base = counter_point_select();
        let (before_sql, after_sql) = futures_util::future::try_join(
            c.prepare_cached(&format!(
                "{base} WHERE meter_id = $1 AND boot_id = $2 AND seq < $3 ORDER BY seq DESC LIMIT 1"
            )),
            c.prepare_cached(&format!(
                "{base} WHERE meter_id = $1 AND boot_id = $2 AND seq > $3 ORDER BY seq LIMIT 1"
            )),
        )
        .await
        .map_err(db("preparing the neighbour queries"))?;
        // Every query of every run pipelined on one connection: one wait for the group.
        let (c, before_sql, after_sql) = (&c, &before_sql, &after_sql);
        futures_util::future::try_join_all(runs.iter().map(|r| async move {
            let (m, b) = (r.meter.as_str(), to_db(r.boot_id));
            let (first, last) = (to_db(r.first_seq), to_db(r.last_seq));
            let (before, after) = futures_util::future::try_join(
                c.query_opt(before_sql, &[&m, &b, &first]),
                c.query_opt(after_sql, &[&m, &b, &last]),
            )
            .await?;
            Ok(Neighbours {
                before: before.map(|r| counter_point(&r)),
                after: after.map(|r| counter_point(&r)),
            })
        }))
        .await
        .map_err(db("finding the neighbouring readings"))
    }

    async fn write(&self, set: &WriteSet) -> Result<WriteOutcome, Error> {
        self.ensure_partitions(set).await?;
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(db("starting the ingest transaction"))?;
        // One writer per meter at a time across all instances, taken in a fixed order.
        let mut meters: Vec<&str> = set.batches.iter().map(|b| b.meter.as_str()).collect();
        meters.sort_unstable();
        meters.dedup();
        // Pipelined, and sent (so taken) in that order.
        let lock = tx
            .prepare_cached("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .await
            .map_err(db("locking a meter"))?;
        let (tx_ref, lock_ref) = (&tx, &lock);
        futures_util::future::try_join_all(
            meters
                .iter()
                .map(|m| async move { tx_ref.execute(lock_ref, &[m]).await }),
        )
        .await
        .map_err(db("locking a meter"))?;
        let reading_sql = tx
            .prepare_cached(&reading_insert_sql())
            .await
            .map_err(db("preparing the reading insert"))?;
        let mut outcome = WriteOutcome::default();
        let mut quarantine = set.quarantine.clone();
        // Batches of different meters touch different rows, so their statements are
        // pipelined on the transaction's connection (tokio-postgres sends a query before the
        // previous answer arrives when the futures run concurrently): the group costs about
        // one round trip per statement of its busiest meter, not one per statement of every
        // batch. One meter's batches still run in delivery order.
        let mut by_meter: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, b) in set.batches.iter().enumerate() {
            by_meter.entry(b.meter.as_str()).or_default().push(i);
        }
        let (tx_ref, sql_ref) = (&tx, &reading_sql);
        let per_meter = by_meter.into_values().map(|indices| async move {
            let mut done = Vec::with_capacity(indices.len());
            for i in indices {
                done.push((i, write_batch(tx_ref, sql_ref, &set.batches[i]).await?));
            }
            Ok::<_, Error>(done)
        });
        let mut written: Vec<Option<(BatchOutcome, Vec<NewQuarantine>)>> =
            vec![None; set.batches.len()];
        for (i, w) in futures_util::future::try_join_all(per_meter)
            .await?
            .into_iter()
            .flatten()
        {
            written[i] = Some(w);
        }
        for (result, conflicts) in written.into_iter().flatten() {
            quarantine.extend(conflicts);
            outcome.batches.push(result);
        }
        let raw_lens: Vec<i64> = quarantine.iter().map(|q| q.raw_len as i64).collect();
        let tx_ref = &tx;
        futures_util::future::try_join_all(quarantine.iter().zip(&raw_lens).map(|(q, raw_len)| async move {
            tx_ref.execute(
                "INSERT INTO quarantine (received_ms, source, meter_claimed, reason, raw, raw_len) VALUES ($1, $2, $3, $4, $5, $6)",
                &[&q.received_ms, &q.source, &q.meter_claimed, &q.reason, &q.raw, raw_len],
            ).await
        }))
        .await
        .map_err(db("quarantining"))?;
        tx.commit()
            .await
            .map_err(db("committing the ingest transaction"))?;
        Ok(outcome)
    }

    async fn readings(
        &self,
        meter: &MeterId,
        from_ms: i64,
        to_ms: i64,
        limit: u32,
    ) -> Result<Vec<StoredReading>, Error> {
        let limit = i64::from(limit);
        self.client()
            .await?
            .query(
                &*format!(
                    "{} WHERE meter_id = $1 AND ts_ms >= $2 AND ts_ms < $3 ORDER BY ts_ms, boot_id, seq LIMIT $4",
                    reading_select()
                ),
                &[&meter.as_str(), &from_ms, &to_ms, &limit],
            )
            .await
            .map_err(db("querying readings"))?
            .iter()
            .map(reading_from_row)
            .collect()
    }

    async fn latest_readings(&self) -> Result<Vec<StoredReading>, Error> {
        self.client()
            .await?
            .query(
                &*format!(
                    "SELECT DISTINCT ON (meter_id) * FROM ({}) r ORDER BY meter_id, ts_ms DESC, boot_id DESC, seq DESC",
                    reading_select()
                ),
                &[],
            )
            .await
            .map_err(db("querying latest readings"))?
            .iter()
            .map(reading_from_row)
            .collect()
    }

    async fn gaps(&self, meter: &MeterId) -> Result<Vec<Gap>, Error> {
        Ok(self
            .client()
            .await?
            .query(
                "SELECT boot_id, prev + 1, seq - 1 FROM (
                   SELECT boot_id, seq, LAG(seq) OVER (PARTITION BY boot_id ORDER BY seq) AS prev FROM (
                     SELECT boot_id, seq FROM readings WHERE meter_id = $1
                     UNION ALL SELECT boot_id, seq FROM events WHERE meter_id = $1
                     UNION ALL SELECT boot_id, seq FROM other_records WHERE meter_id = $1) a) b
                 WHERE seq > prev + 1 ORDER BY boot_id, seq",
                &[&meter.as_str()],
            )
            .await
            .map_err(db("finding gaps"))?
            .iter()
            .map(|r| Gap {
                boot_id: from_db(r.get(0)),
                from_seq: from_db(r.get(1)),
                to_seq: from_db(r.get(2)),
            })
            .collect())
    }

    async fn events(
        &self,
        meter: &MeterId,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<StoredEvent>, Error> {
        Ok(self
            .client()
            .await?
            .query(
                "SELECT boot_id, seq, ts_ms, class, code, active, value, detail FROM events
                 WHERE meter_id = $1 AND ts_ms >= $2 AND ts_ms < $3 ORDER BY ts_ms, boot_id, seq",
                &[&meter.as_str(), &from_ms, &to_ms],
            )
            .await
            .map_err(db("querying events"))?
            .iter()
            .map(|r| event_row(meter, r))
            .collect())
    }

    async fn latest_event(
        &self,
        meter: &MeterId,
        code: &str,
    ) -> Result<Option<StoredEvent>, Error> {
        Ok(self
            .client()
            .await?
            .query_opt(
                "SELECT boot_id, seq, ts_ms, class, code, active, value, detail FROM events
                 WHERE meter_id = $1 AND code = $2 ORDER BY ts_ms DESC, boot_id DESC, seq DESC
                 LIMIT 1",
                &[&meter.as_str(), &code],
            )
            .await
            .map_err(db("querying the latest event"))?
            .map(|r| event_row(meter, &r)))
    }

    async fn unknown_records(
        &self,
        meter: &MeterId,
    ) -> Result<Vec<(u64, u64, String, Vec<u8>)>, Error> {
        Ok(self
            .client()
            .await?
            .query(
                "SELECT boot_id, seq, kind, body FROM other_records WHERE meter_id = $1 AND NOT known ORDER BY boot_id, seq",
                &[&meter.as_str()],
            )
            .await
            .map_err(db("querying unknown records"))?
            .iter()
            .map(|r| (from_db(r.get(0)), from_db(r.get(1)), r.get(2), r.get(3)))
            .collect())
    }

    async fn rollup_inputs(
        &self,
        meter: &MeterId,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<RollupInputs, Error> {
        let c = self.client().await?;
        let base = counter_point_select();
        let m = meter.as_str();
        let in_range: Vec<CounterPoint> = c
            .query(
                &*format!("{base} WHERE meter_id = $1 AND ts_ms > $2 AND ts_ms <= $3 ORDER BY boot_id, seq"),
                &[&m, &from_ms, &to_ms],
            )
            .await
            .map_err(db("reading rollup inputs"))?
            .iter()
            .map(counter_point)
            .collect();
        let mut firsts: Vec<(u64, u64)> = Vec::new();
        for p in &in_range {
            if firsts.last().is_none_or(|&(b, _)| b != p.boot_id) {
                firsts.push((p.boot_id, p.seq));
            }
        }
        let mut baselines = Vec::new();
        for (boot, seq) in firsts {
            if let Some(r) = c
                .query_opt(
                    &*format!("{base} WHERE meter_id = $1 AND boot_id = $2 AND seq < $3 ORDER BY seq DESC LIMIT 1"),
                    &[&m, &to_db(boot), &to_db(seq)],
                )
                .await
                .map_err(db("reading a rollup baseline"))?
            {
                baselines.push(counter_point(&r));
            }
        }
        Ok(RollupInputs {
            in_range,
            baselines,
        })
    }

    async fn apply_rollups(&self, updates: &[RollupUpdate]) -> Result<(), Error> {
        if updates.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(db("starting a rollup transaction"))?;
        for u in updates {
            for level in &u.levels {
                replace_rollup_level(&tx, u.meter.as_str(), level).await?;
            }
            if let Some(r) = &u.clear {
                tx.execute(
                    "DELETE FROM rollup_dirty WHERE meter_id = $1 AND from_ms = $2 AND to_ms = $3 AND generation = $4",
                    &[&r.meter.as_str(), &r.from_ms, &r.to_ms, &r.generation],
                )
                .await
                .map_err(db("clearing a dirty rollup range"))?;
            }
        }
        tx.commit().await.map_err(db("committing rollups"))
    }

    async fn rollups(
        &self,
        meter: &MeterId,
        resolution: Resolution,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Rollup>, Error> {
        Ok(self
            .client()
            .await?
            .query(
                "SELECT start_ms, end_ms, import_wh, export_wh, q1_varh, q2_varh, q3_varh, q4_varh, readings, max_p_w
                 FROM rollups WHERE meter_id = $1 AND resolution = $2 AND start_ms >= $3 AND start_ms < $4 ORDER BY start_ms",
                &[&meter.as_str(), &resolution.as_str(), &from_ms, &to_ms],
            )
            .await
            .map_err(db("querying rollups"))?
            .iter()
            .map(|r| rollup_from_row(resolution, r))
            .collect())
    }

    async fn dirty_ranges(&self) -> Result<Vec<DirtyRange>, Error> {
        self.client()
            .await?
            .query(
                "SELECT meter_id, from_ms, to_ms, generation FROM rollup_dirty ORDER BY meter_id",
                &[],
            )
            .await
            .map_err(db("listing dirty rollups"))?
            .iter()
            .map(|r| {
                Ok(DirtyRange {
                    meter: MeterId::parse(r.get(0))
                        .map_err(|e| Error::database(BACKEND, "listing dirty rollups", e))?,
                    from_ms: r.get(1),
                    to_ms: r.get(2),
                    generation: r.get(3),
                })
            })
            .collect()
    }

    async fn apply_retention(&self, cutoff_ms: i64) -> Result<RetentionReport, Error> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(db("starting retention"))?;
        let deleted = tx
            .execute(
                "DELETE FROM readings WHERE ts_ms < $1
                 AND EXISTS (SELECT 1 FROM rollups r WHERE r.meter_id = readings.meter_id AND r.resolution = '15m'
                     AND r.start_ms = ((readings.ts_ms - 1) / 900000) * 900000)
                 AND NOT EXISTS (SELECT 1 FROM rollup_dirty d WHERE d.meter_id = readings.meter_id)
                 AND seq < (SELECT MAX(x.seq) FROM readings x WHERE x.meter_id = readings.meter_id
                     AND x.boot_id = readings.boot_id AND x.ts_ms < $1)",
                &[&cutoff_ms],
            )
            .await
            .map_err(db("deleting old readings"))?;
        let kept: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM readings WHERE ts_ms < $1",
                &[&cutoff_ms],
            )
            .await
            .map_err(db("counting kept readings"))?
            .get(0);
        let mut dropped = 0;
        if self.partitioning == Partitioning::Monthly {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
                .await
                .map_err(db("locking for partition removal"))?;
            let parts: Vec<String> = tx
                .query(
                    "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                     WHERE i.inhparent = 'readings'::regclass",
                    &[],
                )
                .await
                .map_err(db("listing partitions"))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            for name in parts {
                let Some(start) = name
                    .strip_prefix("readings_p")
                    .filter(|s| s.len() == 6)
                    .and_then(|s| {
                        let (y, m) = (s[..4].parse().ok()?, s[4..].parse().ok()?);
                        NaiveDate::from_ymd_opt(y, m, 1)?.and_hms_opt(0, 0, 0)
                    })
                    .map(|d| d.and_utc().timestamp_millis())
                else {
                    continue;
                };
                let (_, end) = partition_of(start);
                if end > cutoff_ms {
                    continue;
                }
                let empty = tx
                    .query_opt(&*format!("SELECT 1 FROM {name} LIMIT 1"), &[])
                    .await
                    .map_err(db("checking a partition"))?
                    .is_none();
                if empty {
                    tx.batch_execute(&format!("DROP TABLE {name}"))
                        .await
                        .map_err(db("dropping a partition"))?;
                    self.partitions
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&start);
                    dropped += 1;
                }
            }
        }
        tx.commit().await.map_err(db("committing retention"))?;
        Ok(RetentionReport {
            readings_deleted: deleted,
            readings_kept_without_rollup: kept as u64,
            partitions_dropped: dropped,
        })
    }

    async fn create_command(&self, cmd: &NewCommand) -> Result<StoredCommand, Error> {
        let action = serde_json::to_string(&cmd.action)
            .map_err(|e| Error::invalid(format!("command action: {e}")))?;
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(db("starting a command transaction"))?;
        let id: i64 = tx
            .query_one(
                "INSERT INTO commands (meter_id, action, issued_by, reason, issued_ms, expires_ms, status, updated_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, 'QUEUED', $5) RETURNING id",
                &[&cmd.meter.as_str(), &action, &cmd.issued_by, &cmd.reason, &cmd.issued_ms, &cmd.expires_ms],
            )
            .await
            .map_err(db("queueing a command"))?
            .get(0);
        tx.execute(
            "INSERT INTO command_audit (command_id, at_ms, actor, from_status, to_status, note) VALUES ($1, $2, $3, NULL, 'QUEUED', $4)",
            &[&id, &cmd.issued_ms, &cmd.issued_by, &cmd.reason],
        )
        .await
        .map_err(db("appending to the command audit"))?;
        tx.commit().await.map_err(db("committing a command"))?;
        Ok(StoredCommand {
            id,
            command: cmd.clone(),
            status: CommandStatus::Queued,
            updated_ms: cmd.issued_ms,
            detail: None,
        })
    }

    async fn set_command_status(
        &self,
        id: i64,
        status: CommandStatus,
        actor: &str,
        note: &str,
        at_ms: i64,
    ) -> Result<StoredCommand, Error> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(db("starting a command transaction"))?;
        let out = transition(&tx, id, status, actor, note, at_ms).await?;
        tx.commit().await.map_err(db("committing a command"))?;
        Ok(out)
    }

    async fn commands(
        &self,
        meter: &MeterId,
        status: Option<CommandStatus>,
    ) -> Result<Vec<StoredCommand>, Error> {
        let status = status.map(|s| s.as_str());
        self.client()
            .await?
            .query(
                &*format!(
                    "SELECT {COMMAND_COLUMNS} FROM commands WHERE meter_id = $1 AND ($2::text IS NULL OR status = $2) ORDER BY id DESC"
                ),
                &[&meter.as_str(), &status],
            )
            .await
            .map_err(db("listing commands"))?
            .iter()
            .map(command_from_row)
            .collect()
    }

    async fn command(&self, id: i64) -> Result<Option<StoredCommand>, Error> {
        load_command(&self.client().await?, id, false).await
    }

    async fn unfinished_commands(&self, limit: u32) -> Result<Vec<StoredCommand>, Error> {
        self.client()
            .await?
            .query(
                &*format!(
                    "SELECT {COMMAND_COLUMNS} FROM commands WHERE status IN ('QUEUED', 'SENT', 'DELIVERED') ORDER BY id LIMIT $1"
                ),
                &[&i64::from(limit)],
            )
            .await
            .map_err(db("listing unfinished commands"))?
            .iter()
            .map(command_from_row)
            .collect()
    }

    async fn command_audit(&self, id: i64) -> Result<Vec<AuditEntry>, Error> {
        self.client()
            .await?
            .query(
                "SELECT at_ms, actor, from_status, to_status, note FROM command_audit WHERE command_id = $1 ORDER BY id",
                &[&id],
            )
            .await
            .map_err(db("reading the command audit"))?
            .iter()
            .map(|r| {
                Ok(AuditEntry {
                    command_id: id,
                    at_ms: r.get(0),
                    actor: r.get(1),
                    from: r
                        .get::<_, Option<&str>>(2)
                        .map(CommandStatus::parse)
                        .transpose()?,
                    to: CommandStatus::parse(r.get(3))?,
                    note: r.get(4),
                })
            })
            .collect()
    }

    async fn expire_commands(&self, now_ms: i64) -> Result<u64, Error> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(db("starting command expiry"))?;
        let ids: Vec<i64> = tx
            .query(
                "SELECT id FROM commands WHERE expires_ms < $1 AND status IN ('QUEUED', 'SENT', 'DELIVERED') FOR UPDATE",
                &[&now_ms],
            )
            .await
            .map_err(db("finding expired commands"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for &id in &ids {
            transition(
                &tx,
                id,
                CommandStatus::Expired,
                "system",
                "expiry passed before the command completed",
                now_ms,
            )
            .await?;
        }
        tx.commit().await.map_err(db("committing command expiry"))?;
        Ok(ids.len() as u64)
    }

    async fn quarantine(&self, limit: u32) -> Result<Vec<QuarantineEntry>, Error> {
        Ok(self
            .client()
            .await?
            .query(
                "SELECT id, received_ms, source, meter_claimed, reason, raw, raw_len FROM quarantine ORDER BY id DESC LIMIT $1",
                &[&i64::from(limit)],
            )
            .await
            .map_err(db("listing quarantine"))?
            .iter()
            .map(|r| QuarantineEntry {
                id: r.get(0),
                entry: NewQuarantine {
                    received_ms: r.get(1),
                    source: r.get(2),
                    meter_claimed: r.get(3),
                    reason: r.get(4),
                    raw: r.get(5),
                    raw_len: r.get::<_, i64>(6) as u64,
                },
            })
            .collect())
    }
}

/// Writes one batch inside the ingest transaction; returns its outcome and the records that
/// conflict with stored ones (for the quarantine).
async fn write_batch(
    tx: &deadpool_postgres::Transaction<'_>,
    reading_sql: &tokio_postgres::Statement,
    batch: &BatchWrite,
) -> Result<(BatchOutcome, Vec<NewQuarantine>), Error> {
    let (Some(first), Some(last)) = (batch.records.first(), batch.records.last()) else {
        return Ok((BatchOutcome::default(), Vec::new()));
    };
    let meter = batch.meter.as_str();
    let boot = to_db(batch.boot_id);
    let (lo, hi) = (to_db(first.seq), to_db(last.seq));
    let existing: HashMap<u64, i64> = tx
        .query(
            &tx.prepare_cached("SELECT seq, ts_ms FROM readings WHERE meter_id = $1 AND boot_id = $2 AND seq BETWEEN $3 AND $4
             UNION ALL SELECT seq, ts_ms FROM events WHERE meter_id = $1 AND boot_id = $2 AND seq BETWEEN $3 AND $4
             UNION ALL SELECT seq, ts_ms FROM other_records WHERE meter_id = $1 AND boot_id = $2 AND seq BETWEEN $3 AND $4").await.map_err(db("preparing an ingest statement"))?,
            &[&meter, &boot, &lo, &hi],
        )
        .await
        .map_err(db("looking up stored seqs"))?
        .iter()
        .map(|r| (from_db(r.get(0)), r.get(1)))
        .collect();
    let (fresh, mut result, conflicts) = classify(batch, &existing);

    // Readings in one statement, column-wise arrays.
    let mut seqs = Vec::new();
    let mut times = Vec::new();
    let mut columns: Vec<Vec<Option<f64>>> = vec![Vec::new(); READING_COLUMNS.len()];
    let mut others = Vec::new();
    for &i in &fresh {
        let r = &batch.records[i];
        if let Body::Reading(reading) = &r.body {
            seqs.push(to_db(r.seq));
            times.push(r.t_ms);
            for (col, v) in columns.iter_mut().zip(reading_values(reading)) {
                col.push(v);
            }
        } else {
            others.push(r);
        }
    }
    let mut stored: HashSet<u64> = HashSet::new();
    let mut t_range: Option<(i64, i64, i64)> = None;
    if !seqs.is_empty() {
        let mut params: Vec<&(dyn ToSql + Sync)> =
            vec![&meter, &boot, &seqs, &times, &batch.received_ms];
        for col in &columns {
            params.push(col);
        }
        let rows = tx
            .query(reading_sql, &params)
            .await
            .map_err(db("inserting readings"))?;
        let inserted: HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
        for (&s, &t) in seqs.iter().zip(&times) {
            if inserted.contains(&s) {
                stored.insert(from_db(s));
                t_range = Some(match t_range {
                    None => (t, t, s),
                    Some((a, b, m)) => (a.min(t), b.max(t), m.max(s)),
                });
            }
        }
    }
    for r in others {
        let seq = to_db(r.seq);
        let n = match &r.body {
            Body::Event(e) => tx
                .execute(
                    "INSERT INTO events (meter_id, boot_id, seq, ts_ms, class, code, active, value, detail)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                    &[
                        &meter,
                        &boot,
                        &seq,
                        &r.t_ms,
                        &crate::event_class_name(e.class),
                        &e.code,
                        &e.active,
                        &e.value,
                        &e.detail,
                    ],
                )
                .await
                .map_err(db("inserting an event"))?,
            other => {
                let (known, body) = other_record_body(r)?;
                let n = tx
                    .execute(
                        "INSERT INTO other_records (meter_id, boot_id, seq, ts_ms, kind, known, body)
                         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                        &[&meter, &boot, &seq, &r.t_ms, &other.kind(), &known, &body],
                    )
                    .await
                    .map_err(db("inserting a record"))?;
                if n == 1
                    && let Body::Ack(ack) = other
                {
                    apply_ack(tx, &batch.meter, ack, r.t_ms).await?;
                }
                n
            }
        };
        if n == 1 {
            stored.insert(r.seq);
        }
    }
    for &i in &fresh {
        let seq = batch.records[i].seq;
        if stored.contains(&seq) {
            result.stored.push(seq);
        } else {
            result.duplicate.push(seq);
        }
    }
    if let Some((from, to, max_seq)) = t_range {
        let next: Option<i64> = tx
            .query_opt(
                &tx.prepare_cached("SELECT ts_ms FROM readings WHERE meter_id = $1 AND boot_id = $2 AND seq > $3 ORDER BY seq LIMIT 1").await.map_err(db("preparing an ingest statement"))?,
                &[&meter, &boot, &max_seq],
            )
            .await
            .map_err(db("finding the next reading"))?
            .map(|r| r.get(0));
        let to = to.max(next.unwrap_or(to));
        tx.execute(
            &tx.prepare_cached("INSERT INTO rollup_dirty (meter_id, from_ms, to_ms) VALUES ($1, $2, $3)
             ON CONFLICT (meter_id) DO UPDATE SET from_ms = LEAST(rollup_dirty.from_ms, excluded.from_ms),
               to_ms = GREATEST(rollup_dirty.to_ms, excluded.to_ms), generation = rollup_dirty.generation + 1").await.map_err(db("preparing an ingest statement"))?,
            &[&meter, &from, &to],
        )
        .await
        .map_err(db("recording the rollup range"))?;
    }
    let (n_stored, n_dup) = (result.stored.len() as i64, result.duplicate.len() as i64);
    tx.execute(
        &tx.prepare_cached("INSERT INTO meter_boots (meter_id, boot_id, first_seen_ms, last_seen_ms, highest_seq, stored, duplicates)
         VALUES ($1, $2, $3, $3, $4, $5, $6)
         ON CONFLICT (meter_id, boot_id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms,
           highest_seq = GREATEST(meter_boots.highest_seq, excluded.highest_seq),
           stored = meter_boots.stored + excluded.stored,
           duplicates = meter_boots.duplicates + excluded.duplicates").await.map_err(db("preparing an ingest statement"))?,
        &[&meter, &boot, &batch.received_ms, &hi, &n_stored, &n_dup],
    )
    .await
    .map_err(db("updating the boot state"))?;
    tx.execute(
        &tx.prepare_cached("UPDATE meters SET last_seen_ms = $2, clock_drift_ms = COALESCE($3, clock_drift_ms) WHERE id = $1").await.map_err(db("preparing an ingest statement"))?,
        &[&meter, &batch.received_ms, &batch.clock_drift_ms],
    )
    .await
    .map_err(db("updating the meter"))?;
    Ok((result, conflicts))
}

/// An `ack` record moves its command, when the id names an unfinished command of this meter.
async fn apply_ack<C: GenericClient>(
    tx: &C,
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
    let Some(cmd) = load_command(tx, id, true).await? else {
        return Ok(());
    };
    let (status, note) = ack_transition(ack);
    if &cmd.command.meter == meter && cmd.status.can_become(status) {
        transition(tx, id, status, &format!("meter:{meter}"), &note, at_ms).await?;
    }
    Ok(())
}

/// An event from `SELECT boot_id, seq, ts_ms, class, code, active, value, detail`.
fn event_row(meter: &MeterId, r: &tokio_postgres::Row) -> StoredEvent {
    StoredEvent {
        meter: meter.clone(),
        boot_id: from_db(r.get(0)),
        seq: from_db(r.get(1)),
        t_ms: r.get(2),
        event: schema::Event {
            class: crate::event_class_parse(r.get(3)),
            code: r.get(4),
            active: r.get(5),
            value: r.get(6),
            detail: r.get(7),
        },
    }
}
