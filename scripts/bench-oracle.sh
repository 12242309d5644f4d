#!/usr/bin/env bash
# Benchmark (not a test): telemetry ingest throughput and latency of a release oracle on SQLite
# and on PostgreSQL, driven by wattest-loadgen over loopback (pre-signed windows, so the load
# generator's signing is not measured). Both share this machine's cores with the oracle.
#
#   scripts/bench-oracle.sh [NODES] [WINDOWS] [CONCURRENCY]
#
# PostgreSQL: WATTEST_TEST_PG (default postgres://postgres@127.0.0.1:5432); a fresh database is
# created and dropped. Durable settings are left as the server has them (never fsync=off here).
set -euo pipefail
cd "$(dirname "$0")/.."
NODES="${1:-64}"; WINDOWS="${2:-50}"; CONCURRENCY="${3:-32}"
PG="${WATTEST_TEST_PG:-postgres://postgres@127.0.0.1:5432}"
cargo build --release --locked -p wattest-oracle -p wattest-tests --bins
ORACLE="$PWD/target/release/wattest-oracle"
LOADGEN="$PWD/target/release/wattest-loadgen"

run() {
  local label=$1 db=$2 dir port pid
  dir=$(mktemp -d); port=$((20000 + RANDOM % 20000))
  DATABASE_URL="$db" "$ORACLE" serve --listen "127.0.0.1:$port" --data-dir "$dir" --rate-limit-per-ip 0 --rate-limit-per-token 0 >"$dir/log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  token=$(DATABASE_URL="$db" "$ORACLE" token create --role node --data-dir "$dir")
  printf '%s: ' "$label"
  "$LOADGEN" --oracle "http://127.0.0.1:$port" --token "$token" --nodes "$NODES" --windows "$WINDOWS" --concurrency "$CONCURRENCY" 2>/dev/null
  kill $pid; wait $pid 2>/dev/null || true
  rm -rf "$dir"
}

run "SQLite (WAL)" ""
db="wattest_bench_$$"
if psql "$PG/postgres" -qc "CREATE DATABASE $db" 2>/dev/null; then
  run "PostgreSQL" "$PG/$db"
  psql "$PG/postgres" -qc "DROP DATABASE $db" >/dev/null 2>&1 || true
else
  echo "PostgreSQL at $PG unreachable: PostgreSQL figure not measured"
fi
