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
