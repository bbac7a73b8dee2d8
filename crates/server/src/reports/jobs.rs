//! The monthly report job of the running server: after the first of each month (at
//! [`MONTHLY_RUN_HOUR_UTC`]), writes the previous month's consumption report into the output
//! directory unless it is there already, so a restart neither skips nor repeats a month.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{Datelike, NaiveDate, TimeZone, Timelike, Utc};
use tokio::sync::watch;

use crate::Error;

/// The hour (UTC) of the first of the month from which the previous month is reported; late
/// deliveries of the month's last hours have arrived by then.
pub const MONTHLY_RUN_HOUR_UTC: u32 = 3;

/// How often the job looks whether a report is due.
const CHECK_EVERY: Duration = Duration::from_secs(3600);

/// Writes the previous month's report into `out_dir` when it is due at `now_ms` and missing.
/// Returns the files written (empty: not due yet, or already there).
pub async fn run_monthly_if_missing(
    db: &crate::Database,
    out_dir: &Path,
    now_ms: i64,
) -> Result<Vec<PathBuf>, Error> {
    let now = Utc
        .timestamp_millis_opt(now_ms)
        .single()
        .ok_or_else(|| Error::invalid(format!("time {now_ms} ms is out of range")))?;
    if now.day() == 1 && now.hour() < MONTHLY_RUN_HOUR_UTC {
        return Ok(Vec::new());
    }
    let previous = NaiveDate::from_ymd_opt(now.year(), now.month(), 1)
        .and_then(|d| d.pred_opt())
        .ok_or_else(|| Error::invalid("no previous month"))?;
    let month = format!("{:04}-{:02}", previous.year(), previous.month());
    let all_there = ["consumption", "theft-cases"].iter().all(|r| {
        ["csv", "pdf"]
            .iter()
            .all(|ext| out_dir.join(format!("{r}-{month}.{ext}")).exists())
    });
    if all_there {
        return Ok(Vec::new());
    }
    super::run_monthly(db, out_dir, now_ms).await
}

/// Starts the monthly report job: checks at once and then every hour until `shutdown` turns
/// true.
pub fn spawn_jobs(
    db: crate::Database,
    out_dir: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match run_monthly_if_missing(&db, &out_dir, crate::now_ms()).await {
                Ok(files) if !files.is_empty() => {
                    tracing::info!(files = ?files, "monthly reports written");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, dir = %out_dir.display(), "monthly reports failed; retrying in an hour");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(CHECK_EVERY) => {}
                r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
            }
            if *shutdown.borrow() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::tests::{load_meter, sqlite_db, utc};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_previous_month_is_written_once_after_the_first() {
        let t = sqlite_db().await;
        load_meter(
            &t.db,
            "m-report",
            "c-report",
            "Europe/London",
            utc("2026-02-01T00:00:00Z"),
            utc("2026-03-01T00:00:00Z"),
            |_| 100.0,
        )
        .await;
        let dir = std::env::temp_dir().join(format!(
            "wattline-reports-job-{}-{}",
            std::process::id(),
            crate::now_ms()
        ));
        let early = utc("2026-03-01T02:00:00Z").timestamp_millis();
        assert!(
            run_monthly_if_missing(&t.db, &dir, early)
                .await
                .unwrap()
                .is_empty()
        );
        let due = utc("2026-03-01T03:10:00Z").timestamp_millis();
        let files = run_monthly_if_missing(&t.db, &dir, due).await.unwrap();
        assert_eq!(files.len(), 4, "{files:?}");
        assert!(files[0].ends_with("consumption-2026-02.csv"));
        assert!(files[2].ends_with("theft-cases-2026-02.csv"));
        let csv = std::fs::read_to_string(&files[0]).unwrap();
        assert!(csv.contains("c-report"), "{csv}");
        // Later in the month (or after a restart): already there, nothing rewritten.
        let later = utc("2026-03-17T12:00:00Z").timestamp_millis();
        assert!(
            run_monthly_if_missing(&t.db, &dir, later)
                .await
                .unwrap()
                .is_empty()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
