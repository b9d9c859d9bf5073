#!/usr/bin/env bash
# Benchmarks ilp-connector with balances on (PostgreSQL with fsync and synchronous_commit on),
# at the settings of ../shared/bench/RESULTS.md: amount 10, concurrency 1, 16 and 64, each
# 1 s warm-up + 10 s measured, closed loop.
#
#   scripts/bench.sh [connector]   loadgen -> ilp-connector -> sink
#   scripts/bench.sh harness       loadgen -> sink (what the harness alone reaches)
#   scripts/bench.sh anchor        loadgen -> Interledger.rs ilp-node 0.6.0 -> sink
#                                  (ILP_NODE_BIN=...; needs ../shared/bench's anchor.sh)
#
# The load generator and sink are this repository's (`ilp-loadgen`, `ilp-sink`, binaries of
# the tests crate); HARNESS=shared uses ../shared/bench's instead (BENCH=DIR to move it).
# It sets up everything itself: the local PostgreSQL, a fresh database `ilp_bench`, accounts
# alice (sender, token alice-token, no credit limit) and bob (next hop: the sink), and the
# route example.bob -> bob. Everything stays on 127.0.0.1. Prints one row per concurrency
# with CPU per fulfilled packet of each process; raw outputs go to out/bench/ (git-ignored).
# Settings: CONCURRENCIES="1 16 64" DURATION=10 WARMUP=1 AMOUNT=10 LABEL=<mode>; CREDIT_LIMIT=N
# gives alice a credit limit, so her Prepares are held against durable reservations; FX=1
# puts a conversion on the path: bob's asset is ABC (rates XYZ 1, ABC 0.5, spread 0.002), so
# each 10 XYZ units reach the sink as 19 ABC units. TLS=1 (our harness only) makes the
# connector's listener HTTPS with a certificate of a throwaway CA (openssl) and the load
# generator a TLS client; the hop to the sink stays plain.
# ACCOUNTS=N adds N customer accounts (children cust1..custN, each next hop the sink) and a
# static route per customer (example.cust.custI) in SQL before the connector starts, like a
# wallet with one account per customer; the connector's start-to-serving time and RSS are
# printed. ROUTE_CHANGE=1 adds a route with the CLI halfway through each series
# (example.late-<c> -> bob) and prints how long until a probe packet to it is fulfilled,
# beside the slowest packets of the seconds around it; ROUTE_CHANGE=control runs the same CLI
# process and probes but changes nothing (`accounts show bob`, probes to example.bob), to tell
# what the harness costs from what the change costs. CONNECTOR_BIN=PATH benchmarks another
# build of ilp-connector (an older commit's, say) with this script. STANDBY=1 adds a
# synchronous streaming standby (scripts/db.sh standby-of) on the next port: every durable
# commit then waits for it, and the connector gets the two-host URL (the postgres CPU column
# counts both servers).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
mode=${1:-connector}
harness=${HARNESS:-ours}
bench=${BENCH:-$repo/../shared/bench}
label=${LABEL:-$mode}
out=$repo/out/bench
mkdir -p "$out"
concurrencies=${CONCURRENCIES:-1 16 64}
duration=${DURATION:-10}
warmup=${WARMUP:-1}
amount=${AMOUNT:-10}
listen=127.0.0.1:7780
sink_port=3999
tck=$(getconf CLK_TCK)

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "$mode" = anchor ]; then OUTDIR=$out/anchor CARGO_TARGET_DIR=$repo/target/bench-harness "$bench/anchor.sh" stop >/dev/null 2>&1 || true; fi
    if [ -n "${standby_port:-}" ]; then
        # The primary must not wait for a standby that is gone.
        psql -q "${primary_url%/*}/postgres" -c "ALTER SYSTEM RESET synchronous_standby_names" -c "SELECT pg_reload_conf()" >/dev/null 2>&1 || true
        ILP_PG_DIR=$out/standby ILP_PG_PORT=$standby_port scripts/db.sh destroy >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

# utime + stime of one process, in clock ticks.
ticks() { [ -r "/proc/$1/stat" ] && sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}' || echo 0; }
# The same, summed over every process of the local PostgreSQL (backends come and go).
pg_ticks() {
    local pid total=0
    for pid in $(pgrep -u postgres postgres 2>/dev/null || true); do total=$((total + $(ticks "$pid"))); done
    echo "$total"
}

# Our load generator also probes for ROUTE_CHANGE.
cargo build --release --quiet -p e2e --bin ilp-loadgen --bin ilp-sink
probe=$repo/target/release/ilp-loadgen
if [ "$harness" = shared ]; then
    (cd "$bench" && CARGO_TARGET_DIR=$repo/target/bench-harness cargo build --release --quiet)
    loadgen=$repo/target/bench-harness/release/ilp-bench-loadgen
    sink_bin=$repo/target/bench-harness/release/ilp-bench-sink
else
    loadgen=$repo/target/release/ilp-loadgen
    sink_bin=$repo/target/release/ilp-sink
fi

watch=()   # "name:pid" of processes to report CPU for
case $mode in
harness)
    url=http://127.0.0.1:$sink_port/ilp token=""
    ;;
anchor)
    : "${ILP_NODE_BIN:?set ILP_NODE_BIN (../shared/bench/README.md, Installing the anchor)}"
    export OUTDIR=$out/anchor CARGO_TARGET_DIR=$repo/target/bench-harness
    "$bench/anchor.sh" stop >/dev/null
    "$bench/anchor.sh" start >/dev/null
    watch+=("ilp-node:$(cat "$OUTDIR/pids/ilp-node.pid")" "redis:$(cat "$OUTDIR/pids/redis.pid")")
    unset CARGO_TARGET_DIR
    url=http://127.0.0.1:7770/ilp token=alice:alice-token
    ;;
connector)
    bin=${CONNECTOR_BIN:-target/release/ilp-connector}
    [ -n "${CONNECTOR_BIN:-}" ] || cargo build --release --quiet --bin ilp-connector
    db_line=$(ILP_PG_DB=ilp_bench scripts/db.sh start)
    db_url=${db_line#DATABASE_URL=}
    psql -q "${db_url%/*}/postgres" -c "DROP DATABASE IF EXISTS ilp_bench WITH (FORCE)" -c "CREATE DATABASE ilp_bench" \
        -c "ALTER SYSTEM RESET synchronous_standby_names" -c "SELECT pg_reload_conf()" >/dev/null
    primary_url=$db_url
    if [ "${STANDBY:-0}" = 1 ]; then
        # A synchronous standby on the next port: every commit waits until it has the WAL.
        standby_port=$(( ${ILP_PG_PORT:-54329} + 1 ))
        ILP_PG_DIR=$out/standby ILP_PG_PORT=$standby_port scripts/db.sh destroy >/dev/null 2>&1 || true
        db_line=$(ILP_PG_DIR=$out/standby ILP_PG_PORT=$standby_port ILP_PG_DB=ilp_bench scripts/db.sh standby-of "${ILP_PG_PORT:-54329}")
        db_url=${db_line#DATABASE_URL=}
    fi
    export DATABASE_URL=$db_url
    $bin migrate >/dev/null
    $bin accounts add alice --asset-code XYZ --asset-scale 9 --relation child --incoming-token alice-token --credit-limit "${CREDIT_LIMIT:-}" >/dev/null
    bob_asset=XYZ
    if [ "${FX:-0}" = 1 ]; then
        bob_asset=ABC
        $bin rates set XYZ 1 >/dev/null
        $bin rates set ABC 0.5 >/dev/null
        export ILP_CONNECTOR_RATES__SPREAD=0.002
    fi
    $bin accounts add bob --asset-code "$bob_asset" --asset-scale 9 --relation child --outgoing-url "http://127.0.0.1:$sink_port/ilp" --outgoing-token bob-secret >/dev/null
    $bin routes add example.bob bob >/dev/null
    if [ "${ACCOUNTS:-0}" -gt 0 ]; then
        psql -q -v ON_ERROR_STOP=1 "$db_url" <<SQL
WITH a AS (
    INSERT INTO accounts (username, asset_code, asset_scale, relation, incoming_token_hash, outgoing_url)
    SELECT 'cust' || g, 'XYZ', 9, 'child', sha256(('cust-token-' || g)::bytea), 'http://127.0.0.1:$sink_port/ilp'
    FROM generate_series(1, ${ACCOUNTS}) g
    RETURNING id, username
), b AS (INSERT INTO balances (account_id) SELECT id FROM a)
INSERT INTO routes (prefix, account_id) SELECT 'example.cust.' || username, id FROM a;
SQL
        echo "accounts: $(psql -qtA "$db_url" -c "SELECT count(*) FROM accounts"), routes: $(psql -qtA "$db_url" -c "SELECT count(*) FROM routes")"
    fi
    url=http://$listen/ilp token=alice-token
    if [ "${TLS:-0}" = 1 ]; then
        [ "$harness" = ours ] || { echo "bench.sh: TLS=1 needs HARNESS=ours" >&2; exit 2; }
        pki=$out/pki && mkdir -p "$pki"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=bench-ca \
            -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=127.0.0.1 \
            -keyout "$pki/server.key" -out "$pki/server.csr" 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$pki/ext"
        openssl x509 -req -in "$pki/server.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
            -days 2 -extfile "$pki/ext" -out "$pki/server.pem" 2>/dev/null
        export ILP_CONNECTOR_HTTP__TLS_CERT_FILE=$pki/server.pem ILP_CONNECTOR_HTTP__TLS_KEY_FILE=$pki/server.key
        url=https://$listen/ilp
    fi
    ;;
*) sed -n '2,20p' "$0"; exit 2 ;;
esac

if [ "$mode" != anchor ]; then
    "$sink_bin" --listen "127.0.0.1:$sink_port" --max-seconds 3600 2>"$out/sink.log" &
    pids+=($!)
    watch+=("sink:$!")
fi
started_ns=$(date +%s%N)
if [ "$mode" = connector ]; then
    RUST_LOG=warn ILP_CONNECTOR_NODE__ILP_ADDRESS=example.connector ILP_CONNECTOR_HTTP__LISTEN=$listen \
        ILP_CONNECTOR_ADMIN__LISTEN=127.0.0.1:7781 \
        $bin serve 2>"$out/connector.log" &
    pids+=($!)
    watch=("connector:$!" "${watch[@]}")
fi
for _ in $(seq 2000); do curl -sk -o /dev/null "$url" && break; sleep 0.005; done
if [ "$mode" = connector ]; then
    echo "connector start to serving: $(( ($(date +%s%N) - started_ns) / 1000000 )) ms; RSS then: $(awk '/VmRSS/ {print $2, $3}' "/proc/${watch[0]#*:}/status")"
fi

ms_now() { echo $(( $(date +%s%N) / 1000000 )); }
# Adds example.late-<c> -> bob with the CLI after $1 seconds, then probes it until a packet
# to it is fulfilled.
route_change() {
    local c=$1 probe_args fulfilled cli_start cli_done
    sleep "$2"
    local destination=example.late-$c.x change=(routes add "example.late-$c" bob)
    # The control: the same CLI process and probes, changing nothing.
    [ "$ROUTE_CHANGE" = control ] && destination=example.bob.x change=(accounts show bob)
    probe_args=(--url "$url" --destination "$destination" --concurrency 1 --duration 0.001 --warmup 0 --max-packets 1)
    [ -n "$token" ] && probe_args+=(--token "$token")
    [ "${TLS:-0}" = 1 ] && probe_args+=(--ca-file "$out/pki/ca.pem")
    cli_start=$(ms_now)
    $bin "${change[@]}" >/dev/null
    cli_done=$(ms_now)
    for _ in $(seq 1000); do
        fulfilled=$("$probe" "${probe_args[@]}" 2>/dev/null | sed -n 's/.*fulfilled=\([0-9]*\).*/\1/p')
        [ "${fulfilled:-0}" = 1 ] && break
        sleep 0.005
    done
    echo "\`${change[*]}\` under load at c=$c: a packet to $destination fulfilled $(( $(ms_now) - cli_done )) ms after the CLI returned (the CLI took $(( cli_done - cli_start )) ms)"
    echo "cli_done_ms=$cli_done"
}

header="| series | conc | fulfilled/s | p50 us | p90 us | p99 us | p99.9 us | rejects | errors | CPU us/pkt: loadgen"
for w in "${watch[@]}"; do header+=" ${w%%:*}"; done
[ "$mode" = connector ] && header+=" postgres"
echo "$header |"
for c in $concurrencies; do
    declare -A before=()
    for w in "${watch[@]}"; do before[$w]=$(ticks "${w#*:}"); done
    pg_before=$(pg_ticks)
    raw=$out/$label-c$c.txt
    args=(--url "$url" --destination example.bob.sink --amount "$amount" --concurrency "$c" --duration "$duration" --warmup "$warmup" --max-packets 5000000)
    [ -n "$token" ] && args+=(--token "$token")
    [ "$harness" = shared ] && args+=(--threads 1)
    [ "${TLS:-0}" = 1 ] && args+=(--ca-file "$out/pki/ca.pem")
    # bash's `time` reports the load generator's own user + system CPU, in seconds.
    changer=
    series_start=$(ms_now)
    if [ "${ROUTE_CHANGE:-0}" != 0 ] && [ "$mode" = connector ]; then
        args+=(--per-second)
        route_change "$c" "$(awk -v w="$warmup" -v d="$duration" 'BEGIN { print w + d / 2 }')" >"$out/$label-c$c-route.txt" &
        changer=$!
    fi
    lg_seconds=$( { TIMEFORMAT='%U %S'; time "$loadgen" "${args[@]}" >"$raw" 2>&1; } 2>&1 | awk '{ print $1 + $2 }' ) || true
    line=$(grep '^loadgen: fulfilled=' "$raw" | tail -n 1)
    field() { sed -n "s/.*[: ]$1=\([^ ]*\).*/\1/p" <<<"$line"; }
    fulfilled=$(field fulfilled)
    cpu=" $(awk -v t="${lg_seconds:-0}" -v n="$fulfilled" 'BEGIN { printf "%.1f", n ? t * 1e6 / n : 0 }')"
    for w in "${watch[@]}"; do
        cpu+=" $(awk -v t=$(( $(ticks "${w#*:}") - ${before[$w]} )) -v n="$fulfilled" -v hz="$tck" 'BEGIN { printf "%.1f", n ? t / hz * 1e6 / n : 0 }')"
    done
    [ "$mode" = connector ] && cpu+=" $(awk -v t=$(( $(pg_ticks) - pg_before )) -v n="$fulfilled" -v hz="$tck" 'BEGIN { printf "%.1f", n ? t / hz * 1e6 / n : 0 }')"
    echo "| $label | $c | $(field pps) | $(field p50_us) | $(field p90_us) | $(field p99_us) | $(field p999_us) | $(field rejected) $(field reject_codes) | $(field errors) |$cpu |"
    if [ -n "$changer" ]; then
        wait "$changer" || true
        echo "  $(head -n 1 "$out/$label-c$c-route.txt"); slowest packet of the series: $(field max_us) us"
        # The measured second the CLI returned in, and the one after: their slowest packets
        # beside the other seconds' (by the second each packet was sent in).
        cli_done=$(sed -n 's/^cli_done_ms=//p' "$out/$label-c$c-route.txt")
        changed_s=$(awk -v t=$(( ${cli_done:-0} - series_start )) -v w="$warmup" 'BEGIN { printf "%d", t / 1000 - w }')
        near=$(awk -v s="$changed_s" '/^loadgen-second:/ { split($2, a, "="); split($4, p, "="); split($5, m, "=")
            if (a[2] == s || a[2] == s + 1) printf " s=%d: max %d us, p99.9 %d us;", a[2], m[2], p[2] }' "$raw")
        others=$(awk -v s="$changed_s" '/^loadgen-second:/ { split($2, a, "="); split($5, m, "=")
            if (a[2] != s && a[2] != s + 1) print m[2] }' "$raw" | sort -n)
        echo "  seconds of the change:$near other seconds' max: median $(awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }' <<<"$others") us, highest $(tail -n 1 <<<"$others") us"
    fi
done
if [ "$mode" = connector ]; then
    if [ "${ROUTE_CHANGE:-0}" = 1 ]; then
        curl -s http://127.0.0.1:7781/metrics | awk -F'[ ]' '/^ilp_directory_update_seconds_(sum|count)\{kind="incremental"\}/ { v[$1 ~ /sum/] = $2 }
            END { if (v[0]) printf "directory updates applied by the connector: %d, %.2f ms each on average (rows read, copy changed, swapped in)\n", v[0], v[1] * 1000 / v[0] }'
    fi
    echo "connector peak RSS: $(awk '/VmHWM/ {print $2, $3}' "/proc/${watch[0]#*:}/status")"
    $bin balances | head -n 3
    psql -qtA "$db_url" -c "SELECT 'balance = sum(journal) for every account: ' || bool_and(b.balance = coalesce(j.s, 0)) FROM balances b LEFT JOIN (SELECT account_id, sum(amount) s FROM balance_journal GROUP BY 1) j USING (account_id)"
fi
