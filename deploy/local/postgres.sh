#!/usr/bin/env bash
# A PostgreSQL server on loopback for the test suite's PostgreSQL half.
#
#   postgres.sh install        installs the server (Debian's package) if absent
#   postgres.sh start DIR      initdb DIR (once) and start on a free port;
#                              prints the admin URL for MUSTER_TEST_POSTGRES_URL
#   postgres.sh stop DIR       stops it
#
# Tests create a database of their own per test and drop it after. The server
# trusts loopback connections of user `muster` and keeps no data worth a fsync
# (fsync=off): it lives only as long as one test run. MUSTER_PG_DURABLE=1
# keeps fsync on, for benchmarks that compare it with SQLite's synchronous=FULL.
# MUSTER_PG_LISTEN=ADDRESS listens there instead of 127.0.0.1 and trusts its
# subnet (a benchmark's network namespace, never a shared network).
set -euo pipefail
# shellcheck source=deploy/local/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

bin_dir() {
  local initdb
  initdb="$(command -v initdb 2>/dev/null || true)"
  if [[ -z "$initdb" ]]; then
    initdb="$(printf '%s\n' /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)"
    [[ -x "$initdb" ]] || initdb=""
  fi
  [[ -n "$initdb" ]] && dirname "$(readlink -f "$initdb")"
}

install() {
  if bin_dir >/dev/null; then
    return 0
  fi
  command -v apt-get >/dev/null || die "PostgreSQL is needed for the tests: install its server (initdb, pg_ctl) and run again"
  local sudo=""
  [[ "$(id -u)" == 0 ]] || sudo="sudo"
  say "installing PostgreSQL (Debian package postgresql)"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null ||
    { $sudo apt-get update -q >/dev/null && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; } ||
    die "could not install PostgreSQL with apt-get"
  bin_dir >/dev/null || die "PostgreSQL installed, but initdb is not found"
}

# Runs a PostgreSQL tool as an unprivileged user: the server refuses root.
as_owner() {
  if [[ "$(id -u)" == 0 ]]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start() {
  local dir="$1" bin port
  install
  bin="$(bin_dir)"
  mkdir -p "$dir"
  [[ "$(id -u)" == 0 ]] && { id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres; chown postgres "$dir"; }
  if [[ ! -f "$dir/PG_VERSION" ]]; then
    as_owner "$bin/initdb" -D "$dir" --username=muster --auth=trust --locale=C --encoding=UTF8 >"$dir.initdb.log" 2>&1 ||
      die "initdb failed: $(cat "$dir.initdb.log")"
  fi
  port="$(free_port)"
  local listen="${MUSTER_PG_LISTEN:-127.0.0.1}"
  if [[ "$listen" != 127.0.0.1 ]] && ! grep -q '^host all muster samenet trust' "$dir/pg_hba.conf"; then
    echo "host all muster samenet trust" >>"$dir/pg_hba.conf"
  fi
  local fsync="-c fsync=off"
  [[ "${MUSTER_PG_DURABLE:-0}" == 1 ]] && fsync="-c fsync=on -c synchronous_commit=on"
  as_owner "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -c listen_addresses=$listen -c unix_socket_directories='$dir' $fsync -c max_connections=400 -c shared_buffers=64MB" \
    start >/dev/null || die "PostgreSQL did not start: $(tail -20 "$dir/server.log")"
  echo "postgres://muster@$listen:$port/postgres?sslmode=disable"
}

stop() {
  local dir="$1" bin
  bin="$(bin_dir)" || return 0
  [[ -f "$dir/postmaster.pid" ]] || return 0
  as_owner "$bin/pg_ctl" -D "$dir" -m immediate -w stop >/dev/null 2>&1 || true
}

case "${1:-}" in
  install) install ;;
  start) start "${2:?start DIR}" ;;
  stop) stop "${2:?stop DIR}" ;;
  *) die "usage: postgres.sh install | start DIR | stop DIR" ;;
esac
