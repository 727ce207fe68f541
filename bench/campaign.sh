#!/usr/bin/env bash
# Campaign simulation and decisioning throughput: starts Mercato (embedded, release build)
# on a fresh database and runs bench/src/campaign.rs against it.
#
#   bench/campaign.sh
#   DECISIONS=10000 bench/campaign.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/out
mkdir -p "$out"
source scripts/postgres.sh
mercato_postgres mercato_bench_campaign
psql "${DATABASE_URL%/*}/postgres" -qc 'DROP DATABASE IF EXISTS mercato_bench_campaign WITH (FORCE)' -c 'CREATE DATABASE mercato_bench_campaign'
SQLX_OFFLINE=true cargo build --release --quiet -p mercato-gateway --bin mercato -p mercato-bench --bin campaign-sim

export MERCATO_ADMIN_KEY="bench-operator-key-0123456789"
export MERCATO__LOG__LEVEL=warn MERCATO__RATE_LIMIT__ENABLED=false
port=18191
MERCATO__SERVER__PORT=$port target/release/mercato serve >"$out/campaign-server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait 2>/dev/null' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
target/release/campaign-sim --url "http://127.0.0.1:$port" \
  --decisions "${DECISIONS:-50000}" --clients "${CLIENTS:-4}" | tee "$out/campaign.md"
