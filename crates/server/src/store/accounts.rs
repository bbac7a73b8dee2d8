//! Accounts, sessions, API tokens, login attempts and the append-only audit log (migrations
//! 100–199): the [`AccountStore`] trait and its SQLite and PostgreSQL implementations.
//!
//! Secrets never reach this layer in clear: passwords arrive as Argon2id PHC strings, session
//! ids and token secrets as SHA-256 digests (hex). The audit log has an append and a read path
//! only; both dialects also refuse `UPDATE`/`DELETE` on it with a trigger.

use async_trait::async_trait;
use deadpool_postgres::Object;
use rusqlite::{OptionalExtension, params};

use super::extensions::Migration;
use super::{PgStore, SqliteStore};
use crate::http::Role;
use crate::{Error, ErrorKind};

pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    version: 100,
    sqlite: r#"
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'customer')),
    customer_id TEXT,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    csrf_token TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    remote TEXT,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    prefix TEXT NOT NULL UNIQUE,
    secret_hash TEXT NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER,
    last_used_ms INTEGER,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE login_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    username TEXT NOT NULL,
    remote TEXT,
    success INTEGER NOT NULL
);
CREATE INDEX login_attempts_by_user ON login_attempts (username, at_ms);
CREATE INDEX login_attempts_by_remote ON login_attempts (remote, at_ms);
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    remote TEXT,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL,
    outcome TEXT NOT NULL
);
CREATE INDEX audit_log_by_time ON audit_log (at_ms);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
"#,
    postgres: r#"
CREATE TABLE users (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'customer')),
    customer_id TEXT,
    disabled BOOLEAN NOT NULL DEFAULT FALSE,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id),
    csrf_token TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    remote TEXT,
    revoked BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE TABLE api_tokens (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prefix TEXT NOT NULL UNIQUE,
    secret_hash TEXT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT,
    last_used_ms BIGINT,
    revoked BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE TABLE login_attempts (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    username TEXT NOT NULL,
    remote TEXT,
    success BOOLEAN NOT NULL
);
CREATE INDEX login_attempts_by_user ON login_attempts (username, at_ms);
CREATE INDEX login_attempts_by_remote ON login_attempts (remote, at_ms);
CREATE TABLE audit_log (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    remote TEXT,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL,
    outcome TEXT NOT NULL
);
CREATE INDEX audit_log_by_time ON audit_log (at_ms);
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
"#,
}];

/// A user account (without its password hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct User {
    /// Database id.
    pub id: i64,
    /// Unique login name.
    pub username: String,
    /// The role.
    #[serde(serialize_with = "role_ser")]
    pub role: Role,
    /// For customers: the customer whose meters they see.
    pub customer_id: Option<String>,
    /// A disabled account cannot sign in, and its sessions and tokens stop working.
    pub disabled: bool,
    /// Created, Unix ms.
    pub created_ms: i64,
    /// Last changed, Unix ms.
    pub updated_ms: i64,
}

fn role_ser<S: serde::Serializer>(r: &Role, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.as_str())
}

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Unique login name.
    pub username: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// The role.
    pub role: Role,
    /// For customers: their customer id.
    pub customer_id: Option<String>,
}

/// Changes to a user; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct UserChange {
    /// New role.
    pub role: Option<Role>,
    /// New customer binding (`Some(None)` removes it).
    pub customer_id: Option<Option<String>>,
    /// Disable or enable.
    pub disabled: Option<bool>,
}

/// A stored browser session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// SHA-256 (hex) of the cookie value; the value itself is never stored.
    pub id_hash: String,
    /// Whose session.
    pub user_id: i64,
    /// The token unsafe requests must echo.
    pub csrf_token: String,
    /// Created, Unix ms.
    pub created_ms: i64,
    /// Absolute expiry, Unix ms.
    pub expires_ms: i64,
    /// Last request, Unix ms (idle expiry).
    pub last_seen_ms: i64,
    /// Where it signed in from.
    pub remote: Option<String>,
    /// Signed out or cut off by an admin.
    pub revoked: bool,
}

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// GET requests.
    Read,
    /// State changes other than commands and administration.
    Write,
    /// Relay and limiter commands.
    Commands,
    /// User, role, token and tariff administration.
    Admin,
}

impl Scope {
    /// All scopes.
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Write, Scope::Commands, Scope::Admin];

    /// `read`, `write`, `commands` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Commands => "commands",
            Scope::Admin => "admin",
        }
    }

    /// Parses a scope name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

fn scopes_text(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

fn scopes_parse(s: &str) -> Vec<Scope> {
    s.split_whitespace().filter_map(Scope::parse).collect()
}

/// An API token's public part (the secret is only ever shown once, at creation).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiToken {
    /// Database id.
    pub id: i64,
    /// Public lookup prefix (part of the token string).
    pub prefix: String,
    /// Owner.
    pub user_id: i64,
    /// What it is for.
    pub name: String,
    /// What it may do (never more than its owner's role allows).
    #[serde(serialize_with = "scopes_ser")]
    pub scopes: Vec<Scope>,
    /// Created, Unix ms.
    pub created_ms: i64,
    /// Expiry, Unix ms.
    pub expires_ms: Option<i64>,
    /// Last use, Unix ms.
    pub last_used_ms: Option<i64>,
    /// Revoked tokens never authenticate.
    pub revoked: bool,
}

fn scopes_ser<S: serde::Serializer>(v: &[Scope], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for x in v {
        seq.serialize_element(x.as_str())?;
    }
    seq.end()
}

/// A token to create.
#[derive(Debug, Clone)]
pub struct NewApiToken {
    /// Public lookup prefix.
    pub prefix: String,
    /// SHA-256 (hex) of the secret part.
    pub secret_hash: String,
    /// Owner.
    pub user_id: i64,
    /// What it is for.
    pub name: String,
    /// Scopes.
    pub scopes: Vec<Scope>,
    /// Created, Unix ms.
    pub created_ms: i64,
    /// Expiry, Unix ms.
    pub expires_ms: Option<i64>,
}

/// One audit-trail line: who, when, from where, what, on what, why, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditRecord {
    /// Position in the log (0 before it is appended).
    pub id: i64,
    /// When, Unix ms.
    pub at_ms: i64,
    /// Who: a username, `admin-token`, `system`, or the name tried at a failed login.
    pub actor: String,
    /// From where (IP address), when known.
    pub remote: Option<String>,
    /// What, e.g. `login`, `user.create`, `relay.command`.
    pub action: String,
    /// On what, e.g. `user:alice`, `meter:house-7`.
    pub target: String,
    /// Why / details (never a secret).
    pub detail: String,
    /// `ok`, `denied`, `failed`, ...
    pub outcome: String,
}

/// Which audit lines to read. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Exact actor.
    pub actor: Option<String>,
    /// Exact action.
    pub action: Option<String>,
    /// Exact target.
    pub target: Option<String>,
    /// Exact outcome.
    pub outcome: Option<String>,
    /// From (inclusive), Unix ms.
    pub since_ms: Option<i64>,
    /// Until (exclusive), Unix ms.
    pub until_ms: Option<i64>,
    /// Only lines with an id below this (paging backwards).
    pub before_id: Option<i64>,
    /// Most lines, newest first.
    pub limit: u32,
}

/// Accounts, sessions, tokens, login attempts and the audit log.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates a user; a taken username is `InvalidInput`.
    async fn create_user(&self, user: &NewUser, now_ms: i64) -> Result<User, Error>;
    /// A user by id.
    async fn user(&self, id: i64) -> Result<Option<User>, Error>;
    /// A user and their password hash by login name.
    async fn user_credentials(&self, username: &str) -> Result<Option<(User, String)>, Error>;
    /// All users, by name.
    async fn users(&self) -> Result<Vec<User>, Error>;
    /// Applies `change`; `None` when the user does not exist.
    async fn update_user(
        &self,
        id: i64,
        change: &UserChange,
        now_ms: i64,
    ) -> Result<Option<User>, Error>;
    /// Replaces the password hash; false when the user does not exist.
    async fn set_password(&self, id: i64, password_hash: &str, now_ms: i64) -> Result<bool, Error>;

    /// Stores a new session.
    async fn create_session(&self, session: &StoredSession) -> Result<(), Error>;
    /// A session and its user by id hash.
    async fn session(&self, id_hash: &str) -> Result<Option<(StoredSession, User)>, Error>;
    /// Records a request on the session (idle expiry).
    async fn touch_session(&self, id_hash: &str, now_ms: i64) -> Result<(), Error>;
    /// Revokes one session; false when unknown.
    async fn revoke_session(&self, id_hash: &str) -> Result<bool, Error>;
    /// Revokes all of a user's sessions (password reset, disabling); how many.
    async fn revoke_user_sessions(&self, user_id: i64) -> Result<u64, Error>;

    /// Stores a new API token.
    async fn create_token(&self, token: &NewApiToken) -> Result<ApiToken, Error>;
    /// A token and its secret hash by prefix.
    async fn token_by_prefix(&self, prefix: &str) -> Result<Option<(ApiToken, String)>, Error>;
    /// Tokens of one user, or of everybody.
    async fn tokens(&self, user_id: Option<i64>) -> Result<Vec<ApiToken>, Error>;
    /// Revokes a token (only the owner's when `user_id` is given); false when not found.
    async fn revoke_token(&self, id: i64, user_id: Option<i64>) -> Result<bool, Error>;
    /// Records a use of the token.
    async fn touch_token(&self, id: i64, now_ms: i64) -> Result<(), Error>;

    /// Records a login attempt (rate limiting and lockout).
    async fn record_login_attempt(
        &self,
        username: &str,
        remote: Option<&str>,
        success: bool,
        at_ms: i64,
    ) -> Result<(), Error>;
    /// Failed logins for `username` since `since_ms` that came after its last success.
    async fn login_failures_for_user(&self, username: &str, since_ms: i64) -> Result<u32, Error>;
    /// Failed logins from `remote` since `since_ms`, and the time of the latest.
    async fn login_failures_from(
        &self,
        remote: &str,
        since_ms: i64,
    ) -> Result<(u32, Option<i64>), Error>;
    /// The latest failed login for `username` since `since_ms` (lockout end).
    async fn last_login_failure_for_user(
        &self,
        username: &str,
        since_ms: i64,
    ) -> Result<Option<i64>, Error>;

    /// Appends an audit line; returns its id.
    async fn append_audit(&self, record: &AuditRecord) -> Result<i64, Error>;
    /// Reads audit lines, newest first.
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, Error>;
}

fn role_parse(s: &str) -> Result<Role, Error> {
    Role::parse(s).ok_or_else(|| Error::invalid(format!("stored role {s:?} is unknown")))
}

// ---------------------------------------------------------------------------------------------
// SQLite

use super::sqlite::db as sdb;

const USER_COLS: &str = "id, username, role, customer_id, disabled, created_ms, updated_ms";

type UserRow = (i64, String, String, Option<String>, bool, i64, i64);

fn sqlite_user_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<UserRow> {
    Ok((
        r.get(at)?,
        r.get(at + 1)?,
        r.get(at + 2)?,
        r.get(at + 3)?,
        r.get(at + 4)?,
        r.get(at + 5)?,
        r.get(at + 6)?,
    ))
}

fn user_from(row: UserRow) -> Result<User, Error> {
    let (id, username, role, customer_id, disabled, created_ms, updated_ms) = row;
    Ok(User {
        id,
        username,
        role: role_parse(&role)?,
        customer_id,
        disabled,
        created_ms,
        updated_ms,
    })
}

const TOKEN_COLS: &str =
    "id, prefix, user_id, name, scopes, created_ms, expires_ms, last_used_ms, revoked";

fn sqlite_token(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiToken> {
    Ok(ApiToken {
        id: r.get(0)?,
        prefix: r.get(1)?,
        user_id: r.get(2)?,
        name: r.get(3)?,
        scopes: scopes_parse(&r.get::<_, String>(4)?),
        created_ms: r.get(5)?,
        expires_ms: r.get(6)?,
        last_used_ms: r.get(7)?,
        revoked: r.get(8)?,
    })
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn create_user(&self, user: &NewUser, now_ms: i64) -> Result<User, Error> {
        let u = user.clone();
        let id = self
            .run(true, move |c| {
                c.execute(
                    "INSERT INTO users (username, password_hash, role, customer_id, disabled, created_ms, updated_ms)
                     VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5)",
                    params![u.username, u.password_hash, u.role.as_str(), u.customer_id, now_ms],
                )
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        Error::invalid(format!("username {:?} is taken", u.username))
                    } else {
                        sdb("creating a user")(e)
                    }
                })?;
                Ok(c.last_insert_rowid())
            })
            .await?;
        Ok(User {
            id,
            username: user.username.clone(),
            role: user.role,
            customer_id: user.customer_id.clone(),
            disabled: false,
            created_ms: now_ms,
            updated_ms: now_ms,
        })
    }

    async fn user(&self, id: i64) -> Result<Option<User>, Error> {
        self.run(false, move |c| {
            c.query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE id = ?1"),
                [id],
                |r| sqlite_user_row(r, 0),
            )
            .optional()
            .map_err(sdb("reading a user"))?
            .map(user_from)
            .transpose()
        })
        .await
    }

    async fn user_credentials(&self, username: &str) -> Result<Option<(User, String)>, Error> {
        let name = username.to_owned();
        self.run(false, move |c| {
            let row = c
                .query_row(
                    &format!("SELECT {USER_COLS}, password_hash FROM users WHERE username = ?1"),
                    [name],
                    |r| Ok((sqlite_user_row(r, 0)?, r.get::<_, String>(7)?)),
                )
                .optional()
                .map_err(sdb("reading a user's credentials"))?;
            row.map(|(u, h)| Ok((user_from(u)?, h))).transpose()
        })
        .await
    }

    async fn users(&self) -> Result<Vec<User>, Error> {
        self.run(false, |c| {
            let mut st = c
                .prepare(&format!("SELECT {USER_COLS} FROM users ORDER BY username"))
                .map_err(sdb("listing users"))?;
            let rows = st
                .query_map([], |r| sqlite_user_row(r, 0))
                .map_err(sdb("listing users"))?;
            rows.map(|r| user_from(r.map_err(sdb("listing users"))?))
                .collect()
        })
        .await
    }

    async fn update_user(
        &self,
        id: i64,
        change: &UserChange,
        now_ms: i64,
    ) -> Result<Option<User>, Error> {
        let ch = change.clone();
        let found = self
            .run(true, move |c| {
                let tx = c.transaction().map_err(sdb("updating a user"))?;
                let n = tx
                    .execute(
                        "UPDATE users SET updated_ms = ?2 WHERE id = ?1",
                        params![id, now_ms],
                    )
                    .map_err(sdb("updating a user"))?;
                if n == 0 {
                    return Ok(false);
                }
                if let Some(role) = ch.role {
                    tx.execute(
                        "UPDATE users SET role = ?2 WHERE id = ?1",
                        params![id, role.as_str()],
                    )
                    .map_err(sdb("updating a user's role"))?;
                }
                if let Some(customer) = &ch.customer_id {
                    tx.execute(
                        "UPDATE users SET customer_id = ?2 WHERE id = ?1",
                        params![id, customer],
                    )
                    .map_err(sdb("updating a user's customer"))?;
                }
                if let Some(disabled) = ch.disabled {
                    tx.execute(
                        "UPDATE users SET disabled = ?2 WHERE id = ?1",
                        params![id, disabled],
                    )
                    .map_err(sdb("disabling a user"))?;
                }
                tx.commit().map_err(sdb("updating a user"))?;
                Ok(true)
            })
            .await?;
        if found { self.user(id).await } else { Ok(None) }
    }

    async fn set_password(&self, id: i64, password_hash: &str, now_ms: i64) -> Result<bool, Error> {
        let h = password_hash.to_owned();
        self.run(true, move |c| {
            Ok(c.execute(
                "UPDATE users SET password_hash = ?2, updated_ms = ?3 WHERE id = ?1",
                params![id, h, now_ms],
            )
            .map_err(sdb("setting a password"))?
                > 0)
        })
        .await
    }

    async fn create_session(&self, s: &StoredSession) -> Result<(), Error> {
        let s = s.clone();
        self.run(true, move |c| {
            c.execute(
                "INSERT INTO sessions (id_hash, user_id, csrf_token, created_ms, expires_ms, last_seen_ms, remote, revoked)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![s.id_hash, s.user_id, s.csrf_token, s.created_ms, s.expires_ms, s.last_seen_ms, s.remote, s.revoked],
            )
            .map_err(sdb("creating a session"))?;
            Ok(())
        })
        .await
    }

    async fn session(&self, id_hash: &str) -> Result<Option<(StoredSession, User)>, Error> {
        let h = id_hash.to_owned();
        self.run(false, move |c| {
            let row = c
                .query_row(
                    "SELECT s.id_hash, s.user_id, s.csrf_token, s.created_ms, s.expires_ms, s.last_seen_ms, s.remote, s.revoked,
                            u.id, u.username, u.role, u.customer_id, u.disabled, u.created_ms, u.updated_ms
                     FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = ?1",
                    [h],
                    |r| {
                        Ok((
                            StoredSession {
                                id_hash: r.get(0)?,
                                user_id: r.get(1)?,
                                csrf_token: r.get(2)?,
                                created_ms: r.get(3)?,
                                expires_ms: r.get(4)?,
                                last_seen_ms: r.get(5)?,
                                remote: r.get(6)?,
                                revoked: r.get(7)?,
                            },
                            sqlite_user_row(r, 8)?,
                        ))
                    },
                )
                .optional()
                .map_err(sdb("reading a session"))?;
            row.map(|(s, u)| Ok((s, user_from(u)?))).transpose()
        })
        .await
    }

    async fn touch_session(&self, id_hash: &str, now_ms: i64) -> Result<(), Error> {
        let h = id_hash.to_owned();
        self.run(true, move |c| {
            c.execute(
                "UPDATE sessions SET last_seen_ms = MAX(last_seen_ms, ?2) WHERE id_hash = ?1",
                params![h, now_ms],
            )
            .map_err(sdb("touching a session"))?;
            Ok(())
        })
        .await
    }

    async fn revoke_session(&self, id_hash: &str) -> Result<bool, Error> {
        let h = id_hash.to_owned();
        self.run(true, move |c| {
            Ok(c.execute(
                "UPDATE sessions SET revoked = 1 WHERE id_hash = ?1 AND revoked = 0",
                [h],
            )
            .map_err(sdb("revoking a session"))?
                > 0)
        })
        .await
    }

    async fn revoke_user_sessions(&self, user_id: i64) -> Result<u64, Error> {
        self.run(true, move |c| {
            Ok(c.execute(
                "UPDATE sessions SET revoked = 1 WHERE user_id = ?1 AND revoked = 0",
                [user_id],
            )
            .map_err(sdb("revoking a user's sessions"))? as u64)
        })
        .await
    }

    async fn create_token(&self, t: &NewApiToken) -> Result<ApiToken, Error> {
        let t2 = t.clone();
        let id = self
            .run(true, move |c| {
                c.execute(
                    "INSERT INTO api_tokens (prefix, secret_hash, user_id, name, scopes, created_ms, expires_ms, last_used_ms, revoked)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, 0)",
                    params![t2.prefix, t2.secret_hash, t2.user_id, t2.name, scopes_text(&t2.scopes), t2.created_ms, t2.expires_ms],
                )
                .map_err(sdb("creating an API token"))?;
                Ok(c.last_insert_rowid())
            })
            .await?;
        Ok(ApiToken {
            id,
            prefix: t.prefix.clone(),
            user_id: t.user_id,
            name: t.name.clone(),
            scopes: t.scopes.clone(),
            created_ms: t.created_ms,
            expires_ms: t.expires_ms,
            last_used_ms: None,
            revoked: false,
        })
    }

    async fn token_by_prefix(&self, prefix: &str) -> Result<Option<(ApiToken, String)>, Error> {
        let p = prefix.to_owned();
        self.run(false, move |c| {
            c.query_row(
                &format!("SELECT {TOKEN_COLS}, secret_hash FROM api_tokens WHERE prefix = ?1"),
                [p],
                |r| Ok((sqlite_token(r)?, r.get::<_, String>(9)?)),
            )
            .optional()
            .map_err(sdb("reading an API token"))
        })
        .await
    }

    async fn tokens(&self, user_id: Option<i64>) -> Result<Vec<ApiToken>, Error> {
        self.run(false, move |c| {
            let mut st = c
                .prepare(&format!(
                    "SELECT {TOKEN_COLS} FROM api_tokens WHERE (?1 IS NULL OR user_id = ?1) ORDER BY id"
                ))
                .map_err(sdb("listing API tokens"))?;
            let rows = st
                .query_map([user_id], sqlite_token)
                .map_err(sdb("listing API tokens"))?;
            rows.map(|r| r.map_err(sdb("listing API tokens"))).collect()
        })
        .await
    }

    async fn revoke_token(&self, id: i64, user_id: Option<i64>) -> Result<bool, Error> {
        self.run(true, move |c| {
            Ok(c.execute(
                "UPDATE api_tokens SET revoked = 1 WHERE id = ?1 AND (?2 IS NULL OR user_id = ?2)",
                params![id, user_id],
            )
            .map_err(sdb("revoking an API token"))?
                > 0)
        })
        .await
    }

    async fn touch_token(&self, id: i64, now_ms: i64) -> Result<(), Error> {
        self.run(true, move |c| {
            c.execute(
                "UPDATE api_tokens SET last_used_ms = ?2 WHERE id = ?1",
                params![id, now_ms],
            )
            .map_err(sdb("recording an API token's use"))?;
            Ok(())
        })
        .await
    }

    async fn record_login_attempt(
        &self,
        username: &str,
        remote: Option<&str>,
        success: bool,
        at_ms: i64,
    ) -> Result<(), Error> {
        let (u, r) = (username.to_owned(), remote.map(str::to_owned));
        self.run(true, move |c| {
            c.execute(
                "INSERT INTO login_attempts (at_ms, username, remote, success) VALUES (?1, ?2, ?3, ?4)",
                params![at_ms, u, r, success],
            )
            .map_err(sdb("recording a login attempt"))?;
            Ok(())
        })
        .await
    }

    async fn login_failures_for_user(&self, username: &str, since_ms: i64) -> Result<u32, Error> {
        let u = username.to_owned();
        self.run(false, move |c| {
            c.query_row(
                "SELECT COUNT(*) FROM login_attempts WHERE username = ?1 AND success = 0 AND at_ms >= ?2
                   AND at_ms > COALESCE((SELECT MAX(at_ms) FROM login_attempts WHERE username = ?1 AND success = 1), -1)",
                params![u, since_ms],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u32)
            .map_err(sdb("counting login failures"))
        })
        .await
    }

    async fn login_failures_from(
        &self,
        remote: &str,
        since_ms: i64,
    ) -> Result<(u32, Option<i64>), Error> {
        let r = remote.to_owned();
        self.run(false, move |c| {
            c.query_row(
                "SELECT COUNT(*), MAX(at_ms) FROM login_attempts WHERE remote = ?1 AND success = 0 AND at_ms >= ?2",
                params![r, since_ms],
                |row| Ok((row.get::<_, i64>(0)? as u32, row.get(1)?)),
            )
            .map_err(sdb("counting login failures"))
        })
        .await
    }

    async fn last_login_failure_for_user(
        &self,
        username: &str,
        since_ms: i64,
    ) -> Result<Option<i64>, Error> {
        let u = username.to_owned();
        self.run(false, move |c| {
            c.query_row(
                "SELECT MAX(at_ms) FROM login_attempts WHERE username = ?1 AND success = 0 AND at_ms >= ?2",
                params![u, since_ms],
                |r| r.get(0),
            )
            .map_err(sdb("reading login failures"))
        })
        .await
    }

    async fn append_audit(&self, a: &AuditRecord) -> Result<i64, Error> {
        let a = a.clone();
        self.run(true, move |c| {
            c.execute(
                "INSERT INTO audit_log (at_ms, actor, remote, action, target, detail, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![a.at_ms, a.actor, a.remote, a.action, a.target, a.detail, a.outcome],
            )
            .map_err(sdb("appending to the audit log"))?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    async fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>, Error> {
        let f = f.clone();
        self.run(false, move |c| {
            let mut st = c
                .prepare(
                    "SELECT id, at_ms, actor, remote, action, target, detail, outcome FROM audit_log
                     WHERE (?1 IS NULL OR actor = ?1) AND (?2 IS NULL OR action = ?2)
                       AND (?3 IS NULL OR target = ?3) AND (?4 IS NULL OR outcome = ?4)
                       AND (?5 IS NULL OR at_ms >= ?5) AND (?6 IS NULL OR at_ms < ?6)
                       AND (?7 IS NULL OR id < ?7)
                     ORDER BY id DESC LIMIT ?8",
                )
                .map_err(sdb("reading the audit log"))?;
            let rows = st
                .query_map(
                    params![
                        f.actor,
                        f.action,
                        f.target,
                        f.outcome,
                        f.since_ms,
                        f.until_ms,
                        f.before_id,
                        i64::from(f.limit)
                    ],
                    |r| {
                        Ok(AuditRecord {
                            id: r.get(0)?,
                            at_ms: r.get(1)?,
                            actor: r.get(2)?,
                            remote: r.get(3)?,
                            action: r.get(4)?,
                            target: r.get(5)?,
                            detail: r.get(6)?,
                            outcome: r.get(7)?,
                        })
                    },
                )
                .map_err(sdb("reading the audit log"))?;
            rows.map(|r| r.map_err(sdb("reading the audit log")))
                .collect()
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

use super::postgres::db as pdb;

impl PgStore {
    async fn accounts_client(&self) -> Result<Object, Error> {
        self.pool
            .get()
            .await
            .map_err(|e| Error::new(ErrorKind::Unavailable(format!("postgres pool: {e}"))))
    }
}

fn pg_user(r: &tokio_postgres::Row, at: usize) -> Result<User, Error> {
    user_from((
        r.get(at),
        r.get(at + 1),
        r.get(at + 2),
        r.get(at + 3),
        r.get(at + 4),
        r.get(at + 5),
        r.get(at + 6),
    ))
}

fn pg_token(r: &tokio_postgres::Row) -> ApiToken {
    ApiToken {
        id: r.get(0),
        prefix: r.get(1),
        user_id: r.get(2),
        name: r.get(3),
        scopes: scopes_parse(r.get(4)),
        created_ms: r.get(5),
        expires_ms: r.get(6),
        last_used_ms: r.get(7),
        revoked: r.get(8),
    }
}

#[async_trait]
impl AccountStore for PgStore {
    async fn create_user(&self, u: &NewUser, now_ms: i64) -> Result<User, Error> {
        let row = self
            .accounts_client()
            .await?
            .query_one(
                "INSERT INTO users (username, password_hash, role, customer_id, disabled, created_ms, updated_ms)
                 VALUES ($1, $2, $3, $4, FALSE, $5, $5) RETURNING id",
                &[&u.username, &u.password_hash, &u.role.as_str(), &u.customer_id, &now_ms],
            )
            .await
            .map_err(|e| {
                if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                    Error::invalid(format!("username {:?} is taken", u.username))
                } else {
                    pdb("creating a user")(e)
                }
            })?;
        Ok(User {
            id: row.get(0),
            username: u.username.clone(),
            role: u.role,
            customer_id: u.customer_id.clone(),
            disabled: false,
            created_ms: now_ms,
            updated_ms: now_ms,
        })
    }

    async fn user(&self, id: i64) -> Result<Option<User>, Error> {
        self.accounts_client()
            .await?
            .query_opt(
                &format!("SELECT {USER_COLS} FROM users WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(pdb("reading a user"))?
            .map(|r| pg_user(&r, 0))
            .transpose()
    }

    async fn user_credentials(&self, username: &str) -> Result<Option<(User, String)>, Error> {
        self.accounts_client()
            .await?
            .query_opt(
                &format!("SELECT {USER_COLS}, password_hash FROM users WHERE username = $1"),
                &[&username],
            )
            .await
            .map_err(pdb("reading a user's credentials"))?
            .map(|r| Ok((pg_user(&r, 0)?, r.get(7))))
            .transpose()
    }

    async fn users(&self) -> Result<Vec<User>, Error> {
        self.accounts_client()
            .await?
            .query(
                &format!("SELECT {USER_COLS} FROM users ORDER BY username"),
                &[],
            )
            .await
            .map_err(pdb("listing users"))?
            .iter()
            .map(|r| pg_user(r, 0))
            .collect()
    }

    async fn update_user(
        &self,
        id: i64,
        ch: &UserChange,
        now_ms: i64,
    ) -> Result<Option<User>, Error> {
        let set_customer = ch.customer_id.is_some();
        let customer = ch.customer_id.clone().flatten();
        let role = ch.role.map(Role::as_str);
        let row = self
            .accounts_client()
            .await?
            .query_opt(
                &format!(
                    "UPDATE users SET updated_ms = $2,
                        role = COALESCE($3, role),
                        customer_id = CASE WHEN $4 THEN $5 ELSE customer_id END,
                        disabled = COALESCE($6, disabled)
                     WHERE id = $1 RETURNING {USER_COLS}"
                ),
                &[&id, &now_ms, &role, &set_customer, &customer, &ch.disabled],
            )
            .await
            .map_err(pdb("updating a user"))?;
        row.map(|r| pg_user(&r, 0)).transpose()
    }

    async fn set_password(&self, id: i64, password_hash: &str, now_ms: i64) -> Result<bool, Error> {
        Ok(self
            .accounts_client()
            .await?
            .execute(
                "UPDATE users SET password_hash = $2, updated_ms = $3 WHERE id = $1",
                &[&id, &password_hash, &now_ms],
            )
            .await
            .map_err(pdb("setting a password"))?
            > 0)
    }

    async fn create_session(&self, s: &StoredSession) -> Result<(), Error> {
        self.accounts_client()
            .await?
            .execute(
                "INSERT INTO sessions (id_hash, user_id, csrf_token, created_ms, expires_ms, last_seen_ms, remote, revoked)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[&s.id_hash, &s.user_id, &s.csrf_token, &s.created_ms, &s.expires_ms, &s.last_seen_ms, &s.remote, &s.revoked],
            )
            .await
            .map_err(pdb("creating a session"))?;
        Ok(())
    }

    async fn session(&self, id_hash: &str) -> Result<Option<(StoredSession, User)>, Error> {
        let row = self
            .accounts_client()
            .await?
            .query_opt(
                "SELECT s.id_hash, s.user_id, s.csrf_token, s.created_ms, s.expires_ms, s.last_seen_ms, s.remote, s.revoked,
                        u.id, u.username, u.role, u.customer_id, u.disabled, u.created_ms, u.updated_ms
                 FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = $1",
                &[&id_hash],
            )
            .await
            .map_err(pdb("reading a session"))?;
        row.map(|r| {
            Ok((
                StoredSession {
                    id_hash: r.get(0),
                    user_id: r.get(1),
                    csrf_token: r.get(2),
                    created_ms: r.get(3),
                    expires_ms: r.get(4),
                    last_seen_ms: r.get(5),
                    remote: r.get(6),
                    revoked: r.get(7),
                },
                pg_user(&r, 8)?,
            ))
        })
        .transpose()
    }

    async fn touch_session(&self, id_hash: &str, now_ms: i64) -> Result<(), Error> {
        self.accounts_client()
            .await?
            .execute(
                "UPDATE sessions SET last_seen_ms = GREATEST(last_seen_ms, $2) WHERE id_hash = $1",
                &[&id_hash, &now_ms],
            )
            .await
            .map_err(pdb("touching a session"))?;
        Ok(())
    }

    async fn revoke_session(&self, id_hash: &str) -> Result<bool, Error> {
        Ok(self
            .accounts_client()
            .await?
            .execute(
                "UPDATE sessions SET revoked = TRUE WHERE id_hash = $1 AND NOT revoked",
                &[&id_hash],
            )
            .await
            .map_err(pdb("revoking a session"))?
            > 0)
    }

    async fn revoke_user_sessions(&self, user_id: i64) -> Result<u64, Error> {
        self.accounts_client()
            .await?
            .execute(
                "UPDATE sessions SET revoked = TRUE WHERE user_id = $1 AND NOT revoked",
                &[&user_id],
            )
            .await
            .map_err(pdb("revoking a user's sessions"))
    }

    async fn create_token(&self, t: &NewApiToken) -> Result<ApiToken, Error> {
        let row = self
            .accounts_client()
            .await?
            .query_one(
                "INSERT INTO api_tokens (prefix, secret_hash, user_id, name, scopes, created_ms, expires_ms, last_used_ms, revoked)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, FALSE) RETURNING id",
                &[&t.prefix, &t.secret_hash, &t.user_id, &t.name, &scopes_text(&t.scopes), &t.created_ms, &t.expires_ms],
            )
            .await
            .map_err(pdb("creating an API token"))?;
        Ok(ApiToken {
            id: row.get(0),
            prefix: t.prefix.clone(),
            user_id: t.user_id,
            name: t.name.clone(),
            scopes: t.scopes.clone(),
            created_ms: t.created_ms,
            expires_ms: t.expires_ms,
            last_used_ms: None,
            revoked: false,
        })
    }

    async fn token_by_prefix(&self, prefix: &str) -> Result<Option<(ApiToken, String)>, Error> {
        Ok(self
            .accounts_client()
            .await?
            .query_opt(
                &format!("SELECT {TOKEN_COLS}, secret_hash FROM api_tokens WHERE prefix = $1"),
                &[&prefix],
            )
            .await
            .map_err(pdb("reading an API token"))?
            .map(|r| (pg_token(&r), r.get(9))))
    }

    async fn tokens(&self, user_id: Option<i64>) -> Result<Vec<ApiToken>, Error> {
        Ok(self
            .accounts_client()
            .await?
            .query(
                &format!(
                    "SELECT {TOKEN_COLS} FROM api_tokens WHERE ($1::BIGINT IS NULL OR user_id = $1) ORDER BY id"
                ),
                &[&user_id],
            )
            .await
            .map_err(pdb("listing API tokens"))?
            .iter()
            .map(pg_token)
            .collect())
    }

    async fn revoke_token(&self, id: i64, user_id: Option<i64>) -> Result<bool, Error> {
        Ok(self
            .accounts_client()
            .await?
            .execute(
                "UPDATE api_tokens SET revoked = TRUE WHERE id = $1 AND ($2::BIGINT IS NULL OR user_id = $2)",
                &[&id, &user_id],
            )
            .await
            .map_err(pdb("revoking an API token"))?
            > 0)
    }

    async fn touch_token(&self, id: i64, now_ms: i64) -> Result<(), Error> {
        self.accounts_client()
            .await?
            .execute(
                "UPDATE api_tokens SET last_used_ms = $2 WHERE id = $1",
                &[&id, &now_ms],
            )
            .await
            .map_err(pdb("recording an API token's use"))?;
        Ok(())
    }

    async fn record_login_attempt(
        &self,
        username: &str,
        remote: Option<&str>,
        success: bool,
        at_ms: i64,
    ) -> Result<(), Error> {
        self.accounts_client()
            .await?
            .execute(
                "INSERT INTO login_attempts (at_ms, username, remote, success) VALUES ($1, $2, $3, $4)",
                &[&at_ms, &username, &remote, &success],
            )
            .await
            .map_err(pdb("recording a login attempt"))?;
        Ok(())
    }

    async fn login_failures_for_user(&self, username: &str, since_ms: i64) -> Result<u32, Error> {
        let n: i64 = self
            .accounts_client()
            .await?
            .query_one(
                "SELECT COUNT(*) FROM login_attempts WHERE username = $1 AND NOT success AND at_ms >= $2
                   AND at_ms > COALESCE((SELECT MAX(at_ms) FROM login_attempts WHERE username = $1 AND success), -1)",
                &[&username, &since_ms],
            )
            .await
            .map_err(pdb("counting login failures"))?
            .get(0);
        Ok(n as u32)
    }

    async fn login_failures_from(
        &self,
        remote: &str,
        since_ms: i64,
    ) -> Result<(u32, Option<i64>), Error> {
        let r = self
            .accounts_client()
            .await?
            .query_one(
                "SELECT COUNT(*), MAX(at_ms) FROM login_attempts WHERE remote = $1 AND NOT success AND at_ms >= $2",
                &[&remote, &since_ms],
            )
            .await
            .map_err(pdb("counting login failures"))?;
        Ok((r.get::<_, i64>(0) as u32, r.get(1)))
    }

    async fn last_login_failure_for_user(
        &self,
        username: &str,
        since_ms: i64,
    ) -> Result<Option<i64>, Error> {
        Ok(self
            .accounts_client()
            .await?
            .query_one(
                "SELECT MAX(at_ms) FROM login_attempts WHERE username = $1 AND NOT success AND at_ms >= $2",
                &[&username, &since_ms],
            )
            .await
            .map_err(pdb("reading login failures"))?
            .get(0))
    }

    async fn append_audit(&self, a: &AuditRecord) -> Result<i64, Error> {
        Ok(self
            .accounts_client()
            .await?
            .query_one(
                "INSERT INTO audit_log (at_ms, actor, remote, action, target, detail, outcome)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[
                    &a.at_ms, &a.actor, &a.remote, &a.action, &a.target, &a.detail, &a.outcome,
                ],
            )
            .await
            .map_err(pdb("appending to the audit log"))?
            .get(0))
    }

    async fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>, Error> {
        let limit = i64::from(f.limit);
        Ok(self
            .accounts_client()
            .await?
            .query(
                "SELECT id, at_ms, actor, remote, action, target, detail, outcome FROM audit_log
                 WHERE ($1::TEXT IS NULL OR actor = $1) AND ($2::TEXT IS NULL OR action = $2)
                   AND ($3::TEXT IS NULL OR target = $3) AND ($4::TEXT IS NULL OR outcome = $4)
                   AND ($5::BIGINT IS NULL OR at_ms >= $5) AND ($6::BIGINT IS NULL OR at_ms < $6)
                   AND ($7::BIGINT IS NULL OR id < $7)
                 ORDER BY id DESC LIMIT $8",
                &[
                    &f.actor,
                    &f.action,
                    &f.target,
                    &f.outcome,
                    &f.since_ms,
                    &f.until_ms,
                    &f.before_id,
                    &limit,
                ],
            )
            .await
            .map_err(pdb("reading the audit log"))?
            .iter()
            .map(|r| AuditRecord {
                id: r.get(0),
                at_ms: r.get(1),
                actor: r.get(2),
                remote: r.get(3),
                action: r.get(4),
                target: r.get(5),
                detail: r.get(6),
                outcome: r.get(7),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    //! The same cases on SQLite and PostgreSQL.

    use super::*;
    use crate::Database;
    use test_db::TestDatabase;

    async fn users_sessions_tokens_round_trip(db: &dyn AccountStore) {
        let alice = db
            .create_user(
                &NewUser {
                    username: "alice".into(),
                    password_hash: "$argon2id$x".into(),
                    role: Role::Customer,
                    customer_id: Some("c1".into()),
                },
                1_000,
            )
            .await
            .unwrap();
        let dup = db
            .create_user(
                &NewUser {
                    username: "alice".into(),
                    password_hash: "h".into(),
                    role: Role::Admin,
                    customer_id: None,
                },
                1_001,
            )
            .await
            .unwrap_err();
        assert!(matches!(dup.kind(), ErrorKind::InvalidInput(_)), "{dup}");
        let (u, hash) = db.user_credentials("alice").await.unwrap().unwrap();
        assert_eq!(u, alice);
        assert_eq!(hash, "$argon2id$x");
        assert!(db.user_credentials("bob").await.unwrap().is_none());
        let changed = db
            .update_user(
                alice.id,
                &UserChange {
                    role: Some(Role::Operator),
                    customer_id: Some(None),
                    disabled: None,
                },
                2_000,
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(changed.role, Role::Operator);
        assert_eq!(changed.customer_id, None);
        assert_eq!(changed.updated_ms, 2_000);
        assert!(
            db.update_user(9999, &UserChange::default(), 1)
                .await
                .unwrap()
                .is_none()
        );
        assert!(db.set_password(alice.id, "new", 3_000).await.unwrap());
        assert_eq!(
            db.user_credentials("alice").await.unwrap().unwrap().1,
            "new"
        );
        assert_eq!(db.users().await.unwrap().len(), 1);

        let s = StoredSession {
            id_hash: "abc".into(),
            user_id: alice.id,
            csrf_token: "csrf".into(),
            created_ms: 10,
            expires_ms: 100,
            last_seen_ms: 10,
            remote: Some("127.0.0.1".into()),
            revoked: false,
        };
        db.create_session(&s).await.unwrap();
        db.touch_session("abc", 50).await.unwrap();
        db.touch_session("abc", 40).await.unwrap();
        let (got, user) = db.session("abc").await.unwrap().unwrap();
        assert_eq!(got.last_seen_ms, 50);
        assert_eq!(user.username, "alice");
        assert!(db.revoke_session("abc").await.unwrap());
        assert!(!db.revoke_session("abc").await.unwrap());
        assert!(db.session("abc").await.unwrap().unwrap().0.revoked);
        assert!(db.session("nope").await.unwrap().is_none());

        let t = db
            .create_token(&NewApiToken {
                prefix: "p1".into(),
                secret_hash: "sh".into(),
                user_id: alice.id,
                name: "script".into(),
                scopes: vec![Scope::Read, Scope::Commands],
                created_ms: 5,
                expires_ms: Some(99),
            })
            .await
            .unwrap();
        let (back, sh) = db.token_by_prefix("p1").await.unwrap().unwrap();
        assert_eq!(back, t);
        assert_eq!(sh, "sh");
        assert!(!db.revoke_token(t.id, Some(alice.id + 1)).await.unwrap());
        db.touch_token(t.id, 77).await.unwrap();
        assert!(db.revoke_token(t.id, Some(alice.id)).await.unwrap());
        let listed = db.tokens(Some(alice.id)).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].revoked);
        assert_eq!(listed[0].last_used_ms, Some(77));
        assert!(db.tokens(Some(alice.id + 1)).await.unwrap().is_empty());
    }

    async fn login_attempts_count_failures_since_the_last_success(db: &dyn AccountStore) {
        for t in [10, 20, 30] {
            db.record_login_attempt("bob", Some("10.0.0.1"), false, t)
                .await
                .unwrap();
        }
        assert_eq!(db.login_failures_for_user("bob", 0).await.unwrap(), 3);
        assert_eq!(db.login_failures_for_user("bob", 15).await.unwrap(), 2);
        db.record_login_attempt("bob", Some("10.0.0.2"), true, 40)
            .await
            .unwrap();
        assert_eq!(db.login_failures_for_user("bob", 0).await.unwrap(), 0);
        assert_eq!(
            db.login_failures_from("10.0.0.1", 0).await.unwrap(),
            (3, Some(30))
        );
        assert_eq!(
            db.last_login_failure_for_user("bob", 0).await.unwrap(),
            Some(30)
        );
        assert_eq!(
            db.login_failures_from("10.9.9.9", 0).await.unwrap(),
            (0, None)
        );
    }

    async fn audit_log_filters_and_is_append_only(db: &dyn AccountStore) {
        for (i, action) in ["login", "user.create", "login"].iter().enumerate() {
            db.append_audit(&AuditRecord {
                id: 0,
                at_ms: 100 + i as i64,
                actor: "root".into(),
                remote: None,
                action: (*action).into(),
                target: format!("user:{i}"),
                detail: "d".into(),
                outcome: "ok".into(),
            })
            .await
            .unwrap();
        }
        let all = db
            .audit(&AuditFilter {
                limit: 10,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 3);
        assert!(all[0].id > all[1].id, "newest first");
        let logins = db
            .audit(&AuditFilter {
                action: Some("login".into()),
                since_ms: Some(101),
                limit: 10,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(logins.len(), 1);
        assert_eq!(logins[0].target, "user:2");
    }

    async fn audit_rows_cannot_be_changed_sqlite(store: &SqliteStore) {
        let r = store
            .run(true, |c| {
                c.execute("INSERT INTO audit_log (at_ms, actor, action, target, detail, outcome) VALUES (1,'a','x','t','d','ok')", [])
                    .map_err(sdb("t"))?;
                let upd = c.execute("UPDATE audit_log SET actor = 'b'", []).is_err();
                let del = c.execute("DELETE FROM audit_log", []).is_err();
                Ok((upd, del))
            })
            .await
            .unwrap();
        assert_eq!(r, (true, true));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_sqlite() {
        for case in 0..3 {
            let t = TestDatabase::sqlite().await;
            let db = t.db.clone();
            match case {
                0 => users_sessions_tokens_round_trip(db.accounts()).await,
                1 => login_attempts_count_failures_since_the_last_success(db.accounts()).await,
                _ => {
                    audit_log_filters_and_is_append_only(db.accounts()).await;
                    let Database::Sqlite(s) = &db else {
                        unreachable!()
                    };
                    audit_rows_cannot_be_changed_sqlite(s).await;
                }
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_postgres() {
        for case in 0..3 {
            let Some(t) = TestDatabase::postgres().await else {
                return;
            };
            let db = t.db.clone();
            match case {
                0 => users_sessions_tokens_round_trip(db.accounts()).await,
                1 => login_attempts_count_failures_since_the_last_success(db.accounts()).await,
                _ => {
                    audit_log_filters_and_is_append_only(db.accounts()).await;
                    let Database::Postgres(p) = &db else {
                        unreachable!()
                    };
                    let c = p.accounts_client().await.unwrap();
                    assert!(
                        c.execute("UPDATE audit_log SET actor = 'b'", &[])
                            .await
                            .is_err()
                    );
                    assert!(c.execute("DELETE FROM audit_log", &[]).await.is_err());
                    assert!(c.execute("TRUNCATE audit_log", &[]).await.is_err());
                }
            }
        }
    }
}

/// Test databases for the accounts and auth tests: a fresh SQLite directory or a random
/// PostgreSQL schema, removed on drop. PostgreSQL skips with a message when unreachable,
/// except under `CI=true`, where it fails (like `store/suite.rs`).
#[cfg(test)]
pub(crate) mod test_db {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use crate::{Database, PgConfig, PgStore, SqliteStore};

    static COUNTER: AtomicU64 = AtomicU64::new(0);

    fn unique(prefix: &str) -> String {
        format!(
            "{prefix}_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            crate::now_ms()
        )
    }

    /// A database for one test.
    pub(crate) struct TestDatabase {
        pub db: Database,
        cleanup: Option<Box<dyn FnOnce() + Send>>,
    }

    impl Drop for TestDatabase {
        fn drop(&mut self) {
            if let Some(f) = self.cleanup.take() {
                f();
            }
        }
    }

    impl TestDatabase {
        pub(crate) async fn sqlite() -> Self {
            let dir = std::env::temp_dir().join(unique("wattline-accounts"));
            let store = SqliteStore::open(&dir).await.expect("open sqlite");
            Self {
                db: Database::Sqlite(store),
                cleanup: Some(Box::new(move || {
                    let _ = std::fs::remove_dir_all(&dir);
                })),
            }
        }

        pub(crate) async fn postgres() -> Option<Self> {
            let schema = unique("wl_acc");
            let base = crate::store::suite::pg_base_config();
            let config = PgConfig {
                schema: Some(schema.clone()),
                ..base.clone()
            };
            match PgStore::connect(&config).await {
                Ok(store) => Some(Self {
                    db: Database::Postgres(Arc::new(store)),
                    cleanup: Some(Box::new(move || drop_schema(base, schema))),
                }),
                Err(e)
                    if std::env::var("CI").as_deref() != Ok("true")
                        && matches!(e.kind(), crate::ErrorKind::Unavailable(_)) =>
                {
                    eprintln!("skipping postgres test: {e} (set CI=true to make this a failure)");
                    None
                }
                Err(e) => panic!("postgres store: {e}"),
            }
        }
    }

    fn drop_schema(config: PgConfig, schema: String) {
        let _ = crate::PgStore::drop_schema_blocking(&config, &schema);
    }
}
