#!/usr/bin/env bash
# One command for the main job: build Wattest, start an oracle (SQLite in ./data/quickstart),
# enroll this machine as a node, run a real workload under the agent, print the certificate,
# verify it offline with wattest-verify, write the compliance CSV, stop the oracle.
#
#   scripts/quickstart.sh                  # a CPU-bound job of about 10 s
#   scripts/quickstart.sh -- python3 train.py --epochs 1
#
# Environment: WATTEST_ZONE (grid zone, default BE), PORT (default 18080),
# PROFILE (debug or release, default debug), WINDOW (seconds, default 2).
# ./data/quickstart is deleted first (the oracle's data goes to data/quickstart/oracle, the
# agent's state to data/quickstart/agent). Exit status: the workload's, once its certificate is
# verified and exported; 1 when a step of this script fails.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/deps.sh
wattest_install_packages --build-only

ZONE="${WATTEST_ZONE:-BE}"
PORT="${PORT:-18080}"
PROFILE="${PROFILE:-debug}"
WINDOW="${WINDOW:-2}"
DIR="$PWD/data/quickstart"
URL="http://127.0.0.1:$PORT"

if [ "${1:-}" = "--" ]; then shift; fi
if [ $# -eq 0 ]; then
  # A real CPU-bound workload: about 10 s of arithmetic in the shell, on one core.
  set -- sh -c 'end=$(($(date +%s) + 10)); n=0; while [ $(date +%s) -lt $end ]; do i=0; while [ $i -lt 5000 ]; do i=$((i+1)); n=$((n+i)); done; done; echo "workload done ($n)"'
fi

echo "==> Building ($PROFILE)"
if [ "$PROFILE" = release ]; then cargo build --release --bins --locked; else cargo build --bins --locked; fi
BIN="$PWD/target/$PROFILE"

if curl -fs "$URL/healthz" >/dev/null 2>&1; then
  echo "something already answers on $URL; stop it or choose another port: PORT=18090 $0"; exit 1
fi
rm -rf "$DIR" && mkdir -p "$DIR"
echo "==> Starting the oracle on $URL (data in $DIR)"
"$BIN/wattest-oracle" serve --listen "127.0.0.1:$PORT" --data-dir "$DIR/oracle" >"$DIR/oracle.log" 2>&1 &
ORACLE_PID=$!
trap 'kill $ORACLE_PID 2>/dev/null || true; wait $ORACLE_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  kill -0 $ORACLE_PID 2>/dev/null || { echo "the oracle exited; see $DIR/oracle.log"; cat "$DIR/oracle.log"; exit 1; }
  curl -fs "$URL/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "$URL/healthz" >/dev/null || { echo "the oracle did not start; see $DIR/oracle.log"; cat "$DIR/oracle.log"; exit 1; }

echo "==> Enrolling this machine (zone $ZONE)"
TOKEN=$("$BIN/wattest-oracle" token create --role node --data-dir "$DIR/oracle")
WATTEST_TOKEN="$TOKEN" "$BIN/wattest-agent" enroll --oracle "$URL" --name "$(hostname)" --zone "$ZONE" --state-dir "$DIR/agent" >/dev/null

echo "==> What this machine can measure"
"$BIN/wattest-agent" sources

echo "==> Running the workload under the agent: $*"
set +e
"$BIN/wattest-agent" run --window "$WINDOW" --state-dir "$DIR/agent" -- "$@" 2> >(tee "$DIR/agent.log" >&2)
STATUS=$?
set -e
sleep 0.2
CERT_ID=$(sed -n 's/^wattest: certificate //p' "$DIR/agent.log" | head -1)
[ -n "$CERT_ID" ] || { echo "no certificate was issued; see $DIR/agent.log and $DIR/oracle.log"; exit 1; }

echo "==> The certificate (claims; the signed JWS is in $DIR/certificate.json)"
AUDITOR=$("$BIN/wattest-oracle" token create --role auditor --data-dir "$DIR/oracle")
COMPLIANCE=$("$BIN/wattest-oracle" token create --role compliance --data-dir "$DIR/oracle")
curl -fs -H "Authorization: Bearer $AUDITOR" "$URL/v1/certificates/$CERT_ID" -o "$DIR/certificate.json"
python3 -m json.tool "$DIR/certificate.json" 2>/dev/null | sed -n '/"claims"/,$p' | head -80 || cat "$DIR/certificate.json"

echo "==> Verifying it offline against the oracle's JWKS and transparency log key"
curl -fs "$URL/.well-known/jwks.json" -o "$DIR/jwks.json"
curl -fs "$URL/v1/log/key" -o "$DIR/log-key.txt"
"$BIN/wattest-verify" "$DIR/certificate.json" --jwks "$DIR/jwks.json" --log-key "$DIR/log-key.txt"

echo "==> Compliance CSV ($DIR/compliance.csv)"
curl -fs -H "Authorization: Bearer $COMPLIANCE" "$URL/v1/exports/compliance.csv" -o "$DIR/compliance.csv"
cat "$DIR/compliance.csv"
echo "==> Done. The workload exited with status $STATUS."
exit "$STATUS"
