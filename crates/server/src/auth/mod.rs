//! Accounts and access (DESIGN §3.7, §4): sign-in with Argon2id passwords, browser sessions,
//! CSRF protection, API tokens with scopes, login rate limiting and lockout, and the
//! append-only audit trail.
//!
//! # Pieces
//! - [`sign_in`]: checks a password (rate limited per name and per address, temporary lockout,
//!   the same Argon2 work for unknown names), audits the attempt, and opens a new session — a
//!   fresh random id at every login, so a planted cookie is never adopted.
//! - [`guard`]: the layer around the whole router. It resolves credentials once per request
//!   (session cookie `wattline_session` or `Authorization: Bearer`), enforces CSRF on
//!   cookie-authenticated state changes (token + `Origin`/`Referer`), enforces API-token scopes,
//!   counts denials, and sets the security headers on every response.
//! - [`audit`]: the one call other areas use to write the audit trail (relay commands, tariff
//!   changes, enrolments).
//! - `routes()`: `/api/v1/auth/{login,logout,me}`, `/api/v1/users`, `/api/v1/tokens`,
//!   `/api/v1/audit`, `/api/v1/audit.csv`.
//!
//! Sessions are our own rows in the [`AccountStore`](crate::AccountStore) rather than
//! tower-sessions/axum-login: the session row has to carry the CSRF token, be stored under a
//! hash, and be revocable per user on both SQLite and PostgreSQL, which is a few queries here
//! and an adapter plus a second schema with those crates.

mod guard;
mod routes;
mod secret;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::StatusCode;

use crate::http::{ApiError, AppState, Caller, Role};
use crate::store::accounts::{
    ApiToken, AuditRecord, NewApiToken, NewUser, StoredSession, User, UserChange,
};

pub use crate::store::accounts::Scope;
pub(crate) use guard::{AuthResolution, guard};
pub(crate) use routes::routes;
pub use secret::{MIN_PASSWORD_CHARS, check_new_password, hash_password, verify_password};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "wattline_session";
/// The header unsafe requests of a browser session carry the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The form field that may carry the CSRF token instead (plain HTML forms).
pub const CSRF_FIELD: &str = "csrf_token";

/// Session lifetimes and login limits.
#[derive(Debug, Clone)]
pub struct AuthPolicy {
    /// A session unused this long ends.
    pub session_idle_ms: i64,
    /// A session ends this long after sign-in, used or not.
    pub session_absolute_ms: i64,
    /// Failed sign-ins for one name (since its last success) that lock it.
    pub max_failures_per_user: u32,
    /// How long a locked name stays locked after its latest failure; also the window failures
    /// are counted in.
    pub lockout_ms: i64,
    /// Failed sign-ins from one address within `ip_window_ms` after which it is refused.
    pub max_failures_per_ip: u32,
    /// The window for `max_failures_per_ip`.
    pub ip_window_ms: i64,
}

impl Default for AuthPolicy {
    fn default() -> Self {
        Self {
            session_idle_ms: 30 * 60 * 1000,
            session_absolute_ms: 12 * 3600 * 1000,
            max_failures_per_user: 5,
            lockout_ms: 15 * 60 * 1000,
            max_failures_per_ip: 20,
            ip_window_ms: 15 * 60 * 1000,
        }
    }
}

/// What the guard and sign-in refused, by reason (also exported as the Prometheus counter
/// `wattline_auth_denied_total{reason}`). Tests read these to check attacks were counted.
#[derive(Debug, Default)]
pub struct AuthStats {
    unauthenticated: AtomicU64,
    forbidden: AtomicU64,
    not_found: AtomicU64,
    csrf: AtomicU64,
    scope: AtomicU64,
    login_failed: AtomicU64,
    login_limited: AtomicU64,
    bad_credentials: AtomicU64,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// 401 from a handler.
    Unauthenticated,
    /// 403 from a handler.
    Forbidden,
    /// 404 to a signed-in caller (id guessing shows up here).
    NotFound,
    /// CSRF token or origin check failed.
    Csrf,
    /// An API token used beyond its scopes.
    Scope,
    /// Wrong name or password.
    LoginFailed,
    /// Sign-in refused by rate limit or lockout.
    LoginLimited,
    /// A session cookie or bearer token that is unknown, expired, revoked or malformed.
    BadCredentials,
}

impl Denial {
    /// The counter label.
    pub fn as_str(self) -> &'static str {
        match self {
            Denial::Unauthenticated => "unauthenticated",
            Denial::Forbidden => "forbidden",
            Denial::NotFound => "not_found",
            Denial::Csrf => "csrf",
            Denial::Scope => "scope",
            Denial::LoginFailed => "login_failed",
            Denial::LoginLimited => "login_limited",
            Denial::BadCredentials => "bad_credentials",
        }
    }
}

impl AuthStats {
    fn cell(&self, d: Denial) -> &AtomicU64 {
        match d {
            Denial::Unauthenticated => &self.unauthenticated,
            Denial::Forbidden => &self.forbidden,
            Denial::NotFound => &self.not_found,
            Denial::Csrf => &self.csrf,
            Denial::Scope => &self.scope,
            Denial::LoginFailed => &self.login_failed,
            Denial::LoginLimited => &self.login_limited,
            Denial::BadCredentials => &self.bad_credentials,
        }
    }

    /// Counts one refusal.
    pub fn count(&self, d: Denial) {
        self.cell(d).fetch_add(1, Ordering::Relaxed);
        metrics::counter!("wattline_auth_denied_total", "reason" => d.as_str()).increment(1);
    }

    /// Refusals so far for this reason.
    pub fn get(&self, d: Denial) -> u64 {
        self.cell(d).load(Ordering::Relaxed)
    }
}

/// The accounts area's part of [`AppState`]: policy and counters.
#[derive(Debug, Default)]
pub struct AuthContext {
    /// Lifetimes and limits.
    pub policy: AuthPolicy,
    /// Refusal counters.
    pub stats: AuthStats,
}

impl AuthContext {
    /// A context with this policy and fresh counters.
    pub fn new(policy: AuthPolicy) -> Arc<Self> {
        Arc::new(Self {
            policy,
            stats: AuthStats::default(),
        })
    }
}

/// Wraps the whole router in the [`guard`] layer and gives it its state (called by
/// `http::app` after every area's routes are merged, so none escapes the guard).
pub(crate) fn secure(routes: axum::Router<AppState>, state: AppState) -> axum::Router {
    routes
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// A successful sign-in.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// Who.
    pub user: User,
    /// The session id for the cookie (shown only here; stored hashed).
    pub session_id: String,
    /// The session's CSRF token.
    pub csrf_token: String,
    /// Absolute expiry, Unix ms.
    pub expires_ms: i64,
    /// The `Set-Cookie` value to send.
    pub set_cookie: String,
}

fn remote_text(remote: Option<IpAddr>) -> Option<String> {
    remote.map(|ip| ip.to_string())
}

fn too_many() -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "too many failed sign-ins; wait a few minutes and try again",
    )
}

fn bad_login() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "wrong username or password",
    )
}

/// `s` with every control character other than newline and tab written as its Rust escape
/// (`\u{0}`): what an attacker typed stays readable in the audit trail and storable in
/// PostgreSQL, whose text cannot hold a NUL.
pub(crate) fn printable(s: &str) -> String {
    if !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Appends one audit line (`outcome` e.g. `ok`, `failed`, `denied`). An audit line that cannot
/// be written fails the call: callers of privileged actions should not go ahead unaudited.
pub async fn audit_outcome(
    state: &AppState,
    actor: &str,
    remote: Option<IpAddr>,
    action: &str,
    target: &str,
    detail: &str,
    outcome: &str,
) -> Result<(), ApiError> {
    let record = AuditRecord {
        id: 0,
        at_ms: crate::now_ms(),
        actor: printable(actor),
        remote: remote_text(remote),
        action: printable(action),
        target: printable(target),
        detail: printable(detail),
        outcome: printable(outcome),
    };
    state.db.accounts().append_audit(&record).await?;
    tracing::info!(actor, action, target, detail, outcome, "audit");
    Ok(())
}

/// Appends a successful action of `caller` to the audit trail: who (caller), when (now), from
/// where (caller's address), what (`action`, e.g. `relay.command`), on what (`target`, e.g.
/// `meter:house-7`) and why (`detail`). Other areas call this for relay commands, tariff
/// changes and enrolments.
pub async fn audit(
    state: &AppState,
    caller: &Caller,
    action: &str,
    target: &str,
    detail: &str,
) -> Result<(), ApiError> {
    audit_outcome(
        state,
        &caller.username,
        caller.remote,
        action,
        target,
        detail,
        "ok",
    )
    .await
}

/// Checks a password and opens a session.
///
/// Refuses with 429 when the address or the name has too many recent failures (the lockout
/// holds even for the right password), with 401 for a wrong name or password (same message and
/// the same Argon2 work either way). Every attempt is recorded and audited.
pub async fn sign_in(
    state: &AppState,
    username: &str,
    password: &str,
    remote: Option<IpAddr>,
) -> Result<SignedIn, ApiError> {
    let accounts = state.db.accounts();
    let policy = &state.auth.policy;
    let now = crate::now_ms();
    let remote_s = remote_text(remote);
    // Bound what lands in the attempts table and the log; control characters (a NUL cannot be
    // stored in PostgreSQL text) are kept as their escapes, so no such name matches a user.
    let name = printable(&username.chars().take(128).collect::<String>());

    if let Some(ip) = &remote_s {
        let (n, _) = accounts
            .login_failures_from(ip, now - policy.ip_window_ms)
            .await?;
        if n >= policy.max_failures_per_ip {
            state.auth.stats.count(Denial::LoginLimited);
            accounts
                .record_login_attempt(&name, Some(ip), false, now)
                .await?;
            audit_outcome(
                state,
                &name,
                remote,
                "login",
                &format!("user:{name}"),
                "too many failures from this address",
                "limited",
            )
            .await?;
            return Err(too_many());
        }
    }
    let failures = accounts
        .login_failures_for_user(&name, now - policy.lockout_ms)
        .await?;
    if failures >= policy.max_failures_per_user {
        state.auth.stats.count(Denial::LoginLimited);
        accounts
            .record_login_attempt(&name, remote_s.as_deref(), false, now)
            .await?;
        audit_outcome(
            state,
            &name,
            remote,
            "login",
            &format!("user:{name}"),
            "account temporarily locked after failed sign-ins",
            "limited",
        )
        .await?;
        return Err(too_many());
    }

    let found = accounts.user_credentials(&name).await?;
    let hash = found.as_ref().map(|(_, h)| h.clone());
    let pw = password.to_owned();
    let matches = tokio::task::spawn_blocking(move || verify_password(&pw, hash.as_deref()))
        .await
        .map_err(ApiError::internal)?;
    let user = match found {
        Some((user, _)) if matches && !user.disabled => user,
        other => {
            let why = match other {
                None => "unknown user",
                Some((u, _)) if u.disabled && matches => "account disabled",
                Some(_) => "wrong password",
            };
            state.auth.stats.count(Denial::LoginFailed);
            accounts
                .record_login_attempt(&name, remote_s.as_deref(), false, now)
                .await?;
            audit_outcome(
                state,
                &name,
                remote,
                "login",
                &format!("user:{name}"),
                why,
                "failed",
            )
            .await?;
            return Err(bad_login());
        }
    };

    accounts
        .record_login_attempt(&name, remote_s.as_deref(), true, now)
        .await?;
    let opened = open_session(state, &user, remote).await?;
    audit_outcome(
        state,
        &user.username,
        remote,
        "login",
        &format!("user:{}", user.username),
        "signed in",
        "ok",
    )
    .await?;
    Ok(opened)
}

/// Opens a new session for `user` (always a fresh id: no fixation).
async fn open_session(
    state: &AppState,
    user: &User,
    remote: Option<IpAddr>,
) -> Result<SignedIn, ApiError> {
    let now = crate::now_ms();
    let policy = &state.auth.policy;
    let session_id = secret::random_hex(32)?;
    let csrf_token = secret::random_hex(32)?;
    let expires_ms = now + policy.session_absolute_ms;
    state
        .db
        .accounts()
        .create_session(&StoredSession {
            id_hash: secret::digest_hex(&session_id),
            user_id: user.id,
            csrf_token: csrf_token.clone(),
            created_ms: now,
            expires_ms,
            last_seen_ms: now,
            remote: remote_text(remote),
            revoked: false,
        })
        .await?;
    let set_cookie = session_cookie(
        &session_id,
        policy.session_absolute_ms / 1000,
        state.config.secure_cookies,
    );
    Ok(SignedIn {
        user: user.clone(),
        session_id,
        csrf_token,
        expires_ms,
        set_cookie,
    })
}

/// The `Set-Cookie` value for a session id (`max_age_s` 0 clears it).
pub fn session_cookie(value: &str, max_age_s: i64, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Ends a session server-side; false when it was unknown or already ended.
pub async fn sign_out(state: &AppState, session_id: &str) -> Result<bool, ApiError> {
    Ok(state
        .db
        .accounts()
        .revoke_session(&secret::digest_hex(session_id))
        .await?)
}

/// Checks a username: 1–64 of `A-Z a-z 0-9 . _ @ -`.
pub fn check_username(name: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "a username has 1 to 64 characters from A-Z, a-z, 0-9, '.', '_', '@', '-'",
        ))
    }
}

/// Creates a user after checking the name, the password policy and the role/customer pairing
/// (a customer account needs an existing customer; staff accounts have none). Audited with
/// `actor`. Used by the admin API and by `wattline user add`.
pub async fn create_user(
    state: &AppState,
    actor: &str,
    remote: Option<IpAddr>,
    username: &str,
    password: &str,
    role: Role,
    customer_id: Option<String>,
) -> Result<User, ApiError> {
    check_username(username)?;
    check_new_password(password)?;
    check_customer_binding(state, role, customer_id.as_deref()).await?;
    let accounts = state.db.accounts();
    if accounts.user_credentials(username).await?.is_some() {
        return Err(ApiError::conflict(format!(
            "a user named {username:?} exists"
        )));
    }
    let pw = password.to_owned();
    let password_hash = tokio::task::spawn_blocking(move || hash_password(&pw))
        .await
        .map_err(ApiError::internal)??;
    let user = accounts
        .create_user(
            &NewUser {
                username: username.to_owned(),
                password_hash,
                role,
                customer_id: customer_id.clone(),
            },
            crate::now_ms(),
        )
        .await?;
    let detail = match &customer_id {
        Some(c) => format!("role {} customer {c}", role.as_str()),
        None => format!("role {}", role.as_str()),
    };
    audit_outcome(
        state,
        actor,
        remote,
        "user.create",
        &format!("user:{username}"),
        &detail,
        "ok",
    )
    .await?;
    Ok(user)
}

/// Applies `change` to `before` (checking the role/customer pairing), ends the account's
/// sessions when its powers changed, and audits the change with `actor`.
pub async fn update_user(
    state: &AppState,
    actor: &str,
    remote: Option<IpAddr>,
    before: &User,
    change: &UserChange,
) -> Result<User, ApiError> {
    let new_role = change.role.unwrap_or(before.role);
    let new_customer = match &change.customer_id {
        Some(c) => c.clone(),
        None => before.customer_id.clone(),
    };
    check_customer_binding(state, new_role, new_customer.as_deref()).await?;
    let accounts = state.db.accounts();
    let after = accounts
        .update_user(before.id, change, crate::now_ms())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user {}", before.id)))?;
    if after.disabled || after.role != before.role || after.customer_id != before.customer_id {
        // A changed account starts over: no session keeps powers it no longer has.
        accounts.revoke_user_sessions(after.id).await?;
    }
    let mut what = Vec::new();
    if before.role != after.role {
        what.push(format!(
            "role {} -> {}",
            before.role.as_str(),
            after.role.as_str()
        ));
    }
    if before.customer_id != after.customer_id {
        what.push(format!(
            "customer {} -> {}",
            before.customer_id.as_deref().unwrap_or("-"),
            after.customer_id.as_deref().unwrap_or("-")
        ));
    }
    if before.disabled != after.disabled {
        what.push(
            if after.disabled {
                "disabled"
            } else {
                "enabled"
            }
            .to_owned(),
        );
    }
    let detail = if what.is_empty() {
        "no change".to_owned()
    } else {
        what.join("; ")
    };
    audit_outcome(
        state,
        actor,
        remote,
        "user.update",
        &format!("user:{}", after.username),
        &detail,
        "ok",
    )
    .await?;
    Ok(after)
}

/// Creates an API token for `owner` with `scopes` (names), never beyond the owner's role nor,
/// when created through another token, beyond `within`. Returns the token string (shown once)
/// and its stored description. Audited with `actor`.
#[allow(clippy::too_many_arguments)]
pub async fn create_api_token(
    state: &AppState,
    actor: &str,
    remote: Option<IpAddr>,
    owner: &User,
    name: &str,
    scopes: &[String],
    expires_in_days: Option<u32>,
    within: Option<&[Scope]>,
) -> Result<(String, ApiToken), ApiError> {
    if name.trim().is_empty() || name.len() > 100 {
        return Err(ApiError::invalid("a token needs a name of 1 to 100 bytes"));
    }
    let mut chosen = Vec::new();
    for s in scopes {
        let scope = Scope::parse(s).ok_or_else(|| {
            ApiError::invalid(format!(
                "unknown scope {s:?}: use read, write, commands or admin"
            ))
        })?;
        let allowed = match scope {
            Scope::Read | Scope::Write => true,
            Scope::Commands => owner.role >= Role::Operator,
            Scope::Admin => owner.role >= Role::Admin,
        };
        if !allowed {
            return Err(ApiError::forbidden(format!(
                "a {} account cannot have a token with the {} scope",
                owner.role.as_str(),
                scope.as_str()
            )));
        }
        if within.is_some_and(|w| !w.contains(&scope)) {
            return Err(ApiError::forbidden(format!(
                "this API token lacks the {} scope, so it cannot grant it",
                scope.as_str()
            )));
        }
        if !chosen.contains(&scope) {
            chosen.push(scope);
        }
    }
    if chosen.is_empty() {
        return Err(ApiError::invalid("a token needs at least one scope"));
    }
    chosen.sort();
    let now = crate::now_ms();
    let secret = secret::new_api_token()?;
    let token = state
        .db
        .accounts()
        .create_token(&NewApiToken {
            prefix: secret.prefix.clone(),
            secret_hash: secret.secret_hash,
            user_id: owner.id,
            name: name.to_owned(),
            scopes: chosen.clone(),
            created_ms: now,
            expires_ms: expires_in_days.map(|d| now + i64::from(d) * 86_400_000),
        })
        .await?;
    let scope_text: Vec<&str> = chosen.iter().map(|s| s.as_str()).collect();
    audit_outcome(
        state,
        actor,
        remote,
        "token.create",
        &format!("token:{} of user:{}", token.prefix, owner.username),
        &format!("name {name:?}; scopes {}", scope_text.join(" ")),
        "ok",
    )
    .await?;
    Ok((secret.token, token))
}

/// A customer account must name an existing customer; staff accounts must not name one.
pub(crate) async fn check_customer_binding(
    state: &AppState,
    role: Role,
    customer_id: Option<&str>,
) -> Result<(), ApiError> {
    match (role, customer_id) {
        (Role::Customer, None) => Err(ApiError::invalid(
            "a customer account needs customer_id (the customer whose meters it sees)",
        )),
        (Role::Customer, Some(c)) => {
            if state.store.customer(c).await?.is_none() {
                return Err(ApiError::invalid(format!("there is no customer {c:?}")));
            }
            Ok(())
        }
        (_, Some(_)) => Err(ApiError::invalid(
            "only customer accounts are bound to a customer; leave customer_id empty",
        )),
        (_, None) => Ok(()),
    }
}

/// Resolves a session cookie value to a caller (valid, not expired, not revoked, user enabled).
pub(crate) async fn caller_from_session(
    state: &AppState,
    session_id: &str,
    remote: Option<IpAddr>,
) -> Result<Option<Caller>, ApiError> {
    if !secret::is_session_id(session_id) {
        return Ok(None);
    }
    let accounts = state.db.accounts();
    let id_hash = secret::digest_hex(session_id);
    let Some((session, user)) = accounts.session(&id_hash).await? else {
        return Ok(None);
    };
    let now = crate::now_ms();
    let policy = &state.auth.policy;
    if session.revoked
        || user.disabled
        || now >= session.expires_ms
        || now - session.last_seen_ms > policy.session_idle_ms
    {
        return Ok(None);
    }
    // One write per minute per session is enough for idle expiry.
    if now - session.last_seen_ms > 60_000 || policy.session_idle_ms < 120_000 {
        accounts.touch_session(&id_hash, now).await?;
    }
    Ok(Some(Caller {
        user_id: Some(user.id),
        username: user.username,
        role: user.role,
        customer_id: user.customer_id,
        remote,
        csrf_token: Some(session.csrf_token),
        scopes: None,
    }))
}

/// Resolves a `wlt_…` API token to a caller (known, secret matches, not revoked or expired,
/// owner enabled), carrying the token's scopes.
pub(crate) async fn caller_from_api_token(
    state: &AppState,
    token: &str,
    remote: Option<IpAddr>,
) -> Result<Option<Caller>, ApiError> {
    let Some((prefix, secret_part)) = secret::split_api_token(token) else {
        return Ok(None);
    };
    let accounts = state.db.accounts();
    let Some((t, secret_hash)) = accounts.token_by_prefix(prefix).await? else {
        return Ok(None);
    };
    let now = crate::now_ms();
    let presented = secret::digest_hex(secret_part);
    if !secret::constant_time_eq(presented.as_bytes(), secret_hash.as_bytes())
        || t.revoked
        || t.expires_ms.is_some_and(|e| now >= e)
    {
        return Ok(None);
    }
    let Some(user) = accounts.user(t.user_id).await? else {
        return Ok(None);
    };
    if user.disabled {
        return Ok(None);
    }
    if t.last_used_ms.is_none_or(|l| now - l > 60_000) {
        accounts.touch_token(t.id, now).await?;
    }
    Ok(Some(Caller {
        user_id: Some(user.id),
        username: user.username,
        role: user.role,
        customer_id: user.customer_id,
        remote,
        csrf_token: None,
        scopes: Some(t.scopes),
    }))
}
