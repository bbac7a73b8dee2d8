//! Helpers shared by the integration tests: temporary stores, enrolled meters, sealed batches.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use schema::{
    Batch, Body, EnergyCounters, MeterId, MeterKey, Phase, PhaseReading, Reading, Record,
    TotalReading, seal_batch,
};
use server::{Ingest, IngestConfig, KeyRing, Meter, SqliteStore, Store};
use tokio::sync::oneshot;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh directory under the system temp dir (removed by [`TempDir`]'s drop).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            server::now_ms()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn id(s: &str) -> MeterId {
    MeterId::parse(s).expect("test id")
}

/// A fixed key per meter name, so a child process and its parent agree.
pub fn key_of(meter: &MeterId) -> MeterKey {
    let mut bytes = [0u8; 32];
    for (i, b) in meter.as_str().bytes().enumerate() {
        bytes[i % 32] ^= b.wrapping_add(i as u8);
    }
    MeterKey::from_bytes(bytes)
}

pub fn reading(import_wh: f64) -> Reading {
    Reading {
        interval_s: 60.0,
        freq_hz: 50.0,
        phases: vec![PhaseReading {
            phase: Phase::A,
            v_rms: 230.0,
            i_rms: 2.0,
            p_w: 460.0,
            q_var: Some(10.0),
            s_va: 460.0,
            pf: 1.0,
            v_thd_pct: Some(1.5),
            i_thd_pct: None,
        }],
        total: TotalReading {
            p_w: 460.0,
            q_var: Some(10.0),
            s_va: 460.0,
            pf: 1.0,
        },
        counters: EnergyCounters {
            import_wh,
            ..Default::default()
        },
    }
}

/// Readings `seqs` of one boot, one minute apart from midnight UTC three days ago (the same
/// instants in every process on the same day), counters 10 Wh per seq.
pub fn readings(meter: &MeterId, boot_id: u64, seqs: std::ops::RangeInclusive<u64>) -> Batch {
    readings_every(meter, boot_id, seqs, 60_000)
}

/// Like [`readings`] with `step_ms` between readings.
pub fn readings_every(
    meter: &MeterId,
    boot_id: u64,
    seqs: std::ops::RangeInclusive<u64>,
    step_ms: i64,
) -> Batch {
    let base = (server::now_ms() / 86_400_000 - 3) * 86_400_000;
    Batch {
        meter: meter.clone(),
        boot_id,
        records: seqs
            .map(|s| Record {
                seq: s,
                t_ms: base + s as i64 * step_ms,
                body: Body::Reading(reading(1_000.0 + s as f64 * 10.0)),
            })
            .collect(),
    }
}

pub fn seal(batch: &Batch) -> Vec<u8> {
    seal_batch(&key_of(&batch.meter), batch).expect("seal")
}

pub fn up(meter: &MeterId) -> String {
    schema::topic::up(meter)
}

/// A store with `meters` enrolled (UTC) and their keys in a ring.
pub async fn sqlite_with(dir: &TempDir, meters: &[&str]) -> (Arc<dyn Store>, Arc<KeyRing>) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.0).await.expect("open"));
    let keys = Arc::new(KeyRing::new());
    for m in meters {
        enrol(store.as_ref(), &keys, m).await;
    }
    (store, keys)
}

pub async fn enrol(store: &dyn Store, keys: &KeyRing, name: &str) {
    let m = id(name);
    store
        .upsert_meter(&Meter::new(m.clone(), format!("{name}.key")))
        .await
        .expect("enrol");
    keys.insert(m.clone(), key_of(&m));
}

pub fn start(store: &Arc<dyn Store>, keys: &Arc<KeyRing>) -> Ingest {
    Ingest::start(store.clone(), keys.clone(), IngestConfig::default())
}

/// Submits and waits for the acknowledgement (panics if the delivery is never acknowledged).
pub async fn deliver(ingest: &Ingest, topic: &str, payload: Vec<u8>) {
    let (tx, rx) = oneshot::channel();
    ingest
        .submit(topic, payload, Box::new(tx))
        .await
        .expect("submit");
    tokio::time::timeout(std::time::Duration::from_secs(30), rx)
        .await
        .expect("acknowledged in time")
        .expect("acknowledged, not dropped");
}
