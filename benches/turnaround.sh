#!/usr/bin/env bash
# How long a pooler's server connections sit between an answer and the next request: from the
# pooler's read of a server's answer (recvfrom on that socket) to its next write of a request
# (sendto on the same socket), from perf's syscall tracepoints over 2 s in the middle of a
# pgbench run. A long gap leaves PostgreSQL's backend idle while clients queue.
#
#   benches/turnaround.sh NAME=PORT:PID ...   one pgbench run per target, in turn
#   env: PGBENCH_ARGS (default "-S -c 500 -j 2 -T 12"), SERVER_PORT (PostgreSQL's port the
#        pooler connects to, default 25432: benches/pgbench.sh's), PGUSER/PGPASSWORD/PGDATABASE
#        (app/app/bench), PGBIN (/usr/lib/postgresql/15/bin). Needs perf (linux-perf) and root.
#
# Tracing costs the pooler time (TPS under it is lower): compare poolers within one run.
set -euo pipefail
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
ARGS=${PGBENCH_ARGS:--S -c 500 -j 2 -T 12}
export PGPASSWORD=${PGPASSWORD:-app}
command -v perf >/dev/null || { echo "turnaround.sh: needs perf (apt-get install linux-perf)" >&2; exit 2; }
ulimit -n 20000 || true
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

printf '%-12s %8s %10s %8s %8s %8s %8s %10s\n' target tps gaps mean_us p50_us p90_us p99_us server_idle
for t in "$@"; do
  name=${t%%=*}; spec=${t#*=}; port=${spec%%:*}; pid=${spec#*:}
  [ "$pid" != "$spec" ] && [ -d "/proc/$pid" ] || { echo "turnaround.sh: $name needs a running PID (NAME=PORT:PID)" >&2; exit 2; }
  "$PGBIN/pgbench" -h "${PGHOST:-127.0.0.1}" -p "$port" -U "${PGUSER:-app}" -n $ARGS "${PGDATABASE:-bench}" >"$work/pgbench" 2>&1 &
  bench=$!
  sleep "${TRACE_AFTER:-6}"
  # The pooler's sockets to PostgreSQL, by descriptor.
  ss -tnpH state established "( dport = :${SERVER_PORT:-25432} )" | grep "pid=$pid," |
    grep -o 'fd=[0-9]*' | cut -d= -f2 | sort -u >"$work/fds"
  perf record -q -o "$work/perf.data" -e syscalls:sys_enter_sendto -e syscalls:sys_enter_recvfrom \
    -e syscalls:sys_exit_recvfrom -p "$pid" -- sleep 2 >/dev/null 2>&1
  wait "$bench" || true
  perf script -i "$work/perf.data" -F time,event,trace 2>/dev/null >"$work/trace"
  tps=$(grep -oP 'tps = \K[0-9.]+' "$work/pgbench" | head -1 || echo 0)
  python3 - "$work/trace" "$work/fds" "$name" "$tps" <<'PY'
import re, sys
trace, fds_file, name, tps = sys.argv[1:5]
fds = set(int(x) for x in open(fds_file).read().split())
last_fd, answered, gaps, t0, t1 = None, {}, [], None, None
for line in open(trace):
    m = re.match(r'\s*([\d.]+):\s+(\S+):\s+(.*)', line)
    if not m:
        continue
    t, event, args = float(m.group(1)), m.group(2), m.group(3)
    t0, t1 = t0 or t, t
    if 'sys_enter_recvfrom' in event:
        last_fd = int(re.search(r'fd: (0x[0-9a-f]+)', args).group(1), 16)
    elif 'sys_exit_recvfrom' in event:
        ret = int(args.strip(), 16)
        if last_fd in fds and ret < 1 << 63 and ret > 0:
            answered[last_fd] = t
    elif 'sys_enter_sendto' in event:
        fd = int(re.search(r'fd: (0x[0-9a-f]+)', args).group(1), 16)
        if fd in answered:
            gaps.append((t - answered.pop(fd)) * 1e6)
if not gaps or not fds:
    print(f"{name:<12} no server traffic traced (server sockets found: {len(fds)})")
    sys.exit()
gaps.sort()
q = lambda p: gaps[min(len(gaps) - 1, int(len(gaps) * p))]
idle = sum(gaps) / (len(fds) * (t1 - t0) * 1e6) * 100
print(f"{name:<12} {float(tps):8.0f} {len(gaps):10d} {sum(gaps)/len(gaps):8.1f} {q(.5):8.1f} {q(.9):8.1f} {q(.99):8.1f} {idle:9.1f}%")
PY
done
