#!/usr/bin/env bash
# Profiling benchmark: starts Mercato (embedded, release build) on a fresh database and runs
# bench/src/profiling.rs against it. Scale with CUSTOMERS / EVENTS (default 100k / 1M; the
# 1M / 10M shape works the same given the disk and time).
#
#   bench/profiling.sh
#   CUSTOMERS=1000000 EVENTS=10000000 bench/profiling.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/out
mkdir -p "$out"
source scripts/postgres.sh
mercato_postgres mercato_bench_profiling
psql "${DATABASE_URL%/*}/postgres" -qc 'DROP DATABASE IF EXISTS mercato_bench_profiling WITH (FORCE)' -c 'CREATE DATABASE mercato_bench_profiling'
SQLX_OFFLINE=true cargo build --release --quiet -p mercato-gateway --bin mercato -p mercato-bench --bin profiling-bench

export MERCATO_ADMIN_KEY="bench-operator-key-0123456789"
export MERCATO__LOG__LEVEL=warn MERCATO__RATE_LIMIT__ENABLED=false
export MERCATO__SERVER__BODY_LIMIT_BYTES=8388608
port=18190
MERCATO__SERVER__PORT=$port target/release/mercato serve >"$out/profiling-server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait 2>/dev/null' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
target/release/profiling-bench --url "http://127.0.0.1:$port" --database-url "$DATABASE_URL" \
  --customers "${CUSTOMERS:-100000}" --events "${EVENTS:-1000000}" --clients "${CLIENTS:-4}" --out "$out"
