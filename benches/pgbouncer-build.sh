#!/usr/bin/env bash
# Builds a newer PgBouncer than Debian bookworm's 1.18 for benches/pgbench.sh: 1.21 and
# later track protocol-level prepared statements in transaction mode
# (max_prepared_statements), so `pgbench -M prepared` has a pooler to compare with.
#
#   benches/pgbouncer-build.sh [DIR]   prints the path of the built binary
#
# The source is Debian's own release tarball (trixie), checked against its SHA-256.
# Idempotent: a binary already built in DIR is reused. As root it installs the build
# packages with apt-get (gcc make pkg-config libevent-dev libssl-dev) when missing.
#
# Environment: PGBOUNCER_SRC_VERSION [1.24.1] with PGBOUNCER_SRC_SHA256 (required for
# any other version), DIR default $BENCH_DIR/pgbouncer-VERSION, BENCH_DIR [/tmp/pgmux-pgbench],
# DEBIAN_MIRROR (default: the one apt uses on this machine).
set -euo pipefail

VERSION=${PGBOUNCER_SRC_VERSION:-1.24.1}
SHA256=${PGBOUNCER_SRC_SHA256:-}
if [ -z "$SHA256" ]; then
  [ "$VERSION" = 1.24.1 ] || { echo "pgbouncer-build.sh: set PGBOUNCER_SRC_SHA256 for $VERSION" >&2; exit 1; }
  SHA256=da72a3aba13072876d055a3e58dd4aba4a5de4ed6148e73033185245598fd3e0
fi
DIR=${1:-${BENCH_DIR:-/tmp/pgmux-pgbench}/pgbouncer-$VERSION}
BIN="$DIR/src/pgbouncer"

die() { printf 'pgbouncer-build.sh: %s\n' "$*" >&2; exit 1; }

# The Debian mirror this machine's apt uses (deb822 .sources or one-line sources.list), so the
# repository names no archive host: the first URI that is not a security or updates archive.
debian_mirror() {
  {
    # A missing file (no sources.list on a deb822-only machine) is no error here (pipefail).
    cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' || true
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
      | awk '$1 == "deb" || $1 == "deb-src" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }' || true
  } | grep -v -e security -e updates | head -1 | sed 's:/*$::' || true
}
MIRROR=${DEBIAN_MIRROR:-$(debian_mirror)}
[ -n "$MIRROR" ] || die "no Debian mirror found in /etc/apt/sources*; set DEBIAN_MIRROR"
URL=$MIRROR/pool/main/p/pgbouncer/pgbouncer_$VERSION.orig.tar.gz
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi

mkdir -p "$DIR"
need=()
for pkg in gcc make pkg-config libevent-dev libssl-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || die "missing packages: ${need[*]}"
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-upgrade "${need[@]}"; } \
    >"$DIR/apt.log" 2>&1 || die "apt-get install ${need[*]} failed; see $DIR/apt.log"
fi

tarball="$DIR/pgbouncer_$VERSION.orig.tar.gz"
if ! echo "$SHA256  $tarball" | sha256sum -c --status 2>/dev/null; then
  curl -fsSL --retry 3 -o "$tarball" "$URL" || die "download failed: $URL"
  echo "$SHA256  $tarball" | sha256sum -c --status || die "$tarball does not match SHA-256 $SHA256"
fi
rm -rf "$DIR/src"; mkdir -p "$DIR/src"
tar -xzf "$tarball" -C "$DIR/src" --strip-components=1
(
  cd "$DIR/src"
  ./configure --without-cares --without-pam --without-ldap --without-systemd
  make -j"$(nproc)"
) >"$DIR/build.log" 2>&1 || die "build failed; see $DIR/build.log"
[ -x "$BIN" ] || die "no binary at $BIN after the build; see $DIR/build.log"
echo "$BIN"
