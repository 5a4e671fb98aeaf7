#!/usr/bin/env bash
# First scripts/setup.sh installs what is missing (Debian PostgreSQL, psql, PgBouncer and
# Chromium; the pinned Python tools into .venv/; npm playwright-core), then this runs the whole
# integration suite, twice:
#   1. on SQLite and on PostgreSQL as a superuser on one URL;
#   2. the PostgreSQL cases again in Neon's production shape: queries as a least-privileged
#      application role through PgBouncer in transaction mode, migrations as the owner role
#      straight to the server, all in the schema tolstoy_service (DB_SCHEMA) beside same-named
#      tables in public.
#
# What it starts here, each on a free port, all removed on exit:
#   - PostgreSQL: the server named by TEST_DATABASE_URL (a superuser URL), or else a throwaway
#     cluster (initdb + pg_ctl in a temp dir). SKIP_POSTGRES=1 skips the PostgreSQL cases on
#     purpose (and run 2); nothing else does.
#   - PgBouncer (Debian's `pgbouncer`) in front of it, pool_mode = transaction: TEST_POOLER_URL.
#   - A local AWS Secrets Manager (`moto_server`, PyPI `moto[server]`, from .venv/):
#     TEST_AWS_ENDPOINT_URL.
# Before the suite, Swagger UI is driven in Debian's headless Chromium (tests/browser, npm
# playwright-core); its screenshot goes to SCREENSHOT_DIR (default /tmp), outside the repository.
# Then the served document goes through openapi-spec-validator, and schemathesis tests the API
# against it on SQLite and on PostgreSQL (tests/schemathesis; both PyPI, from .venv/).
# Arguments are passed to `cargo nextest run` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

scripts/setup.sh

# PgBouncer in transaction mode in front of the TEST_DATABASE_URL server, for every database.
start_pgbouncer() {
  local bin port dir server_host server_port
  bin=$(find_pgbouncer) || { log "pgbouncer not found: install Debian's pgbouncer (scripts/setup.sh does)"; exit 1; }
  read -r server_host server_port < <("$VENV/bin/python" -c 'import sys, urllib.parse as u; p=u.urlparse(sys.argv[1]); print(p.hostname or "127.0.0.1", p.port or 5432)' "$TEST_DATABASE_URL")
  dir=$(mktemp -d /tmp/tolstoy-pgbouncer.XXXXXX)
  port=$(free_port)
  cat >"$dir/pgbouncer.ini" <<INI
[databases]
* = host=$server_host port=$server_port
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/users.txt
admin_users = postgres
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 20
; sqlx sends it at start-up; PgBouncer 1.18 refuses unknown start-up parameters otherwise.
ignore_startup_parameters = extra_float_digits
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
  printf '"postgres" ""\n"tolstoy_test_owner" ""\n"tolstoy_test_app" ""\n' >"$dir/users.txt"
  [ "$(id -u)" = 0 ] && chown -R postgres "$dir"
  as_service_user "$bin" -d "$dir/pgbouncer.ini"
  CLEANUP+=("kill \$(cat '$dir/pgbouncer.pid'); sleep 0.2; rm -rf '$dir'")
  export TEST_POOLER_URL="postgres://postgres@127.0.0.1:$port/postgres"
  log "PgBouncer $("$bin" --version | awk 'NR==1{print $2}') (pool_mode = transaction) on 127.0.0.1:$port"
}

# A local AWS Secrets Manager for the secrets tests.
start_secrets_manager() {
  local port dir
  dir=$(mktemp -d /tmp/tolstoy-moto.XXXXXX)
  port=$(free_port)
  "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$dir/moto.log" 2>&1 &
  CLEANUP+=("kill $!; rm -rf '$dir'")
  wait_for_url "http://127.0.0.1:$port/moto-api/"
  export TEST_AWS_ENDPOINT_URL="http://127.0.0.1:$port"
  log "AWS Secrets Manager emulator (moto $("$VENV/bin/python" -c 'import moto; print(moto.__version__)')) on 127.0.0.1:$port"
}

if [ -n "${TEST_DATABASE_URL:-}" ]; then
  log "PostgreSQL from TEST_DATABASE_URL"
elif [ "${SKIP_POSTGRES:-}" = 1 ]; then
  log "SKIP_POSTGRES=1: PostgreSQL cases will be skipped on purpose"
else
  start_throwaway_postgres
fi
if [ -n "${TEST_DATABASE_URL:-}" ] && [ -z "${TEST_POOLER_URL:-}" ]; then
  start_pgbouncer
fi
[ -n "${TEST_AWS_ENDPOINT_URL:-}" ] || start_secrets_manager

# Starts the debug binary in a temp dir on a fresh database: SQLite there when `database_url` is
# empty, else that URL (migrated at start); further arguments are VARIABLE=value settings. Sets
# SERVER_URL.
start_server() {
  local database_url=$1 bin dir port
  shift
  cargo build --quiet --bin tolstoy
  bin=$(realpath "${CARGO_TARGET_DIR:-target}")/debug/tolstoy
  dir=$(mktemp -d /tmp/tolstoy-server.XXXXXX)
  port=$(free_port)
  (cd "$dir" && exec env -u DATABASE_URL -u DIRECT_URL ${database_url:+DATABASE_URL="$database_url"} \
    PORT="$port" "$@" "$bin" serve --migrate >"$dir/server.log" 2>&1) &
  CLEANUP+=("kill $!; rm -rf '$dir'")
  SERVER_URL="http://127.0.0.1:$port"
  wait_for_url "$SERVER_URL/health"
}

# Swagger UI in Debian's headless Chromium, against the binary serving a fresh SQLite file, in
# each AUTH_MODE (keys mode with SIGNUP=open, so that the page itself can get a first key).
check_swagger_ui_in_a_browser() {
  local mode=$1
  start_server "" AUTH_MODE="$mode" SIGNUP=open
  log "Swagger UI in headless Chromium ($("${CHROMIUM:-/usr/bin/chromium}" --version 2>/dev/null | awk '{print $2}')), $mode mode"
  AUTH_MODE="$mode" BASE_URL="$SERVER_URL" SCREENSHOT_DIR="${SCREENSHOT_DIR:-/tmp}" node tests/browser/swagger.mjs
}
check_swagger_ui_in_a_browser headers
check_swagger_ui_in_a_browser keys

# The served document through openapi-spec-validator, then schemathesis (all phases, all checks,
# tests/schemathesis/schemathesis.toml). In headers mode it calls with the headers of a real
# organization and user, without the `ignored_auth` check (a call without the headers is a 400
# by contract, not a 401) and without making up values for the security schemes (a made-up
# bearer key would win over the headers and be a 401); tests/api/tenancy.rs and identity.rs hold
# those behaviours. In keys mode it calls with an owner key from a sign-up, and every check
# runs: a call without the key must be a 401.
check_api_with_schemathesis() {
  local backend=$1 mode=$2 database_url=$3 tenant=() checks=()
  # The run's own failed authentications (ignored_auth) must not lock its good key out.
  # Runs it starts are worked, but never call out: made-up base URLs may name anything.
  start_server "$database_url" AUTH_MODE="$mode" ADMIN_TOKEN="$SCHEMATHESIS_ADMIN_TOKEN" SIGNUP=open \
    AUTH_FAILURES_PER_MINUTE=1000000 OUTBOUND_ALLOW_PRIVATE=false
  log "schemathesis $("$VENV/bin/python" -c 'import schemathesis; print(schemathesis.__version__)') on $backend, $mode mode"
  "$VENV/bin/python" -c 'import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1]).read())' \
    "$SERVER_URL/openapi.json" >"$SCHEMATHESIS_DIR/openapi.json"
  "$VENV/bin/openapi-spec-validator" "$SCHEMATHESIS_DIR/openapi.json"
  mapfile -t tenant < <(ADMIN_TOKEN="$SCHEMATHESIS_ADMIN_TOKEN" "$VENV/bin/python" tests/schemathesis/tenant.py "$SERVER_URL" "$mode")
  read -r SCHEMATHESIS_ORG_ID SCHEMATHESIS_USER_ID SCHEMATHESIS_KEY_ID <<<"${tenant[-1]}"
  export SCHEMATHESIS_ORG_ID SCHEMATHESIS_USER_ID SCHEMATHESIS_KEY_ID
  unset 'tenant[-1]'
  [ "$mode" = headers ] && checks=(--exclude-checks ignored_auth --generation-with-security-parameters false)
  "$VENV/bin/st" --config-file tests/schemathesis/schemathesis.toml run "$SERVER_URL/openapi.json" "${tenant[@]}" "${checks[@]}" \
    --no-color --output-truncate=false >"$SCHEMATHESIS_DIR/$backend-$mode.log" 2>&1 ||
    { cat "$SCHEMATHESIS_DIR/$backend-$mode.log"; log "schemathesis found failures on $backend, $mode mode"; exit 1; }
  grep -A1 -E '^ *(✅|❌|⏭) +(Examples|Coverage|Fuzzing|Stateful) ' "$SCHEMATHESIS_DIR/$backend-$mode.log" | grep -v '^--' >&2
  grep -E 'generated|=====' "$SCHEMATHESIS_DIR/$backend-$mode.log" | tail -n 2 >&2
}
SCHEMATHESIS_DIR=$(mktemp -d /tmp/tolstoy-schemathesis.XXXXXX)
CLEANUP+=("rm -rf '$SCHEMATHESIS_DIR'")
SCHEMATHESIS_ADMIN_TOKEN="schemathesis-admin-token-$(date +%s%N)"
check_api_with_schemathesis sqlite headers ""
check_api_with_schemathesis sqlite keys ""
if [ -n "${TEST_DATABASE_URL:-}" ]; then
  schemathesis_db="tolstoy_schemathesis_$$"
  psql -q -d "$TEST_DATABASE_URL" -c "CREATE DATABASE $schemathesis_db"
  CLEANUP+=("psql -q -d '$TEST_DATABASE_URL' -c 'DROP DATABASE IF EXISTS $schemathesis_db WITH (FORCE)'")
  check_api_with_schemathesis postgresql headers "$("$VENV/bin/python" -c 'import sys, urllib.parse as u; print(u.urlparse(sys.argv[1])._replace(path="/"+sys.argv[2]).geturl())' "$TEST_DATABASE_URL" "$schemathesis_db")"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  log "cargo-nextest not found; using cargo test (one run, plain shape)"
  cargo test --workspace --no-fail-fast "$@"
  exit
fi

listing=$(cargo nextest list --workspace --message-format oneline)
sqlite=$(grep -c '::sqlite$' <<<"$listing" || true)
postgres=$(grep -c '::postgres$' <<<"$listing" || true)
other=$(grep -vc -e '::sqlite$' -e '::postgres$' <<<"$listing" || true)
log "run 1 of 2: $sqlite tests on SQLite, $postgres on PostgreSQL (superuser, direct), $other independent of the backend"
cargo nextest run --workspace --no-fail-fast "$@"

if [ "${SKIP_POSTGRES:-}" = 1 ]; then
  log "run 2 of 2 skipped on purpose: SKIP_POSTGRES=1"
  exit
fi
log "run 2 of 2: the $postgres PostgreSQL tests in the production shape: DATABASE_URL = PgBouncer (transaction mode) as tolstoy_test_app with DB_STATEMENT_CACHE=false, DIRECT_URL = PostgreSQL as tolstoy_test_owner, DB_SCHEMA = tolstoy_service"
TEST_POSTGRES_SHAPE=production cargo nextest run --workspace --no-fail-fast --no-tests=warn -E 'test(/::postgres$/)' "$@"
