#!/usr/bin/env bash
# Installs the client drivers that tests/drivers.rs runs against pgmux (scripts/test.sh calls
# this before cargo test). Idempotent: what is already in place is left alone.
#
#   scripts/drivers-setup.sh
#
# - Python: a venv in target/drivers/venv with the packages of tests/drivers/requirements.txt
#   (psycopg 3, asyncpg), from PyPI. Reinstalled only when that file changes.
# - Node: the npm package pg in target/drivers/node (tests/drivers/package.json).
# - Java: pgjdbc from Debian's libpostgresql-jdbc-java (/usr/share/java/postgresql.jar) and a
#   JDK, with apt, as root, only when missing. Without root a missing Java is reported and
#   the Java driver test skips itself as long as `java` is absent.
# Python, venv support and Node are installed with apt too when missing (as root).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DRIVERS=$ROOT/tests/drivers
OUT=$ROOT/target/drivers
PYTHON=${PYTHON:-python3}
JDBC_JAR=/usr/share/java/postgresql.jar

say() { printf '==> drivers: %s\n' "$*"; }
die() { printf 'scripts/drivers-setup.sh: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }

apt_updated=""
apt_install() {
  is_root || die "missing: $*; install as root: apt-get install -y $*"
  command -v apt-get >/dev/null || die "missing: $*, and apt-get is not available"
  if [ -z "$apt_updated" ]; then
    say "apt-get update"
    apt-get update -q
    apt_updated=1
  fi
  say "apt-get install -y $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends --no-upgrade "$@"
}

mkdir -p "$OUT"

# --- Python -------------------------------------------------------------------
command -v "$PYTHON" >/dev/null || apt_install python3 python3-venv
venv=$OUT/venv
stamp=$venv/.requirements
if [ -x "$venv/bin/python" ] && cmp -s "$DRIVERS/requirements.txt" "$stamp" \
  && "$venv/bin/python" -c 'import psycopg, asyncpg' 2>/dev/null; then
  say "Python venv up to date ($venv)"
else
  if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
    apt_install python3-venv
  fi
  rm -rf "$venv"
  say "creating $venv"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$DRIVERS/requirements.txt"
  cp "$DRIVERS/requirements.txt" "$stamp"
  say "installed: $("$venv/bin/python" -c 'import psycopg, asyncpg; print("psycopg", psycopg.__version__, "asyncpg", asyncpg.__version__)')"
fi

# --- Node ----------------------------------------------------------------------
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm
fi
node_dir=$OUT/node
if cmp -s "$DRIVERS/package.json" "$node_dir/package.json" && [ -f "$node_dir/node_modules/pg/package.json" ]; then
  say "node pg up to date ($node_dir)"
else
  mkdir -p "$node_dir"
  cp "$DRIVERS/package.json" "$node_dir/package.json"
  say "npm install in $node_dir"
  (cd "$node_dir" && npm install --no-audit --no-fund --no-package-lock --loglevel=error)
  say "installed: pg $(node -p 'require(process.argv[1]).version' "$node_dir/node_modules/pg/package.json")"
fi

# --- Java ----------------------------------------------------------------------
java_missing=()
[ -f "$JDBC_JAR" ] || java_missing+=(libpostgresql-jdbc-java)
# The test runs JdbcTest.java with the source launcher, which needs a JDK, not just a JRE.
command -v javac >/dev/null || java_missing+=(default-jdk-headless)
if [ ${#java_missing[@]} -eq 0 ]; then
  say "Java: $(java -version 2>&1 | head -n1), $JDBC_JAR"
elif is_root && command -v apt-get >/dev/null; then
  apt_install "${java_missing[@]}"
else
  say "not installed: ${java_missing[*]} (needs root and apt); the Java driver test skips itself without java"
fi
