#!/usr/bin/env bash
# Benchmarks ilp-connector with ../shared/bench's load generator and fulfilling sink, at the
# settings of ../shared/bench/RESULTS.md (amount 10, concurrency 1, 16, 64; 1 s warm-up + 10 s).
#
#   scripts/bench.sh              loadgen -> ilp-connector -> sink
#   scripts/bench.sh harness      loadgen -> sink (the harness alone)
#   ILP_NODE_BIN=... scripts/bench.sh anchor   loadgen -> Interledger.rs ilp-node -> sink
#
# Sets up everything itself: the local PostgreSQL (fsync and synchronous_commit on), a fresh
# database `ilp_bench`, accounts alice (sender, token alice-token, no credit limit) and bob
# (next hop: the sink), and the route example.bob -> bob. Everything listens on 127.0.0.1.
# Raw outputs go to out/bench/ (git-ignored). BENCH=DIR names the bench harness
# (default ../shared/bench). Environment settings of its run.sh (CONCURRENCIES, DURATION, ...)
# pass through.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
bench=${BENCH:-$repo/../shared/bench}
[ -x "$bench/run.sh" ] || { echo "bench.sh: no harness at $bench (set BENCH)" >&2; exit 1; }
mode=${1:-connector}
export OUTDIR=$repo/out/bench
export CARGO_TARGET_DIR_BENCH=$repo/target/bench-harness
mkdir -p "$OUTDIR"
listen=127.0.0.1:7780
label=${LABEL:-$mode}

harness() { CARGO_TARGET_DIR=$CARGO_TARGET_DIR_BENCH OUTDIR=$OUTDIR "$bench/$1" "${@:2}"; }

cleanup() {
    [ -n "${connector_pid:-}" ] && kill "$connector_pid" 2>/dev/null && wait "$connector_pid" 2>/dev/null
    harness anchor.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

# CPU ticks of every process of the local PostgreSQL cluster (backends come and go with
# connections, so their sum is read before and after each run).
pg_ticks() {
    local pid total=0
    for pid in $(pgrep -u postgres -f "postgres" 2>/dev/null || true); do
        [ -r "/proc/$pid/stat" ] || continue
        total=$((total + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')))
    done
    echo "$total"
}

harness anchor.sh start-sink
sink_pid=$(cat "$OUTDIR/pids/sink.pid")

case $mode in
harness)
    WATCH_PIDS="sink:$sink_pid" harness run.sh http://127.0.0.1:3999/ilp "" example.bob.sink "$label"
    ;;
anchor)
    : "${ILP_NODE_BIN:?set ILP_NODE_BIN (see ../shared/bench/README.md, Installing the anchor)}"
    harness anchor.sh stop >/dev/null
    harness anchor.sh start
    WATCH_PIDS="ilp-node:$(cat "$OUTDIR/pids/ilp-node.pid") redis:$(cat "$OUTDIR/pids/redis.pid") sink:$sink_pid" \
        harness run.sh http://127.0.0.1:7770/ilp alice:alice-token example.bob.sink "$label"
    harness anchor.sh balances
    ;;
connector)
    cargo build --release --quiet --bin ilp-connector
    db_line=$(ILP_PG_DB=ilp_bench scripts/db.sh start)
    url=${db_line#DATABASE_URL=}
    psql -q "${url%/*}/postgres" -c "DROP DATABASE IF EXISTS ilp_bench WITH (FORCE)" -c "CREATE DATABASE ilp_bench"
    export DATABASE_URL=$url
    bin=target/release/ilp-connector
    $bin migrate >/dev/null
    $bin accounts add alice --asset-code XYZ --asset-scale 9 --relation child --incoming-token alice-token --credit-limit '' >/dev/null
    $bin accounts add bob --asset-code XYZ --asset-scale 9 --relation child --outgoing-url http://127.0.0.1:3999/ilp --outgoing-token bob-secret >/dev/null
    $bin routes add example.bob bob >/dev/null
    RUST_LOG=warn ILP_CONNECTOR_NODE__ILP_ADDRESS=example.connector ILP_CONNECTOR_HTTP__LISTEN=$listen \
        $bin serve 2>"$OUTDIR/connector.log" &
    connector_pid=$!
    for _ in $(seq 100); do curl -s -o /dev/null "http://$listen/" && break; sleep 0.1; done
    for c in ${CONCURRENCIES:-1 16 64}; do
        before=$(pg_ticks)
        CONCURRENCIES=$c WATCH_PIDS="connector:$connector_pid sink:$sink_pid" \
            harness run.sh "http://$listen/ilp" alice-token example.bob.sink "$label-c$c" | grep "^| $label" || true
        after=$(pg_ticks)
        echo "postgres CPU ticks during c=$c: $((after - before)) (1 tick = 1/$(getconf CLK_TCK) s)"
    done
    echo "RSS of ilp-connector: $(awk '/VmHWM/ {print $2, $3}' "/proc/$connector_pid/status") (peak)"
    $bin balances
    ;;
*) sed -n '2,14p' "$0"; exit 2 ;;
esac
