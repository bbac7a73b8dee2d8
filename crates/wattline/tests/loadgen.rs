//! `wattline loadgen`: a short load through the embedded broker (mutual TLS) into the in-process
//! server, on SQLite and on the real PostgreSQL at 127.0.0.1:5432 (`WATTLINE_TEST_PG_*` override
//! it). Every reading sent must be stored once, and the summary must carry both latencies.

use crate::util::wattline;

/// The count in a summary row such as `readings stored            1000`.
fn count(stdout: &str, row: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(row))
        .unwrap_or_else(|| panic!("no {row:?} row in the summary:\n{stdout}"));
    line[row.len()..]
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{row:?} row {line:?}: {e}"))
}

fn short_load(store: &str) -> crate::util::Run {
    wattline([
        "loadgen",
        "--meters",
        "4",
        "--rate",
        "400",
        "--duration-s",
        "1",
        "--batch",
        "5",
        "--store",
        store,
    ])
}

fn check_summary(run: &crate::util::Run, backend: &str) {
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let out = &run.stdout;
    assert!(
        out.contains(&format!(
            "embedded broker (mutual TLS) → ingest → {backend}"
        )),
        "{out}"
    );
    assert_eq!(count(out, "readings sent"), 400, "{out}");
    assert_eq!(count(out, "readings stored"), 400, "{out}");
    assert_eq!(count(out, "duplicates"), 0, "{out}");
    assert_eq!(count(out, "quarantined"), 0, "{out}");
    assert_eq!(count(out, "envelopes acknowledged"), 80, "{out}");
    let server_side = out
        .lines()
        .find(|l| l.starts_with("server: received → live"))
        .unwrap_or_else(|| panic!("no server-side latency row:\n{out}"));
    // Three figures (p50, p99, max), each a positive number of milliseconds.
    let figures: Vec<f64> = server_side["server: received → live".len()..]
        .split(" ms")
        .filter_map(|f| f.trim().parse().ok())
        .collect();
    assert_eq!(figures.len(), 3, "{server_side}");
    assert!(
        figures[0] > 0.0 && figures[0] <= figures[1] && figures[1] <= figures[2],
        "{server_side}"
    );
}

#[test]
fn loadgen_stores_every_reading_on_sqlite() {
    check_summary(&short_load("sqlite"), "SQLite");
}

#[test]
fn loadgen_stores_every_reading_on_postgres_in_a_schema_it_drops() {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let (host, port) = (
        env("WATTLINE_TEST_PG_HOST", "127.0.0.1"),
        env("WATTLINE_TEST_PG_PORT", "5432"),
    );
    let url = format!(
        "postgres://{}@{host}:{port}/{}",
        env("WATTLINE_TEST_PG_USER", "postgres"),
        env("WATTLINE_TEST_PG_DB", "test")
    );
    if let Err(e) = std::net::TcpStream::connect(format!("{host}:{port}")) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "postgres unreachable in CI at {host}:{port}: {e}"
        );
        eprintln!("skipping: postgres unreachable at {host}:{port} ({e})");
        return;
    }
    let run = short_load(&url);
    check_summary(&run, "PostgreSQL");
    let schema = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("dropped schema "))
        .unwrap_or_else(|| panic!("the run's schema was not dropped:\n{}", run.stderr));
    assert!(schema.starts_with("loadgen_"), "{schema}");
}

#[test]
fn loadgen_refuses_a_malformed_store_url() {
    let run = wattline(["loadgen", "--store", "postgres://127.0.0.1/test"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("no user"), "{}", run.stderr);
}
