#!/usr/bin/env bash
# The main job, on one machine: local PostgreSQL, migrations, an example configuration with
# three accounts (scripts/example/accounts.sh), then ilp-connector and ilp-settlement-worker
# in the foreground. Then, in another terminal, the README's quick start pays carol.
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

# The example's accounts: alice (sends with alice-token), carol (paid here), bob (a peer).
ILP_BIN_DIR=$bin scripts/example/accounts.sh

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
