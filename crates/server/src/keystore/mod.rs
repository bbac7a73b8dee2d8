//! Meter sealing keys at rest and in use: the server master key, the [`KeyStore`] that keeps
//! every meter's key versions encrypted in the database and decrypted in memory for ingest
//! ([`KeySource`]), key rotation with a grace period, certificates issued per meter, and
//! revocation (DESIGN §4, issue 5).
//!
//! # Keys at rest
//! A meter's 256-bit sealing key is stored as `nonce (24 B) || XChaCha20-Poly1305 ciphertext`
//! under the server master key, with associated data `"wattline meter key v1" 0x00 meter-id
//! 0x00 version (u32, big-endian)`: a row copied to another meter or another version does not
//! decrypt. The master key is 64 hex digits in a file (`master.key`, written by `wattline pki
//! init`) that must be readable by its owner only; [`MasterKey::load`] refuses it otherwise.
//!
//! # Rotation without data loss
//! [`KeyStore::rotate`] adds version `n+1`; older versions stay accepted until the meter's
//! first envelope that opens under the new key (the meter sends its outbox in order, so
//! everything sealed before it got the new key has arrived by then) or until the grace period
//! ends, whichever is first. Ingest tries the newest accepted key first. The new key reaches
//! the meter in a re-issued agent bundle (`wattline meter rotate-key`), whose sealing-key file
//! replaces the old one; the envelope format needs no key id.
//!
//! # Freshness across processes
//! The CLI (`wattline meter …`) and the server may be different processes over one database:
//! [`KeyStore::spawn_refresh`] re-reads changed keys and the revocation list every interval
//! (2 s by default), so a revocation made by the CLI closes live connections within seconds and
//! a newly enrolled meter's key is known before its first envelope can reasonably arrive.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chacha20poly1305::aead::{Aead, KeyInit, OsRng, Payload};
use chacha20poly1305::{AeadCore, XChaCha20Poly1305, XNonce};
use schema::{MeterId, MeterKey};

use crate::broker::RevocationList;
use crate::ingest::KeySource;
use crate::store::Database;
use crate::{Error, ErrorKind};

pub use crate::store::keys::{CertRecord, KeysStore, MeterRevocation, StoredKey};

/// The master key file name inside the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";

const AAD_LABEL: &[u8] = b"wattline meter key v1";
const NONCE_BYTES: usize = 24;

fn keystore_error(what: String) -> Error {
    Error::new(ErrorKind::Unavailable(what))
}

/// The server master key: encrypts meter sealing keys at rest. Never logged.
#[derive(Clone)]
pub struct MasterKey {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

fn aad(meter: &MeterId, version: u32) -> Vec<u8> {
    let mut a = Vec::with_capacity(AAD_LABEL.len() + meter.as_str().len() + 6);
    a.extend_from_slice(AAD_LABEL);
    a.push(0);
    a.extend_from_slice(meter.as_str().as_bytes());
    a.push(0);
    a.extend_from_slice(&version.to_be_bytes());
    a
}

impl MasterKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(&bytes.into()),
        }
    }

    /// Creates `path` with a fresh key, mode 0600; refuses to overwrite an existing file.
    pub fn create(path: &Path) -> Result<Self, Error> {
        let key = MeterKey::generate();
        write_secret_file(path, &format!("{}\n", key.to_hex()))?;
        Self::load(path)
    }

    /// Reads `path` (64 hex digits); refuses a file that group or others may read or write.
    pub fn load(path: &Path) -> Result<Self, Error> {
        check_owner_only(path)?;
        let text = std::fs::read_to_string(path).map_err(|e| {
            keystore_error(format!(
                "cannot read the master key {}: {e}",
                path.display()
            ))
        })?;
        let text = text.trim();
        let bad = || {
            keystore_error(format!(
                "master key {} must hold 64 hex digits",
                path.display()
            ))
        };
        if text.len() != 64 || !text.is_ascii() {
            return Err(bad());
        }
        let mut raw = [0u8; 32];
        for (i, b) in raw.iter_mut().enumerate() {
            *b = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self::from_bytes(raw))
    }

    /// Encrypts `key` for `(meter, version)`.
    pub fn seal(&self, meter: &MeterId, version: u32, key: &MeterKey) -> Result<Vec<u8>, Error> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let plain = key.to_hex();
        let ct = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plain.as_bytes(),
                    aad: &aad(meter, version),
                },
            )
            .map_err(|_| keystore_error(format!("cannot encrypt the key of meter {meter}")))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypts a stored key of `(meter, version)`; an error when it was made for another
    /// meter or version, under another master key, or modified.
    pub fn open(&self, meter: &MeterId, version: u32, sealed: &[u8]) -> Result<MeterKey, Error> {
        let refused = || {
            keystore_error(format!(
                "stored key v{version} of meter {meter} does not decrypt under this master key \
                 (wrong master key, or the row was modified or moved)"
            ))
        };
        if sealed.len() < NONCE_BYTES + 16 {
            return Err(refused());
        }
        let (nonce, ct) = sealed.split_at(NONCE_BYTES);
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: &aad(meter, version),
                },
            )
            .map_err(|_| refused())?;
        let text = String::from_utf8(plain).map_err(|_| refused())?;
        MeterKey::from_hex(&text).map_err(|_| refused())
    }
}

/// Refuses `path` unless it is a regular file that only its owner may read or write.
pub fn check_owner_only(path: &Path) -> Result<(), Error> {
    let meta = std::fs::metadata(path)
        .map_err(|e| keystore_error(format!("cannot read {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(keystore_error(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(keystore_error(format!(
                "{} has mode {mode:03o}: a secret must be readable by its owner only; run `chmod 600 {}`",
                path.display(),
                path.display()
            )));
        }
    }
    Ok(())
}

/// Writes a secret file created with mode 0600 (never readable by others, not even briefly);
/// refuses to overwrite.
pub fn write_secret_file(path: &Path, text: &str) -> Result<(), Error> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .map_err(|e| keystore_error(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| keystore_error(format!("cannot write {}: {e}", path.display())))
}

/// Writes or replaces a secret file atomically: the text goes to a new 0600 file beside it,
/// is synced, and is renamed over `path`, so a reader sees the old or the new secret, never a
/// partial one, and the file is never readable by others.
pub fn replace_secret_file(path: &Path, text: &str) -> Result<(), Error> {
    let name = path
        .file_name()
        .ok_or_else(|| keystore_error(format!("{} names no file", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let _ = std::fs::remove_file(&tmp); // a leftover of a crashed earlier write
    write_secret_file(&tmp, text)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        keystore_error(format!("cannot replace {}: {e}", path.display()))
    })
}

/// Key store settings.
#[derive(Debug, Clone)]
pub struct KeyStoreConfig {
    /// How long older key versions stay accepted after a rotation when the meter has not yet
    /// used the new key.
    pub rotation_grace: Duration,
    /// How often [`KeyStore::spawn_refresh`] re-reads the database.
    pub refresh_interval: Duration,
}

impl Default for KeyStoreConfig {
    fn default() -> Self {
        Self {
            rotation_grace: Duration::from_secs(30 * 86_400),
            refresh_interval: Duration::from_secs(2),
        }
    }
}

#[derive(Clone)]
struct CachedKey {
    version: u32,
    key: MeterKey,
    retire_at_ms: Option<i64>,
}

/// Meter keys (decrypted in memory), certificates and revocations over a [`Database`].
pub struct KeyStore {
    db: Database,
    master: MasterKey,
    config: KeyStoreConfig,
    /// Newest version first.
    cache: RwLock<HashMap<MeterId, Vec<CachedKey>>>,
    revocations: Arc<RevocationList>,
    /// Start of the last refresh (the next one reads rows changed since, with slack).
    last_refresh_ms: Mutex<i64>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("backend", &self.db.backend())
            .field("meters", &read(&self.cache).len())
            .finish_non_exhaustive()
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// A refresh re-reads rows changed this long before the previous one started (clock steps,
/// transactions committing late).
const REFRESH_SLACK_MS: i64 = 10_000;

impl KeyStore {
    /// Opens the store: reads and decrypts every key, reads the revocation list.
    pub async fn open(
        db: Database,
        master: MasterKey,
        config: KeyStoreConfig,
    ) -> Result<Arc<Self>, Error> {
        let store = Arc::new(Self {
            db,
            master,
            config,
            cache: RwLock::new(HashMap::new()),
            revocations: Arc::new(RevocationList::new()),
            last_refresh_ms: Mutex::new(0),
        });
        store.refresh().await?;
        Ok(store)
    }

    /// Opens the store with the master key file of `data_dir` (see [`MASTER_KEY_FILE`]).
    pub async fn open_in(data_dir: &Path, db: Database) -> Result<Arc<Self>, Error> {
        let master = MasterKey::load(&master_key_path(data_dir))?;
        Self::open(db, master, KeyStoreConfig::default()).await
    }

    /// The revocation list to give the broker ([`crate::broker::BrokerConfig::revocations`]).
    pub fn revocations(&self) -> Arc<RevocationList> {
        self.revocations.clone()
    }

    /// The database the store works on.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Re-reads changed keys and the whole revocation list.
    pub async fn refresh(&self) -> Result<(), Error> {
        let started = crate::now_ms();
        let since = {
            let last = *self
                .last_refresh_ms
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last == 0 {
                0
            } else {
                last - REFRESH_SLACK_MS
            }
        };
        let rows = self.db.keys().keys_changed_since(since).await?;
        let mut fresh: HashMap<MeterId, Vec<CachedKey>> = HashMap::new();
        for row in rows {
            match self.master.open(&row.meter, row.version, &row.sealed) {
                Ok(key) => fresh.entry(row.meter.clone()).or_default().push(CachedKey {
                    version: row.version,
                    key,
                    retire_at_ms: row.retire_at_ms,
                }),
                // One bad row must not take every other meter down; the meter's envelopes
                // are quarantined ("no key") until it is fixed.
                Err(e) => tracing::error!(meter = %row.meter, version = row.version, error = %e,
                    "meter key not loaded"),
            }
        }
        {
            let mut cache = write(&self.cache);
            for (meter, versions) in fresh {
                let entry = cache.entry(meter).or_default();
                for v in versions {
                    match entry.iter_mut().find(|c| c.version == v.version) {
                        Some(c) => {
                            // Never postpone a retirement this process already applied.
                            c.retire_at_ms = match (c.retire_at_ms, v.retire_at_ms) {
                                (Some(a), Some(b)) => Some(a.min(b)),
                                (a, b) => a.or(b),
                            };
                        }
                        None => entry.push(v),
                    }
                }
                entry.sort_by_key(|k| std::cmp::Reverse(k.version));
            }
        }
        let serials: HashSet<String> = self
            .db
            .keys()
            .revoked_serials()
            .await?
            .into_iter()
            .collect();
        let meters: HashMap<MeterId, String> = self
            .db
            .keys()
            .revoked_meters()
            .await?
            .into_iter()
            .map(|r| (r.meter, r.reason))
            .collect();
        self.revocations.replace(serials, meters);
        *self
            .last_refresh_ms
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = started;
        Ok(())
    }

    /// Refreshes every `refresh_interval` until the returned task is aborted.
    pub fn spawn_refresh(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let store = Arc::downgrade(self);
        let every = self.config.refresh_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(store) = store.upgrade() else { return };
                if let Err(e) = store.refresh().await {
                    tracing::warn!(error = %e, "key store refresh failed; retrying");
                }
            }
        })
    }

    /// Creates the next key version of `meter` (version 1 at enrolment) and returns it.
    /// Older versions are retired after `grace` (or at the meter's first envelope under the
    /// new key); `grace` of zero retires them now (a compromised key).
    pub async fn rotate_with_grace(
        &self,
        meter: &MeterId,
        grace: Duration,
    ) -> Result<(u32, MeterKey), Error> {
        let existing = self.db.keys().meter_keys(meter).await?;
        let version = existing.first().map_or(1, |k| k.version + 1);
        let key = MeterKey::generate();
        let now = crate::now_ms();
        self.db
            .keys()
            .insert_key(&StoredKey {
                meter: meter.clone(),
                version,
                sealed: self.master.seal(meter, version, &key)?,
                created_ms: now,
                retire_at_ms: None,
            })
            .await?;
        let retire_at = now.saturating_add(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX));
        if version > 1 {
            self.db
                .keys()
                .retire_keys(meter, version, retire_at, now)
                .await?;
        }
        {
            let mut cache = write(&self.cache);
            let entry = cache.entry(meter.clone()).or_default();
            for old in entry.iter_mut() {
                old.retire_at_ms = Some(old.retire_at_ms.map_or(retire_at, |r| r.min(retire_at)));
            }
            entry.insert(
                0,
                CachedKey {
                    version,
                    key: key.clone(),
                    retire_at_ms: None,
                },
            );
        }
        tracing::info!(%meter, version, "meter sealing key created");
        Ok((version, key))
    }

    /// [`Self::rotate_with_grace`] with the configured grace period.
    pub async fn rotate(&self, meter: &MeterId) -> Result<(u32, MeterKey), Error> {
        self.rotate_with_grace(meter, self.config.rotation_grace)
            .await
    }

    /// The newest key of `meter` from the database (to re-issue a bundle).
    pub async fn current_key(&self, meter: &MeterId) -> Result<Option<(u32, MeterKey)>, Error> {
        match self.db.keys().meter_keys(meter).await?.first() {
            Some(k) => Ok(Some((
                k.version,
                self.master.open(meter, k.version, &k.sealed)?,
            ))),
            None => Ok(None),
        }
    }

    /// Records a certificate issued to `meter`.
    pub async fn record_cert(&self, cert: &CertRecord) -> Result<(), Error> {
        self.db.keys().insert_cert(cert).await
    }

    /// The certificates of `meter`, oldest first.
    pub async fn certs(&self, meter: &MeterId) -> Result<Vec<CertRecord>, Error> {
        self.db.keys().meter_certs(meter).await
    }

    /// Revokes `meter`: every certificate it holds, and its envelopes from now on. Takes effect
    /// at once in this process (live connections close, ingest quarantines), within one refresh
    /// interval in other processes.
    pub async fn revoke_meter(&self, meter: &MeterId, reason: &str) -> Result<Vec<String>, Error> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(Error::invalid("a revocation needs a reason"));
        }
        let serials = self
            .db
            .keys()
            .revoke_meter(meter, reason, crate::now_ms())
            .await?;
        let all: Vec<String> = self
            .db
            .keys()
            .meter_certs(meter)
            .await?
            .into_iter()
            .map(|c| c.serial)
            .collect();
        self.revocations
            .add(all, Some((meter.clone(), reason.to_owned())));
        tracing::warn!(%meter, %reason, certificates = serials.len(), "meter revoked");
        Ok(serials)
    }

    /// Whether `meter` is revoked, and why.
    pub fn meter_revoked(&self, meter: &MeterId) -> Option<String> {
        self.revocations.meter_revoked(meter)
    }

    fn accepted(&self, meter: &MeterId, now_ms: i64) -> Vec<CachedKey> {
        read(&self.cache)
            .get(meter)
            .map(|v| {
                v.iter()
                    .filter(|k| k.retire_at_ms.is_none_or(|t| t > now_ms))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// `DIR/master.key`.
pub fn master_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(MASTER_KEY_FILE)
}

impl KeySource for KeyStore {
    fn key(&self, meter: &MeterId) -> Option<MeterKey> {
        self.accepted(meter, crate::now_ms())
            .into_iter()
            .next()
            .map(|k| k.key)
    }

    fn keys(&self, meter: &MeterId) -> Vec<MeterKey> {
        self.accepted(meter, crate::now_ms())
            .into_iter()
            .map(|k| k.key)
            .collect()
    }

    fn opened_with(&self, meter: &MeterId, index: usize) {
        if index != 0 {
            return;
        }
        let now = crate::now_ms();
        let newest = {
            let mut cache = write(&self.cache);
            let Some(versions) = cache.get_mut(meter) else {
                return;
            };
            let Some(newest) = versions.first().map(|k| k.version) else {
                return;
            };
            let mut changed = false;
            for old in versions.iter_mut().skip(1) {
                if old.retire_at_ms.is_none_or(|t| t > now) {
                    old.retire_at_ms = Some(now);
                    changed = true;
                }
            }
            if !changed {
                return;
            }
            newest
        };
        tracing::info!(%meter, version = newest, "meter uses its new key; older keys retired");
        // Persist outside the ingest path; if it fails the grace deadline still applies.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let db = self.db.clone();
            let meter = meter.clone();
            rt.spawn(async move {
                if let Err(e) = db.keys().retire_keys(&meter, newest, now, now).await {
                    tracing::warn!(%meter, error = %e, "could not record the retirement of old keys");
                }
            });
        }
    }

    fn refused(&self, meter: &MeterId) -> Option<String> {
        self.revocations
            .meter_revoked(meter)
            .map(|why| format!("meter {meter} is revoked: {why}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn master_key_is_owner_only_and_binds_meter_and_version() {
        let dir = temp_dir("wattline-master");
        let path = dir.join(MASTER_KEY_FILE);
        let master = MasterKey::create(&path).unwrap();
        assert!(MasterKey::create(&path).is_err(), "never overwritten");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
            let err = MasterKey::load(&path).unwrap_err().to_string();
            assert!(
                err.contains("mode 640") && err.contains("chmod 600"),
                "{err}"
            );
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let again = MasterKey::load(&path).unwrap();
        let m1 = MeterId::parse("m1").unwrap();
        let m2 = MeterId::parse("m2").unwrap();
        let key = MeterKey::generate();
        let sealed = master.seal(&m1, 3, &key).unwrap();
        assert!(!sealed.windows(32).any(|w| w == key.to_hex().as_bytes()));
        assert_eq!(again.open(&m1, 3, &sealed).unwrap().to_hex(), key.to_hex());
        assert!(again.open(&m2, 3, &sealed).is_err(), "other meter");
        assert!(again.open(&m1, 2, &sealed).is_err(), "other version");
        let mut bad = sealed.clone();
        bad[30] ^= 1;
        assert!(again.open(&m1, 3, &bad).is_err(), "modified");
        assert!(again.open(&m1, 3, &sealed[..20]).is_err(), "truncated");
        let other = MasterKey::from_bytes([7; 32]);
        assert!(other.open(&m1, 3, &sealed).is_err(), "other master key");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rotation_keeps_the_old_key_until_the_new_one_is_used() {
        let dir = temp_dir("wattline-keystore");
        let db = Database::Sqlite(crate::SqliteStore::open(&dir).await.unwrap());
        let master = MasterKey::from_bytes([9; 32]);
        let ks = KeyStore::open(db.clone(), master.clone(), KeyStoreConfig::default())
            .await
            .unwrap();
        let m = MeterId::parse("m1").unwrap();
        assert!(ks.key(&m).is_none());
        let (v1, k1) = ks.rotate(&m).await.unwrap();
        assert_eq!(v1, 1);
        assert_eq!(ks.key(&m).unwrap().to_hex(), k1.to_hex());
        let (v2, k2) = ks.rotate(&m).await.unwrap();
        assert_eq!(v2, 2);
        let keys: Vec<String> = ks.keys(&m).iter().map(|k| k.to_hex()).collect();
        assert_eq!(
            keys,
            [k2.to_hex(), k1.to_hex()],
            "newest first, old still accepted"
        );
        // A second process sees the same keys (decrypted from the database).
        let other = KeyStore::open(db.clone(), master.clone(), KeyStoreConfig::default())
            .await
            .unwrap();
        assert_eq!(other.keys(&m).len(), 2);
        // An envelope under an old key changes nothing; the first under the new key retires v1.
        ks.opened_with(&m, 1);
        assert_eq!(ks.keys(&m).len(), 2);
        ks.opened_with(&m, 0);
        assert_eq!(ks.keys(&m).len(), 1);
        // ... and the retirement reaches the database (persisted in the background).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stored = db.keys().meter_keys(&m).await.unwrap();
            if stored[1].retire_at_ms.is_some_and(|t| t <= crate::now_ms()) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "retirement not stored"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        other.refresh().await.unwrap();
        assert_eq!(other.keys(&m).len(), 1);
        // Zero grace (a compromised key): the old version is refused at once.
        let (_, k3) = ks.rotate_with_grace(&m, Duration::ZERO).await.unwrap();
        let keys: Vec<String> = ks.keys(&m).iter().map(|k| k.to_hex()).collect();
        assert_eq!(keys, [k3.to_hex()]);
        // Another master key cannot read them: nothing loads, nothing crashes.
        let wrong = KeyStore::open(
            db.clone(),
            MasterKey::from_bytes([1; 32]),
            KeyStoreConfig::default(),
        )
        .await
        .unwrap();
        assert!(wrong.key(&m).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn revocation_reaches_another_process_on_refresh() {
        let dir = temp_dir("wattline-revoke");
        let db = Database::Sqlite(crate::SqliteStore::open(&dir).await.unwrap());
        let master = MasterKey::from_bytes([3; 32]);
        let cli = KeyStore::open(db.clone(), master.clone(), KeyStoreConfig::default())
            .await
            .unwrap();
        let server = KeyStore::open(db.clone(), master, KeyStoreConfig::default())
            .await
            .unwrap();
        let m = MeterId::parse("m9").unwrap();
        cli.record_cert(&CertRecord {
            serial: "7f01".into(),
            meter: m.clone(),
            issued_ms: 1,
            not_after_ms: i64::MAX,
            revoked: None,
        })
        .await
        .unwrap();
        assert!(cli.revoke_meter(&m, "  ").await.is_err(), "reason required");
        let watch = server.revocations().subscribe();
        cli.revoke_meter(&m, "stolen from the site").await.unwrap();
        assert!(cli.revocations().serial_revoked("7f01"));
        assert!(server.refused(&m).is_none(), "not before the refresh");
        server.refresh().await.unwrap();
        assert!(watch.has_changed().unwrap());
        assert!(server.revocations().serial_revoked("7f01"));
        assert_eq!(
            server.refused(&m).as_deref(),
            Some("meter m9 is revoked: stolen from the site")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
