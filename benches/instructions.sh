#!/usr/bin/env bash
# User-space instructions pgmux executes per transaction, counted by valgrind's callgrind: the
# same count on a busy or an idle machine, so it can gate a change where TPS cannot.
#
#   benches/instructions.sh            print the counts for each mode
#   benches/instructions.sh --check    also fail (exit 1) when a count exceeds the figure in
#                                      benches/instructions.txt by more than 10 % (and stop
#                                      the cluster afterwards: scripts/test.sh runs this)
#
# For each mode ("-S" and "-S -M prepared"): pgmux (release build) runs under callgrind in front
# of a PostgreSQL 15 this script starts (its own cluster, scale 1, fsync off); pgbench runs the
# same 10 clients twice (500 and 2,500 transactions each) and the difference of the two counts,
# divided by the 20,000 transactions between them, is the cost per transaction: logins and
# start-up cancel out. Installs valgrind with apt when it is missing (as root).
#
# Environment: PGBIN [/usr/lib/postgresql/15/bin]  INSTR_DIR [/tmp/pgmux-instructions]
#   INSTR_PG_PORT [27432]  INSTR_PGMUX_PORT [27433]  PGMUX_BIN (default: cargo build --release)
#   INSTR_POOL_SIZE [20]: 3 makes most transactions wait for a server (the queue's cost);
#   --check compares against the committed figures only at the default.
#   INSTR_COMMAND: count this command instead of pgmux (it must listen on INSTR_PGMUX_PORT and
#   serve the cluster's database `bench`; see benches/floor.sh); not with --check.
#   INSTR_MODES: pgbench modes to count, comma-separated (default "-S,-S -M prepared").
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
DIR=${INSTR_DIR:-/tmp/pgmux-instructions}
PG_PORT=${INSTR_PG_PORT:-27432}
PORT=${INSTR_PGMUX_PORT:-27433}
FIGURES="$ROOT/benches/instructions.txt"
MODES=("-S" "-S -M prepared")
[ -n "${INSTR_MODES:-}" ] && IFS=, read -r -a MODES <<<"$INSTR_MODES"
CHECK=0; [ "${1:-}" = --check ] && CHECK=1
[ "$CHECK" = 1 ] && [ "${INSTR_POOL_SIZE:-20}" != 20 ] && { echo "benches/instructions.sh: --check compares at the default pool size" >&2; exit 2; }
[ "$CHECK" = 1 ] && [ -n "${INSTR_COMMAND:-}" ] && { echo "benches/instructions.sh: --check counts pgmux only" >&2; exit 2; }

say() { printf '==> %s\n' "$*"; }
die() { printf 'benches/instructions.sh: %s\n' "$*" >&2; exit 2; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! command -v valgrind >/dev/null; then
  [ "$(id -u)" = 0 ] || die "valgrind is missing: apt-get install valgrind"
  say "installing valgrind with apt"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null \
    || die "apt-get install valgrind failed"
fi

# --- PostgreSQL: a cluster of its own, left running for the next call (stopped after --check)
mkdir -p "$DIR"; [ "$(id -u)" = 0 ] && chown postgres: "$DIR"
PGDATA="$DIR/pg"
[ "$CHECK" = 1 ] && trap 'as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true' EXIT
if ! as_pg "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
    cat >> "$PGDATA/postgresql.conf" <<CONF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
fsync = off
synchronous_commit = off
password_encryption = 'scram-sha-256'
CONF
    printf 'local all postgres trust\nhost all all 127.0.0.1/32 scram-sha-256\n' > "$PGDATA/pg_hba.conf"
  fi
  as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$DIR/postgresql.log" -w start >/dev/null \
    || die "PostgreSQL did not start; see $DIR/postgresql.log"
fi
psql_su() { as_pg "$PGBIN/psql" -h "$DIR" -p "$PG_PORT" -U postgres -qAtX -v ON_ERROR_STOP=1 "$@"; }
[ "$(psql_su -c "select count(*) from pg_roles where rolname = 'app'")" = 1 ] \
  || psql_su -c "create role app login password 'app'"
[ "$(psql_su -c "select count(*) from pg_database where datname = 'bench'")" = 1 ] \
  || psql_su -c "create database bench owner app"
if [ "$(psql_su -d bench -c "select to_regclass('pgbench_accounts') is null")" = t ]; then
  PGPASSWORD=app "$PGBIN/pgbench" -h 127.0.0.1 -p "$PG_PORT" -U app -i -s 1 -q bench >"$DIR/init.log" 2>&1 \
    || die "pgbench -i failed; see $DIR/init.log"
fi

# --- pgmux -------------------------------------------------------------------------------
BIN=${PGMUX_BIN:-}
if [ -n "${INSTR_COMMAND:-}" ]; then
  read -r -a COMMAND <<<"$INSTR_COMMAND"
elif [ -z "$BIN" ]; then
  (cd "$ROOT" && cargo build --release --locked --bin pgmux) >&2 || die "cargo build failed"
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/pgmux"
fi
[ -n "${INSTR_COMMAND:-}" ] || COMMAND=("$BIN" --config "$DIR/pgmux.toml")
cat > "$DIR/pgmux.toml" <<CONF
[pooler]
listen_port = $PORT
workers = 1
default_pool_size = ${INSTR_POOL_SIZE:-20}
[metrics]
listen = ""
[users.app]
password = "app"
[databases.bench]
host = "127.0.0.1"
port = $PG_PORT
CONF

# count MODE: prints the instructions per transaction
count() {
  local mode=$1 out vpid total_a total_b
  listening "$PORT" && die "port $PORT is taken; set INSTR_PGMUX_PORT"
  out=$(mktemp -d)
  RUST_LOG=warn valgrind --tool=callgrind "--callgrind-out-file=$out/cg.out" "${COMMAND[@]}" >"$out/log" 2>&1 &
  vpid=$!
  # count runs in a subshell ($(count ...)): this trap is its own, so a pgbench that fails (die)
  # does not leave the pooler under valgrind holding the port.
  trap "kill $vpid 2>/dev/null" EXIT
  for _ in $(seq 150); do
    PGPASSWORD=app "$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U app -d bench -qAtc 'select 1' >/dev/null 2>&1 && break
    kill -0 "$vpid" 2>/dev/null || die "pgmux did not start under valgrind: $(tail -3 "$out/log")"
    sleep 0.3
  done
  bench() {
    PGPASSWORD=app "$PGBIN/pgbench" -h 127.0.0.1 -p "$PORT" -U app -n $mode -c 10 -j 2 -t "$1" bench >"$out/pgbench.$1" 2>&1 \
      || die "pgbench $mode failed: $(grep -m1 -iE 'error|fatal' "$out/pgbench.$1")"
  }
  # Every dump zeroes callgrind's counters, and the script waits for each dump's file to be
  # complete: a zeroing command that valgrind missed (callgrind_control gives up after a few
  # seconds on a busy machine) once let a run count the warm-up too and read 40 % high.
  dumped=0
  dump() {
    dumped=$((dumped + 1))
    local f="$out/cg.out.$dumped"
    callgrind_control -d "$vpid" >/dev/null 2>&1 || true
    for _ in $(seq 600); do
      [ -f "$f" ] && grep -q '^totals:' "$f" && break
      sleep 0.1
    done
    grep -q '^totals:' "$f" 2>/dev/null || die "callgrind did not dump ($f) for $mode"
    [ ! -f "$out/cg.out.$((dumped + 1))" ] || die "callgrind dumped more than asked for $mode"
  }
  summary() { awk '/^summary:/ {print $2; exit}' "$out/cg.out.$1"; }
  bench 100; dump          # dump 1: start-up, warm-up and its logins, thrown away
  bench 500; dump          # dump 2
  bench 2500; dump         # dump 3
  total_a=$(summary 2); total_b=$(summary 3)
  kill "$vpid" 2>/dev/null; wait "$vpid" 2>/dev/null || true
  rm -rf "$out"
  [ -n "$total_a" ] && [ -n "$total_b" ] || die "no callgrind totals for $mode"
  echo $(( (total_b - total_a) / 20000 ))
}

failed=0
for mode in "${MODES[@]}"; do
  n=$(count "$mode")
  figure=$(awk -F'\t' -v m="$mode" '$1 == m {print $2}' "$FIGURES" 2>/dev/null || true)
  if [ -n "${INSTR_COMMAND:-}" ]; then
    say "pgbench $mode: $n instructions per transaction (${COMMAND[0]##*/})"
    continue
  elif [ "${INSTR_POOL_SIZE:-20}" != 20 ]; then
    say "pgbench $mode, pool size $INSTR_POOL_SIZE: $n instructions per transaction"
    continue
  elif [ -z "$figure" ]; then
    say "pgbench $mode: $n instructions per transaction (no committed figure)"
    continue
  fi
  limit=$(( figure * 110 / 100 ))
  if [ "$n" -gt "$limit" ]; then
    say "pgbench $mode: $n instructions per transaction: MORE than $limit (the committed $figure + 10 %)"
    failed=1
  else
    say "pgbench $mode: $n instructions per transaction (committed $figure, limit $limit)"
  fi
done
[ "$CHECK" = 1 ] && [ "$failed" = 1 ] && exit 1
exit 0
