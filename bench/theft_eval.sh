#!/usr/bin/env bash
# Theft-detection evaluation (issue 7): ROC-AUC, PR-AUC and MAP@100 per Jokar attack type for
# the unsupervised score and the gradient-boosted model (held-out half of the meters), on daily
# and half-hourly synthetic households; then the energy-balance cases (seed 003 replayed, 3 %
# bypass within one day, false alarms over 30 honest days, loss model vs flat 2 %).
#
#   bench/theft_eval.sh [SEED]
set -euo pipefail
seed=${1:-7}
target=${CARGO_TARGET_DIR:-target}
cargo build --release -p analytics --example theft_eval --example balance_eval
echo "### Daily, 3 years"
"$target/release/examples/theft_eval" --meters 10000 --days 1095 --seed "$seed"
echo
echo "### Half-hourly, 1 year"
"$target/release/examples/theft_eval" --meters 3000 --days 365 --intervals-per-day 48 --seed "$seed"
echo
"$target/release/examples/balance_eval" --trials 20
