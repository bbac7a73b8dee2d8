//! Crash safety: a process ingesting into SQLite is killed with SIGKILL in the middle of its
//! work; after a restart every acknowledged record is present exactly once, and re-delivering
//! everything (as a broker does for unacknowledged messages) stores only what was missing.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use server::{SqliteStore, Store};

use crate::common::*;

const CHILD_ENV: &str = "WATTLINE_CRASH_CHILD_DIR";
const PER_ENVELOPE: u64 = 200;

fn envelope(k: u64) -> Vec<u8> {
    let m = id("crash-1");
    let lo = k * PER_ENVELOPE + 1;
    seal(&readings_every(&m, 1, lo..=lo + PER_ENVELOPE - 1, 1_000))
}

/// The child's body: ingest envelopes for ever, printing `ACK <last seq>` after each
/// acknowledgement. Does nothing unless started by `kill_9_mid_batch_loses_no_acknowledged_record`.
#[test]
fn child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = TempDirKeep(dir.into());
        let store: std::sync::Arc<dyn Store> =
            std::sync::Arc::new(SqliteStore::open(&dir.0).await.unwrap());
        let keys = std::sync::Arc::new(server::KeyRing::new());
        enrol(store.as_ref(), &keys, "crash-1").await;
        let ingest = start(&store, &keys);
        for k in 0.. {
            // Several envelopes in flight at once, so a transaction holds more than one.
            let mut waits = Vec::new();
            for j in 0..4 {
                let (tx, rx) = tokio::sync::oneshot::channel();
                ingest
                    .submit(&up(&id("crash-1")), envelope(k * 4 + j), Box::new(tx))
                    .await
                    .unwrap();
                waits.push((k * 4 + j, rx));
            }
            for (n, rx) in waits {
                rx.await.unwrap();
                println!("ACK {}", (n + 1) * PER_ENVELOPE);
            }
        }
    });
}

struct TempDirKeep(std::path::PathBuf);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_batch_loses_no_acknowledged_record() {
    let dir = TempDir::new("crash");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash::child_writer",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &dir.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the child writer");
    let stdout = child.stdout.take().unwrap();
    let mut acked: u64 = 0;
    let mut acks = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("ACK ") {
            acked = acked.max(n.trim().parse().unwrap());
            acks += 1;
            if acks == 30 {
                break;
            }
        }
    }
    // SIGKILL while the writer is busy with the next transactions.
    child.kill().expect("kill -9");
    child.wait().unwrap();
    assert!(acked >= 30 * PER_ENVELOPE, "child acknowledged {acked}");

    let (store, keys) = sqlite_with(&dir, &["crash-1"]).await;
    let m = id("crash-1");
    let rows = store.readings(&m, 0, i64::MAX, 1_000_000).await.unwrap();
    let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
    let present = seqs.len() as u64;
    assert!(present >= acked, "{present} stored < {acked} acknowledged");
    // Exactly once and without holes up to what was acknowledged.
    for (i, s) in seqs.iter().enumerate() {
        assert_eq!(*s, i as u64 + 1, "seq {s} at position {i}");
    }

    // Redeliver everything up to two envelopes past the last stored one.
    let ingest = start(&store, &keys);
    let envelopes = present / PER_ENVELOPE + 2;
    for k in 0..envelopes {
        deliver(&ingest, &up(&m), envelope(k)).await;
    }
    let total = envelopes * PER_ENVELOPE;
    assert_eq!(ingest.stats().stored(), total - present);
    assert_eq!(ingest.stats().duplicate(), present);
    let rows = store.readings(&m, 0, i64::MAX, 1_000_000).await.unwrap();
    assert_eq!(rows.len() as u64, total);
    assert!(store.gaps(&m).await.unwrap().is_empty());
    // Rollups left dirty by the crash were completed.
    server::rollup::refresh_dirty(store.as_ref()).await.unwrap();
    let q = store
        .rollups(&m, server::Resolution::Day, 0, i64::MAX)
        .await
        .unwrap();
    let energy: f64 = q.iter().map(|r| r.energy.import_wh).sum();
    assert!(
        (energy - (total - 1) as f64 * 10.0).abs() < 1e-6,
        "{energy}"
    );
    ingest.shutdown().await;
}
