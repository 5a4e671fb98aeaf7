#!/usr/bin/env bash
# Configurations against the ceiling, ad hoc: bench/ratios.sh label=BINARY[,VAR=value...] ...
# (see bench/ratios.py). Starts a throwaway PostgreSQL cluster; builds the ceiling unless
# BENCH_CEILING_BINARY names it. Needs Debian's wrk and PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
command -v wrk >/dev/null || { log "wrk not found: apt-get install wrk"; exit 1; }
target="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
if [ -z "${BENCH_CEILING_BINARY:-}" ]; then
  CARGO_TARGET_DIR="$target/ceiling" cargo build --release --quiet --manifest-path bench/ceiling/Cargo.toml
  BENCH_CEILING_BINARY="$target/ceiling/release/ceiling"
fi
unset TEST_DATABASE_URL
start_throwaway_postgres
first="${1#*=}"
BENCH_BINARY="${first%%,*}" BENCH_CEILING_BINARY="$BENCH_CEILING_BINARY" python3 bench/ratios.py "$@"
