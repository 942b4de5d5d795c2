#!/usr/bin/env bash
# Chromium for the page tests and bench/run_pages.py: Debian's `chromium` package, installed when
# missing. Playwright drives it as it is (executable_path=/usr/bin/chromium); it never downloads a
# browser of its own (`playwright install` is never run).
#   bash scripts/browser.sh
set -euo pipefail

_br_log() { echo "[browser] $*" >&2; }

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  _br_log "Chromium is required for the page tests (apt-get install chromium)"
  exit 1
fi
_br_log "installing chromium with apt-get"
apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >&2
