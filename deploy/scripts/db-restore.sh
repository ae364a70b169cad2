#!/usr/bin/env bash
# db-restore.sh — point-in-time restore of a PostgreSQL cluster from a barman-cloud
# catalog in S3 into a NEW, empty data directory, then promote it.
#
#   db-restore.sh --date 2023-10-27T10:00:00Z --source s3://backups-bucket/prefix \
#                 --server-name promotions-db --pgdata /var/lib/postgresql/restore
#
# Options (each may also come from the environment variable shown):
#   --date RFC3339         target time, with an offset: 2023-10-27T10:00:00Z, …+02:00,
#                          fractions allowed. Required.
#   --source s3://B[/P]    the barman-cloud source URL (bucket and prefix). Required.
#   --server-name NAME     barman server name under the prefix  [DB_RESTORE_SERVER_NAME]. Required.
#   --pgdata DIR           where to restore; must not exist or be empty  [PGDATA]. Required.
#   --endpoint-url URL     S3 endpoint (S3-compatible stores, tests)  [AWS_ENDPOINT_URL]
#   --port N               port of the restored server  [default 5432]
#   --socket-dir DIR       its Unix socket directory  [default /tmp]
#   --db-user NAME         role used to poll the restored server  [PGUSER, default postgres]
#   --pg-bin DIR           PostgreSQL server binaries  [PG_BIN; default: pg_ctl on PATH,
#                          else /usr/lib/postgresql/15/bin]
#   --timeout SECONDS      how long recovery may take  [default 3600]
#   --help
#
# What it does (see shared/design PITR notes for why each step is there):
#  1. Checks the input and the tools; normalises --date for PostgreSQL, which rejects a
#     trailing `Z` in recovery_target_time ("2023-10-27 10:00:00.000000+00" is used).
#  2. Lists the base backups (barman-cloud-backup-list) and picks the newest DONE backup whose
#     END time is before the target. A target before the first backup's end is refused:
#     barman-cloud would otherwise restore silently to a point *after* the target.
#  3. barman-cloud-restore of that backup into --pgdata.
#  4. Recovery settings appended to postgresql.auto.conf: recovery_target_time,
#     restore_command = barman-cloud-wal-restore …, recovery_target_action = promote,
#     recovery_target_timeline = latest, archive_mode = off (the restored copy must never
#     archive into the catalog it came from), port/socket, logging to stderr; plus
#     recovery.signal.
#  5. Starts PostgreSQL and waits until recovery has really ended: pg_is_in_recovery() is
#     false (pg_ctl -w returns as soon as read-only connections are accepted, before that),
#     the server is still up, the log has no FATAL/PANIC and says the target was reached.
#     Any other outcome exits non-zero with the reason and the end of the server log.
#
# On success the restored server is left running, promoted, with archiving OFF: turning
# archiving on again (to a new prefix, or once the old primary is gone) is a decision for a
# person. Must run as the database's OS user (PostgreSQL refuses root). The AWS credentials
# come from the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profile, role) and are
# inherited by the server for restore_command; this script never prints them.
set -euo pipefail

PROG=db-restore.sh
die() { echo "$PROG: error: $*" >&2; exit 1; }
say() { echo "$PROG: $*" >&2; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

DATE=''
SOURCE=''
SERVER_NAME="${DB_RESTORE_SERVER_NAME:-}"
PGDATA_DIR="${PGDATA:-}"
ENDPOINT_URL="${AWS_ENDPOINT_URL:-}"
PORT=5432
SOCKET_DIR=/tmp
DB_USER="${PGUSER:-postgres}"
PG_BIN_DIR="${PG_BIN:-}"
TIMEOUT=3600

need_value() { [ "$#" -ge 2 ] && [ -n "$2" ] || die "option $1 needs a value (see --help)"; }
while [ "$#" -gt 0 ]; do
    case "$1" in
        --help|-h) usage; exit 0 ;;
        --date) need_value "$@"; DATE="$2"; shift 2 ;;
        --source) need_value "$@"; SOURCE="$2"; shift 2 ;;
        --server-name) need_value "$@"; SERVER_NAME="$2"; shift 2 ;;
        --pgdata) need_value "$@"; PGDATA_DIR="$2"; shift 2 ;;
        --endpoint-url) need_value "$@"; ENDPOINT_URL="$2"; shift 2 ;;
        --port) need_value "$@"; PORT="$2"; shift 2 ;;
        --socket-dir) need_value "$@"; SOCKET_DIR="$2"; shift 2 ;;
        --db-user) need_value "$@"; DB_USER="$2"; shift 2 ;;
        --pg-bin) need_value "$@"; PG_BIN_DIR="$2"; shift 2 ;;
        --timeout) need_value "$@"; TIMEOUT="$2"; shift 2 ;;
        --date=*|--source=*|--server-name=*|--pgdata=*|--endpoint-url=*|--port=*|--socket-dir=*|--db-user=*|--pg-bin=*|--timeout=*)
            set -- "${1%%=*}" "${1#*=}" "${@:2}" ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

# ------------------------------------------------------------------ input
[ -n "$DATE" ] || die "--date is required, e.g. --date 2023-10-27T10:00:00Z"
[ -n "$SOURCE" ] || die "--source is required, e.g. --source s3://backups-bucket/prefix"
[ -n "$SERVER_NAME" ] || die "--server-name is required (or set DB_RESTORE_SERVER_NAME): the barman server name in the catalog"
[ -n "$PGDATA_DIR" ] || die "--pgdata is required (or set PGDATA): an empty or new directory to restore into"

RFC3339='^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:?[0-9]{2})$'
[[ "$DATE" =~ $RFC3339 ]] \
    || die "--date '$DATE' is not an RFC 3339 time with an offset (e.g. 2023-10-27T10:00:00Z or 2023-10-27T12:00:00+02:00)"
# GNU date validates the calendar (2023-02-30 is refused) and converts to UTC.
TARGET_NS=$(LC_ALL=C date -u -d "$DATE" +%s%N 2>/dev/null) || die "--date '$DATE' is not a valid date"
# PostgreSQL 15 rejects 'T…Z' in recovery_target_time: give it 'YYYY-MM-DD HH:MM:SS.ffffff+00'.
TARGET_PG=$(LC_ALL=C date -u -d "$DATE" '+%Y-%m-%d %H:%M:%S.%6N+00')
NOW_NS=$(date -u +%s%N)
[ "$TARGET_NS" -lt "$NOW_NS" ] \
    || die "--date $TARGET_PG is in the future (now $(date -u '+%Y-%m-%d %H:%M:%S+00')): recovery would end before reaching it"

[[ "$SOURCE" =~ ^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$ ]] \
    || die "--source '$SOURCE' is not an S3 URL like s3://bucket or s3://bucket/prefix"
SOURCE="${SOURCE%/}"
[[ "$SERVER_NAME" =~ ^[A-Za-z0-9._-]+$ ]] || die "--server-name '$SERVER_NAME' may only contain letters, digits, '.', '_' and '-'"
[[ "$PORT" =~ ^[0-9]+$ ]] && [ "$PORT" -ge 1 ] && [ "$PORT" -le 65535 ] || die "--port '$PORT' is not a TCP port"
[[ "$TIMEOUT" =~ ^[0-9]+$ ]] && [ "$TIMEOUT" -ge 1 ] || die "--timeout '$TIMEOUT' is not a positive number of seconds"
if [ -n "$ENDPOINT_URL" ]; then
    [[ "$ENDPOINT_URL" =~ ^https?://[^[:space:]\'\"]+$ ]] || die "--endpoint-url '$ENDPOINT_URL' is not an http(s) URL"
fi
[ -d "$SOCKET_DIR" ] || die "--socket-dir '$SOCKET_DIR' is not a directory"
[ "$(id -u)" != 0 ] || die "do not run as root: PostgreSQL refuses to; run as the database's OS user (e.g. runuser -u postgres -- $PROG …)"

case "$PGDATA_DIR" in /*) ;; *) PGDATA_DIR="$PWD/$PGDATA_DIR" ;; esac
if [ -e "$PGDATA_DIR" ]; then
    [ -d "$PGDATA_DIR" ] || die "--pgdata '$PGDATA_DIR' exists and is not a directory"
    [ -z "$(ls -A -- "$PGDATA_DIR")" ] \
        || die "--pgdata '$PGDATA_DIR' is not empty: restore into a new directory (nothing was changed)"
fi

# ------------------------------------------------------------------ tools
if [ -z "$PG_BIN_DIR" ]; then
    if command -v pg_ctl >/dev/null; then PG_BIN_DIR=$(dirname -- "$(command -v pg_ctl)")
    else PG_BIN_DIR=/usr/lib/postgresql/15/bin; fi
fi
for t in pg_ctl psql postgres; do
    [ -x "$PG_BIN_DIR/$t" ] || die "PostgreSQL tool '$t' not found in $PG_BIN_DIR (set --pg-bin)"
done
tool() { command -v "$1" 2>/dev/null || die "'$1' not found on PATH: install barman-cloud (pip install 'barman[cloud]' or apt-get install barman-cli-cloud)"; }
BC_LIST=$(tool barman-cloud-backup-list)
BC_RESTORE=$(tool barman-cloud-restore)
BC_WAL_RESTORE=$(tool barman-cloud-wal-restore)
PYTHON=$(command -v python3 2>/dev/null) || die "'python3' not found on PATH (needed to read barman-cloud's JSON)"

CLOUD_ARGS=(--cloud-provider aws-s3)
[ -z "$ENDPOINT_URL" ] || CLOUD_ARGS+=(--endpoint-url "$ENDPOINT_URL")

# ------------------------------------------------------------------ pick the base backup
say "target: $TARGET_PG (from --date $DATE)"
say "listing base backups in $SOURCE (server $SERVER_NAME)"
LIST_ERR=$(mktemp)
trap 'rm -f -- "$LIST_ERR"' EXIT
LIST_JSON=$("$BC_LIST" "${CLOUD_ARGS[@]}" --format json "$SOURCE" "$SERVER_NAME" 2>"$LIST_ERR") \
    || die "barman-cloud-backup-list failed: $(tail -n 5 "$LIST_ERR")"
# One line per backup: id, status, end time (ISO 8601 with offset, or '-').
BACKUPS=$(printf '%s' "$LIST_JSON" | "$PYTHON" -c '
import json, sys
for b in json.load(sys.stdin).get("backups_list", []):
    end = b.get("end_time_iso") or "-"
    print(b.get("backup_id", "?"), b.get("status", "?"), end)
') || die "could not read barman-cloud-backup-list output (barman-cloud >= 3.6 with end_time_iso is needed)"

BEST_ID=''
BEST_END_NS=0
BEST_END=''
FIRST_END_NS=''
FIRST_END=''
FIRST_ID=''
while read -r id status end; do
    [ -n "$id" ] || continue
    [ "$status" = DONE ] || { say "skipping backup $id (status $status)"; continue; }
    [ "$end" != - ] || die "backup $id has no end_time_iso: barman-cloud >= 3.6 is needed"
    end_ns=$(LC_ALL=C date -u -d "$end" +%s%N 2>/dev/null) || die "backup $id: unreadable end time '$end'"
    if [ -z "$FIRST_END_NS" ] || [ "$end_ns" -lt "$FIRST_END_NS" ]; then
        FIRST_END_NS=$end_ns; FIRST_END=$end; FIRST_ID=$id
    fi
    if [ "$end_ns" -lt "$TARGET_NS" ] && [ "$end_ns" -gt "$BEST_END_NS" ]; then
        BEST_END_NS=$end_ns; BEST_END=$end; BEST_ID=$id
    fi
done <<<"$BACKUPS"

[ -n "$FIRST_ID" ] || die "no completed base backup found in $SOURCE for server $SERVER_NAME"
[ -n "$BEST_ID" ] \
    || die "refusing: target $TARGET_PG is before the end of the first base backup ($FIRST_ID ended $FIRST_END); the earliest restorable time is just after $FIRST_END"
say "using base backup $BEST_ID (ended $BEST_END)"

# ------------------------------------------------------------------ restore the base backup
if [ ! -e "$PGDATA_DIR" ]; then mkdir -p -- "$PGDATA_DIR"; fi
chmod 0700 -- "$PGDATA_DIR"
"$BC_RESTORE" "${CLOUD_ARGS[@]}" "$SOURCE" "$SERVER_NAME" "$BEST_ID" "$PGDATA_DIR" \
    || die "barman-cloud-restore of $BEST_ID into $PGDATA_DIR failed"
[ -f "$PGDATA_DIR/PG_VERSION" ] || die "barman-cloud-restore left no PG_VERSION in $PGDATA_DIR"
mkdir -p -- "$PGDATA_DIR/pg_wal"
chmod 0700 -- "$PGDATA_DIR"
rm -f -- "$PGDATA_DIR/postmaster.pid" "$PGDATA_DIR/postmaster.opts"

# ------------------------------------------------------------------ recovery settings
# restore_command is run by /bin/sh: quote each word for sh, then for the conf file.
shq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
confq() { printf "'%s'" "${1//\'/\'\'}"; }
RESTORE_CMD="$(shq "$BC_WAL_RESTORE")"
for a in "${CLOUD_ARGS[@]}" "$SOURCE" "$SERVER_NAME"; do RESTORE_CMD+=" $(shq "$a")"; done
RESTORE_CMD+=' %f %p'

LOG="$PGDATA_DIR/db-restore-postgres.log"
{
    echo
    echo "# ---- written by $PROG on $(date -u '+%Y-%m-%d %H:%M:%S+00'): point-in-time restore of"
    echo "# ---- backup $BEST_ID from $SOURCE ($SERVER_NAME) to $TARGET_PG"
    echo "restore_command = $(confq "$RESTORE_CMD")"
    echo "recovery_target_time = $(confq "$TARGET_PG")"
    echo "recovery_target_action = 'promote'"
    echo "recovery_target_timeline = 'latest'"
    echo "# the restored copy must never archive into the catalog it was restored from"
    echo "archive_mode = 'off'"
    echo "port = $PORT"
    echo "unix_socket_directories = $(confq "$SOCKET_DIR")"
    echo "logging_collector = 'off'"
    echo "log_destination = 'stderr'"
} >>"$PGDATA_DIR/postgresql.auto.conf"
: >"$PGDATA_DIR/recovery.signal"

# ------------------------------------------------------------------ start and wait
PSQL=("$PG_BIN_DIR/psql" -X -A -t -q -h "$SOCKET_DIR" -p "$PORT" -U "$DB_USER" -d postgres)
server_up() { "$PG_BIN_DIR/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; }
stop_server() { "$PG_BIN_DIR/pg_ctl" -D "$PGDATA_DIR" -m fast -w -t 60 stop >/dev/null 2>&1 || true; }
# FATAL/PANIC lines, except the ones a client gets while the server is still starting.
bad_log_lines() {
    grep -E '(FATAL|PANIC):' "$LOG" 2>/dev/null \
        | grep -vE 'the database system is (starting up|not yet accepting connections|not accepting connections|shutting down)' \
        || true
}
fail() {
    echo "$PROG: error: $*" >&2
    echo "---- last lines of the server log ($LOG):" >&2
    tail -n 25 "$LOG" >&2 2>/dev/null || true
    exit 1
}
STARTED=0
on_signal() { [ "$STARTED" = 0 ] || stop_server; die "interrupted; the restored server was stopped"; }
trap on_signal INT TERM

say "starting PostgreSQL on port $PORT (log: $LOG)"
STARTED=1
"$PG_BIN_DIR/pg_ctl" -D "$PGDATA_DIR" -l "$LOG" -w -t "$TIMEOUT" start >/dev/null \
    || fail "PostgreSQL did not start (or stopped during recovery)"

deadline=$(( $(date +%s) + TIMEOUT ))
while :; do
    bad=$(bad_log_lines)
    if [ -n "$bad" ]; then
        stop_server
        fail "recovery failed: $(printf '%s\n' "$bad" | head -n 3)"
    fi
    if ! server_up; then
        fail "PostgreSQL stopped during recovery"
    fi
    state=$("${PSQL[@]}" -c 'select pg_is_in_recovery()' 2>/dev/null || true)
    [ "$state" = f ] && break
    if [ "$(date +%s)" -ge "$deadline" ]; then
        stop_server
        fail "recovery did not end within $TIMEOUT s (the server was stopped)"
    fi
    sleep 0.5
done

# Promoted: was it because the target was reached (and not some other end of recovery)?
stop_line=$(grep -E 'recovery stopping (before|after) ' "$LOG" | tail -n 1 || true)
if [ -z "$stop_line" ]; then
    stop_server
    fail "PostgreSQL left recovery but its log does not say it stopped at the target $TARGET_PG (the server was stopped)"
fi
bad=$(bad_log_lines)
[ -z "$bad" ] || { stop_server; fail "recovery logged errors: $(printf '%s\n' "$bad" | head -n 3)"; }

say "recovery reached the target: ${stop_line#*LOG:  }"
say "done: $PGDATA_DIR restored from backup $BEST_ID to $TARGET_PG and promoted; PostgreSQL is running on port $PORT (archive_mode is off)"
