#!/usr/bin/env bash
# Starts (or reuses) a throwaway PostgreSQL cluster for this project, on 127.0.0.1 only.
#
#   scripts/db.sh [start]   start or reuse the cluster; prints DATABASE_URL=... on stdout
#   scripts/db.sh url       print the URL without starting anything
#   scripts/db.sh status    say whether it runs
#   scripts/db.sh stop      stop it (data kept)
#   scripts/db.sh destroy   stop it and delete its directory
#   scripts/db.sh standby-of PORT
#                           make this cluster a streaming standby of the cluster on
#                           127.0.0.1:PORT (a base backup, once) and start it; the primary then
#                           commits only once this standby has the WAL (synchronous_commit=on
#                           with synchronous_standby_names naming it); prints DATABASE_URL=...
#                           with both hosts and target_session_attrs=read-write
#   scripts/db.sh promote   make this standby the primary (after its primary is lost)
#
# Environment: ILP_PG_DIR (cluster directory, default <repo>/.pg, git-ignored),
# ILP_PG_PORT (default 54329), ILP_PG_DB (database created for the URL, default ilp).
# Installs Debian's `postgresql` package when no server binaries are found (needs root or sudo).
# As root the server runs as the `postgres` user, since initdb and postgres refuse root.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${ILP_PG_DIR:-$repo/.pg}
port=${ILP_PG_PORT:-54329}
db=${ILP_PG_DB:-ilp}
user=ilp
password=ilp
url="postgres://$user:$password@127.0.0.1:$port/$db"

log() { echo "db.sh: $*" >&2; }

find_bindir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n -r); do
        [ -x "$d/postgres" ] && [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/postgres" ]; then
        pg_config --bindir; return 0
    fi
    return 1
}

install_server() {
    log "PostgreSQL server binaries not found; installing Debian's postgresql package"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    # policy-rc.d keeps apt from starting the system's own cluster service.
    $sudo env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq postgresql >&2
}

bindir=$(find_bindir || true)

# as_owner runs a server binary as the cluster's owner: `postgres` when we are root.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

is_running() {
    [ -n "$bindir" ] || return 1
    [ -f "$dir/data/postmaster.pid" ] || return 1
    local pid
    pid=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null || true)
    [ -n "$pid" ] || return 1
    # A pid file can outlive its server (kill -9, reboot): trust it only if that pid is a live postgres.
    [ -r "/proc/$pid/comm" ] && grep -q '^postgres' "/proc/$pid/comm" && ! grep -q '^State:.*Z' "/proc/$pid/status"
}

pg_major() { "$bindir/postgres" --version | sed -E 's/[^0-9]*([0-9]+).*/\1/'; }

start() {
    if [ -z "$bindir" ]; then
        install_server
        bindir=$(find_bindir) || { log "no PostgreSQL server binaries after install"; exit 1; }
    fi
    mkdir -p "$dir"
    exec 9>"$dir/.lock"
    flock 9 # parallel test jobs may all try to start the cluster
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres "$dir"
        # every parent must be traversable by postgres (e.g. a clone under /root)
        local p=$dir
        while [ "$p" != "/" ]; do p=$(dirname "$p"); chmod o+x "$p" 2>/dev/null || true; done
    fi
    if [ -f "$dir/data/PG_VERSION" ] && [ "$(cat "$dir/data/PG_VERSION")" != "$(pg_major)" ]; then
        log "cluster in $dir/data was made by PostgreSQL $(cat "$dir/data/PG_VERSION"); re-initialising for $(pg_major)"
        stop_server || true
        rm -rf "$dir/data"
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        log "initialising a cluster in $dir/data"
        local pwfile=$dir/.pw
        echo "$password" >"$pwfile"
        [ "$(id -u)" -eq 0 ] && chown postgres "$pwfile"
        as_owner "$bindir/initdb" -D "$dir/data" --no-locale -E UTF8 -U "$user" \
            --pwfile="$pwfile" --auth=scram-sha-256 >"$dir/initdb.log" 2>&1 ||
            { cat "$dir/initdb.log" >&2; exit 1; }
        rm -f "$pwfile"
    fi
    if ! is_running; then
        # Another server (another checkout's cluster, the system's own) may hold the port.
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            log "port $port on 127.0.0.1 is taken by another server (not the cluster in $dir);"
            log "stop it, or choose another port with ILP_PG_PORT=... (and ILP_PG_DIR for a second cluster)"
            exit 1
        fi
        # Stale lock files from a killed server would stop the new one from starting.
        rm -f "$dir/data/postmaster.pid" "$dir"/.s.PGSQL."$port".lock
        as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 9>&- \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=300 -c fsync=on -c synchronous_commit=on" \
            start >/dev/null || { tail -n 20 "$dir/server.log" >&2; exit 1; }
        log "PostgreSQL $(pg_major) listening on 127.0.0.1:$port"
    fi
    # Create the database named in the URL once.
    if ! PGPASSWORD=$password "$bindir/psql" -h 127.0.0.1 -p "$port" -U "$user" -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
        PGPASSWORD=$password "$bindir/psql" -h 127.0.0.1 -p "$port" -U "$user" -d postgres -qc "CREATE DATABASE \"$db\"" >&2
    fi
    echo "DATABASE_URL=$url"
}

# psql as the cluster's superuser on 127.0.0.1:$1, unaligned and quiet.
psql_at() {
    local at=$1
    shift
    PGPASSWORD=$password "$bindir/psql" -h 127.0.0.1 -p "$at" -U "$user" -d postgres -qtA "$@"
}

standby_of() {
    local primary=$1
    [ -n "$primary" ] || { log "usage: scripts/db.sh standby-of PRIMARY_PORT"; exit 2; }
    [ -n "$bindir" ] || { log "no PostgreSQL server binaries (run scripts/db.sh start first)"; exit 1; }
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
    local name="standby_$port"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        log "base backup of 127.0.0.1:$primary into $dir/data"
        as_owner env PGPASSWORD=$password "$bindir/pg_basebackup" -h 127.0.0.1 -p "$primary" \
            -U "$user" -D "$dir/data" -X stream -R -c fast >&2
        # The standby names itself, so the primary can wait for it by name.
        echo "primary_conninfo = 'host=127.0.0.1 port=$primary user=$user password=$password application_name=$name'" \
            | as_owner tee -a "$dir/data/postgresql.auto.conf" >/dev/null
    fi
    if ! is_running; then
        rm -f "$dir/data/postmaster.pid" "$dir"/.s.PGSQL."$port".lock
        as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 9>&- \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=300 -c fsync=on -c synchronous_commit=on" \
            start >/dev/null || { tail -n 20 "$dir/server.log" >&2; exit 1; }
        log "standby of 127.0.0.1:$primary listening on 127.0.0.1:$port"
    fi
    psql_at "$primary" -c "ALTER SYSTEM SET synchronous_standby_names = '$name'" -c "SELECT pg_reload_conf()" >/dev/null
    local i
    for i in $(seq 300); do
        [ "$(psql_at "$primary" -c "SELECT sync_state FROM pg_stat_replication WHERE application_name = '$name'")" = sync ] && break
        sleep 0.1
    done
    [ "$i" -lt 300 ] || { log "the standby did not become synchronous within 30 s"; exit 1; }
    log "127.0.0.1:$primary now commits synchronously with $name"
    echo "DATABASE_URL=postgres://$user:$password@127.0.0.1:$primary,127.0.0.1:$port/$db?target_session_attrs=read-write"
}

promote() {
    is_running || { log "not running"; exit 1; }
    as_owner "$bindir/pg_ctl" -D "$dir/data" -w promote >/dev/null
    log "promoted: 127.0.0.1:$port is a primary"
}

stop_server() {
    if is_running; then
        as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
        log "stopped"
    fi
}

case "${1:-start}" in
start) start ;;
url) echo "DATABASE_URL=$url" ;;
status)
    if is_running; then echo "running on 127.0.0.1:$port ($dir)"; else echo "not running"; exit 3; fi ;;
stop) stop_server ;;
destroy) stop_server; rm -rf "$dir"; log "removed $dir" ;;
standby-of) standby_of "${2:-}" ;;
promote) promote ;;
*) echo "usage: scripts/db.sh [start|url|status|stop|destroy|standby-of PORT|promote]" >&2; exit 2 ;;
esac
