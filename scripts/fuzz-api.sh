#!/usr/bin/env bash
# Fuzzes the whole oracle HTTP API from its own OpenAPI document with Schemathesis (PyPI), as an
# admin (every endpoint reachable), against a fresh oracle on loopback (SQLite, rate limits off
# so the fuzzer is not throttled). Exits non-zero on any failed check; the default checks are
# the ones the API must pass (no 5xx, responses match their schema, documented status codes and
# content types).
#
#   scripts/fuzz-api.sh [MAX_EXAMPLES] [CHECKS]
#
# MAX_EXAMPLES: generated cases per operation (default 100). CHECKS: Schemathesis check list
# (default not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance).
# The report (JUnit XML) is written to target/fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
MAX_EXAMPLES="${1:-100}"
CHECKS="${2:-not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance}"
SCHEMATHESIS_VERSION="4.32.5"

VENV="$PWD/target/fuzzenv"
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi
cargo build -q -p wattest-oracle --bin wattest-oracle
ORACLE="$PWD/target/debug/wattest-oracle"
DIR=$(mktemp -d)
PORT=$((20000 + RANDOM % 12000))
URL="http://127.0.0.1:$PORT"
"$ORACLE" serve --listen "127.0.0.1:$PORT" --data-dir "$DIR" \
  --rate-limit-per-ip 0 --rate-limit-per-token 0 >"$DIR/oracle.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 100); do curl -fs "$URL/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
TOKEN=$("$ORACLE" token create --role admin --data-dir "$DIR")
mkdir -p target/fuzz
set +e
PYTHONPATH="$PWD/scripts" SCHEMATHESIS_HOOKS=fuzz_hooks "$VENV/bin/schemathesis" run "$URL/openapi.json" \
  --checks "$CHECKS" \
  --max-examples "$MAX_EXAMPLES" \
  --header "Authorization: Bearer $TOKEN" \
  --request-timeout 30 \
  --report junit --report-dir target/fuzz \
  --suppress-health-check all \
  --seed 1
STATUS=$?
set -e

exit $STATUS
