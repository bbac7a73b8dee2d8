//! The administration commands as an operator runs them: `wattline pki init`, `meter
//! enroll|rotate-key|renew-cert|revoke`, `user add`, on an SQLite data directory and, through
//! `--config`, on a PostgreSQL server; every change lands in the audit trail. And the web side
//! served over HTTPS with the certificate `pki init` made, checked with curl against the CA.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use server::{AuditFilter, AuditRecord, Database, PgConfig, PgStore, SqliteStore};

use crate::util::{Scratch, free_port, wattline};

fn ok(args: &[&str]) -> String {
    let run = wattline(args);
    assert_eq!(
        run.code, 0,
        "wattline {args:?}: {}{}",
        run.stdout, run.stderr
    );
    run.stdout
}

/// `wattline user add NAME --role ROLE --password-stdin TARGET...`, the password on stdin.
fn add_user(target: &[&str], name: &str, role: &str, password: &str) {
    let mut args = vec!["user", "add", name, "--role", role, "--password-stdin"];
    args.extend_from_slice(target);
    let mut child = Command::new(env!("CARGO_BIN_EXE_wattline"))
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "wattline {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn audit(db: &Database) -> Vec<AuditRecord> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(db.accounts().audit(&AuditFilter {
            limit: 1000,
            ..AuditFilter::default()
        }))
        .unwrap()
}

/// Runs the meter's whole life through the CLI with `target` (`--data-dir D` or `--config F`)
/// and checks what the audit trail says.
fn meter_life(data_dir: &Path, target: &[&str], db: impl Fn() -> Database) {
    let bundle = data_dir.join("bundle-h1");
    let mut enroll = vec!["meter", "enroll", "h-1", "--out", bundle.to_str().unwrap()];
    enroll.extend_from_slice(target);
    ok(&enroll);
    for action in [
        vec![
            "meter",
            "rotate-key",
            "h-1",
            "--out",
            bundle.to_str().unwrap(),
        ],
        vec![
            "meter",
            "renew-cert",
            "h-1",
            "--out",
            bundle.to_str().unwrap(),
        ],
        vec![
            "meter",
            "revoke",
            "h-1",
            "--reason",
            "meter stolen from the pole",
        ],
    ] {
        let mut a = action.clone();
        a.extend_from_slice(target);
        ok(&a);
    }
    add_user(
        target,
        "olga",
        "operator",
        "a-long-enough-password-for-olga",
    );

    // Refusals are clear and change nothing.
    let mut again = vec!["meter", "enroll", "h-1"];
    again.extend_from_slice(target);
    let run = wattline(&again);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("revoked"), "{}", run.stderr);
    let mut bad = vec!["meter", "enroll", "H 1!"];
    bad.extend_from_slice(target);
    let run = wattline(&bad);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("meter id"), "{}", run.stderr);
    let mut no_reason = vec!["meter", "revoke", "h-1", "--reason", "  "];
    no_reason.extend_from_slice(target);
    let run = wattline(&no_reason);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--reason"), "{}", run.stderr);

    let lines = audit(&db());
    let find = |action: &str| {
        lines
            .iter()
            .find(|l| l.action == action)
            .unwrap_or_else(|| panic!("no {action} in the audit trail: {lines:#?}"))
    };
    for action in [
        "meter.enroll",
        "meter.rotate_key",
        "meter.renew_cert",
        "meter.revoke",
    ] {
        let l = find(action);
        assert_eq!(l.target, "meter:h-1");
        assert!(l.actor.starts_with("cli:"), "{l:?}");
        assert_eq!(l.outcome, "ok");
        assert!(l.at_ms > 0);
    }
    assert!(find("meter.enroll").detail.contains("certificate"));
    assert!(
        find("meter.revoke")
            .detail
            .contains("meter stolen from the pole")
    );
    assert_eq!(find("user.create").target, "user:olga");
    // Nothing was recorded for the refused commands.
    assert_eq!(
        lines.iter().filter(|l| l.action == "meter.enroll").count(),
        1
    );
}

#[test]
fn meter_lifecycle_and_users_are_audited_on_sqlite() {
    let dir = Scratch::new();
    ok(&["pki", "init", "--data-dir", dir.path()]);
    let data_dir = dir.dir.clone();
    meter_life(&dir.dir, &["--data-dir", dir.path()], || {
        let store = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(SqliteStore::open(&data_dir))
            .unwrap();
        Database::Sqlite(store)
    });
    // Without a target the command says what it needs.
    let run = wattline(["meter", "show", "h-1"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--data-dir"), "{}", run.stderr);
}

#[test]
fn meter_lifecycle_and_users_are_audited_on_postgres_through_the_server_config() {
    let env = |k: &str| std::env::var(k).ok();
    let schema = format!(
        "wl_admin_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let pg = PgConfig {
        host: env("WATTLINE_TEST_PG_HOST").unwrap_or_else(|| "127.0.0.1".into()),
        port: env("WATTLINE_TEST_PG_PORT")
            .and_then(|p| p.parse().ok())
            .unwrap_or(5432),
        user: env("WATTLINE_TEST_PG_USER").unwrap_or_else(|| "postgres".into()),
        password: env("WATTLINE_TEST_PG_PASSWORD"),
        dbname: env("WATTLINE_TEST_PG_DB").unwrap_or_else(|| "test".into()),
        schema: Some(schema.clone()),
        pool_size: 2,
    };
    struct Drop_(PgConfig, String);
    impl Drop for Drop_ {
        fn drop(&mut self) {
            let _ = PgStore::drop_schema_blocking(&self.0, &self.1);
        }
    }
    let _cleanup = Drop_(pg.clone(), schema.clone());
    let dir = Scratch::new();
    ok(&["pki", "init", "--data-dir", dir.path()]);
    let config = dir.dir.join("server.toml");
    let password_line = match &pg.password {
        Some(p) => {
            let f = dir.dir.join("pg.password");
            std::fs::write(&f, p).unwrap();
            format!("password_file = {:?}\n", f.to_str().unwrap())
        }
        None => String::new(),
    };
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[store]\nbackend = \"postgres\"\nhost = {:?}\nport = {}\nuser = {:?}\ndbname = {:?}\nschema = {schema:?}\n{password_line}",
            dir.path(),
            pg.host,
            pg.port,
            pg.user,
            pg.dbname
        ),
    )
    .unwrap();
    let connect = || {
        let store = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(PgStore::connect(&pg))
            .unwrap_or_else(|e| panic!("PostgreSQL at {}:{}: {e}", pg.host, pg.port));
        Database::Postgres(std::sync::Arc::new(store))
    };
    meter_life(&dir.dir, &["--config", config.to_str().unwrap()], connect);
    // The SQLite file was never used: everything went to PostgreSQL.
    assert!(!dir.dir.join("wattline.sqlite3").exists());
}

fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl runs (Debian package curl)");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_web_is_served_over_https_with_the_pki_certificate() {
    let dir = Scratch::new();
    ok(&["pki", "init", "--data-dir", dir.path()]);
    add_user(
        &["--data-dir", dir.path()],
        "ann",
        "operator",
        "a-long-enough-password-for-ann",
    );
    let (http, mqtt) = (free_port(), free_port());
    let config = dir.dir.join("server.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[http]\nlisten = \"127.0.0.1:{http}\"\npublic_url = \"https://localhost:{http}\"\ntls_cert_file = \"pki/https.pem\"\ntls_key_file = \"pki/https.key\"\n[mqtt]\nlisten = \"127.0.0.1:{mqtt}\"\n",
            dir.path()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wattline"))
        .args(["server", "--config", config.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    std::thread::spawn(move || for _ in BufReader::new(stdout).lines() {});
    let ca = dir.dir.join("pki").join("ca.pem");
    let url = format!("https://localhost:{http}/login");
    let resolve = format!("localhost:{http}:127.0.0.1");
    let t0 = Instant::now();
    let (code, page) = loop {
        let r = curl(&[
            "--cacert",
            ca.to_str().unwrap(),
            "--resolve",
            &resolve,
            "--include",
            &url,
        ]);
        if r.0 == 0 || t0.elapsed() > Duration::from_secs(60) {
            break r;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("server exited with {status}: {}", err.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let result = std::panic::catch_unwind(|| {
        assert_eq!(code, 0, "HTTPS GET /login: {page}");
        assert!(page.starts_with("HTTP/"), "{page}");
        assert!(page.contains(" 200"), "{page}");
        assert!(
            page.to_ascii_lowercase()
                .contains("strict-transport-security"),
            "HSTS header missing over HTTPS: {page}"
        );
        // The certificate is verified against our CA: without it curl refuses.
        let (code, out) = curl(&["--resolve", &resolve, &url]);
        assert_ne!(code, 0, "accepted without our CA: {out}");
        // Plain HTTP on the HTTPS port gets no page.
        let (code, out) = curl(&[&format!("http://127.0.0.1:{http}/login")]);
        assert!(
            code != 0 || !out.contains("<form"),
            "plain HTTP served the page: {out}"
        );
        // A failed sign-in is a 401; a session cookie set over HTTPS is Secure and HttpOnly.
        let login = |body: &str| {
            curl(&[
                "--cacert",
                ca.to_str().unwrap(),
                "--resolve",
                &resolve,
                "--include",
                "-H",
                "content-type: application/json",
                "-H",
                &format!("origin: https://localhost:{http}"),
                "--data",
                body,
                &format!("https://localhost:{http}/api/v1/auth/login"),
            ])
        };
        let (code, out) =
            login(r#"{"username":"ann","password":"a-long-enough-password-for-ann"}"#);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(" 200"), "{out}");
        let cookie = out
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
            .unwrap_or_else(|| panic!("no session cookie: {out}"));
        assert!(
            cookie.contains("Secure") && cookie.contains("HttpOnly"),
            "{cookie}"
        );
        let (code, out) = curl(&[
            "--cacert",
            ca.to_str().unwrap(),
            "--resolve",
            &resolve,
            "--include",
            "-H",
            "content-type: application/json",
            "-H",
            &format!("origin: https://localhost:{http}"),
            "--data",
            r#"{"username":"nobody","password":"wrong-password-123"}"#,
            &format!("https://localhost:{http}/api/v1/auth/login"),
        ]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(" 401"), "{out}");
    });
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        eprintln!("server stderr:\n{}", err.join().unwrap_or_default());
        std::panic::resume_unwind(e);
    }
}
