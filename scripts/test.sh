#!/usr/bin/env bash
# Runs the whole integration suite on SQLite and PostgreSQL.
#
# PostgreSQL: the server named by TEST_DATABASE_URL (a URL of a user who may create databases),
# or else a throwaway cluster started here (initdb + pg_ctl in a temp dir, on a free port) and
# removed on exit. SKIP_POSTGRES=1 skips the PostgreSQL cases on purpose; nothing else does.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

find_pg_bin() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$dir/initdb" ] && { echo "$dir"; return; }
  done
  command -v initdb >/dev/null && dirname "$(command -v initdb)" && return
  return 1
}

start_throwaway_postgres() {
  local bin port run_as=()
  bin=$(find_pg_bin) || { log "no PostgreSQL server binaries (initdb) found: install postgresql or set TEST_DATABASE_URL"; exit 1; }
  PG_TMP=$(mktemp -d /tmp/tolstoy-pg.XXXXXX)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  # initdb refuses to run as root; run the cluster as the postgres system user then.
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir "$PG_TMP" postgres
    chown postgres "$PG_TMP"
    run_as=(runuser -u postgres --)
  fi
  "${run_as[@]}" "$bin/initdb" -D "$PG_TMP/data" -U postgres -A trust -E UTF8 --locale=C --no-sync >/dev/null
  "${run_as[@]}" "$bin/pg_ctl" -D "$PG_TMP/data" -l "$PG_TMP/server.log" -w -o \
    "-p $port -k $PG_TMP -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >/dev/null
  PG_STOP=("${run_as[@]}" "$bin/pg_ctl" -D "$PG_TMP/data" -m immediate stop)
  trap 'stop_throwaway_postgres' EXIT
  export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  log "throwaway PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($PG_TMP)"
}

stop_throwaway_postgres() {
  "${PG_STOP[@]}" >/dev/null 2>&1 || true
  rm -rf "$PG_TMP"
}

if [ -n "${TEST_DATABASE_URL:-}" ]; then
  log "PostgreSQL from TEST_DATABASE_URL"
elif [ "${SKIP_POSTGRES:-}" = 1 ]; then
  log "SKIP_POSTGRES=1: PostgreSQL cases will be skipped on purpose"
else
  start_throwaway_postgres
fi

if cargo nextest --version >/dev/null 2>&1; then
  listing=$(cargo nextest list --workspace --message-format oneline)
  sqlite=$(grep -c '::sqlite$' <<<"$listing" || true)
  postgres=$(grep -c '::postgres$' <<<"$listing" || true)
  other=$(grep -vc -e '::sqlite$' -e '::postgres$' <<<"$listing" || true)
  log "tests to run: $sqlite on SQLite, $postgres on PostgreSQL, $other independent of the backend"
  cargo nextest run --workspace --no-fail-fast "$@"
else
  log "cargo-nextest not found; using cargo test"
  cargo test --workspace --no-fail-fast "$@"
fi
