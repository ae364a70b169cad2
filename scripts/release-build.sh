#!/usr/bin/env bash
# The release build of runbot: `cargo build --release` with the arguments given, optimised with
# the committed profile bot/pgo/runbot.profdata (profile-guided optimisation; made by
# scripts/pgo.sh from the ack benchmark's traffic). The Dockerfile, scripts/bench-slack-acks.sh
# and scripts/symbol-order.sh build through it.
#
#   scripts/release-build.sh --locked -p runbot          # RUNBOT_PGO=0: without the profile
#
# The profile is passed as a copy named by its hash under the target directory, so a new
# profile changes the flags and cargo rebuilds (cargo does not watch the file itself). Code
# changed since the profile was made is compiled as without it. Anything already in RUSTFLAGS
# is kept.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROFILE="$ROOT/bot/pgo/runbot.profdata"
flags=${RUSTFLAGS:-}
if [ "${RUNBOT_PGO:-1}" != 0 ] && [ -f "$PROFILE" ]; then
    dir="${CARGO_TARGET_DIR:-$ROOT/target}/pgo"
    mkdir -p "$dir"
    copy="$dir/runbot-$(sha256sum "$PROFILE" | cut -c1-16).profdata"
    [ -f "$copy" ] || cp "$PROFILE" "$copy"
    flags="${flags:+$flags }-Cprofile-use=$copy"
fi
cd "$ROOT"
RUSTFLAGS="$flags" exec cargo build --release "$@"
