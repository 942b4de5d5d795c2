#!/usr/bin/env bash
# The one command that runs every check: bash scripts/test.sh [extra pytest args]
#   ruff -> mypy -> pytest on SQLite -> pytest on PostgreSQL (private cluster, see ensure_postgres.sh)
# Every phase runs even if an earlier one failed, so one run shows all problems;
# the exit status is non-zero if any phase failed.
set -euo pipefail

SECONDS=0  # bash's built-in timer, for the total wall time at the end
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bootstrap.sh
REPO_ROOT="$(pwd -P)"

# Conformance material lives next to the repo (../shared) in the workspace layout.
if [ -z "${BACKPATH_SHARED_DIR:-}" ] && [ -d "$REPO_ROOT/../shared" ]; then
  BACKPATH_SHARED_DIR="$(cd "$REPO_ROOT/../shared" && pwd -P)"
fi
if [ -n "${BACKPATH_SHARED_DIR:-}" ]; then export BACKPATH_SHARED_DIR; fi

# Node peers of the differential tests (fhirpath.js, ...), from package-lock.json.
bash scripts/node_packages.sh
# Chromium (Debian's package) for the page tests in tests/e2e/test_pages.py.
bash scripts/browser.sh

SQLITE_DIR="$(mktemp -d)"
trap 'rm -rf "$SQLITE_DIR"' EXIT

declare -a SUMMARY=()
FAILED=0

# run_phase LABEL CMD...: print a header, run, record ok/FAILED without stopping the script.
run_phase() {
  local label="$1" rc=0 start=$SECONDS
  shift
  echo
  echo "== $label"
  "$@" || rc=$?
  if [ "$rc" -eq 0 ]; then
    SUMMARY+=("ok      $label ($((SECONDS - start))s)")
  else
    SUMMARY+=("FAILED  $label (exit $rc, $((SECONDS - start))s)")
    FAILED=1
  fi
}

# Lint only the directories that exist (git does not keep empty ones, e.g. bench/ early on).
LINT_PATHS=()
for d in app tests bench; do
  if [ -d "$d" ]; then LINT_PATHS+=("$d"); fi
done
run_phase "ruff check ${LINT_PATHS[*]}" .venv/bin/ruff check "${LINT_PATHS[@]}"
run_phase "mypy" .venv/bin/mypy

# `python -m pytest` also puts the repo root on sys.path, so tests can import shared helpers.
run_phase "pytest on sqlite" \
  env BACKPATH_TEST_DATABASE_URL="sqlite+aiosqlite:///$SQLITE_DIR/test.db" \
  .venv/bin/python -m pytest "$@"

# shellcheck disable=SC2317  # invoked indirectly through run_phase
pytest_on_postgres() {
  local url
  # Fresh empty database on every run; the script prints only the URL on stdout.
  url="$(bash scripts/ensure_postgres.sh)" || { echo "ensure_postgres.sh failed" >&2; return 1; }
  echo "(database: ${url%%://*}://...@${url#*@})"
  BACKPATH_TEST_DATABASE_URL="$url" .venv/bin/python -m pytest "$@"
}
run_phase "pytest on postgresql" pytest_on_postgres "$@"

echo
echo "== summary"
printf '  %s\n' "${SUMMARY[@]}"
echo "== total wall time: $((SECONDS / 60))m$((SECONDS % 60))s"
exit "$FAILED"
