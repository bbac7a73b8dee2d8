#!/usr/bin/env bash
# `wattline theft score` on 100 000 meters x 3 years of daily data (wide SGCC layout, 585 MB,
# 12 % thieves, realistic gaps) confined to one core, plus `theft train` on all labels.
#
#   bench/theft_speed.sh [CORE]        (default core 1)
#
# Needs CARGO_TARGET_DIR (or ./target). Prints wall time, CPU time and peak memory.
set -euo pipefail
core=${1:-1}
target=${CARGO_TARGET_DIR:-target}
work=${THEFT_BENCH_DIR:-$target/theft-bench}
mkdir -p "$work"
cargo build --release -p wattline --bin wattline
cargo build --release -p analytics --example theft_gen
if [ ! -s "$work/theft_100k.csv" ]; then
    "$target/release/examples/theft_gen" --meters 100000 --days 1095 --layout wide \
        --out "$work/theft_100k.csv" --labels "$work/theft_100k_labels.csv"
fi
ls -l "$work/theft_100k.csv"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
/usr/bin/time -f "score: wall %e s, user %U s, sys %S s, max RSS %M KiB" \
    taskset -c "$core" "$target/release/wattline" theft score --input "$work/theft_100k.csv" \
    --out "$work/scores.csv" --diagnostics "$work/diagnostics.csv"
/usr/bin/time -f "train: wall %e s, user %U s, sys %S s, max RSS %M KiB" \
    taskset -c "$core" "$target/release/wattline" theft train --input "$work/theft_100k.csv" \
    --labels "$work/theft_100k_labels.csv" --model "$work/theft.model" --diagnostics "$work/train_diagnostics.csv"
/usr/bin/time -f "score with model: wall %e s, user %U s, sys %S s, max RSS %M KiB" \
    taskset -c "$core" "$target/release/wattline" theft score --input "$work/theft_100k.csv" \
    --model "$work/theft.model" --out "$work/scores_model.csv"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
