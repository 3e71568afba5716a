#!/usr/bin/env bash
# Where the machine's CPU goes per transaction once a pgbench run is in its steady state: the
# whole machine (busy, idle), pgbench, PostgreSQL and the pooler, read from /proc over a window
# that starts after every client has logged in. The pooler CPU of benches/pgbench.sh and
# benches/ctxsw.sh covers the whole run, logins included (a PgBouncer SCRAM login costs about
# 69 million instructions, so at 500 clients its logins alone add ~10 µs per transaction of a
# 10-second run); this one does not.
#
#   benches/cpu-split.sh NAME=PORT:PID ...   one pgbench run per target, in turn
#   env: CLIENTS (500), SKIP (4: seconds before the window), WINDOW (8 seconds), ROUNDS (1),
#        PG_PORT (25432: the PostgreSQL behind the poolers, whose commits count the
#        transactions), PGHOST (127.0.0.1), PGUSER/PGPASSWORD/PGDATABASE (app/app/bench),
#        PGBIN (/usr/lib/postgresql/15/bin)
#
#   e.g. benches/pgbench.sh up; target/release/pgmux --config /tmp/pgmux-pgbench/pgmux.toml &
#        benches/cpu-split.sh pgbouncer=26433:$(pidof pgbouncer) pgmux=26432:$(pidof pgmux)
set -euo pipefail
CLIENTS=${CLIENTS:-500}
SKIP=${SKIP:-4}
WINDOW=${WINDOW:-8}
ROUNDS=${ROUNDS:-1}
PG_PORT=${PG_PORT:-25432}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
HOST=${PGHOST:-127.0.0.1}
USER_=${PGUSER:-app}
DB=${PGDATABASE:-bench}
export PGPASSWORD=${PGPASSWORD:-app}
[ $# -ge 1 ] || { sed -n '2,16p' "$0"; exit 2; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
HZ=$(getconf CLK_TCK)

commits() {
  "$PGBIN/psql" -h "$HOST" -p "$PG_PORT" -U "$USER_" -d "$DB" -qAtc \
    "select xact_commit from pg_stat_database where datname = current_database()"
}
# CPU ticks (user + system) of every process whose name is $1 (pgbench, postgres).
# (Processes come and go while cat reads: its failure must not end the script under pipefail.)
ticks_of() { { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v n="($1)" '$2 == n {t += $14 + $15} END {print t + 0}'; }
pid_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Busy and idle ticks of the whole machine.
machine() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $5 + $6}' /proc/stat; }

printf '%-12s %5s %9s %6s %14s %10s %10s %10s %8s\n' \
  target round tx_per_s idle busy_us_per_tx pgbench postgres pooler other
for r in $(seq "$ROUNDS"); do
  for t in "$@"; do
    name=${t%%=*}; spec=${t#*=}; port=${spec%%:*}; pid=${spec#*:}
    [ "$pid" != "$spec" ] && [ -d "/proc/$pid" ] || { echo "cpu-split.sh: $name needs a running PID (NAME=PORT:PID)" >&2; exit 2; }
    "$PGBIN/pgbench" -h "$HOST" -p "$port" -U "$USER_" -n -S -c "$CLIENTS" -j 2 -T $((SKIP + WINDOW + 2)) "$DB" \
      >/tmp/cpu-split.$$.log 2>&1 &
    bench=$!
    sleep "$SKIP"
    read -r busy0 idle0 < <(machine); c0=$(commits); b0=$(ticks_of pgbench); g0=$(ticks_of postgres); p0=$(pid_ticks "$pid")
    sleep "$WINDOW"
    read -r busy1 idle1 < <(machine); c1=$(commits); b1=$(ticks_of pgbench); g1=$(ticks_of postgres); p1=$(pid_ticks "$pid")
    wait "$bench" || true
    if grep -q -E 'aborted|FATAL' /tmp/cpu-split.$$.log || [ $((c1 - c0)) -le 0 ]; then
      printf '%-12s %5s FAILED: %s\n' "$name" "$r" "$(grep -m1 -E 'aborted|FATAL|ERROR' /tmp/cpu-split.$$.log)"
      continue
    fi
    awk -v n="$name" -v r="$r" -v w="$WINDOW" -v hz="$HZ" -v tx=$((c1 - c0)) -v busy=$((busy1 - busy0)) \
      -v idle=$((idle1 - idle0)) -v b=$((b1 - b0)) -v g=$((g1 - g0)) -v p=$((p1 - p0)) 'BEGIN {
        us = 1e6 / hz / tx
        printf "%-12s %5s %9.0f %5.1f%% %14.1f %10.1f %10.1f %10.1f %8.1f\n", n, r, tx / w,
          100 * idle / (busy + idle), busy * us, b * us, g * us, p * us, (busy - b - g - p) * us
      }'
  done
done
rm -f /tmp/cpu-split.$$.log
