#!/usr/bin/env bash
# Benchmark (not a test): certificate issuance latency including the transparency-log append, on
# a log that already holds N entries, plus proof generation on that log (issue #7).
#
#   scripts/bench-issue.sh [N] [CERTIFICATES]      (defaults: 1000000 300)
#
# 1. `cargo bench --bench ledger -- --size N --keep-pg` seeds a log of N leaves on SQLite and on
#    PostgreSQL and reports inclusion/consistency proof, checkpoint signing and append latencies.
# 2. The kept PostgreSQL database (N leaves already in its log) is vacuumed and analyzed, a release
#    oracle is started on it, and `wattest-loadgen --windows 1 --concurrency 1` posts one-window
#    jobs: every request verifies a window, issues a certificate (RSA-3072 PS256 signature) and
#    appends it to the log in the same transaction, one request at a time, so the latency is the
#    issuance latency, not queueing.
# PostgreSQL: WATTEST_TEST_PG (default postgres://postgres@127.0.0.1:5432).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000000}"; CERTS="${2:-300}"
PG="${WATTEST_TEST_PG:-postgres://postgres@127.0.0.1:5432}"
export WATTEST_TEST_PG="$PG"
cargo bench --locked -p wattest-oracle --bench ledger -- --size "$N" --keep-pg
cargo build --release --locked -p wattest-oracle -p wattest-tests --bins
db="$PG/wattest_bench_log_$N"
# Steady state, as a long-running log would be: without this, autovacuum and autoanalyze of the
# freshly seeded 3M rows run during the measurement and compete for the two cores and the disk.
psql "$db" -qc "VACUUM ANALYZE"
dir=$(mktemp -d); port=$((20000 + RANDOM % 12000))
DATABASE_URL="$db" target/release/wattest-oracle serve --listen "127.0.0.1:$port" --data-dir "$dir" --rate-limit-per-ip 0 --rate-limit-per-token 0 --max-backdate-hours 24 >"$dir/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"; psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS wattest_bench_log_$N" >/dev/null 2>&1 || true' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
token=$(DATABASE_URL="$db" target/release/wattest-oracle token create --role node --data-dir "$dir")
printf 'PostgreSQL, issuance on a log of %s entries, one request at a time: ' "$N"
target/release/wattest-loadgen --oracle "http://127.0.0.1:$port" --token "$token" --nodes "$CERTS" --windows 1 --concurrency 1 2>/dev/null
