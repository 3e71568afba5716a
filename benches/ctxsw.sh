#!/usr/bin/env bash
# Context switches and CPU a pooler spends per transaction, read from /proc around one
# pgbench run (voluntary + involuntary, summed over every thread of the process), the CPU also
# split into user space and kernel (what callgrind's instruction count can see, and what not).
#
#   benches/ctxsw.sh NAME=PORT:PID ...   one pgbench run per target, in turn
#   env: PGBENCH_ARGS (default "-S -c 50 -j 2 -T 10"), ROUNDS (default 1), PGHOST (127.0.0.1),
#        PGUSER/PGPASSWORD/PGDATABASE (app/app/bench), PGBIN (/usr/lib/postgresql/15/bin)
#
#   e.g. benches/ctxsw.sh pgbouncer=16432:$(pidof pgbouncer) pgmux=6432:$(pidof pgmux)
set -euo pipefail
ARGS=${PGBENCH_ARGS:--S -c 50 -j 2 -T 10}
ROUNDS=${ROUNDS:-1}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
export PGPASSWORD=${PGPASSWORD:-app}
[ $# -ge 1 ] || { sed -n '2,9p' "$0"; exit 2; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Sum of voluntary and involuntary switches over the process's threads.
# (A thread may end while cat reads: its failure must not end the script under pipefail.)
switches() {
  { cat /proc/"$1"/task/*/status 2>/dev/null || true; } |
    awk '/^(non)?voluntary_ctxt_switches/ {s += $2} END {print s + 0}'
}
# User and system CPU ticks of the process (all its threads).
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }

printf '%-12s %5s %10s %10s %12s %12s %12s %12s\n' target round tps xacts ctxsw_per_tx cpu_us_per_tx user_us sys_us
for r in $(seq "$ROUNDS"); do
  for t in "$@"; do
    name=${t%%=*}; spec=${t#*=}; port=${spec%%:*}; pid=${spec#*:}
    [ "$pid" != "$spec" ] && [ -d "/proc/$pid" ] || { echo "ctxsw.sh: $name needs a running PID (NAME=PORT:PID)" >&2; exit 2; }
    s0=$(switches "$pid"); read -r u0 k0 < <(cpu_ticks "$pid")
    log=$("$PGBIN/pgbench" -h "${PGHOST:-127.0.0.1}" -p "$port" -U "${PGUSER:-app}" -n $ARGS "${PGDATABASE:-bench}" 2>&1) || true
    s1=$(switches "$pid"); read -r u1 k1 < <(cpu_ticks "$pid")
    xacts=$(grep -oP 'actually processed: \K[0-9]+' <<<"$log" || echo 0)
    tps=$(grep -oP 'tps = \K[0-9.]+' <<<"$log" | head -1 || true)
    if [ "${xacts:-0}" -eq 0 ] || grep -q aborted <<<"$log"; then
      printf '%-12s %5s FAILED: %s\n' "$name" "$r" "$(grep -m1 -E 'ERROR|error|FATAL' <<<"$log")"; continue
    fi
    awk -v n="$name" -v r="$r" -v t="$tps" -v x="$xacts" -v s=$((s1 - s0)) -v u=$((u1 - u0)) -v k=$((k1 - k0)) \
      -v hz="$(getconf CLK_TCK)" 'BEGIN {f = 1e6 / hz / x
        printf "%-12s %5s %10.0f %10d %12.3f %12.1f %12.1f %12.1f\n", n, r, t, x, s / x, (u + k) * f, u * f, k * f}'
  done
done
