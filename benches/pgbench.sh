#!/usr/bin/env bash
# pgbench load test: pgmux against a direct connection and PgBouncer, in one run.
#
#   benches/pgbench.sh [SCENARIO...]   run the scenarios (default: c50)
#   benches/pgbench.sh up              only start PostgreSQL (and PgBouncer)
#   benches/pgbench.sh down            stop pgmux, PgBouncer and PostgreSQL
#   benches/pgbench.sh idle [N...]     memory per idle client (default N: 2000 5000), pgmux
#                                      and PgBouncer each started afresh for every N
#
# Scenarios, each run as `pgbench -n ARGS` (-n: no vacuum):
#   c50       -S -c 50 -j 2 -T $DURATION       select-only, 50 clients on POOL_SIZE servers
#   c500      -S -c 500 -j 2 -T $DURATION      500 clients
#   connect   -S -C -c 20 -j 2 -T $DURATION    a new connection (SCRAM login) per transaction
#   c1        -S -c 1 -j 1 -T $DURATION        one client: the latency a hop adds
#   prepared  -S -M prepared -c 50 -j 2 -T $DURATION
#
# Targets run alternately (A B C, A B C, ...) for ROUNDS rounds, so that drift
# in the machine's speed hits all alike. Per target it prints the median TPS,
# latency, connection time, the pooler's CPU time per transaction (user+sys of
# its process, from /proc/PID/stat, over the whole pgbench run, logins included)
# and the TPS ratio to the first target.
# A run with aborted clients, no TPS or a pgbench error is reported as FAILED,
# with the first error line. Logs: $BENCH_DIR/results/<time>/.
#
# Environment (defaults in brackets):
#   SCENARIOS ["c50"]  scenarios when none are given as arguments
#   PGBENCH_ARGS       one custom scenario instead, e.g. "-S -M prepared -c 50 -j 2 -T 10"
#   TARGETS ["direct pgbouncer pgmux"]  run order; the first is the ratio's base.
#                      pgmux-unix: a second pgmux (on PGMUX_UNIX_PORT) that reaches
#                      PostgreSQL through its Unix socket instead of loopback TCP.
#                      pgbouncer-ps: a newer PgBouncer (built once by benches/pgbouncer-build.sh)
#                      with max_prepared_statements = 200, which runs -M prepared (1.18 cannot).
#                      Also NAME=PORT[:PID] for any other server already running.
#   ROUNDS [3]  DURATION [10] seconds  WARMUP [2] seconds per target (0: none)
#   POOL_SIZE [20]  SCALE [10]  BENCH_DIR [/tmp/pgmux-pgbench]
#   PG_PORT [25432]  PGMUX_PORT [26432]  PGBOUNCER_PORT [26433]  PGMUX_UNIX_PORT [26434]
#   PGBOUNCER_PS_PORT [26435]
#   PGBIN [/usr/lib/postgresql/15/bin]
#   PGMUX_BIN          a pgmux binary to use as is (default: cargo build --release)
#   PGMUX_CONFIG       a pooler.toml to use instead of the generated one
#                      (it must listen on 127.0.0.1:PGMUX_PORT; not for pgmux-unix)
#   PGMUX_LOG [warn]   RUST_LOG for pgmux
#
# PostgreSQL (fsync off: it measures poolers, not disks) and PgBouncer stay up
# for the next run; pgmux is stopped at the end of every run. Each server runs in a session
# of its own (the kernel's autogroups share a busy CPU between sessions): a server started by
# hand for NAME=PORT:PID should be too (`setsid BINARY ... &`).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/pgmux-pgbench}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PG_PORT=${PG_PORT:-25432}
PGMUX_PORT=${PGMUX_PORT:-26432}
PGBOUNCER_PORT=${PGBOUNCER_PORT:-26433}
PGMUX_UNIX_PORT=${PGMUX_UNIX_PORT:-26434}
PGBOUNCER_PS_PORT=${PGBOUNCER_PS_PORT:-26435}
POOL_SIZE=${POOL_SIZE:-20}
SCALE=${SCALE:-10}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
TARGETS=${TARGETS:-direct pgbouncer pgmux}
BENCH_USER=app BENCH_PASSWORD=app BENCH_DB=bench
PGDATA_DIR="$BENCH_DIR/pg"
BOUNCER_DIR="$BENCH_DIR/pgbouncer"
PGMUX_PID=""
PGMUX_UNIX_PID=""

say() { printf '==> %s\n' "$*"; }
die() { printf 'pgbench.sh: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }
# PostgreSQL and PgBouncer refuse to run as root; runuser resets the soft
# open-file limit, so raise it again inside.
as_pg() {
  if is_root; then
    # shellcheck disable=SC2016  # expanded by the inner sh, on purpose
    runuser -u postgres -- sh -c 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"' sh "$@"
  else
    "$@"
  fi
}
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
pid_of() { if [ -f "$1" ]; then head -1 "$1"; fi; }
# user+sys clock ticks of a process and all its threads.
cpu_ticks() {
  if [ -n "$1" ] && [ -r "/proc/$1/stat" ]; then
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
  else
    echo 0
  fi
}
bouncer_bin() { command -v pgbouncer 2>/dev/null || { [ -x /usr/sbin/pgbouncer ] && echo /usr/sbin/pgbouncer; } || true; }

# --- PostgreSQL ---------------------------------------------------------------
pg_running() { [ -f "$PGDATA_DIR/PG_VERSION" ] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; }
psql_su() { as_pg "$PGBIN/psql" -h "$BENCH_DIR" -p "$PG_PORT" -U postgres -d "${PSQL_DB:-postgres}" -qAtX -v ON_ERROR_STOP=1 "$@"; }

pg_up() {
  local t
  for t in initdb pg_ctl postgres psql pgbench; do
    [ -x "$PGBIN/$t" ] || die "$PGBIN/$t is missing: apt-get install postgresql-15 postgresql-client-15 (or set PGBIN)"
  done
  mkdir -p "$BENCH_DIR"
  is_root && chown postgres: "$BENCH_DIR"
  if ! pg_running; then
    listening "$PG_PORT" && die "port $PG_PORT is taken by another server; set PG_PORT"
    if [ ! -f "$PGDATA_DIR/PG_VERSION" ]; then
      say "initdb $PGDATA_DIR"
      as_pg "$PGBIN/initdb" -D "$PGDATA_DIR" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
      cat >> "$PGDATA_DIR/postgresql.conf" <<CONF
# benches/pgbench.sh: measures poolers, not disks. Never use for real data.
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$BENCH_DIR'
max_connections = 1200
shared_buffers = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
password_encryption = 'scram-sha-256'
CONF
      cat > "$PGDATA_DIR/pg_hba.conf" <<CONF
local all postgres trust
local all all scram-sha-256
host  all all 127.0.0.1/32 scram-sha-256
CONF
    fi
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$BENCH_DIR/postgresql.log" -w start >/dev/null \
      || die "PostgreSQL did not start; see $BENCH_DIR/postgresql.log"
  fi
  # pgmux-unix logs in through the socket file: clusters made before it lack the line.
  if ! grep -q '^local all all' "$PGDATA_DIR/pg_hba.conf"; then
    echo 'local all all scram-sha-256' >> "$PGDATA_DIR/pg_hba.conf"
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" reload >/dev/null
  fi
  if [ "$(psql_su -c "select count(*) from pg_roles where rolname = '$BENCH_USER'")" = 0 ]; then
    psql_su -c "create role $BENCH_USER login password '$BENCH_PASSWORD'"
  fi
  if [ "$(psql_su -c "select count(*) from pg_database where datname = '$BENCH_DB'")" = 0 ]; then
    psql_su -c "create database $BENCH_DB owner $BENCH_USER"
  fi
  if [ "$(PSQL_DB=$BENCH_DB psql_su -c "select to_regclass('pgbench_accounts') is null")" = t ]; then
    say "pgbench -i -s $SCALE $BENCH_DB"
    PGPASSWORD=$BENCH_PASSWORD "$PGBIN/pgbench" -h 127.0.0.1 -p "$PG_PORT" -U "$BENCH_USER" \
      -i -s "$SCALE" -q "$BENCH_DB" >"$BENCH_DIR/pgbench-init.log" 2>&1 \
      || die "pgbench -i failed; see $BENCH_DIR/pgbench-init.log"
  fi
  say "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT ($PGDATA_DIR), user $BENCH_USER/$BENCH_PASSWORD, database $BENCH_DB scale $SCALE"
}

# --- PgBouncer ------------------------------------------------------------------
# Two may run: "pgbouncer" (the distribution's, installed with apt when missing) and
# "pgbouncer-ps" (a newer release built by benches/pgbouncer-build.sh, with
# max_prepared_statements = 200, so that it supports `pgbench -M prepared`).
# bouncer_up NAME prints nothing and returns 1 when that PgBouncer is not available.
bouncer_dir() { if [ "$1" = pgbouncer-ps ]; then echo "$BOUNCER_DIR-ps"; else echo "$BOUNCER_DIR"; fi; }
bouncer_port() { if [ "$1" = pgbouncer-ps ]; then echo "$PGBOUNCER_PS_PORT"; else echo "$PGBOUNCER_PORT"; fi; }

apt_bouncer() {
  local bin
  bin=$(bouncer_bin)
  if [ -z "$bin" ] && is_root && command -v apt-get >/dev/null; then
    say "PgBouncer missing: apt-get install -y pgbouncer (its own service is not started)" >&2
    local policy_rc=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
      policy_rc=/usr/sbin/policy-rc.d
    fi
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-upgrade pgbouncer; } \
      >"$BENCH_DIR/apt-pgbouncer.log" 2>&1 || say "apt-get install pgbouncer failed; see $BENCH_DIR/apt-pgbouncer.log" >&2
    [ -n "$policy_rc" ] && rm -f "$policy_rc"
    bin=$(bouncer_bin)
  fi
  echo "$bin"
}

bouncer_up() {
  local name=${1:-pgbouncer} bin dir port pid extra=""
  dir=$(bouncer_dir "$name"); port=$(bouncer_port "$name")
  if [ "$name" = pgbouncer-ps ]; then
    say "building PgBouncer with benches/pgbouncer-build.sh, unless built before"
    bin=$(BENCH_DIR=$BENCH_DIR "$ROOT/benches/pgbouncer-build.sh") || bin=""
    extra="max_prepared_statements = 200"
  else
    bin=$(apt_bouncer)
  fi
  if [ -z "$bin" ]; then
    say "$name is not available (see the messages above): skipping it"
    return 1
  fi
  mkdir -p "$dir"
  cat > "$dir/pgbouncer.ini" <<CONF
[databases]
$BENCH_DB = host=127.0.0.1 port=$PG_PORT dbname=$BENCH_DB
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
max_client_conn = 5000
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
$extra
CONF
  echo "\"$BENCH_USER\" \"$BENCH_PASSWORD\"" > "$dir/userlist.txt"
  is_root && chown -R postgres: "$dir"
  pid=$(pid_of "$dir/pgbouncer.pid")
  if alive "$pid"; then
    kill -HUP "$pid"   # reload the settings (a changed port needs `down` first)
  else
    listening "$port" && die "port $port is taken by another server; set PGBOUNCER_PORT or PGBOUNCER_PS_PORT"
    as_pg "$bin" -d "$dir/pgbouncer.ini" || die "$name did not start; see $dir/pgbouncer.log"
    local _
    for _ in $(seq 50); do listening "$port" && break; sleep 0.1; done
    pid=$(pid_of "$dir/pgbouncer.pid")
  fi
  say "$name $("$bin" --version | head -1 | awk '{print $2}') on 127.0.0.1:$port, pid $pid, pool size $POOL_SIZE"
}

# --- pgmux ----------------------------------------------------------------------
# Two pgmux instances may run: "pgmux" (to PostgreSQL over loopback TCP) and "pgmux-unix"
# (through PostgreSQL's socket file in $BENCH_DIR). $BENCH_DIR/NAME.pid holds a pid and its
# binary, so one an interrupted run left behind is stopped (a recycled pid is left alone).
stop_pgmux() {
  local name pid
  for name in pgmux pgmux-unix; do
    pid=$PGMUX_PID; [ "$name" = pgmux-unix ] && pid=$PGMUX_UNIX_PID
    if [ -z "$pid" ] && [ -f "$BENCH_DIR/$name.pid" ]; then
      pid=$(sed -n 1p "$BENCH_DIR/$name.pid")
      [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(sed -n 2p "$BENCH_DIR/$name.pid")" ] || pid=""
    fi
    if alive "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      local _
      for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
      alive "$pid" && kill -KILL "$pid" 2>/dev/null
      say "stopped $name (pid $pid)"
    fi
    rm -f "$BENCH_DIR/$name.pid"
  done
  PGMUX_PID=""; PGMUX_UNIX_PID=""
}

pgmux_bin() {
  if [ -n "${PGMUX_BIN:-}" ]; then
    echo "$PGMUX_BIN"
    return
  fi
  command -v cargo >/dev/null || die "cargo not found (or set PGMUX_BIN to a pgmux binary)"
  say "cargo build --release --bin pgmux" >&2
  (cd "$ROOT" && cargo build --release --bin pgmux) >&2 || die "cargo build failed"
  echo "${CARGO_TARGET_DIR:-$ROOT/target}/release/pgmux"
}

# pgmux_up [pgmux|pgmux-unix]
pgmux_up() {
  local name=${1:-pgmux} bin cfg port host pid
  bin=$(pgmux_bin)
  [ -x "$bin" ] || die "no pgmux binary at $bin"
  port=$PGMUX_PORT host=127.0.0.1
  [ "$name" = pgmux-unix ] && port=$PGMUX_UNIX_PORT host=$BENCH_DIR
  listening "$port" && die "port $port is taken by another server; set PGMUX_PORT or PGMUX_UNIX_PORT"
  if [ -n "${PGMUX_CONFIG:-}" ] && [ "$name" = pgmux ]; then
    cfg=$PGMUX_CONFIG
  else
    cfg="$BENCH_DIR/$name.toml"
    cat > "$cfg" <<CONF
# benches/pgbench.sh: the same pool as PgBouncer's
[pooler]
listen_addr = "127.0.0.1"
listen_port = $port
pool_mode = "transaction"
default_pool_size = $POOL_SIZE
max_client_conn = 5000
auth_type = "scram-sha-256"

[metrics]
listen = ""

[users.$BENCH_USER]
password = "$BENCH_PASSWORD"

[databases.$BENCH_DB]
host = "$host"
port = $PG_PORT
CONF
  fi
  "$bin" check --config "$cfg" >"$BENCH_DIR/$name-check.log" 2>&1 \
    || die "pgmux check --config $cfg failed: $(head -3 "$BENCH_DIR/$name-check.log")"
  # In a session of its own, as PgBouncer (`-d`) and PostgreSQL (pg_ctl) are: with the kernel's
  # autogroup scheduling (/proc/sys/kernel/sched_autogroup_enabled) a busy machine shares the CPU
  # between sessions first, and pgmux started in this script's session would share pgbench's
  # part (measured: 4 to 6 % fewer transactions at 500 clients). A background job of a script
  # is not a process group leader, so setsid makes the session without forking: $! is pgmux.
  RUST_LOG=${PGMUX_LOG:-warn} setsid "$bin" --config "$cfg" >"$BENCH_DIR/$name.log" 2>&1 &
  pid=$!
  if [ "$name" = pgmux-unix ]; then PGMUX_UNIX_PID=$pid; else PGMUX_PID=$pid; fi
  printf '%s\n%s\n' "$pid" "$(readlink -f "$bin")" > "$BENCH_DIR/$name.pid"
  local _
  for _ in $(seq 100); do
    listening "$port" && break
    alive "$pid" || die "$name exited at start: $(tail -3 "$BENCH_DIR/$name.log")"
    sleep 0.1
  done
  listening "$port" || die "$name does not listen on $port after 10 s; see $BENCH_DIR/$name.log"
  [ "$(ps -o sid= -p "$pid" | tr -d ' ')" = "$pid" ] || die "$name (pid $pid) is not in a session of its own"
  say "$name $bin on 127.0.0.1:$port, pid $pid, config $cfg"
}

down() {
  stop_pgmux
  local pid name
  for name in pgbouncer pgbouncer-ps; do
    pid=$(pid_of "$(bouncer_dir "$name")/pgbouncer.pid")
    if alive "$pid"; then
      kill -TERM "$pid"; say "stopped $name (pid $pid)"
    fi
  done
  if pg_running; then
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w stop >/dev/null; say "stopped PostgreSQL ($PGDATA_DIR)"
  fi
}

# --- measuring ------------------------------------------------------------------
scenario_args() {
  case "$1" in
    c50) echo "-S -c 50 -j 2 -T $DURATION" ;;
    c500) echo "-S -c 500 -j 2 -T $DURATION" ;;
    connect) echo "-S -C -c 20 -j 2 -T $DURATION" ;;
    c1) echo "-S -c 1 -j 1 -T $DURATION" ;;
    prepared) echo "-S -M prepared -c 50 -j 2 -T $DURATION" ;;
    *) die "unknown scenario '$1' (c50 c500 connect c1 prepared, or PGBENCH_ARGS)" ;;
  esac
}

# target name -> "port pid" (pid empty for a direct connection)
target_port() {
  case "$1" in
    direct) echo "$PG_PORT" ;;
    pgbouncer | pgbouncer-ps) bouncer_port "$1" ;;
    pgmux) echo "$PGMUX_PORT" ;;
    pgmux-unix) echo "$PGMUX_UNIX_PORT" ;;
    *=*) local spec=${1#*=}; echo "${spec%%:*}" ;;
  esac
}
target_pid() {
  case "$1" in
    direct) echo "" ;;
    pgbouncer | pgbouncer-ps) pid_of "$(bouncer_dir "$1")/pgbouncer.pid" ;;
    pgmux) echo "$PGMUX_PID" ;;
    pgmux-unix) echo "$PGMUX_UNIX_PID" ;;
    *=*:*) echo "${1##*:}" ;;
    *) echo "" ;;
  esac
}
target_name() { echo "${1%%=*}"; }

# pgbench ARGS against PORT, output in LOG; returns pgbench's status (124: timed out).
pgbench_run() {
  local port=$1 args=$2 log=$3 secs limit
  secs=$(sed -n 's/.*-T \{0,1\}\([0-9][0-9]*\).*/\1/p' <<<"$args")
  limit=$(( ${secs:-180} * 3 + 30 ))
  # shellcheck disable=SC2086  # ARGS are split into words on purpose
  PGPASSWORD=$BENCH_PASSWORD timeout --foreground --kill-after=10 "$limit" "$PGBIN/pgbench" \
    -h 127.0.0.1 -p "$port" -U "$BENCH_USER" -n $args "$BENCH_DB" >"$log" 2>&1
}

# Median of numbers on stdin (mean of the middle two for an even count); "-" for none.
median() {
  sort -g | awk '{v[NR] = $1}
    END {if (!NR) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

run_scenario() {
  local label=$1 args=$2 dir=$3 rows r t name port pid c0 c1 rc log tps lat conn xacts cpu err
  rows="$dir/$label.rows"; : > "$rows"
  echo
  say "scenario $label: pgbench -n $args, $ROUNDS rounds, targets: ${RUN_TARGETS[*]}"
  if [ "$WARMUP" != 0 ]; then
    for t in "${RUN_TARGETS[@]}"; do
      pgbench_run "$(target_port "$t")" "-S -c 10 -j 2 -T $WARMUP" "$dir/$label.warmup.$(target_name "$t")" || true
    done
  fi
  for r in $(seq "$ROUNDS"); do
    for t in "${RUN_TARGETS[@]}"; do
      name=$(target_name "$t"); port=$(target_port "$t"); pid=$(target_pid "$t")
      log="$dir/$label.$name.$r.log"
      if [[ "$name" = pgmux* ]] && ! alive "$pid"; then
        echo "$name is not running: $(tail -1 "$BENCH_DIR/$name.log" 2>/dev/null)" > "$log"
        rc=1
      else
        c0=$(cpu_ticks "$pid")
        rc=0; pgbench_run "$port" "$args" "$log" || rc=$?
        c1=$(cpu_ticks "$pid")
      fi
      tps=$(grep -oP '^tps = \K[0-9.]+' "$log" | head -1 || true)
      lat=$(grep -oP 'latency average = \K[0-9.]+' "$log" | head -1 || true)
      conn=$(grep -oP '(initial|average) connection time = \K[0-9.]+' "$log" | head -1 || true)
      xacts=$(grep -oP 'actually processed: \K[0-9]+' "$log" | head -1 || true)
      if [ "$rc" != 0 ] || [ -z "$tps" ] || [ -z "$xacts" ] || [ "$xacts" = 0 ] || grep -q 'aborted' "$log"; then
        err=$(grep -m1 -iE 'error|fatal|aborted|refused|not running' "$log" || true)
        [ "$rc" = 124 ] && err="pgbench timed out (a stuck pooler?) ${err}"
        [ -z "$err" ] && [ "$xacts" = 0 ] && err="0 transactions processed (did the clients' logins outlast -T?)"
        [ -z "$err" ] && err="pgbench exit $rc, no tps; last line: $(tail -1 "$log")"
        printf 'round %s  %-12s FAILED: %s\n' "$r" "$name" "$err"
        echo "$name FAILED $err" >> "$rows"
      else
        if [ -n "$pid" ]; then
          cpu=$(awk -v c=$((c1 - c0)) -v x="$xacts" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.1f", c*1e6/hz/x}')
        else
          cpu="-"
        fi
        printf 'round %s  %-12s tps=%-10s latency_ms=%-8s conn_ms=%-8s pooler_cpu_us_per_tx=%s\n' \
          "$r" "$name" "$tps" "$lat" "${conn:--}" "$cpu"
        echo "$name OK $tps $lat ${conn:--} $cpu" >> "$rows"
      fi
    done
  done
  summarize "$label" "$args" "$rows" | tee -a "$dir/summary.txt"
}

summarize() {
  local label=$1 args=$2 rows=$3 t name base="" med lo hi lat conn cpu nfail
  echo
  echo "== $label: pgbench -n $args, $ROUNDS rounds, pool size $POOL_SIZE, medians"
  printf '%-12s %10s %15s %11s %9s %14s %7s\n' target tps min-max latency_ms conn_ms cpu_us_per_tx ratio
  for t in "${RUN_TARGETS[@]}"; do
    name=$(target_name "$t")
    nfail=$(awk -v n="$name" '$1==n && $2=="FAILED"' "$rows" | wc -l)
    if [ "$nfail" -gt 0 ]; then
      printf '%-12s %10s  (%s of %s runs) %s\n' "$name" FAILED "$nfail" "$ROUNDS" \
        "$(awk -v n="$name" '$1==n && $2=="FAILED" {$1=$2=""; sub(/^ +/, ""); print; exit}' "$rows")"
      continue
    fi
    med=$(awk -v n="$name" '$1==n {print $3}' "$rows" | median)
    lo=$(awk -v n="$name" '$1==n {print $3}' "$rows" | sort -g | head -1)
    hi=$(awk -v n="$name" '$1==n {print $3}' "$rows" | sort -g | tail -1)
    lat=$(awk -v n="$name" '$1==n {print $4}' "$rows" | median)
    conn=$(awk -v n="$name" '$1==n && $5!="-" {print $5}' "$rows" | median)
    cpu=$(awk -v n="$name" '$1==n && $6!="-" {print $6}' "$rows" | median)
    [ -z "$base" ] && base=$med
    printf '%-12s %10.0f %15s %11s %9s %14s %7.2f\n' "$name" "$med" \
      "$(printf '%.0f-%.0f' "$lo" "$hi")" "$lat" "$conn" "$cpu" \
      "$(awk -v a="$med" -v b="$base" 'BEGIN{print (b > 0) ? a / b : 0}')"
  done
}

# --- idle clients ----------------------------------------------------------------
# N clients log in and sit idle (a pgbench script that only sleeps); the pooler's RSS is
# read before they connect (after one login of its own, so that what a pooler makes once at
# its first login, such as pgmux's login throttle table, is not counted per client) and once
# all are established.
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
established() { ss -Htn state established "( dport = :$1 )" | wc -l; }

idle_measure() {  # name port pid n
  local name=$1 port=$2 pid=$3 n=$4 script before during open bench _
  script=$(mktemp); echo '\sleep 60 s' > "$script"
  PGPASSWORD=$BENCH_PASSWORD "$PGBIN/psql" -h 127.0.0.1 -p "$port" -U "$BENCH_USER" -d "$BENCH_DB" \
    -qAtc 'select 1' >/dev/null 2>&1 || die "$name: the warm-up login failed"
  before=$(rss_kib "$pid")
  PGPASSWORD=$BENCH_PASSWORD "$PGBIN/pgbench" -h 127.0.0.1 -p "$port" -U "$BENCH_USER" -n \
    -c "$n" -j 2 -t 1 -f "$script" "$BENCH_DB" >/dev/null 2>&1 &
  bench=$!
  for _ in $(seq 240); do [ "$(established "$port")" -ge "$n" ] && break; sleep 0.5; done
  sleep 1
  open=$(established "$port"); during=$(rss_kib "$pid")
  kill "$bench" 2>/dev/null || true; wait "$bench" 2>/dev/null || true; rm -f "$script"
  [ "$open" -gt 0 ] || die "$name: no client got connected"
  printf '%-10s %6s idle clients: RSS %6s -> %6s KiB, %5s bytes per client\n' "$name" "$open" \
    "$before" "$during" "$(( (during - before) * 1024 / open ))"
}

idle_run() {
  local n pid
  trap 'stop_pgmux' EXIT
  stop_pgmux >/dev/null   # leftovers of an interrupted run
  for n in "${@:-2000 5000}"; do
    for n in $n; do
      pid=$(pid_of "$BOUNCER_DIR/pgbouncer.pid")
      if alive "$pid"; then kill "$pid"; for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done; fi
      if bouncer_up >/dev/null; then
        idle_measure pgbouncer "$PGBOUNCER_PORT" "$(pid_of "$BOUNCER_DIR/pgbouncer.pid")" "$n"
      fi
      pgmux_up >/dev/null
      idle_measure pgmux "$PGMUX_PORT" "$PGMUX_PID" "$n"
      stop_pgmux >/dev/null
    done
  done
}

# --- main -----------------------------------------------------------------------
cmd=${1:-}
case "$cmd" in
  -h | --help | help) sed -n '2,45p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  down) down; exit 0 ;;
esac

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
mkdir -p "$BENCH_DIR"
pg_up
if [ "$cmd" = idle ]; then
  shift
  idle_run "$@"
  exit 0
fi
if [ "$cmd" = up ]; then
  bouncer_up || true
  exit 0
fi

# scenarios: arguments, else PGBENCH_ARGS, else SCENARIOS
labels=() argsets=()
if [ $# -gt 0 ]; then
  for s in "$@"; do labels+=("$s"); argsets+=("$(scenario_args "$s")"); done
elif [ -n "${PGBENCH_ARGS:-}" ]; then
  labels+=(custom); argsets+=("$PGBENCH_ARGS")
else
  for s in ${SCENARIOS:-c50}; do labels+=("$s"); argsets+=("$(scenario_args "$s")"); done
fi

RUN_TARGETS=()
stop_pgmux   # leftovers of an interrupted run
trap 'stop_pgmux' EXIT
trap 'exit 130' INT TERM
for t in $TARGETS; do
  case "$t" in
    direct) RUN_TARGETS+=("$t") ;;
    pgbouncer | pgbouncer-ps) if bouncer_up "$t"; then RUN_TARGETS+=("$t"); fi ;;
    pgmux | pgmux-unix) pgmux_up "$t"; RUN_TARGETS+=("$t") ;;
    *=*) listening "$(target_port "$t")" || die "target $t: nothing listens on that port"; RUN_TARGETS+=("$t") ;;
    *) die "unknown target '$t' (direct pgbouncer pgbouncer-ps pgmux pgmux-unix, or NAME=PORT[:PID])" ;;
  esac
done
[ ${#RUN_TARGETS[@]} -gt 0 ] || die "no targets to run"

results="$BENCH_DIR/results/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$results"
{
  echo "benches/pgbench.sh $(date -Is) on $(nproc) CPUs, $(uname -r)"
  echo "PostgreSQL 127.0.0.1:$PG_PORT; pooler pool size $POOL_SIZE; pgbench $("$PGBIN/pgbench" --version | awk '{print $3}')"
} | tee "$results/summary.txt"
for i in "${!labels[@]}"; do
  run_scenario "${labels[$i]}" "${argsets[$i]}" "$results"
done
echo
say "logs and summary: $results"
