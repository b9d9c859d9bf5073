#!/usr/bin/env bash
# Fails when schema/src/schema.rs differs from what `diesel print-schema` generates from the
# migrations (it must never be edited by hand). Installs diesel_cli when missing (a few minutes,
# once per machine; it links libpq: Debian's libpq-dev).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v diesel >/dev/null 2>&1; then
    if ! dpkg -s libpq-dev >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libpq-dev
    fi
    echo "check-schema.sh: installing diesel_cli" >&2
    cargo install diesel_cli --no-default-features --features postgres --locked --quiet
fi

db_line=$(ILP_PG_DB=ilp_schema_check scripts/db.sh start)
url=${db_line#DATABASE_URL=}
# A fresh database each time, so the schema comes from the migrations alone.
base=${url%/*}
scratch="ilp_schema_check_$$"
psql_url() { echo "$base/$1"; }
PGCONNECT_TIMEOUT=10 psql -q "$(psql_url ilp_schema_check)" -c "CREATE DATABASE $scratch" >/dev/null
trap 'psql -q "$(psql_url ilp_schema_check)" -c "DROP DATABASE IF EXISTS $scratch WITH (FORCE)" >/dev/null' EXIT
generated=$(mktemp)
# Migrate with a config that has no [print_schema]: with it, `migration run` would rewrite
# schema.rs itself and the comparison below could never fail.
migrate_only=$(mktemp --suffix .toml)
printf '[migrations_directory]\ndir = "%s/migrations"\n' "$PWD" >"$migrate_only"
DATABASE_URL=$(psql_url "$scratch") diesel migration run --config-file "$migrate_only" >/dev/null
DATABASE_URL=$(psql_url "$scratch") diesel print-schema --config-file diesel.toml >"$generated"
if ! diff -u schema/src/schema.rs "$generated"; then
    echo "check-schema.sh: schema/src/schema.rs is stale: run 'diesel print-schema > schema/src/schema.rs' on a migrated database" >&2
    exit 1
fi
echo "check-schema.sh: schema.rs is up to date" >&2
