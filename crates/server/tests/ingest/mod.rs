//! Ingest end to end against a real store: every kind of bad delivery ends in the right table
//! with a reason a person can read, and every delivery is acknowledged only after its commit.

use schema::{Body, Heartbeat, Record};
use server::{Resolution, Store, rollup};

use crate::common::*;

async fn quarantine_reasons(store: &dyn Store) -> Vec<String> {
    store
        .quarantine(100)
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.entry.reason)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_delivery_is_stored_once_and_counted() {
    let dir = TempDir::new("ingest-dup");
    let (store, keys) = sqlite_with(&dir, &["house-1"]).await;
    let ingest = start(&store, &keys);
    let m = id("house-1");
    let payload = seal(&readings(&m, 1, 1..=3));
    deliver(&ingest, &up(&m), payload.clone()).await;
    deliver(&ingest, &up(&m), payload).await;
    assert_eq!(ingest.stats().stored(), 3);
    assert_eq!(ingest.stats().duplicate(), 3);
    assert_eq!(ingest.stats().quarantined(), 0);
    assert_eq!(store.readings(&m, 0, i64::MAX, 100).await.unwrap().len(), 3);
    assert!(store.quarantine(10).await.unwrap().is_empty());
    ingest.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_older_than_the_window_and_after_a_restart_is_a_duplicate() {
    let dir = TempDir::new("ingest-replay");
    let (store, keys) = sqlite_with(&dir, &["house-2"]).await;
    let m = id("house-2");
    let first = seal(&readings(&m, 1, 1..=2));
    let ingest = start(&store, &keys);
    deliver(&ingest, &up(&m), first.clone()).await;
    // Push the window far past seq 2 (4096 seqs), then replay the first envelope.
    for k in 0..10u64 {
        let lo = 3 + k * 500;
        deliver(&ingest, &up(&m), seal(&readings(&m, 1, lo..=lo + 499))).await;
    }
    deliver(&ingest, &up(&m), first.clone()).await;
    assert_eq!(ingest.stats().duplicate(), 2);
    ingest.shutdown().await;
    // A fresh process has an empty window: the store is the authority.
    let ingest = start(&store, &keys);
    deliver(&ingest, &up(&m), first).await;
    assert_eq!(ingest.stats().duplicate(), 2);
    assert_eq!(ingest.stats().stored(), 0);
    assert_eq!(
        store.readings(&m, 0, i64::MAX, 10_000).await.unwrap().len(),
        5002
    );
    ingest.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_oversized_wrong_meter_and_unknown_meter_go_to_quarantine() {
    let dir = TempDir::new("ingest-bad");
    let (store, keys) = sqlite_with(&dir, &["house-3", "house-4"]).await;
    let ingest = start(&store, &keys);
    let (a, b) = (id("house-3"), id("house-4"));

    let mut flipped = seal(&readings(&a, 1, 1..=1));
    let n = flipped.len();
    flipped[n - 3] ^= 0x40; // inside the ciphertext/tag
    deliver(&ingest, &up(&a), flipped).await;

    deliver(&ingest, &up(&a), b"\x82\x41garbage".to_vec()).await;

    let oversized = vec![0x5a; schema::MAX_ENVELOPE_BYTES + 10];
    deliver(&ingest, &up(&a), oversized).await;

    // house-3's envelope published on house-4's topic.
    deliver(&ingest, &up(&b), seal(&readings(&a, 1, 5..=5))).await;

    let stranger = id("stranger-9");
    deliver(
        &ingest,
        &up(&stranger),
        seal(&readings(&stranger, 1, 1..=1)),
    )
    .await;

    deliver(&ingest, "some/other/topic", b"x".to_vec()).await;

    let reasons = quarantine_reasons(store.as_ref()).await;
    let expect = [
        "topic \"some/other/topic\" is not a wattline uplink topic",
        "unknown meter stranger-9: not enrolled",
        "envelope names meter house-3 but was published on meter house-4's topic",
        "exceeds the limit of 262144 bytes; first 65536 bytes kept",
        "cannot parse the envelope",
        "authentication failed",
    ];
    assert_eq!(reasons.len(), expect.len(), "{reasons:#?}");
    for (got, want) in reasons.iter().zip(expect) {
        assert!(got.contains(want), "{got:?} should say {want:?}");
    }
    let q = store.quarantine(100).await.unwrap();
    let big = q
        .iter()
        .find(|e| e.entry.reason.contains("exceeds"))
        .unwrap();
    assert_eq!(big.entry.raw.len(), 65_536);
    assert_eq!(big.entry.raw_len, schema::MAX_ENVELOPE_BYTES as u64 + 10);
    assert_eq!(ingest.stats().quarantined(), 6);
    assert_eq!(
        ingest.stats().deliveries(),
        6,
        "refused deliveries are acknowledged too"
    );
    assert!(
        store
            .readings(&a, 0, i64::MAX, 10)
            .await
            .unwrap()
            .is_empty()
    );
    ingest.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_going_backwards_without_a_new_boot_are_quarantined() {
    let dir = TempDir::new("ingest-backwards");
    let (store, keys) = sqlite_with(&dir, &["house-5"]).await;
    let ingest = start(&store, &keys);
    let m = id("house-5");
    let mut batch = readings(&m, 1, 1..=4);
    // seq 3 drops below seq 2 inside the batch.
    if let Body::Reading(r) = &mut batch.records[2].body {
        r.counters.import_wh = 5.0;
    }
    deliver(&ingest, &up(&m), seal(&batch)).await;
    // A later envelope whose counter is below the stored seq 4.
    let mut late = readings(&m, 1, 5..=5);
    if let Body::Reading(r) = &mut late.records[0].body {
        r.counters.import_wh = 1_000.0;
    }
    deliver(&ingest, &up(&m), seal(&late)).await;
    // A new boot with reset counters is fine.
    let mut reboot = readings(&m, 2, 1..=2);
    for r in &mut reboot.records {
        if let Body::Reading(x) = &mut r.body {
            x.counters.import_wh -= 1_000.0;
        }
    }
    deliver(&ingest, &up(&m), seal(&reboot)).await;

    let mut stored: Vec<(u64, u64)> = store
        .readings(&m, 0, i64::MAX, 100)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.boot_id, r.seq))
        .collect();
    stored.sort_unstable();
    assert_eq!(stored, [(1, 1), (1, 2), (1, 4), (2, 1), (2, 2)]);
    let reasons = quarantine_reasons(store.as_ref()).await;
    assert_eq!(reasons.len(), 2, "{reasons:#?}");
    assert!(reasons[1].contains(
        "reading record boot 1 seq 3: counter import_wh went backwards from 1020 at seq 2 to 5 at seq 3 within boot 1 without a new boot_id"
    ), "{}", reasons[1]);
    assert!(
        reasons[0].contains("import_wh went backwards from 1040 at seq 4 to 1000 at seq 5"),
        "{}",
        reasons[0]
    );
    // The refused seqs stay visible as gaps.
    let gaps = store.gaps(&m).await.unwrap();
    assert_eq!(gaps.len(), 1);
    assert_eq!(
        (gaps[0].boot_id, gaps[0].from_seq, gaps[0].to_seq),
        (1, 3, 3)
    );

    // Rollups: boot 1 counts 1020→1040 (seq 2→4), boot 2 counts 20→30; the reset is not energy.
    rollup::refresh_dirty(store.as_ref()).await.unwrap();
    let q = store
        .rollups(&m, Resolution::Min15, 0, i64::MAX)
        .await
        .unwrap();
    let total: f64 = q.iter().map(|r| r.energy.import_wh).sum();
    assert!((total - (10.0 + 20.0 + 10.0)).abs() < 1e-9, "{total}");
    ingest.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamp_years_away_is_quarantined_and_the_rest_stored() {
    let dir = TempDir::new("ingest-time");
    let (store, keys) = sqlite_with(&dir, &["house-6"]).await;
    let ingest = start(&store, &keys);
    let m = id("house-6");
    let mut batch = readings(&m, 1, 1..=3);
    batch.records[1].t_ms = server::now_ms() + 6 * 365 * 86_400_000;
    batch.records[2].t_ms = batch.records[1].t_ms + 60_000;
    deliver(&ingest, &up(&m), seal(&batch)).await;
    let reasons = quarantine_reasons(store.as_ref()).await;
    assert_eq!(reasons.len(), 2);
    assert!(
        reasons[0].contains("years in the future of the server clock"),
        "{}",
        reasons[0]
    );
    assert_eq!(store.readings(&m, 0, i64::MAX, 10).await.unwrap().len(), 1);
    let mut old = readings(&m, 1, 10..=10);
    old.records[0].t_ms = 0;
    deliver(&ingest, &up(&m), seal(&old)).await;
    let reasons = quarantine_reasons(store.as_ref()).await;
    assert!(
        reasons[0].contains("older than the raw retention period"),
        "{}",
        reasons[0]
    );
    ingest.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_envelopes_fill_the_gap_and_rollups_match_raw() {
    let dir = TempDir::new("ingest-order");
    let (store, keys) = sqlite_with(&dir, &["house-7"]).await;
    let ingest = start(&store, &keys);
    let m = id("house-7");
    for range in [21..=30, 1..=10, 11..=20] {
        deliver(&ingest, &up(&m), seal(&readings(&m, 1, range))).await;
    }
    assert_eq!(ingest.stats().stored(), 30);
    assert!(store.gaps(&m).await.unwrap().is_empty());
    rollup::refresh_dirty(store.as_ref()).await.unwrap();
    for res in Resolution::ALL {
        let total: f64 = store
            .rollups(&m, res, 0, i64::MAX)
            .await
            .unwrap()
            .iter()
            .map(|r| r.energy.import_wh)
            .sum();
        assert!((total - 290.0).abs() < 1e-9, "{res:?}: {total}");
    }
    ingest.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_envelopes_are_stored_as_the_owner_and_unknown_kinds_kept_raw() {
    let dir = TempDir::new("ingest-relay");
    let (store, keys) = sqlite_with(&dir, &["house-8", "neighbour-1"]).await;
    let ingest = start(&store, &keys);
    let mut live = ingest.subscribe();
    let (owner, relayer) = (id("house-8"), id("neighbour-1"));
    let mut batch = readings(&owner, 4, 1..=2);
    batch.records.push(Record {
        seq: 3,
        t_ms: batch.records[1].t_ms + 1,
        body: Body::Unknown {
            kind: "harmonics_v2".into(),
            body_cbor: vec![0xa0],
        },
    });
    batch.records.push(Record {
        seq: 4,
        t_ms: batch.records[1].t_ms + 2,
        body: Body::Heartbeat(Heartbeat {
            uptime_s: 9,
            outbox_records: 0,
        }),
    });
    let relay_topic = schema::topic::relay(&relayer);
    deliver(&ingest, &relay_topic, seal(&batch)).await;
    // Committed before the acknowledgement: visible now.
    assert_eq!(
        store.readings(&owner, 0, i64::MAX, 10).await.unwrap().len(),
        2
    );
    assert!(
        store
            .readings(&relayer, 0, i64::MAX, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let unknown = store.unknown_records(&owner).await.unwrap();
    assert_eq!(unknown, [(4, 3, "harmonics_v2".to_string(), vec![0xa0])]);
    assert_eq!(ingest.stats().unknown_kinds(), 1);
    assert_eq!(ingest.stats().relayed(), 1);
    let published = live.recv().await.unwrap();
    assert_eq!(published.meter, owner);
    assert_eq!(published.records.len(), 4);

    // A relay from a meter that is not enrolled is refused.
    let stranger_topic = schema::topic::relay(&id("stranger-1"));
    deliver(&ingest, &stranger_topic, seal(&readings(&owner, 4, 5..=5))).await;
    let reasons = quarantine_reasons(store.as_ref()).await;
    assert!(reasons[0].contains("relaying meter stranger-1 is not an enrolled, active meter"));
    ingest.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deregistered_meter_and_a_missing_key_are_refused() {
    let dir = TempDir::new("ingest-dereg");
    let (store, keys) = sqlite_with(&dir, &["house-9", "house-10"]).await;
    let m = id("house-9");
    let mut meter = store.meter(&m).await.unwrap().unwrap();
    meter.status = server::MeterStatus::Deregistered;
    store.upsert_meter(&meter).await.unwrap();
    keys.remove(&id("house-10"));
    let ingest = start(&store, &keys);
    deliver(&ingest, &up(&m), seal(&readings(&m, 1, 1..=1))).await;
    let other = id("house-10");
    deliver(&ingest, &up(&other), seal(&readings(&other, 1, 1..=1))).await;
    let reasons = quarantine_reasons(store.as_ref()).await;
    assert!(
        reasons[1].contains("meter house-9 is deregistered"),
        "{reasons:?}"
    );
    assert!(
        reasons[0].contains("no key loaded for meter house-10"),
        "{reasons:?}"
    );
    ingest.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_meters_in_one_group_are_all_acknowledged_after_one_commit() {
    let dir = TempDir::new("ingest-group");
    let names: Vec<String> = (0..50).map(|i| format!("m-{i}")).collect();
    let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    let (store, keys) = sqlite_with(&dir, &refs).await;
    let ingest = start(&store, &keys);
    let mut waits = Vec::new();
    for n in &names {
        let m = id(n);
        let (tx, rx) = tokio::sync::oneshot::channel();
        ingest
            .submit(&up(&m), seal(&readings(&m, 1, 1..=5)), Box::new(tx))
            .await
            .unwrap();
        waits.push(rx);
    }
    for w in waits {
        w.await.expect("acknowledged");
    }
    assert_eq!(ingest.stats().stored(), 250);
    assert_eq!(store.latest_readings().await.unwrap().len(), 50);
    ingest.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_pipeline_on_postgres() {
    let Some((store, keys, _guard)) = postgres_with(&["pg-house-1"]).await else {
        return;
    };
    let ingest = start(&store, &keys);
    let m = id("pg-house-1");
    let payload = seal(&readings(&m, 1, 1..=3));
    deliver(&ingest, &up(&m), payload.clone()).await;
    deliver(&ingest, &up(&m), payload).await;
    let mut back = readings(&m, 1, 4..=4);
    if let Body::Reading(r) = &mut back.records[0].body {
        r.counters.import_wh = 1.0;
    }
    deliver(&ingest, &up(&m), seal(&back)).await;
    assert_eq!(ingest.stats().stored(), 3);
    assert_eq!(ingest.stats().duplicate(), 3);
    assert_eq!(ingest.stats().quarantined(), 1);
    assert_eq!(store.readings(&m, 0, i64::MAX, 10).await.unwrap().len(), 3);
    ingest.shutdown().await;
}

/// A PostgreSQL store in a fresh schema, dropped with the guard; `None` (skip) when the
/// server is unreachable, except under `CI=true`.
async fn postgres_with(
    meters: &[&str],
) -> Option<(
    std::sync::Arc<dyn Store>,
    std::sync::Arc<server::KeyRing>,
    SchemaGuard,
)> {
    let schema = format!("wl_it_{}_{}", std::process::id(), server::now_ms());
    let config = server::PgConfig {
        dbname: std::env::var("WATTLINE_TEST_PG_DB").unwrap_or_else(|_| "test".into()),
        schema: Some(schema.clone()),
        pool_size: 4,
        ..Default::default()
    };
    let store = match server::PgStore::connect(&config).await {
        Ok(s) => s,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipping postgres test: {e}");
            return None;
        }
        Err(e) => panic!("postgres: {e}"),
    };
    let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(store);
    let keys = std::sync::Arc::new(server::KeyRing::new());
    for m in meters {
        enrol(store.as_ref(), &keys, m).await;
    }
    Some((store, keys, SchemaGuard(config, schema)))
}

pub struct SchemaGuard(server::PgConfig, String);

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let (c, schema) = (self.0.clone(), self.1.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let conn = format!(
                    "host={} port={} user={} dbname={}",
                    c.host, c.port, c.user, c.dbname
                );
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&conn, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .await;
                }
            })
        })
        .join();
    }
}
