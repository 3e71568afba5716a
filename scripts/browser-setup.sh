#!/usr/bin/env bash
# Installs the browser that tests/dashboard_browser.rs drives: Debian's chromium, run headless
# (scripts/test.sh calls this before cargo test). Idempotent: nothing happens when chromium is
# there. Without root or apt a missing chromium is reported and the browser test says it skips.
#
#   scripts/browser-setup.sh
set -euo pipefail

say() { printf '==> browser: %s\n' "$*"; }
is_root() { [ "$(id -u)" = 0 ]; }

if command -v chromium >/dev/null; then
  say "$(chromium --version 2>/dev/null || echo chromium) already installed"
  exit 0
fi
if ! is_root || ! command -v apt-get >/dev/null; then
  say "chromium missing (install as root: apt-get install -y chromium fonts-dejavu-core);" \
    "tests/dashboard_browser.rs will skip its browser check"
  exit 0
fi
# fonts-dejavu-core: readable text in the screenshot on a machine without fonts.
say "apt-get update"
apt-get update -q
say "apt-get install -y chromium fonts-dejavu-core"
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends --no-upgrade \
  chromium fonts-dejavu-core
say "installed: $(chromium --version 2>/dev/null || echo chromium)"
