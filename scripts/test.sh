#!/usr/bin/env bash
# Run every pgmux test. The one command for a fresh Debian bookworm machine:
#
#   scripts/test.sh [CARGO TEST ARGS...]      e.g. scripts/test.sh --test pooling
#
# What it does, idempotently:
#   1. PostgreSQL 15 server and client binaries (initdb, postgres, pg_ctl,
#      pg_basebackup, psql, pgbench) in $PGBIN: installed with apt when missing
#      (packages postgresql-15 and postgresql-client-15; pgbench ships in
#      postgresql-15). Needs root; without root it stops and says what is missing.
#      No default cluster is created and no service is started by the install.
#   1b. iproute2 and nftables (`ip`, `nft`) for tests/netfault.rs, with apt when
#      missing, as root only (without them, or without root, those tests skip).
#   1c. HAProxy for tests/haproxy.rs (pgmux instances behind a TCP load balancer), with apt
#      when missing (package haproxy; its service is not started by the install). Without
#      root it says so, and tests/haproxy.rs fails saying what to install.
#   2. An OS user `postgres`: PostgreSQL refuses to run as root, so the test
#      support runs it as `postgres` when the tests run as root.
#   3. The open-file limit raised to the hard limit (tests open many clients).
#   4. The client drivers of tests/drivers.rs (psycopg, asyncpg, node-postgres,
#      pgjdbc): scripts/drivers-setup.sh, which skips what is already installed.
#   4b. Debian's chromium for the dashboard's browser test (tests/dashboard_browser.rs):
#      scripts/browser-setup.sh, with apt as root, only when missing.
#   5. `cargo test --locked --no-fail-fast` from the repository root (a red run reports every
#      failing test binary, not only the first). Plain `cargo test`, not
#      nextest: the tests of one binary share one PostgreSQL cluster. For a whole run the
#      builds of steps 6 and 7 start beside it at nice 19 (they use the cores the tests leave
#      idle), and are waited for after it.
#   6. The cost gate: `benches/instructions.sh --check` counts pgmux's instructions per
#      transaction under callgrind (installs valgrind with apt when missing) and fails when
#      one exceeds benches/instructions.txt by more than 10 %. Only when every test passed,
#      and only for a whole run (no CARGO TEST ARGS); PGMUX_SKIP_GATE=1 skips it.
#   7. The fuzz step: scripts/fuzz.sh runs every cargo-fuzz target of fuzz/ for
#      PGMUX_FUZZ_SECONDS (default 15: a clean build and the runs take about 4 minutes on 2
#      cores, see docs/testing.md) each on its committed seeds, after one build (it installs
#      cargo-fuzz, and the nightly toolchain, when missing); a crash, a broken property or a
#      timeout fails the run, naming the target and the input. Only for a whole run;
#      PGMUX_SKIP_FUZZ=1 skips it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PG_TOOLS=(postgres initdb pg_ctl pg_basebackup pg_isready psql pgbench)
PG_PACKAGES=(postgresql-15 postgresql-client-15)

say() { printf '==> %s\n' "$*"; }
die() { printf 'scripts/test.sh: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }

missing_tools() {
  local t
  for t in "${PG_TOOLS[@]}"; do
    [ -x "$PGBIN/$t" ] || printf '%s ' "$t"
  done
}

# --- 1. PostgreSQL 15 -------------------------------------------------------
missing=$(missing_tools)
if [ -n "$missing" ]; then
  if ! is_root; then
    die "missing in $PGBIN: $missing
  install them as root:  apt-get install -y ${PG_PACKAGES[*]}
  (or run this script as root, or point PGBIN at a PostgreSQL 15 bin directory)"
  fi
  command -v apt-get >/dev/null || die "missing in $PGBIN: $missing, and apt-get is not available"
  say "PostgreSQL 15 tools missing ($missing): installing ${PG_PACKAGES[*]} with apt"
  # Tests start their own clusters: ask postgresql-common not to create and
  # start the default cluster on port 5432, and keep services from starting.
  mkdir -p /etc/postgresql-common/createcluster.d
  if [ ! -f /etc/postgresql-common/createcluster.d/pgmux-no-main-cluster.conf ]; then
    say "writing /etc/postgresql-common/createcluster.d/pgmux-no-main-cluster.conf (create_main_cluster = false)"
    echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/pgmux-no-main-cluster.conf
  fi
  policy_rc=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    policy_rc=/usr/sbin/policy-rc.d
  fi
  say "apt-get update"
  apt-get update -q
  say "apt-get install -y ${PG_PACKAGES[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends --no-upgrade "${PG_PACKAGES[@]}"
  [ -n "$policy_rc" ] && rm -f "$policy_rc"
  missing=$(missing_tools)
  [ -z "$missing" ] || die "still missing in $PGBIN after the install: $missing"
  say "installed: $("$PGBIN/postgres" --version)"
else
  say "PostgreSQL: $("$PGBIN/postgres" --version) in $PGBIN"
fi
export PATH="$PGBIN:$PATH"

# --- 1b. ip and nft for tests/netfault.rs ---------------------------------------
# Network namespaces and nftables rules (tests/netfault.rs skips itself without them or
# without root). Installed only when missing, and only as root.
net_missing=()
command -v ip >/dev/null || net_missing+=(iproute2)
command -v nft >/dev/null || net_missing+=(nftables)
if [ ${#net_missing[@]} -gt 0 ]; then
  if is_root && command -v apt-get >/dev/null; then
    say "installing ${net_missing[*]} with apt (tests/netfault.rs)"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends --no-upgrade "${net_missing[@]}"
  else
    say "missing ${net_missing[*]}: tests/netfault.rs will skip its scenarios"
  fi
fi

# --- 1c. HAProxy for tests/haproxy.rs ---------------------------------------------
if ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ]; then
  if is_root && command -v apt-get >/dev/null; then
    say "installing haproxy with apt (tests/haproxy.rs)"
    policy_rc=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
      chmod +x /usr/sbin/policy-rc.d
      policy_rc=/usr/sbin/policy-rc.d
    fi
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends --no-upgrade haproxy
    [ -n "$policy_rc" ] && rm -f "$policy_rc"
  else
    say "missing haproxy: tests/haproxy.rs will fail until it is installed (apt-get install haproxy, as root)"
  fi
fi

# --- 2. the postgres OS user --------------------------------------------------
if ! id -u postgres >/dev/null 2>&1; then
  if is_root; then
    say "creating the OS user postgres"
    useradd --system --user-group --home-dir /var/lib/postgresql --create-home \
      --shell /bin/bash postgres
  else
    say "no OS user postgres: fine when not root (PostgreSQL runs as $(id -un))"
  fi
fi

# --- 3. open files --------------------------------------------------------------
hard=$(ulimit -Hn)
ulimit -n "$hard" 2>/dev/null || true
say "open-file limit: $(ulimit -n) (hard $hard)"

# --- 4. client drivers ------------------------------------------------------------
"$ROOT/scripts/drivers-setup.sh"

# --- 4b. a browser for the dashboard ---------------------------------------------
"$ROOT/scripts/browser-setup.sh"

# --- 5. cargo test ---------------------------------------------------------------
if ! command -v cargo >/dev/null && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
  export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain (https://rustup.rs), then run this again"

cd "$ROOT"
# The gate's release build (fat LTO) and the fuzz targets' build start now, at the lowest CPU
# priority, and take what the tests leave idle (most of their time is spent waiting on
# PostgreSQL, timeouts and sleeps): on a cold checkout they no longer follow the tests. Their
# output goes to target/prebuild-*.log; a failed prebuild is built again, and reported, by
# its own step below.
prebuilds=()
stop_prebuilds() { local p; for p in "${prebuilds[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap stop_prebuilds EXIT
if [ $# -eq 0 ]; then
  mkdir -p target
  if [ "${PGMUX_SKIP_GATE:-0}" != 1 ]; then
    nice -n 19 cargo build --release --locked --bin pgmux >target/prebuild-release.log 2>&1 &
    prebuilds+=($!)
  fi
  if [ "${PGMUX_SKIP_FUZZ:-0}" != 1 ]; then
    nice -n 19 "$ROOT/scripts/fuzz.sh" build >target/prebuild-fuzz.log 2>&1 &
    prebuilds+=($!)
  fi
fi
say "cargo test --locked --no-fail-fast $*"
cargo test --locked --no-fail-fast "$@"
if ((${#prebuilds[@]})); then
  say "waiting for the release and fuzz builds started beside the tests"
  for p in "${prebuilds[@]}"; do wait "$p" || true; done
  prebuilds=()
fi

# --- 6. the instructions-per-transaction gate ------------------------------------
if [ $# -eq 0 ] && [ "${PGMUX_SKIP_GATE:-0}" != 1 ]; then
  say "benches/instructions.sh --check"
  "$ROOT/benches/instructions.sh" --check
fi

# --- 7. coverage-guided fuzzing ----------------------------------------------------
if [ $# -eq 0 ] && [ "${PGMUX_SKIP_FUZZ:-0}" != 1 ]; then
  say "scripts/fuzz.sh ${PGMUX_FUZZ_SECONDS:-15}"
  fuzz_started=$(date +%s)
  "$ROOT/scripts/fuzz.sh" "${PGMUX_FUZZ_SECONDS:-15}"
  say "fuzz step: $(($(date +%s) - fuzz_started)) s"
fi
