//! The command path end to end: an operator queues commands through the HTTP API, the
//! dispatcher seals them and publishes them through the embedded broker (mutual TLS) to a meter
//! client that opens them with its key, and the meter's sealed `ack` records, stored by ingest,
//! complete them. A command to an offline meter waits; one whose expiry passes expires.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body as AxBody;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use rumqttc::{Event, Packet, QoS};
use schema::{Ack, AckStatus, Batch, Body, MeterId, MeterKey, Record};
use serde_json::{Value, json};
use server::commands::{Dispatcher, DispatcherConfig, DownLink};
use server::http::{AppState, HttpConfig, app};
use server::{Database, Ingest, IngestConfig, KeyRing, Meter, SqliteStore};
use tower::ServiceExt;

use crate::mqtt::support::{TempDir, TestPki, client_tls, embedded, mqtt_client};

const ADMIN: &str = "dispatch-test-admin-token";

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("content-type", "application/json")
        .body(body.map_or_else(AxBody::empty, |b| AxBody::from(b.to_string())))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn status_of(app: &axum::Router, id: i64) -> Value {
    call(app, "GET", &format!("/api/v1/commands/{id}"), None)
        .await
        .1
}

async fn wait_status(app: &axum::Router, id: i64, want: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let v = status_of(app, id).await;
        if v["status"] == want {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "command {id} never became {want}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_travel_queued_sent_delivered_succeeded_through_the_embedded_broker() {
    let dir = TempDir::new("wattline-dispatch");
    let pki = TestPki::new("dispatch-ca");
    let (broker, deliveries) = embedded(&pki).await;
    let port = broker.local_addr().port();
    let broker = Arc::new(broker);

    let db = Database::Sqlite(SqliteStore::open(&dir.0).await.unwrap());
    let meter = MeterId::parse("relay-7").unwrap();
    let key = MeterKey::generate();
    let keys = Arc::new(KeyRing::new());
    keys.insert(meter.clone(), key.clone());
    db.store()
        .upsert_meter(&Meter::new(meter.clone(), "relay-7.key"))
        .await
        .unwrap();
    let ingest = Arc::new(Ingest::start(
        db.store(),
        keys.clone(),
        IngestConfig::default(),
    ));
    let feeder = ingest.clone();
    tokio::spawn(async move { server::source::feed(deliveries, &feeder).await });
    let link: Arc<dyn DownLink> = broker.clone();
    let dispatcher = Dispatcher::start(
        db.store(),
        keys.clone(),
        link,
        DispatcherConfig {
            poll_interval: Duration::from_millis(100),
            resend_after: Duration::from_secs(2),
            ..DispatcherConfig::default()
        },
    );
    let config = HttpConfig {
        admin_token: Some(ADMIN.to_owned()),
        ..HttpConfig::default()
    };
    let app = app(AppState::new(db, config).with_dispatcher(&dispatcher));

    // The meter is offline: one command waits, one expires.
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/meters/relay-7/commands",
        Some(json!({
            "kind": "relay_disconnect", "reason": "arrears, case 17", "expires_in_s": 120
        })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let waiting = v["id"].as_i64().unwrap();
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/meters/relay-7/commands",
        Some(json!({
            "kind": "reporting_interval", "reason": "test", "interval_s": 30,
            "expires_at": server::now_ms() + 700
        })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let expiring = v["id"].as_i64().unwrap();
    wait_status(&app, expiring, "EXPIRED").await;
    assert_eq!(status_of(&app, waiting).await["status"], "QUEUED");

    // The meter connects, opens what arrives with its key, and acks each command.
    let tls = client_tls(pki.ca.cert_pem(), Some(&pki.client("relay-7")));
    let (client, mut eventloop) = mqtt_client("relay-7", port, Some(tls), |_| {});
    client
        .subscribe("wattline/v1/m/relay-7/down", QoS::AtLeastOnce)
        .await
        .unwrap();
    let opened = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = opened.clone();
    let meter_key = key.clone();
    let meter_id = meter.clone();
    tokio::spawn(async move {
        let mut seq = 0;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic.ends_with("/down") => {
                    let (_, commands) = schema::open_commands(&meter_key, &meter_id, &p.payload)
                        .expect("sealed for this meter");
                    for c in commands {
                        let c = c.expect("a well-formed command");
                        seen.lock().unwrap().push(c.clone());
                        seq += 1;
                        let batch = Batch {
                            meter: meter_id.clone(),
                            boot_id: 1,
                            records: vec![Record {
                                seq,
                                t_ms: server::now_ms(),
                                body: Body::Ack(Ack {
                                    command_id: Some(c.id.clone()),
                                    status: AckStatus::Succeeded,
                                    reason: None,
                                }),
                            }],
                        };
                        let up = schema::seal_batch(&meter_key, &batch).unwrap();
                        client
                            .publish("wattline/v1/m/relay-7/up", QoS::AtLeastOnce, false, up)
                            .await
                            .unwrap();
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });

    let done = wait_status(&app, waiting, "SUCCEEDED").await;
    let steps: Vec<(&str, &str)> = done["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["to"].as_str().unwrap(), a["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            ("QUEUED", "admin-token"),
            ("SENT", "system"),
            ("DELIVERED", "system"),
            ("SUCCEEDED", "meter:relay-7")
        ]
    );
    let got = opened.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "sent once, the expired one never: {got:?}");
    assert_eq!(got[0].id, waiting.to_string());
    assert_eq!(got[0].action, schema::Action::RelayDisconnect);

    // A command to the connected meter goes straight through.
    let (_, v) = call(&app, "POST", "/api/v1/meters/relay-7/commands", Some(json!({
        "kind": "limiter_set", "reason": "overload", "threshold_w": 4000, "duration_s": 10, "expires_in_s": 60
    }))).await;
    wait_status(&app, v["id"].as_i64().unwrap(), "SUCCEEDED").await;
    dispatcher.shutdown().await;
}
