#!/usr/bin/env bash
# Sequence-model benchmark: the LSTM against logistic regression on RFM features and the
# generator's true propensity, on the synthetic shop (no server or database needed).
#
#   bench/model.sh
#   CUSTOMERS=50000 EVENTS=1000000 EPOCHS=15 bench/model.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/out
# The dev profile: candle and every other dependency are built at opt-level 3 there (see
# Cargo.toml), which is where the time goes; it spares a second build of candle.
SQLX_OFFLINE=true cargo build --quiet -p mercato-bench --bin model-bench
target/debug/model-bench --customers "${CUSTOMERS:-20000}" --events "${EVENTS:-400000}" \
  --epochs "${EPOCHS:-10}" | tee bench/out/model.md
