#!/usr/bin/env bash
# The one command that runs the service locally: bash scripts/run.sh
# Defaults give an unauthenticated dev server on 127.0.0.1:8080 backed by ./backpath.db (SQLite).
set -euo pipefail

# Repo root from this file's location, so relative paths (./backpath.db, content dirs) are stable.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bootstrap.sh
# LHC-Forms for the patient form (served from node_modules, no CDN).
bash scripts/node_packages.sh

# Dev mode = no auth, for a local quick start; set BACKPATH_DEV_MODE=0 to exercise auth.
export BACKPATH_DEV_MODE="${BACKPATH_DEV_MODE:-1}"
export DATABASE_URL="${DATABASE_URL:-sqlite+aiosqlite:///./backpath.db}"

# exec so signals (Ctrl-C, SIGTERM) go straight to the server process.
exec .venv/bin/backpath serve --host 127.0.0.1 --port "${PORT:-8080}"
