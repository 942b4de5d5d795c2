#!/usr/bin/env bash
# Create/refresh the project virtualenv (.venv) so the other scripts can rely on it.
# Usable both ways:  `bash scripts/bootstrap.sh`  or  `source scripts/bootstrap.sh`
# (when sourced it leaves the caller in the repo root, which is what run.sh/test.sh want).
set -euo pipefail

# Repo root from this file's location, so it works from any cwd.
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT
cd "$REPO_ROOT"

_bp_log() { echo "[bootstrap] $*" >&2; }

# Debian ships python3 without venv/ensurepip; install them on a fresh machine (root only).
_bp_ensure_python() {
  if command -v python3 >/dev/null 2>&1 && python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    _bp_log "python3 with the venv module is required (apt-get install python3 python3-venv)"
    return 1
  fi
  _bp_log "installing python3 + python3-venv with apt-get"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv python3-pip >&2
}

_bp_bootstrap() {
  local venv="$REPO_ROOT/.venv"
  local stamp="$venv/.backpath-bootstrap.sha256"
  local want
  want="$(sha256sum pyproject.toml | cut -d' ' -f1)"

  # Fast path: venv works and pyproject.toml is unchanged since the last successful install.
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c '' >/dev/null 2>&1 \
     && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi

  # A venv whose interpreter no longer runs (e.g. copied from another machine) is useless: rebuild.
  if [ -e "$venv/pyvenv.cfg" ] && ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
    _bp_log "existing .venv is broken; recreating it"
    rm -rf "$venv"
  fi
  if [ ! -x "$venv/bin/python" ]; then
    _bp_ensure_python
    _bp_log "creating .venv"
    python3 -m venv "$venv"
  fi

  _bp_log "installing backpath[dev] into .venv (pyproject.toml changed or first run)"
  rm -f "$stamp"  # never leave a stamp behind for a half-finished install
  # pip's output is only interesting when it fails: keep it in a log and show it then.
  local pip_log
  pip_log="$(mktemp)"
  if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]' >"$pip_log" 2>&1; then
    cat "$pip_log" >&2
    rm -f "$pip_log"
    _bp_log "pip install failed"
    return 1
  fi
  rm -f "$pip_log"
  echo "$want" >"$stamp"
}

# Serialise concurrent bootstraps (e.g. run.sh and test.sh started together) when flock exists.
# The lock is taken on this script itself, so no lock file has to survive a .venv rebuild.
if command -v flock >/dev/null 2>&1; then
  (
    flock 9
    _bp_bootstrap
  ) 9<"$REPO_ROOT/scripts/bootstrap.sh"
else
  _bp_bootstrap
fi
