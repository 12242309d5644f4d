#!/usr/bin/env bash
# Runs the whole Wattest test suite on a fresh Debian machine: installs what is missing,
# finds or starts PostgreSQL, builds, then runs formatting and lint gates, unit, integration,
# TPM (real swtpm) and end-to-end tests. Nothing is skipped silently.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/deps.sh

pg_reachable() { psql "$1/postgres" -Atqc 'select 1' >/dev/null 2>&1; }

WATTEST_TEST_PG="${WATTEST_TEST_PG:-postgres://postgres@127.0.0.1:5432}"
if command -v psql >/dev/null 2>&1 && pg_reachable "$WATTEST_TEST_PG"; then
  wattest_install_packages
  echo "==> Using PostgreSQL at $WATTEST_TEST_PG"
else
  wattest_install_packages --with-pg-server
  if ! pg_reachable "$WATTEST_TEST_PG"; then
    # A disposable cluster on a free port; the server refuses to run as root, so it runs as postgres.
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    PGDIR=$(mktemp -d /tmp/wattest-pg.XXXXXX)
    PGPORT=55432
    chown postgres:postgres "$PGDIR" 2>/dev/null || true
    as_pg() { if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/sh -c "$1"; else sh -c "$1"; fi; }
    as_pg "$PGBIN/initdb -D $PGDIR/data -U postgres --auth=trust -E UTF8 >/dev/null"
    as_pg "$PGBIN/pg_ctl -D $PGDIR/data -l $PGDIR/pg.log -o '-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGDIR -c fsync=off' -w start >/dev/null"
    trap 'as_pg "$PGBIN/pg_ctl -D $PGDIR/data -m fast stop >/dev/null" || true' EXIT
    WATTEST_TEST_PG="postgres://postgres@127.0.0.1:$PGPORT"
    echo "==> Started a disposable PostgreSQL at $WATTEST_TEST_PG"
  fi
fi
export WATTEST_TEST_PG
# Expected TPM failures in the negative tests make the TSS library print ERROR lines.
export TSS2_LOG="${TSS2_LOG:-all+none}"
export RUST_BACKTRACE=1

# PyJWT and jsonschema: the independent JOSE check of certificates (tests/python).
if [ ! -x target/pyenv/bin/python ] || ! target/pyenv/bin/python -c 'import jwt, jsonschema, cryptography' 2>/dev/null; then
  echo "==> Installing PyJWT and jsonschema into target/pyenv"
  python3 -m venv target/pyenv
  target/pyenv/bin/pip install --quiet "PyJWT[crypto]>=2.8,<3" "jsonschema>=4.18,<5"
fi
export WATTEST_PYTHON="$PWD/target/pyenv/bin/python"

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo build (binaries for the end-to-end tests)"
cargo build --workspace --bins --locked
echo "==> cargo test"
cargo test --workspace --locked --no-fail-fast "$@"
# The integration suite again with every test oracle on its own fresh PostgreSQL database.
echo "==> cargo test -p wattest-tests on PostgreSQL (WATTEST_TEST_BACKEND=postgres)"
pg_started=$(date +%s)
WATTEST_TEST_BACKEND=postgres cargo test -p wattest-tests --locked --no-fail-fast "$@"
echo "==> PostgreSQL pass: $(( $(date +%s) - pg_started )) s"
echo "==> The README's main command: scripts/quickstart.sh (a real job measured, certified, verified offline, exported)"
quickstart_log=$(mktemp)
# Ports 20000-31999: below Linux's default ephemeral range (32768-60999), so no client socket of
# this machine holds the port the oracle is about to listen on.
if ! PORT=$((20000 + RANDOM % 12000)) scripts/quickstart.sh >"$quickstart_log" 2>&1; then
  cat "$quickstart_log"; echo "scripts/quickstart.sh failed"; exit 1
fi
grep -E '^==> Done' "$quickstart_log"
echo "==> API fuzz run from the OpenAPI document (schemathesis, 50 cases per operation)"
scripts/fuzz-api.sh 50
echo "==> All tests passed."
