//! The attacks, each run on SQLite and on PostgreSQL.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use server::auth::{AuthPolicy, Denial};

use super::routes::*;
use super::site::*;

const ALICE_IP: &str = "192.0.2.10";
const BOB_IP: &str = "192.0.2.20";
const ADMIN_IP: &str = "192.0.2.1";
const ATTACKER_IP: &str = "198.51.100.66";
/// Long enough that five Argon2 checks on a loaded machine fit in the window.
const LOCKOUT_MS: i64 = 8_000;

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await;
                }
            )*
        }
    };
}

on_both!(
    unauthenticated_api_and_sse_are_refused,
    customer_cannot_read_another_customers_data_by_id_guessing,
    customer_cannot_issue_relay_commands,
    cross_site_posts_are_refused,
    sql_injection_in_every_query_parameter_changes_and_leaks_nothing,
    path_traversal_in_downloads_serves_nothing,
    brute_force_login_is_locked_out_and_honest_users_are_still_served,
    session_fixation_a_planted_cookie_is_never_adopted,
    a_logged_out_session_is_dead,
    api_token_scopes_limit_what_a_token_does,
    role_changes_and_password_resets_end_sessions_and_are_audited,
    audit_trail_is_admin_only_and_exports_csv,
);

async fn site(backend: Backend) -> Option<Site> {
    Site::new(backend, AuthPolicy::default()).await
}

async fn unauthenticated_api_and_sse_are_refused(backend: Backend) {
    let Some(site) = site(backend).await else {
        return;
    };
    let admin = site.login("root", ADMIN_IP).await;
    let before = site.state.auth.stats.get(Denial::Unauthenticated);
    let mut refused = 0u64;
    let command = site.queue_command("m-a").await;
    let routes: Vec<String> = PROTECTED_GET
        .iter()
        .chain(OWNED_GET)
        .map(|t| fill_command(t, "m-a", "c-a", command))
        .collect();
    for uri in &routes {
        let honest = site.get_as(Some(&admin), uri, ADMIN_IP).await;
        assert!(
            honest.status != StatusCode::NOT_FOUND
                && honest.status != StatusCode::METHOD_NOT_ALLOWED,
            "{uri} does not exist ({}): fix the route table",
            honest.status
        );
        let anon = site.get_as(None, uri, ATTACKER_IP).await;
        let path = uri.split('?').next().unwrap_or("");
        let data = path.starts_with("/api/")
            || path.ends_with(".csv")
            || path.ends_with(".json")
            || path.ends_with("/live");
        if data {
            assert_eq!(
                anon.status,
                StatusCode::UNAUTHORIZED,
                "anonymous GET {uri}: {}",
                anon.body
            );
            refused += 1; // counted as unauthenticated by the guard
        } else {
            // A page (data and streams answer 401 above): the browser is sent to sign in, and
            // shown nothing else.
            assert_eq!(anon.status, StatusCode::SEE_OTHER, "anonymous GET {uri}");
            let to = anon.headers.get("location").and_then(|v| v.to_str().ok());
            assert!(
                to.is_some_and(|l| l.starts_with("/login")),
                "anonymous GET {uri} went to {to:?}"
            );
        }
        assert!(
            !anon.body.contains("m-a") || anon.body.contains("error"),
            "{uri} leaked: {}",
            anon.body
        );
        // A forged cookie and a forged bearer token fare no better.
        for (h, v) in [
            ("cookie", format!("wattline_session={}", "ab".repeat(32))),
            (
                "authorization",
                format!("Bearer wlt_{}_{}", "0".repeat(12), "f".repeat(64)),
            ),
            ("authorization", "Bearer ' OR '1'='1".to_owned()),
        ] {
            let req = Request::get(uri.as_str())
                .header(h, v)
                .body(Body::empty())
                .unwrap();
            let a = site.send(req, ATTACKER_IP).await;
            assert!(!a.status.is_success(), "forged {h} on {uri}: {}", a.status);
        }
    }
    assert!(
        refused >= 4,
        "too few protected routes exist to mean anything ({refused})"
    );
    let after = site.state.auth.stats.get(Denial::Unauthenticated);
    assert!(
        after - before >= refused,
        "refusals were counted: {before} -> {after}"
    );
    assert!(site.state.auth.stats.get(Denial::BadCredentials) > 0);
    // Honest users are still served, and every answer carries the security headers.
    let me = site.get_as(Some(&admin), "/api/v1/auth/me", ADMIN_IP).await;
    assert_eq!(me.status, StatusCode::OK);
    for a in [
        &me,
        &site.get_as(None, "/healthz", ATTACKER_IP).await,
        &site.get_as(None, "/nope", ATTACKER_IP).await,
    ] {
        assert!(
            a.headers["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        assert_eq!(a.headers["x-content-type-options"], "nosniff");
        assert!(a.headers.contains_key("referrer-policy"));
    }
}

async fn customer_cannot_read_another_customers_data_by_id_guessing(backend: Backend) {
    let Some(site) = site(backend).await else {
        return;
    };
    let alice = site.login("alice", ALICE_IP).await;
    let bob = site.login("bob", BOB_IP).await;
    // Bob's meter has a queued command: its id is the one Alice guesses.
    let command = site.queue_command("m-b").await;
    let before =
        site.state.auth.stats.get(Denial::NotFound) + site.state.auth.stats.get(Denial::Forbidden);
    for t in OWNED_GET {
        let uri = fill_command(t, "m-b", "c-b", command);
        let own = site.get_as(Some(&bob), &uri, BOB_IP).await;
        assert!(
            own.status.is_success(),
            "{t} is not served to its owner ({}): fix the route table; {}",
            own.status,
            own.body
        );
        let theirs = site.get_as(Some(&alice), &uri, ALICE_IP).await;
        assert!(
            theirs.status == StatusCode::NOT_FOUND || theirs.status == StatusCode::FORBIDDEN,
            "alice reading bob's {t}: {} {}",
            theirs.status,
            theirs.body
        );
        assert!(
            !theirs.body.contains(PRIVATE_NAME),
            "leak on {t}: {}",
            theirs.body
        );
        // Guessing ids that do not exist looks exactly like guessing someone else's.
        let ghost = site
            .get_as(
                Some(&alice),
                &fill_command(t, "m-zz", "c-zz", command + 1_000),
                ALICE_IP,
            )
            .await;
        assert_eq!(
            ghost.status, theirs.status,
            "{t}: unknown and foreign ids answer alike"
        );
    }
    let after =
        site.state.auth.stats.get(Denial::NotFound) + site.state.auth.stats.get(Denial::Forbidden);
    assert!(
        after - before >= OWNED_GET.len() as u64,
        "attempts counted ({before} -> {after})"
    );
    // Alice is still served her own data.
    let me = site.get_as(Some(&alice), "/api/v1/auth/me", ALICE_IP).await;
    assert_eq!(me.json()["customer_id"], "c-a");
}

async fn customer_cannot_issue_relay_commands(backend: Backend) {
    let Some(site) = site(backend).await else {
        return;
    };
    let alice = site.login("alice", ALICE_IP).await;
    let before =
        site.state.auth.stats.get(Denial::Forbidden) + site.state.auth.stats.get(Denial::NotFound);
    let meter = schema::MeterId::parse("m-a").unwrap();
    for (t, body) in COMMAND_POST {
        for m in ["m-a", "m-b"] {
            let uri = fill(t, m, "c-a");
            let a = site
                .send_as(
                    &alice,
                    "POST",
                    &uri,
                    serde_json::from_str(body).unwrap(),
                    ALICE_IP,
                )
                .await;
            assert!(
                matches!(
                    a.status,
                    StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
                ),
                "alice POST {uri}: {} {}",
                a.status,
                a.body
            );
        }
    }
    let queued = site.state.store.commands(&meter, None).await.unwrap();
    assert!(queued.is_empty(), "no command was queued: {queued:?}");
    let after =
        site.state.auth.stats.get(Denial::Forbidden) + site.state.auth.stats.get(Denial::NotFound);
    assert!(after > before, "attempts counted");
    // A customer cannot even mint a token that could send commands.
    let a = site
        .send_as(
            &alice,
            "POST",
            "/api/v1/tokens",
            serde_json::json!({"name":"x","scopes":["commands"]}),
            ALICE_IP,
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
}

async fn cross_site_posts_are_refused(backend: Backend) {
    let Some(site) = site(backend).await else {
        return;
    };
    let alice = site.login("alice", ALICE_IP).await;
    let before = site.state.auth.stats.get(Denial::Csrf);
    let tokens = |site: &Site| {
        let db = site.state.db.clone();
        async move { db.accounts().tokens(None).await.unwrap().len() }
    };
    let body = r#"{"name":"csrf","scopes":["read"]}"#;
    let attempts: Vec<(Vec<(&str, String)>, &str)> = vec![
        (vec![], "no token, no origin"),
        (
            vec![("origin", "https://evil.example".into())],
            "foreign origin, no token",
        ),
        (vec![("x-csrf-token", "0".repeat(64))], "wrong token"),
        (
            vec![
                ("x-csrf-token", alice.csrf.clone()),
                ("origin", "https://evil.example".into()),
            ],
            "right token, foreign origin",
        ),
        (
            vec![
                ("x-csrf-token", alice.csrf.clone()),
                ("referer", "http://127.0.0.1:8080.evil.example/x".into()),
            ],
            "right token, look-alike referer",
        ),
        (
            vec![
                ("origin", "null".into()),
                ("x-csrf-token", alice.csrf.clone()),
            ],
            "sandboxed origin",
        ),
    ];
    for (headers, what) in &attempts {
        let mut req = Request::post("/api/v1/tokens")
            .header("cookie", &alice.cookie)
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let a = site
            .send(req.body(Body::from(body)).unwrap(), ATTACKER_IP)
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{what}: {}", a.body);
        assert_eq!(a.json()["error"]["code"], "csrf", "{what}");
    }
    // A classic HTML form post from another site, with and without a guessed field.
    for form in ["name=x&scopes=read", "name=x&csrf_token=guess"] {
        let req = Request::post("/api/v1/auth/logout")
            .header("cookie", &alice.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(form))
            .unwrap();
        let a = site.send(req, ATTACKER_IP).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "form {form}: {}", a.body);
    }
    // Login CSRF: signing the victim into the attacker's account from another site.
    let req = Request::post("/api/v1/auth/login")
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "username=bob&password={}",
            encode(PASSWORD)
        )))
        .unwrap();
    let a = site.send(req, ATTACKER_IP).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(!a.headers.contains_key("set-cookie"));

    assert_eq!(tokens(&site).await, 0, "nothing was created");
    let after = site.state.auth.stats.get(Denial::Csrf);
    assert_eq!(
        after - before,
        attempts.len() as u64 + 3,
        "every attempt counted"
    );
    assert!(
        site.audit("csrf.reject").await.len() >= attempts.len() + 3,
        "and audited"
    );
    // The session still works, and the honest same-site request (header or form field) passes.
    let ok = site
        .send_as(
            &alice,
            "POST",
            "/api/v1/tokens",
            serde_json::from_str(body).unwrap(),
            ALICE_IP,
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.body);
    let req = Request::post("/api/v1/auth/logout")
        .header("cookie", &alice.cookie)
        .header("origin", PUBLIC_URL)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!("csrf_token={}", alice.csrf)))
        .unwrap();
    let out = site.send(req, ALICE_IP).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.body);
}

async fn sql_injection_in_every_query_parameter_changes_and_leaks_nothing(backend: Backend) {
    let Some(site) = site(backend).await else {
        return;
    };
    let admin = site.login("root", ADMIN_IP).await;
    let accounts = site.state.db.accounts();
    let users_before = accounts.users().await.unwrap();
    let meters_before = site.state.store.meters().await.unwrap().len();
    let mut sent = 0;
    // Every query parameter the OpenAPI document declares, plus the table for the routes it
    // does not cover.
    let doc = site
        .get_as(Some(&admin), "/api/v1/openapi.json", ADMIN_IP)
        .await;
    assert_eq!(doc.status, StatusCode::OK, "{}", doc.body);
    let doc = doc.json();
    let prefix = doc["servers"][0]["url"].as_str().unwrap_or("").to_owned();
    let mut targets: Vec<(String, Vec<String>)> = Vec::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        let Some(get) = ops.get("get") else { continue };
        let params: Vec<String> = get["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        if params.is_empty() || path.ends_with("/live") {
            continue;
        }
        let route = format!("{prefix}{path}")
            .replace("/commands/{id}", "/commands/1")
            .replace("/customers/{id}", "/customers/c-a")
            .replace("{id}", "m-a");
        targets.push((route, params));
    }
    assert!(
        targets.len() >= 3,
        "the OpenAPI document declares too few query parameters: {targets:?}"
    );
    for (route, params) in QUERY_ROUTES {
        targets.push((
            fill(route, "m-a", "c-a"),
            params.iter().map(|p| (*p).to_owned()).collect(),
        ));
    }
    for (base, params) in &targets {
        for p in params {
            for inj in INJECTIONS {
                let sep = if base.contains('?') { '&' } else { '?' };
                let uri = format!("{base}{sep}{p}={}", encode(inj));
                let a = site.get_as(Some(&admin), &uri, ADMIN_IP).await;
                assert!(
                    !a.status.is_server_error(),
                    "GET {uri}: {} {}",
                    a.status,
                    a.body
                );
                assert!(!a.body.contains("$argon2"), "GET {uri} leaked a hash");
                assert!(
                    !a.body.contains("unknown query parameter"),
                    "GET {uri}: the table names a parameter the route does not take: {}",
                    a.body
                );
                assert!(
                    !a.body.to_lowercase().contains("syntax error"),
                    "GET {uri}: {}",
                    a.body
                );
                sent += 1;
            }
        }
    }
    // The name field of the login and the JSON bodies of the admin API.
    for inj in INJECTIONS {
        let a = site.login_raw(inj, inj, ATTACKER_IP, None).await;
        assert!(
            matches!(
                a.status,
                StatusCode::UNAUTHORIZED | StatusCode::TOO_MANY_REQUESTS
            ),
            "login {inj:?}: {}",
            a.status
        );
        // Names of a legal shape are stored verbatim as customers' accounts; the rest refused.
        let a = site
            .send_as(&admin, "POST", "/api/v1/users", serde_json::json!({"username": inj, "password": PASSWORD, "role": "customer", "customer_id": "c-a"}), ADMIN_IP)
            .await;
        match a.status {
            StatusCode::CREATED => assert_eq!(a.json()["user"]["username"], *inj),
            StatusCode::BAD_REQUEST => {}
            other => panic!("user {inj:?}: {other} {}", a.body),
        }
        let a = site
            .send_as(
                &admin,
                "PATCH",
                &format!("/api/v1/users/{}", encode(inj)),
                serde_json::json!({"role": "admin"}),
                ADMIN_IP,
            )
            .await;
        assert!(
            !a.status.is_server_error() && !a.status.is_success(),
            "patch {inj:?}: {}",
            a.status
        );
    }
    assert!(sent > 50);
    let users_after = accounts.users().await.unwrap();
    for u in &users_before {
        assert!(users_after.contains(u), "{} was not changed", u.username);
    }
    for u in &users_after {
        assert!(
            users_before.contains(u)
                || (INJECTIONS.contains(&u.username.as_str())
                    && u.role == server::http::Role::Customer),
            "unexpected account {u:?}"
        );
    }
    assert_eq!(
        site.state.store.meters().await.unwrap().len(),
        meters_before
    );
    // Failed logins with injection strings were counted and audited as ordinary failures.
    assert!(site.state.auth.stats.get(Denial::LoginFailed) >= 1);
    assert!(
        site.audit("login")
            .await
            .iter()
            .any(|r| r.actor.contains("DROP TABLE"))
    );
    let me = site.get_as(Some(&admin), "/api/v1/users", ADMIN_IP).await;
    assert_eq!(me.status, StatusCode::OK);
}

async fn path_traversal_in_downloads_serves_nothing(backend: Backend) {
    let Some(site) = site(backend).await else {
        return;
    };
    let admin = site.login("root", ADMIN_IP).await;
    for t in DOWNLOADS {
        for name in TRAVERSALS {
            let uri = t.replace("{name}", name);
            for who in [Some(&admin), None] {
                let a = site.get_as(who, &uri, ADMIN_IP).await;
                assert!(!a.status.is_server_error(), "GET {uri}: {}", a.status);
                assert!(
                    !a.body.contains("root:x:0:0"),
                    "GET {uri} served /etc/passwd"
                );
                assert!(
                    !a.body.contains("SQLite format 3"),
                    "GET {uri} served the database"
                );
                assert!(!a.body.contains("[fonts]"), "GET {uri} served win.ini");
                if who.is_none() {
                    assert!(!a.status.is_success() || a.body.len() < 100_000, "{uri}");
                }
            }
        }
    }
    // The legitimate download still works.
    let csv = site
        .get_as(Some(&admin), "/api/v1/audit.csv", ADMIN_IP)
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(
        csv.headers["content-disposition"]
            .to_str()
            .unwrap()
            .contains("wattline-audit.csv")
    );
}

async fn brute_force_login_is_locked_out_and_honest_users_are_still_served(backend: Backend) {
    let policy = AuthPolicy {
        max_failures_per_user: 5,
        lockout_ms: LOCKOUT_MS,
        max_failures_per_ip: 12,
        ip_window_ms: 60_000,
        ..AuthPolicy::default()
    };
    let Some(site) = Site::new(backend, policy).await else {
        return;
    };
    // Guessing alice's password.
    for guess in ["password", "123456", "alice", "letmein!!", "qwerty123"] {
        let a = site.login_raw("alice", guess, ATTACKER_IP, None).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{guess}");
        assert!(!a.headers.contains_key("set-cookie"));
    }
    // Locked: even the right password is refused now, from anywhere.
    let a = site.login_raw("alice", PASSWORD, ATTACKER_IP, None).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.body);
    let a = site.login_raw("alice", PASSWORD, ALICE_IP, None).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    let locked_at = std::time::Instant::now();
    // An unknown name answers exactly like a wrong password (no user enumeration).
    let ghost = site
        .login_raw("nobody", "whatever-password", BOB_IP, None)
        .await;
    let wrong = site
        .login_raw("bob", "whatever-password", BOB_IP, None)
        .await;
    assert_eq!((ghost.status, ghost.json()), (wrong.status, wrong.json()));
    // Honest users are still served meanwhile.
    let bob = site.login("bob", BOB_IP).await;
    assert_eq!(
        site.get_as(Some(&bob), "/api/v1/auth/me", BOB_IP)
            .await
            .status,
        StatusCode::OK
    );
    // Spraying many names from one address trips the per-address limit.
    let mut limited = false;
    for i in 0..12 {
        let a = site
            .login_raw(&format!("user{i}"), "nope-nope-nope", ATTACKER_IP, None)
            .await;
        if a.status == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
    }
    assert!(limited, "the attacker's address was rate limited");
    let a = site.login_raw("op", PASSWORD, ATTACKER_IP, None).await;
    assert_eq!(
        a.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the address stays refused"
    );
    let _op = site.login("op", ADMIN_IP).await;
    // Counted and audited.
    assert!(site.state.auth.stats.get(Denial::LoginFailed) >= 5);
    assert!(site.state.auth.stats.get(Denial::LoginLimited) >= 3);
    let audit = site.audit("login").await;
    assert!(
        audit
            .iter()
            .filter(|r| r.actor == "alice" && r.outcome == "failed")
            .count()
            >= 5
    );
    assert!(
        audit
            .iter()
            .any(|r| r.actor == "alice" && r.outcome == "limited")
    );
    assert!(
        audit
            .iter()
            .any(|r| r.remote.as_deref() == Some(ATTACKER_IP))
    );
    // The lockout is temporary: after it, alice signs in from her own address.
    tokio::time::sleep_until((locked_at + Duration::from_millis(LOCKOUT_MS as u64 + 200)).into())
        .await;
    let _alice = site.login("alice", ALICE_IP).await;
}

async fn session_fixation_a_planted_cookie_is_never_adopted(backend: Backend) {
    let Some(site) = site(backend).await else {
        return;
    };
    let planted = format!("wattline_session={}", "5a".repeat(32));
    let a = site
        .login_raw("alice", PASSWORD, ALICE_IP, Some(&planted))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let s = session_of(&a);
    assert_ne!(s.cookie, planted, "a new id was issued");
    let set = a.headers["set-cookie"].to_str().unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    let fixed = site
        .get_as(
            Some(&Session {
                cookie: planted.clone(),
                csrf: String::new(),
            }),
            "/api/v1/auth/me",
            ATTACKER_IP,
        )
        .await;
    assert_eq!(
        fixed.status,
        StatusCode::UNAUTHORIZED,
        "the planted id grants nothing"
    );
    // Signing in again, even with the current cookie, rotates the id.
    let again = site
        .login_raw("alice", PASSWORD, ALICE_IP, Some(&s.cookie))
        .await;
    assert_ne!(session_of(&again).cookie, s.cookie);
    assert!(site.state.auth.stats.get(Denial::BadCredentials) >= 1);
    assert_eq!(
        site.get_as(Some(&s), "/api/v1/auth/me", ALICE_IP)
            .await
            .status,
        StatusCode::OK
    );
}

async fn a_logged_out_session_is_dead(backend: Backend) {
    let Some(site) = site(backend).await else {
        return;
    };
    let alice = site.login("alice", ALICE_IP).await;
    let other = site.login("alice", ALICE_IP).await;
    assert_eq!(
        site.get_as(Some(&alice), "/api/v1/auth/me", ALICE_IP)
            .await
            .status,
        StatusCode::OK
    );
    let out = site
        .send_as(
            &alice,
            "POST",
            "/api/v1/auth/logout",
            serde_json::json!({}),
            ALICE_IP,
        )
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert!(
        out.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let before = site.state.auth.stats.get(Denial::BadCredentials);
    // The stolen/old cookie is refused server-side, for reads and writes.
    let replay = site
        .get_as(Some(&alice), "/api/v1/auth/me", ATTACKER_IP)
        .await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    let w = site
        .send_as(
            &alice,
            "POST",
            "/api/v1/tokens",
            serde_json::json!({"name":"x","scopes":["read"]}),
            ATTACKER_IP,
        )
        .await;
    assert_eq!(w.status, StatusCode::UNAUTHORIZED);
    assert!(site.state.auth.stats.get(Denial::BadCredentials) >= before + 2);
    assert!(!site.audit("logout").await.is_empty());
    // Her other session is untouched.
    assert_eq!(
        site.get_as(Some(&other), "/api/v1/auth/me", ALICE_IP)
            .await
            .status,
        StatusCode::OK
    );
}

async fn api_token_scopes_limit_what_a_token_does(backend: Backend) {
    let Some(site) = site(backend).await else {
        return;
    };
    let admin = site.login("root", ADMIN_IP).await;
    let made = site
        .send_as(
            &admin,
            "POST",
            "/api/v1/tokens",
            serde_json::json!({"name":"grafana","scopes":["read"]}),
            ADMIN_IP,
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let token = made.json()["token"].as_str().unwrap().to_owned();
    assert!(!made.body.contains("secret_hash"));
    let bearer = |method: &str, uri: &str, body: &str| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    assert_eq!(
        site.send(bearer("GET", "/api/v1/auth/me", ""), ADMIN_IP)
            .await
            .status,
        StatusCode::OK
    );
    let before = site.state.auth.stats.get(Denial::Scope);
    // A read token of an admin cannot administer or write.
    for (m, u, b) in [
        ("GET", "/api/v1/users", ""),
        ("GET", "/api/v1/audit", ""),
        (
            "POST",
            "/api/v1/users",
            r#"{"username":"mallory","password":"long enough password","role":"admin"}"#,
        ),
        (
            "POST",
            "/api/v1/tokens",
            r#"{"name":"more","scopes":["admin"]}"#,
        ),
        (
            "POST",
            "/api/v1/meters/m-a/commands",
            r#"{"action":"relay_open"}"#,
        ),
    ] {
        let a = site.send(bearer(m, u, b), ADMIN_IP).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{m} {u}: {}", a.body);
    }
    assert_eq!(site.state.auth.stats.get(Denial::Scope) - before, 5);
    assert!(
        site.state
            .db
            .accounts()
            .user_credentials("mallory")
            .await
            .unwrap()
            .is_none()
    );
    // Revoked tokens stop working at once; a tampered secret never worked.
    let id = made.json()["info"]["id"].as_i64().unwrap();
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('0') { '1' } else { '0' });
    let req = Request::get("/api/v1/auth/me")
        .header("authorization", format!("Bearer {tampered}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        site.send(req, ATTACKER_IP).await.status,
        StatusCode::UNAUTHORIZED
    );
    let del = site
        .send_as(
            &admin,
            "DELETE",
            &format!("/api/v1/tokens/{id}"),
            serde_json::json!({}),
            ADMIN_IP,
        )
        .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT, "{}", del.body);
    assert_eq!(
        site.send(bearer("GET", "/api/v1/auth/me", ""), ADMIN_IP)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(site.audit("token.create").await.len(), 1);
}

async fn role_changes_and_password_resets_end_sessions_and_are_audited(backend: Backend) {
    let Some(site) = site(backend).await else {
        return;
    };
    let admin = site.login("root", ADMIN_IP).await;
    let op = site.login("op", BOB_IP).await;
    let users = site
        .get_as(Some(&admin), "/api/v1/users", ADMIN_IP)
        .await
        .json();
    let id_of = |name: &str| {
        users["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["username"] == name)
            .unwrap()["id"]
            .as_i64()
            .unwrap()
    };
    assert!(
        !users.to_string().contains("argon2"),
        "hashes never leave the server"
    );
    // An operator cannot make himself admin.
    let a = site
        .send_as(
            &op,
            "PATCH",
            &format!("/api/v1/users/{}", id_of("op")),
            serde_json::json!({"role":"admin"}),
            BOB_IP,
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // The admin demotes him: his session ends at once.
    let a = site
        .send_as(
            &admin,
            "PATCH",
            &format!("/api/v1/users/{}", id_of("op")),
            serde_json::json!({"role":"customer","customer_id":"c-b"}),
            ADMIN_IP,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        site.get_as(Some(&op), "/api/v1/auth/me", BOB_IP)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let line = &site.audit("user.update").await[0];
    assert_eq!(
        (line.actor.as_str(), line.target.as_str()),
        ("root", "user:op")
    );
    assert!(
        line.detail.contains("operator -> customer"),
        "{}",
        line.detail
    );
    assert_eq!(line.remote.as_deref(), Some(ADMIN_IP));
    // A customer account must point at an existing customer.
    let a = site
        .send_as(
            &admin,
            "PATCH",
            &format!("/api/v1/users/{}", id_of("op")),
            serde_json::json!({"customer_id":"c-nope"}),
            ADMIN_IP,
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    // Password reset: old sessions end, the old password stops working, the new one works.
    let alice = site.login("alice", ALICE_IP).await;
    let a = site
        .send_as(
            &admin,
            "POST",
            &format!("/api/v1/users/{}/password", id_of("alice")),
            serde_json::json!({"password":"a brand new passphrase"}),
            ADMIN_IP,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    assert_eq!(
        site.get_as(Some(&alice), "/api/v1/auth/me", ALICE_IP)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        site.login_raw("alice", PASSWORD, ALICE_IP, None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        site.login_raw("alice", "a brand new passphrase", ALICE_IP, None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(site.audit("user.password_reset").await.len(), 1);
    // Short passwords and the admin demoting himself are refused.
    let a = site
        .send_as(
            &admin,
            "POST",
            &format!("/api/v1/users/{}/password", id_of("alice")),
            serde_json::json!({"password":"short"}),
            ADMIN_IP,
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = site
        .send_as(
            &admin,
            "PATCH",
            &format!("/api/v1/users/{}", id_of("root")),
            serde_json::json!({"role":"operator"}),
            ADMIN_IP,
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
}

async fn audit_trail_is_admin_only_and_exports_csv(backend: Backend) {
    let Some(site) = site(backend).await else {
        return;
    };
    let admin = site.login("root", ADMIN_IP).await;
    let alice = site.login("alice", ALICE_IP).await;
    let op = site.login("op", BOB_IP).await;
    for who in [&alice, &op] {
        for uri in ["/api/v1/audit", "/api/v1/audit.csv", "/api/v1/users"] {
            assert_eq!(
                site.get_as(Some(who), uri, ALICE_IP).await.status,
                StatusCode::FORBIDDEN,
                "{uri}"
            );
        }
    }
    let j = site
        .get_as(Some(&admin), "/api/v1/audit?action=login&limit=2", ADMIN_IP)
        .await;
    assert_eq!(j.status, StatusCode::OK);
    let entries = j.json()["entries"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["actor"], "op", "newest first");
    let bad = site
        .get_as(Some(&admin), "/api/v1/audit?limit=abc", ADMIN_IP)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let csv = site
        .get_as(Some(&admin), "/api/v1/audit.csv?outcome=ok", ADMIN_IP)
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(
        csv.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let mut lines = csv.body.lines();
    assert_eq!(
        lines.next(),
        Some("id,at_ms,at_utc,actor,remote,action,target,detail,outcome")
    );
    assert!(
        csv.body
            .contains("\"alice\",\"192.0.2.10\",\"login\",\"user:alice\""),
        "{}",
        csv.body
    );
    // The export itself is audited.
    assert_eq!(site.audit("audit.export").await.len(), 1);
}

/// Every GET route with an id in the OpenAPI document is in the attack tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_get_routes_with_ids_are_all_covered() {
    let Some(site) = Site::new(Backend::Sqlite, AuthPolicy::default()).await else {
        return;
    };
    let admin = site.login("root", ADMIN_IP).await;
    let mut doc = site.get_as(None, "/api/v1/openapi.json", ADMIN_IP).await;
    if doc.status != StatusCode::OK {
        doc = site
            .get_as(Some(&admin), "/api/v1/openapi.json", ADMIN_IP)
            .await;
    }
    assert_eq!(doc.status, StatusCode::OK, "{}", doc.body);
    let doc = doc.json();
    let paths = doc["paths"].as_object().expect("paths object");
    let missing: Vec<String> = paths
        .iter()
        .filter(|(p, ops)| p.contains('{') && ops.get("get").is_some())
        .map(|(p, _)| format!("{}{p}", doc["servers"][0]["url"].as_str().unwrap_or("")))
        .filter(|p| !covers(p))
        .collect();
    assert!(
        missing.is_empty(),
        "add these GET routes to tests/attacks_http/routes.rs: {missing:?}"
    );
}

#[test]
fn route_table_coverage_matches_shapes() {
    assert!(covers("/api/v1/meters/{id}/readings"));
    assert!(covers("/api/v1/customers/{customer_id}"));
    assert!(!covers("/api/v1/meters/{id}/something-new"));
}
