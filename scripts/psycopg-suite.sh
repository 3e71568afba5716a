#!/usr/bin/env bash
# psycopg's own test suite (a chosen subset), run three times: directly against PostgreSQL 15,
# through pgmux in session mode, and through pgmux in transaction mode (issue 23).
#
# Run by hand only: it needs psycopg's source as a git repository (PSYCOPG_SRC), which CI does
# not have, and it takes a quarter of an hour or more. CI does not run it.
#
#   scripts/psycopg-suite.sh [PYTEST ARGS...]      e.g. scripts/psycopg-suite.sh -k tpc
#
# Needs: target/release/pgmux (build it first: cargo build --release; or set PGMUX_BIN),
# PostgreSQL 15 in PGBIN, python3 with venv and pip. What it does:
#   1. psycopg's tests/ at tag $TAG of PSYCOPG_SRC (git archive), fresh into $WORK/src.
#   2. A venv in $WORK/venv (kept between runs): psycopg[binary]==$VERSION (the tag's release)
#      and what the chosen tests need of the suite's test extras (pytest, anyio), plus
#      pytest-timeout, so that a test hanging through pgmux fails instead of stopping the run.
#   3. Its own PostgreSQL 15 with scripts/pg-dev.sh (PGDEV_DIR $WORK_PG, port $PORT), with
#      max_prepared_transactions = 10 (the tpc tests) and a superuser psycopg / psycopg.
#   4. Two pgmux in front of it: session mode on PORT+1, transaction mode on PORT+2; passthrough
#      authentication, so the roles and passwords the tests create and change work as direct.
#   5. pytest three times (psycopg's PSYCOPG_TEST_DSN), without the markers that need network,
#      DNS, mypy or extra modules. Prints each run's counts; writes each run's failing test ids
#      to $WORK/results/RUN.failed, and those failing through pgmux but not directly to
#      $WORK/results/RUN.only. docs/testing.md classifies them.
#
# env: PSYCOPG_SRC (/work/.mirror/psycopg+psycopg/repo), PSYCOPG_SUITE_DIR (target/psycopg-suite),
#      PSYCOPG_SUITE_PG (/tmp/pgmux-psycopg: PostgreSQL's data and socket), PSYCOPG_SUITE_PORT
#      (25432), PGBIN (/usr/lib/postgresql/15/bin), PGMUX_BIN, PSYCOPG_SUITE_RUNS
#      ("direct session transaction": any of them).
set -euo pipefail

# Pinned together: the tests of this tag run against the psycopg release of the same number.
TAG=3.3.4
VERSION=3.3.4

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC_REPO=${PSYCOPG_SRC:-/work/.mirror/psycopg+psycopg/repo}
WORK=${PSYCOPG_SUITE_DIR:-$ROOT/target/psycopg-suite}
WORK_PG=${PSYCOPG_SUITE_PG:-/tmp/pgmux-psycopg}
PORT=${PSYCOPG_SUITE_PORT:-25432}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
BIN=${PGMUX_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/pgmux}
RUNS=${PSYCOPG_SUITE_RUNS:-direct session transaction}

# The subset: the driver's behaviour over a connection (no pool/, crdb/, dns, gevent, typing).
TESTS=(
  tests/test_adapt.py tests/test_column.py tests/test_concurrency.py tests/test_concurrency_async.py
  tests/test_connection.py tests/test_connection_async.py tests/test_connection_info.py
  tests/test_copy.py tests/test_copy_async.py
  tests/test_cursor.py tests/test_cursor_async.py tests/test_cursor_client.py tests/test_cursor_client_async.py
  tests/test_cursor_common.py tests/test_cursor_common_async.py tests/test_cursor_raw.py
  tests/test_cursor_raw_async.py tests/test_cursor_server.py tests/test_cursor_server_async.py
  tests/test_errors.py tests/test_generators.py tests/test_notify.py tests/test_notify_async.py
  tests/test_pipeline.py tests/test_pipeline_async.py tests/test_prepared.py tests/test_prepared_async.py
  tests/test_psycopg_dbapi20.py tests/test_query.py tests/test_rows.py tests/test_sql.py
  tests/test_tpc.py tests/test_tpc_async.py tests/test_transaction.py tests/test_transaction_async.py
  tests/test_typeinfo.py tests/types tests/pq
)
NOT_MARKERS="not dns and not proxy and not mypy and not gevent and not postgis and not numpy and not timing"

say() { printf '==> %s\n' "$*"; }
die() { printf 'scripts/psycopg-suite.sh: %s\n' "$*" >&2; exit 1; }

# --- psycopg's tests ---------------------------------------------------------------------
git -C "$SRC_REPO" rev-parse --git-dir >/dev/null 2>&1 \
  || die "no psycopg git repository at $SRC_REPO: set PSYCOPG_SRC to a clone of psycopg's source (this script is run by hand, not in CI)"
git -C "$SRC_REPO" rev-parse -q --verify "refs/tags/$TAG" >/dev/null || die "$SRC_REPO has no tag $TAG"
[ -x "$BIN" ] || die "no pgmux binary at $BIN: build it first (cargo build --release), or set PGMUX_BIN"
mkdir -p "$WORK"
rm -rf "$WORK/src" && mkdir -p "$WORK/src"
git -C "$SRC_REPO" archive "$TAG" tests pyproject.toml | tar x -C "$WORK/src"
say "psycopg tests at $TAG in $WORK/src"

# --- the venv ----------------------------------------------------------------------------
VENV=$WORK/venv
PY=$VENV/bin/python
[ -x "$PY" ] || python3 -m venv "$VENV" || die "python3 -m venv failed (apt-get install python3-venv)"
if [ "$("$PY" -c 'import psycopg; print(psycopg.__version__)' 2>/dev/null)" != "$VERSION" ] \
  || ! "$PY" -c 'import pytest, pytest_timeout, anyio' 2>/dev/null; then
  say "installing psycopg[binary]==$VERSION and pytest into $VENV"
  "$PY" -m pip install -q "psycopg[binary]==$VERSION" "pytest>=8,<9" "anyio>=4.0" pytest-timeout \
    || die "pip install failed"
fi

# --- PostgreSQL --------------------------------------------------------------------------
export PGDEV_DIR=$WORK_PG PGDEV_PORT=$PORT PGDEV_SCALE=0 PGBIN
"$ROOT/scripts/pg-dev.sh" start >/dev/null
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
psql_su() { as_pg "$PGBIN/psql" -h "$WORK_PG" -p "$PORT" -U postgres -d postgres -qAtX -v ON_ERROR_STOP=1 "$@"; }
if [ "$(psql_su -c 'show max_prepared_transactions')" = 0 ]; then
  psql_su -c "alter system set max_prepared_transactions = 10"
  "$ROOT/scripts/pg-dev.sh" stop >/dev/null
  "$ROOT/scripts/pg-dev.sh" start >/dev/null
fi
[ "$(psql_su -c "select count(*) from pg_roles where rolname = 'psycopg'")" = 1 ] \
  || psql_su -c "create role psycopg superuser login password 'psycopg'"
[ "$(psql_su -c "select count(*) from pg_database where datname = 'psycopg_test'")" = 1 ] \
  || psql_su -c "create database psycopg_test owner psycopg"
say "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT ($WORK_PG)"

# --- pgmux -------------------------------------------------------------------------------
RESULTS=$WORK/results
rm -rf "$RESULTS" && mkdir -p "$RESULTS"
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  "$ROOT/scripts/pg-dev.sh" stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
start_pgmux() {
  local mode=$1 port=$2
  listening "$port" && die "port $port is taken; set PSYCOPG_SUITE_PORT"
  cat > "$RESULTS/pgmux-$mode.toml" <<CONF
[pooler]
listen_addr = "127.0.0.1"
listen_port = $port
pool_mode = "$mode"
default_pool_size = 60
auth_type = "passthrough"
[metrics]
listen = ""
[databases."*"]
host = "127.0.0.1"
port = $PORT
CONF
  RUST_LOG=${RUST_LOG:-info} "$BIN" --config "$RESULTS/pgmux-$mode.toml" >"$RESULTS/pgmux-$mode.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do
    listening "$port" && return 0
    sleep 0.1
  done
  die "pgmux ($mode) did not listen on $port: $(tail -3 "$RESULTS/pgmux-$mode.log")"
}
start_pgmux session $((PORT + 1))
start_pgmux transaction $((PORT + 2))
say "pgmux $("$BIN" --version 2>/dev/null || echo "$BIN"): session mode on $((PORT + 1)), transaction mode on $((PORT + 2))"

# --- the runs ----------------------------------------------------------------------------
port_of() { case $1 in direct) echo "$PORT" ;; session) echo $((PORT + 1)) ;; transaction) echo $((PORT + 2)) ;; *) die "unknown run $1" ;; esac; }
# run NAME: pytest against that DSN; its output in RESULTS/NAME.log, failing ids in NAME.failed
run() {
  local name=$1 dsn
  shift
  dsn="host=127.0.0.1 port=$(port_of "$name") user=psycopg password=psycopg dbname=psycopg_test"
  say "run $name: $dsn"
  rm -rf "$WORK/src/.pytest_cache"
  (cd "$WORK/src" && PSYCOPG_TEST_DSN=$dsn "$PY" -m pytest -o addopts= -q -rfE -p no:randomly \
    --timeout=120 -m "$NOT_MARKERS" "${TESTS[@]}" "$@") >"$RESULTS/$name.log" 2>&1 || true
  grep -E '^(FAILED|ERROR) ' "$RESULTS/$name.log" | sed -E 's/^(FAILED|ERROR) //; s/ - .*//' | sort -u >"$RESULTS/$name.failed"
  printf '%-12s %s\n' "$name" "$(tail -1 "$RESULTS/$name.log")" >>"$RESULTS/counts"
}
for name in $RUNS; do
  run "$name" "$@"
done

say "counts (pytest's last line of each run)"
cat "$RESULTS/counts"
for name in session transaction; do
  if [ -f "$RESULTS/$name.failed" ] && [ -f "$RESULTS/direct.failed" ]; then
    comm -13 "$RESULTS/direct.failed" "$RESULTS/$name.failed" >"$RESULTS/$name.only"
    say "$name: $(wc -l <"$RESULTS/$name.only") failing through pgmux only ($RESULTS/$name.only)"
  fi
done
