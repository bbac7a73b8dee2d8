//! Meter key material and certificates (migrations 600–699): sealing keys encrypted under the
//! server master key with a version per meter, issued client certificates by serial, and
//! revocations. The database never holds a sealing key in the clear: `sealed` is
//! `nonce || XChaCha20-Poly1305 ciphertext` made by [`crate::keystore::MasterKey`].

use async_trait::async_trait;
use schema::MeterId;

use super::extensions::Migration;
use super::{PgStore, SqliteStore};
use crate::Error;

pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    version: 600,
    sqlite: r#"
CREATE TABLE meter_keys (
    meter TEXT NOT NULL,
    version INTEGER NOT NULL,
    sealed BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    retire_at_ms INTEGER,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (meter, version)
);
CREATE INDEX meter_keys_updated ON meter_keys (updated_ms);
CREATE TABLE meter_certs (
    serial TEXT PRIMARY KEY,
    meter TEXT NOT NULL,
    issued_ms INTEGER NOT NULL,
    not_after_ms INTEGER NOT NULL,
    revoked_ms INTEGER,
    revoke_reason TEXT
);
CREATE INDEX meter_certs_meter ON meter_certs (meter);
CREATE TABLE meter_revocations (
    meter TEXT PRIMARY KEY,
    revoked_ms INTEGER NOT NULL,
    reason TEXT NOT NULL
);
"#,
    postgres: r#"
CREATE TABLE meter_keys (
    meter TEXT NOT NULL,
    version INTEGER NOT NULL,
    sealed BYTEA NOT NULL,
    created_ms BIGINT NOT NULL,
    retire_at_ms BIGINT,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (meter, version)
);
CREATE INDEX meter_keys_updated ON meter_keys (updated_ms);
CREATE TABLE meter_certs (
    serial TEXT PRIMARY KEY,
    meter TEXT NOT NULL,
    issued_ms BIGINT NOT NULL,
    not_after_ms BIGINT NOT NULL,
    revoked_ms BIGINT,
    revoke_reason TEXT
);
CREATE INDEX meter_certs_meter ON meter_certs (meter);
CREATE TABLE meter_revocations (
    meter TEXT PRIMARY KEY,
    revoked_ms BIGINT NOT NULL,
    reason TEXT NOT NULL
);
"#,
}];

/// One stored (encrypted) sealing key version.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The meter.
    pub meter: MeterId,
    /// 1 for the enrolment key, +1 per rotation.
    pub version: u32,
    /// `nonce || ciphertext` under the master key.
    pub sealed: Vec<u8>,
    /// When it was made, Unix ms.
    pub created_ms: i64,
    /// From when it is no longer accepted (set by a rotation), Unix ms.
    pub retire_at_ms: Option<i64>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("meter", &self.meter)
            .field("version", &self.version)
            .field("created_ms", &self.created_ms)
            .field("retire_at_ms", &self.retire_at_ms)
            .finish_non_exhaustive()
    }
}

/// An issued client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRecord {
    /// Serial number, lowercase hex of the DER integer's bytes.
    pub serial: String,
    /// The meter (its common name).
    pub meter: MeterId,
    /// Issued, Unix ms.
    pub issued_ms: i64,
    /// Expiry, Unix ms.
    pub not_after_ms: i64,
    /// Revocation time and reason.
    pub revoked: Option<(i64, String)>,
}

/// A revoked meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterRevocation {
    /// The meter.
    pub meter: MeterId,
    /// When, Unix ms.
    pub revoked_ms: i64,
    /// Why (operator's words).
    pub reason: String,
}

/// The key/certificate tables.
#[async_trait]
pub trait KeysStore: Send + Sync {
    /// Adds a key version; an error if `(meter, version)` exists.
    async fn insert_key(&self, key: &StoredKey) -> Result<(), Error>;
    /// Sets when versions `< below_version` of `meter` stop being accepted, unless already
    /// earlier. `now_ms` is recorded as the change time.
    async fn retire_keys(
        &self,
        meter: &MeterId,
        below_version: u32,
        retire_at_ms: i64,
        now_ms: i64,
    ) -> Result<(), Error>;
    /// Every key version of `meter`, newest first.
    async fn meter_keys(&self, meter: &MeterId) -> Result<Vec<StoredKey>, Error>;
    /// Every key version changed at or after `since_ms` (all when 0), any meter.
    async fn keys_changed_since(&self, since_ms: i64) -> Result<Vec<StoredKey>, Error>;
    /// Records an issued certificate.
    async fn insert_cert(&self, cert: &CertRecord) -> Result<(), Error>;
    /// The certificates of `meter`, oldest first.
    async fn meter_certs(&self, meter: &MeterId) -> Result<Vec<CertRecord>, Error>;
    /// Revokes the meter and every certificate it holds; returns the newly revoked serials.
    async fn revoke_meter(
        &self,
        meter: &MeterId,
        reason: &str,
        now_ms: i64,
    ) -> Result<Vec<String>, Error>;
    /// Revokes one certificate (renewal leaves the old one valid; this is for a lost key).
    async fn revoke_cert(&self, serial: &str, reason: &str, now_ms: i64) -> Result<bool, Error>;
    /// Every revoked serial.
    async fn revoked_serials(&self) -> Result<Vec<String>, Error>;
    /// Every revoked meter.
    async fn revoked_meters(&self) -> Result<Vec<MeterRevocation>, Error>;
}

fn meter_id(text: String) -> Result<MeterId, Error> {
    MeterId::parse(&text).map_err(|e| Error::invalid(format!("stored meter id {text:?}: {e}")))
}

fn version_u32(v: i64) -> Result<u32, Error> {
    u32::try_from(v).map_err(|_| Error::invalid(format!("stored key version {v} out of range")))
}

mod sqlite_impl {
    use rusqlite::params;

    use super::*;
    use crate::store::sqlite::db;

    /// (meter, version, sealed key, created ms, retired ms).
    type KeyRow = (String, i64, Vec<u8>, i64, Option<i64>);

    fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRow> {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    }

    fn to_key(
        (meter, version, sealed, created_ms, retire_at_ms): (
            String,
            i64,
            Vec<u8>,
            i64,
            Option<i64>,
        ),
    ) -> Result<StoredKey, Error> {
        Ok(StoredKey {
            meter: meter_id(meter)?,
            version: version_u32(version)?,
            sealed,
            created_ms,
            retire_at_ms,
        })
    }

    const KEY_COLUMNS: &str = "meter, version, sealed, created_ms, retire_at_ms";

    #[async_trait]
    impl KeysStore for SqliteStore {
        async fn insert_key(&self, key: &StoredKey) -> Result<(), Error> {
            let k = key.clone();
            self.run(true, move |c| {
                c.execute(
                    "INSERT INTO meter_keys (meter, version, sealed, created_ms, retire_at_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?4)",
                    params![k.meter.as_str(), k.version, k.sealed, k.created_ms, k.retire_at_ms],
                )
                .map_err(db("storing a meter key"))?;
                Ok(())
            })
            .await
        }

        async fn retire_keys(
            &self,
            meter: &MeterId,
            below_version: u32,
            retire_at_ms: i64,
            now_ms: i64,
        ) -> Result<(), Error> {
            let m = meter.as_str().to_owned();
            self.run(true, move |c| {
                c.execute(
                    "UPDATE meter_keys SET retire_at_ms = ?3, updated_ms = ?4 WHERE meter = ?1 AND version < ?2 AND (retire_at_ms IS NULL OR retire_at_ms > ?3)",
                    params![m, below_version, retire_at_ms, now_ms],
                )
                .map_err(db("retiring meter keys"))?;
                Ok(())
            })
            .await
        }

        async fn meter_keys(&self, meter: &MeterId) -> Result<Vec<StoredKey>, Error> {
            let m = meter.as_str().to_owned();
            self.run(false, move |c| {
                let mut st = c
                    .prepare(&format!(
                        "SELECT {KEY_COLUMNS} FROM meter_keys WHERE meter = ?1 ORDER BY version DESC"
                    ))
                    .map_err(db("reading meter keys"))?;
                let rows = st
                    .query_map(params![m], key_row)
                    .map_err(db("reading meter keys"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(db("reading meter keys"))?;
                rows.into_iter().map(to_key).collect()
            })
            .await
        }

        async fn keys_changed_since(&self, since_ms: i64) -> Result<Vec<StoredKey>, Error> {
            self.run(false, move |c| {
                let mut st = c
                    .prepare(&format!(
                        "SELECT {KEY_COLUMNS} FROM meter_keys WHERE updated_ms >= ?1 ORDER BY meter, version DESC"
                    ))
                    .map_err(db("reading changed meter keys"))?;
                let rows = st
                    .query_map(params![since_ms], key_row)
                    .map_err(db("reading changed meter keys"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(db("reading changed meter keys"))?;
                rows.into_iter().map(to_key).collect()
            })
            .await
        }

        async fn insert_cert(&self, cert: &CertRecord) -> Result<(), Error> {
            let k = cert.clone();
            self.run(true, move |c| {
                let (revoked_ms, reason) = match k.revoked {
                    Some((t, r)) => (Some(t), Some(r)),
                    None => (None, None),
                };
                c.execute(
                    "INSERT INTO meter_certs (serial, meter, issued_ms, not_after_ms, revoked_ms, revoke_reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![k.serial, k.meter.as_str(), k.issued_ms, k.not_after_ms, revoked_ms, reason],
                )
                .map_err(db("storing a certificate"))?;
                Ok(())
            })
            .await
        }

        async fn meter_certs(&self, meter: &MeterId) -> Result<Vec<CertRecord>, Error> {
            let m = meter.as_str().to_owned();
            self.run(false, move |c| {
                let mut st = c
                    .prepare(
                        "SELECT serial, meter, issued_ms, not_after_ms, revoked_ms, revoke_reason FROM meter_certs WHERE meter = ?1 ORDER BY issued_ms, serial",
                    )
                    .map_err(db("reading certificates"))?;
                let rows = st
                    .query_map(params![m], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, Option<i64>>(4)?,
                            r.get::<_, Option<String>>(5)?,
                        ))
                    })
                    .map_err(db("reading certificates"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(db("reading certificates"))?;
                rows.into_iter()
                    .map(|(serial, meter, issued_ms, not_after_ms, at, why)| {
                        Ok(CertRecord {
                            serial,
                            meter: meter_id(meter)?,
                            issued_ms,
                            not_after_ms,
                            revoked: at.map(|t| (t, why.unwrap_or_default())),
                        })
                    })
                    .collect()
            })
            .await
        }

        async fn revoke_meter(
            &self,
            meter: &MeterId,
            reason: &str,
            now_ms: i64,
        ) -> Result<Vec<String>, Error> {
            let m = meter.as_str().to_owned();
            let reason = reason.to_owned();
            self.run(true, move |c| {
                let tx = c.transaction().map_err(db("revoking a meter"))?;
                let serials = {
                    let mut st = tx
                        .prepare("SELECT serial FROM meter_certs WHERE meter = ?1 AND revoked_ms IS NULL")
                        .map_err(db("revoking a meter"))?;
                    st.query_map(params![m], |r| r.get::<_, String>(0))
                        .map_err(db("revoking a meter"))?
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(db("revoking a meter"))?
                };
                tx.execute(
                    "UPDATE meter_certs SET revoked_ms = ?2, revoke_reason = ?3 WHERE meter = ?1 AND revoked_ms IS NULL",
                    params![m, now_ms, reason],
                )
                .map_err(db("revoking certificates"))?;
                tx.execute(
                    "INSERT INTO meter_revocations (meter, revoked_ms, reason) VALUES (?1, ?2, ?3) ON CONFLICT (meter) DO NOTHING",
                    params![m, now_ms, reason],
                )
                .map_err(db("recording a revocation"))?;
                tx.commit().map_err(db("revoking a meter"))?;
                Ok(serials)
            })
            .await
        }

        async fn revoke_cert(
            &self,
            serial: &str,
            reason: &str,
            now_ms: i64,
        ) -> Result<bool, Error> {
            let s = serial.to_owned();
            let reason = reason.to_owned();
            self.run(true, move |c| {
                let n = c
                    .execute(
                        "UPDATE meter_certs SET revoked_ms = ?2, revoke_reason = ?3 WHERE serial = ?1 AND revoked_ms IS NULL",
                        params![s, now_ms, reason],
                    )
                    .map_err(db("revoking a certificate"))?;
                Ok(n > 0)
            })
            .await
        }

        async fn revoked_serials(&self) -> Result<Vec<String>, Error> {
            self.run(false, |c| {
                let mut st = c
                    .prepare("SELECT serial FROM meter_certs WHERE revoked_ms IS NOT NULL")
                    .map_err(db("reading revoked serials"))?;
                st.query_map([], |r| r.get::<_, String>(0))
                    .map_err(db("reading revoked serials"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(db("reading revoked serials"))
            })
            .await
        }

        async fn revoked_meters(&self) -> Result<Vec<MeterRevocation>, Error> {
            let rows = self
                .run(false, |c| {
                    let mut st = c
                        .prepare("SELECT meter, revoked_ms, reason FROM meter_revocations ORDER BY meter")
                        .map_err(db("reading revoked meters"))?;
                    st.query_map([], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))
                    })
                    .map_err(db("reading revoked meters"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(db("reading revoked meters"))
                })
                .await?;
            rows.into_iter()
                .map(|(m, t, reason)| {
                    Ok(MeterRevocation {
                        meter: meter_id(m)?,
                        revoked_ms: t,
                        reason,
                    })
                })
                .collect()
        }
    }
}

mod pg_impl {
    use super::*;
    use crate::store::postgres::db;

    fn pg_unavailable(e: impl std::fmt::Display) -> Error {
        Error::new(crate::ErrorKind::Unavailable(format!("postgres pool: {e}")))
    }

    fn to_key(r: &tokio_postgres::Row) -> Result<StoredKey, Error> {
        Ok(StoredKey {
            meter: meter_id(r.get(0))?,
            version: version_u32(r.get::<_, i32>(1).into())?,
            sealed: r.get(2),
            created_ms: r.get(3),
            retire_at_ms: r.get(4),
        })
    }

    const KEY_COLUMNS: &str = "meter, version, sealed, created_ms, retire_at_ms";

    fn version_i32(v: u32) -> Result<i32, Error> {
        i32::try_from(v).map_err(|_| Error::invalid(format!("key version {v} out of range")))
    }

    #[async_trait]
    impl KeysStore for PgStore {
        async fn insert_key(&self, key: &StoredKey) -> Result<(), Error> {
            let c = self.pool.get().await.map_err(pg_unavailable)?;
            c.execute(
                "INSERT INTO meter_keys (meter, version, sealed, created_ms, retire_at_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $4)",
                &[&key.meter.as_str(), &version_i32(key.version)?, &key.sealed, &key.created_ms, &key.retire_at_ms],
            )
            .await
            .map_err(db("storing a meter key"))?;
            Ok(())
        }

        async fn retire_keys(
            &self,
            meter: &MeterId,
            below_version: u32,
            retire_at_ms: i64,
            now_ms: i64,
        ) -> Result<(), Error> {
            let c = self.pool.get().await.map_err(pg_unavailable)?;
            c.execute(
                "UPDATE meter_keys SET retire_at_ms = $3, updated_ms = $4 WHERE meter = $1 AND version < $2 AND (retire_at_ms IS NULL OR retire_at_ms > $3)",
                &[&meter.as_str(), &version_i32(below_version)?, &retire_at_ms, &now_ms],
            )
            .await
            .map_err(db("retiring meter keys"))?;
            Ok(())
        }

        async fn meter_keys(&self, meter: &MeterId) -> Result<Vec<StoredKey>, Error> {
            let c = self.pool.get().await.map_err(pg_unavailable)?;
            let rows = c
                .query(
                    &format!("SELECT {KEY_COLUMNS} FROM meter_keys WHERE meter = $1 ORDER BY version DESC"),
                    &[&meter.as_str()],
                )
                .await
                .map_err(db("reading meter keys"))?;
            rows.iter().map(to_key).collect()
        }

        async fn keys_changed_since(&self, since_ms: i64) -> Result<Vec<StoredKey>, Error> {
            let c = self.pool.get().await.map_err(pg_unavailable)?;
            let rows = c
                .query(
                    &format!("SELECT {KEY_COLUMNS} FROM meter_keys WHERE updated_ms >= $1 ORDER BY meter, version DESC"),
                    &[&since_ms],
                )
                .await
                .map_err(db("reading changed meter keys"))?;
            rows.iter().map(to_key).collect()
        }

        async fn insert_cert(&self, cert: &CertRecord) -> Result<(), Error> {
            let c = self.pool.get().await.map_err(pg_unavailable)?;
            let (revoked_ms, reason) = match &cert.revoked {
                Some((t, r)) => (Some(*t), Some(r.as_str())),
                None => (None, None),
            };
            c.execute(
                "INSERT INTO meter_certs (serial, meter, issued_ms, not_after_ms, revoked_ms, revoke_reason) VALUES ($1, $2, $3, $4, $5, $6)",
                &[&cert.serial, &cert.meter.as_str(), &cert.issued_ms, &cert.not_after_ms, &revoked_ms, &reason],
            )
            .await
            .map_err(db("storing a certificate"))?;
            Ok(())
        }

        async fn meter_certs(&self, meter: &MeterId) -> Result<Vec<CertRecord>, Error> {
            let c = self.pool.get().await.map_err(pg_unavailable)?;
            let rows = c
                .query(
                    "SELECT serial, meter, issued_ms, not_after_ms, revoked_ms, revoke_reason FROM meter_certs WHERE meter = $1 ORDER BY issued_ms, serial",
                    &[&meter.as_str()],
                )
                .await
                .map_err(db("reading certificates"))?;
            rows.iter()
                .map(|r| {
                    let at: Option<i64> = r.get(4);
                    let why: Option<String> = r.get(5);
                    Ok(CertRecord {
                        serial: r.get(0),
                        meter: meter_id(r.get(1))?,
                        issued_ms: r.get(2),
                        not_after_ms: r.get(3),
                        revoked: at.map(|t| (t, why.unwrap_or_default())),
                    })
                })
                .collect()
        }

        async fn revoke_meter(
            &self,
            meter: &MeterId,
            reason: &str,
            now_ms: i64,
        ) -> Result<Vec<String>, Error> {
            let mut c = self.pool.get().await.map_err(pg_unavailable)?;
            let tx = c.transaction().await.map_err(db("revoking a meter"))?;
            let rows = tx
                .query(
                    "UPDATE meter_certs SET revoked_ms = $2, revoke_reason = $3 WHERE meter = $1 AND revoked_ms IS NULL RETURNING serial",
                    &[&meter.as_str(), &now_ms, &reason],
                )
                .await
                .map_err(db("revoking certificates"))?;
            tx.execute(
                "INSERT INTO meter_revocations (meter, revoked_ms, reason) VALUES ($1, $2, $3) ON CONFLICT (meter) DO NOTHING",
                &[&meter.as_str(), &now_ms, &reason],
            )
            .await
            .map_err(db("recording a revocation"))?;
            tx.commit().await.map_err(db("revoking a meter"))?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        }

        async fn revoke_cert(
            &self,
            serial: &str,
            reason: &str,
            now_ms: i64,
        ) -> Result<bool, Error> {
            let c = self.pool.get().await.map_err(pg_unavailable)?;
            let n = c
                .execute(
                    "UPDATE meter_certs SET revoked_ms = $2, revoke_reason = $3 WHERE serial = $1 AND revoked_ms IS NULL",
                    &[&serial, &now_ms, &reason],
                )
                .await
                .map_err(db("revoking a certificate"))?;
            Ok(n > 0)
        }

        async fn revoked_serials(&self) -> Result<Vec<String>, Error> {
            let c = self.pool.get().await.map_err(pg_unavailable)?;
            let rows = c
                .query(
                    "SELECT serial FROM meter_certs WHERE revoked_ms IS NOT NULL",
                    &[],
                )
                .await
                .map_err(db("reading revoked serials"))?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        }

        async fn revoked_meters(&self) -> Result<Vec<MeterRevocation>, Error> {
            let c = self.pool.get().await.map_err(pg_unavailable)?;
            let rows = c
                .query(
                    "SELECT meter, revoked_ms, reason FROM meter_revocations ORDER BY meter",
                    &[],
                )
                .await
                .map_err(db("reading revoked meters"))?;
            rows.iter()
                .map(|r| {
                    Ok(MeterRevocation {
                        meter: meter_id(r.get(0))?,
                        revoked_ms: r.get(1),
                        reason: r.get(2),
                    })
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::suite;

    async fn roundtrip(db: &dyn KeysStore) {
        let m = MeterId::parse("k-1").unwrap();
        let other = MeterId::parse("k-2").unwrap();
        let key = |meter: &MeterId, version, t| StoredKey {
            meter: meter.clone(),
            version,
            sealed: vec![version as u8; 72],
            created_ms: t,
            retire_at_ms: None,
        };
        db.insert_key(&key(&m, 1, 1_000)).await.unwrap();
        db.insert_key(&key(&other, 1, 1_000)).await.unwrap();
        assert!(
            db.insert_key(&key(&m, 1, 1_500)).await.is_err(),
            "duplicate version refused"
        );
        db.insert_key(&key(&m, 2, 2_000)).await.unwrap();
        db.retire_keys(&m, 2, 9_000, 2_000).await.unwrap();
        // A later retirement never postpones an earlier one.
        db.retire_keys(&m, 2, 12_000, 2_500).await.unwrap();
        let keys = db.meter_keys(&m).await.unwrap();
        assert_eq!(keys.iter().map(|k| k.version).collect::<Vec<_>>(), [2, 1]);
        assert_eq!(keys[1].retire_at_ms, Some(9_000));
        assert_eq!(keys[0].retire_at_ms, None);
        assert_eq!(keys[1].sealed, vec![1u8; 72]);
        let changed = db.keys_changed_since(1_500).await.unwrap();
        assert_eq!(changed.len(), 2, "{changed:?}");
        assert!(changed.iter().all(|k| k.meter == m));

        let cert = |serial: &str, meter: &MeterId| CertRecord {
            serial: serial.into(),
            meter: meter.clone(),
            issued_ms: 1_000,
            not_after_ms: 99_000,
            revoked: None,
        };
        db.insert_cert(&cert("0a", &m)).await.unwrap();
        db.insert_cert(&cert("0b", &m)).await.unwrap();
        db.insert_cert(&cert("0c", &other)).await.unwrap();
        assert!(db.revoke_cert("0b", "lost", 3_000).await.unwrap());
        assert!(!db.revoke_cert("0b", "again", 3_100).await.unwrap());
        let mut revoked = db.revoke_meter(&m, "stolen", 4_000).await.unwrap();
        revoked.sort();
        assert_eq!(revoked, ["0a"]);
        let mut all = db.revoked_serials().await.unwrap();
        all.sort();
        assert_eq!(all, ["0a", "0b"]);
        let certs = db.meter_certs(&m).await.unwrap();
        assert_eq!(certs[1].revoked, Some((3_000, "lost".into())));
        let meters = db.revoked_meters().await.unwrap();
        assert_eq!(meters.len(), 1);
        assert_eq!(meters[0].meter, m);
        assert_eq!(meters[0].reason, "stolen");
        assert!(db.meter_certs(&other).await.unwrap()[0].revoked.is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_and_certificates_on_sqlite() {
        let t = suite::sqlite_database("wattline-keys").await;
        roundtrip(t.db.keys()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_and_certificates_on_postgres() {
        let Some(t) = suite::postgres_database("wl_keys").await else {
            return;
        };
        roundtrip(t.db.keys()).await;
    }
}
