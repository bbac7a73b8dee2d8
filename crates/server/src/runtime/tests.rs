//! The running server's automation: `Server::start` with a temporary data directory, a real
//! SMTP sink (`python3 -m aiosmtpd`) and real HTTP — an overload event stored for a meter
//! becomes an alarm (alarm job) and a mail (notification job); webhook preferences to private
//! addresses are refused with a 400 naming the field.

use std::net::SocketAddr;
use std::time::Duration;

use schema::{Body, Event, EventClass, MeterId, Record};

use super::*;
use crate::billing::NotificationPref;
use crate::notify::tests::SmtpSink;
use crate::{BatchWrite, Customer, Meter, WriteSet};

const ADMIN_TOKEN: &str = "runtime-test-admin-token-0123456789";

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn data_dir(name: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!(
        "wattline-runtime-{name}-{}-{}",
        std::process::id(),
        crate::now_ms()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    PkiFiles::new(&dir)
        .init("wattline runtime test CA", &["127.0.0.1".to_owned()])
        .expect("pki init");
    let token = dir.join("admin-token");
    crate::keystore::write_secret_file(&token, &format!("{ADMIN_TOKEN}\n")).unwrap();
    TempDir(dir)
}

fn config(dir: &Path) -> ServerConfig {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut c = ServerConfig {
        data_dir: dir.to_owned(),
        store: StoreConfig::Sqlite,
        mqtt: MqttConfig::Embedded(EmbeddedMqtt {
            listen: loopback,
            cert_file: None,
            key_file: None,
            ca_file: None,
            allow_plain: false,
            max_unacked_per_connection: 64,
        }),
        ..ServerConfig::default()
    };
    c.http.listen = loopback;
    c.http.admin_token_file = Some(dir.join("admin-token"));
    c.alarms.every_s = 1;
    c.notify.deliver_every_s = 1;
    c
}

async fn put_pref(
    addr: SocketAddr,
    body: serde_json::Value,
) -> (reqwest::StatusCode, serde_json::Value) {
    let resp = reqwest::Client::new()
        .put(format!("http://{addr}/api/v1/notifications/preferences"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request to the test server");
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// An overload cut-off stored for a customer's meter reaches an operator's mailbox through the
/// running server's own jobs: alarm job → notification → delivery job → SMTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overload_alarm_is_mailed_by_the_running_server() {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let dir = data_dir("mail");
    let mut c = config(&dir.0);
    c.notify.smtp_host = Some("127.0.0.1".into());
    c.notify.smtp_port = Some(sink.port);
    c.notify.smtp_security = SmtpSecuritySetting::Plain;
    c.notify.smtp_from = Some("wattline <alerts@wattline.test>".into());
    let server = Server::start(&c).await.expect("server starts");
    let db = server.database().clone();
    let store = db.store();
    store
        .upsert_customer(&Customer {
            id: "c-7".into(),
            name: "Customer 7".into(),
            time_zone: "Europe/Vienna".into(),
        })
        .await
        .unwrap();
    let mut meter = Meter::new(MeterId::parse("house-7").unwrap(), "house-7.key");
    meter.customer = Some("c-7".into());
    store.upsert_meter(&meter).await.unwrap();
    db.billing()
        .set_pref(&NotificationPref {
            username: "ops".into(),
            customer: None,
            rule: "overload".into(),
            channel: "email".into(),
            target: "ops@wattline.test".into(),
            enabled: true,
        })
        .await
        .unwrap();
    let now = crate::now_ms();
    store
        .write(&WriteSet {
            batches: vec![BatchWrite {
                meter: meter.id.clone(),
                boot_id: 1,
                records: vec![Record {
                    seq: 1,
                    t_ms: now - 1_000,
                    body: Body::Event(Event {
                        class: EventClass::Limiter,
                        code: "overload_cutoff".into(),
                        active: Some(true),
                        value: Some(7_400.0),
                        detail: None,
                    }),
                }],
                received_ms: now,
                clock_drift_ms: None,
                source: "wattline/v1/m/house-7/up".into(),
            }],
            quarantine: vec![],
        })
        .await
        .unwrap();

    // The server's own alarm job (every second here) opens the alarm and raises its
    // notification; the server's delivery job mails it.
    let overloads = || async {
        db.alarms()
            .alarms(&crate::alarms::AlarmFilter {
                kind: Some(crate::alarms::AlarmKind::Overload),
                ..crate::alarms::AlarmFilter::default()
            })
            .await
            .unwrap()
    };
    let opened_by = tokio::time::Instant::now() + Duration::from_secs(5);
    while overloads().await.is_empty() {
        assert!(
            tokio::time::Instant::now() < opened_by,
            "the alarm job opened no overload alarm within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(overloads().await.len(), 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mail = loop {
        if let Some(m) = sink.mails().into_iter().find(|m| m.contains("house-7")) {
            break m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no overload mail within 15 s; messages: {:?}",
            db.billing()
                .user_messages("ops", "email", 0, 10)
                .await
                .unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(mail.contains("ops@wattline.test"), "{mail}");
    assert!(mail.contains("overload alarm at meter house-7"), "{mail}");
    // One alarm, one mail: the job's next passes neither reopen nor resend.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        sink.mails()
            .iter()
            .filter(|m| m.contains("house-7"))
            .count(),
        1
    );
    let stats = server.notifier().stats();
    assert_eq!(
        stats
            .raise_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert!(stats.delivered.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    server.shutdown().await;
}

/// Webhook targets on loopback are refused at save time (400 naming `target`) unless
/// `[notify] allow_private_webhooks = true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_webhook_targets_are_refused_unless_allowed() {
    let dir = data_dir("webhook");
    let server = Server::start(&config(&dir.0)).await.expect("server starts");
    let addr = server.http_addr();
    for target in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/hook",
        "http://169.254.169.254/latest/meta-data",
        "ftp://93.184.216.34/hook",
    ] {
        let (status, body) = put_pref(
            addr,
            serde_json::json!({"rule": "tamper", "channel": "webhook", "target": target, "enabled": true}),
        )
        .await;
        assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{target}: {body}");
        assert!(body.to_string().contains("target"), "{target}: {body}");
    }
    // A public literal address is accepted (nothing is sent at save time).
    let (status, body) = put_pref(
        addr,
        serde_json::json!({"rule": "tamper", "channel": "webhook", "target": "https://93.184.216.34/hook", "enabled": true}),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    server.shutdown().await;

    let mut c = config(&dir.0);
    c.notify.allow_private_webhooks = true;
    let server = Server::start(&c).await.expect("server restarts");
    let (status, body) = put_pref(
        server.http_addr(),
        serde_json::json!({"rule": "tamper", "channel": "webhook", "target": "http://127.0.0.1:9/hook", "enabled": true}),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    server.shutdown().await;
}

/// A webhook saved while private targets were allowed is refused at delivery once they are
/// not (the check runs again), and nothing reaches the loopback receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_rechecks_the_webhook_target() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = listener.local_addr().unwrap();
    let app = {
        let hits = hits.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let hits = hits.clone();
                async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    "ok"
                }
            }),
        )
    };
    let served = tokio::spawn(async move { axum::serve(listener, app).await });
    let t = crate::billing::tests::sqlite_db().await;
    let pref = NotificationPref {
        username: "ops".into(),
        customer: None,
        rule: "tamper".into(),
        channel: "webhook".into(),
        target: format!("http://{receiver}/hook"),
        enabled: true,
    };
    t.db.billing().set_pref(&pref).await.unwrap();
    let incident = crate::notify::Incident {
        rule: crate::notify::Rule::Tamper,
        customer: None,
        key: "meter:m-1:tamper".into(),
        subject: "tamper".into(),
        body: "cover opened".into(),
        at_ms: crate::now_ms(),
    };
    let strict = crate::notify::Notifier::new(
        t.db.clone(),
        crate::notify::NotifyConfig {
            webhook_secret: b"0123456789abcdef".to_vec(),
            ..crate::notify::NotifyConfig::default()
        },
    )
    .unwrap();
    assert_eq!(strict.raise(&incident).await.unwrap(), 1);
    let r = strict.deliver(crate::now_ms()).await.unwrap();
    assert_eq!((r.sent, r.failed), (0, 1));
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    let msgs =
        t.db.billing()
            .user_messages("ops", "webhook", 0, 10)
            .await
            .unwrap();
    assert!(
        msgs[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("loopback")),
        "{msgs:?}"
    );
    // The same message goes out once the operator allows private targets.
    let relaxed = crate::notify::Notifier::new(
        t.db.clone(),
        crate::notify::NotifyConfig {
            webhook_secret: b"0123456789abcdef".to_vec(),
            allow_private_webhooks: true,
            ..crate::notify::NotifyConfig::default()
        },
    )
    .unwrap();
    let r = relaxed.deliver(crate::now_ms()).await.unwrap();
    assert_eq!((r.sent, r.failed), (1, 0));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    served.abort();
}

#[test]
fn automation_sections_parse_and_errors_name_the_key() {
    let parse = |text: &str| -> Result<ServerConfig, String> {
        let c: ServerConfig =
            toml::from_str(&format!("data_dir = \"/d\"\n{text}")).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    };
    let c = parse("").unwrap();
    assert!(c.billing.cycle_run && c.billing.run_day == 1 && c.reports.monthly);
    assert_eq!(c.billing.prepaid_check_every_s, 900);
    assert_eq!(c.notify.smtp_host, None);
    assert!(!c.notify.allow_private_webhooks);
    let c = parse(
        "[billing]\nrun_day = 5\nrun_time = \"04:30\"\n[notify]\nsmtp_host = \"mail.example.net\"\n\
         smtp_from = \"a@example.net\"\nsmtp_security = \"tls\"\nrate_limit = 3\n[reports]\nmonthly = false\n",
    )
    .unwrap();
    let jobs = c.billing.jobs().unwrap();
    assert_eq!(jobs.cycle_run.unwrap().day, 5);
    assert_eq!(c.notify.smtp_security, SmtpSecuritySetting::Tls);
    assert!(!c.reports.monthly);
    for (text, key) in [
        ("[billing]\nrun_day = 31\n", "[billing] run_day"),
        ("[billing]\nrun_time = \"25:00\"\n", "[billing] run_time"),
        (
            "[billing]\nprepaid_check_every_s = 0\n",
            "[billing] prepaid_check_every_s",
        ),
        ("[notify]\nsmtp_host = \"h\"\n", "[notify] smtp_from"),
        (
            "[notify]\nsmtp_host = \"h\"\nsmtp_from = \"not an address\"\n",
            "[notify] smtp_from",
        ),
        ("[notify]\nsmtp_username = \"u\"\n", "smtp_password_file"),
        ("[notify]\nrate_limit = 0\n", "[notify] rate_limit"),
        ("[notify]\nsmtp_security = \"ssl\"\n", "smtp_security"),
        ("[notify]\nsmtp_hots = \"h\"\n", "smtp_hots"),
        ("[reports]\nmonthy = true\n", "monthy"),
    ] {
        let e = parse(text).unwrap_err();
        assert!(e.contains(key), "{text:?}: {e}");
    }
    // The documented example file sets every section.
    let c: ServerConfig = toml::from_str(include_str!("../../../../examples/server.toml")).unwrap();
    c.validate().unwrap();
    assert_eq!(c.billing, BillingSection::default());
    assert_eq!(c.reports, ReportsSection::default());
}

/// A webhook secret file that is too short stops the start, naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_webhook_secret_stops_the_start() {
    let dir = data_dir("secret");
    let secret = dir.0.join("short.secret");
    crate::keystore::write_secret_file(&secret, "short\n").unwrap();
    let mut c = config(&dir.0);
    c.notify.webhook_secret_file = Some(secret);
    let e = match Server::start(&c).await {
        Ok(s) => {
            s.shutdown().await;
            panic!("started with a 5-character webhook secret")
        }
        Err(e) => e.to_string(),
    };
    assert!(e.contains("[notify] webhook_secret_file"), "{e}");
    // The default secret is created once, owner-only, and reused.
    let server = Server::start(&config(&dir.0))
        .await
        .expect("default secret");
    server.shutdown().await;
    let created = std::fs::read_to_string(dir.0.join("webhook.secret")).unwrap();
    assert_eq!(created.trim().len(), 64);
    crate::keystore::check_owner_only(&dir.0.join("webhook.secret")).unwrap();
    let server = Server::start(&config(&dir.0)).await.expect("restart");
    server.shutdown().await;
    assert_eq!(
        std::fs::read_to_string(dir.0.join("webhook.secret")).unwrap(),
        created
    );
}

/// A bill run through the API of the running server raises bill-issued for the customer's
/// users (the same hook as the monthly job).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bill_run_through_the_api_notifies_the_customer() {
    use crate::billing::PaymentMode;
    use crate::billing::tests::{GB_TARIFF, assign, load_meter, put_tariff, utc};
    let dir = data_dir("billrun");
    let server = Server::start(&config(&dir.0)).await.expect("server starts");
    let db = server.database().clone();
    put_tariff(&db, GB_TARIFF).await;
    assign(&db, "c-api", "gb-single-rate", PaymentMode::Postpaid, false).await;
    load_meter(
        &db,
        "m-api",
        "c-api",
        "Europe/London",
        utc("2026-02-01T00:00:00Z"),
        utc("2026-03-01T00:00:00Z"),
        |_| 250.0,
    )
    .await;
    db.billing()
        .set_pref(&NotificationPref {
            username: "carol".into(),
            customer: Some("c-api".into()),
            rule: "bill-issued".into(),
            channel: "inapp".into(),
            target: String::new(),
            enabled: true,
        })
        .await
        .unwrap();
    let run = || async {
        let resp = reqwest::Client::new()
            .post(format!("http://{}/api/v1/billing/runs", server.http_addr()))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(r#"{"period_start":"2026-02-01","period_end":"2026-03-01"}"#)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
        (status, body)
    };
    let (status, body) = run().await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(body["issued"].as_array().map(Vec::len), Some(1), "{body}");
    // Running the same cycle again issues nothing and notifies no one.
    let (status, body) = run().await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(body["already_billed"][0], "c-api", "{body}");
    let msgs = db
        .billing()
        .user_messages("carol", "inapp", 0, 10)
        .await
        .unwrap();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0].message.rule, "bill-issued");
    assert!(
        msgs[0].message.body.contains("190.54"),
        "{}",
        msgs[0].message.body
    );
    server.shutdown().await;
}
