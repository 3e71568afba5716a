#!/usr/bin/env bash
# The floor: user-space instructions per transaction of benches/floor (a bare epoll relay with
# a pool and nothing else: no timeouts, stats, TLS or tracking), counted by
# benches/instructions.sh exactly as pgmux is. What a pooler without tokio could reach at best.
#
#   benches/floor.sh      prints the count for "-S" and "-S -M extended" (-M prepared needs the
#                         prepared-statement tracking the floor does not have)
#
# FLOOR_BIN [floor]: the binary counted; floor-tokio is the same job on tokio (a current-thread
# runtime, one task per client): what tokio and the least async structure add to the floor.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${INSTR_DIR:-/tmp/pgmux-instructions}
PG_PORT=${INSTR_PG_PORT:-27432}
PORT=${INSTR_PGMUX_PORT:-27433}
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/floor"
FLOOR_BIN=${FLOOR_BIN:-floor}
case $FLOOR_BIN in floor | floor-tokio) ;; *) echo "benches/floor.sh: FLOOR_BIN is floor or floor-tokio" >&2; exit 2 ;; esac
(cd "$ROOT/benches/floor" && cargo build --release --locked --target-dir "$TARGET") >&2
# The floor logs in to PostgreSQL as postgres over the cluster's Unix socket (trust).
INSTR_COMMAND="$TARGET/release/$FLOOR_BIN $PORT $DIR/.s.PGSQL.$PG_PORT bench ${INSTR_POOL_SIZE:-20}" \
  INSTR_MODES="-S,-S -M extended" exec "$ROOT/benches/instructions.sh"
