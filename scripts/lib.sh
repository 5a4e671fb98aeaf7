# Shell helpers shared by scripts/setup.sh, scripts/test.sh, .ci/run and bench/run.sh: logging,
# free ports, waiting for a URL, clean-up on exit, finding PostgreSQL and PgBouncer, and a
# throwaway PostgreSQL cluster. Source it from the repository root.

log() { printf '==> %s\n' "$*" >&2; }

# The virtual environment of the pinned Python tools (scripts/setup.sh makes it): the scripts
# call "$VENV/bin/…", never a moto_server, st or hadolint that happens to be on PATH.
VENV=$PWD/.venv

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits up to 10 s for `url` to answer.
wait_for_url() {
  local _
  for _ in $(seq 100); do
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1])' "$1" 2>/dev/null && return
    sleep 0.1
  done
  log "no answer from $1"
  return 1
}

CLEANUP=()
cleanup() {
  local step
  for step in "${CLEANUP[@]}"; do eval "$step" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

# Runs a command as the postgres system user when we are root (initdb and pgbouncer refuse root).
as_service_user() {
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

find_pg_bin() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$dir/initdb" ] && { echo "$dir"; return; }
  done
  command -v initdb >/dev/null && dirname "$(command -v initdb)" && return
  return 1
}

find_pgbouncer() {
  command -v pgbouncer && return
  [ -x /usr/sbin/pgbouncer ] && echo /usr/sbin/pgbouncer
}

start_throwaway_postgres() {
  local bin port dir
  bin=$(find_pg_bin) || { log "no PostgreSQL server binaries (initdb) found: install postgresql or set TEST_DATABASE_URL"; exit 1; }
  dir=$(mktemp -d /tmp/tolstoy-pg.XXXXXX)
  port=$(free_port)
  [ "$(id -u)" = 0 ] && { id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres; chown postgres "$dir"; }
  as_service_user "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync >/dev/null
  as_service_user "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -o \
    "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off ${POSTGRES_OPTIONS:-}" \
    start >/dev/null
  CLEANUP+=("as_service_user '$bin/pg_ctl' -D '$dir/data' -m immediate stop; rm -rf '$dir'")
  export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  export TEST_POSTGRES_LOG="$dir/server.log"
  log "throwaway PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($dir)"
}

