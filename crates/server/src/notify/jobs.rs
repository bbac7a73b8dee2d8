//! The notification job of the running server: delivers pending mail and webhooks every
//! `deliver_every`, turns held-back messages into digests and checks the readings of that period
//! for power quality out of range every `digest_every`, and runs the peak-hour consumption check
//! every `peak_check_every`, until the shutdown channel turns true.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::Notifier;
use crate::Database;

/// How often the notification job does each of its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifyJobs {
    /// Delivery passes over pending mail and webhooks.
    pub deliver_every: Duration,
    /// Digests of held-back messages.
    pub digest_every: Duration,
    /// The "unusually high consumption in peak hours" check; `None` turns it off.
    pub peak_check_every: Option<Duration>,
}

/// Starts the notification job. The first delivery pass runs at once (messages left pending by
/// a previous run go out after a restart); the first digest and peak check after one period.
pub fn spawn_jobs(
    notifier: Notifier,
    db: Database,
    jobs: NotifyJobs,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let deliver_every = jobs.deliver_every.max(Duration::from_secs(1));
        let mut next_digest = Instant::now() + jobs.digest_every;
        let mut next_peak = jobs.peak_check_every.map(|p| Instant::now() + p);
        // Readings from here on are checked for power quality (older ones were checked before
        // a restart, or predate the server).
        let mut pq_from_ms = crate::now_ms();
        loop {
            let now_ms = crate::now_ms();
            match notifier.deliver(now_ms).await {
                Ok(r) if r.sent > 0 || r.failed > 0 => {
                    tracing::info!(sent = r.sent, failed = r.failed, "notifications delivered");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "notification delivery failed; retrying next period")
                }
            }
            if Instant::now() >= next_digest {
                next_digest = Instant::now() + jobs.digest_every;
                match notifier.digest(now_ms).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(digests = n, "notification digests queued"),
                    Err(e) => {
                        tracing::warn!(error = %e, "notification digest failed; retrying next period")
                    }
                }
                let store = db.store();
                match super::watch_power_quality(&notifier, store.as_ref(), pq_from_ms, now_ms)
                    .await
                {
                    Ok(n) => {
                        pq_from_ms = now_ms;
                        if n > 0 {
                            tracing::info!(messages = n, "power-quality notifications raised");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "power-quality check failed; retrying next period")
                    }
                }
            }
            if let (Some(at), Some(every)) = (next_peak, jobs.peak_check_every)
                && Instant::now() >= at
            {
                next_peak = Some(Instant::now() + every);
                match super::watch_peak_consumption(&notifier, &db, now_ms).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(messages = n, "peak-consumption notifications raised"),
                    Err(e) => tracing::warn!(error = %e, "peak-consumption check failed"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(deliver_every) => {}
                r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
            }
            if *shutdown.borrow() {
                return;
            }
        }
    })
}
