#!/usr/bin/env bash
# Scale-out of targeted traffic over two relays, with and without
# -rs-on-demand, interleaved in one run (pattern, on-demand, pattern, …).
#
# 10,000 per-user clients (user.0 … user.9999), half on relay A and half on
# relay B; two load generators (one per relay, each for its own half of the
# users) publish RATE msg/s each to random users of their half. With the
# pattern (PSUBSCRIBE user.*) every relay receives every user's messages;
# on demand each receives only its own clients' channels. The figure is each
# relay's pubsocketd_redis_read_bytes_total at the end of the run, beside
# the messages it received and the load generators' loss.
#
# Usage: loadtest/run-scaleout.sh
# Environment (all optional):
#   REPEATS=3  DURATION=20  RATE=1000 (per load generator)  USERS=10000
#   OUT_DIR=target/loadtest-scaleout-<time>  NO_BUILD=1
#   SERVER_CORE=0 LOAD_CORE=1   cores of the relays / Redis + load
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
REPEATS="${REPEATS:-3}"
DURATION="${DURATION:-20}"
RATE="${RATE:-1000}"
USERS="${USERS:-10000}"
SERVER_CORE="${SERVER_CORE:-0}"
LOAD_CORE="${LOAD_CORE:-1}"
OUT_DIR="${OUT_DIR:-$ROOT/target/loadtest-scaleout-$(date +%Y%m%d-%H%M%S)}"
BIN="$ROOT/target/release"
HALF=$((USERS / 2))
mkdir -p "$OUT_DIR"

if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release -p pubsocketd -p pubsocketd-loadtest
fi
command -v redis-server >/dev/null || { echo "run-scaleout: redis-server not found" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# shellcheck source=loadtest/common.sh
. "$ROOT/loadtest/common.sh"

RP="$(free_port)"
taskset -c "$LOAD_CORE" redis-server --port "$RP" --bind 127.0.0.1 --save "" --appendonly no \
    > "$OUT_DIR/redis.log" 2>&1 &
PIDS+=("$!")
wait_listen "$RP" "$!" || { echo "run-scaleout: redis-server did not start" >&2; exit 1; }

# A metric's value from a relay's /metrics.
metric() { # metrics port, name
    python3 - "$1" "$2" <<'EOF'
import sys, urllib.request
body = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
total = sum(float(l.split()[-1]) for l in body.splitlines()
            if l.startswith(sys.argv[2]) and not l.startswith("#"))
print(int(total))
EOF
}

start_relay() { # port, metrics port, log, extra flags… -> prints the pid
    local port=$1 mport=$2 log=$3
    shift 3
    taskset -c "$SERVER_CORE" "$BIN/pubsocketd" -ws-insecure -ws-port "$port" -rs-port "$RP" \
        -rs-channel 'user.*' -workers 1 -ws-ping-interval 0 -log-level warn \
        -metrics-addr "127.0.0.1:$mport" "$@" > "$log" 2>&1 &
    echo $!
}

RESULTS="$OUT_DIR/results.tsv"
printf 'mode\trun\trelay\tredis_bytes\treceived\tpublished\tdelivered\tlost\n' > "$RESULTS"
echo "run-scaleout: $USERS users over 2 relays, $RATE msg/s per load generator, ${DURATION}s, $REPEATS runs; results in $OUT_DIR"
for rep in $(seq 1 "$REPEATS"); do
    for mode in pattern on-demand; do
        flags=()
        [ "$mode" = on-demand ] && flags=(-rs-on-demand)
        pa="$(free_port)" pb="$(free_port)" ma="$(free_port)" mb="$(free_port)"
        A=$(start_relay "$pa" "$ma" "$OUT_DIR/$mode-$rep-A.log" "${flags[@]}")
        B=$(start_relay "$pb" "$mb" "$OUT_DIR/$mode-$rep-B.log" "${flags[@]}")
        PIDS+=("$A" "$B")
        wait_listen "$pa" "$A" && wait_listen "$pb" "$B" ||
            { echo "run-scaleout: a relay did not start" >&2; exit 1; }
        gens=()
        for side in A:0:$pa:$A B:$HALF:$pb:$B; do
            IFS=: read -r name from port pid <<< "$side"
            taskset -c "$LOAD_CORE" "$BIN/pubsocketd-loadtest" --mode fanout \
                --clients "$HALF" --spread "$HALF" --spread-from "$from" --channel user \
                --rate "$RATE" --duration "$DURATION" --settle 5 \
                --url "ws://127.0.0.1:$port/" --redis "127.0.0.1:$RP" --server-pid "$pid" \
                --label "scaleout-$mode/$name" --json \
                > "$OUT_DIR/$mode-$rep-$name.out" 2> "$OUT_DIR/$mode-$rep-$name.progress" &
            gens+=("$!")
        done
        wait "${gens[@]}" || true
        for side in A:$ma B:$mb; do
            IFS=: read -r name mport <<< "$side"
            bytes=$(metric "$mport" pubsocketd_redis_read_bytes_total)
            received=$(metric "$mport" pubsocketd_messages_received_total)
            line=$(grep '^{' "$OUT_DIR/$mode-$rep-$name.out" | tail -1)
            read -r published delivered lost < <(python3 -c '
import json, sys
r = json.loads(sys.argv[1])
s = r.get("steps", [{}])[-1]
print(s.get("published", 0), s.get("delivered", 0), s.get("lost", 0))' "$line")
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$rep" "$name" "$bytes" "$received" \
                "$published" "$delivered" "$lost" >> "$RESULTS"
        done
        kill "$A" "$B" 2>/dev/null || true
        wait "$A" "$B" 2>/dev/null || true
        sleep 2
    done
done

echo
echo "## Scale-out ($(date -u +%Y-%m-%dT%H:%MZ); $(nproc) cores; kernel $(uname -r))"
python3 - "$RESULTS" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
def med(mode, key):
    per_run = {}
    for r in rows:
        if r["mode"] == mode:
            per_run.setdefault(r["run"], []).append(int(r[key]))
    return statistics.median(sum(v) / len(v) for v in per_run.values()), \
        sum(sum(v) for v in per_run.values())
print()
print("| mode | bytes read from Redis per relay (median of runs, mean of the two relays) | messages received per relay | lost (all runs) |")
print("|---|---|---|---|")
for mode in ["pattern", "on-demand"]:
    b, _ = med(mode, "redis_bytes")
    m, _ = med(mode, "received")
    _, lost = med(mode, "lost")
    print(f"| {mode} | {b/1e6:.1f} MB | {m:,.0f} | {lost} |")
pb, _ = med("pattern", "redis_bytes")
ob, _ = med("on-demand", "redis_bytes")
print(f"\non-demand / pattern, bytes read per relay: {ob/pb:.2f}")
EOF
