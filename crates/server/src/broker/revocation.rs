//! The revocation list the broker checks: revoked certificate serials and revoked meters.
//!
//! It is filled from the database by [`crate::keystore::KeyStore`] (at open, on every
//! in-process revocation, and by its periodic refresh, which picks up `wattline meter revoke`
//! run from another process). The broker checks it right after the TLS handshake, and every
//! live session watches its generation number so a revocation closes the session at once.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use schema::MeterId;
use tokio::sync::watch;

/// Revoked serials and meters, shared by the key store, the broker and ingest.
pub struct RevocationList {
    serials: RwLock<HashSet<String>>,
    meters: RwLock<HashMap<MeterId, String>>,
    generation: watch::Sender<u64>,
}

impl std::fmt::Debug for RevocationList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationList")
            .field("serials", &read(&self.serials).len())
            .field("meters", &read(&self.meters).len())
            .finish()
    }
}

impl Default for RevocationList {
    fn default() -> Self {
        Self {
            serials: RwLock::default(),
            meters: RwLock::default(),
            generation: watch::channel(0).0,
        }
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl RevocationList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Is the certificate with this serial (lowercase hex) revoked?
    pub fn serial_revoked(&self, serial_hex: &str) -> bool {
        read(&self.serials).contains(serial_hex)
    }

    /// Why `meter` is revoked, if it is.
    pub fn meter_revoked(&self, meter: &MeterId) -> Option<String> {
        read(&self.meters).get(meter).cloned()
    }

    /// Adds revoked serials and (optionally) a revoked meter; wakes every live session when
    /// anything is new.
    pub fn add(&self, serials: impl IntoIterator<Item = String>, meter: Option<(MeterId, String)>) {
        let mut changed = false;
        {
            let mut s = write(&self.serials);
            for serial in serials {
                changed |= s.insert(serial);
            }
        }
        if let Some((m, why)) = meter {
            changed |= write(&self.meters).insert(m, why).is_none();
        }
        if changed {
            self.generation.send_modify(|g| *g += 1);
        }
    }

    /// Replaces the whole list (a refresh from the database); wakes sessions when it changed.
    pub fn replace(&self, serials: HashSet<String>, meters: HashMap<MeterId, String>) {
        let mut changed = false;
        {
            let mut s = write(&self.serials);
            if *s != serials {
                *s = serials;
                changed = true;
            }
        }
        {
            let mut m = write(&self.meters);
            if *m != meters {
                *m = meters;
                changed = true;
            }
        }
        if changed {
            self.generation.send_modify(|g| *g += 1);
        }
    }

    /// A receiver that changes whenever the list does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn additions_wake_watchers_and_repeats_do_not() {
        let list = RevocationList::new();
        let mut rx = list.subscribe();
        let m = MeterId::parse("m1").unwrap();
        list.add(["0a".to_owned()], Some((m.clone(), "stolen".into())));
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        assert!(list.serial_revoked("0a"));
        assert!(!list.serial_revoked("0b"));
        assert_eq!(list.meter_revoked(&m).as_deref(), Some("stolen"));
        list.add(["0a".to_owned()], None);
        assert!(!rx.has_changed().unwrap());
        list.replace(
            HashSet::from(["0a".to_owned()]),
            HashMap::from([(m, "stolen".into())]),
        );
        assert!(!rx.has_changed().unwrap());
        list.replace(HashSet::new(), HashMap::new());
        assert!(rx.has_changed().unwrap());
        assert!(!list.serial_revoked("0a"));
    }
}
