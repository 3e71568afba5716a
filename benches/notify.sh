#!/usr/bin/env bash
# LISTEN/NOTIFY in transaction mode: delivery latency (NOTIFY commit to client) through pgmux
# and directly, and pgmux's CPU time per notification delivered (benches/notify.py).
# Starts its own PostgreSQL 15 cluster (left running, like benches/instructions.sh) and a
# release pgmux; needs the drivers' Python (scripts/drivers-setup.sh).
#
# Environment: PGBIN [/usr/lib/postgresql/15/bin]  NOTIFY_DIR [/tmp/pgmux-notify]
#   NOTIFY_PG_PORT [27442]  NOTIFY_PGMUX_PORT [27443]  PGMUX_BIN (default: cargo build --release)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
DIR=${NOTIFY_DIR:-/tmp/pgmux-notify}
PG_PORT=${NOTIFY_PG_PORT:-27442}
PORT=${NOTIFY_PGMUX_PORT:-27443}
PYTHON="$ROOT/target/drivers/venv/bin/python"

die() { printf 'benches/notify.sh: %s\n' "$*" >&2; exit 2; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ -x "$PYTHON" ] || die "$PYTHON is missing: run scripts/drivers-setup.sh"

mkdir -p "$DIR"; [ "$(id -u)" = 0 ] && chown postgres: "$DIR"
PGDATA="$DIR/pg"
if ! as_pg "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
    printf "port = %s\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\nfsync = off\n" \
      "$PG_PORT" "$DIR" >> "$PGDATA/postgresql.conf"
    printf 'local all postgres trust\nhost all all 127.0.0.1/32 scram-sha-256\n' > "$PGDATA/pg_hba.conf"
  fi
  as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$DIR/postgresql.log" -w start >/dev/null || die "PostgreSQL did not start"
fi
psql_su() { as_pg "$PGBIN/psql" -h "$DIR" -p "$PG_PORT" -U postgres -qAtX -v ON_ERROR_STOP=1 "$@"; }
[ "$(psql_su -c "select count(*) from pg_roles where rolname = 'app'")" = 1 ] \
  || psql_su -c "set password_encryption = 'scram-sha-256'; create role app login password 'app'"
[ "$(psql_su -c "select count(*) from pg_database where datname = 'bench'")" = 1 ] \
  || psql_su -c "create database bench owner app"

BIN=${PGMUX_BIN:-}
if [ -z "$BIN" ]; then
  (cd "$ROOT" && cargo build --release --locked --bin pgmux) >&2 || die "cargo build failed"
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/pgmux"
fi
cat > "$DIR/pgmux.toml" <<CONF
[pooler]
listen_port = $PORT
default_pool_size = 2
[metrics]
listen = ""
[users.app]
password = "app"
[databases.bench]
host = "127.0.0.1"
port = $PG_PORT
CONF
RUST_LOG=warn "$BIN" --config "$DIR/pgmux.toml" >"$DIR/pgmux.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
dsn() { echo "host=127.0.0.1 port=$1 user=app password=app dbname=bench sslmode=disable"; }
"$PYTHON" "$ROOT/benches/notify.py" "$(dsn "$PG_PORT")" "$(dsn "$PORT")" "$pid"
