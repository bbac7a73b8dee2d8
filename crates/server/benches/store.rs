//! Store micro-benchmarks: batched reading ingest into SQLite and PostgreSQL (readings/s),
//! the whole ingest pipeline (open, verify, validate, write, acknowledge) into SQLite, and one
//! year of 15-minute rollups of one meter read back.
//!
//! `CARGO_TARGET_DIR=... cargo bench -p server --bench store`. PostgreSQL benches run when
//! 127.0.0.1:5432 (database `test`, trust) answers; they use a throw-away schema.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use schema::{
    Batch, Body, EnergyCounters, MeterId, MeterKey, Phase, PhaseReading, Reading, Record,
    TotalReading, seal_batch,
};
use server::{
    BatchWrite, Ingest, IngestConfig, KeyRing, Meter, PgConfig, PgStore, Resolution, Rollup,
    SqliteStore, Store, WriteSet,
};

const BATCH: u64 = 1_000;

fn reading(import_wh: f64) -> Reading {
    let phase = |phase| PhaseReading {
        phase,
        v_rms: 230.0,
        i_rms: 5.0,
        p_w: 1_100.0,
        q_var: Some(120.0),
        s_va: 1_150.0,
        pf: 0.96,
        v_thd_pct: Some(2.0),
        i_thd_pct: Some(12.0),
    };
    Reading {
        interval_s: 1.0,
        freq_hz: 50.0,
        phases: vec![phase(Phase::A), phase(Phase::B), phase(Phase::C)],
        total: TotalReading {
            p_w: 3_300.0,
            q_var: Some(360.0),
            s_va: 3_450.0,
            pf: 0.96,
        },
        counters: EnergyCounters {
            import_wh,
            q1_varh: import_wh / 10.0,
            ..Default::default()
        },
    }
}

fn records(first_seq: u64, n: u64, t0: i64) -> Vec<Record> {
    (first_seq..first_seq + n)
        .map(|s| Record {
            seq: s,
            t_ms: t0 + s as i64 * 1_000,
            body: Body::Reading(reading(s as f64)),
        })
        .collect()
}

fn t0() -> i64 {
    // Readings one second apart from two days ago: inside every sanity bound.
    (server::now_ms() / 86_400_000 - 2) * 86_400_000
}

fn bench_store_ingest(
    c: &mut Criterion,
    name: &str,
    store: Arc<dyn Store>,
    rt: &tokio::runtime::Runtime,
) {
    let meter = MeterId::parse("bench-1").unwrap();
    rt.block_on(store.upsert_meter(&Meter::new(meter.clone(), "k")))
        .unwrap();
    let next = AtomicU64::new(1);
    let t0 = t0();
    let mut group = c.benchmark_group("store_ingest");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(20);
    group.bench_function(format!("{name}/{BATCH}_readings_per_tx"), |b| {
        b.iter(|| {
            let first = next.fetch_add(BATCH, Ordering::Relaxed);
            let set = WriteSet {
                batches: vec![BatchWrite {
                    meter: meter.clone(),
                    boot_id: 1,
                    records: records(first, BATCH, t0),
                    received_ms: server::now_ms(),
                    clock_drift_ms: None,
                    source: "bench".into(),
                }],
                quarantine: vec![],
            };
            rt.block_on(store.write(&set)).unwrap();
        })
    });
    group.finish();
}

fn bench_pipeline(c: &mut Criterion, store: Arc<dyn Store>, rt: &tokio::runtime::Runtime) {
    // 100 meters, envelopes of 100 one-second readings, submitted 100 at a time.
    let meters: Vec<(MeterId, MeterKey)> = (0..100)
        .map(|i| {
            (
                MeterId::parse(&format!("pipe-{i}")).unwrap(),
                MeterKey::generate(),
            )
        })
        .collect();
    let keys = Arc::new(KeyRing::new());
    for (m, k) in &meters {
        rt.block_on(store.upsert_meter(&Meter::new(m.clone(), "k")))
            .unwrap();
        keys.insert(m.clone(), k.clone());
    }
    let config = IngestConfig {
        rollups: false,
        ..Default::default()
    };
    let ingest = rt.block_on(async { Ingest::start(store.clone(), keys.clone(), config) });
    let next = AtomicU64::new(1);
    let t0 = t0();
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(100 * 100));
    group.sample_size(10);
    group.bench_function("sqlite/100_envelopes_of_100_readings", |b| {
        b.iter_batched(
            || {
                let first = next.fetch_add(100, Ordering::Relaxed);
                meters
                    .iter()
                    .map(|(m, k)| {
                        let batch = Batch {
                            meter: m.clone(),
                            boot_id: 1,
                            records: records(first, 100, t0),
                        };
                        (schema::topic::up(m), seal_batch(k, &batch).unwrap())
                    })
                    .collect::<Vec<_>>()
            },
            |envelopes| {
                rt.block_on(async {
                    let mut waits = Vec::new();
                    for (topic, payload) in envelopes {
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        ingest.submit(&topic, payload, Box::new(tx)).await.unwrap();
                        waits.push(rx);
                    }
                    for w in waits {
                        w.await.unwrap();
                    }
                })
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();
    rt.block_on(ingest.shutdown());
}

fn bench_year_of_rollups(
    c: &mut Criterion,
    name: &str,
    store: Arc<dyn Store>,
    rt: &tokio::runtime::Runtime,
) {
    let meter = MeterId::parse("year-1").unwrap();
    rt.block_on(store.upsert_meter(&Meter::new(meter.clone(), "k")))
        .unwrap();
    let start = 1_735_689_600_000; // 2025-01-01T00:00:00Z
    let rows: Vec<Rollup> = (0..365 * 96)
        .map(|i| Rollup {
            resolution: Resolution::Min15,
            start_ms: start + i * 900_000,
            end_ms: start + (i + 1) * 900_000,
            energy: EnergyCounters {
                import_wh: 100.0,
                ..Default::default()
            },
            readings: 15,
            max_p_w: Some(500.0),
        })
        .collect();
    let end = start + 365 * 86_400_000;
    let year = server::RollupUpdate {
        meter: meter.clone(),
        levels: vec![server::RollupLevel {
            resolution: Resolution::Min15,
            from_ms: start,
            to_ms: end,
            rows,
        }],
        clear: None,
    };
    rt.block_on(store.apply_rollups(&[year])).unwrap();
    c.bench_function(&format!("rollups/{name}/one_year_of_15_min"), |b| {
        b.iter(|| {
            let got = rt
                .block_on(store.rollups(&meter, Resolution::Min15, start, end))
                .unwrap();
            assert_eq!(got.len(), 35_040);
        })
    });
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("wattline-bench-{name}-{}", std::process::id()))
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = temp_dir("sqlite");
    let sqlite: Arc<dyn Store> = Arc::new(rt.block_on(SqliteStore::open(&dir)).unwrap());
    bench_store_ingest(c, "sqlite", sqlite.clone(), &rt);
    bench_year_of_rollups(c, "sqlite", sqlite.clone(), &rt);
    bench_pipeline(c, sqlite, &rt);
    let _ = std::fs::remove_dir_all(&dir);

    let schema = format!("wl_bench_{}", std::process::id());
    let config = PgConfig {
        dbname: "test".into(),
        schema: Some(schema.clone()),
        ..Default::default()
    };
    match rt.block_on(PgStore::connect(&config)) {
        Ok(pg) => {
            let pg: Arc<dyn Store> = Arc::new(pg);
            bench_store_ingest(c, "postgres", pg.clone(), &rt);
            bench_year_of_rollups(c, "postgres", pg, &rt);
            rt.block_on(async {
                if let Ok((client, conn)) = tokio_postgres::connect(
                    "host=127.0.0.1 port=5432 user=postgres dbname=test",
                    tokio_postgres::NoTls,
                )
                .await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .await;
                }
            });
        }
        Err(e) => eprintln!("postgres benches skipped: {e}"),
    }
}

criterion_group!(store_benches, benches);
criterion_main!(store_benches);
