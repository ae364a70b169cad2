#!/usr/bin/env bash
# Benchmark: runbot replicas on one PostgreSQL, on loopback (issue 16).
#
#   scripts/bench-replicas.sh                 # release build, 1 then 3 replicas
#   BENCH_PROFILE=dev scripts/bench-replicas.sh   # debug build (quick, figures indicative only)
#
# Starts a throwaway PostgreSQL (scripts/test.sh with RUNBOT_TEST_ONLY_PG=1), then runs the
# ignored test `replicas::benchmark_replicas` of bot/tests/it/replicas.rs with BENCH_REPLICAS=1
# and =3: that many `runbot serve` processes on one scratch database behind the fake Slack
# (runbot-sandbox), signed requests spread round-robin, and prints
#   - signed commands per second (`/ops whoami`, 64 clients, 5 s),
#   - full executions per second (200 read-only one-step executions, 32 clients, 50 channels),
#   - click → step start and click → first edit of the status message, p50/p99 (30 clicks),
#   - the live-update lag in a storm of 100 executions (10 channels, Slack limiting
#     chat.update and chat.postMessage to 50 calls/s): from the final state stored to the
#     message showing it, p50/p99/max against the 1.1 s target, and the 429s Slack returned.
# BENCH_PACING_MS sets `[slack] post_interval_ms` (default 1000, runbot's default: posts per
# channel); BENCH_EDITS_PER_MINUTE sets `[slack] edits_per_minute` (default 2700: 45 chat.update
# a second for the workspace, under the fake's 50).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${BENCH_PROFILE:-release}
flag=()
[ "$profile" = release ] && flag=(--release)
eval "$(RUNBOT_TEST_ONLY_PG=1 ./scripts/test.sh 2>/dev/null)"
for n in ${BENCH_REPLICA_COUNTS:-1 3}; do
  echo "== $n replica(s), $profile build =="
  BENCH_REPLICAS=$n cargo test "${flag[@]}" -p runbot --test it -- --ignored --exact replicas::benchmark_replicas --nocapture 2>&1 \
    | grep -E '^(replicas|signed commands|full executions|click|storm)' || { echo "benchmark failed (rerun with --nocapture to see why)"; exit 1; }
done
