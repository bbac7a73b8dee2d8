#!/usr/bin/env bash
# `wattline analyze` vs `pandas.read_csv` on the same >= 1 GiB waveform CSV, both confined to
# one core with taskset, in the same run. wattline's figure includes the whole analysis (windows,
# harmonics, energy registers, table output); pandas only parses.
#
#   bench/analyze_vs_pandas.sh [CORE] [REPEATS]     (defaults: core 1, 2 repeats)
#
# Needs: python3 with pandas (pip install pandas), /usr/bin/time (GNU time), taskset (util-linux).
# Env: BIG_CSV (default /tmp/wattline_bench_1g.csv; generated if missing), CARGO_TARGET_DIR,
#      WATTLINE_BIN (a prebuilt release binary; skips the build).
set -euo pipefail
cd "$(dirname "$0")/.."
core="${1:-1}"
repeats="${2:-2}"
big="${BIG_CSV:-/tmp/wattline_bench_1g.csv}"
target_dir="${CARGO_TARGET_DIR:-target}"
if [ -n "${WATTLINE_BIN:-}" ]; then
  bin="$WATTLINE_BIN"
else
  bin="$target_dir/release/wattline"
  echo "==> building wattline (release)"
  cargo build --release -p wattline --bin wattline --locked
fi
if [ ! -f testdata/pump_230v_pf08_8khz.csv ]; then
  echo "testdata/pump_230v_pf08_8khz.csv is missing (run: wattline make-testdata)" >&2
  exit 1
fi
if [ ! -f "$big" ]; then
  echo "==> generating $big"
  python3 bench/analyze_make_big_csv.py testdata/pump_230v_pf08_8khz.csv "$big"
fi
size=$(stat -c %s "$big")
# Warm the page cache so both readers see the same (cached) file.
cat "$big" > /dev/null

peak_kb() { grep 'Maximum resident set size' "$1" | awk '{print $NF}'; }
wall_s() {
  # GNU time prints "Elapsed (wall clock) time (h:mm:ss or m:ss): M:SS.ss"
  grep 'Elapsed (wall clock)' "$1" | awk '{print $NF}' |
    awk -F: '{ if (NF == 3) print $1*3600 + $2*60 + $3; else print $1*60 + $2 }'
}
cpu_s() {
  awk -F': ' '/User time|System time/ { s += $2 } END { print s }' "$1"
}
report() {
  local name="$1" log="$2" secs cpu mbs cpu_mbs rss
  secs=$(wall_s "$log")
  cpu=$(cpu_s "$log")
  rss=$(peak_kb "$log")
  mbs=$(awk -v b="$size" -v s="$secs" 'BEGIN { printf "%.1f", b / s / 1e6 }')
  cpu_mbs=$(awk -v b="$size" -v s="$cpu" 'BEGIN { printf "%.1f", b / s / 1e6 }')
  printf '%-28s wall %7.2f s = %7s MB/s | cpu (user+sys) %7.2f s = %7s MB/s | peak RSS %8.1f MiB\n' \
    "$name" "$secs" "$mbs" "$cpu" "$cpu_mbs" "$(awk -v k="$rss" 'BEGIN{print k/1024}')"
}

echo "==> machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "==> file: $big, $size bytes; pandas $(python3 -c 'import pandas; print(pandas.__version__)'), core $core"
echo "==> on a busy machine compare the cpu figures: wall time then includes waiting for the core"
echo "==> load before: $(cut -d' ' -f1-3 /proc/loadavg)"
logs=$(mktemp -d)
for r in $(seq 1 "$repeats"); do
  taskset -c "$core" /usr/bin/time -v "$bin" analyze "$big" > "$logs/wattline.out" 2> "$logs/wattline.$r.time"
  taskset -c "$core" /usr/bin/time -v python3 -c '
import sys, pandas as pd
df = pd.read_csv(sys.argv[1])
print(len(df), "rows", file=sys.stderr)
' "$big" 2> "$logs/pandas.$r.time"
  report "wattline analyze (run $r)" "$logs/wattline.$r.time"
  report "pandas.read_csv (run $r)" "$logs/pandas.$r.time"
done
echo "==> load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "==> wattline summary of the file:"
tail -n 8 "$logs/wattline.out"
rm -rf "$logs"
