//! The layer around the whole router: resolves credentials once, enforces CSRF on
//! cookie-authenticated state changes and scopes on API tokens, counts refusals, and sets the
//! security headers on every response.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ORIGIN, REFERER, REFERRER_POLICY,
    STRICT_TRANSPORT_SECURITY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{CSRF_FIELD, CSRF_HEADER, Denial, Scope, audit_outcome, secret};
use crate::http::{ApiError, AppState, Caller};

/// The guard's answer to "who is asking", left in the request's extensions for the
/// [`Caller`] extractor (`None`: no valid credentials).
#[derive(Debug, Clone)]
pub(crate) struct AuthResolution(pub Option<Caller>);

/// Largest form body the guard reads to find a `csrf_token` field.
const MAX_FORM_BYTES: usize = 1 << 20;

/// The login route: no session yet, but protected against login CSRF by the origin check.
pub(crate) const LOGIN_PATH: &str = "/api/v1/auth/login";

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// `scheme://host[:port]` of a URL, lowercased, without path.
fn origin_of(url: &str) -> String {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    format!(
        "{}://{}",
        scheme.to_ascii_lowercase(),
        host.to_ascii_lowercase()
    )
}

/// Whether the request's `Origin` (or, without it, `Referer`) is our own public URL. Absent
/// both, the request passes: browsers send `Origin` on cross-site POSTs, and the CSRF token and
/// `SameSite=Strict` stand on their own.
pub(crate) fn same_origin(parts: &Parts, public_url: &str) -> bool {
    let ours = origin_of(public_url);
    if let Some(origin) = parts.headers.get(ORIGIN) {
        return origin
            .to_str()
            .is_ok_and(|o| o.trim().eq_ignore_ascii_case(&ours));
    }
    if let Some(referer) = parts.headers.get(REFERER) {
        return referer.to_str().is_ok_and(|r| {
            let r = r.trim().to_ascii_lowercase();
            r == ours || r.starts_with(&format!("{ours}/"))
        });
    }
    true
}

/// What an API token needs for this request.
fn needed_scope(method: &Method, path: &str) -> Scope {
    let admin_area = [
        "/api/v1/users",
        "/api/v1/tokens",
        "/api/v1/audit",
        "/api/v1/tariffs",
        "/api/v1/pki",
    ]
    .iter()
    .any(|p| {
        path == *p || path.starts_with(&format!("{p}/")) || path.starts_with(&format!("{p}."))
    });
    if admin_area {
        return Scope::Admin;
    }
    if is_safe(method) {
        return Scope::Read;
    }
    let command = ["/commands", "/relay", "/limiter"]
        .iter()
        .any(|c| path.contains(c));
    if command {
        Scope::Commands
    } else {
        Scope::Write
    }
}

fn denied(status: StatusCode, code: &'static str, message: &str) -> Response {
    ApiError::new(status, code, message).into_response()
}

/// The layer function (`axum::middleware::from_fn_with_state`).
pub(crate) async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let response = check_and_run(&state, req, next).await;
    with_security_headers(&state, response)
}

/// Whether the path or query of `uri` holds an encoded NUL (`%00`). No identifier, time or
/// filter of ours can contain one, and PostgreSQL text cannot store it: such a request is
/// refused up front with a 400 rather than reaching a handler or the database.
fn has_encoded_nul(uri: &axum::http::Uri) -> bool {
    uri.path_and_query()
        .is_some_and(|pq| pq.as_str().as_bytes().windows(3).any(|w| w == b"%00"))
}

async fn check_and_run(state: &AppState, req: Request, next: Next) -> Response {
    if has_encoded_nul(req.uri()) {
        return denied(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "the request's path or query contains a NUL character (%00)",
        );
    }
    let (mut parts, mut body) = req.into_parts();
    let stats = &state.auth.stats;
    let resolved = match crate::http::resolve_caller(&parts, state).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let presented = parts
        .headers
        .contains_key(axum::http::header::AUTHORIZATION)
        || crate::http::session_cookie_of(&parts).is_some();
    if presented && resolved.is_none() {
        stats.count(Denial::BadCredentials);
    }
    let path = parts.uri.path().to_owned();
    let unsafe_method = !is_safe(&parts.method);

    if unsafe_method && path == LOGIN_PATH && !same_origin(&parts, &state.config.public_url) {
        stats.count(Denial::Csrf);
        tracing::warn!(path = %path, "refused a cross-site sign-in (login CSRF)");
        let _ = audit_outcome(
            state,
            "anonymous",
            remote_of(&parts),
            "csrf.reject",
            &path,
            "sign-in from a foreign origin",
            "denied",
        )
        .await;
        return denied(StatusCode::FORBIDDEN, "csrf", "cross-site request refused");
    }

    if let Some(caller) = &resolved {
        // Sign-in itself is covered by the origin check above: a form sign-in from a page that
        // still holds an old session has no token to echo.
        if let (Some(expected), true, false) =
            (&caller.csrf_token, unsafe_method, path == LOGIN_PATH)
        {
            let (ok, why, rebuilt) =
                check_csrf(&parts, body, expected, &state.config.public_url).await;
            body = rebuilt;
            if !ok {
                stats.count(Denial::Csrf);
                tracing::warn!(user = %caller.username, path = %path, why, "refused a request failing the CSRF check");
                let _ = audit_outcome(
                    state,
                    &caller.username,
                    caller.remote,
                    "csrf.reject",
                    &path,
                    why,
                    "denied",
                )
                .await;
                return denied(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    "missing or wrong CSRF token, or a foreign origin; reload the page and try again",
                );
            }
        }
        if let Some(scopes) = &caller.scopes {
            let needed = needed_scope(&parts.method, &path);
            if !scopes.contains(&needed) {
                stats.count(Denial::Scope);
                tracing::warn!(user = %caller.username, path = %path, scope = needed.as_str(), "API token used beyond its scopes");
                return denied(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    &format!("this API token lacks the {} scope", needed.as_str()),
                );
            }
        }
    }

    let signed_in = resolved.as_ref().map(|c| c.username.clone());
    parts.extensions.insert(AuthResolution(resolved));
    let response = next.run(Request::from_parts(parts, body)).await;
    match response.status() {
        StatusCode::UNAUTHORIZED => stats.count(Denial::Unauthenticated),
        StatusCode::FORBIDDEN => {
            stats.count(Denial::Forbidden);
            tracing::info!(user = signed_in.as_deref().unwrap_or("-"), path = %path, "forbidden");
        }
        StatusCode::NOT_FOUND if signed_in.is_some() => {
            stats.count(Denial::NotFound);
            tracing::info!(user = signed_in.as_deref().unwrap_or("-"), path = %path, "not found");
        }
        _ => {}
    }
    response
}

fn remote_of(parts: &Parts) -> Option<std::net::IpAddr> {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Checks the CSRF token (header, or form field for plain HTML forms) and the origin. Returns
/// the verdict, the reason, and the body (re-made when it had to be read).
async fn check_csrf(
    parts: &Parts,
    body: Body,
    expected: &str,
    public_url: &str,
) -> (bool, &'static str, Body) {
    if !same_origin(parts, public_url) {
        return (false, "foreign Origin/Referer", body);
    }
    if let Some(v) = parts.headers.get(CSRF_HEADER) {
        let ok = v
            .to_str()
            .is_ok_and(|t| secret::constant_time_eq(t.trim().as_bytes(), expected.as_bytes()));
        return (ok, "wrong CSRF token header", body);
    }
    let is_form = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return (false, "no CSRF token", body);
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
        return (false, "form body too large to check", Body::empty());
    };
    let ok = form_field(&bytes, CSRF_FIELD)
        .is_some_and(|t| secret::constant_time_eq(t.as_bytes(), expected.as_bytes()));
    (
        ok,
        "wrong or missing csrf_token form field",
        Body::from(bytes),
    )
}

/// The first value of `name` in an urlencoded form.
pub(crate) fn form_field(body: &[u8], name: &str) -> Option<String> {
    let fields: Vec<(String, String)> = form_pairs(body);
    fields.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// Decodes `a=b&c=d` with `+` and `%XX` escapes.
pub(crate) fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    fn decode(s: &[u8]) -> String {
        let mut out = Vec::with_capacity(s.len());
        let mut i = 0;
        while i < s.len() {
            match s[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < s.len() => {
                    let hex = std::str::from_utf8(&s[i + 1..i + 3]).ok();
                    match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    body.split(|&b| b == b'&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let mut it = kv.splitn(2, |&b| b == b'=');
            let k = decode(it.next().unwrap_or(b""));
            let v = decode(it.next().unwrap_or(b""));
            (k, v)
        })
        .collect()
}

fn with_security_headers(state: &AppState, mut response: Response) -> Response {
    let h = response.headers_mut();
    let mut set = |name: axum::http::HeaderName, value: &'static str| {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    };
    set(
        CONTENT_SECURITY_POLICY,
        "default-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'; object-src 'none'",
    );
    set(X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(REFERRER_POLICY, "same-origin");
    set(X_FRAME_OPTIONS, "DENY");
    if state.config.secure_cookies {
        set(STRICT_TRANSPORT_SECURITY, "max-age=31536000");
    }
    let is_json = h
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json") || ct.starts_with("text/csv"));
    if is_json && !h.contains_key(CACHE_CONTROL) {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_escapes_and_pluses() {
        let f = form_pairs(b"a=1&csrf_token=ab%2Fc+d&x&bad=%zz&end=%4");
        assert_eq!(
            f,
            vec![
                ("a".into(), "1".into()),
                ("csrf_token".into(), "ab/c d".into()),
                ("x".into(), String::new()),
                ("bad".into(), "%zz".into()),
                ("end".into(), "%4".into()),
            ]
        );
        assert_eq!(
            form_field(b"csrf_token=t&csrf_token=u", "csrf_token").as_deref(),
            Some("t")
        );
    }

    #[test]
    fn scopes_follow_method_and_area() {
        assert_eq!(needed_scope(&Method::GET, "/api/v1/meters/x"), Scope::Read);
        assert_eq!(
            needed_scope(&Method::POST, "/api/v1/meters/x/commands"),
            Scope::Commands
        );
        assert_eq!(
            needed_scope(&Method::POST, "/api/v1/alarms/3/ack"),
            Scope::Write
        );
        assert_eq!(needed_scope(&Method::GET, "/api/v1/users"), Scope::Admin);
        assert_eq!(
            needed_scope(&Method::GET, "/api/v1/audit.csv"),
            Scope::Admin
        );
        assert_eq!(
            needed_scope(&Method::DELETE, "/api/v1/tokens/4"),
            Scope::Admin
        );
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        assert_eq!(
            origin_of("HTTP://Example.org:8080/x?y"),
            "http://example.org:8080"
        );
        let parts = |h: &[(&str, &str)]| {
            let mut r = axum::http::Request::post("/");
            for (k, v) in h {
                r = r.header(*k, *v);
            }
            r.body(()).unwrap().into_parts().0
        };
        let url = "http://127.0.0.1:8080";
        assert!(same_origin(&parts(&[]), url));
        assert!(same_origin(
            &parts(&[("origin", "http://127.0.0.1:8080")]),
            url
        ));
        assert!(!same_origin(
            &parts(&[("origin", "http://127.0.0.1:8081")]),
            url
        ));
        assert!(!same_origin(&parts(&[("origin", "null")]), url));
        assert!(same_origin(
            &parts(&[("referer", "http://127.0.0.1:8080/meters")]),
            url
        ));
        assert!(!same_origin(
            &parts(&[("referer", "http://127.0.0.1:8080.evil.example/")]),
            url
        ));
    }
}
