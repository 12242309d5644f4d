#!/usr/bin/env bash
# Checks Cargo.lock against a local copy of the RustSec advisory database with cargo-audit,
# without fetching anything: the database is read from a directory (a git checkout or a plain
# copy of its `crates/` tree), and yanked crates are looked up in cargo's local index cache (as
# fresh as the last cargo command that updated the index; `cargo update --dry-run` refreshes it
# without changing Cargo.lock).
#
#   scripts/audit-deps.sh
#
# Environment:
#   WATTEST_ADVISORY_DB  the database directory (default: ../shared/reference/rustsec-advisory-db,
#                        relative to the repository root). When it is absent the script prints
#                        "skipped: no advisory db at PATH" and exits 0.
#   CARGO_AUDIT          a cargo-audit binary to use instead of the pinned one in target/tools.
#   WATTEST_AUDIT_STRICT set to 1 to also fail on warnings (unsound, unmaintained, yanked).
#
# Fails (exit 1) on any vulnerability not listed in IGNORED below; warnings are printed and do not
# fail unless WATTEST_AUDIT_STRICT=1. The first run installs cargo-audit into target/tools
# (3.5 to 6 minutes on 2 cores); later runs take well under a second.
# Not audited: infra/vendor/sqlx-core, a path dependency (Cargo.lock records no registry version
# for it); it tracks sqlx-core 0.9.0, see infra/vendor/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_AUDIT_VERSION=0.22.2

# Advisories accepted on purpose, one per line: "RUSTSEC-YYYY-NNNN  reason (why the vulnerable
# code path is not reachable here, and what would lift the exception)". Keep each one justified;
# remove it as soon as the fixed version is in Cargo.lock.
IGNORED=(
)

DB="${WATTEST_ADVISORY_DB:-$(cd .. && pwd)/shared/reference/rustsec-advisory-db}"
if [ ! -d "$DB/crates" ]; then
  echo "skipped: no advisory db at $DB"
  exit 0
fi

if [ -n "${CARGO_AUDIT:-}" ]; then
  AUDIT="$CARGO_AUDIT"
else
  AUDIT="$PWD/target/tools/bin/cargo-audit"
  if [ ! -x "$AUDIT" ] || [ "$("$AUDIT" --version 2>/dev/null)" != "cargo-audit $CARGO_AUDIT_VERSION" ]; then
    echo "==> Installing cargo-audit $CARGO_AUDIT_VERSION into target/tools (a few minutes, once)"
    cargo install cargo-audit --version "$CARGO_AUDIT_VERSION" --locked --root "$PWD/target/tools" --quiet
  fi
fi

args=(audit --db "$DB" --no-fetch --file Cargo.lock)
for entry in ${IGNORED[@]+"${IGNORED[@]}"}; do
  id="${entry%%[[:space:]]*}"
  reason="${entry#"$id"}"
  echo "==> ignoring $id: ${reason#"${reason%%[![:space:]]*}"}"
  args+=(--ignore "$id")
done
if [ "${WATTEST_AUDIT_STRICT:-0}" = 1 ]; then
  args+=(--deny warnings)
fi

echo "==> cargo-audit against $DB"
exec "$AUDIT" "${args[@]}"
