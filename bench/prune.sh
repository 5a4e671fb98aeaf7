#!/usr/bin/env bash
# The retention benchmark of issue 18, one command: bench/prune.sh
#
# Builds the release binary (BENCH_BINARY names one already built), starts a throwaway
# PostgreSQL cluster and hands over to bench/prune.py, which gives one organization 1,000,000
# execution logs older than RETENTION_DAYS, drives `GET /tools/{id}` with wrk once without a
# prune and once while `tolstoy prune` deletes them, and prints the prune's time and the API's
# latency in both (Markdown, docs/benchmarks.md "Retention (issue 18)").
#
# Settings (environment): BENCH_PRUNE_ROWS (1000000), BENCH_SECONDS (wrk seconds without the
# prune, 20). Needs Debian's wrk and PostgreSQL (server + psql).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

command -v wrk >/dev/null || { log "wrk not found: apt-get install wrk"; exit 1; }
command -v psql >/dev/null || { log "psql not found: apt-get install postgresql"; exit 1; }
target="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
if [ -z "${BENCH_BINARY:-}" ]; then
  log "release build"
  cargo build --release --quiet --bin tolstoy
  BENCH_BINARY="$target/release/tolstoy"
fi
unset TEST_DATABASE_URL
start_throwaway_postgres
BENCH_BINARY="$BENCH_BINARY" TEST_POSTGRES_LOG=/dev/null python3 bench/prune.py
