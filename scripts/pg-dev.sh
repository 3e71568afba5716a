#!/usr/bin/env bash
# A throwaway PostgreSQL 15 for trying pgmux with its embedded default config
# (pgmux listens on 127.0.0.1:6432 and serves PostgreSQL on 127.0.0.1:5432):
#
#   scripts/pg-dev.sh            start it (idempotent), user app/app, database bench
#   cargo run --release          in another terminal
#   psql "postgres://app:app@127.0.0.1:6432/bench"
#   pgbench -h 127.0.0.1 -p 6432 -U app -n -S -T 10 bench      (password app)
#   scripts/pg-dev.sh stop       stop it (the data stays for the next start)
#   scripts/pg-dev.sh status
#   scripts/pg-dev.sh clean      stop it and delete its data directory
#
# env: PGDEV_DIR (/tmp/pgmux-dev), PGDEV_PORT (5432), PGBIN
#      (/usr/lib/postgresql/15/bin), PGDEV_SCALE (1: pgbench tables; 0: none).
# The superuser `postgres` is reachable only over the Unix socket in PGDEV_DIR:
#   psql -h /tmp/pgmux-dev -p 5432 -U postgres    (as root: runuser -u postgres -- psql ...)
# Not for real data: fsync is off.
set -euo pipefail

DIR=${PGDEV_DIR:-/tmp/pgmux-dev}
PORT=${PGDEV_PORT:-5432}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
SCALE=${PGDEV_SCALE:-1}
DATA="$DIR/data"
USER_NAME=app PASSWORD=app DB=bench

die() { printf 'pg-dev.sh: %s\n' "$*" >&2; exit 1; }
# PostgreSQL refuses to run as root; runuser resets the soft open-file limit.
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    # shellcheck disable=SC2016  # expanded by the inner sh, on purpose
    runuser -u postgres -- sh -c 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"' sh "$@"
  else
    "$@"
  fi
}
running() { [ -f "$DATA/PG_VERSION" ] && as_pg "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }
psql_su() { as_pg "$PGBIN/psql" -h "$DIR" -p "$PORT" -U postgres -d postgres -qAtX -v ON_ERROR_STOP=1 "$@"; }

stop() {
  if running; then
    as_pg "$PGBIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
    echo "stopped PostgreSQL ($DATA)"
  else
    echo "not running ($DATA)"
  fi
}

start() {
  for t in initdb pg_ctl postgres psql pgbench; do
    [ -x "$PGBIN/$t" ] || die "$PGBIN/$t is missing: apt-get install postgresql-15 postgresql-client-15 (or set PGBIN)"
  done
  if [ "$(id -u)" = 0 ]; then
    id -u postgres >/dev/null 2>&1 || die "running as root needs an OS user postgres (PostgreSQL refuses to run as root)"
  fi
  if running; then
    echo "already running ($DATA)"
  else
    listening && die "something else already listens on 127.0.0.1:$PORT; stop it, or pick another port with PGDEV_PORT=PORT"
    mkdir -p "$DIR"
    [ "$(id -u)" = 0 ] && chown postgres: "$DIR"
    if [ ! -f "$DATA/PG_VERSION" ]; then
      echo "initdb $DATA"
      as_pg "$PGBIN/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
      cat >> "$DATA/postgresql.conf" <<CONF
# scripts/pg-dev.sh
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
max_connections = 200
password_encryption = 'scram-sha-256'
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
      cat > "$DATA/pg_hba.conf" <<CONF
# scripts/pg-dev.sh: superuser over the Unix socket only, everyone else by password
local all postgres trust
host  all all 127.0.0.1/32 scram-sha-256
host  all all ::1/128      scram-sha-256
CONF
    fi
    as_pg "$PGBIN/pg_ctl" -D "$DATA" -l "$DIR/postgresql.log" -w start >/dev/null \
      || die "PostgreSQL did not start; see $DIR/postgresql.log"
  fi

  if [ "$(psql_su -c "select count(*) from pg_roles where rolname = '$USER_NAME'")" = 0 ]; then
    psql_su -c "create role $USER_NAME login password '$PASSWORD'"
  fi
  if [ "$(psql_su -c "select count(*) from pg_database where datname = '$DB'")" = 0 ]; then
    psql_su -c "create database $DB owner $USER_NAME"
  fi
  if [ "$SCALE" != 0 ] && [ "$(psql_su -d "$DB" -c "select to_regclass('pgbench_accounts') is null")" = t ]; then
    echo "pgbench -i -s $SCALE $DB"
    PGPASSWORD=$PASSWORD "$PGBIN/pgbench" -h 127.0.0.1 -p "$PORT" -U "$USER_NAME" -i -s "$SCALE" -q "$DB" >/dev/null 2>&1 \
      || die "pgbench -i failed"
  fi
  echo "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT, data $DATA"
  echo "  user $USER_NAME / $PASSWORD (scram-sha-256), database $DB: postgres://$USER_NAME:$PASSWORD@127.0.0.1:$PORT/$DB"
}

case "${1:-start}" in
  start | up) start ;;
  stop | down) stop ;;
  status) if running; then echo "running on 127.0.0.1:$PORT ($DATA)"; else echo "not running ($DATA)"; exit 3; fi ;;
  clean) stop; rm -rf "$DIR"; echo "removed $DIR" ;;
  -h | --help | help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (start | stop | status | clean)" ;;
esac
