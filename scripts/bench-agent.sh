#!/usr/bin/env bash
# Benchmark (not a test): the agent's own CPU time and peak RSS while it monitors a job of
# DURATION seconds (default 60) at 1 Hz and at 10 Hz, with signing and uploading on, against a
# local oracle; plus the stripped binary sizes. Prints a Markdown table for docs/performance.md.
#
#   scripts/bench-agent.sh [DURATION]
#
# Uses the `edge` profile for the agent (opt-level z, fat LTO, panic=abort) and release for the
# oracle. The job is `sleep DURATION`, so the CPU time measured is the agent's alone.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/deps.sh
wattest_install_packages
command -v /usr/bin/time >/dev/null || { sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo; $sudo apt-get install -y -qq time; }

DURATION="${1:-60}"
PORT="${PORT:-18181}"
cargo build --profile edge -p wattest-agent --locked
cargo build --release -p wattest-oracle -p wattest-shared --locked
AGENT="$PWD/target/edge/wattest-agent"
ORACLE="$PWD/target/release/wattest-oracle"
DIR=$(mktemp -d)
trap 'kill $(cat "$DIR/oracle.pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$DIR"' EXIT

"$ORACLE" serve --listen "127.0.0.1:$PORT" --data-dir "$DIR/oracle" >"$DIR/oracle.log" 2>&1 &
echo $! >"$DIR/oracle.pid"
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

echo "| sampling | windows | job | agent CPU time (user+sys) | share of one core | peak RSS |"
echo "|---|---|---|---|---|---|"
for interval in 1 0.1; do
  state="$DIR/agent-$interval"
  WATTEST_TOKEN=$("$ORACLE" token create --role node --data-dir "$DIR/oracle") \
    "$AGENT" enroll --oracle "http://127.0.0.1:$PORT" --name bench --zone BE --state-dir "$state" >/dev/null 2>&1
  /usr/bin/time -f "%U %S %M %e" -o "$DIR/time-$interval" \
    "$AGENT" run --interval "$interval" --window 10 --state-dir "$state" -- sleep "$DURATION" 2>"$DIR/agent-$interval.log"
  read -r user sys rss wall <"$DIR/time-$interval"
  cpu=$(python3 -c "print(f'{$user + $sys:.2f} s')")
  share=$(python3 -c "print(f'{100 * ($user + $sys) / $wall:.3f} %')")
  hz=$(python3 -c "print(f'{1 / $interval:g} Hz')")
  echo "| $hz | 10 s | sleep $DURATION | $cpu | $share | $((rss / 1024)).$(((rss % 1024) * 10 / 1024)) MiB |"
done
echo
echo "Stripped sizes: agent (edge) $(stat -c %s "$AGENT" | numfmt --to=iec-i --suffix=B), oracle (release) $(stat -c %s "$ORACLE" | numfmt --to=iec-i --suffix=B), wattest-verify (release) $(stat -c %s target/release/wattest-verify | numfmt --to=iec-i --suffix=B)"
