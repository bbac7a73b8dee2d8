//! Configuration of the disk outbox (the `[outbox]` section of the agent config).

use serde::{Deserialize, Serialize};

/// What the outbox does when a new record would exceed [`OutboxConfig::max_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Refuse the new record; the pipeline stops pulling from its source until the uplink has
    /// delivered enough to make room. Nothing already queued is lost, but a live device's
    /// samples are not read meanwhile. Suits replays and simulations.
    Block,
    /// Delete the oldest `reading` records to make room, keeping every `event`, `ack` and
    /// `heartbeat`. Because readings carry monotonic counters, this loses interval detail but
    /// never energy. The default for real meters, whose outages can outlast any disk.
    DropOldestReadings,
}

/// The `[outbox]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Upper bound of the queue on disk, bytes (default 16 MiB: about two weeks of one-minute
    /// three-phase readings).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Size at which a new segment file is started, bytes (default 256 KiB).
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// What to do when full (default `drop_oldest_readings`).
    #[serde(default = "default_when_full")]
    pub when_full: WhenFull,
    /// fsync each append, so records survive a power cut and not only a process kill
    /// (default true).
    #[serde(default = "default_fsync")]
    pub fsync: bool,
}

const fn default_max_bytes() -> u64 {
    16 * 1024 * 1024
}

const fn default_segment_bytes() -> u64 {
    256 * 1024
}

const fn default_when_full() -> WhenFull {
    WhenFull::DropOldestReadings
}

const fn default_fsync() -> bool {
    true
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            max_bytes: default_max_bytes(),
            segment_bytes: default_segment_bytes(),
            when_full: default_when_full(),
            fsync: default_fsync(),
        }
    }
}
