//! The alarm jobs end to end: sealed envelopes from an observer meter with a bypassed house, an
//! observer whose house starts stealing slowly after an honest hour, an honest observer/house
//! pair and a meter that reports a magnet go through the real ingest into SQLite; the jobs run
//! over the stored data; the three suspects get cases with evidence, the honest pair none, a
//! second run changes nothing, and the cases are worked through the HTTP API.

use std::sync::Arc;

use axum::body::Body as HttpBody;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use schema::{
    Batch, Body, EnergyCounters, Event, EventClass, MeterId, Phase, PhaseReading, Reading, Record,
    TotalReading,
};
use server::alarms::{AlarmConfig, AlarmFilter, AlarmKind, CaseFilter, CaseState, run_once};
use server::http::{AppState, HttpConfig, app};
use server::{Database, KeyRing, Meter, SqliteStore, Store};
use tower::ServiceExt;

use crate::common::{TempDir, deliver, id, key_of, seal, start, up};

const STEP_MS: i64 = 10_000;
const READINGS: u64 = 720; // two hours every 10 s
const TOKEN: &str = "alarm-test-token";

/// The house's own load at reading `k`: a slow daily-like swing with some switching.
fn house_w(k: u64, phase_shift: u64) -> f64 {
    let x = (k + phase_shift) as f64 / 90.0;
    1_800.0
        + 600.0 * x.sin()
        + if (k / 37).is_multiple_of(3) {
            400.0
        } else {
            0.0
        }
}

/// Deterministic small meter noise in [-1, 1].
fn noise(k: u64, salt: u64) -> f64 {
    let h = (k.wrapping_mul(6_364_136_223_846_793_005)
        ^ salt.wrapping_mul(1_442_695_040_888_963_407))
        >> 11;
    (h % 2001) as f64 / 1000.0 - 1.0
}

/// Line loss of the 30 m, 16 mm² copper service drop at `p_w` (230 V, unity power factor).
fn line_loss_w(p_w: f64) -> f64 {
    let r_ohm = 2.0 * 0.017_241 * 30.0 / 16.0 * (1.0 + 0.003_93 * 5.0);
    let i = p_w / 230.0;
    i * i * r_ohm
}

fn reading(p_w: f64, import_wh: f64) -> Reading {
    let i = p_w / 230.0;
    Reading {
        interval_s: (STEP_MS / 1000) as f64,
        freq_hz: 50.0,
        phases: vec![PhaseReading {
            phase: Phase::A,
            v_rms: 230.0,
            i_rms: i,
            p_w,
            q_var: Some(0.0),
            s_va: p_w,
            pf: 1.0,
            v_thd_pct: None,
            i_thd_pct: None,
        }],
        total: TotalReading {
            p_w,
            q_var: Some(0.0),
            s_va: p_w,
            pf: 1.0,
        },
        counters: EnergyCounters {
            import_wh,
            ..Default::default()
        },
    }
}

/// Readings of one meter from a power profile, in batches of 60 records.
fn batches(meter: &MeterId, base_ms: i64, power_w: impl Fn(u64) -> f64) -> Vec<Batch> {
    let mut wh = 10_000.0;
    let records: Vec<Record> = (1..=READINGS)
        .map(|k| {
            let p = power_w(k);
            wh += p * STEP_MS as f64 / 3_600_000.0;
            Record {
                seq: k,
                t_ms: base_ms + k as i64 * STEP_MS,
                body: Body::Reading(reading(p, wh)),
            }
        })
        .collect();
    records
        .chunks(60)
        .map(|c| Batch {
            meter: meter.clone(),
            boot_id: 1,
            records: c.to_vec(),
        })
        .collect()
}

async fn enrol(store: &dyn Store, keys: &KeyRing, name: &str, parent: Option<&str>) {
    let mut m = Meter::new(id(name), format!("{name}.key"));
    m.parent = parent.map(id);
    m.reporting_interval_s = (STEP_MS / 1000) as u32;
    store.upsert_meter(&m).await.expect("enrol");
    keys.insert(m.id.clone(), key_of(&m.id));
}

fn config() -> AlarmConfig {
    let mut c = AlarmConfig::demo();
    c.balance.bucket_s = 60;
    c.balance.window_buckets = 60;
    c.balance.calibration_buckets = 48;
    // The two hours of data arrive at once and the jobs run once, so the first run must read
    // all of them (a running server's jobs follow the data every minute instead).
    c.event_lookback_s = 3 * 3600;
    c
}

async fn call(
    state: &AppState,
    method: &str,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {TOKEN}"));
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(body.map_or_else(HttpBody::empty, |b| HttpBody::from(b.to_owned())))
        .unwrap();
    let resp = app(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bypass_magnet_and_slow_theft_become_cases_and_honest_houses_do_not() {
    let dir = TempDir::new("wattline-alarms");
    let db = Database::Sqlite(SqliteStore::open(&dir.0).await.expect("open"));
    let store: Arc<dyn Store> = db.store();
    let keys = Arc::new(KeyRing::new());
    for (name, parent) in [
        ("pole-a", None),
        ("house-a", Some("pole-a")),
        ("pole-b", None),
        ("house-b", Some("pole-b")),
        ("pole-c", None),
        ("house-c", Some("pole-c")),
        ("meter-m", None),
    ] {
        enrol(store.as_ref(), &keys, name, parent).await;
    }
    let ingest = start(&store, &keys);
    // Two hours ending about now, on a minute boundary.
    let base_ms = (server::now_ms() / 60_000) * 60_000 - READINGS as i64 * STEP_MS;

    let mut all: Vec<Batch> = Vec::new();
    // A: 540 W wired around the house meter (seed 003's bypass: ~20 % of the load).
    all.extend(batches(&id("house-a"), base_ms, |k| house_w(k, 0)));
    all.extend(batches(&id("pole-a"), base_ms, |k| {
        let p = house_w(k, 0) + 540.0;
        (p + line_loss_w(p)) * (1.0 + 0.002 * noise(k, 1))
    }));
    // B: honest for the first hour, then a hidden load growing from 0 to 150 W.
    let hidden = |k: u64| {
        if k <= 360 {
            0.0
        } else {
            150.0 * (k - 360) as f64 / 360.0
        }
    };
    all.extend(batches(&id("house-b"), base_ms, |k| house_w(k, 40)));
    all.extend(batches(&id("pole-b"), base_ms, |k| {
        let p = house_w(k, 40) + hidden(k);
        (p + line_loss_w(p)) * (1.0 + 0.002 * noise(k, 2))
    }));
    // C: honest throughout.
    all.extend(batches(&id("house-c"), base_ms, |k| house_w(k, 80)));
    all.extend(batches(&id("pole-c"), base_ms, |k| {
        let p = house_w(k, 80);
        (p + line_loss_w(p)) * (1.0 + 0.002 * noise(k, 3))
    }));
    // M: a magnet on the meter for five minutes, half an hour in.
    let mut m = batches(&id("meter-m"), base_ms, |k| house_w(k, 120));
    let magnet = |seq: u64, t_ms: i64, active: bool| Record {
        seq,
        t_ms,
        body: Body::Event(Event {
            class: EventClass::Tamper,
            code: "magnetic_field".into(),
            active: Some(active),
            value: Some(if active { 85.0 } else { 0.0 }),
            detail: Some("strong magnetic field".into()),
        }),
    };
    m.push(Batch {
        meter: id("meter-m"),
        boot_id: 1,
        records: vec![
            magnet(READINGS + 1, base_ms + 1_800_000 + 5_000, true),
            magnet(READINGS + 2, base_ms + 2_100_000 + 5_000, false),
        ],
    });
    all.extend(m);
    for b in &all {
        deliver(&ingest, &up(&b.meter), seal(b)).await;
    }
    ingest.shutdown().await;

    let config = config();
    let now = server::now_ms();
    let report = run_once(&db, &config, now).await.expect("jobs run");
    let alarms = db.alarms();
    let cases = alarms.cases(&CaseFilter::default()).await.unwrap();
    let by_meter = |m: &str| cases.iter().find(|c| c.meter == m).cloned();
    let diagnostics = report.diagnostics.join("\n");

    // The bypass: a balance case on the house, with the residual series as evidence.
    let a = by_meter("house-a").unwrap_or_else(|| panic!("no case for the bypass; {diagnostics}"));
    let item = &a.evidence["items"][0];
    assert_eq!(item["kind"], "theft_balance");
    assert_eq!(item["observer"], "pole-a");
    assert!(
        item["residual_series"].as_array().unwrap().len() >= 30,
        "{item}"
    );
    let pct = item["unexplained_pct"].as_f64().unwrap();
    assert!((15.0..30.0).contains(&pct), "bypass share {pct}");
    assert!(!item["findings"].as_array().unwrap().is_empty());

    // The slow theft: found after the honest hour, by a calibrated model.
    let b =
        by_meter("house-b").unwrap_or_else(|| panic!("no case for the slow theft; {diagnostics}"));
    let item = &b.evidence["items"][0];
    assert_eq!(item["kind"], "theft_balance");
    assert_eq!(item["calibrated"], true, "{diagnostics}");
    let first_finding = item["findings"]
        .as_array()
        .unwrap()
        .iter()
        // A day finding spans its whole local day by definition; the interval and CUSUM
        // findings say when the excess began.
        .filter(|f| f["alarm"] != "day")
        .filter_map(|f| f["start_ms"].as_i64())
        .min()
        .unwrap();
    assert!(
        first_finding > base_ms + 3_600_000,
        "found before the theft began (base {base_ms}): {}",
        item["findings"]
    );

    // The magnet: a tamper case with the event as evidence; the episode ended.
    let t = by_meter("meter-m")
        .unwrap_or_else(|| panic!("no case for the magnet; {diagnostics}; cases {cases:?}"));
    let item = &t.evidence["items"][0];
    assert_eq!(item["kind"], "tamper");
    assert_eq!(item["rule"], "magnetic_field");
    assert!(
        item["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["code"] == "magnetic_field")
    );
    let tamper = alarms
        .alarms(&AlarmFilter {
            meter: Some("meter-m".into()),
            kind: Some(AlarmKind::Tamper),
            ..AlarmFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(tamper.len(), 1);
    // Cleared at the "field gone" event itself.
    assert_eq!(tamper[0].cleared_ms, Some(base_ms + 2_100_000 + 5_000));

    // The honest pair raises nothing.
    assert!(
        by_meter("house-c").is_none() && by_meter("pole-c").is_none(),
        "{cases:?}"
    );
    let honest = alarms
        .alarms(&AlarmFilter {
            meter: Some("pole-c".into()),
            ..AlarmFilter::default()
        })
        .await
        .unwrap();
    assert!(honest.is_empty(), "{honest:?}");
    assert_eq!(cases.len(), 3, "{cases:?}");

    // Restart-safe and idempotent: running again opens nothing new.
    let again = run_once(&db, &config, now + 1_000).await.unwrap();
    assert_eq!(
        (again.alarms_opened, again.cases_opened),
        (0, 0),
        "{again:?}"
    );
    assert_eq!(alarms.cases(&CaseFilter::default()).await.unwrap().len(), 3);

    // Supervision: an hour later every meter is silent → offline; reporting again clears it.
    let later = run_once(&db, &config, now + 3_600_000).await.unwrap();
    assert!(later.alarms_opened >= 7, "{later:?}");
    let offline = alarms
        .alarms(&AlarmFilter {
            kind: Some(AlarmKind::Offline),
            active: Some(true),
            ..AlarmFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(offline.len(), 7);
    assert!(offline[0].message.contains("data route damaged"));
    run_once(&db, &config, now + 2_000).await.unwrap();
    let offline = alarms
        .alarms(&AlarmFilter {
            kind: Some(AlarmKind::Offline),
            active: Some(true),
            ..AlarmFilter::default()
        })
        .await
        .unwrap();
    assert!(offline.is_empty(), "{offline:?}");

    // The API: operators work the case; decided cases become labels.
    let state = AppState::new(
        db.clone(),
        HttpConfig {
            admin_token: Some(TOKEN.into()),
            ..HttpConfig::default()
        },
    );
    let unauth = app(state.clone())
        .oneshot(
            Request::get("/api/v1/cases")
                .body(HttpBody::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(unauth.status(), StatusCode::UNAUTHORIZED);
    let (s, body) = call(&state, "GET", "/api/v1/cases?state=open", None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["cases"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let (s, body) = call(&state, "GET", &format!("/api/v1/cases/{}", a.id), None).await;
    assert_eq!(s, StatusCode::OK);
    let detail: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(detail["case"]["evidence"]["items"][0]["residual_series"].is_array());
    assert_eq!(detail["history"][0]["to"], "open");
    let uri = format!("/api/v1/cases/{}/transition", a.id);
    let (s, _) = call(
        &state,
        "POST",
        &uri,
        Some(r#"{"to":"confirmed","reason":"skip"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = call(
        &state,
        "POST",
        &uri,
        Some(r#"{"to":"inspecting","reason":" "}"#),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, body) = call(
        &state,
        "POST",
        &uri,
        Some(r#"{"to":"inspecting","reason":"visit tomorrow","assignee":"team 2"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _) = call(
        &state,
        "POST",
        &uri,
        Some(r#"{"to":"confirmed","reason":"cable around the meter"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let uri = format!("/api/v1/cases/{}/transition", t.id);
    let (s, _) = call(
        &state,
        "POST",
        &uri,
        Some(r#"{"to":"dismissed","reason":"magnet from a loudspeaker"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, csv) = call(&state, "GET", "/api/v1/cases/labels.csv", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(csv, "meter_id,label\nhouse-a,1\nmeter-m,0\n");
    assert_eq!(
        alarms.case(a.id).await.unwrap().unwrap().state,
        CaseState::Confirmed
    );
    let (s, body) = call(&state, "GET", "/api/v1/alarms?kind=tamper", None).await;
    assert_eq!(s, StatusCode::OK);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let alarm_id = list["alarms"][0]["id"].as_i64().unwrap();
    let (s, body) = call(
        &state,
        "POST",
        &format!("/api/v1/alarms/{alarm_id}/acknowledge"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _) = call(
        &state,
        "POST",
        &format!("/api/v1/alarms/{alarm_id}/resolve"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(
        &state,
        "POST",
        &format!("/api/v1/alarms/{alarm_id}/resolve"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = call(&state, "GET", "/api/v1/alarms?kind=nonsense", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}
