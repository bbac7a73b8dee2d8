//! The CLI contract of DESIGN §3.1: help, examples, exit codes for bad usage.

use crate::util::wattline;

#[test]
fn help_lists_subcommands_and_each_has_an_example() {
    let run = wattline(["--help"]);
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("analyze"), "{}", run.stdout);
    // The developer tool stays out of the user's way.
    assert!(!run.stdout.contains("make-testdata"));
    let run = wattline(["analyze", "--help"]);
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("Examples:"));
    assert!(run.stdout.contains("wattline analyze testdata/"));
}

#[test]
fn bad_usage_exits_with_2() {
    for args in [
        vec!["analyze"],
        vec!["analyze", "x.csv", "--nominal", "55"],
        vec!["analyze", "x.csv", "--rate", "-8000"],
        vec!["analyze", "x.csv", "--rate", "fast"],
        vec!["analyze", "x.csv", "--v-scale", "0"],
        vec!["no-such-command"],
    ] {
        let run = wattline(&args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.starts_with("error:"), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn version_is_printed() {
    let run = wattline(["--version"]);
    assert_eq!(run.code, 0);
    assert!(run.stdout.starts_with("wattline "));
}

#[test]
fn reports_need_a_server_and_a_forward_period_and_print_csv_by_default() {
    let dir = std::env::temp_dir().join(format!("wattline-report-cli-{}", std::process::id()));
    let d = dir.to_str().unwrap();
    let run = wattline([
        "report",
        "theft-cases",
        "--from",
        "2026-02-01",
        "--to",
        "2026-03-01",
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--data-dir"), "{}", run.stderr);
    let run = wattline([
        "report",
        "theft-cases",
        "--from",
        "2026-03-01",
        "--to",
        "2026-02-01",
        "--data-dir",
        d,
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("must be after"), "{}", run.stderr);
    // An empty server: the header and no cases.
    let run = wattline([
        "report",
        "theft-cases",
        "--from",
        "2026-02-01",
        "--to",
        "2026-03-01",
        "--data-dir",
        d,
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);
    assert!(run.stdout.starts_with("case,meter,customer,site,state,"));
    let _ = std::fs::remove_dir_all(&dir);
}
