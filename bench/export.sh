#!/usr/bin/env bash
# The export benchmark of issue 19, one command: bench/export.sh
#
# Builds the release binary (BENCH_BINARY names one already built), starts a throwaway
# PostgreSQL cluster and hands over to bench/export.py, which gives one organization 1,000,000
# execution logs, exports them as NDJSON and as CSV with curl, and prints each export's time,
# size and the server's peak RSS (Markdown, docs/benchmarks.md "Export (issue 19)").
#
# Settings (environment): BENCH_EXPORT_ROWS (1000000). Needs Debian's PostgreSQL (server +
# psql) and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

command -v curl >/dev/null || { log "curl not found: apt-get install curl"; exit 1; }
command -v psql >/dev/null || { log "psql not found: apt-get install postgresql"; exit 1; }
target="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
if [ -z "${BENCH_BINARY:-}" ]; then
  log "release build"
  cargo build --release --quiet --bin tolstoy
  BENCH_BINARY="$target/release/tolstoy"
fi
unset TEST_DATABASE_URL
start_throwaway_postgres
BENCH_BINARY="$BENCH_BINARY" TEST_POSTGRES_LOG=/dev/null python3 bench/export.py
