#!/usr/bin/env bash
# The main job, on one machine: local PostgreSQL, migrations, an example configuration with
# two accounts, then ilp-connector and ilp-settlement-worker in the foreground.
# Ctrl-C (or SIGTERM) stops both cleanly.
#
#   scripts/run.sh            release build
#   PROFILE=dev scripts/run.sh  debug build (faster to compile)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

profile=${PROFILE:-release}
if [ "$profile" = release ]; then
    cargo build --release --bin ilp-connector --bin ilp-settlement-worker
    bin=target/release
else
    cargo build --bin ilp-connector --bin ilp-settlement-worker
    bin=target/debug
fi

db_line=$(scripts/db.sh start)
export DATABASE_URL=${db_line#DATABASE_URL=}
echo "run.sh: $db_line"

connector=("$bin/ilp-connector" --config scripts/example/connector.toml)
"${connector[@]}" migrate

# Two accounts: alice sends to us with a known token; bob receives at a local URL.
if ! "${connector[@]}" accounts show alice >/dev/null 2>&1; then
    "${connector[@]}" accounts add alice --asset-code USD --asset-scale 2 --relation child \
        --incoming-token alice-token --credit-limit 100000 >/dev/null
    echo "run.sh: added account alice (incoming token: alice-token)"
fi
if ! "${connector[@]}" accounts show bob >/dev/null 2>&1; then
    "${connector[@]}" accounts add bob --asset-code USD --asset-scale 2 --relation peer \
        --incoming-token bob-token --outgoing-url http://127.0.0.1:3999/ilp --outgoing-token bob-secret \
        --settle-threshold 100000 --ledger example-claims >/dev/null
    "${connector[@]}" routes add test.bob bob >/dev/null
    echo "run.sh: added account bob, route test.bob -> bob"
fi

pids=()
stop() {
    trap - INT TERM
    echo "run.sh: stopping"
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait
    exit 0
}
trap stop INT TERM

"${connector[@]}" serve &
pids+=($!)
"$bin/ilp-settlement-worker" --config scripts/example/worker.toml &
pids+=($!)
echo "run.sh: connector pid ${pids[0]}, worker pid ${pids[1]}; Ctrl-C stops both"
# If either exits on its own, stop the other too.
wait -n
status=$?
echo "run.sh: a process exited with status $status; stopping the other"
for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
wait
exit "$status"
