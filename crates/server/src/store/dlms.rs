//! DLMS polling state (migrations 400–499): per polled meter, the cursor that makes polling
//! exactly-once across restarts — the boot and next `seq` the poller assigns, the capture
//! time of the last load-profile row and of the last event-log entry already recorded, the last counters (a
//! register going backwards starts a new boot), and the sealed envelopes made but not yet
//! acknowledged by ingest (written before they are submitted, cleared after the commit, so
//! a crash in between re-submits the same bytes and ingest counts them as duplicates).

use async_trait::async_trait;
use schema::{EnergyCounters, MeterId};
use serde::{Deserialize, Serialize};

use super::extensions::Migration;
use super::{PgStore, SqliteStore};
use crate::Error;

pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 400,
        sqlite: r#"
CREATE TABLE dlms_poll_state (
    meter TEXT PRIMARY KEY,
    boot_id INTEGER NOT NULL,
    next_seq INTEGER NOT NULL,
    last_capture_s INTEGER,
    last_point TEXT,
    pending BLOB,
    updated_ms INTEGER NOT NULL
);
"#,
        postgres: r#"
CREATE TABLE dlms_poll_state (
    meter TEXT PRIMARY KEY,
    boot_id BIGINT NOT NULL,
    next_seq BIGINT NOT NULL,
    last_capture_s BIGINT,
    last_point TEXT,
    pending BYTEA,
    updated_ms BIGINT NOT NULL
);
"#,
    },
    Migration {
        version: 401,
        sqlite: "ALTER TABLE dlms_poll_state ADD COLUMN last_event_s INTEGER;",
        postgres: "ALTER TABLE dlms_poll_state ADD COLUMN last_event_s BIGINT;",
    },
];

/// The poller's cursor for one DLMS meter.
#[derive(Debug, Clone, PartialEq)]
pub struct PollState {
    /// The meter.
    pub meter: MeterId,
    /// The boot the poller's records belong to (random at the first poll; a new one when a
    /// register of the meter goes backwards).
    pub boot_id: u64,
    /// The `seq` of the next record.
    pub next_seq: u64,
    /// Capture time (Unix s, meter clock) of the newest load-profile row already recorded.
    pub last_capture_s: Option<i64>,
    /// Time (Unix s, meter clock) of the newest event-log entry already recorded.
    pub last_event_s: Option<i64>,
    /// The time and counters of the newest record.
    pub last_point: Option<PolledPoint>,
    /// Sealed envelopes made from a poll and not yet acknowledged by ingest, in order.
    pub pending: Vec<Vec<u8>>,
}

impl PollState {
    /// The state before the first poll.
    pub fn new(meter: MeterId, boot_id: u64) -> Self {
        Self {
            meter,
            boot_id,
            next_seq: 1,
            last_capture_s: None,
            last_event_s: None,
            last_point: None,
            pending: Vec::new(),
        }
    }
}

/// The time and counters of a record the poller made.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PolledPoint {
    /// Meter time, Unix seconds.
    pub t_s: i64,
    /// The registers.
    pub counters: EnergyCounters,
}

/// Pending envelopes as one column: each a 4-byte big-endian length and its bytes.
fn encode_pending(pending: &[Vec<u8>]) -> Option<Vec<u8>> {
    if pending.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(pending.iter().map(|p| p.len() + 4).sum());
    for p in pending {
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(p);
    }
    Some(out)
}

fn decode_pending(meter: &str, bytes: Option<Vec<u8>>) -> Result<Vec<Vec<u8>>, Error> {
    let Some(bytes) = bytes else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        let bad = || {
            Error::invalid(format!(
                "dlms poll state of {meter}: pending envelopes are truncated"
            ))
        };
        let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
        let len = u32::from_be_bytes(*len) as usize;
        if tail.len() < len {
            return Err(bad());
        }
        out.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    Ok(out)
}

fn encode_point(c: &Option<PolledPoint>) -> Result<Option<String>, Error> {
    c.as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| Error::invalid(format!("encoding counters: {e}")))
}

/// (meter, boot_id, next_seq, last_capture_s, last_point, pending, last_event_s).
type Row = (
    String,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<Vec<u8>>,
    Option<i64>,
);

fn to_state(
    (meter, boot_id, next_seq, last_capture_s, counters, pending, last_event_s): Row,
) -> Result<PollState, Error> {
    let id = MeterId::parse(&meter)
        .map_err(|e| Error::invalid(format!("stored meter id {meter:?}: {e}")))?;
    let last_point = counters
        .map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| Error::invalid(format!("dlms poll state of {meter}: last point: {e}")))?;
    let next_seq = u64::try_from(next_seq)
        .map_err(|_| Error::invalid(format!("dlms poll state of {meter}: next_seq {next_seq}")))?;
    Ok(PollState {
        pending: decode_pending(&meter, pending)?,
        meter: id,
        // Stored as the same 64 bits, signed.
        boot_id: boot_id as u64,
        next_seq,
        last_capture_s,
        last_event_s,
        last_point,
    })
}

/// Storage of the DLMS poller's cursors.
#[async_trait]
pub trait DlmsStore: Send + Sync {
    /// The cursor of `meter`, if it was ever polled.
    async fn poll_state(&self, meter: &MeterId) -> Result<Option<PollState>, Error>;
    /// Writes (inserts or replaces) a cursor.
    async fn save_poll_state(&self, state: &PollState) -> Result<(), Error>;
}

mod sqlite_impl {
    use rusqlite::{OptionalExtension, params};

    use super::*;
    use crate::store::sqlite::db;

    #[async_trait]
    impl DlmsStore for SqliteStore {
        async fn poll_state(&self, meter: &MeterId) -> Result<Option<PollState>, Error> {
            let m = meter.as_str().to_owned();
            self.run(false, move |c| {
                let row: Option<Row> = c
                    .query_row(
                        "SELECT meter, boot_id, next_seq, last_capture_s, last_point, pending, last_event_s FROM dlms_poll_state WHERE meter = ?1",
                        params![m],
                        |r| {
                            Ok((
                                r.get(0)?,
                                r.get(1)?,
                                r.get(2)?,
                                r.get(3)?,
                                r.get(4)?,
                                r.get(5)?,
                                r.get(6)?,
                            ))
                        },
                    )
                    .optional()
                    .map_err(db("reading the dlms poll state"))?;
                row.map(to_state).transpose()
            })
            .await
        }

        async fn save_poll_state(&self, state: &PollState) -> Result<(), Error> {
            let s = state.clone();
            let counters = encode_point(&s.last_point)?;
            let next_seq = i64::try_from(s.next_seq)
                .map_err(|_| Error::invalid(format!("next_seq {} out of range", s.next_seq)))?;
            self.run(true, move |c| {
                c.execute(
                    "INSERT INTO dlms_poll_state (meter, boot_id, next_seq, last_capture_s, last_point, pending, updated_ms, last_event_s)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (meter) DO UPDATE SET boot_id = excluded.boot_id, next_seq = excluded.next_seq,
                       last_capture_s = excluded.last_capture_s, last_point = excluded.last_point,
                       pending = excluded.pending, updated_ms = excluded.updated_ms, last_event_s = excluded.last_event_s",
                    params![
                        s.meter.as_str(),
                        s.boot_id as i64,
                        next_seq,
                        s.last_capture_s,
                        counters,
                        encode_pending(&s.pending),
                        crate::now_ms(),
                        s.last_event_s
                    ],
                )
                .map_err(db("saving the dlms poll state"))?;
                Ok(())
            })
            .await
        }
    }
}

mod pg_impl {
    use super::*;
    use crate::store::postgres::db;

    fn pg_unavailable(e: impl std::fmt::Display) -> Error {
        Error::new(crate::ErrorKind::Unavailable(format!("postgres pool: {e}")))
    }

    #[async_trait]
    impl DlmsStore for PgStore {
        async fn poll_state(&self, meter: &MeterId) -> Result<Option<PollState>, Error> {
            let c = self.pool.get().await.map_err(pg_unavailable)?;
            let row = c
                .query_opt(
                    "SELECT meter, boot_id, next_seq, last_capture_s, last_point, pending, last_event_s FROM dlms_poll_state WHERE meter = $1",
                    &[&meter.as_str()],
                )
                .await
                .map_err(db("reading the dlms poll state"))?;
            row.map(|r| {
                to_state((
                    r.get(0),
                    r.get(1),
                    r.get(2),
                    r.get(3),
                    r.get(4),
                    r.get(5),
                    r.get(6),
                ))
            })
            .transpose()
        }

        async fn save_poll_state(&self, state: &PollState) -> Result<(), Error> {
            let counters = encode_point(&state.last_point)?;
            let next_seq = i64::try_from(state.next_seq)
                .map_err(|_| Error::invalid(format!("next_seq {} out of range", state.next_seq)))?;
            let c = self.pool.get().await.map_err(pg_unavailable)?;
            c.execute(
                "INSERT INTO dlms_poll_state (meter, boot_id, next_seq, last_capture_s, last_point, pending, updated_ms, last_event_s)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (meter) DO UPDATE SET boot_id = EXCLUDED.boot_id, next_seq = EXCLUDED.next_seq,
                   last_capture_s = EXCLUDED.last_capture_s, last_point = EXCLUDED.last_point,
                   pending = EXCLUDED.pending, updated_ms = EXCLUDED.updated_ms, last_event_s = EXCLUDED.last_event_s",
                &[
                    &state.meter.as_str(),
                    &(state.boot_id as i64),
                    &next_seq,
                    &state.last_capture_s,
                    &counters,
                    &encode_pending(&state.pending),
                    &crate::now_ms(),
                    &state.last_event_s,
                ],
            )
            .await
            .map_err(db("saving the dlms poll state"))?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::suite;

    async fn roundtrip(db: &dyn DlmsStore) {
        let m = MeterId::parse("dlms-1").unwrap();
        assert_eq!(db.poll_state(&m).await.unwrap(), None);
        let mut s = PollState::new(m.clone(), u64::MAX - 7);
        db.save_poll_state(&s).await.unwrap();
        assert_eq!(db.poll_state(&m).await.unwrap().as_ref(), Some(&s));
        s.next_seq = 42;
        s.last_capture_s = Some(1_795_240_800);
        s.last_event_s = Some(1_795_240_000);
        s.last_point = Some(PolledPoint {
            t_s: 1_795_240_700,
            counters: EnergyCounters {
                import_wh: 1234.0,
                q4_varh: 5.0,
                ..Default::default()
            },
        });
        s.pending = vec![vec![1, 2, 3], Vec::new(), vec![9; 300]];
        db.save_poll_state(&s).await.unwrap();
        assert_eq!(db.poll_state(&m).await.unwrap().as_ref(), Some(&s));
        s.pending.clear();
        db.save_poll_state(&s).await.unwrap();
        assert_eq!(
            db.poll_state(&m).await.unwrap().unwrap().pending,
            Vec::<Vec<u8>>::new()
        );
    }

    #[test]
    fn truncated_pending_bytes_are_an_error_not_a_panic() {
        let mut bytes = encode_pending(&[vec![1, 2, 3]]).unwrap();
        bytes.pop();
        assert!(decode_pending("m", Some(bytes)).is_err());
        assert!(decode_pending("m", Some(vec![0, 0])).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dlms_poll_state_on_sqlite() {
        let t = suite::sqlite_database("wattline-dlms-state").await;
        roundtrip(t.db.dlms()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dlms_poll_state_on_postgres() {
        let Some(t) = suite::postgres_database("wl_dlms").await else {
            return;
        };
        roundtrip(t.db.dlms()).await;
    }
}
