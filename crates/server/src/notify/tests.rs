//! Notifications against real receivers: mail to a local SMTP server (Python `aiosmtpd`,
//! writing a Maildir), webhooks to a local HTTP server that checks the HMAC signature on its
//! own, in-app messages through the API; merging, rate limit and digest under a flood.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{KeyInit, Mac};

use super::*;
use crate::billing::NotificationPref;
use crate::billing::tests::sqlite_db;

/// A local SMTP sink: `python3 -m aiosmtpd` storing every mail in a Maildir. Killed on drop.
pub(crate) struct SmtpSink {
    child: Child,
    pub(crate) port: u16,
    dir: std::path::PathBuf,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl SmtpSink {
    /// `None` (skip) only outside CI when aiosmtpd is not installed.
    pub(crate) async fn start() -> Option<SmtpSink> {
        let probe = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .status();
        if !probe.is_ok_and(|s| s.success()) {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("python3 with aiosmtpd is required under CI (pip install aiosmtpd)");
            }
            eprintln!(
                "skipping SMTP test: python3 -m aiosmtpd not available (pip install aiosmtpd)"
            );
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "wattline-smtp-{}-{}",
            std::process::id(),
            crate::now_ms()
        ));
        // Pick a free loopback port; aiosmtpd cannot report the one it bound.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
                "-c",
                "aiosmtpd.handlers.Mailbox",
                dir.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        let sink = SmtpSink { child, port, dir };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Some(sink);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("aiosmtpd did not listen on port {port}");
    }

    /// Every stored mail's raw text.
    pub(crate) fn mails(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(entries) = std::fs::read_dir(self.dir.join(sub)) {
                for e in entries.flatten() {
                    out.push(std::fs::read_to_string(e.path()).unwrap());
                }
            }
        }
        out
    }
}

fn config(port: u16) -> NotifyConfig {
    NotifyConfig {
        smtp: Some(SmtpConfig {
            host: "127.0.0.1".into(),
            port,
            security: SmtpSecurity::Plain,
            credentials: None,
            from: "wattline <alerts@wattline.test>".into(),
        }),
        webhook_secret: b"webhook-secret-for-tests".to_vec(),
        // The test receivers listen on loopback.
        allow_private_webhooks: true,
        ..NotifyConfig::default()
    }
}

fn pref(
    user: &str,
    customer: Option<&str>,
    rule: Rule,
    channel: &str,
    target: &str,
) -> NotificationPref {
    NotificationPref {
        username: user.into(),
        customer: customer.map(str::to_owned),
        rule: rule.as_str().into(),
        channel: channel.into(),
        target: target.into(),
        enabled: true,
    }
}

fn incident(rule: Rule, customer: &str, key: &str, at_ms: i64) -> Incident {
    Incident {
        rule,
        customer: Some(customer.into()),
        key: key.into(),
        subject: format!("{} at {key}", rule.as_str()),
        body: format!("details of {key}"),
        at_ms,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_reaches_a_real_smtp_server_and_a_flood_is_rate_limited_into_a_digest() {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let t = sqlite_db().await;
    let db = &t.db;
    db.billing()
        .set_pref(&pref(
            "ann",
            Some("c-1"),
            Rule::Overload,
            "email",
            "ann@example.org",
        ))
        .await
        .unwrap();
    db.billing()
        .set_pref(&pref(
            "bob",
            Some("c-2"),
            Rule::Overload,
            "email",
            "bob@example.org",
        ))
        .await
        .unwrap();
    let n = Notifier::new(db.clone(), config(sink.port)).unwrap();
    let t0 = 1_780_000_000_000;
    // One incident repeating a thousand times, plus a thousand distinct ones: a flood.
    let mut queued = 0;
    for i in 0..1000 {
        queued += n
            .raise(&incident(
                Rule::Overload,
                "c-1",
                "meter:m-1:overload",
                t0 + i,
            ))
            .await
            .unwrap();
    }
    assert_eq!(queued, 1, "repeats of one incident are merged");
    for i in 0..1000 {
        queued += n
            .raise(&incident(
                Rule::Overload,
                "c-1",
                &format!("meter:m-{i}:x"),
                t0 + 2_000 + i,
            ))
            .await
            .unwrap();
    }
    assert_eq!(queued, 5, "at most the rate limit per hour");
    let report = n.deliver(t0 + 5_000).await.unwrap();
    assert_eq!(report, DeliveryReport { sent: 5, failed: 0 });
    assert_eq!(n.digest(t0 + 10_000).await.unwrap(), 1);
    assert_eq!(
        n.digest(t0 + 11_000).await.unwrap(),
        0,
        "each held message is digested once"
    );
    let report = n.deliver(t0 + 12_000).await.unwrap();
    assert_eq!(report.sent, 1);
    let mails = sink.mails();
    assert_eq!(
        mails.len(),
        6,
        "five alerts and one digest, not two thousand mails"
    );
    assert!(mails.iter().all(|m| m.contains("ann@example.org")));
    assert!(
        mails
            .iter()
            .any(|m| m.contains("Subject: overload at meter:m-1:overload"))
    );
    let digest = mails
        .iter()
        .find(|m| m.contains("wattline digest: 1995 notifications"))
        .expect("the digest mail");
    assert!(digest.contains("held back"), "{digest}");
    // Bob's preference is for another customer: he got nothing.
    assert!(!mails.iter().any(|m| m.contains("bob@example.org")));
}

/// Without an SMTP server (email channel off) mail waits, pending, with its attempts intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_smtp_server_mail_waits_pending() {
    let t = sqlite_db().await;
    let db = &t.db;
    db.billing()
        .set_pref(&pref(
            "ops",
            None,
            Rule::Offline,
            "email",
            "ops@wattline.test",
        ))
        .await
        .unwrap();
    let n = Notifier::new(db.clone(), NotifyConfig::default()).unwrap();
    let now = crate::now_ms();
    assert_eq!(
        n.raise(&incident(Rule::Offline, "c-1", "meter:m-1:offline", now))
            .await
            .unwrap(),
        1
    );
    for i in 0..7 {
        assert_eq!(
            n.deliver(now + i).await.unwrap(),
            DeliveryReport { sent: 0, failed: 0 }
        );
    }
    let pending = db
        .billing()
        .messages_with_status(MessageStatus::Pending, 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].attempts, 0);
    assert!(pending[0].error.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_smtp_server_is_retried_then_failed_not_lost() {
    let t = sqlite_db().await;
    let db = &t.db;
    db.billing()
        .set_pref(&pref(
            "ann",
            None,
            Rule::BillIssued,
            "email",
            "ann@example.org",
        ))
        .await
        .unwrap();
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let n = Notifier::new(
        db.clone(),
        NotifyConfig {
            max_attempts: 2,
            ..config(port)
        },
    )
    .unwrap();
    n.raise(&incident(Rule::BillIssued, "c-1", "bill:1", 1))
        .await
        .unwrap();
    assert_eq!(n.deliver(2).await.unwrap().failed, 1);
    assert_eq!(n.deliver(3).await.unwrap().failed, 1);
    assert_eq!(n.deliver(4).await.unwrap(), DeliveryReport::default());
    let msgs = db
        .billing()
        .user_messages("ann", "email", 0, 10)
        .await
        .unwrap();
    assert_eq!(msgs[0].status, MessageStatus::Failed);
    assert_eq!(msgs[0].attempts, 2);
    assert!(msgs[0].error.as_deref().unwrap().contains("SMTP 127.0.0.1"));
}

type Received = Arc<Mutex<Vec<(bool, serde_json::Value)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_and_a_real_receiver_verifies_them() {
    let secret = b"webhook-secret-for-tests".to_vec();
    let received: Received = Arc::default();
    let (rx, key) = (received.clone(), secret.clone());
    // The receiver checks the signature with its own HMAC code, not the server's verifier.
    let receiver = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let (rx, key) = (rx.clone(), key.clone());
            async move {
                let header = headers
                    .get(SIGNATURE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let t = header
                    .split(',')
                    .find_map(|p| p.strip_prefix("t="))
                    .unwrap_or("");
                let v1 = header
                    .split(',')
                    .find_map(|p| p.strip_prefix("v1="))
                    .unwrap_or("");
                let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
                mac.update(format!("{t}.").as_bytes());
                mac.update(&body);
                let expected: String = mac
                    .finalize()
                    .into_bytes()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                let ok = !v1.is_empty() && expected == v1;
                let json = serde_json::from_slice(&body).unwrap_or_default();
                rx.lock().unwrap().push((ok, json));
                if ok {
                    StatusCode::NO_CONTENT
                } else {
                    StatusCode::UNAUTHORIZED
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, receiver).await });

    let t = sqlite_db().await;
    let db = &t.db;
    let url = format!("http://{addr}/hook");
    db.billing()
        .set_pref(&pref("ops", None, Rule::Tamper, "webhook", &url))
        .await
        .unwrap();
    let n = Notifier::new(
        db.clone(),
        NotifyConfig {
            webhook_secret: secret.clone(),
            // The receiver listens on loopback.
            allow_private_webhooks: true,
            ..NotifyConfig::default()
        },
    )
    .unwrap();
    let now = crate::now_ms();
    assert_eq!(
        n.raise(&incident(Rule::Tamper, "c-7", "meter:m-7:tamper", now))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        n.deliver(now).await.unwrap(),
        DeliveryReport { sent: 1, failed: 0 }
    );
    {
        let got = received.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].0, "signature verified by the receiver");
        assert_eq!(got[0].1["rule"], "tamper");
        assert_eq!(got[0].1["customer"], "c-7");
    }
    // A wrong secret is refused by the receiver: the message stays pending for a retry.
    let bad = Notifier::new(
        db.clone(),
        NotifyConfig {
            webhook_secret: b"not-the-secret".to_vec(),
            allow_private_webhooks: true,
            ..NotifyConfig::default()
        },
    )
    .unwrap();
    bad.raise(&incident(Rule::Tamper, "c-7", "meter:m-8:tamper", now + 1))
        .await
        .unwrap();
    let r = bad.deliver(now + 2).await.unwrap();
    assert_eq!(r.failed, 1);
    assert!(!received.lock().unwrap()[1].0);
    let pending = db
        .billing()
        .messages_with_status(MessageStatus::Pending, 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert!(pending[0].error.as_deref().unwrap().contains("401"));
    server.abort();
}

#[test]
fn signatures_verify_and_reject_tampering_and_stale_timestamps() {
    let h = sign_webhook(b"k", 1_000, b"{\"a\":1}");
    assert!(verify_webhook(b"k", &h, b"{\"a\":1}", 1_010, 300));
    assert!(!verify_webhook(b"k", &h, b"{\"a\":2}", 1_010, 300));
    assert!(!verify_webhook(b"x", &h, b"{\"a\":1}", 1_010, 300));
    assert!(!verify_webhook(b"k", &h, b"{\"a\":1}", 2_000, 300));
    assert!(!verify_webhook(b"k", "t=1000", b"", 1_000, 300));
    assert!(!verify_webhook(b"k", "garbage", b"", 1_000, 300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_app_messages_are_listed_for_their_user_only() {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let t = sqlite_db().await;
    let db = &t.db;
    // The bootstrap admin token's user name.
    let state = crate::http::AppState::new(
        db.clone(),
        crate::http::HttpConfig {
            admin_token: Some("tok-n".into()),
            ..Default::default()
        },
    );
    let router = crate::http::app(state);
    let put = Request::put("/api/v1/notifications/preferences")
        .header("authorization", "Bearer tok-n")
        .header("content-type", "application/json")
        .body(Body::from(
            r#"{"rule":"offline","channel":"inapp","enabled":true}"#,
        ))
        .unwrap();
    let resp = router.clone().oneshot(put).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bad = Request::put("/api/v1/notifications/preferences")
        .header("authorization", "Bearer tok-n")
        .header("content-type", "application/json")
        .body(Body::from(
            r#"{"rule":"everything","channel":"inapp","enabled":true}"#,
        ))
        .unwrap();
    assert_eq!(
        router.clone().oneshot(bad).await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    db.billing()
        .set_pref(&pref("someone-else", None, Rule::Offline, "inapp", ""))
        .await
        .unwrap();
    let n = Notifier::new(db.clone(), NotifyConfig::default()).unwrap();
    assert_eq!(
        n.raise(&incident(Rule::Offline, "c-1", "meter:m:offline", 5))
            .await
            .unwrap(),
        2
    );
    let get = Request::get("/api/v1/notifications")
        .header("authorization", "Bearer tok-n")
        .body(Body::empty())
        .unwrap();
    let resp = router.oneshot(get).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let list = v["notifications"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{v}");
    assert_eq!(list[0]["rule"], "offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_power_quality_watch_raises_voltage_out_of_range() {
    use crate::billing::tests::{load_meter, utc};
    let t = sqlite_db().await;
    let db = &t.db;
    let (from, to) = (utc("2026-02-01T00:00:00Z"), utc("2026-02-01T06:00:00Z"));
    load_meter(db, "watch-1", "w-1", "UTC", from, to, |_| 10.0).await;
    db.billing()
        .set_pref(&pref("ops", None, Rule::PowerQuality, "inapp", ""))
        .await
        .unwrap();
    let n = Notifier::new(db.clone(), NotifyConfig::default()).unwrap();
    // Readings at 230 V and 2 % THD are fine.
    let (f, t_) = (from.timestamp_millis(), to.timestamp_millis());
    assert_eq!(
        watch_power_quality(&n, db.store().as_ref(), f, t_)
            .await
            .unwrap(),
        0
    );
    let msgs = db
        .billing()
        .user_messages("ops", "inapp", 0, 10)
        .await
        .unwrap();
    assert!(
        msgs.iter().all(|m| m.message.rule != "power-quality"),
        "{msgs:?}"
    );
    // A sag to 190 V (EN 50160: below 207 V) in the next hour.
    let meter = schema::MeterId::parse("watch-1").unwrap();
    db.store()
        .write(&crate::WriteSet {
            batches: vec![crate::BatchWrite {
                meter: meter.clone(),
                boot_id: 1,
                records: vec![schema::Record {
                    seq: 10_000,
                    t_ms: t_ + 60_000,
                    body: schema::Body::Reading(crate::billing::tests::reading(
                        1e6, 0.0, 100.0, 190.0,
                    )),
                }],
                received_ms: crate::now_ms(),
                clock_drift_ms: None,
                source: "wattline/v1/m/watch-1/up".into(),
            }],
            quarantine: vec![],
        })
        .await
        .unwrap();
    let raised = watch_power_quality(&n, db.store().as_ref(), t_, t_ + 3_600_000)
        .await
        .unwrap();
    assert_eq!(raised, 1);
    let msgs = db
        .billing()
        .user_messages("ops", "inapp", 0, 10)
        .await
        .unwrap();
    assert_eq!(msgs[0].message.rule, "power-quality");
    assert!(msgs[0].message.body.contains("EN 50160"));
}
