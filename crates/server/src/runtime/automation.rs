//! The `[billing]`, `[notify]` and `[reports]` sections: what the server does on its own while
//! it runs — the monthly bill run and prepaid checks, delivery of notifications (mail over
//! SMTP, signed webhooks) with digests, and the monthly consumption report.
//!
//! ```toml
//! [billing]
//! cycle_run = true              # the monthly bill run (false: bills only through the API)
//! run_day = 1                   # day of the month (1-28) it runs, billing the cycle before
//! run_time = "02:00"            # time of day, UTC
//! prepaid_check_every_s = 900   # prepaid credit checks (debit, low-credit warning, cut-off)
//!
//! [notify]
//! smtp_host = "mail.example.net"   # absent: no mail (a warning at start; messages wait)
//! smtp_port = 587                  # default by security: 587 starttls, 465 tls, 25 plain
//! smtp_security = "starttls"       # "starttls", "tls" or "plain" (a local relay only)
//! smtp_from = "wattline <alerts@example.net>"   # required with smtp_host
//! smtp_username = "alerts"         # with smtp_password_file
//! smtp_password_file = "/etc/wattline/smtp-password"
//! webhook_secret_file = "/etc/wattline/webhook-secret"  # default DATA_DIR/webhook.secret
//! allow_private_webhooks = false
//! deliver_every_s = 30
//! digest_every_s = 3600
//! peak_check_every_s = 86400       # 0 turns the peak-hour consumption check off
//! rate_limit = 5                   # messages per user, rule and channel per rate window
//! rate_window_s = 3600
//! merge_window_s = 3600            # repeats of one incident within this are merged
//! max_attempts = 5
//!
//! [reports]
//! monthly = true
//! dir = "/var/lib/wattline/reports"   # default DATA_DIR/reports
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveTime;
use serde::Deserialize;

use crate::billing::{BillingConfig, BillingJobs, MonthlyAt};
use crate::notify::{NotifyConfig, NotifyJobs, SmtpConfig, SmtpSecurity};

/// The `[billing]` section. The terms and prepaid policy are [`BillingConfig`]'s defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingSection {
    /// Run the bill run once a month on `run_day` at `run_time` (default true). It bills the
    /// cycle that ended before (the previous calendar month); running it again issues nothing
    /// new.
    pub cycle_run: bool,
    /// Day of the month of the bill run, 1 to 28 (default 1).
    pub run_day: u32,
    /// Time of day of the bill run, `HH:MM` UTC (default `02:00`, when the last readings of
    /// the month have arrived).
    pub run_time: String,
    /// Seconds between prepaid credit checks (default 900).
    pub prepaid_check_every_s: u64,
}

impl Default for BillingSection {
    fn default() -> Self {
        Self {
            cycle_run: true,
            run_day: 1,
            run_time: "02:00".into(),
            prepaid_check_every_s: 900,
        }
    }
}

impl BillingSection {
    fn run_time(&self) -> Result<NaiveTime, String> {
        NaiveTime::parse_from_str(&self.run_time, "%H:%M").map_err(|_| {
            format!(
                "[billing] run_time: expected HH:MM (UTC), got {:?}",
                self.run_time
            )
        })
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        if !(1..=28).contains(&self.run_day) {
            return Err(format!(
                "[billing] run_day: must be 1 to 28 (a day every month has), got {}",
                self.run_day
            ));
        }
        self.run_time()?;
        if self.prepaid_check_every_s == 0 {
            return Err("[billing] prepaid_check_every_s: must be at least 1".into());
        }
        Ok(())
    }

    /// The billing job's settings.
    pub fn jobs(&self) -> Result<BillingJobs, String> {
        Ok(BillingJobs {
            config: BillingConfig::default(),
            cycle_run: if self.cycle_run {
                Some(MonthlyAt {
                    day: self.run_day,
                    time: self.run_time()?,
                })
            } else {
                None
            },
            prepaid_every: Duration::from_secs(self.prepaid_check_every_s),
        })
    }
}

/// How mail leaves the server (`smtp_security`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecuritySetting {
    /// STARTTLS on the submission port (default).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS: a relay on the same machine or a closed network only.
    Plain,
}

/// The `[notify]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifySection {
    /// The SMTP server's host name. Absent: the email channel is off (one warning at start;
    /// mail messages stay pending and go out once a server is configured).
    pub smtp_host: Option<String>,
    /// Its port (default by `smtp_security`: 587, 465 or 25).
    pub smtp_port: Option<u16>,
    /// `starttls` (default), `tls` or `plain`.
    pub smtp_security: SmtpSecuritySetting,
    /// The sender, e.g. `wattline <alerts@example.net>` (required with `smtp_host`).
    pub smtp_from: Option<String>,
    /// The SMTP login name (with `smtp_password_file`).
    pub smtp_username: Option<String>,
    /// A file holding the SMTP password (first line), mode 0600.
    pub smtp_password_file: Option<PathBuf>,
    /// A file holding the secret webhooks are signed with (first line, at least 16
    /// characters). Default `DATA_DIR/webhook.secret`, created with a random secret at the
    /// first start.
    pub webhook_secret_file: Option<PathBuf>,
    /// Allow webhook targets on loopback, private, link-local and other non-public addresses
    /// (default false: refused when saved and at delivery).
    pub allow_private_webhooks: bool,
    /// Seconds between delivery passes (default 30).
    pub deliver_every_s: u64,
    /// Seconds between digests of held-back messages (default 3600).
    pub digest_every_s: u64,
    /// Seconds between checks for unusually high peak-hour consumption; 0 turns the check off
    /// (default 86400).
    pub peak_check_every_s: u64,
    /// Messages per user, rule and channel within `rate_window_s`; the rest go into the next
    /// digest (default 5).
    pub rate_limit: usize,
    /// The rate limit's window, seconds (default 3600).
    pub rate_window_s: u64,
    /// Repeats of one incident within this many seconds are merged into its first message
    /// (default 3600).
    pub merge_window_s: u64,
    /// Delivery attempts before a message is marked failed (default 5).
    pub max_attempts: u32,
}

impl Default for NotifySection {
    fn default() -> Self {
        let d = NotifyConfig::default();
        Self {
            smtp_host: None,
            smtp_port: None,
            smtp_security: SmtpSecuritySetting::default(),
            smtp_from: None,
            smtp_username: None,
            smtp_password_file: None,
            webhook_secret_file: None,
            allow_private_webhooks: d.allow_private_webhooks,
            deliver_every_s: 30,
            digest_every_s: 3600,
            peak_check_every_s: 86_400,
            rate_limit: d.rate_limit,
            rate_window_s: (d.rate_window_ms / 1000) as u64,
            merge_window_s: (d.merge_window_ms / 1000) as u64,
            max_attempts: d.max_attempts as u32,
        }
    }
}

fn first_line(path: &Path, key: &str) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().next().unwrap_or("").trim().to_owned())
        .map_err(|e| format!("[notify] {key}: cannot read {}: {e}", path.display()))
}

impl NotifySection {
    pub(super) fn resolve_paths(&mut self, fix: impl Fn(&mut Option<PathBuf>)) {
        fix(&mut self.smtp_password_file);
        fix(&mut self.webhook_secret_file);
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        if let Some(host) = &self.smtp_host {
            if host.is_empty() {
                return Err("[notify] smtp_host: must not be empty".into());
            }
            match &self.smtp_from {
                None => return Err("[notify] smtp_from: required with smtp_host".into()),
                Some(from) => {
                    from.parse::<lettre::message::Mailbox>().map_err(|e| {
                        format!("[notify] smtp_from: not a mail address ({e}): {from:?}")
                    })?;
                }
            }
        }
        if self.smtp_username.is_some() != self.smtp_password_file.is_some() {
            return Err(
                "[notify] smtp_username and smtp_password_file: give both or neither".into(),
            );
        }
        if self.smtp_port == Some(0) {
            return Err("[notify] smtp_port: must be 1 to 65535".into());
        }
        for (key, v) in [
            ("deliver_every_s", self.deliver_every_s),
            ("digest_every_s", self.digest_every_s),
            ("rate_window_s", self.rate_window_s),
        ] {
            if v == 0 {
                return Err(format!("[notify] {key}: must be at least 1"));
            }
        }
        if self.rate_limit == 0 {
            return Err("[notify] rate_limit: must be at least 1".into());
        }
        if self.max_attempts == 0 {
            return Err("[notify] max_attempts: must be at least 1".into());
        }
        Ok(())
    }

    /// The notifier settings, reading the password and webhook secret files (the secret file
    /// is created under `data_dir` when the default is used and it does not exist yet).
    pub fn notify_config(&self, data_dir: &Path) -> Result<NotifyConfig, String> {
        let smtp = match &self.smtp_host {
            None => {
                tracing::warn!(
                    "[notify] smtp_host is not set: the email channel is off; mail notifications wait until an SMTP server is configured"
                );
                None
            }
            Some(host) => {
                let credentials = match (&self.smtp_username, &self.smtp_password_file) {
                    (Some(user), Some(file)) => {
                        crate::keystore::check_owner_only(file)
                            .map_err(|e| format!("[notify] smtp_password_file: {e}"))?;
                        Some((user.clone(), first_line(file, "smtp_password_file")?))
                    }
                    _ => None,
                };
                let (security, default_port) = match self.smtp_security {
                    SmtpSecuritySetting::Starttls => (SmtpSecurity::StartTls, 587),
                    SmtpSecuritySetting::Tls => (SmtpSecurity::Tls, 465),
                    SmtpSecuritySetting::Plain => (SmtpSecurity::Plain, 25),
                };
                Some(SmtpConfig {
                    host: host.clone(),
                    port: self.smtp_port.unwrap_or(default_port),
                    security,
                    credentials,
                    from: self.smtp_from.clone().unwrap_or_default(),
                })
            }
        };
        let secret_file = self
            .webhook_secret_file
            .clone()
            .unwrap_or_else(|| data_dir.join("webhook.secret"));
        if self.webhook_secret_file.is_none() && !secret_file.exists() {
            let mut b = [0u8; 32];
            getrandom::fill(&mut b).map_err(|e| format!("[notify] webhook secret: {e}"))?;
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            crate::keystore::write_secret_file(&secret_file, &format!("{hex}\n")).map_err(|e| {
                format!(
                    "[notify] webhook_secret_file: cannot create {}: {e}",
                    secret_file.display()
                )
            })?;
        }
        let secret = first_line(&secret_file, "webhook_secret_file")?;
        if secret.len() < 16 {
            return Err(format!(
                "[notify] webhook_secret_file: the secret in {} must have at least 16 characters",
                secret_file.display()
            ));
        }
        Ok(NotifyConfig {
            smtp,
            webhook_secret: secret.into_bytes(),
            merge_window_ms: self.merge_window_s as i64 * 1000,
            rate_limit: self.rate_limit,
            rate_window_ms: self.rate_window_s as i64 * 1000,
            max_attempts: i64::from(self.max_attempts),
            allow_private_webhooks: self.allow_private_webhooks,
        })
    }

    /// The notification job's periods.
    pub fn jobs(&self) -> NotifyJobs {
        NotifyJobs {
            deliver_every: Duration::from_secs(self.deliver_every_s),
            digest_every: Duration::from_secs(self.digest_every_s),
            peak_check_every: (self.peak_check_every_s > 0)
                .then(|| Duration::from_secs(self.peak_check_every_s)),
        }
    }
}

/// The `[reports]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportsSection {
    /// Write the previous month's consumption report (CSV and PDF) after the first of each
    /// month (default true).
    pub monthly: bool,
    /// Where (default `DATA_DIR/reports`).
    pub dir: Option<PathBuf>,
}

impl Default for ReportsSection {
    fn default() -> Self {
        Self {
            monthly: true,
            dir: None,
        }
    }
}

impl ReportsSection {
    /// The output directory.
    pub fn dir(&self, data_dir: &Path) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| data_dir.join("reports"))
    }
}
