#!/usr/bin/env bash
# Benchmark (not a test): telemetry ingest throughput and latency of a release oracle on SQLite
# and on PostgreSQL, driven by wattest-loadgen over loopback (pre-signed windows, so the load
# generator's signing is not measured). Both share this machine's cores with the oracle.
#
#   scripts/bench-oracle.sh [NODES] [WINDOWS] [CONCURRENCY] [RATE] [BATCH]
#
# NODES (default 64) nodes post WINDOWS (default 50) windows each, one certificate per node.
# Without RATE: one closed-loop run per database (CONCURRENCY, default 32, posting tasks, each
# sending its node's next window as soon as the previous response arrives): throughput and
# send-to-response latency.
# With RATE (windows/s, aggregate): the same closed-loop run, then an open-loop run
# (`wattest-loadgen --rate RATE`, at most CONCURRENCY requests in flight) per database: offered
# and achieved rate, latency measured from each window's due time (queueing not hidden). Keep
# RATE below the closed-loop throughput to measure latency under load rather than overload.
# RATE may be given as "" (closed loop only) when BATCH follows.
# BATCH (default 1): windows per request, passed as `wattest-loadgen --batch BATCH`. 1 posts one
# window per `POST /v1/telemetry`; more posts up to BATCH consecutive windows of one node per
# `POST /v1/telemetry/batch` (CONCURRENCY then counts requests; throughput still counts windows;
# every window gets the latency of its request, in the open loop from the batch's due time, with
# requests due evenly at RATE/BATCH per second).
# Each line also gives the latency of the windows in requests that carry no final window (no
# certificate issued while they are answered), apart from all windows'. Extra wattest-loadgen
# flags go in WATTEST_LOADGEN_FLAGS (e.g. "--timeline": the worst latency per 250 ms, on stderr).
# WATTEST_ORACLE_CPUS / WATTEST_LOADGEN_CPUS (taskset lists, e.g. 0 and 1) pin the oracle and the
# load generator to separate cores; the oracle's CPU time during each run is printed either way
# (CPU time / windows = the oracle's cost per window).
# First, `openssl speed rsa2048` on each of the oracle's cores (WATTEST_ORACLE_CPUS, else every
# core): the verify ceiling the issue's target is half of.
# Every run gets a fresh oracle and a fresh database. wattest-loadgen's errors (refused windows
# by status, transport errors) are shown; the script then exits 1 after all runs.
#
# PostgreSQL: WATTEST_TEST_PG (default postgres://postgres@127.0.0.1:5432); a fresh database is
# created and dropped per run. Durable settings are left as the server has them (never
# fsync=off here).
set -euo pipefail
cd "$(dirname "$0")/.."
NODES="${1:-64}"; WINDOWS="${2:-50}"; CONCURRENCY="${3:-32}"; RATE="${4:-}"; BATCH="${5:-1}"
PG="${WATTEST_TEST_PG:-postgres://postgres@127.0.0.1:5432}"
cargo build --release --locked -p wattest-oracle -p wattest-tests --bins
ORACLE="$PWD/target/release/wattest-oracle"
LOADGEN="$PWD/target/release/wattest-loadgen"
failed=0

# User + system CPU time of process PID so far, in clock ticks (1/100 s): /proc/PID/stat fields
# 14 and 15 (proc(5)).
oracle_cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run LABEL DATABASE_URL [extra wattest-loadgen flags…]  ("" = SQLite in the data dir)
run() {
  local label=$1 db=$2 dir port pid token rc=0
  shift 2
  dir=$(mktemp -d); port=$((20000 + RANDOM % 12000))
  DATABASE_URL="$db" ${WATTEST_ORACLE_CPUS:+taskset -c "$WATTEST_ORACLE_CPUS"} "$ORACLE" serve --listen "127.0.0.1:$port" --data-dir "$dir" --rate-limit-per-ip 0 --rate-limit-per-token 0 --max-backdate-hours 24 >"$dir/log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  token=$(DATABASE_URL="$db" "$ORACLE" token create --role node --data-dir "$dir")
  printf '%s: ' "$label"
  cpu0=$(oracle_cpu_ticks "$pid")
  ${WATTEST_LOADGEN_CPUS:+taskset -c "$WATTEST_LOADGEN_CPUS"} "$LOADGEN" --oracle "http://127.0.0.1:$port" --token "$token" --nodes "$NODES" --windows "$WINDOWS" --concurrency "$CONCURRENCY" --batch "$BATCH" ${WATTEST_LOADGEN_FLAGS:-} "$@" 2>"$dir/loadgen.err" || rc=$?
  echo "  oracle CPU time during the run (enrollment included): $(( ($(oracle_cpu_ticks "$pid") - cpu0) * 10 )) ms"
  grep '^timeline:' "$dir/loadgen.err" | sed 's/^/  /' || true
  if [ "$rc" -ne 0 ]; then
    echo "  wattest-loadgen exited $rc:"; grep -v '…$' "$dir/loadgen.err" | sed 's/^/  /' || true
    failed=1
  fi
  kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}

# bench LOADGEN_FLAGS_LABEL [extra wattest-loadgen flags…]: SQLite then PostgreSQL.
bench() {
  local mode=$1 db
  shift
  run "SQLite (WAL)$mode" "" "$@"
  db="wattest_bench_$$_$RANDOM"
  if psql "$PG/postgres" -qc "CREATE DATABASE $db" 2>/dev/null; then
    run "PostgreSQL$mode" "$PG/$db" "$@"
    psql "$PG/postgres" -qc "DROP DATABASE $db" >/dev/null 2>&1 || true
  else
    echo "PostgreSQL at $PG unreachable: PostgreSQL figure not measured"
  fi
}

# The issue's yardstick, on the same machine: OpenSSL's RSA-2048 verifications per second on
# the oracle's cores (`openssl speed`, one process per core), and half of that, the throughput
# target. Printed before the runs, so each line above can be read against it.
ceiling() {
  local cpus=${WATTEST_ORACLE_CPUS:-} n per total=0 list
  if [ -n "$cpus" ]; then
    list=$(python3 -c 'import sys
out=[]
for part in sys.argv[1].split(","):
    a,_,b=part.partition("-"); out+=range(int(a),int(b or a)+1)
print(" ".join(map(str,out)))' "$cpus")
  else
    list=$(seq 0 $(($(nproc) - 1)))
  fi
  n=0
  for cpu in $list; do
    per=$(taskset -c "$cpu" openssl speed -seconds 2 rsa2048 2>/dev/null | awk '/^rsa 2048 bits/ {print $NF}')
    [ -n "$per" ] || { echo "openssl speed rsa2048: no figure (is openssl installed?)"; return; }
    echo "openssl speed rsa2048 on CPU $cpu: $per verify/s"
    total=$(awk -v a="$total" -v b="$per" 'BEGIN {print a + b}')
    n=$((n + 1))
  done
  awk -v t="$total" -v n="$n" 'BEGIN {printf "verify ceiling of the oracle'"'"'s %d core(s): %.0f/s; target (0.5 x): %.0f windows/s\n", n, t, t / 2}'
}
ceiling

if [ -z "$RATE" ]; then
  bench ""
else
  bench ", closed loop"
  bench ", open loop" --rate "$RATE"
fi
exit "$failed"
