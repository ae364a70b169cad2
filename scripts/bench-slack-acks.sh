#!/usr/bin/env bash
# Benchmark: signed Slack slash-command acknowledgements (POST /slack/commands) on loopback.
#
#   scripts/bench-slack-acks.sh            # installs wrk if missing, builds runbot (release), runs
#
# What it does, all on 127.0.0.1:
#   1. installs what it needs (wrk from Debian; python3 and taskset must already be there),
#   2. builds `runbot` and `slack-sink` (sandbox/src/bin/slack-sink.rs) in release as it is
#      shipped — scripts/release-build.sh, with the committed PGO profile (bot/pgo) —
#      (CARGO_TARGET_DIR, default /var/tmp/runbot-target),
#   3. writes a throw-away config: SQLite store in a temp dir on disk (WAL, synchronous=FULL,
#      sqlx's default: every commit is fsynced), [slack] with the signing secret and bot token
#      given by `file:` reference, one known identity in [groups], limits raised so that every
#      command runs fully in the engine (scripts/bench/slack-world.sh). The command is
#      `/ops $BENCH_TEXT` (default `help`): recorded durably, rate-limited, parsed, and its answer
#      rendered as Block Kit. An answer the engine has at once (help, whoami, a typo) rides on
#      the ack itself (Slack's immediate response), so each ack carries the rendered help; one
#      that waits for the store or a cluster (e.g. BENCH_TEXT=history) is acknowledged empty and
#      posted to the command's response_url afterwards. Before the load, one command is sent and
#      its answer checked (in the ack, or received by the sink),
#   4. starts `slack-sink` on the load generator's core as Slack's side of the replies: each
#      command carries a `response_url` on it (as Slack's do) and the Web API (`api_url`) points
#      there too; it reads each reply and answers 200 {"ok":true} with keep-alive, so runbot
#      delivers every reply over pooled connections as it would to Slack (one thread: it and wrk
#      share their core; it counts what it received). BENCH_SINK=0 points both at an unused port
#      instead: every reply then costs a refused connect and an error log line, which no
#      deployment pays per command. Then starts `runbot serve` pinned to one core
#      (taskset -c $BENCH_SERVER_CPU, default 0),
#   5. measures idle RSS (VmRSS, 3 s after /readyz answers); then installs the peer, Slack's
#      Bolt for JavaScript ($BENCH_BOLT_DIR, default ../shared/bench/bolt-js beside the project;
#      `npm ci` into a copy), and starts it on the same core beside runbot (its idle RSS 3 s
#      later; BENCH_BOLT=0 skips the peer, and the ratio target with it); warms both up,
#   6. measures in $BENCH_ROUNDS rounds (default 3), each one runbot's phases and then Bolt's
#      with the same signed requests against its /slack/events (the other server stopped with
#      SIGSTOP meanwhile, so that only one of them runs on the core):
#      - fixed rate: ~$BENCH_RATE req/s for $BENCH_DURATION s — wrk paced with a per-connection
#        delay (closed loop: $BENCH_RATE_CONNS connections, each waiting on average
#        conns*1000/rate ms after every response, drawn uniformly from 0 to twice that so the
#        connections do not fire in step; wrk's latency is from write to full response, not
#        corrected for coordinated omission; the achieved rate is printed),
#      - max throughput: $BENCH_CONNS connections for $BENCH_DURATION s, as fast as acks come
#        back, with the CPU time each server used.
#      The machine's speed drifts by tens of percent between minutes (the same runbot binary
#      measured 26,188 and 36,286 acks/s in consecutive runs), so one pair of phases gives a
#      noisy ratio: the rounds alternate the two servers, every round is printed, and the
#      targets are judged on the medians (acks/s, the per-round ratio, the p99),
#   7. peak RSS (the kernel's VmHWM, plus VmRSS sampled every 100 ms during runbot's
#      max-throughput phases), for both,
#   8. stops runbot and counts the durable `slack.command` audit rows in the SQLite file against
#      the commands runbot counted (/metrics) and the 2xx answers wrk saw over every phase, and
#      the inbox: one entry per recorded command, every one of them processed (none left undone),
#   9. prints the figures next to the targets, PASS/FAIL each, and every round; exits 1 if any
#      target fails.
#
# The load generator and the sink run on the other core (taskset -c $BENCH_CLIENT_CPU, default 1).
# Each request is signed with a fresh timestamp just before its phase (Slack's 5-minute window),
# with a trigger_id of its own: runbot acts on a trigger_id once (a repeat is a duplicate).
#
# Knobs (environment): BENCH_ROUNDS (3), BENCH_DURATION (10), BENCH_RATE (1000), BENCH_RATE_CONNS (50),
# BENCH_CONNS (64), BENCH_SERVER_CPU (0), BENCH_CLIENT_CPU (1), BENCH_SKIP_BUILD (0), BENCH_PROFILE (release; `profiling`: no LTO, incremental, for comparing changes), BENCH_SINK (1), BENCH_TEXT (help),
# BENCH_RUNBOT_LOG (runbot's default filter), BENCH_KEEP (keep the temp dir), CARGO_TARGET_DIR,
# BENCH_BOLT (1), BENCH_BOLT_DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/runbot-target}
DURATION=${BENCH_DURATION:-10}
RATE=${BENCH_RATE:-1000}
RATE_CONNS=${BENCH_RATE_CONNS:-50}
CONNS=${BENCH_CONNS:-64}
SERVER_CPU=${BENCH_SERVER_CPU:-0}
CLIENT_CPU=${BENCH_CLIENT_CPU:-1}
LUA="$ROOT/scripts/bench/slack-commands.lua"
SIGN="$ROOT/scripts/bench/sign.py"
USER_ID=U0BENCH01
CHANNEL_ID=C0BENCH01
TEXT=${BENCH_TEXT:-help}

# Targets (issue): acks/s, the ratio to Bolt at $CONNS connections, p99 at the fixed rate (ms),
# idle and peak RSS (MB).
T_RPS=20000
T_RATIO=5
T_P99_MS=2
T_IDLE_MB=15
T_PEAK_MB=40

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench-slack-acks: %s\n' "$*" >&2; exit 2; }

# --- 1. tools -------------------------------------------------------------------------------
command -v python3 >/dev/null || die "python3 is required"
command -v taskset >/dev/null || die "taskset (util-linux) is required"
if ! command -v wrk >/dev/null; then
    log "installing wrk"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
fi
command -v wrk >/dev/null || die "wrk could not be installed"
ncpu=$(nproc)
[ "$ncpu" -ge 2 ] || log "warning: only $ncpu CPU; server and load generator share it"

# --- 2. build -------------------------------------------------------------------------------
PROFILE=${BENCH_PROFILE:-release}
BIN="$TARGET_DIR/$PROFILE/runbot"
SINK_BIN="$TARGET_DIR/$PROFILE/slack-sink"
USE_SINK=${BENCH_SINK:-1}
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    log "building runbot and slack-sink ($PROFILE) into $TARGET_DIR"
    if [ "$PROFILE" = release ]; then
        # The shipped build: with the committed profile (PGO), as the Dockerfile builds it.
        CARGO_TARGET_DIR="$TARGET_DIR" "$ROOT/scripts/release-build.sh" --quiet -p runbot -p runbot-sandbox --bin runbot --bin slack-sink
    else
        (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --profile "$PROFILE" --quiet -p runbot -p runbot-sandbox --bin runbot --bin slack-sink)
    fi
fi
[ -x "$BIN" ] || die "no runbot binary at $BIN"
[ "$USE_SINK" != 1 ] || [ -x "$SINK_BIN" ] || die "no slack-sink binary at $SINK_BIN"

# --- 3. config ------------------------------------------------------------------------------
WORK=$(mktemp -d /var/tmp/runbot-bench.XXXXXX)
RUNBOT_PID=""
SAMPLER_PID=""
SINK_PID=""
BOLT_PID=""
cleanup() {
    local rc=$?
    [ -n "$SAMPLER_PID" ] && kill "$SAMPLER_PID" 2>/dev/null || true
    [ -n "$BOLT_PID" ] && { kill -CONT "$BOLT_PID"; kill "$BOLT_PID"; } 2>/dev/null || true
    [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null || true
    if [ -n "$RUNBOT_PID" ] && kill -0 "$RUNBOT_PID" 2>/dev/null; then
        kill -CONT "$RUNBOT_PID" 2>/dev/null || true
        kill -TERM "$RUNBOT_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$RUNBOT_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$RUNBOT_PID" 2>/dev/null || true
    fi
    if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

source "$ROOT/scripts/bench/slack-world.sh"
# wait_port PORT PID TRIES: until PORT on loopback takes connections, while PID lives.
wait_port() {
    for _ in $(seq "$3"); do
        python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$1" 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
PORT=$(free_port)
SLACK_PORT=$(free_port)  # the sink, or (BENCH_SINK=0) nothing: Slack as an unreachable host
BASE="http://127.0.0.1:$PORT"
SLACK_BASE="http://127.0.0.1:$SLACK_PORT"
slack_world "$WORK" "$SLACK_BASE" "$PORT" "$USER_ID"
"$BIN" check-config "$WORK/runbot.toml" >&2

if [ "$USE_SINK" = 1 ]; then
    log "starting slack-sink on $SLACK_BASE pinned to CPU $CLIENT_CPU"
    taskset -c "$CLIENT_CPU" "$SINK_BIN" "127.0.0.1:$SLACK_PORT" > "$WORK/sink.out" 2>&1 &
    SINK_PID=$!
    wait_port "$SLACK_PORT" "$SINK_PID" 100 || { cat "$WORK/sink.out" >&2; die "slack-sink exited"; }
fi

# --- 4. start, pinned -----------------------------------------------------------------------
log "starting runbot on $BASE pinned to CPU $SERVER_CPU"
if [ -n "${BENCH_RUNBOT_LOG:-}" ]; then export RUNBOT_LOG="$BENCH_RUNBOT_LOG"; fi
taskset -c "$SERVER_CPU" "$BIN" serve --config "$WORK/runbot.toml" > "$WORK/runbot.log" 2>&1 &
RUNBOT_PID=$!
wait_ready "$BASE/readyz" "$RUNBOT_PID" 300 || { cat "$WORK/runbot.log" >&2; die "runbot did not become ready"; }

# CPU time (user + system) a process has used, in microseconds: the cost per ack below is
# this over the max-throughput phase divided by its 2xx answers — what a second core would not
# change, and less sensitive than acks/s to other work on the machine.
TICKS=$(getconf CLK_TCK)
cpu_us() { awk -v hz="$TICKS" '{ printf "%d", ($14 + $15) * 1000000 / hz }' "/proc/$1/stat"; }
status_kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$RUNBOT_PID/status"; }
commands_counted() {
    python3 - "$BASE/metrics" <<'PY'
import sys, urllib.request
for line in urllib.request.urlopen(sys.argv[1], timeout=5).read().decode().splitlines():
    if line.startswith('runbot_slack_received_total{kind="command"}'):
        print(int(float(line.split()[-1])))
PY
}

# --- 5. idle RSS ----------------------------------------------------------------------------
sleep 3
IDLE_KB=$(status_kb VmRSS)
log "idle RSS: $IDLE_KB kB"

# The answer to one command: carried by the ack, or (acknowledged empty) posted to the sink.
python3 "$SIGN" "$WORK/signing_secret" "$WORK/one.tsv" 1 "$USER_ID" "$CHANNEL_ID" "$TEXT" "$SLACK_BASE"
ANSWER=$(python3 - "$BASE/slack/commands" "$WORK/one.tsv" <<'PY'
import json, sys, urllib.request
ts, sig, body = open(sys.argv[2]).read().rstrip("\n").split("\t", 2)
req = urllib.request.Request(sys.argv[1], data=body.encode(), headers={
    "Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig})
with urllib.request.urlopen(req, timeout=5) as r:
    raw = r.read()
if not raw:
    print("acknowledged empty; answered through the response_url")
    sys.exit(0)
v = json.loads(raw)
ok = v.get("response_type") == "ephemeral" and bool(v.get("blocks"))
print(f"in the ack: {len(raw):,} bytes, {len(v.get('blocks', []))} Block Kit blocks" if ok else "unexpected ack: " + raw[:200].decode(errors="replace"))
sys.exit(0 if ok else 1)
PY
) || die "the answer to /ops $TEXT: $ANSWER"
log "the answer to /ops $TEXT: $ANSWER"


run_wrk() { # name connections delay_ms duration [url] -> prints the RESULT line
    local name=$1 conns=$2 delay=$3 dur=$4 url=${5:-$BASE/slack/commands}
    # One distinct signed command per request (a repeated trigger_id is a duplicate delivery,
    # not acted on again): enough for the phase at up to 45,000 req/s, or the paced rate.
    local n=$(( 45000 * dur ))
    [ "$delay" -gt 0 ] && n=$(( conns * 1000 * dur * 2 / (delay + 1) + 1000 ))
    BENCH_TAG="$name" python3 "$SIGN" "$WORK/signing_secret" "$WORK/signed.tsv" "$n" "$USER_ID" "$CHANNEL_ID" "$TEXT" "$SLACK_BASE"
    BENCH_SIGNED="$WORK/signed.tsv" BENCH_DELAY_MS="$delay" BENCH_PATH="/${url#http://*/}" \
        taskset -c "$CLIENT_CPU" wrk -t1 -c"$conns" -d"${dur}s" --timeout 10s -s "$LUA" "$url" \
        > "$WORK/wrk-$name.txt" 2>&1 || { cat "$WORK/wrk-$name.txt" >&2; die "wrk failed ($name)"; }
    grep '^RESULT ' "$WORK/wrk-$name.txt" | tail -1
}
field() { sed -n "s/.* $2=\\([0-9.]*\\).*/\\1/p" <<<"$1"; }

# The peer, Bolt for JavaScript: installed (npm ci into a copy) and started on the same core,
# beside runbot, so that the two are measured in alternating rounds below.
BOLT=${BENCH_BOLT:-1}
BOLT_IDLE_KB=0; BOLT_PEAK_KB=0; BOLT_URL=""
if [ "$BOLT" = 1 ]; then
    BOLT_SRC=${BENCH_BOLT_DIR:-$ROOT/../shared/bench/bolt-js}
    [ -f "$BOLT_SRC/app.js" ] || die "no Bolt app at $BOLT_SRC (set BENCH_BOLT_DIR, or BENCH_BOLT=0 to skip the comparison)"
    command -v node >/dev/null && command -v npm >/dev/null || die "node and npm are needed for the Bolt comparison (BENCH_BOLT=0 skips it)"
    log "installing Bolt for JavaScript (npm ci) into $WORK/bolt"
    mkdir -p "$WORK/bolt" && cp "$BOLT_SRC"/app.js "$BOLT_SRC"/package.json "$BOLT_SRC"/package-lock.json "$WORK/bolt/"
    (cd "$WORK/bolt" && npm ci --silent --no-audit --no-fund >/dev/null 2>"$WORK/npm.err") || { cat "$WORK/npm.err" >&2; die "npm ci failed"; }
    BOLT_PORT=$(free_port)
    log "starting Bolt on 127.0.0.1:$BOLT_PORT pinned to CPU $SERVER_CPU"
    SLACK_SIGNING_SECRET=$(cat "$WORK/signing_secret") PORT=$BOLT_PORT taskset -c "$SERVER_CPU" node "$WORK/bolt/app.js" > "$WORK/bolt.log" 2>&1 &
    BOLT_PID=$!
    wait_port "$BOLT_PORT" "$BOLT_PID" 200 || { cat "$WORK/bolt.log" >&2; die "Bolt exited"; }
    BOLT_URL="http://127.0.0.1:$BOLT_PORT/slack/events"
    sleep 3
    BOLT_IDLE_KB=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$BOLT_PID/status")
    log "Bolt idle RSS: $BOLT_IDLE_KB kB"
fi

# Warm-up (not measured): connections, SQLite pages, allocator; Bolt's JIT.
log "warm-up: 2 s at ~200 req/s"
run_wrk warmup 4 20 2 >/dev/null
if [ "$BOLT" = 1 ]; then run_wrk bolt-warmup 4 20 2 "$BOLT_URL" >/dev/null; fi
sleep 1

# Peak RSS sampler, a cross-check of the kernel's VmHWM read at the end. Runs only during
# runbot's max-throughput phases: its awk and sleep processes, 10 a second, preempt whatever
# shares their core — runbot, or wrk timing the fixed-rate latencies — and showed up in the p99
# being measured. On the load generator's core.
echo 0 > "$WORK/rss_max"
start_sampler() {
    ( max=$(cat "$WORK/rss_max")
      while kill -0 "$RUNBOT_PID" 2>/dev/null; do
          v=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$RUNBOT_PID/status" 2>/dev/null || echo 0)
          if [ "${v:-0}" -gt "$max" ]; then max=$v; echo "$max" > "$WORK/rss_max"; fi
          sleep 0.1
      done ) &
    SAMPLER_PID=$!
    taskset -cp "$CLIENT_CPU" "$SAMPLER_PID" >/dev/null
}
stop_sampler() { kill "$SAMPLER_PID" 2>/dev/null || true; wait "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=""; }

# --- 6, 7. rounds: fixed rate, then max throughput; runbot, then Bolt ----------------------
# The phases and why there are rounds: the header, step 6.
# The server not being measured is stopped (SIGSTOP) meanwhile, so that one server at a time
# runs on the core: idle, Bolt can still collect its 145 MB heap there (V8 does some seconds
# after a load ends).
ROUNDS=${BENCH_ROUNDS:-3}
DELAY_MS=$(( RATE_CONNS * 1000 / RATE ))
FIXED=""; PEAK=""; CPU_US=""; BOLT_FIXED=""; BOLT_PEAK=""; BOLT_CPU_US=""
if [ "$BOLT" = 1 ]; then kill -STOP "$BOLT_PID"; fi
for r in $(seq "$ROUNDS"); do
    log "round $r/$ROUNDS: runbot fixed rate ~$RATE req/s ($RATE_CONNS connections, ${DELAY_MS} ms pause each), ${DURATION}s"
    FIXED+="$(run_wrk "fixed$r" "$RATE_CONNS" "$DELAY_MS" "$DURATION")|"
    sleep 2
    log "round $r/$ROUNDS: runbot max throughput, $CONNS connections, ${DURATION}s"
    start_sampler
    before=$(cpu_us "$RUNBOT_PID")
    PEAK+="$(run_wrk "peak$r" "$CONNS" 0 "$DURATION")|"
    CPU_US+="$(( $(cpu_us "$RUNBOT_PID") - before ))|"
    stop_sampler
    sleep 3   # let the background replies of the last commands finish
    if [ "$BOLT" = 1 ]; then
        kill -STOP "$RUNBOT_PID"; kill -CONT "$BOLT_PID"
        log "round $r/$ROUNDS: Bolt fixed rate, then max throughput"
        BOLT_FIXED+="$(run_wrk "bolt-fixed$r" "$RATE_CONNS" "$DELAY_MS" "$DURATION" "$BOLT_URL")|"
        sleep 2
        before=$(cpu_us "$BOLT_PID")
        BOLT_PEAK+="$(run_wrk "bolt-peak$r" "$CONNS" 0 "$DURATION" "$BOLT_URL")|"
        BOLT_CPU_US+="$(( $(cpu_us "$BOLT_PID") - before ))|"
        sleep 2
        kill -STOP "$BOLT_PID"; kill -CONT "$RUNBOT_PID"
    fi
done
if [ "$BOLT" = 1 ]; then
    BOLT_PEAK_KB=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$BOLT_PID/status")
    kill -CONT "$BOLT_PID"; kill "$BOLT_PID" 2>/dev/null || true; wait "$BOLT_PID" 2>/dev/null || true; BOLT_PID=""
fi

# --- 8. peak RSS, and what runbot counted ---------------------------------------------------
HWM_KB=$(status_kb VmHWM)
AFTER_KB=$(status_kb VmRSS)
COUNTED=$(commands_counted)
SAMPLED_KB=$(cat "$WORK/rss_max" 2>/dev/null || echo 0)

# --- 9. stop, then count the durable records ------------------------------------------------
log "stopping runbot"
kill -TERM "$RUNBOT_PID"
for _ in $(seq 100); do kill -0 "$RUNBOT_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$RUNBOT_PID" 2>/dev/null && { kill -KILL "$RUNBOT_PID"; log "runbot did not stop on SIGTERM; killed"; }
wait "$RUNBOT_PID" 2>/dev/null || true
RUNBOT_PID=""
RECORDED=$(python3 - "$WORK/runbot.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
print(db.execute("SELECT count(*) FROM audit WHERE kind = 'slack.command'").fetchone()[0])
PY
)
# The inbox: "entries unprocessed", "entries" (one per recorded command).
INBOX=$(python3 - "$WORK/runbot.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
print(db.execute("SELECT count(*) FROM inbox WHERE done = 0").fetchone()[0], db.execute("SELECT count(*) FROM inbox").fetchone()[0])
PY
)
REPLIES=none
if [ -n "$SINK_PID" ]; then
    kill -TERM "$SINK_PID"; wait "$SINK_PID" 2>/dev/null || true; SINK_PID=""
    REPLIES=$(sed -n 's/^requests=//p' "$WORK/sink.out")
fi
NOT_RECORDED=$(grep -c 'could not record a received command' "$WORK/runbot.log" || true)
REFUSED=$(grep -c 'Slack request refused' "$WORK/runbot.log" || true)
LOG_LINES=$(wc -l < "$WORK/runbot.log")

# --- 11. report -----------------------------------------------------------------------------
python3 - "$FIXED" "$PEAK" "$IDLE_KB" "$HWM_KB" "$SAMPLED_KB" "$AFTER_KB" "$COUNTED" "$RECORDED" \
    "$NOT_RECORDED" "$REFUSED" "$LOG_LINES" "$RATE" "$CONNS" "$RATE_CONNS" "$T_RPS" "$T_P99_MS" "$T_IDLE_MB" "$T_PEAK_MB" \
    "$WORK/wrk-warmup.txt" "${REPLIES:-none}" "$TEXT" "$ANSWER" \
    "$INBOX" "$BOLT_FIXED" "$BOLT_PEAK" "$BOLT_IDLE_KB" "$BOLT_PEAK_KB" "$T_RATIO" "$CPU_US" "$BOLT_CPU_US" "$PROFILE" <<'PY'
import re, statistics, sys
(fixed, peak, idle_kb, hwm_kb, sampled_kb, after_kb, counted, recorded, not_recorded, refused,
 log_lines, rate, conns, rate_conns, t_rps, t_p99, t_idle, t_peak, warm_file, replies, text, answer,
 inbox, bolt_fixed, bolt_peak, bolt_idle_kb, bolt_peak_kb, t_ratio, cpu_us, bolt_cpu_us, profile) = sys.argv[1:32]
inbox_open, inbox_rows = (int(x) for x in inbox.split())

def parse(line):
    return {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", line)}

def rounds(joined):
    return [parse(x) for x in joined.split("|") if x.strip()]

def numbers(joined):
    return [int(x) for x in joined.split("|") if x.strip()]

med = statistics.median
F, P, cpu = rounds(fixed), rounds(peak), numbers(cpu_us)
w = parse(open(warm_file).read().split("RESULT", 1)[-1])
ok = lambda r: r["requests"] - r["status_errors"]          # 2xx answers (all acks are 200)
errs = lambda r: int(r["connect_errors"] + r["read_errors"] + r["write_errors"] + r["timeouts"])
rps = lambda r: ok(r) / (r["duration_us"] / 1e6)
peak_rps = [rps(p) for p in P]
p99_ms = [f["p99_us"] / 1000 for f in F]
answered = int(ok(w) + sum(ok(f) for f in F) + sum(ok(p) for p in P))
sent_non2xx = int(w["status_errors"] + sum(f["status_errors"] for f in F) + sum(p["status_errors"] for p in P))
counted, recorded = int(counted), int(recorded)
# Every ack is a durable row: no command failed to record, nothing was refused or answered
# non-2xx, and there are at least as many rows as 2xx answers. Rows may exceed the 2xx by
# requests still in flight when wrk stopped (recorded, the answer never read); runbot's command
# counter may exceed the rows by requests whose connection wrk closed at the end while they were
# being recorded (hyper drops the handler: the transaction rolls back and nothing is acked).
durable = (int(not_recorded) == 0 and recorded >= answered and sent_non2xx == 0 and int(refused) == 0)
idle_mb = int(idle_kb) / 1024
peak_mb = max(int(hwm_kb), int(sampled_kb)) / 1024
cpu_per_ack = sum(cpu) / max(sum(ok(p) for p in P), 1)
bolt = bool(bolt_peak.strip("|"))
if bolt:
    BF, BP, bcpu = rounds(bolt_fixed), rounds(bolt_peak), numbers(bolt_cpu_us)
    bolt_rps = [rps(p) for p in BP]
    ratios = [a / b if b else float("inf") for a, b in zip(peak_rps, bolt_rps)]
    bolt_cpu_per_ack = sum(bcpu) / max(sum(ok(p) for p in BP), 1)
n = len(P)
each = lambda xs, fmt: " / ".join(fmt(x) for x in xs)
rows = [
    ("acks/s, max throughput (%s conns)" % conns, f"median {med(peak_rps):,.0f}", f">= {int(t_rps):,}", med(peak_rps) >= int(t_rps)),
]
if bolt:
    rows.append(("ratio to Bolt at %s conns" % conns, f"median {med(ratios):.2f}x ({each(ratios, lambda r: f'{r:.2f}')})", f">= {t_ratio}x", med(ratios) >= float(t_ratio)))
rows += [
    ("every command durably recorded", f"{recorded:,} rows / {counted:,} taken / {answered:,} acked", "all", durable),
    ("inbox: one entry each, all processed", f"{inbox_rows:,} entries, {inbox_open} unprocessed", "all", inbox_rows == recorded and inbox_open == 0),
    ("p99 at fixed %s req/s (ms)" % rate, f"median {med(p99_ms):.3f} ({each(p99_ms, lambda x: f'{x:.3f}')})", f"<= {t_p99}", med(p99_ms) <= float(t_p99)),
    ("idle RSS (MB)", f"{idle_mb:.1f}", f"<= {t_idle}", idle_mb <= float(t_idle)),
    ("peak RSS (MB)", f"{peak_mb:.1f}", f"<= {t_peak}", peak_mb <= float(t_peak)),
]
print()
print(f"Slack slash-command acks — runbot ({profile} build) pinned to one core, loopback, SQLite (WAL, synchronous=FULL); "
      f"{n} round{'s' if n != 1 else ''}" + (", runbot then Bolt in each" if bolt else ""))
print()
print(f"{'figure':<40} {'measured':>48}  {'target':>10}  result")
print("-" * 110)
for name, got, target, passed in rows:
    print(f"{name:<40} {got:>48}  {target:>10}  {'PASS' if passed else 'FAIL'}")
print("-" * 110)
print()
print("rounds (max throughput at %s conns; p99 at the fixed rate; CPU per ack)" % conns)
for i in range(n):
    c = cpu[i] / max(ok(P[i]), 1)
    line = f"  {i + 1}: runbot {peak_rps[i]:,.0f} acks/s, p99 {p99_ms[i]:.3f} ms, {c:.1f} us"
    if bolt:
        bc = bcpu[i] / max(ok(BP[i]), 1)
        line += (f" | Bolt {bolt_rps[i]:,.0f} acks/s, p99 {BF[i]['p99_us'] / 1000:.3f} ms, {bc:.1f} us"
                 f" | ratio {ratios[i]:.2f}x (CPU per ack {bc / max(c, 1e-9):.2f}x)")
    print(line)
print()
print("details")
for i, (f, p) in enumerate(zip(F, P)):
    print(f"  round {i + 1}      : fixed {rps(f):,.0f} req/s achieved ({rate_conns} paced connections), "
          f"p50 {f['p50_us']/1000:.3f} ms, p90 {f['p90_us']/1000:.3f} ms, p99 {f['p99_us']/1000:.3f} ms, "
          f"p99.9 {f['p999_us']/1000:.3f} ms, max {f['max_us']/1000:.3f} ms; max thrpt p50 {p['p50_us']/1000:.3f} ms, "
          f"p99 {p['p99_us']/1000:.3f} ms, max {p['max_us']/1000:.3f} ms, socket errors {errs(p)}, non-2xx {int(p['status_errors'])}")
print(f"  CPU per ack  : {cpu_per_ack:.1f} us of runbot's CPU time (user + system) over the max-throughput phases"
      + (f"; Bolt {bolt_cpu_per_ack:.1f} us (ratio {bolt_cpu_per_ack / max(cpu_per_ack, 1e-9):.2f}x)" if bolt else ""))
print(f"  RSS          : idle {idle_mb:.1f} MB, peak {peak_mb:.1f} MB (VmHWM {int(hwm_kb)/1024:.1f}, sampled {int(sampled_kb)/1024:.1f}), "
      f"after the runs {int(after_kb)/1024:.1f} MB")
print(f"  command      : /ops {text} — answer {answer}; {P[-1]['bytes'] / max(P[-1]['requests'], 1):,.0f} bytes per response on average (max thrpt)")
print("  replies      : " + (f"{int(replies):,} received by slack-sink (response_url posts; {counted:,} commands taken)"
      if replies.isdigit() else "none delivered (BENCH_SINK=0: every reply refused and logged)"))
print(f"  audit        : {recorded:,} slack.command rows, {counted:,} commands counted by runbot, {answered:,} 2xx seen by wrk "
      f"(incl. warm-up; rows - 2xx = {recorded - answered} answered after wrk stopped reading, taken - rows = {counted - recorded} "
      f"dropped unacked when wrk closed its connections), {int(not_recorded)} 'could not record', {int(refused)} refused signatures, {int(log_lines):,} log lines")
if bolt:
    print(f"  Bolt (peer)  : max thrpt median {med(bolt_rps):,.0f} req/s (p99 {each([p['p99_us'] / 1000 for p in BP], lambda x: f'{x:.1f}')} ms, "
          f"non-2xx {int(sum(p['status_errors'] for p in BP))}, socket errors {sum(errs(p) for p in BP)}); "
          f"fixed rate p99 median {med([f['p99_us'] / 1000 for f in BF]):.3f} ms (runbot {med(p99_ms):.3f}); "
          f"RSS idle {int(bolt_idle_kb)/1024:.1f} MB (runbot {idle_mb:.1f}), peak {int(bolt_peak_kb)/1024:.1f} MB (runbot {peak_mb:.1f})")
else:
    print("  Bolt (peer)  : not run (BENCH_BOLT=0)")
print()
sys.exit(0 if all(r[3] for r in rows) else 1)
PY
