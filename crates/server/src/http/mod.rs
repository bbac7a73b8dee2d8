//! The HTTP side of the server (DESIGN §3.7): one axum router carrying the JSON API under
//! `/api/v1`, the web pages, `/metrics`, `/healthz` and `/readyz`.
//!
//! [`app`] builds the router from an [`AppState`], so tests call `app(state).oneshot(request)`
//! without a socket. Every handler that touches data takes a [`Caller`] (who is asking, with
//! which role) and returns [`ApiError`] on failure: one error-to-response path, internal details
//! logged and never returned.
//!
//! Feature areas add their routes by merging a `routes()` function here (API in `crate::api`,
//! sign-in and accounts in `crate::auth`, pages in `crate::web`, ...).

mod caller;
mod error;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::sync::broadcast;

use crate::{Database, IngestStats, LiveBatch, Store};

pub use caller::{Caller, Role};
pub(crate) use caller::{resolve as resolve_caller, session_cookie as session_cookie_of};
pub use error::ApiError;

/// Settings of the HTTP side that handlers need.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// A bootstrap bearer token with the `admin` role (from the server config), for programs
    /// before any account exists. `None` disables it. Compared in constant time.
    pub admin_token: Option<String>,
    /// Whether cookies get the `Secure` attribute (true whenever the site is served over HTTPS).
    pub secure_cookies: bool,
    /// The externally visible base URL, e.g. `http://127.0.0.1:8080` (links in mails, CSRF origin checks).
    pub public_url: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            admin_token: None,
            secure_cookies: false,
            public_url: "http://127.0.0.1:8080".to_owned(),
        }
    }
}

/// Everything a handler may reach. Cheap to clone. Build it with [`AppState::new`] and the
/// `with_*` methods, so adding a part never breaks existing constructors.
#[derive(Clone)]
pub struct AppState {
    /// The database with all feature-area stores.
    pub db: Database,
    /// The core store (same database as `db`).
    pub store: Arc<dyn Store>,
    /// Records as ingest commits them (live streams subscribe here).
    pub live: broadcast::Sender<Arc<LiveBatch>>,
    /// What ingest did (for `/metrics` and the fleet page).
    pub ingest_stats: Arc<IngestStats>,
    /// HTTP settings.
    pub config: Arc<HttpConfig>,
    /// Set once the server finished starting (migrations run, broker listening): `/readyz`.
    pub ready: Arc<AtomicBool>,
    /// Wakes the command dispatcher when the API queues a command (`crate::commands`).
    pub command_wake: Arc<tokio::sync::Notify>,
    /// Serve `/metrics` without credentials (config `metrics_public`, default false).
    pub metrics_public: bool,
    /// Session lifetimes, login limits and refusal counters (`crate::auth`).
    pub auth: Arc<crate::auth::AuthContext>,
    /// Notifications raised by API actions (a bill run issues bills); also decides whether
    /// webhook preferences may point at private addresses. `None`: no notifications, and
    /// only public webhook targets are accepted.
    pub notifier: Option<Arc<crate::notify::Notifier>>,
}

impl AppState {
    /// A state over `db`, with its own live channel and counters (replace them with
    /// [`with_ingest`](Self::with_ingest) when a real ingest runs).
    pub fn new(db: Database, config: HttpConfig) -> Self {
        let (live, _) = broadcast::channel(1024);
        Self {
            store: db.store(),
            db,
            live,
            ingest_stats: Arc::new(IngestStats::default()),
            config: Arc::new(config),
            ready: Arc::new(AtomicBool::new(false)),
            command_wake: Arc::new(tokio::sync::Notify::new()),
            metrics_public: false,
            auth: crate::auth::AuthContext::new(crate::auth::AuthPolicy::default()),
            notifier: None,
        }
    }

    /// Raises notifications through `notifier` (the server runtime's).
    pub fn with_notifier(mut self, notifier: crate::notify::Notifier) -> Self {
        self.notifier = Some(Arc::new(notifier));
        self
    }

    /// Replaces the session lifetimes and login limits (fresh counters).
    pub fn with_auth_policy(mut self, policy: crate::auth::AuthPolicy) -> Self {
        self.auth = crate::auth::AuthContext::new(policy);
        self
    }

    /// Wakes this command dispatcher when a command is queued through the API.
    pub fn with_dispatcher(mut self, dispatcher: &crate::commands::Dispatcher) -> Self {
        self.command_wake = dispatcher.waker();
        self
    }

    /// Serves `/metrics` without credentials (for a scraper on a trusted network).
    pub fn with_metrics_public(mut self, public: bool) -> Self {
        self.metrics_public = public;
        self
    }

    /// Wires the live channel and counters of a running [`Ingest`](crate::Ingest).
    pub fn with_ingest(mut self, ingest: &crate::Ingest) -> Self {
        self.live = ingest.live_sender();
        self.ingest_stats = ingest.stats_handle();
        self
    }

    /// Marks the server ready (`/readyz` answers 200).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(crate::auth::routes())
        .merge(crate::billing::routes())
        .merge(crate::alarms::routes())
        .merge(crate::api::routes())
        .merge(crate::web::routes())
        // Request counts and latency per route for /metrics (only routes merged above).
        .layer(axum::middleware::from_fn(crate::api::metrics::track));
    // Every route above passes the auth guard: credentials resolved once, CSRF and token
    // scopes enforced, refusals counted, security headers set. Merge new routes above.
    crate::auth::secure(routes, state)
}

/// Liveness: the process answers.
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: started, and the database answers.
async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if !state.ready.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting");
    }
    match state.store.schema_version().await {
        Ok(_) => (StatusCode::OK, "ready"),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: database unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn state() -> (AppState, tempdir::TempDir) {
        let dir = tempdir::TempDir::new();
        let db = Database::Sqlite(crate::SqliteStore::open(&dir.0).await.unwrap());
        let config = HttpConfig {
            admin_token: Some("s3cret-token".to_owned()),
            ..HttpConfig::default()
        };
        (AppState::new(db, config), dir)
    }

    mod tempdir {
        /// A directory removed on drop.
        pub struct TempDir(pub std::path::PathBuf);
        impl TempDir {
            pub fn new() -> Self {
                let p = std::env::temp_dir().join(format!(
                    "wattline-http-{}-{}",
                    std::process::id(),
                    rand_suffix()
                ));
                std::fs::create_dir_all(&p).unwrap();
                TempDir(p)
            }
        }
        impl Drop for TempDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        fn rand_suffix() -> u64 {
            use std::sync::atomic::{AtomicU64, Ordering};
            static N: AtomicU64 = AtomicU64::new(0);
            N.fetch_add(1, Ordering::Relaxed) ^ (crate::now_ms() as u64)
        }
    }

    #[tokio::test]
    async fn readyz_follows_the_ready_flag_and_healthz_always_answers() {
        let (state, _dir) = state().await;
        let app = app(state.clone());
        let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
        let r = app.clone().oneshot(get("/healthz")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = app.clone().oneshot(get("/readyz")).await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        state.set_ready(true);
        let r = app.oneshot(get("/readyz")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn caller_needs_the_exact_admin_token() {
        use axum::extract::FromRequestParts;
        let (state, _dir) = state().await;
        for (header, ok) in [
            (None, false),
            (Some("Bearer s3cret-token"), true),
            (Some("Bearer s3cret-tokeN"), false),
            (Some("Bearer s3cret-token-longer"), false),
            (Some("Basic s3cret-token"), false),
        ] {
            let mut req = Request::get("/api/v1/meters");
            if let Some(h) = header {
                req = req.header("authorization", h);
            }
            let (mut parts, ()) = req.body(()).unwrap().into_parts();
            let got = Caller::from_request_parts(&mut parts, &state).await;
            assert_eq!(got.is_ok(), ok, "{header:?}");
            if let Err(e) = got {
                assert_eq!(e.status, StatusCode::UNAUTHORIZED);
            }
        }
    }
}
