//! The one test suite every [`Store`] implementation passes: each test is a generic async
//! function over `&dyn Store`, instantiated for SQLite and PostgreSQL by `store_suite!`.
//!
//! PostgreSQL tests use the server on 127.0.0.1:5432 (trust auth, database `test`, or
//! `WATTLINE_TEST_PG_*`), each in its own randomly named schema that is dropped afterwards.
//! When the server is unreachable they are skipped with a message, except under `CI=true`,
//! where they fail.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::DateTime;
use schema::{
    Ack, AckStatus, Action, Body, EnergyCounters, Event, EventClass, Heartbeat, MeterId, Phase,
    PhaseReading, Reading, Record, TotalReading,
};

use super::*;
use crate::rollup;

static COUNTER: AtomicU64 = AtomicU64::new(0);

pub(crate) fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub(crate) fn pg_base_config() -> PgConfig {
    let env = |k: &str| std::env::var(k).ok();
    PgConfig {
        host: env("WATTLINE_TEST_PG_HOST").unwrap_or_else(|| "127.0.0.1".into()),
        port: env("WATTLINE_TEST_PG_PORT")
            .and_then(|p| p.parse().ok())
            .unwrap_or(5432),
        user: env("WATTLINE_TEST_PG_USER").unwrap_or_else(|| "postgres".into()),
        password: env("WATTLINE_TEST_PG_PASSWORD"),
        dbname: env("WATTLINE_TEST_PG_DB").unwrap_or_else(|| "test".into()),
        schema: None,
        pool_size: 4,
    }
}

/// A PostgreSQL store in a fresh schema named after `prefix`, and what drops the schema.
/// `None`, with a message, when the server is unreachable; under `CI=true` that is a failure.
async fn pg_store(prefix: &str) -> Option<(PgStore, Box<dyn FnOnce() + Send>)> {
    let schema = unique(prefix);
    let base = pg_base_config();
    let config = PgConfig {
        schema: Some(schema.clone()),
        ..base.clone()
    };
    match PgStore::connect(&config).await {
        Ok(store) => Some((store, Box::new(move || drop_schema(base, schema)))),
        Err(e) if std::env::var("CI").as_deref() != Ok("true") && is_unreachable(&e) => {
            eprintln!("skipping postgres test: {e} (set CI=true to make this a failure)");
            None
        }
        Err(e) => panic!("postgres store: {e}"),
    }
}

/// A whole [`crate::Database`] (core and feature-area stores) for the feature areas' tests,
/// removed when dropped.
pub(crate) struct TestDatabase {
    pub db: crate::Database,
    cleanup: Option<Box<dyn FnOnce() + Send>>,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(f) = self.cleanup.take() {
            f();
        }
    }
}

/// A SQLite database in a fresh directory named after `prefix`.
pub(crate) async fn sqlite_database(prefix: &str) -> TestDatabase {
    let dir = std::env::temp_dir().join(unique(prefix));
    let store = SqliteStore::open(&dir).await.expect("open sqlite");
    TestDatabase {
        db: crate::Database::Sqlite(store),
        cleanup: Some(Box::new(move || {
            let _ = std::fs::remove_dir_all(&dir);
        })),
    }
}

/// A PostgreSQL database in a fresh schema named after `prefix` (see [`pg_store`]).
pub(crate) async fn postgres_database(prefix: &str) -> Option<TestDatabase> {
    let (store, cleanup) = pg_store(prefix).await?;
    Some(TestDatabase {
        db: crate::Database::Postgres(Arc::new(store)),
        cleanup: Some(cleanup),
    })
}

fn is_unreachable(e: &Error) -> bool {
    matches!(e.kind(), crate::ErrorKind::Unavailable(_))
}

fn drop_schema(config: PgConfig, schema: String) {
    let _ = crate::PgStore::drop_schema_blocking(&config, &schema);
}

macro_rules! store_suite {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let t = super::sqlite_database("wattline-store").await;
                    super::$name(t.db.store().as_ref()).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(t) = super::postgres_database("wl_test").await else { return };
                    super::$name(t.db.store().as_ref()).await;
                }
            )*
        }
    };
}

store_suite!(
    migrations_are_recorded,
    meters_and_customers_round_trip,
    writes_are_idempotent_and_gaps_stay_visible,
    readings_round_trip_and_latest_per_meter,
    events_acks_heartbeats_and_unknown_kinds,
    rollups_across_berlin_spring_dst,
    rollups_across_berlin_autumn_dst,
    rollups_in_a_half_hour_zone,
    retention_keeps_rollups_and_unrolled_readings,
    commands_follow_their_life_cycle_with_audit,
    quarantine_lists_newest_first,
    automatic_resolution,
    customers_listed_and_commands_looked_up,
    piecewise_rollup_refreshes_equal_one_and_grown_ranges_stay_dirty,
    a_gap_filled_inside_a_range_being_refreshed_keeps_it_dirty,
    neighbours_of_runs_answer_each_run_as_neighbours_does,
);

fn utc(s: &str) -> i64 {
    DateTime::parse_from_rfc3339(s)
        .expect("test time")
        .timestamp_millis()
}

fn id(s: &str) -> MeterId {
    MeterId::parse(s).expect("test meter id")
}

pub(crate) fn reading(import_wh: f64, p_w: f64) -> Reading {
    Reading {
        interval_s: 60.0,
        freq_hz: 50.0,
        phases: vec![PhaseReading {
            phase: Phase::A,
            v_rms: 230.0,
            i_rms: p_w.abs() / 230.0,
            p_w,
            q_var: None,
            s_va: p_w.abs(),
            pf: 1.0,
            v_thd_pct: None,
            i_thd_pct: None,
        }],
        total: TotalReading {
            p_w,
            q_var: None,
            s_va: p_w.abs(),
            pf: 1.0,
        },
        counters: EnergyCounters {
            import_wh,
            q1_varh: import_wh / 10.0,
            ..Default::default()
        },
    }
}

fn batch(meter: &MeterId, boot_id: u64, records: Vec<Record>) -> BatchWrite {
    BatchWrite {
        meter: meter.clone(),
        boot_id,
        records,
        received_ms: 1_700_000_000_000,
        clock_drift_ms: None,
        source: format!("wattline/v1/m/{meter}/up"),
    }
}

fn rec(seq: u64, t_ms: i64, body: Body) -> Record {
    Record { seq, t_ms, body }
}

async fn add_meter(store: &dyn Store, name: &str, tz: &str) -> MeterId {
    let mut m = Meter::new(id(name), format!("{name}.key"));
    m.time_zone = tz.into();
    store.upsert_meter(&m).await.expect("meter");
    m.id
}

async fn write(store: &dyn Store, batches: Vec<BatchWrite>) -> WriteOutcome {
    store
        .write(&WriteSet {
            batches,
            quarantine: vec![],
        })
        .await
        .expect("write")
}

async fn migrations_are_recorded(store: &dyn Store) {
    // The newest version: the core schema plus every feature area's migrations.
    let newest = super::extensions::migrations()
        .last()
        .map_or(1, |m| m.version);
    assert_eq!(store.schema_version().await.unwrap(), newest);
}

async fn meters_and_customers_round_trip(store: &dyn Store) {
    let customer = Customer {
        id: "c-1".into(),
        name: "Farm Example".into(),
        time_zone: "Europe/Berlin".into(),
    };
    store.upsert_customer(&customer).await.unwrap();
    assert_eq!(store.customer("c-1").await.unwrap(), Some(customer));
    assert_eq!(store.customer("nobody").await.unwrap(), None);

    let observer = add_meter(store, "observer-1", "Europe/Berlin").await;
    let mut m = Meter::new(id("house-1"), "house-1.key");
    m.parent = Some(observer.clone());
    m.site = Some("feeder 3".into());
    m.customer = Some("c-1".into());
    m.time_zone = "Europe/Berlin".into();
    m.reporting_interval_s = 10;
    m.allowed_export = true;
    store.upsert_meter(&m).await.unwrap();
    assert_eq!(store.meter(&m.id).await.unwrap(), Some(m.clone()));

    m.status = MeterStatus::Deregistered;
    store.upsert_meter(&m).await.unwrap();
    assert_eq!(
        store.meter(&m.id).await.unwrap().unwrap().status,
        MeterStatus::Deregistered
    );
    let all: Vec<String> = store
        .meters()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id.to_string())
        .collect();
    assert_eq!(all, ["house-1", "observer-1"]);

    let mut bad = Meter::new(id("house-2"), "k");
    bad.time_zone = "Mars/Olympus".into();
    let err = store.upsert_meter(&bad).await.unwrap_err();
    assert!(err.to_string().contains("unknown time zone"), "{err}");
}

async fn writes_are_idempotent_and_gaps_stay_visible(store: &dyn Store) {
    let m = add_meter(store, "dedup-1", "UTC").await;
    let t0 = utc("2026-06-01T00:00:00Z");
    let records: Vec<Record> = [1u64, 2, 4, 5, 9]
        .iter()
        .map(|&s| {
            rec(
                s,
                t0 + s as i64 * 60_000,
                Body::Reading(reading(s as f64, 100.0)),
            )
        })
        .collect();
    let first = write(store, vec![batch(&m, 7, records.clone())]).await;
    assert_eq!(first.batches[0].stored, [1, 2, 4, 5, 9]);
    assert!(first.batches[0].duplicate.is_empty());

    // The same batch again, and overlapping within one transaction: stored once.
    let again = write(
        store,
        vec![
            batch(&m, 7, records.clone()),
            batch(&m, 7, records[..2].to_vec()),
        ],
    )
    .await;
    assert!(again.batches[0].stored.is_empty());
    assert_eq!(again.batches[0].duplicate, [1, 2, 4, 5, 9]);
    assert_eq!(again.batches[1].duplicate, [1, 2]);
    let stored = store.readings(&m, 0, i64::MAX, 100).await.unwrap();
    assert_eq!(stored.len(), 5);

    // Same key, another boot: a different record.
    let other_boot = write(store, vec![batch(&m, 8, records[..1].to_vec())]).await;
    assert_eq!(other_boot.batches[0].stored, [1]);

    // Same key with another timestamp: never overwritten, the copy is quarantined.
    let mut changed = records[0].clone();
    changed.t_ms += 1;
    let conflict = write(store, vec![batch(&m, 7, vec![changed])]).await;
    assert_eq!(conflict.batches[0].conflicting, [1]);
    let q = store.quarantine(10).await.unwrap();
    assert!(q[0].entry.reason.contains("already stored"), "{:?}", q[0]);
    assert_eq!(q[0].entry.meter_claimed.as_deref(), Some("dedup-1"));

    let gaps = store.gaps(&m).await.unwrap();
    assert_eq!(
        gaps,
        [
            Gap {
                boot_id: 7,
                from_seq: 3,
                to_seq: 3
            },
            Gap {
                boot_id: 7,
                from_seq: 6,
                to_seq: 8
            }
        ]
    );
    // Boot ids use all 64 bits.
    let big = write(store, vec![batch(&m, u64::MAX, records[..1].to_vec())]).await;
    assert_eq!(big.batches[0].stored, [1]);
    let n = store.neighbours(&m, u64::MAX, 2, 2).await.unwrap();
    assert_eq!(n.before.map(|p| (p.boot_id, p.seq)), Some((u64::MAX, 1)));
}

async fn readings_round_trip_and_latest_per_meter(store: &dyn Store) {
    let a = add_meter(store, "three-phase", "UTC").await;
    let b = add_meter(store, "single", "UTC").await;
    let mut r = reading(1234.5, 900.0);
    r.phases = [Phase::A, Phase::B, Phase::C]
        .into_iter()
        .enumerate()
        .map(|(i, phase)| PhaseReading {
            phase,
            v_rms: 230.0 + i as f64,
            i_rms: 4.0 + i as f64,
            p_w: 300.0,
            q_var: Some(-20.5 * i as f64),
            s_va: 310.0,
            pf: 0.97,
            v_thd_pct: Some(2.5),
            i_thd_pct: if i == 1 { None } else { Some(30.0) },
        })
        .collect();
    r.total.q_var = Some(12.0);
    r.counters = EnergyCounters {
        import_wh: 1234.5,
        export_wh: 7.0,
        q1_varh: 1.0,
        q2_varh: 2.0,
        q3_varh: 3.0,
        q4_varh: 4.0,
    };
    let t = utc("2026-06-01T12:00:00Z");
    write(
        store,
        vec![
            batch(&a, 1, vec![rec(1, t, Body::Reading(r.clone()))]),
            batch(
                &b,
                1,
                vec![
                    rec(1, t, Body::Reading(reading(1.0, 5.0))),
                    rec(2, t + 60_000, Body::Reading(reading(2.0, 6.0))),
                ],
            ),
        ],
    )
    .await;
    let got = store.readings(&a, t, t + 1, 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].reading, r);
    assert_eq!((got[0].boot_id, got[0].seq, got[0].t_ms), (1, 1, t));
    // The range is half-open.
    assert!(
        store
            .readings(&a, t + 1, t + 2, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let latest = store.latest_readings().await.unwrap();
    let summary: Vec<(String, u64)> = latest
        .iter()
        .map(|r| (r.meter.to_string(), r.seq))
        .collect();
    assert_eq!(summary, [("single".into(), 2), ("three-phase".into(), 1)]);
}

async fn events_acks_heartbeats_and_unknown_kinds(store: &dyn Store) {
    let m = add_meter(store, "events-1", "UTC").await;
    let t = utc("2026-06-01T12:00:00Z");
    let event = Event {
        class: EventClass::Tamper,
        code: "cover_open".into(),
        active: Some(true),
        value: None,
        detail: Some("terminal cover".into()),
    };
    let out = write(
        store,
        vec![batch(
            &m,
            3,
            vec![
                rec(1, t, Body::Event(event.clone())),
                rec(
                    2,
                    t + 1,
                    Body::Heartbeat(Heartbeat {
                        uptime_s: 5,
                        outbox_records: 0,
                    }),
                ),
                rec(
                    3,
                    t + 2,
                    Body::Unknown {
                        kind: "flux_capacitor".into(),
                        body_cbor: vec![0xa1, 0x61, 0x78, 0x01],
                    },
                ),
                rec(
                    4,
                    t + 3,
                    Body::Ack(Ack {
                        command_id: Some("999999".into()),
                        status: AckStatus::Succeeded,
                        reason: None,
                    }),
                ),
            ],
        )],
    )
    .await;
    assert_eq!(out.batches[0].stored, [1, 2, 3, 4]);
    let events = store.events(&m, t, t + 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, event);

    // The newest event of a code, however old: a relay change 40 days back, then a newer one
    // in a later boot, then other events after both.
    let relay = |to: &str| Event {
        class: EventClass::Relay,
        code: "relay_state_changed".into(),
        active: None,
        value: None,
        detail: Some(format!(r#"{{"to":"{to}"}}"#)),
    };
    let day = 86_400_000;
    write(
        store,
        vec![
            batch(
                &m,
                3,
                vec![rec(5, t - 40 * day, Body::Event(relay("disconnected")))],
            ),
            batch(
                &m,
                4,
                vec![
                    rec(0, t - 39 * day, Body::Event(relay("connected"))),
                    rec(1, t - 38 * day, Body::Event(event.clone())),
                ],
            ),
        ],
    )
    .await;
    let latest = store.latest_event(&m, "relay_state_changed").await.unwrap();
    let latest = latest.expect("a relay event");
    assert_eq!(
        (latest.boot_id, latest.seq, latest.t_ms),
        (4, 0, t - 39 * day)
    );
    assert_eq!(latest.event, relay("connected"));
    let cover = store.latest_event(&m, "cover_open").await.unwrap().unwrap();
    assert_eq!((cover.boot_id, cover.seq, cover.t_ms), (3, 1, t));
    assert!(
        store
            .latest_event(&m, "no_such_code")
            .await
            .unwrap()
            .is_none()
    );
    let other = add_meter(store, "events-2", "UTC").await;
    assert!(
        store
            .latest_event(&other, "cover_open")
            .await
            .unwrap()
            .is_none()
    );
    let unknown = store.unknown_records(&m).await.unwrap();
    assert_eq!(
        unknown,
        [(
            3,
            3,
            "flux_capacitor".to_string(),
            vec![0xa1, 0x61, 0x78, 0x01]
        )]
    );
    assert!(store.gaps(&m).await.unwrap().is_empty());
}

/// Readings every `step_min` minutes from `start` for `hours`, consumption varying with the
/// hour, some records lost, a reboot (counter reset) in the middle. Returns the expected
/// total import from pairs of consecutive stored readings of one boot.
async fn load_day(store: &dyn Store, m: &MeterId, start: i64, hours: i64, step_min: i64) -> f64 {
    let steps = hours * 60 / step_min;
    let reboot_at = steps / 2;
    let (mut counter, mut boot, mut seq) = (5_000.0, 1u64, 0u64);
    let mut records: Vec<(u64, Record)> = Vec::new();
    let mut expected = 0.0;
    let mut last: Option<(u64, f64)> = None;
    for k in 1..=steps {
        let t = start + k * step_min * 60_000;
        if k == reboot_at {
            // Counters reset with a new boot_id: never counted as consumption.
            boot = 2;
            counter = 3.0;
            seq = 0;
        } else {
            counter += 10.0 + (k % 7) as f64 * 3.5;
        }
        seq += 1;
        // Every 11th record is lost; the next difference carries its energy.
        if k % 11 == 0 {
            continue;
        }
        if let Some((b, c)) = last
            && b == boot
        {
            expected += counter - c;
        }
        last = Some((boot, counter));
        records.push((boot, rec(seq, t, Body::Reading(reading(counter, 100.0)))));
    }
    for boot_id in [1u64, 2] {
        let recs: Vec<Record> = records
            .iter()
            .filter(|(b, _)| *b == boot_id)
            .map(|(_, r)| r.clone())
            .collect();
        // Write in chunks and out of order, as a backfill after an outage would arrive.
        let mut chunks: Vec<Vec<Record>> = recs.chunks(37).map(|c| c.to_vec()).collect();
        chunks.reverse();
        for c in chunks {
            write(store, vec![batch(m, boot_id, c)]).await;
        }
    }
    rollup::refresh_dirty(store).await.unwrap();
    assert!(store.dirty_ranges().await.unwrap().is_empty());
    expected
}

fn total_import(rows: &[Rollup]) -> f64 {
    rows.iter().map(|r| r.energy.import_wh).sum()
}

async fn rollups_across_berlin_spring_dst(store: &dyn Store) {
    let m = add_meter(store, "berlin-spring", "Europe/Berlin").await;
    // 2026-03-29: clocks go from 02:00 CET to 03:00 CEST. The local day starts 23:00 UTC.
    let day_start = utc("2026-03-28T23:00:00Z");
    let expected = load_day(store, &m, day_start - 3_600_000, 26, 5).await;
    let all = |res| store.rollups(&m, res, 0, i64::MAX);
    let q = all(Resolution::Min15).await.unwrap();
    let h = all(Resolution::Hour).await.unwrap();
    let d = all(Resolution::Day).await.unwrap();
    let mo = all(Resolution::Month).await.unwrap();
    for level in [&q, &h, &d, &mo] {
        assert!(
            (total_import(level) - expected).abs() < 1e-6,
            "{} vs {expected}",
            total_import(level)
        );
    }
    let day = d
        .iter()
        .find(|r| r.start_ms == day_start)
        .expect("the DST day");
    assert_eq!(day.end_ms - day.start_ms, 23 * 3_600_000);
    let hours_in_day = h
        .iter()
        .filter(|r| r.start_ms >= day.start_ms && r.start_ms < day.end_ms)
        .count();
    assert_eq!(hours_in_day, 23);
    assert_eq!(mo.len(), 1);
    assert_eq!(mo[0].start_ms, utc("2026-02-28T23:00:00Z"));
}

async fn rollups_across_berlin_autumn_dst(store: &dyn Store) {
    let m = add_meter(store, "berlin-autumn", "Europe/Berlin").await;
    // 2026-10-25: 03:00 CEST becomes 02:00 CET; the day has 25 hours.
    let day_start = utc("2026-10-24T22:00:00Z");
    let expected = load_day(store, &m, day_start, 25, 5).await;
    let h = store
        .rollups(&m, Resolution::Hour, 0, i64::MAX)
        .await
        .unwrap();
    let d = store
        .rollups(&m, Resolution::Day, 0, i64::MAX)
        .await
        .unwrap();
    assert!((total_import(&h) - expected).abs() < 1e-6);
    assert!((total_import(&d) - expected).abs() < 1e-6);
    let day = d
        .iter()
        .find(|r| r.start_ms == day_start)
        .expect("the DST day");
    assert_eq!(day.end_ms - day.start_ms, 25 * 3_600_000);
    // Both 02:00 hours exist, an hour apart in UTC.
    assert!(h.iter().any(|r| r.start_ms == utc("2026-10-25T00:00:00Z")));
    assert!(h.iter().any(|r| r.start_ms == utc("2026-10-25T01:00:00Z")));
    assert_eq!(
        h.iter()
            .filter(|r| r.start_ms >= day.start_ms && r.start_ms < day.end_ms)
            .count(),
        25
    );
}

async fn rollups_in_a_half_hour_zone(store: &dyn Store) {
    let m = add_meter(store, "kolkata-1", "Asia/Kolkata").await;
    let day_start = utc("2026-01-14T18:30:00Z"); // 2026-01-15 00:00 IST
    let expected = load_day(store, &m, day_start, 24, 15).await;
    let h = store
        .rollups(&m, Resolution::Hour, 0, i64::MAX)
        .await
        .unwrap();
    let d = store
        .rollups(&m, Resolution::Day, 0, i64::MAX)
        .await
        .unwrap();
    assert!(
        h.iter().all(|r| r.start_ms % 3_600_000 == 1_800_000),
        "hours start at :30 UTC"
    );
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].start_ms, day_start);
    assert!((d[0].energy.import_wh - expected).abs() < 1e-6);
    // Each 15-minute bucket holds exactly the difference of its one reading.
    let q = store
        .rollups(&m, Resolution::Min15, 0, i64::MAX)
        .await
        .unwrap();
    assert!(q.iter().all(|r| r.readings == 1));
}

async fn retention_keeps_rollups_and_unrolled_readings(store: &dyn Store) {
    let m = add_meter(store, "retention-1", "UTC").await;
    let t0 = utc("2025-01-10T00:00:00Z");
    let records: Vec<Record> = (1..=9)
        .map(|s| {
            rec(
                s,
                t0 + s as i64 * 300_000,
                Body::Reading(reading(s as f64 * 10.0, 1.0)),
            )
        })
        .collect();
    write(store, vec![batch(&m, 1, records)]).await;
    let cutoff = utc("2026-01-01T00:00:00Z");
    // Rollups not computed yet: nothing of this meter may go.
    let report = store.apply_retention(cutoff).await.unwrap();
    assert_eq!(report.readings_deleted, 0, "{report:?}");
    assert_eq!(report.readings_kept_without_rollup, 9);
    rollup::refresh_dirty(store).await.unwrap();
    let report = store.apply_retention(cutoff).await.unwrap();
    // The newest reading of the boot stays as the baseline for later differences.
    assert_eq!(report.readings_deleted, 8, "{report:?}");
    assert_eq!(report.readings_kept_without_rollup, 1);
    let day = store
        .rollups(&m, Resolution::Day, 0, i64::MAX)
        .await
        .unwrap();
    assert!((total_import(&day) - 80.0).abs() < 1e-9, "rollups are kept");
    let q = store
        .rollups(&m, Resolution::Min15, 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(q.len(), 3);
}

async fn commands_follow_their_life_cycle_with_audit(store: &dyn Store) {
    let m = add_meter(store, "relay-1", "UTC").await;
    let new = NewCommand {
        meter: m.clone(),
        action: Action::RelayDisconnect,
        issued_by: "alice".into(),
        reason: "arrears".into(),
        issued_ms: 1_000,
        expires_ms: 100_000,
    };
    let c = store.create_command(&new).await.unwrap();
    assert_eq!(c.status, CommandStatus::Queued);
    assert_eq!(c.to_wire().id, c.id.to_string());
    store
        .set_command_status(c.id, CommandStatus::Sent, "system", "published", 2_000)
        .await
        .unwrap();
    store
        .set_command_status(c.id, CommandStatus::Delivered, "system", "puback", 2_100)
        .await
        .unwrap();
    let err = store
        .set_command_status(c.id, CommandStatus::Sent, "bob", "again", 2_200)
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), crate::ErrorKind::InvalidTransition { .. }),
        "{err}"
    );
    // The meter's ack record completes it.
    write(
        store,
        vec![batch(
            &m,
            1,
            vec![rec(
                1,
                3_000,
                Body::Ack(Ack {
                    command_id: Some(c.id.to_string()),
                    status: AckStatus::Failed,
                    reason: Some("relay stuck".into()),
                }),
            )],
        )],
    )
    .await;
    let failed = store
        .commands(&m, Some(CommandStatus::Failed))
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].command, new);
    assert!(failed[0].detail.as_deref().unwrap().contains("relay stuck"));

    let later = store
        .create_command(&NewCommand {
            action: Action::LimiterSet {
                threshold_w: 3000.0,
                duration_s: 30.0,
            },
            expires_ms: 5_000,
            ..new.clone()
        })
        .await
        .unwrap();
    assert_eq!(store.expire_commands(4_000).await.unwrap(), 0);
    assert_eq!(store.expire_commands(6_000).await.unwrap(), 1);
    assert_eq!(
        store.commands(&m, None).await.unwrap()[0].status,
        CommandStatus::Expired
    );
    let audit = store.command_audit(c.id).await.unwrap();
    let steps: Vec<(Option<CommandStatus>, CommandStatus, &str)> = audit
        .iter()
        .map(|a| (a.from, a.to, a.actor.as_str()))
        .collect();
    assert_eq!(
        steps,
        [
            (None, CommandStatus::Queued, "alice"),
            (Some(CommandStatus::Queued), CommandStatus::Sent, "system"),
            (
                Some(CommandStatus::Sent),
                CommandStatus::Delivered,
                "system"
            ),
            (
                Some(CommandStatus::Delivered),
                CommandStatus::Failed,
                "meter:relay-1"
            ),
        ]
    );
    assert_eq!(audit[0].note, "arrears");
    let expired = store.command_audit(later.id).await.unwrap();
    assert_eq!(expired.last().unwrap().to, CommandStatus::Expired);
}

async fn quarantine_lists_newest_first(store: &dyn Store) {
    let entry = |reason: &str| NewQuarantine {
        received_ms: 5,
        source: "wattline/v1/m/x/up".into(),
        meter_claimed: None,
        reason: reason.into(),
        raw: vec![0, 1, 2],
        raw_len: 1_000_000,
    };
    store
        .write(&WriteSet {
            batches: vec![],
            quarantine: vec![entry("first"), entry("second")],
        })
        .await
        .unwrap();
    let q = store.quarantine(10).await.unwrap();
    assert_eq!(q.len(), 2);
    assert_eq!(q[0].entry, entry("second"));
    assert_eq!(store.quarantine(1).await.unwrap().len(), 1);
}

async fn automatic_resolution(store: &dyn Store) {
    let m = add_meter(store, "auto-1", "UTC").await;
    let meter = store.meter(&m).await.unwrap().unwrap();
    let t0 = utc("2026-05-01T00:00:00Z");
    let records: Vec<Record> = (1..=96)
        .map(|s| {
            rec(
                s,
                t0 + s as i64 * 900_000,
                Body::Reading(reading(s as f64, 1.0)),
            )
        })
        .collect();
    write(store, vec![batch(&m, 1, records)]).await;
    rollup::refresh_dirty(store).await.unwrap();
    let day = 86_400_000;
    match readings_auto(store, &meter, t0, t0 + day).await.unwrap() {
        Series::Raw(rows) => assert_eq!(rows.len(), 95),
        other => panic!("a day at 60 s is raw, got {other:?}"),
    }
    match readings_auto(store, &meter, t0, t0 + 30 * day)
        .await
        .unwrap()
    {
        Series::Rollups(Resolution::Min15, rows) => assert_eq!(rows.len(), 96),
        other => panic!("a month is 15-minute, got {other:?}"),
    }
    match readings_auto(store, &meter, t0 - 365 * day, t0 + 365 * day)
        .await
        .unwrap()
    {
        Series::Rollups(Resolution::Day, rows) => assert_eq!(rows.len(), 1),
        other => panic!("two years are daily, got {other:?}"),
    }
}

/// `customers`, `command` and `unfinished_commands` (API listings and the dispatcher's work list).
async fn customers_listed_and_commands_looked_up(store: &dyn Store) {
    assert!(store.customers().await.unwrap().is_empty());
    for (cid, name) in [("c-2", "Second"), ("c-1", "First")] {
        store
            .upsert_customer(&Customer {
                id: cid.into(),
                name: name.into(),
                time_zone: "UTC".into(),
            })
            .await
            .unwrap();
    }
    let ids: Vec<String> = store
        .customers()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["c-1", "c-2"]);

    let m = add_meter(store, "cmd-1", "UTC").await;
    let new = |reason: &str| NewCommand {
        meter: m.clone(),
        action: Action::RelayConnect,
        issued_by: "op".into(),
        reason: reason.into(),
        issued_ms: 1_000,
        expires_ms: 100_000,
    };
    let a = store.create_command(&new("a")).await.unwrap();
    let b = store.create_command(&new("b")).await.unwrap();
    let c = store.create_command(&new("c")).await.unwrap();
    assert_eq!(store.command(b.id).await.unwrap(), Some(b.clone()));
    assert_eq!(store.command(c.id + 1000).await.unwrap(), None);
    store
        .set_command_status(a.id, CommandStatus::Sent, "system", "published", 2_000)
        .await
        .unwrap();
    store
        .set_command_status(b.id, CommandStatus::Succeeded, "meter:cmd-1", "done", 2_000)
        .await
        .unwrap();
    let open: Vec<(i64, CommandStatus)> = store
        .unfinished_commands(10)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.id, c.status))
        .collect();
    assert_eq!(
        open,
        [(a.id, CommandStatus::Sent), (c.id, CommandStatus::Queued)]
    );
    assert_eq!(store.unfinished_commands(1).await.unwrap().len(), 1);
}

/// Ingest's rollup task refreshes rollups piece by piece as readings arrive (all levels of all
/// dirty meters in one transaction): the result must equal one refresh over everything, and a
/// dirty range that grew after it was read must stay dirty.
async fn piecewise_rollup_refreshes_equal_one_and_grown_ranges_stay_dirty(store: &dyn Store) {
    let piecewise = add_meter(store, "piecewise", "Asia/Kolkata").await;
    let at_once = add_meter(store, "at-once", "Asia/Kolkata").await;
    // Two days of 10-minute readings across local midnight, in chronological chunks.
    let start = utc("2026-03-09T17:00:00Z");
    let records: Vec<Record> = (0..288u64)
        .map(|k| {
            let t = start + k as i64 * 600_000;
            let import = 1_000.0 + (k * k % 97) as f64 + k as f64 * 3.0;
            rec(k, t, Body::Reading(reading(import, 100.0 + k as f64)))
        })
        .collect();
    for chunk in records.chunks(13) {
        write(store, vec![batch(&piecewise, 1, chunk.to_vec())]).await;
        rollup::refresh_dirty(store).await.unwrap();
    }
    write(store, vec![batch(&at_once, 1, records.clone())]).await;
    rollup::refresh_dirty(store).await.unwrap();
    assert!(store.dirty_ranges().await.unwrap().is_empty());
    for res in Resolution::ALL {
        let a = store.rollups(&piecewise, res, 0, i64::MAX).await.unwrap();
        let b = store.rollups(&at_once, res, 0, i64::MAX).await.unwrap();
        assert!(!a.is_empty(), "{res:?}");
        assert_eq!(a.len(), b.len(), "{res:?}");
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                (x.start_ms, x.end_ms, x.readings),
                (y.start_ms, y.end_ms, y.readings)
            );
            assert!(
                (x.energy.import_wh - y.energy.import_wh).abs() < 1e-9,
                "{res:?} {x:?} {y:?}"
            );
            assert_eq!(x.max_p_w, y.max_p_w);
        }
    }

    // A range read, then grown by a new write before the refresh commits, is not cleared.
    let t = start + 288 * 600_000;
    write(
        store,
        vec![batch(
            &piecewise,
            1,
            vec![rec(288, t, Body::Reading(reading(9_000.0, 1.0)))],
        )],
    )
    .await;
    let read = store.dirty_ranges().await.unwrap();
    assert_eq!(read.len(), 1);
    let levels = rollup::plan(
        store,
        &piecewise,
        chrono_tz::Asia::Kolkata,
        read[0].from_ms,
        read[0].to_ms,
    )
    .await
    .unwrap();
    write(
        store,
        vec![batch(
            &piecewise,
            1,
            vec![rec(289, t + 600_000, Body::Reading(reading(9_010.0, 1.0)))],
        )],
    )
    .await;
    store
        .apply_rollups(&[RollupUpdate {
            meter: piecewise.clone(),
            levels,
            clear: Some(read[0].clone()),
        }])
        .await
        .unwrap();
    let still = store.dirty_ranges().await.unwrap();
    assert_eq!(still.len(), 1, "the grown range stays dirty");
    assert_eq!(still[0].to_ms, t + 600_000);
    rollup::refresh_dirty(store).await.unwrap();
    let q = store
        .rollups(&piecewise, Resolution::Min15, t - 1, i64::MAX)
        .await
        .unwrap();
    // The bucket after `t` holds only the last difference.
    assert_eq!(total_import(&q), 10.0);
}

/// The rollup refresh runs beside the ingest writer: a write that fills a gap *inside* a dirty
/// range (its bounds do not move) between the refresh's read and its commit must leave the range
/// dirty, or the filled reading would never reach the rollups.
async fn a_gap_filled_inside_a_range_being_refreshed_keeps_it_dirty(store: &dyn Store) {
    let m = add_meter(store, "gap-fill", "UTC").await;
    let start = utc("2026-06-01T10:00:00Z");
    let at = |k: u64| start + k as i64 * 60_000;
    let r = |k: u64, import: f64| rec(k, at(k), Body::Reading(reading(import, 100.0)));
    // Seq 1 and 3 (seq 2 missing), in one quarter hour.
    write(store, vec![batch(&m, 1, vec![r(1, 100.0), r(3, 130.0)])]).await;
    let read = store.dirty_ranges().await.unwrap();
    assert_eq!(read.len(), 1);
    let levels = rollup::plan(store, &m, chrono_tz::UTC, read[0].from_ms, read[0].to_ms)
        .await
        .unwrap();
    // Seq 2 arrives late: the range keeps its bounds but its generation moves on.
    write(store, vec![batch(&m, 1, vec![r(2, 110.0)])]).await;
    let now = store.dirty_ranges().await.unwrap();
    assert_eq!(
        (now[0].from_ms, now[0].to_ms),
        (read[0].from_ms, read[0].to_ms),
        "the late reading lies inside the range"
    );
    store
        .apply_rollups(&[RollupUpdate {
            meter: m.clone(),
            levels,
            clear: Some(read[0].clone()),
        }])
        .await
        .unwrap();
    assert_eq!(
        store.dirty_ranges().await.unwrap().len(),
        1,
        "a range written into after it was read stays dirty"
    );
    rollup::refresh_dirty(store).await.unwrap();
    assert!(store.dirty_ranges().await.unwrap().is_empty());
    let q = store
        .rollups(&m, Resolution::Min15, 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(q.len(), 1);
    // All three readings end in the bucket (the first refresh saw only two of them).
    assert_eq!(q[0].readings, 3);
    assert_eq!(total_import(&q), 30.0);
}

/// Ingest looks up the neighbours of a whole group at once: each answer must be what
/// `neighbours` gives for that run alone, in order.
async fn neighbours_of_runs_answer_each_run_as_neighbours_does(store: &dyn Store) {
    let m = add_meter(store, "runs", "UTC").await;
    let start = utc("2026-06-01T10:00:00Z");
    let r = |k: u64| {
        rec(
            k,
            start + k as i64 * 60_000,
            Body::Reading(reading(100.0 + k as f64, 10.0)),
        )
    };
    let seqs = [1u64, 2, 3, 4, 5, 10, 11, 12];
    write(
        store,
        vec![batch(&m, 7, seqs.iter().map(|&k| r(k)).collect())],
    )
    .await;
    let run = |meter: &MeterId, boot_id: u64, first_seq: u64, last_seq: u64| SeqRun {
        meter: meter.clone(),
        boot_id,
        first_seq,
        last_seq,
    };
    let runs = vec![
        run(&m, 7, 6, 9),
        run(&m, 7, 1, 1),
        run(&m, 7, 13, 20),
        run(&m, 8, 6, 9),
        run(&id("no-such-meter"), 7, 6, 9),
        run(&m, 7, 6, 9),
    ];
    let together = store.neighbours_of_runs(&runs).await.unwrap();
    assert_eq!(together.len(), runs.len());
    for (q, n) in runs.iter().zip(&together) {
        let alone = store
            .neighbours(&q.meter, q.boot_id, q.first_seq, q.last_seq)
            .await
            .unwrap();
        assert_eq!(*n, alone, "{q:?}");
    }
    let seq = |p: Option<CounterPoint>| p.map(|p| p.seq);
    assert_eq!(
        (seq(together[0].before), seq(together[0].after)),
        (Some(5), Some(10))
    );
    assert_eq!(
        (seq(together[1].before), seq(together[1].after)),
        (None, Some(2))
    );
    assert_eq!(
        (seq(together[2].before), seq(together[2].after)),
        (Some(12), None)
    );
    assert_eq!(together[3], Neighbours::default());
    assert_eq!(together[4], Neighbours::default());
    assert!(store.neighbours_of_runs(&[]).await.unwrap().is_empty());
}
