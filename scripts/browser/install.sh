#!/usr/bin/env bash
# Debian's Chromium for the browser test tier (tests/browser, HARMCORE_BROWSER=1): apt-get, as root.
# Idempotent: nothing happens when /usr/bin/chromium is there.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/browser/install.sh: installing Chromium needs root (apt-get install chromium)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
/usr/bin/chromium --version
