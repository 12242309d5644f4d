#!/usr/bin/env bash
# Benchmark (not a test): compliance export throughput and peak memory of a release
# `wattest-oracle export` from PostgreSQL, next to `psql \copy` of the same rows.
#
#   scripts/bench-export.sh [ROWS...]        (default: 1000000)
#
# For each ROWS: a fresh database is migrated by the oracle, seeded with generate_series
# (ROWS certificates over 100 nodes with owners; each certificate's claims are a real
# two-hour certificate with its ids, job and times varied), then timed with /usr/bin/time -v:
#   1. psql \copy (SELECT c.id, c.hash, substr(c.jws,1,512), c.claims, n.owner, …) TO file:
#      the same columns and rows the export reads, in the same order, as PostgreSQL's own
#      text COPY (no parsing, no CSV profile): the rate to compare against;
#   2. wattest-oracle export --profile compliance, sci and codecarbon --output FILE.
# Prints rows/s and peak RSS for each. PostgreSQL: WATTEST_TEST_PG (default
# postgres://postgres@127.0.0.1:5432); the database is dropped afterwards (KEEP_DB=1 keeps it).
# Needs psql and GNU time (/usr/bin/time). SINK=null writes every output to /dev/null (no disk
# for 10M rows; the row counts are then not checked); PROFILES picks the profiles (default all).
set -euo pipefail
cd "$(dirname "$0")/.."
PG="${WATTEST_TEST_PG:-postgres://postgres@127.0.0.1:5432}"
[ "$#" -gt 0 ] || set -- 1000000
command -v /usr/bin/time >/dev/null || { echo "needs /usr/bin/time (GNU time)"; exit 1; }
# WATTEST_ORACLE_BIN: a prebuilt binary (skips the release build; figures need a release one).
if [ -n "${WATTEST_ORACLE_BIN:-}" ]; then
  ORACLE="$WATTEST_ORACLE_BIN"
else
  cargo build --release -p wattest-oracle --bins >&2
  ORACLE="$PWD/target/release/wattest-oracle"
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# One real certificate's claims (two hours, GPU and solar sources), with placeholders.
TEMPLATE='{"iss":"http://bench","sub":"__NODE__","iat":__IAT__,"nbf":__IAT__,"exp":2110795114,"jti":"__ID__","eat_profile":"tag:wattest.dev,2026:energy-certificate:v1","ear.status":"warning","wattest.status_reasons":["software_key"],"wattest.calculation_version":"2","wattest.job_id":"__JOB__","wattest.model_id":"model-__MODEL__","wattest.node":{"id":"__NODE__","name":"bench-node","zone":"BE","attestation_level":"software","kid":"61sEJjaVaRaXTOo6peyDtotqmBGw9doJWWj1ta7kXIs"},"wattest.attribution":"machine","wattest.period":{"start":"__START__","end":"__END__","measured_seconds":"40.000000"},"wattest.energy":{"consumed_wh":"4.000000","solar_wh":"1.000000","grid_wh":"3.000000","by_source":[{"source":"gpu0","kind":"gpu","method":"nvml_energy_counter","energy_wh":"4.000000","uncertainty_pct":"5.000000"},{"source":"pv0","kind":"solar","method":"solar_power_integration","energy_wh":"1.000000","uncertainty_pct":"5.000000"}]},"wattest.grid_zone":"BE","wattest.intensity":{"zone":"BE","factor_type":"lifecycle","g_co2e_per_kwh":"117.580000","hourly":[{"hour":"2026-11-23T08:00:00Z","g_co2e_per_kwh":"117.580000","grid_wh":"1.875000","solar_wh":"0.625000","emissions_g":"0.220463","avoided_g":"0.073488","provenance":{"provider":"static","dataset":"Ember (2025), Yearly Electricity Data, BEL 2024","year":2024,"factor_type":"lifecycle","estimated":true}},{"hour":"2026-11-23T09:00:00Z","g_co2e_per_kwh":"117.580000","grid_wh":"1.125000","solar_wh":"0.375000","emissions_g":"0.132278","avoided_g":"0.044093","provenance":{"provider":"static","dataset":"Ember (2025), Yearly Electricity Data, BEL 2024","year":2024,"factor_type":"lifecycle","estimated":true}}]},"wattest.emissions":{"location_based_g_co2e":"0.352741"},"wattest.avoided_emissions":{"g_co2e":"0.117581"},"wattest.reward":{"currency":"EUR","price_per_tonne":"25.000000","total":"0.000002","node_owner":"0.000001","cooperative_fund":"0.000001","node_owner_share_pct":"70.000000"},"wattest.telemetry":{"first_seq":1,"last_seq":4,"count":4,"chain_head":"cRw1PCvxuXAWaWTgmqWdwOdMAILbTGIbK2TAEY4MIPQ"}}'
# base64url of {"alg":"PS256","typ":"wattest-cert+jwt","kid":"61sEJjaVaRaXTOo6peyDtotqmBGw9doJWWj1ta7kXIs"}
HEADER='eyJhbGciOiJQUzI1NiIsInR5cCI6IndhdHRlc3QtY2VydCtqd3QiLCJraWQiOiI2MXNFSmphVmFSYVhUT282cGV5RHRvdHFtQkd3OWRvSldXajF0YTdrWElzIn0'

measure() { # label rows command...: prints "label: N rows in S s = R rows/s, peak RSS M MB"
  local label=$1 rows=$2; shift 2
  /usr/bin/time -v "$@" 2>"$WORK/time" >/dev/null
  local secs rss
  secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,p,":"); s=0; for(i=1;i<=n;i++) s=s*60+p[i]; print s}' "$WORK/time")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time")
  L="$label" awk -v n="$rows" -v s="$secs" -v k="$rss" \
    'BEGIN { printf "%-34s %9d rows in %7.2f s = %8.0f rows/s, peak RSS %6.1f MB\n", ENVIRON["L"], n, s, n/s, k/1024 }'
}

for ROWS in "$@"; do
  db="wattest_bench_export_$$_$ROWS"
  psql "$PG/postgres" -qc "CREATE DATABASE $db"
  URL="$PG/$db"
  DATABASE_URL="$URL" "$ORACLE" token create --role admin --data-dir "$WORK/oracle" >/dev/null
  echo "== $ROWS certificates: seeding $db" >&2
  seed_start=$(date +%s)
  psql "$URL" -q -v ON_ERROR_STOP=1 -v template="$TEMPLATE" -v header="$HEADER" -v rows="$ROWS" <<'SQL'
SET synchronous_commit = off;
INSERT INTO nodes (id, name, zone, kid, public_jwk, attestation_level, enrolled_at, last_seq, owner)
SELECT md5('node' || n)::uuid::text, 'bench-node-' || n, 'BE', 'kid-' || n, '{}', 'software',
       now(), 0, 'owner-' || (n % 10)
FROM generate_series(1, 100) AS n;
ALTER TABLE certificates DROP CONSTRAINT IF EXISTS certificates_node_id_fkey;
INSERT INTO certificates (id, node_id, job_id, issued_at, period_start, period_end, zone,
  attestation_level, consumed_wh, grid_wh, solar_wh, emissions_kg, avoided_kg, intensity_g,
  intensity_dataset, intensity_year, factor_type, reward_micro_eur, owner_micro_eur,
  fund_micro_eur, first_seq, last_seq, window_count, hash, jws, claims)
SELECT id, node, job, t, t - interval '40 seconds', t, 'BE', 'software', 4, 3, 1, 0.000352741,
  0.000117581, 117.58, 'Ember (2025), Yearly Electricity Data, BEL 2024', 2024, 'lifecycle',
  2, 1, 1, 1, 4, 4, md5(id) || md5(job), :'header' || '.' || md5(claims) || '.' || repeat('s', 512),
  claims
FROM (
  SELECT id, node, job, t,
    replace(replace(replace(replace(replace(replace(replace(:'template',
      '__ID__', id), '__NODE__', node), '__JOB__', job), '__MODEL__', (i % 50)::text),
      '__IAT__', extract(epoch FROM t)::bigint::text),
      '__START__', to_char((t - interval '40 seconds') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
      '__END__', to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')) AS claims
  FROM (
    SELECT i, md5('cert' || i)::uuid::text AS id, md5('node' || (1 + i % 100))::uuid::text AS node,
      'job-' || i AS job, timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second' AS t
    FROM generate_series(1, :rows) AS i
  ) AS g
) AS s;
ANALYZE certificates;
SQL
  echo "   seeded in $(( $(date +%s) - seed_start )) s; $(psql "$URL" -Atc "SELECT pg_size_pretty(pg_total_relation_size('certificates'))")" >&2
  rows_sql="SELECT c.id, c.hash, substr(c.jws, 1, 512), c.claims, n.owner, n.embodied_kg_co2e, n.embodied_lifespan_hours, EXISTS (SELECT 1 FROM certificate_revocations r WHERE r.certificate_id = c.id) FROM certificates c LEFT JOIN nodes n ON n.id = c.node_id ORDER BY c.issued_at, c.id"
  out() { if [ "${SINK:-file}" = null ]; then echo /dev/null; else echo "$WORK/$1"; fi; }
  measure "psql \\copy (same rows, text)" "$ROWS" psql "$URL" -qc "\\copy ($rows_sql) TO '$(out psql.txt)'"
  measure "psql \\copy (same rows, CSV)" "$ROWS" psql "$URL" -qc "\\copy ($rows_sql) TO '$(out psql.csv)' CSV HEADER"
  for profile in ${PROFILES:-compliance sci codecarbon}; do
    if [ "${SINK:-file}" = null ]; then
      measure "wattest-oracle export $profile" "$ROWS" env DATABASE_URL="$URL" "$ORACLE" export --profile "$profile" --data-dir "$WORK/oracle"
    else
      measure "wattest-oracle export $profile" "$ROWS" env DATABASE_URL="$URL" "$ORACLE" export --profile "$profile" --data-dir "$WORK/oracle" --output "$WORK/$profile.csv"
      lines=$(($(wc -l <"$WORK/$profile.csv") - 1))
      [ "$lines" -eq "$ROWS" ] || { echo "$profile: $lines rows, expected $ROWS" >&2; exit 1; }
    fi
  done
  if [ "${SINK:-file}" != null ]; then
    ls -l "$WORK"/*.csv "$WORK"/psql.* | awk '{printf "   %s %d MB\n", $NF, $5/1048576}' >&2
  fi
  rm -f "$WORK"/*.csv "$WORK"/psql.*
  [ "${KEEP_DB:-0}" = 1 ] || psql "$PG/postgres" -qc "DROP DATABASE $db"
done
