#!/usr/bin/env bash
# The queue benchmark of issue 15, one command: bench/queue.sh
#
# Builds the release binary, installs graphile-worker (bench/queue/package-lock.json, npm ci),
# starts a throwaway PostgreSQL cluster (pg_stat_statements loaded) and hands over to
# bench/runs.py, which measures on one flow whose one step calls a local HTTP target
# (bench/queue/target.js): runs/s draining a queued backlog with 1 and 2 `tolstoy worker`
# processes beside graphile-worker with the same concurrency on the same PostgreSQL, and on
# SQLite with `tolstoy serve` alone; SQL statements per run and per job; enqueue → call latency
# under a steady trickle; `GET /tools/{id}` with wrk while a worker drains runs against idle.
# Prints the Markdown tables of docs/benchmarks.md ("Runs and the queue (issue 15)").
#
# Settings (environment): BENCH_RUNS (runs per drain, 2000), BENCH_ROUNDS (5), BENCH_TRICKLE
# (rate:count pairs, "5:100,50:500"), BENCH_SECONDS (wrk seconds, 10).
# Needs Debian's wrk, PostgreSQL (server + psql), Node.js with npm.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

command -v wrk >/dev/null || { log "wrk not found: apt-get install wrk"; exit 1; }
command -v psql >/dev/null || { log "psql not found: apt-get install postgresql"; exit 1; }
command -v npm >/dev/null || { log "node and npm not found: apt-get install nodejs npm"; exit 1; }
log "graphile-worker (npm ci in bench/queue)"
(cd bench/queue && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
target="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
log "release build"
cargo build --release --quiet --bin tolstoy
unset TEST_DATABASE_URL
POSTGRES_OPTIONS="-c shared_preload_libraries=pg_stat_statements" start_throwaway_postgres
BENCH_BINARY="$target/release/tolstoy" python3 bench/runs.py
