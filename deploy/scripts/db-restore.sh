#!/usr/bin/env bash
# db-restore.sh — point-in-time restore of a PostgreSQL cluster from a barman-cloud
# catalog in S3, then promote it. Three ways to run it:
#
#   new directory (side by side): restore into a NEW, empty --pgdata on its own --port
#     db-restore.sh --date 2023-10-27T10:00:00Z --source s3://backups-bucket/prefix \
#                   --server-name promotions-db --pgdata /var/lib/postgresql/restore-R-12 --port 5433
#   in place: stop the server of --pgdata, keep its data directory aside (renamed, nothing is
#     deleted), restore into --pgdata and start it on its own address (--port, --socket-dir)
#     db-restore.sh --in-place --keep-aside /var/lib/postgresql/15/main.before-R-12 \
#                   --pgdata /var/lib/postgresql/15/main --port 5432 --date … --source … --server-name …
#   rehearsal: restore into a scratch --pgdata on a private socket (no TCP), print the row
#     counts of the --count tables on stdout ("rows TABLE N"), stop it and remove the scratch
#     directory — nothing else is touched
#     db-restore.sh --rehearse --count items --count sales.orders --pgdata /var/tmp/rehearsal-R-12 …
#
# Options (each may also come from the environment variable shown):
#   --date RFC3339|latest  target time, with an offset: 2023-10-27T10:00:00Z, …+02:00,
#                          fractions allowed; `latest`: the end of the archive (no recovery
#                          target, every archived WAL is replayed). Required.
#   --source s3://B[/P]    the barman-cloud source URL (bucket and prefix). Required.
#   --server-name NAME     barman server name under the prefix  [DB_RESTORE_SERVER_NAME]. Required.
#   --pgdata DIR           where to restore  [PGDATA]. Required. New directory and rehearsal:
#                          must not exist or be empty. In place: the server's data directory.
#   --in-place             restore in place (see above); needs --keep-aside
#   --keep-aside DIR       in place: where the old data directory is moved (must not exist,
#                          same file system as --pgdata)
#   --rehearse             rehearsal (see above)
#   --count TABLE          rehearsal: a table (or schema.table) to count; repeatable
#   --count-db NAME        rehearsal: the database holding those tables  [default postgres]
#   --check                check everything the restore needs and change nothing: tools and
#                          their versions, PostgreSQL binaries, the archive (a base backup
#                          for --date), the target directory, the port
#   --endpoint-url URL     S3 endpoint (S3-compatible stores, tests)  [AWS_ENDPOINT_URL]
#   --port N               port of the restored server  [default 5432]
#   --socket-dir DIR       its Unix socket directory  [default /tmp]
#   --db-user NAME         role used to poll the restored server  [PGUSER, default postgres]
#   --pg-bin DIR           PostgreSQL server binaries  [PG_BIN; default: the first directory
#                          holding pg_ctl, postgres and psql of the backup's major version
#                          among `pg_config --bindir`, /usr/lib/postgresql/N/bin (Debian),
#                          and the directory of pg_ctl on PATH (symbolic links followed)]
#   --timeout SECONDS      how long recovery may take  [default 3600]
#   --help
#
# Needs barman-cloud >= 3.6 (pip install 'barman[cloud]>=3.6'; Debian 12's barman-cli-cloud
# is 3.4, too old: its backup list has no end_time_iso) and python3.
#
# What it does (see shared/design PITR notes for why each step is there):
#  1. Checks the input and the tools; normalises --date for PostgreSQL, which rejects a
#     trailing `Z` in recovery_target_time ("2023-10-27 10:00:00.000000+00" is used).
#  2. Lists the base backups (barman-cloud-backup-list) and picks the newest DONE backup whose
#     END time is before the target. A target before the first backup's end is refused:
#     barman-cloud would otherwise restore silently to a point *after* the target.
#  3. In place only: stops the server and moves its data directory to --keep-aside.
#  4. barman-cloud-restore of that backup into --pgdata.
#  5. Recovery settings appended to postgresql.auto.conf: recovery_target_time (none for
#     latest), restore_command = barman-cloud-wal-restore …, recovery_target_action = promote,
#     recovery_target_timeline = latest, archive_mode = off (the restored copy must never
#     archive into the catalog it came from), port/socket, logging to stderr; plus
#     recovery.signal.
#  6. Starts PostgreSQL and waits until recovery has really ended: pg_is_in_recovery() is
#     false (pg_ctl -w returns as soon as read-only connections are accepted, before that),
#     the server is still up, the log has no FATAL/PANIC and says the target was reached.
#     Any other outcome exits non-zero with the reason and the end of the server log. In
#     place, a failure puts the old data directory back and starts the old server again
#     (the failed restore is kept beside it), and the message says so.
#
# On success the restored server is left running, promoted, with archiving OFF: turning
# archiving on again is a decision for a person. Must run as the database's OS user
# (PostgreSQL refuses root). The AWS credentials come from the environment
# (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profile, role) and are inherited by the server
# for restore_command; this script never prints them.
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
MODE=new
KEEP_ASIDE=''
CHECK=0
COUNTS=()
COUNT_DB=postgres
BARMAN_MIN=3.6

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
        --keep-aside) need_value "$@"; KEEP_ASIDE="$2"; shift 2 ;;
        --count) need_value "$@"; COUNTS+=("$2"); shift 2 ;;
        --count-db) need_value "$@"; COUNT_DB="$2"; shift 2 ;;
        --in-place) MODE=in-place; shift ;;
        --rehearse) MODE=rehearse; shift ;;
        --check) CHECK=1; shift ;;
        --date=*|--source=*|--server-name=*|--pgdata=*|--endpoint-url=*|--port=*|--socket-dir=*|--db-user=*|--pg-bin=*|--timeout=*|--keep-aside=*|--count=*|--count-db=*)
            set -- "${1%%=*}" "${1#*=}" "${@:2}" ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

# ------------------------------------------------------------------ input
[ -n "$DATE" ] || die "--date is required, e.g. --date 2023-10-27T10:00:00Z (or --date latest)"
[ -n "$SOURCE" ] || die "--source is required, e.g. --source s3://backups-bucket/prefix"
[ -n "$SERVER_NAME" ] || die "--server-name is required (or set DB_RESTORE_SERVER_NAME): the barman server name in the catalog"
[ -n "$PGDATA_DIR" ] || die "--pgdata is required (or set PGDATA): where to restore"

LATEST=0
if [ "$DATE" = latest ]; then
    LATEST=1
    TARGET_PG=''
    TARGET_NS=$(date -u +%s%N)
else
    RFC3339='^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:?[0-9]{2})$'
    [[ "$DATE" =~ $RFC3339 ]] \
        || die "--date '$DATE' is not an RFC 3339 time with an offset (e.g. 2023-10-27T10:00:00Z or 2023-10-27T12:00:00+02:00) nor 'latest'"
    # GNU date validates the calendar (2023-02-30 is refused) and converts to UTC.
    TARGET_NS=$(LC_ALL=C date -u -d "$DATE" +%s%N 2>/dev/null) || die "--date '$DATE' is not a valid date"
    # PostgreSQL 15 rejects 'T…Z' in recovery_target_time: give it 'YYYY-MM-DD HH:MM:SS.ffffff+00'.
    TARGET_PG=$(LC_ALL=C date -u -d "$DATE" '+%Y-%m-%d %H:%M:%S.%6N+00')
    NOW_NS=$(date -u +%s%N)
    [ "$TARGET_NS" -lt "$NOW_NS" ] \
        || die "--date $TARGET_PG is in the future (now $(date -u '+%Y-%m-%d %H:%M:%S+00')): recovery would end before reaching it; use --date latest for the newest archived point"
fi
TARGET_TEXT=${TARGET_PG:-"the end of the archive (latest)"}

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
IDENT='[A-Za-z_][A-Za-z0-9_]{0,62}'
for t in "${COUNTS[@]}"; do
    [[ "$t" =~ ^$IDENT(\.$IDENT)?$ ]] || die "--count '$t' is not a table name (table or schema.table)"
done
[[ "$COUNT_DB" =~ ^$IDENT$ ]] || die "--count-db '$COUNT_DB' is not a database name"
[ "${#COUNTS[@]}" = 0 ] || [ "$MODE" = rehearse ] || die "--count is for --rehearse only"

abs() { case "$1" in /*) printf '%s' "${1%/}" ;; *) printf '%s' "$PWD/${1%/}" ;; esac; }
PGDATA_DIR=$(abs "$PGDATA_DIR")
if [ "$MODE" = in-place ]; then
    [ -n "$KEEP_ASIDE" ] || die "--in-place needs --keep-aside DIR: where the old data directory is kept (nothing is deleted)"
    KEEP_ASIDE=$(abs "$KEEP_ASIDE")
    [ "$KEEP_ASIDE" != "$PGDATA_DIR" ] || die "--keep-aside must differ from --pgdata"
else
    [ -z "$KEEP_ASIDE" ] || die "--keep-aside is for --in-place only"
fi

# ------------------------------------------------------------------ tools
tool() {
    command -v "$1" 2>/dev/null \
        || die "'$1' not found on PATH: install barman-cloud >= $BARMAN_MIN (pip install 'barman[cloud]>=$BARMAN_MIN'; Debian 12's barman-cli-cloud is 3.4, too old)"
}
BC_LIST=$(tool barman-cloud-backup-list)
BC_RESTORE=$(tool barman-cloud-restore)
BC_WAL_RESTORE=$(tool barman-cloud-wal-restore)
PYTHON=$(command -v python3 2>/dev/null) || die "'python3' not found on PATH (needed to read barman-cloud's JSON)"
BARMAN_VERSION=$("$BC_LIST" --version 2>&1 | sed -nE 's/^[^0-9]*([0-9]+(\.[0-9]+)+).*/\1/p' | head -n 1)
[ -n "$BARMAN_VERSION" ] || die "could not read the version of $BC_LIST (barman-cloud >= $BARMAN_MIN is needed)"
if [ "$(printf '%s\n%s\n' "$BARMAN_MIN" "$BARMAN_VERSION" | sort -V | head -n 1)" != "$BARMAN_MIN" ]; then
    die "barman-cloud $BARMAN_VERSION ($BC_LIST) is too old: >= $BARMAN_MIN is needed; install it with pip install 'barman[cloud]>=$BARMAN_MIN' (Debian 12's barman-cli-cloud is 3.4)"
fi

CLOUD_ARGS=(--cloud-provider aws-s3)
[ -z "$ENDPOINT_URL" ] || CLOUD_ARGS+=(--endpoint-url "$ENDPOINT_URL")

# ------------------------------------------------------------------ pick the base backup
say "target: $TARGET_TEXT (from --date $DATE)"
say "listing base backups in $SOURCE (server $SERVER_NAME) with barman-cloud $BARMAN_VERSION"
LIST_ERR=$(mktemp)
CLEANUP=("$LIST_ERR")
cleanup() { rm -f -- "${CLEANUP[@]}"; }
trap cleanup EXIT
LIST_JSON=$("$BC_LIST" "${CLOUD_ARGS[@]}" --format json "$SOURCE" "$SERVER_NAME" 2>"$LIST_ERR") \
    || die "the archive is not readable: barman-cloud-backup-list failed: $(tail -n 5 "$LIST_ERR")"
# One line per backup: id, status, end time (ISO 8601 with offset, or '-'), server version.
BACKUPS=$(printf '%s' "$LIST_JSON" | "$PYTHON" -c '
import json, sys
for b in json.load(sys.stdin).get("backups_list", []):
    end = b.get("end_time_iso") or "-"
    print(b.get("backup_id", "?"), b.get("status", "?"), end, b.get("version") or "-")
') || die "could not read barman-cloud-backup-list output (barman-cloud >= $BARMAN_MIN with end_time_iso is needed)"

BEST_ID=''
BEST_END_NS=0
BEST_END=''
BEST_VERSION=''
FIRST_END_NS=''
FIRST_END=''
FIRST_ID=''
while read -r id status end version; do
    [ -n "$id" ] || continue
    [ "$status" = DONE ] || { say "skipping backup $id (status $status)"; continue; }
    [ "$end" != - ] || die "backup $id has no end_time_iso: barman-cloud >= $BARMAN_MIN is needed"
    end_ns=$(LC_ALL=C date -u -d "$end" +%s%N 2>/dev/null) || die "backup $id: unreadable end time '$end'"
    if [ -z "$FIRST_END_NS" ] || [ "$end_ns" -lt "$FIRST_END_NS" ]; then
        FIRST_END_NS=$end_ns; FIRST_END=$end; FIRST_ID=$id
    fi
    if [ "$end_ns" -lt "$TARGET_NS" ] && [ "$end_ns" -gt "$BEST_END_NS" ]; then
        BEST_END_NS=$end_ns; BEST_END=$end; BEST_ID=$id; BEST_VERSION=$version
    fi
done <<<"$BACKUPS"

[ -n "$FIRST_ID" ] || die "no completed base backup found in $SOURCE for server $SERVER_NAME"
[ -n "$BEST_ID" ] \
    || die "refusing: target $TARGET_PG is before the end of the first base backup ($FIRST_ID ended $FIRST_END); the earliest restorable time is just after $FIRST_END"
say "using base backup $BEST_ID (ended $BEST_END)"
# server_version_num 150018 -> 15
WANT_MAJOR=''
[[ "$BEST_VERSION" =~ ^[0-9]+$ ]] && [ "$BEST_VERSION" -ge 100000 ] && WANT_MAJOR=$((BEST_VERSION / 10000))

# ------------------------------------------------------------------ PostgreSQL binaries
pg_major() { "$1/postgres" --version 2>/dev/null | sed -nE 's/^[^)]*\) ([0-9]+).*/\1/p'; }
has_pg_tools() { [ -n "$1" ] && [ -x "$1/pg_ctl" ] && [ -x "$1/postgres" ] && [ -x "$1/psql" ]; }
TRIED=()
if [ -n "$PG_BIN_DIR" ]; then
    has_pg_tools "$PG_BIN_DIR" || die "--pg-bin $PG_BIN_DIR does not hold pg_ctl, postgres and psql"
else
    CANDIDATES=()
    if command -v pg_config >/dev/null 2>&1; then CANDIDATES+=("$(pg_config --bindir 2>/dev/null || true)"); fi
    [ -z "$WANT_MAJOR" ] || CANDIDATES+=("/usr/lib/postgresql/$WANT_MAJOR/bin")
    while IFS= read -r d; do CANDIDATES+=("$d"); done < <(compgen -G '/usr/lib/postgresql/*/bin' | sort -rV)
    if p=$(command -v pg_ctl 2>/dev/null); then
        CANDIDATES+=("$(dirname -- "$p")" "$(dirname -- "$(readlink -f -- "$p")")")
    fi
    for d in "${CANDIDATES[@]}"; do
        [ -n "$d" ] || continue
        TRIED+=("$d")
        has_pg_tools "$d" || continue
        [ -z "$WANT_MAJOR" ] || [ "$(pg_major "$d")" = "$WANT_MAJOR" ] || continue
        PG_BIN_DIR=$d
        break
    done
    [ -n "$PG_BIN_DIR" ] \
        || die "PostgreSQL ${WANT_MAJOR:+$WANT_MAJOR }server binaries (pg_ctl, postgres, psql) not found in any of: ${TRIED[*]:-(none)}; install them (apt-get install postgresql-${WANT_MAJOR:-15}) or name their directory with --pg-bin DIR"
fi
PG_MAJOR=$(pg_major "$PG_BIN_DIR")
[ -n "$PG_MAJOR" ] || die "$PG_BIN_DIR/postgres --version did not answer"
[ -z "$WANT_MAJOR" ] || [ "$PG_MAJOR" = "$WANT_MAJOR" ] \
    || die "backup $BEST_ID is of PostgreSQL $WANT_MAJOR but $PG_BIN_DIR holds PostgreSQL $PG_MAJOR: name the right binaries with --pg-bin"
say "PostgreSQL $PG_MAJOR binaries: $PG_BIN_DIR"
PG_CTL="$PG_BIN_DIR/pg_ctl"

# ------------------------------------------------------------------ the target
parent_writable() {
    local parent
    parent=$(dirname -- "$1")
    [ -d "$parent" ] && [ -w "$parent" ] || die "$2: its directory $parent does not exist or is not writable by $(id -un)"
}
case "$MODE" in
    in-place)
        [ -f "$PGDATA_DIR/PG_VERSION" ] || die "--pgdata '$PGDATA_DIR' is not a PostgreSQL data directory (no PG_VERSION): in place, it is the server's data directory"
        [ "$(cat "$PGDATA_DIR/PG_VERSION")" = "$PG_MAJOR" ] \
            || die "the server in $PGDATA_DIR is PostgreSQL $(cat "$PGDATA_DIR/PG_VERSION"), the restore would be $PG_MAJOR"
        [ -O "$PGDATA_DIR" ] \
            || die "$PGDATA_DIR belongs to $(stat -c %U "$PGDATA_DIR"), not to $(id -un): run the restore as the server's OS user (e.g. runuser -u $(stat -c %U "$PGDATA_DIR") -- $PROG …)"
        [ ! -e "$KEEP_ASIDE" ] || die "--keep-aside '$KEEP_ASIDE' already exists: nothing is ever overwritten; choose another name"
        parent_writable "$PGDATA_DIR" "in place, the data directory is renamed to $KEEP_ASIDE"
        [ "$(stat -c %d "$(dirname -- "$PGDATA_DIR")")" = "$(stat -c %d "$(dirname -- "$KEEP_ASIDE")")" ] \
            || die "--keep-aside '$KEEP_ASIDE' is on another file system than $PGDATA_DIR (the data directory is renamed, not copied)"
        ;;
    *)
        if [ -e "$PGDATA_DIR" ]; then
            [ -d "$PGDATA_DIR" ] || die "--pgdata '$PGDATA_DIR' exists and is not a directory"
            [ -z "$(ls -A -- "$PGDATA_DIR")" ] \
                || die "--pgdata '$PGDATA_DIR' is not empty: restore into a new directory (nothing was changed)"
        else
            parent_writable "$PGDATA_DIR" "--pgdata $PGDATA_DIR is created"
        fi
        if [ "$MODE" = new ] && [ -e "$SOCKET_DIR/.s.PGSQL.$PORT" ]; then
            die "a server already listens on port $PORT (socket $SOCKET_DIR/.s.PGSQL.$PORT): give the restored server its own --port"
        fi
        ;;
esac
[ "$MODE" = rehearse ] || [ -w "$SOCKET_DIR" ] || die "--socket-dir '$SOCKET_DIR' is not writable by $(id -un)"

if [ "$CHECK" = 1 ]; then
    if [ "$MODE" = in-place ]; then
        if "$PG_CTL" -D "$PGDATA_DIR" status >/dev/null 2>&1; then say "the server of $PGDATA_DIR is running: the restore stops it first"
        else say "the server of $PGDATA_DIR is not running"; fi
    fi
    say "check passed: barman-cloud $BARMAN_VERSION, python3, PostgreSQL $PG_MAJOR in $PG_BIN_DIR, archive readable (base backup $BEST_ID for $TARGET_TEXT), $MODE target $PGDATA_DIR ready${KEEP_ASIDE:+, old data directory to be kept as $KEEP_ASIDE}; nothing was changed"
    exit 0
fi

# ------------------------------------------------------------------ what a failure undoes
STARTED=0
CREATED_PGDATA=0
MOVED_ASIDE=0
WAS_RUNNING=0
LOG="$PGDATA_DIR/db-restore-postgres.log"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
stop_server() { "$PG_CTL" -D "$PGDATA_DIR" -m fast -w -t 60 stop >/dev/null 2>&1 || true; }

# In place: the failed restore is moved beside the old data, the old data directory goes back
# and, if it was running, the old server is started again. Prints what the service is left on.
undo_in_place() {
    local failed="$PGDATA_DIR.failed-restore-$STAMP" old_log="$PGDATA_DIR.db-restore-$STAMP.log"
    if [ -e "$PGDATA_DIR" ] && ! mv -- "$PGDATA_DIR" "$failed"; then
        echo "the failed restore could not be moved out of $PGDATA_DIR; the old data directory is still kept in $KEEP_ASIDE: move it back by hand"
        return
    fi
    if ! mv -- "$KEEP_ASIDE" "$PGDATA_DIR"; then
        echo "the old data directory could not be moved back from $KEEP_ASIDE to $PGDATA_DIR: do it by hand"
        return
    fi
    if [ "$WAS_RUNNING" = 1 ]; then
        if "$PG_CTL" -D "$PGDATA_DIR" -l "$old_log" -w -t 300 start >/dev/null 2>&1; then
            echo "the service is left on its old data: $PGDATA_DIR is back in place and its server is running again (log $old_log); the failed restore is kept in $failed"
        else
            echo "the old data directory is back in $PGDATA_DIR but its server did NOT start (see $old_log); the failed restore is kept in $failed"
        fi
    else
        echo "the service is left on its old data: $PGDATA_DIR is back in place (its server was not running before and was not started); the failed restore is kept in $failed"
    fi
}

# Undoes what this run changed; the text says what the service is left on.
undo() {
    if [ "$STARTED" = 1 ]; then stop_server; fi
    case "$MODE" in
        in-place) if [ "$MOVED_ASIDE" = 1 ]; then undo_in_place; else echo "nothing was changed"; fi ;;
        rehearse) echo "the rehearsal changed nothing" ;;
        *) if [ "$CREATED_PGDATA" = 1 ]; then echo "the restored server was stopped; the failed restore is left in $PGDATA_DIR"; else echo "nothing was changed"; fi ;;
    esac
}
fail() {
    local why=$1 left tail_log=''
    [ ! -f "$LOG" ] || tail_log=$(tail -n 25 "$LOG" 2>/dev/null || true)
    left=$(undo)
    # The log first: the last lines are what runbot shows of a failure.
    if [ -n "$tail_log" ]; then
        echo "---- last lines of the restored server's log ($LOG):" >&2
        printf '%s\n' "$tail_log" >&2
        echo "---- end of the server log" >&2
    fi
    echo "$PROG: error: $why; $left" >&2
    exit 1
}
on_signal() { fail "interrupted"; }
trap on_signal INT TERM

# ------------------------------------------------------------------ rehearsal: private and scratch
if [ "$MODE" = rehearse ]; then
    REHEARSAL_SOCKETS=$(mktemp -d "${TMPDIR:-/tmp}/db-rehearse.XXXXXX")
    SOCKET_DIR=$REHEARSAL_SOCKETS
    # Whatever happens, the scratch copy goes (only what this run created).
    cleanup() {
        rm -f -- "${CLEANUP[@]}"
        [ "$STARTED" = 0 ] || "$PG_CTL" -D "$PGDATA_DIR" -m immediate -w -t 60 stop >/dev/null 2>&1 || true
        [ "$CREATED_PGDATA" = 0 ] || rm -rf -- "$PGDATA_DIR"
        rm -rf -- "$REHEARSAL_SOCKETS"
    }
fi
REHEARSAL_STARTED=$(date +%s)

# ------------------------------------------------------------------ in place: stop, keep aside
if [ "$MODE" = in-place ]; then
    if "$PG_CTL" -D "$PGDATA_DIR" status >/dev/null 2>&1; then
        WAS_RUNNING=1
        say "stopping the server of $PGDATA_DIR"
        "$PG_CTL" -D "$PGDATA_DIR" -m fast -w -t 300 stop >/dev/null \
            || die "the server of $PGDATA_DIR did not stop; nothing was changed"
    fi
    mv -- "$PGDATA_DIR" "$KEEP_ASIDE" || die "could not move $PGDATA_DIR to $KEEP_ASIDE; nothing was changed"
    MOVED_ASIDE=1
    say "old data directory kept aside as $KEEP_ASIDE"
fi

# ------------------------------------------------------------------ restore the base backup
if [ ! -e "$PGDATA_DIR" ]; then mkdir -p -- "$PGDATA_DIR" || fail "could not create $PGDATA_DIR"; fi
CREATED_PGDATA=1
chmod 0700 -- "$PGDATA_DIR"
"$BC_RESTORE" "${CLOUD_ARGS[@]}" "$SOURCE" "$SERVER_NAME" "$BEST_ID" "$PGDATA_DIR" \
    || fail "barman-cloud-restore of $BEST_ID into $PGDATA_DIR failed"
[ -f "$PGDATA_DIR/PG_VERSION" ] || fail "barman-cloud-restore left no PG_VERSION in $PGDATA_DIR"
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

{
    echo
    echo "# ---- written by $PROG on $(date -u '+%Y-%m-%d %H:%M:%S+00'): point-in-time restore of"
    echo "# ---- backup $BEST_ID from $SOURCE ($SERVER_NAME) to $TARGET_TEXT"
    echo "restore_command = $(confq "$RESTORE_CMD")"
    [ "$LATEST" = 1 ] || echo "recovery_target_time = $(confq "$TARGET_PG")"
    echo "recovery_target_action = 'promote'"
    echo "recovery_target_timeline = 'latest'"
    echo "# the restored copy must never archive into the catalog it was restored from"
    echo "archive_mode = 'off'"
    echo "port = $PORT"
    echo "unix_socket_directories = $(confq "$SOCKET_DIR")"
    [ "$MODE" != rehearse ] || echo "listen_addresses = ''"
    echo "logging_collector = 'off'"
    echo "log_destination = 'stderr'"
} >>"$PGDATA_DIR/postgresql.auto.conf"
: >"$PGDATA_DIR/recovery.signal"

# ------------------------------------------------------------------ start and wait
PSQL=("$PG_BIN_DIR/psql" -X -A -t -q -h "$SOCKET_DIR" -p "$PORT" -U "$DB_USER" -d postgres)
server_up() { "$PG_CTL" -D "$PGDATA_DIR" status >/dev/null 2>&1; }
# FATAL/PANIC lines, except the ones a client gets while the server is still starting.
bad_log_lines() {
    grep -E '(FATAL|PANIC):' "$LOG" 2>/dev/null \
        | grep -vE 'the database system is (starting up|not yet accepting connections|not accepting connections|shutting down)' \
        || true
}

say "starting PostgreSQL on port $PORT (log: $LOG)"
STARTED=1
"$PG_CTL" -D "$PGDATA_DIR" -l "$LOG" -w -t "$TIMEOUT" start >/dev/null \
    || fail "PostgreSQL did not start (or stopped during recovery)"

deadline=$(( $(date +%s) + TIMEOUT ))
while :; do
    bad=$(bad_log_lines)
    [ -z "$bad" ] || fail "recovery failed: $(printf '%s\n' "$bad" | head -n 3)"
    server_up || fail "PostgreSQL stopped during recovery"
    state=$("${PSQL[@]}" -c 'select pg_is_in_recovery()' 2>/dev/null || true)
    [ "$state" = f ] && break
    [ "$(date +%s)" -lt "$deadline" ] || fail "recovery did not end within $TIMEOUT s"
    sleep 0.5
done

# Promoted: was it because the target was reached (and not some other end of recovery)?
if [ "$LATEST" = 1 ]; then
    stop_line=$(grep -E 'archive recovery complete' "$LOG" | tail -n 1 || true)
    [ -n "$stop_line" ] || fail "PostgreSQL left recovery but its log does not say archive recovery completed"
else
    stop_line=$(grep -E 'recovery stopping (before|after) ' "$LOG" | tail -n 1 || true)
    [ -n "$stop_line" ] || fail "PostgreSQL left recovery but its log does not say it stopped at the target $TARGET_PG"
fi
bad=$(bad_log_lines)
[ -z "$bad" ] || fail "recovery logged errors: $(printf '%s\n' "$bad" | head -n 3)"
REACHED=$(sed -nE 's/.*last completed transaction was at log time (.*)$/\1/p' "$LOG" | tail -n 1)

say "recovery reached the target: ${stop_line#*LOG:  }"

if [ "$MODE" = rehearse ]; then
    COUNT_PSQL=("$PG_BIN_DIR/psql" -X -A -t -q -v ON_ERROR_STOP=1 -h "$SOCKET_DIR" -p "$PORT" -U "$DB_USER" -d "$COUNT_DB")
    for t in "${COUNTS[@]}"; do
        q="\"${t//./\".\"}\""
        exists=$("${COUNT_PSQL[@]}" -c "select to_regclass('$q') is not null" 2>&1) || fail "cannot read database $COUNT_DB of the rehearsal: $exists"
        if [ "$exists" = t ]; then
            n=$("${COUNT_PSQL[@]}" -c "select count(*) from $q" 2>&1) || fail "counting $t failed: $n"
            echo "rows $t $n"
            say "at the target: $t has $n rows"
        else
            echo "rows $t missing"
            say "at the target: $t does not exist"
        fi
    done
    [ -z "$REACHED" ] || echo "reached $REACHED"
    SIZE=$(du -sb -- "$PGDATA_DIR" | cut -f1)
    "$PG_CTL" -D "$PGDATA_DIR" -m fast -w -t 60 stop >/dev/null 2>&1 || true
    STARTED=0
    rm -rf -- "$PGDATA_DIR"
    CREATED_PGDATA=0
    TOOK=$(( $(date +%s) - REHEARSAL_STARTED ))
    echo "size $SIZE"
    echo "took $TOOK"
    say "rehearsal done in ${TOOK}s using $((SIZE / 1048576)) MiB; the scratch copy $PGDATA_DIR was removed"
    exit 0
fi

if [ "$MODE" = in-place ]; then
    say "done: $PGDATA_DIR restored in place from backup $BEST_ID to $TARGET_TEXT and promoted; PostgreSQL is running on port $PORT (archive_mode is off); the old data directory is kept as $KEEP_ASIDE"
else
    say "done: $PGDATA_DIR restored from backup $BEST_ID to $TARGET_TEXT and promoted; PostgreSQL is running on port $PORT (archive_mode is off)"
fi
