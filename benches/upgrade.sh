#!/usr/bin/env bash
# An upgrade in place under load, as an operator would run it: a release pgmux started from a
# copy of the binary, pgbench -c 50 (persistent sessions) and pgbench -C (a new connection per
# transaction) through it, and mid-run the binary replaced on disk and `pgmux upgrade` started.
# Prints how long the takeover and the handover took, how many clients moved, pgbench's own
# counts of failed transactions and aborted clients, and its per-second progress around the
# upgrade (what a client sees: the latency of that second).
#
#   benches/upgrade.sh              # 30 s of pgbench, the upgrade at 10 s
# Environment: SECONDS_TOTAL [30]  UPGRADE_AT [10]  PGBENCH_MODE [-S -M prepared]
#   PORT [26432]  PGMUX_BIN (default: cargo build --release)
# PostgreSQL comes from ../shared/bench/pg-up.sh (primary on 15432, user app/app, database bench).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=$(cd "$ROOT/../shared/bench" && pwd)
# shellcheck source=/dev/null
. "$SHARED/env.sh"
TOTAL=${SECONDS_TOTAL:-30}
AT=${UPGRADE_AT:-10}
MODE=${PGBENCH_MODE:--S -M prepared}
PORT=${PORT:-26432}
DIR=$(mktemp -d /tmp/pgmux-upgrade-bench.XXXXXX)
trap 'kill $(cat "$DIR"/*.pid 2>/dev/null) 2>/dev/null || true' EXIT

"$SHARED/pg-up.sh" >/dev/null
BIN=${PGMUX_BIN:-}
if [ -z "$BIN" ]; then
    (cd "$ROOT" && flock /tmp/pgmux-cargo.lock cargo build --release --quiet)
    BIN="$ROOT/target/release/pgmux"
fi
install -m 755 "$BIN" "$DIR/pgmux"
cat > "$DIR/pooler.toml" <<EOF
[pooler]
listen_addr = "127.0.0.1"
listen_port = $PORT
unix_socket_dir = ""
auth_type = "scram-sha-256"
max_client_conn = 500
default_pool_size = 20
shutdown_timeout = 30
[metrics]
listen = ""
[users.$BENCH_USER]
password = "$BENCH_PASSWORD"
[databases.$BENCH_DB]
port = $PRIMARY_PORT
EOF
"$DIR/pgmux" --config "$DIR/pooler.toml" > "$DIR/old.log" 2>&1 &
echo $! > "$DIR/old.pid"
for _ in $(seq 100); do
    grep -q "listening on" "$DIR/old.log" && break
    sleep 0.1
done

export PGPASSWORD=$BENCH_PASSWORD
# shellcheck disable=SC2086
pgbench -h 127.0.0.1 -p "$PORT" -U "$BENCH_USER" -n $MODE -c 50 -j 2 -T "$TOTAL" -P 1 \
    "$BENCH_DB" > "$DIR/steady.out" 2> "$DIR/steady.err" &
steady=$!
pgbench -h 127.0.0.1 -p "$PORT" -U "$BENCH_USER" -n -S -C -c 4 -j 1 -T "$TOTAL" \
    "$BENCH_DB" > "$DIR/storm.out" 2> "$DIR/storm.err" &
storm=$!
sleep "$AT"

# A package upgrade: the new binary renamed over the old one, then the new process started.
install -m 755 "$BIN" "$DIR/pgmux.new" && mv "$DIR/pgmux.new" "$DIR/pgmux"
old=$(cat "$DIR/old.pid")
t0=$(date +%s%N)
"$DIR/pgmux" --config "$DIR/pooler.toml" upgrade > "$DIR/new.log" 2>&1 &
echo $! > "$DIR/new.pid"
until grep -q "taken over from" "$DIR/new.log"; do
    kill -0 "$(cat "$DIR/new.pid")" 2>/dev/null || { cat "$DIR/new.log"; exit 1; }
    sleep 0.001
done
t1=$(date +%s%N)
while kill -0 "$old" 2>/dev/null; do sleep 0.001; done
t2=$(date +%s%N)
wait "$steady" || true
wait "$storm" || true

handed=$(grep -c "client handed to the new process" "$DIR/old.log" || true)
printf 'upgrade at %ss of %ss: sockets taken over after %d ms, old process gone after %d ms, %s clients handed over\n' \
    "$AT" "$TOTAL" $(((t1 - t0) / 1000000)) $(((t2 - t0) / 1000000)) "$handed"
for run in steady storm; do
    printf '%s (%s): ' "$run" "$(head -c 200 "$DIR/$run.out" | grep -o 'pgbench.*' | head -1)"
    grep -E "actually processed|failed transactions|^tps" "$DIR/$run.out" | tr '\n' ' '
    printf 'aborted clients: %s\n' "$(grep -c 'aborted' "$DIR/$run.err" || true)"
done
echo "progress around the upgrade (pgbench -c 50):"
grep -E "^progress: ($((AT - 2))|$((AT - 1))|$AT|$((AT + 1))|$((AT + 2)))\.0 s" "$DIR/steady.err" || true
kill "$(cat "$DIR/new.pid")" 2>/dev/null || true
