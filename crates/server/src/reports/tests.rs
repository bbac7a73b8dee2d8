//! Statements and reports rendered from stored data and checked from the outside: the PDF's
//! text extracted with `pdftotext` (poppler-utils), its chart found as a Form XObject of filled
//! rectangle paths; the CSV parsed back; the HTTP routes with their authorization.

use std::process::Command;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use billing::Cycle;
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::billing::tests::{GB_TARIFF, assign, d, load_meter, put_tariff, sqlite_db, utc};
use crate::billing::{BillingConfig, PaymentMode, bill_customer};
use crate::http::{AppState, HttpConfig, app};

/// Text of a PDF via `pdftotext`; `None` (skip) only outside CI when it is not installed.
fn pdf_text(pdf: &[u8]) -> Option<String> {
    let dir = std::env::temp_dir().join(format!(
        "wattline-pdf-{}-{}",
        std::process::id(),
        crate::now_ms()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("statement.pdf");
    std::fs::write(&path, pdf).unwrap();
    let out = Command::new("pdftotext")
        .arg("-layout")
        .arg(&path)
        .arg("-")
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    match out {
        Ok(o) => {
            assert!(
                o.status.success(),
                "pdftotext failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            Some(String::from_utf8(o.stdout).expect("pdftotext prints UTF-8"))
        }
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!(
                "skipping PDF text check: pdftotext not runnable ({e}); install poppler-utils"
            );
            None
        }
        Err(e) => panic!("pdftotext (poppler-utils) is required under CI: {e}"),
    }
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_pdf_has_customer_period_totals_and_a_chart() {
    let t = sqlite_db().await;
    let db = &t.db;
    put_tariff(db, GB_TARIFF).await;
    assign(db, "gb-1", "gb-single-rate", PaymentMode::Postpaid, false).await;
    let (from, to) = (utc("2026-02-01T00:00:00Z"), utc("2026-03-01T00:00:00Z"));
    load_meter(db, "gb-pdf", "gb-1", "Europe/London", from, to, |t| {
        use chrono::Datelike;
        100.0 + t.day() as f64
    })
    .await;
    let cycle = Cycle::new(d(2026, 2, 1), d(2026, 3, 1));
    let bill = bill_customer(db, &BillingConfig::default(), "gb-1", cycle, 1)
        .await
        .unwrap()
        .unwrap();
    let customer = db.store().customer("gb-1").await.unwrap().unwrap();
    let daily = super::daily_kwh(
        db.store().as_ref(),
        "gb-1",
        from,
        to,
        chrono_tz::Europe::London,
    )
    .await
    .unwrap();
    assert_eq!(daily.len(), 28);
    let pdf = super::statement_pdf(&bill, &customer, &daily);
    assert!(pdf.starts_with(b"%PDF-"));
    // The chart: one Form XObject placed with `Do`, holding one filled rectangle per day.
    assert_eq!(count(&pdf, b"/Subtype /Form"), 1);
    assert_eq!(count(&pdf, b"/C0 Do"), 1);
    assert!(count(&pdf, b" re\nf\n") >= 28, "a bar per day");
    let Some(text) = pdf_text(&pdf) else { return };
    assert!(text.contains("Customer gb-1 (gb-1)"), "{text}");
    assert!(text.contains("Period: 2026-02-01 to 2026-02-28"), "{text}");
    assert!(text.contains(&format!("{} GBP", bill.total)), "{text}");
    assert!(text.contains("standing charge"), "{text}");
    assert!(text.contains("Daily consumption"), "{text}");
    // The same bill as CSV: every line and the total, and the lines add up.
    let csv = super::statement_csv(&bill, &customer);
    assert!(csv.contains(&format!("total,{}", bill.total)));
    assert!(csv.contains("period_start,2026-02-01"));
    let sum: rust_decimal::Decimal = csv
        .lines()
        .skip_while(|l| !l.starts_with("kind,"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| {
            l.rsplit(',')
                .next()
                .unwrap()
                .parse::<rust_decimal::Decimal>()
                .unwrap()
        })
        .sum();
    assert_eq!(sum, bill.total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumption_report_groups_by_customer_and_site_and_runs_monthly() {
    let t = sqlite_db().await;
    let db = &t.db;
    let (from, to) = (utc("2026-02-01T00:00:00Z"), utc("2026-03-01T00:00:00Z"));
    let a = load_meter(db, "rep-a", "cust-a", "UTC", from, to, |_| 50.0).await;
    let b = load_meter(db, "rep-b", "cust-b", "UTC", from, to, |_| 20.0).await;
    let rows = super::consumption(db.store().as_ref(), from, to)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert!((rows[0].import_kwh - a / 1000.0).abs() < 1e-9);
    assert!((rows[1].import_kwh - b / 1000.0).abs() < 1e-9);
    assert_eq!(rows[0].customer, "cust-a");
    assert_eq!(rows[0].voltage_out_of_range, 0);
    assert!(rows[0].readings_checked > 2_000);
    let csv = super::consumption_csv(&rows);
    assert!(csv.contains("cust-a,feeder-1,rep-a,"));
    let dir = std::env::temp_dir().join(format!(
        "wattline-reports-{}-{}",
        std::process::id(),
        crate::now_ms()
    ));
    let files = super::run_monthly(db, &dir, utc("2026-03-05T00:00:00Z").timestamp_millis())
        .await
        .unwrap();
    assert_eq!(files.len(), 4);
    assert!(files[0].ends_with("consumption-2026-02.csv"));
    let pdf = std::fs::read(&files[1]).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(text) = pdf_text(&pdf) {
        assert!(
            text.contains("Consumption report 2026-02-01 to 2026-03-01"),
            "{text}"
        );
        assert!(text.contains("feeder-1"), "{text}");
        assert!(text.contains(&format!("{:.3}", (a + b) / 1000.0)), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bill_routes_serve_json_pdf_csv_and_hide_other_customers_bills() {
    let t = sqlite_db().await;
    let db = &t.db;
    put_tariff(db, GB_TARIFF).await;
    for c in ["r-1", "r-2"] {
        assign(db, c, "gb-single-rate", PaymentMode::Postpaid, false).await;
    }
    let (from, to) = (utc("2026-02-01T00:00:00Z"), utc("2026-03-01T00:00:00Z"));
    load_meter(db, "route-1", "r-1", "Europe/London", from, to, |_| 100.0).await;
    load_meter(db, "route-2", "r-2", "Europe/London", from, to, |_| 100.0).await;
    let state = AppState::new(
        db.clone(),
        HttpConfig {
            admin_token: Some("tok-billing".into()),
            ..HttpConfig::default()
        },
    );
    let router = app(state);
    let call = |method: &str, uri: &str, body: &str, auth: bool| {
        let mut r = Request::builder().method(method).uri(uri);
        if auth {
            r = r.header("authorization", "Bearer tok-billing");
        }
        if !body.is_empty() {
            r = r.header("content-type", "application/json");
        }
        let req = r.body(Body::from(body.to_owned())).unwrap();
        let router = router.clone();
        async move {
            let resp = router.oneshot(req).await.unwrap();
            let status = resp.status();
            let ct = resp
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec();
            (status, ct, bytes)
        }
    };
    let (s, _, _) = call("GET", "/api/v1/customers/r-1/bills", "", false).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, body) = call(
        "POST",
        "/api/v1/billing/runs",
        r#"{"period_start":"2026-02-01","period_end":"2026-03-01"}"#,
        true,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let run: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(run["issued"].as_array().unwrap().len(), 2);
    let (s, _, body) = call("GET", "/api/v1/customers/r-1/bills", "", true).await;
    assert_eq!(s, StatusCode::OK);
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let bill_1 = list["bills"][0]["id"].as_str().unwrap().to_owned();
    let total = list["bills"][0]["total"].as_str().unwrap().to_owned();
    assert_eq!(list["balance"], total);
    let (s, _, body) = call("GET", "/api/v1/customers/r-2/bills", "", true).await;
    assert_eq!(s, StatusCode::OK);
    let list2: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let bill_2 = list2["bills"][0]["id"].as_str().unwrap().to_owned();

    let (s, _, body) = call(
        "GET",
        &format!("/api/v1/customers/r-1/bills/{bill_1}"),
        "",
        true,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let one: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(one["lines"].as_array().unwrap().len() >= 3);
    let (s, ct, pdf) = call(
        "GET",
        &format!("/api/v1/customers/r-1/bills/{bill_1}.pdf"),
        "",
        true,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ct, "application/pdf");
    assert!(pdf.starts_with(b"%PDF-"));
    let (s, ct, csv) = call(
        "GET",
        &format!("/api/v1/customers/r-1/bills/{bill_1}.csv"),
        "",
        true,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(ct.starts_with("text/csv"));
    assert!(
        String::from_utf8(csv)
            .unwrap()
            .contains(&format!("total,{total}"))
    );
    // Another customer's bill under this customer's path: 404, like a bill that does not exist.
    for suffix in ["", ".pdf", ".csv"] {
        let (s, _, _) = call(
            "GET",
            &format!("/api/v1/customers/r-1/bills/{bill_2}{suffix}"),
            "",
            true,
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
    // Payments: recorded by an operator, exact decimals, balance follows.
    let (s, _, body) = call(
        "POST",
        "/api/v1/customers/r-1/payments",
        &format!(r#"{{"amount":"{total}","method":"cash","reference":"R-1"}}"#),
        true,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
    let paid: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(paid["balance"], "0.00");
    let (s, _, _) = call(
        "POST",
        "/api/v1/customers/r-1/payments",
        r#"{"amount":"1.2.3","method":"cash"}"#,
        true,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _, body) = call("GET", "/api/v1/customers/r-1/payments", "", true).await;
    assert_eq!(s, StatusCode::OK);
    let p: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(p["payments"][0]["amount"], total);
    // Tariff admin: a bad TOML is refused with a clear message; a correction re-rates.
    let (s, _, body) = call("PUT", "/api/v1/tariffs/gb-single-rate", "id = 3", true).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("tariff"));
    let corrected = GB_TARIFF.replacen("price_per_kwh = 0.2450", "price_per_kwh = 0.2350", 1);
    let req = Request::put("/api/v1/tariffs/gb-single-rate?rerate=true")
        .header("authorization", "Bearer tok-billing")
        .body(Body::from(corrected))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let put: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(put["revision"], 2);
    assert_eq!(put["rerated"].as_array().unwrap().len(), 2);
}

/// Raises an alarm on `meter` at `at_ms` and files it as case evidence; returns the case id.
async fn case(db: &crate::Database, meter: &str, kind: &str, at_ms: i64, pct: Option<f64>) -> i64 {
    use crate::alarms::{AlarmKind, AlarmScope, AlarmSeverity, CaseEvidence, NewAlarm};
    let alarms = db.alarms();
    let alarm = alarms
        .raise_alarm(&NewAlarm {
            meter: meter.into(),
            kind: if kind == "tamper" {
                AlarmKind::Tamper
            } else {
                AlarmKind::TheftBalance
            },
            severity: AlarmSeverity::High,
            dedup_key: format!("{kind}:{meter}:{at_ms}"),
            scope: AlarmScope::Episode,
            at_ms,
            message: format!("{kind} at {meter}"),
            details: serde_json::json!({}),
        })
        .await
        .unwrap();
    let mut item = serde_json::json!({ "kind": kind });
    if let Some(p) = pct {
        item["unexplained_pct"] = p.into();
    }
    let (case, _) = alarms
        .file_case_evidence(&CaseEvidence {
            alarm_id: alarm.alarm.id,
            meter: meter.into(),
            title: format!("{kind} at {meter}"),
            score: None,
            item,
            at_ms,
        })
        .await
        .unwrap();
    case.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn theft_cases_report_lists_the_period_and_what_is_still_open() {
    use crate::alarms::CaseState;
    let t = sqlite_db().await;
    let db = &t.db;
    let (from, to) = (utc("2026-02-01T00:00:00Z"), utc("2026-03-01T00:00:00Z"));
    load_meter(db, "house-7", "cust-7", "UTC", from, to, |_| 50.0).await;
    let ms = |s: &str| utc(s).timestamp_millis();
    // Before the period: one still under inspection (listed), one dismissed (not listed).
    let old_open = case(
        db,
        "house-7",
        "theft_balance",
        ms("2026-01-10T00:00:00Z"),
        Some(18.0),
    )
    .await;
    let old_done = case(db, "house-8", "tamper", ms("2026-01-11T00:00:00Z"), None).await;
    let alarms = db.alarms();
    alarms
        .transition_case(
            old_open,
            CaseState::Inspecting,
            "olga",
            "visit booked",
            Some("olga"),
            ms("2026-01-12T00:00:00Z"),
        )
        .await
        .unwrap();
    alarms
        .transition_case(
            old_done,
            CaseState::Dismissed,
            "olga",
            "meter fault",
            None,
            ms("2026-01-12T00:00:00Z"),
        )
        .await
        .unwrap();
    // In the period: a confirmed magnet case. After it: not listed.
    let magnet = case(db, "house-9", "tamper", ms("2026-02-14T10:00:00Z"), None).await;
    alarms
        .transition_case(
            magnet,
            CaseState::Inspecting,
            "olga",
            "visit",
            None,
            ms("2026-02-15T00:00:00Z"),
        )
        .await
        .unwrap();
    alarms
        .transition_case(
            magnet,
            CaseState::Confirmed,
            "olga",
            "magnet found on the meter",
            None,
            ms("2026-02-16T00:00:00Z"),
        )
        .await
        .unwrap();
    case(db, "house-10", "tamper", ms("2026-03-02T00:00:00Z"), None).await;

    let rows = super::theft_cases(db, from, to).await.unwrap();
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    assert_eq!(ids, [old_open, magnet], "{rows:#?}");
    assert_eq!(rows[0].state, "inspecting");
    assert_eq!(rows[0].customer, "cust-7");
    assert_eq!(rows[0].unexplained_pct, Some(18.0));
    assert_eq!(rows[0].assignee, "olga");
    assert_eq!(
        (rows[1].state, rows[1].evidence.as_str()),
        ("confirmed", "tamper")
    );
    let csv = super::theft_cases_csv(&rows);
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(
        csv.contains(",house-7,cust-7,feeder-1,inspecting,theft_balance,18.00,"),
        "{csv}"
    );
    let pdf = super::theft_cases_pdf(&rows, from.date_naive(), to.date_naive());
    if let Some(text) = pdf_text(&pdf) {
        assert!(
            text.contains("Theft and tamper cases 2026-02-01 to 2026-03-01"),
            "{text}"
        );
        assert!(
            text.contains("house-9") && text.contains("confirmed"),
            "{text}"
        );
        assert!(text.contains("Cases by state"), "{text}");
    }
}
