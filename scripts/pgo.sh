#!/usr/bin/env bash
# Regenerates bot/pgo/runbot.profdata: the profile a release build of runbot is optimised with
# (profile-guided optimisation, PGO).
#
#   scripts/pgo.sh          # needs rustup's llvm-tools (installed if missing), wrk, python3
#
# What it does, all on 127.0.0.1:
#   1. builds runbot in release with -Cprofile-generate (instrumented, into $PGO_TARGET_DIR,
#      default /var/tmp/runbot-target-pgo-gen: its own target directory, as the flags differ
#      from every other build), and slack-sink as usual,
#   2. runs the ack benchmark's world against it (scripts/bench-slack-acks.sh, Bolt skipped,
#      5-s phases) once per command in $PGO_TEXTS (default: help, whoami, history, a typo):
#      each run's runbot writes its counters when it stops,
#   3. merges them (llvm-profdata merge --sparse) into bot/pgo/runbot.profdata.
#
# A release build uses the file when RUNBOT_PGO is not 0: scripts/release-build.sh passes
# -Cprofile-use (the Dockerfile, scripts/bench-slack-acks.sh and scripts/symbol-order.sh build
# through it). Code changed since the profile was made is compiled without it (LLVM skips the
# functions whose hash changed); re-run after larger changes to the request path.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GEN_DIR=${PGO_TARGET_DIR:-/var/tmp/runbot-target-pgo-gen}
TEXTS=${PGO_TEXTS:-"help|whoami|history|restrat promotions-api"}
OUT="$ROOT/bot/pgo/runbot.profdata"

die() { printf 'pgo: %s\n' "$*" >&2; exit 2; }

SYSROOT=$(rustc --print sysroot)
HOST=$(rustc -vV | sed -n 's/^host: //p')
PROFDATA="$SYSROOT/lib/rustlib/$HOST/bin/llvm-profdata"
if [ ! -x "$PROFDATA" ]; then
    rustup component add llvm-tools >/dev/null || die "llvm-tools could not be installed (rustup component add llvm-tools)"
fi
[ -x "$PROFDATA" ] || die "no llvm-profdata at $PROFDATA"

# The counters' directory is fixed per target directory, so the flags (and the build) stay
# the same from one run of this script to the next.
RAW="$GEN_DIR/pgo-raw"
rm -rf "$RAW"
mkdir -p "$RAW"

(cd "$ROOT" && RUSTFLAGS="-Cprofile-generate=$RAW" CARGO_TARGET_DIR="$GEN_DIR" \
    cargo build --release --locked --quiet -p runbot --bin runbot)
# Slack's side of the replies, not instrumented (its counters would be merged into runbot's).
TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/runbot-target}
(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --locked --quiet -p runbot-sandbox --bin slack-sink)
cp "$TARGET_DIR/release/slack-sink" "$GEN_DIR/release/slack-sink"

IFS='|' read -r -a texts <<< "$TEXTS"
for text in "${texts[@]}"; do
    # The instrumented build is slower than the targets: the benchmark's verdict is ignored,
    # only the counters matter.
    LLVM_PROFILE_FILE="$RAW/runbot-%p-%m.profraw" CARGO_TARGET_DIR="$GEN_DIR" BENCH_SKIP_BUILD=1 BENCH_BOLT=0 BENCH_ROUNDS=1 \
        BENCH_DURATION=5 BENCH_TEXT="$text" "$ROOT/scripts/bench-slack-acks.sh" > "$RAW/bench.log" 2>&1 || true
done
ls "$RAW"/runbot-*.profraw >/dev/null 2>&1 || { cat "$RAW/bench.log" >&2; die "the runs wrote no profile"; }
mkdir -p "$(dirname "$OUT")"
"$PROFDATA" merge --sparse -o "$OUT" "$RAW"/runbot-*.profraw
printf 'wrote %s (%s bytes) from %s runs\n' "$OUT" "$(stat -c %s "$OUT")" "$(ls "$RAW"/runbot-*.profraw | wc -l)"
