#!/usr/bin/env bash
# Measures pubsocketd against the floor relay, interleaved in one run:
# floor, pubsocketd, floor, pubsocketd, … (REPEATS times each, per scenario),
# each server started fresh, pinned to core 0 (taskset -c 0), with Redis and
# the load generator pinned to core 1. Prints the median and min–max of each
# figure per server and the ratio pubsocketd/floor (Markdown), and keeps every
# run's JSON line and log in OUT_DIR.
#
# Usage: loadtest/run-compare.sh            (from the repository root or anywhere)
# Environment (all optional):
#   REPEATS=3            runs of each server per scenario (at least 3 for a median)
#   DURATION=20          seconds of publishing per fan-out run, of holding for idle
#   SCENARIOS="fanout-1k fanout-10k idle-10k"   which scenarios to run; also
#                        idle-19k, idle-19k-pings (pubsocketd pinging
#                        every 25 s; use DURATION=60 or more), and
#                        reach-10k (2 msg/s to 10,000 clients: the p99 is the
#                        time one message takes to reach them all),
#                        hold-19k-pings (19,000 clients × 10 msg/s for 60 s),
#                        fanout-1k-words[-deflate] (1 KiB of words and
#                        numbers at 50 msg/s, clients offering deflate),
#                        targeted-1k and targeted-19k (each client on its
#                        own channel user.<i> under -rs-channel=user.*,
#                        2,000 msg/s each to one random user: the relay's
#                        CPU per message should not grow with the clients),
#                        channels-1k (1,000 channels x 10 clients, 1,000
#                        msg/s spread over them); not for the floor;
#                        lone-1 (one client, 2,000 msg/s: what a message
#                        that comes alone costs, the targeted scenarios'
#                        floor; for the floor too);
#                        connect-10k (10,000 upgrades: the relay's CPU per
#                        handshake)
#   KINDS="floor pubsocketd"   servers, interleaved in this order; the first
#                        is the reference of the ratios. pubsocketd-epoll and
#                        pubsocketd-uring are pubsocketd with -io set;
#                        baseline is another build of pubsocketd (an earlier
#                        commit's) at BASELINE_BIN, run with the same flags,
#                        for before/after figures from one interleaved run
#   BASELINE_BIN=path    the pubsocketd binary of the baseline kind
#                        auth-hs256 and auth-es256 are pubsocketd under
#                        -auth=jwt (a secret, an EC P-256 key), every client
#                        with a token in its URL (needs python3 with PyJWT
#                        and cryptography, as the tests do); history is
#                        pubsocketd with -history 1000 (IDs, envelopes and
#                        kept frames for every message); pubsocketd-sse is
#                        pubsocketd as run for pubsocketd, read over
#                        Server-Sent Events (the clients use --transport sse
#                        and GET /events), so KINDS="pubsocketd pubsocketd-sse"
#                        gives the SSE/WebSocket ratio of each figure
#   OUT_DIR=target/loadtest-compare-<time>      where results and logs go
#   CARGO_TARGET_DIR     where the binaries are (and are built), as for cargo
#                        (default: target/ in the repository)
#   SERVER_CORE=0 LOAD_CORE=1                   cores for the relay / Redis + load
#   NO_BUILD=1           skip `cargo build --release`
#   NICE=10              niceness of the load generator and Redis (0: none)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
REPEATS="${REPEATS:-3}"
DURATION="${DURATION:-20}"
SCENARIOS="${SCENARIOS:-fanout-1k fanout-10k idle-10k}"
KINDS="${KINDS:-floor pubsocketd}"
SERVER_CORE="${SERVER_CORE:-0}"
LOAD_CORE="${LOAD_CORE:-1}"
NICE="${NICE:-10}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
OUT_DIR="${OUT_DIR:-$TARGET_DIR/loadtest-compare-$(date +%Y%m%d-%H%M%S)}"
BIN="$TARGET_DIR/release"
mkdir -p "$OUT_DIR"
RESULTS="$OUT_DIR/results.jsonl"
: > "$RESULTS"

if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release -p pubsocketd -p pubsocketd-loadtest
fi
for b in pubsocketd floor pubsocketd-loadtest; do
    [ -x "$BIN/$b" ] || { echo "run-compare: $BIN/$b is missing (cargo build --release)" >&2; exit 1; }
done
command -v redis-server >/dev/null || { echo "run-compare: redis-server not found" >&2; exit 1; }
command -v taskset >/dev/null || { echo "run-compare: taskset not found (util-linux)" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# shellcheck source=loadtest/common.sh
. "$ROOT/loadtest/common.sh"

nice_cmd=()
[ "$NICE" != 0 ] && nice_cmd=(nice -n "$NICE")

RP="$(free_port)"
taskset -c "$LOAD_CORE" "${nice_cmd[@]}" redis-server --port "$RP" --bind 127.0.0.1 --save "" --appendonly no \
    > "$OUT_DIR/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
wait_listen "$RP" "$REDIS_PID" || { echo "run-compare: redis-server did not start" >&2; exit 1; }

# The auth-* kinds: pubsocketd under -auth=jwt, every client with a token
# (made with tests/support/mint.py: PyJWT) granting every channel.
AUTH_SECRET="loadtest-secret-$(date +%s%N)"
KEYS="$OUT_DIR/keys"
case " $KINDS " in
    *" auth-"*)
        mkdir -p "$KEYS"
        python3 "$ROOT/tests/support/mint.py" keys "$KEYS"
        CLAIMS='{"sub":"load","exp":"+86400","channels":["*"]}'
        HS_TOKEN="$(python3 "$ROOT/tests/support/mint.py" sign HS256 "$AUTH_SECRET" "$CLAIMS")"
        ES_TOKEN="$(python3 "$ROOT/tests/support/mint.py" sign ES256 "$KEYS/ec256.key" "$CLAIMS")"
        ;;
esac

# kind -> the path and query string of the clients' URL (after the port's
# "/"): the event streams' route, or a token
kind_query() {
    case "$1" in
        auth-hs256) echo "?token=$HS_TOKEN" ;;
        auth-es256) echo "?token=$ES_TOKEN" ;;
        pubsocketd-sse) echo "events" ;;
    esac
}

# kind -> how its clients read, when not over WebSockets (load generator
# arguments)
kind_transport() {
    case "$1" in
        pubsocketd-sse) echo "--transport sse" ;;
    esac
}

# scenario -> load generator arguments
scenario_args() {
    case "$1" in
        fanout-1k) echo "--mode fanout --clients 1000 --rate 500 --size 128 --duration $DURATION --settle 5" ;;
        fanout-10k) echo "--mode fanout --clients 10000 --rate 50 --size 128 --duration $DURATION --settle 5" ;;
        idle-10k) echo "--mode idle --clients 10000 --duration $DURATION" ;;
        fanout-1k-words) echo "--mode fanout --clients 1000 --rate 50 --size 1024 --pad words --duration $DURATION --settle 5" ;;
        fanout-1k-words-deflate) echo "--mode fanout --clients 1000 --rate 50 --size 1024 --pad words --deflate --duration $DURATION --settle 5" ;;
        reach-10k) echo "--mode fanout --clients 10000 --rate 2 --duration $DURATION --settle 5" ;;
        hold-19k-pings) echo "--mode fanout --clients 19000 --rate 10 --duration 60 --settle 5" ;;
        idle-19k) echo "--mode idle --clients 19000 --duration $DURATION" ;;
        idle-19k-pings) echo "--mode idle --clients 19000 --duration $DURATION" ;;
        targeted-1k) echo "--mode fanout --clients 1000 --spread 1000 --channel user --rate 2000 --duration $DURATION --settle 5" ;;
        targeted-19k) echo "--mode fanout --clients 19000 --spread 19000 --channel user --rate 2000 --duration $DURATION --settle 5" ;;
        channels-1k) echo "--mode fanout --clients 10000 --spread 1000 --channel user --rate 1000 --duration $DURATION --settle 5" ;;
        connect-10k) echo "--mode idle --clients 10000 --duration 2" ;;
        lone-1) echo "--mode fanout --clients 1 --rate 2000 --duration $DURATION --settle 5" ;;
        *) echo "run-compare: unknown scenario $1" >&2; exit 1 ;;
    esac
}

# scenario -> pubsocketd's ping interval: pings are off except where the
# scenario measures them (the floor never pings).
scenario_pings() {
    case "$1" in
        *-pings) echo 25s ;;
        *) echo 0 ;;
    esac
}

# scenario -> the relay's channels: the pattern of the targeted scenarios.
scenario_channels() {
    case "$1" in
        targeted-* | channels-*) echo "user.*" ;;
        *) echo pubsocketd ;;
    esac
}

start_server() { # kind, port, log, scenario -> sets SERVER_PID
    local kind=$1 port=$2 log=$3 pings channels
    pings="$(scenario_pings "$4")"
    channels="$(scenario_channels "$4")"
    case "$kind" in
        floor)
            [ "$channels" = pubsocketd ] || { echo "run-compare: the floor relays one channel, not $4" >&2; return 1; }
            taskset -c "$SERVER_CORE" "$BIN/floor" --listen "127.0.0.1:$port" --redis "127.0.0.1:$RP" \
                > "$log" 2>&1 &
            ;;
        pubsocketd | pubsocketd-* | baseline | auth-* | history)
            local io=() bin="$BIN/pubsocketd"
            case "$kind" in
                pubsocketd-sse) ;;
                pubsocketd-*) io=(-io "${kind#pubsocketd-}") ;;
                baseline) bin="${BASELINE_BIN:?baseline needs BASELINE_BIN}" ;;
                auth-hs256) io=(-auth jwt -auth-jwt-secret "$AUTH_SECRET") ;;
                auth-es256) io=(-auth jwt -auth-jwt-key "$KEYS/ec256.pub") ;;
                history) io=(-history 1000) ;;
            esac
            taskset -c "$SERVER_CORE" "$bin" -ws-insecure -ws-host 127.0.0.1 -ws-port "$port" \
                -rs-port "$RP" -rs-channel "$channels" -workers 1 -ws-ping-interval "$pings" -log-level warn "${io[@]}" > "$log" 2>&1 &
            ;;
        *) echo "run-compare: unknown server kind $kind" >&2; return 1 ;;
    esac
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_listen "$port" "$SERVER_PID"
}

echo "run-compare: $(nproc) cores, kernel $(uname -r), redis on :$RP (core $LOAD_CORE), relays on core $SERVER_CORE"
echo "run-compare: servers: $KINDS; scenarios: $SCENARIOS; $REPEATS repeats; ${DURATION}s each; results in $OUT_DIR"
for scenario in $SCENARIOS; do
    args="$(scenario_args "$scenario")"
    for rep in $(seq 1 "$REPEATS"); do
        for kind in $KINDS; do
            port="$(free_port)"
            tag="$scenario-$kind-$rep"
            start_server "$kind" "$port" "$OUT_DIR/$tag.server.log" "$scenario" ||
                { echo "run-compare: $kind did not start, see $OUT_DIR/$tag.server.log" >&2; exit 1; }
            # The relay must be subscribed before publishing; the load
            # generator waits for it (PUBSUB NUMSUB) up to 5 s.
            # shellcheck disable=SC2086,SC2046
            taskset -c "$LOAD_CORE" "${nice_cmd[@]}" "$BIN/pubsocketd-loadtest" $args $(kind_transport "$kind") \
                --url "ws://127.0.0.1:$port/$(kind_query "$kind")" --redis "127.0.0.1:$RP" \
                --server-pid "$SERVER_PID" --label "$scenario/$kind" --json \
                --svg "$OUT_DIR/$tag.svg" \
                > "$OUT_DIR/$tag.out" 2> "$OUT_DIR/$tag.progress" || true
            kill "$SERVER_PID" 2>/dev/null || true
            wait "$SERVER_PID" 2>/dev/null || true
            grep '^{' "$OUT_DIR/$tag.out" | tail -1 >> "$RESULTS" || true
            sed -n '/^pubsocketd-loadtest/,/^{/p' "$OUT_DIR/$tag.out" | grep -v '^{' || true
            # Let TIME_WAIT sockets and the kernel settle between runs.
            sleep 2
        done
    done
done

echo
echo "## Summary ($(date -u +%Y-%m-%dT%H:%MZ); $(nproc) cores; kernel $(uname -r))"
echo
"$BIN/pubsocketd-loadtest" --mode summary --input "$RESULTS" | tee "$OUT_DIR/summary.md"
