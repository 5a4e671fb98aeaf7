#!/usr/bin/env bash
# The benchmark, one command: bench/run.sh [seconds per scenario, default 10]
#
# Builds the release binary, starts a throwaway PostgreSQL cluster (pg_stat_statements loaded),
# and hands over to bench/bench.py, which starts the server on a fresh database, seeds it through
# the API, drives each scenario with wrk, runs pgbench with the server's own SQL beside it, and
# prints the tables of docs/benchmarks.md. Needs Debian's wrk and PostgreSQL (server + pgbench).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

command -v wrk >/dev/null || { log "wrk not found: apt-get install wrk"; exit 1; }
command -v pgbench >/dev/null || { log "pgbench not found: apt-get install postgresql-contrib or postgresql"; exit 1; }
log "release build"
cargo build --release --quiet --bin tolstoy
unset TEST_DATABASE_URL
POSTGRES_OPTIONS="-c shared_preload_libraries=pg_stat_statements" start_throwaway_postgres
BENCH_BINARY="$(realpath "${CARGO_TARGET_DIR:-target}")/release/tolstoy" \
  BENCH_SECONDS="${1:-10}" python3 bench/bench.py
