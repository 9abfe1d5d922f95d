#!/usr/bin/env bash
# A local PostgreSQL cluster for development and tests, kept under the project folder (.pg/).
#
#   scripts/db.sh start   install PostgreSQL if missing, init the cluster once, start it if stopped,
#                         create the database; safe to run any number of times
#   scripts/db.sh stop    stop it (data is kept; `rm -rf .pg` forgets it)
#   scripts/db.sh url     print the DB_SOURCE for it
#   scripts/db.sh status  say whether it runs
#   scripts/db.sh clean-test-dbs   drop databases kept by failed tests
#
# initdb and pg_ctl refuse to run as root, so as root the cluster belongs to the `postgres` user
# (created by Debian's package); otherwise to whoever runs this. It listens on 127.0.0.1 only, on
# PG_PORT (default 54320, away from a system cluster on 5432), with password auth. The credentials
# are simple_bank's well-known development ones: this cluster is never meant to hold real money.
set -euo pipefail

PG_PORT="${PG_PORT:-54320}"
PG_USER=root
PG_PASSWORD=secret
PG_DB="${PG_DB:-simple_bank}"

project_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pg_root="${PG_ROOT:-$project_dir/.pg}"

say() { printf 'db: %s\n' "$*" >&2; }

find_pg_bin() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/initdb" ] && bindir="$dir"   # keep the newest (globs sort ascending)
  done
  if [ -z "${bindir:-}" ] && command -v initdb >/dev/null 2>&1; then
    bindir="$(dirname "$(command -v initdb)")"
  fi
  [ -n "${bindir:-}" ]
}

install_postgres() {
  say "PostgreSQL not found; installing Debian's postgresql package"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq postgresql >/dev/null
}

# Runs a command as the cluster's owner.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    # From /: the caller's directory may be one `postgres` cannot enter (every path is absolute).
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

# As root, the cluster must live where `postgres` can reach it; a clone under a private home
# directory cannot be, so fall back to a per-project folder under /tmp.
choose_root() {
  mkdir -p "$pg_root"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$pg_root"
    if ! runuser -u postgres -- test -w "$pg_root"; then
      local fallback
      fallback="/tmp/simplebank-pg-$(printf '%s' "$project_dir" | cksum | cut -d' ' -f1)"
      say "postgres cannot reach $pg_root; using $fallback"
      pg_root="$fallback"
      mkdir -p "$pg_root"
      chown postgres: "$pg_root"
    fi
  fi
  data="$pg_root/data"
  log="$pg_root/postgres.log"
}

url() {
  printf 'postgresql://%s:%s@127.0.0.1:%s/%s?sslmode=disable\n' "$PG_USER" "$PG_PASSWORD" "$PG_PORT" "$PG_DB"
}

is_running() {
  [ -f "$data/PG_VERSION" ] && as_owner "$bindir/pg_ctl" status -D "$data" >/dev/null 2>&1
}

start() {
  find_pg_bin || { install_postgres; find_pg_bin; } || { say "no initdb after install"; exit 1; }
  choose_root
  if [ ! -f "$data/PG_VERSION" ]; then
    say "initialising a cluster in $data"
    local pwfile="$pg_root/pwfile"
    printf '%s\n' "$PG_PASSWORD" >"$pwfile"
    [ "$(id -u)" -ne 0 ] || chown postgres: "$pwfile"
    chmod 600 "$pwfile"
    as_owner "$bindir/initdb" -D "$data" -U "$PG_USER" --pwfile="$pwfile" \
      --auth=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
  fi
  export PGPASSWORD="$PG_PASSWORD"
  local psql=("$bindir/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -v ON_ERROR_STOP=1 -qtA)
  if is_running; then
    say "already running on 127.0.0.1:$PG_PORT"
  elif "$bindir/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
    # Someone else's server holds the port: another checkout's cluster, or a system one. Using
    # it silently would make `make db-stop` (and `make fault`'s restarts) act on a cluster that
    # is not the one answering; say whose it is instead.
    local theirs
    theirs="$("${psql[@]}" -d postgres -c 'SHOW data_directory' 2>/dev/null)" || theirs="(one that refuses $PG_USER/$PG_PASSWORD)"
    say "port $PG_PORT is taken by another PostgreSQL: its data directory is $theirs, not $data."
    say "Stop it (from its checkout: make db-stop), run this one on another port (PG_PORT=54330 make ...),"
    say "or point DB_SOURCE at that server to use it on purpose."
    exit 1
  else
    say "starting on 127.0.0.1:$PG_PORT (log: $log)"
    # No Unix socket: its directory may not exist or be writable here, and TCP is all we use.
    # max_connections: the concurrency tests run many pools side by side.
    if ! as_owner "$bindir/pg_ctl" start -D "$data" -l "$log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories='' -c max_connections=300" >/dev/null; then
      say "PostgreSQL did not start; the end of its log:"
      tail -n 20 "$log" >&2 || true
      exit 1
    fi
  fi
  # Whatever answered, it must be this checkout's cluster (ours may be running on another port
  # while something else holds PG_PORT).
  local serving
  serving="$("${psql[@]}" -d postgres -c 'SHOW data_directory' 2>/dev/null)" || serving="(unknown)"
  if [ "$(readlink -f "$serving" 2>/dev/null || echo "$serving")" != "$(readlink -f "$data")" ]; then
    say "the PostgreSQL on port $PG_PORT serves $serving, not this checkout's $data"
    say "(this one is running on another port: stop it with scripts/db.sh stop, then try again)"
    exit 1
  fi
  if [ "$("${psql[@]}" -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != 1 ]; then
    say "creating database $PG_DB"
    "${psql[@]}" -d postgres -c "CREATE DATABASE \"$PG_DB\""
  fi
}

# Drops the databases that failed tests kept for inspection (tests drop their own when they
# pass). A database still in use, by a test run in progress elsewhere, is left alone.
clean_test_dbs() {
  find_pg_bin || return 0
  export PGPASSWORD="$PG_PASSWORD"
  local psql=("$bindir/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -qtA)
  local db
  for db in $("${psql[@]}" -c "SELECT datname FROM pg_database WHERE datname LIKE 'sbtest\_%'" 2>/dev/null); do
    "${psql[@]}" -c "DROP DATABASE \"$db\"" >/dev/null 2>&1 || true
  done
}

stop() {
  find_pg_bin || { say "PostgreSQL is not installed; nothing to stop"; return 0; }
  choose_root
  if is_running; then
    as_owner "$bindir/pg_ctl" stop -D "$data" -m fast -w >/dev/null
    say "stopped"
  else
    say "not running"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url) url ;;
  clean-test-dbs) clean_test_dbs ;;
  status)
    find_pg_bin && choose_root && is_running && { say "running on 127.0.0.1:$PG_PORT"; exit 0; }
    say "not running"; exit 3 ;;
  *) echo "usage: $0 start|stop|url|status|clean-test-dbs" >&2; exit 2 ;;
esac
