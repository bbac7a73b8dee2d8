//! Tables that belong to feature areas outside the core ingest schema (accounts and audit,
//! alarms and cases, billing, DLMS polling, ...), and the [`Database`] handle that gives each
//! area its own store trait over the same SQLite file or PostgreSQL pool.
//!
//! Each area lives in its own file under `store/` and contributes:
//! - a `pub(crate) const MIGRATIONS: &[Migration]` with versions in its reserved range, listed
//!   in [`migrations`] below (core 1–99, accounts/sessions/audit 100–199, alarms/cases 200–299,
//!   billing/payments/notifications 300–399, DLMS polling 400–499, relay forwarding 500–599,
//!   meter keys/certificates 600–699);
//! - its own `#[async_trait] pub trait XStore` implemented for both [`SqliteStore`] and
//!   [`PgStore`] (dialect SQL stays in that area's file);
//! - an accessor on [`Database`] returning `&dyn XStore`;
//! - tests that run the same cases on both backends (see `store/suite.rs` for the PostgreSQL
//!   test setup).

use std::sync::Arc;

use super::{PgStore, SqliteStore, Store};

/// One versioned migration of a feature area, in both dialects.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// Unique across the whole schema; applied in ascending order, each once.
    pub version: u32,
    /// SQLite statements.
    pub sqlite: &'static str,
    /// PostgreSQL statements.
    pub postgres: &'static str,
}

/// Every feature-area migration, in version order. Register a new area's list here.
pub(crate) fn migrations() -> Vec<Migration> {
    let areas: &[&[Migration]] = &[
        // One line per area, e.g. `super::accounts::MIGRATIONS,`.
        super::accounts::MIGRATIONS,
        super::billing::MIGRATIONS,
        super::alarms::MIGRATIONS,
        super::keys::MIGRATIONS,
        super::dlms::MIGRATIONS,
    ];
    let mut all: Vec<Migration> = areas.iter().flat_map(|a| a.iter().copied()).collect();
    all.sort_by_key(|m| m.version);
    all
}

/// The opened database, whichever backend it is: the core [`Store`] plus the feature-area
/// stores, all over one SQLite file or one PostgreSQL pool.
#[derive(Clone)]
pub enum Database {
    /// The embedded default.
    Sqlite(SqliteStore),
    /// PostgreSQL.
    Postgres(Arc<PgStore>),
}

impl Database {
    /// The core store (meters, readings, rollups, events, commands, quarantine).
    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            Database::Sqlite(s) => Arc::new(s.clone()),
            Database::Postgres(p) => p.clone(),
        }
    }

    /// Meter sealing keys (encrypted), certificates and revocations (`store/keys.rs`).
    pub fn keys(&self) -> &dyn super::keys::KeysStore {
        match self {
            Database::Sqlite(s) => s,
            Database::Postgres(p) => p.as_ref(),
        }
    }

    /// The DLMS poller's per-meter cursors (`store/dlms.rs`).
    pub fn dlms(&self) -> &dyn super::dlms::DlmsStore {
        match self {
            Database::Sqlite(s) => s,
            Database::Postgres(p) => p.as_ref(),
        }
    }

    /// Alarms, cases and the alarm jobs' state (`store/alarms.rs`).
    pub fn alarms(&self) -> &dyn super::alarms::AlarmStore {
        match self {
            Database::Sqlite(s) => s,
            Database::Postgres(p) => p.as_ref(),
        }
    }

    /// Tariffs, bills, payments, prepaid credit and notifications (`store/billing.rs`).
    pub fn billing(&self) -> &dyn super::billing::BillingStore {
        match self {
            Database::Sqlite(s) => s,
            Database::Postgres(p) => p.as_ref(),
        }
    }

    /// Users, sessions, API tokens, login attempts and the audit log (`store/accounts.rs`).
    pub fn accounts(&self) -> &dyn super::accounts::AccountStore {
        match self {
            Database::Sqlite(s) => s,
            Database::Postgres(p) => p.as_ref(),
        }
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            Database::Sqlite(_) => "sqlite",
            Database::Postgres(_) => "postgres",
        }
    }
}
