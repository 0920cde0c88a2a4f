#!/usr/bin/env bash
# The documented run behind loadtest/RESULTS.md: every scenario, each server
# interleaved with the others, in one go (about 40 minutes on 2 cores).
# Writes OUT_DIR/{summary-*.md,*.jsonl} and prints the summaries.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${OUT_DIR:-$ROOT/target/loadtest-all-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
cd "$ROOT"
[ -n "${NO_BUILD:-}" ] || cargo build --release -p pubsocketd -p pubsocketd-loadtest
run() { # name, then environment for run-compare.sh
    local name=$1
    shift
    env "$@" NO_BUILD=1 OUT_DIR="$OUT/$name" loadtest/run-compare.sh > "$OUT/$name.log" 2>&1
    sed -n '/^## Summary/,$p' "$OUT/$name.log"
}
# Against the floor: fan-out, time to reach 10,000, idle memory and CPU.
run vs-floor KINDS="floor pubsocketd-epoll pubsocketd-uring" REPEATS=3 DURATION=20 \
    SCENARIOS="fanout-1k fanout-10k reach-10k idle-10k idle-19k"
# pubsocketd alone (the floor has no pings): 19,000 clients, pings every 25 s.
run pings KINDS="pubsocketd-epoll pubsocketd-uring" REPEATS=3 DURATION=60 \
    SCENARIOS="idle-19k-pings hold-19k-pings"
# Every client plain, then every client compressing.
run deflate KINDS="pubsocketd" REPEATS=3 DURATION=20 \
    SCENARIOS="fanout-1k-words fanout-1k-words-deflate"
