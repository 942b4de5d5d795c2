#!/usr/bin/env bash
# Install the Node packages of package.json + package-lock.json at the repo root (LHC-Forms, which
# the service serves to the patient form; fhirpath.js and axe-core, which the tests drive): nodejs/npm
# from Debian when missing, then `npm ci` when node_modules is missing or the lock file changed since
# the last install. `.npmrc` sets legacy-peer-deps: lforms' Angular peers otherwise never resolve.
#   bash scripts/node_packages.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

_np_log() { echo "[node_packages] $*" >&2; }

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    _np_log "node and npm are required (apt-get install nodejs npm)"
    exit 1
  fi
  _np_log "installing nodejs + npm with apt-get"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >&2
fi

stamp="node_modules/.backpath-lock.sha256"
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ -d node_modules ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
_np_log "npm ci (node_modules missing or package-lock.json changed)"
npm ci --no-audit --no-fund --loglevel=error >&2
echo "$want" >"$stamp"
