#!/usr/bin/env bash
# Fuzzing of wattline's parsers with cargo-fuzz (libFuzzer) on the *stable* toolchain.
#
#   scripts/fuzz.sh smoke [SECONDS]        build and run every target in fuzz/fuzz_targets/ for
#                                          SECONDS each (default 25); non-zero exit on a crash
#   scripts/fuzz.sh run TARGET [SECONDS]   one target (default: until stopped)
#   scripts/fuzz.sh list                   the targets
#
# cargo-fuzz needs nightly-only flags (-Zsanitizer, -Cpasses=sancov...); RUSTC_BOOTSTRAP=1 lets
# the stable compiler accept them, so no nightly toolchain is needed. A new target is picked up
# automatically: add fuzz/fuzz_targets/<name>.rs and its [[bin]] entry in fuzz/Cargo.toml
# (`cargo fuzz add <name>` writes both). Seeds in fuzz/seeds/<name>/ are used when present;
# crashes land in fuzz/artifacts/<name>/ (reproduce: scripts/fuzz.sh run <name> -- <file>).
# Environment: FUZZ_SANITIZER (address|none, default address), CARGO_TARGET_DIR (honoured).
set -euo pipefail
cd "$(dirname "$0")/.."

export RUSTC_BOOTSTRAP=1
sanitizer="${FUZZ_SANITIZER:-address}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

targets() {
  local f
  for f in fuzz/fuzz_targets/*.rs; do
    basename "$f" .rs
  done
}

check_registered() {
  local t missing=0
  for t in $(targets); do
    if ! grep -Eq "^name = \"$t\"" fuzz/Cargo.toml; then
      echo "error: fuzz/fuzz_targets/$t.rs has no [[bin]] entry in fuzz/Cargo.toml (run: cd fuzz && cargo fuzz add $t, or copy an existing entry)" >&2
      missing=1
    fi
  done
  return "$missing"
}

run_target() {
  local t="$1" seconds="$2"; shift 2
  local corpus="fuzz/corpus/$t" dirs=()
  mkdir -p "$corpus"
  dirs+=("$corpus")
  [ -d "fuzz/seeds/$t" ] && dirs+=("fuzz/seeds/$t")
  local limits=(-rss_limit_mb=2048 -timeout=10 -max_len=65536)
  if [ "$seconds" != "0" ]; then
    limits+=("-max_total_time=$seconds")
  fi
  # cargo fuzz runs from fuzz/'s parent, paths are relative to the repository root.
  cargo fuzz run --sanitizer "$sanitizer" "$t" "${dirs[@]}" -- "${limits[@]}" "$@"
}

cmd="${1:-smoke}"
case "$cmd" in
  list)
    targets
    ;;
  smoke)
    seconds="${2:-25}"
    check_registered
    echo "==> building fuzz targets (sanitizer: $sanitizer)"
    cargo fuzz build --sanitizer "$sanitizer"
    failed=()
    for t in $(targets); do
      echo "==> fuzzing $t for ${seconds}s"
      if ! run_target "$t" "$seconds"; then
        failed+=("$t")
      fi
    done
    if [ ${#failed[@]} -gt 0 ]; then
      echo "fuzz smoke FAILED for: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
      exit 1
    fi
    echo "fuzz smoke: all targets ran ${seconds}s without a crash"
    ;;
  run)
    t="${2:?usage: scripts/fuzz.sh run TARGET [SECONDS] [-- libfuzzer args]}"
    seconds="${3:-0}"
    shift $(( $# >= 3 ? 3 : 2 ))
    [ "${1:-}" = "--" ] && shift
    check_registered
    run_target "$t" "$seconds" "$@"
    ;;
  *)
    echo "usage: scripts/fuzz.sh smoke [SECONDS] | run TARGET [SECONDS] [-- ARGS] | list" >&2
    exit 2
    ;;
esac
