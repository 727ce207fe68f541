#!/usr/bin/env bash
# Gateway overhead: one cheap authenticated route (GET /v1/profiling/customers/{id}) served
# (1) by the profiling binary directly, (2) through the gateway in embedded mode, (3)
# through the gateway in proxy mode in front of (1). Measured with wrk in one run; prints
# requests/s, p50 and p99 for each, and the ratios against the direct baseline.
#
#   bench/gateway.sh            # 3 rounds, 8 s per measurement, 16 connections
#   ROUNDS=5 DURATION=15s CONNECTIONS=32 bench/gateway.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-8s}"
ROUNDS="${ROUNDS:-3}"
CONNECTIONS="${CONNECTIONS:-16}"
THREADS="${THREADS:-1}"
out=bench/out
mkdir -p "$out"

command -v wrk >/dev/null || { [[ "$(id -u)" == 0 ]] && apt-get install -y wrk >/dev/null; } || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }
source scripts/postgres.sh
mercato_postgres mercato_bench
psql "${DATABASE_URL%/*}/postgres" -qc 'DROP DATABASE IF EXISTS mercato_bench WITH (FORCE)' -c 'CREATE DATABASE mercato_bench'

SQLX_OFFLINE=true cargo build --release --quiet -p mercato-gateway -p mercato-profiling --bins

export MERCATO_ADMIN_KEY="bench-operator-key-0123456789"
export MERCATO_INTERNAL_TOKEN="bench-internal-token-0123456789"
export MERCATO__LOG__LEVEL=warn
# Limits high enough never to refuse, so their cost is measured but not their effect.
export MERCATO__RATE_LIMIT__PER_SECOND=1000000000 MERCATO__RATE_LIMIT__BURST=1000000000
DIRECT=18181 EMBEDDED=18182 PROXY=18183
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

MERCATO__SERVER__PORT=$EMBEDDED target/release/mercato serve --mode embedded >"$out/embedded.log" 2>&1 & pids+=($!)
wait_ready() { for _ in $(seq 100); do curl -fs "http://127.0.0.1:$1/readyz" >/dev/null && return 0; sleep 0.2; done; echo "port $1 not ready" >&2; exit 1; }
wait_ready $EMBEDDED
MERCATO__DATABASE__MIGRATE_ON_START=false MERCATO__SERVER__PORT=$DIRECT target/release/mercato-profiling >"$out/profiling.log" 2>&1 & pids+=($!)
MERCATO__DATABASE__MIGRATE_ON_START=false MERCATO__SERVER__PORT=$PROXY MERCATO__GATEWAY__UPSTREAMS__PROFILING=http://127.0.0.1:$DIRECT \
  target/release/mercato serve --mode proxy >"$out/proxy.log" 2>&1 & pids+=($!)
wait_ready $DIRECT; wait_ready $PROXY

api="http://127.0.0.1:$EMBEDDED"
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
tenant=$(curl -fs -X POST "$api/v1/admin/tenants" -H "Authorization: Bearer $MERCATO_ADMIN_KEY" -H 'Content-Type: application/json' -d '{"name":"bench"}' | json "['id']")
key=$(curl -fs -X POST "$api/v1/admin/tenants/$tenant/keys" -H "Authorization: Bearer $MERCATO_ADMIN_KEY" -H 'Content-Type: application/json' -d '{"name":"bench","role":"reader"}' | json "['key']")
writer=$(curl -fs -X POST "$api/v1/admin/tenants/$tenant/keys" -H "Authorization: Bearer $MERCATO_ADMIN_KEY" -H 'Content-Type: application/json' -d '{"name":"load","role":"writer"}' | json "['key']")
id=$(curl -fs -X POST "$api/v1/profiling/customers" -H "Authorization: Bearer $writer" -H 'Content-Type: application/json' \
  -d '{"external_id":"bench-1","email":"bench@example.com","country":"de","consent":{"email":true}}' | json "['id']")
path="/v1/profiling/customers/$id"

# One wrk run; prints "requests/s p50_ms p99_ms non2xx".
wrk_run() {
  local port=$1 connections=$2 file=$3
  wrk -t"$THREADS" -c"$connections" -d"$DURATION" --latency -H "Authorization: Bearer $key" "http://127.0.0.1:$port$path" >"$file"
  awk '/^Requests\/sec/ {rps=$2} $1=="50%" {p50=$2} $1=="99%" {p99=$2} /Non-2xx/ {err=$5}
       END {print rps, p50, p99, (err == "" ? 0 : err)}' "$file"
}

for port in $DIRECT $EMBEDDED $PROXY; do
  # Warm-up: connection pools, key cache.
  curl -fs "http://127.0.0.1:$port$path" -H "Authorization: Bearer $key" >/dev/null
  wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -H "Authorization: Bearer $key" "http://127.0.0.1:$port$path" >/dev/null
done

# Rounds interleave the targets so drift on the machine hits all three alike. Each round
# measures throughput under load ($CONNECTIONS connections) and latency of one client
# alone (1 connection), where the difference is the cost of the extra hop, not queueing.
: > "$out/gateway-raw.txt"
for round in $(seq "$ROUNDS"); do
  for target in direct:$DIRECT embedded:$EMBEDDED proxy:$PROXY; do
    name=${target%%:*} port=${target##*:}
    echo "$name load $(wrk_run "$port" "$CONNECTIONS" "$out/wrk-$name-load-$round.txt")" >> "$out/gateway-raw.txt"
    echo "$name single $(wrk_run "$port" 1 "$out/wrk-$name-single-$round.txt")" >> "$out/gateway-raw.txt"
  done
done

python3 - "$out/gateway-raw.txt" "$CONNECTIONS" "$DURATION" "$ROUNDS" <<'PY' | tee "$out/gateway.md"
import statistics, sys
def ms(v):
    for unit, f in (("us", 1e-3), ("ms", 1.0)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
    return float(v[:-1]) * 1e3 if v.endswith("s") else float(v)
runs = {}
for line in open(sys.argv[1]):
    name, kind, rps, p50, p99, errors = line.split()
    runs.setdefault((name, kind), []).append((float(rps), ms(p50), ms(p99), int(errors)))
def med(name, kind, i):
    return statistics.median(r[i] for r in runs[(name, kind)])
conns, duration, rounds = sys.argv[2:5]
print(f"GET /v1/profiling/customers/{{id}} (authenticated, one primary-key read); median of {rounds} interleaved rounds, {duration} each\n")
print(f"| target | req/s ({conns} conns) | vs direct | p50 ms | p99 ms | p50 ms (1 conn) | p99 ms (1 conn) | p99 overhead ms (1 conn) | non-2xx |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
base_rps, base_p99 = med("direct", "load", 0), med("direct", "single", 2)
for name in ("direct", "embedded", "proxy"):
    errors = sum(r[3] for k in ("load", "single") for r in runs[(name, k)])
    print(f"| {name} | {med(name, 'load', 0):,.0f} | {med(name, 'load', 0) / base_rps:.2f}x | "
          f"{med(name, 'load', 1):.2f} | {med(name, 'load', 2):.2f} | {med(name, 'single', 1):.3f} | "
          f"{med(name, 'single', 2):.3f} | {med(name, 'single', 2) - base_p99:+.3f} | {errors} |")
PY
