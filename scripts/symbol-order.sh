#!/usr/bin/env bash
# Regenerates bot/symbol-order.txt: the functions a `runbot serve` runs, for the release link.
#
#   scripts/symbol-order.sh        # needs valgrind (callgrind_annotate) and python3
#
# Why: the kernel maps a binary's code 64 KiB at a time around each first touch. Left where
# the compiler puts them, the ~2.5 MB of functions a start-up runs are spread over 16 MB of
# code and keep ~10 MB of it resident; listed in this file, the linker (rust-lld, via
# bot/build.rs, release builds on x86_64 Linux) lays them out together and an idle runbot holds
# ~2.5 MB of code. A list gone stale only loses effect: names the linker no longer finds (code
# changed, dependencies updated) are skipped. Re-run after larger changes to start-up or to the
# request path, then rebuild.
#
# What it records, on 127.0.0.1 with the benchmark's world (scripts/bench/slack-world.sh):
# `runbot serve` under callgrind from start to SIGTERM — start-up, /readyz, /metrics, signed
# slash commands (help, whoami, history, status, a typo) with their answers in the acks and
# through response_urls to `slack-sink`. The functions are written most-run first, so the
# request path's code is packed at the front. SHA-256's SHA-NI code, which valgrind's CPU does
# not offer (it runs the portable one), is added by name.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/runbot-target}
OUT="$ROOT/bot/symbol-order.txt"
USER_ID=U0ORDER01
CHANNEL_ID=C0ORDER01

die() { printf 'symbol-order: %s\n' "$*" >&2; exit 2; }
command -v valgrind >/dev/null && command -v callgrind_annotate >/dev/null || die "valgrind is required (apt-get install valgrind)"
command -v python3 >/dev/null || die "python3 is required"

CARGO_TARGET_DIR="$TARGET_DIR" "$ROOT/scripts/release-build.sh" --quiet -p runbot -p runbot-sandbox --bin runbot --bin slack-sink
BIN="$TARGET_DIR/release/runbot"

WORK=$(mktemp -d /var/tmp/runbot-order.XXXXXX)
RUNBOT_PID=""
SINK_PID=""
cleanup() {
    [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null || true
    [ -n "$RUNBOT_PID" ] && kill -KILL "$RUNBOT_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

source "$ROOT/scripts/bench/slack-world.sh"
PORT=$(free_port)
SLACK_PORT=$(free_port)
BASE="http://127.0.0.1:$PORT"
SLACK_BASE="http://127.0.0.1:$SLACK_PORT"
slack_world "$WORK" "$SLACK_BASE" "$PORT" "$USER_ID"

"$TARGET_DIR/release/slack-sink" "127.0.0.1:$SLACK_PORT" > "$WORK/sink.out" 2>&1 &
SINK_PID=$!
valgrind --tool=callgrind --demangle=no --callgrind-out-file="$WORK/cg.out" \
    "$BIN" serve --config "$WORK/runbot.toml" > "$WORK/runbot.log" 2>&1 &
RUNBOT_PID=$!
wait_ready "$BASE/readyz" "$RUNBOT_PID" 1200 || { cat "$WORK/runbot.log" >&2; die "runbot did not become ready under valgrind"; }

for text in help whoami history status "deploy" "help restart"; do
    python3 "$ROOT/scripts/bench/sign.py" "$WORK/signing_secret" "$WORK/signed.tsv" 50 "$USER_ID" "$CHANNEL_ID" "$text" "$SLACK_BASE"
    python3 - "$BASE" "$WORK/signed.tsv" <<'PY'
import sys, urllib.request
base, path = sys.argv[1:3]
for line in open(path):
    ts, sig, body = line.rstrip("\n").split("\t", 2)
    req = urllib.request.Request(base + "/slack/commands", data=body.encode(), headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig})
    urllib.request.urlopen(req, timeout=30).read()
urllib.request.urlopen(base + "/metrics", timeout=30).read()
PY
done
sleep 2   # answers posted after their acks
kill -TERM "$RUNBOT_PID"
for _ in $(seq 600); do kill -0 "$RUNBOT_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$RUNBOT_PID" 2>/dev/null && die "runbot did not stop on SIGTERM"
wait "$RUNBOT_PID" 2>/dev/null || true
RUNBOT_PID=""

callgrind_annotate --threshold=100 "$WORK/cg.out" > "$WORK/annotated.txt"
nm --defined-only "$BIN" | awk '{print $3}' > "$WORK/symbols.txt"
python3 - "$WORK/annotated.txt" "$WORK/symbols.txt" "$BIN" "$OUT" <<'PY'
import re, sys
annotated, symbols, binary, out = sys.argv[1:5]
known = set(open(symbols).read().split())
names = []
for line in open(annotated):
    # "1,234 (0.5%)  file:function [object]" — most-run first; only runbot's own code.
    m = re.match(r"^\s*[\d,]+\s+\([^)]*\)\s+\S*?:(\S+)\s+\[(.+)\]\s*$", line)
    if m and m.group(2) == binary:
        name = re.sub(r"'\d+$", "", m.group(1))   # callgrind's recursion marks
        if name in known:
            names.append(name)
# SHA-256 on CPUs with SHA-NI (valgrind's does not offer it), by name.
names += sorted(s for s in known if re.match(r"_ZN4sha26sha256(3x86|7x86_sha)", s) or "core_arch3x863sha" in s)
seen, ordered = set(), []
for n in names:
    if n not in seen:
        seen.add(n)
        ordered.append(n)
if len(ordered) < 500:
    sys.exit(f"only {len(ordered)} functions recorded; is the binary stripped?")
with open(out, "w") as f:
    f.write("\n".join(ordered) + "\n")
print(f"{len(ordered)} functions written to {out}")
PY
