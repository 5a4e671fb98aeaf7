#!/usr/bin/env bash
# The benchmark, one command: bench/run.sh [seconds per scenario, default 10]
#
# Builds the release binary (or takes BENCH_BINARY), the baseline's (BENCH_BASELINE, or
# BENCH_BASELINE_BINARY when already built) and the ceiling (bench/ceiling, or
# BENCH_CEILING_BINARY), starts a throwaway PostgreSQL
# cluster (pg_stat_statements and auto_explain loaded), and hands over to bench/bench.py, which
# starts each build on one fresh database seeded through the API, drives each scenario with wrk,
# runs pgbench with the server's own SQL beside it, compares a tenant request made with an API
# key against the same with the tenant headers, and prints the tables of docs/benchmarks.md.
# Needs Debian's wrk and PostgreSQL (server + pgbench).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

command -v wrk >/dev/null || { log "wrk not found: apt-get install wrk"; exit 1; }
command -v pgbench >/dev/null || { log "pgbench not found: apt-get install postgresql-contrib or postgresql"; exit 1; }
# The commit before the latest optimisation (one statement per tenant request), measured in the
# same run; BENCH_BASELINE= (empty) measures this build alone.
BENCH_BASELINE="${BENCH_BASELINE-1635afa}"
target="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
if [ -n "${BENCH_BASELINE_BINARY:-}" ]; then
  log "baseline: $BENCH_BASELINE_BINARY, already built"
  export BENCH_BASELINE_BINARY BENCH_BASELINE_REV="$BENCH_BASELINE"
elif [ -n "$BENCH_BASELINE" ]; then
  log "release build of $BENCH_BASELINE, the baseline"
  # A fixed path, so that cargo reuses its artifacts from one run to the next.
  baseline_src="$target/bench-baseline-src"
  git worktree remove --force "$baseline_src" 2>/dev/null || rm -rf "$baseline_src"
  git worktree prune
  git worktree add --quiet --detach "$baseline_src" "$BENCH_BASELINE"
  (cd "$baseline_src" && CARGO_TARGET_DIR="$target" cargo build --release --quiet --bin tolstoy)
  # Moved away, so that the build below cannot leave the baseline's binary in its place.
  mv "$target/release/tolstoy" "$target/release/tolstoy-baseline"
  git worktree remove --force "$baseline_src"
  export BENCH_BASELINE_BINARY="$target/release/tolstoy-baseline" BENCH_BASELINE_REV="$BENCH_BASELINE"
fi
if [ -n "${BENCH_BINARY:-}" ]; then
  log "this build: $BENCH_BINARY, already built"
else
  log "release build"
  cargo build --release --quiet --bin tolstoy
  BENCH_BINARY="$target/release/tolstoy"
fi
if [ -n "${BENCH_CEILING_BINARY:-}" ]; then
  log "the ceiling: $BENCH_CEILING_BINARY, already built"
else
  log "release build of the ceiling (bench/ceiling: hyper + tokio-postgres, the least a server must do)"
  CARGO_TARGET_DIR="$target/ceiling" cargo build --release --quiet --manifest-path bench/ceiling/Cargo.toml
  BENCH_CEILING_BINARY="$target/ceiling/release/ceiling"
fi
export BENCH_CEILING_BINARY
unset TEST_DATABASE_URL
# auto_explain is off (its default) until bench.py turns it on (ALTER SYSTEM, which a -c here
# would override) for the few requests whose plans it shows.
POSTGRES_OPTIONS="-c shared_preload_libraries=pg_stat_statements,auto_explain" start_throwaway_postgres
BENCH_BINARY="$BENCH_BINARY" BENCH_SECONDS="${1:-10}" python3 bench/bench.py
