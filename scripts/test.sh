#!/usr/bin/env bash
# Runs every test: starts (or reuses) the local PostgreSQL from scripts/db.sh, installs the
# npm packages the end-to-end tests run (scripts/js.sh), then the whole workspace's tests
# with cargo-nextest (cargo test when nextest is missing).
# Extra arguments go to the test runner, e.g. `scripts/test.sh -p schema`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

db_line=$(scripts/db.sh start)
export TEST_DATABASE_URL=${db_line#DATABASE_URL=}
echo "test.sh: TEST_DATABASE_URL=$TEST_DATABASE_URL" >&2
scripts/js.sh

if cargo nextest --version >/dev/null 2>&1; then
    exec cargo nextest run --workspace --no-fail-fast "$@"
else
    exec cargo test --workspace --no-fail-fast "$@"
fi
