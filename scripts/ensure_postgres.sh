#!/usr/bin/env bash
# Make a local PostgreSQL available for the test suite and print ONE line on stdout:
#   postgresql+asyncpg://backpath:backpath@127.0.0.1:55432/backpath_test
# pointing at a freshly (re)created, empty database. Everything else goes to stderr.
#
# Uses a private throw-away cluster (not the system one on 5432), owned by the `postgres`
# OS user when run as root, or by the calling user otherwise:
#   data/socket/log in  $BACKPATH_PG_DIR   (default /var/tmp/backpath-pg; /var/tmp survives reboots)
#   port                $BACKPATH_PG_PORT  (default 55432, listens on 127.0.0.1 only)
# Set BACKPATH_TEST_POSTGRES_URL to skip all of this and use your own server.
set -euo pipefail

# Keep stdout for the URL only: fd 3 = real stdout, fd 1 -> stderr for everything else.
exec 3>&1 1>&2

if [ -n "${BACKPATH_TEST_POSTGRES_URL:-}" ]; then
  echo "$BACKPATH_TEST_POSTGRES_URL" >&3
  exit 0
fi

log() { echo "[ensure_postgres] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

PORT="${BACKPATH_PG_PORT:-55432}"
DB_USER=backpath
DB_PASS=backpath
DB_NAME="${BACKPATH_PG_DBNAME:-backpath_test}"

if [ "$(id -u)" -eq 0 ]; then
  PG_OS_USER=postgres
  PGDIR="${BACKPATH_PG_DIR:-/var/tmp/backpath-pg}"
else
  # Non-root developers get their own cluster; they cannot become `postgres`.
  PG_OS_USER="$(id -un)"
  PGDIR="${BACKPATH_PG_DIR:-/var/tmp/backpath-pg-$PG_OS_USER}"
fi
DATA="$PGDIR/data"

# ---- server binaries (Debian: /usr/lib/postgresql/<major>/bin) -----------------------------
find_bindir() {
  local d
  # Highest installed major version that has the server binaries.
  for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}

if ! BINDIR="$(find_bindir)"; then
  log "no PostgreSQL server binaries found; installing the Debian 'postgresql' package"
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to apt-get install postgresql"
    SUDO=(sudo -n)
  fi
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
  BINDIR="$(find_bindir)" || die "postgresql installed but no server binaries under /usr/lib/postgresql/*/bin"
fi
log "using $BINDIR"

if [ "$PG_OS_USER" = postgres ] && ! id postgres >/dev/null 2>&1; then
  # The Debian package creates this user; only binaries copied in some other way lack it.
  useradd --system --home-dir "$PGDIR" --shell /bin/bash postgres
fi

# Run a command as the cluster owner. cwd is $PGDIR, so `postgres` never trips over
# an unreadable cwd such as /root.
as_pg() {
  if [ "$PG_OS_USER" = "$(id -un)" ]; then
    "$@"
  elif command -v runuser >/dev/null 2>&1; then
    runuser -u "$PG_OS_USER" -- "$@"
  else
    su "$PG_OS_USER" -s /bin/sh -c "$(printf '%q ' "$@")"
  fi
}

# Private dir, owned by the cluster owner; 0700 also makes the unix socket in it private,
# which is why local (socket) connections can use trust auth safely.
mkdir -p "$PGDIR"
chown "$PG_OS_USER:" "$PGDIR"
chmod 0700 "$PGDIR"
cd "$PGDIR"

# One ensure_postgres at a time (two test runs starting together must not initdb twice).
exec 9>"$PGDIR/.ensure_postgres.lock"
command -v flock >/dev/null 2>&1 && flock 9

PG_CTL="$BINDIR/pg_ctl"
PSQL=("$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGDIR" -p "$PORT" -U postgres)
MAJOR="$("$BINDIR/pg_config" --version 2>/dev/null | sed -E 's/^PostgreSQL ([0-9]+).*/\1/' || true)"
[ -n "$MAJOR" ] || MAJOR="$(basename "$(dirname "$BINDIR")")"

is_ready() { "$BINDIR/pg_isready" -q -h "$PGDIR" -p "$PORT" -U postgres -d postgres; }

# True if the pid recorded in postmaster.pid is a live postmaster of THIS data dir (its cwd).
# After a reboot or container restart the pid may belong to an unrelated process (even another
# postgres), which fools `pg_ctl status` and must never receive our stop signal.
postmaster_alive() {
  local pid
  [ -f "$DATA/postmaster.pid" ] || return 1
  pid="$(head -n1 "$DATA/postmaster.pid" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ "$(readlink "/proc/$pid/cwd" 2>/dev/null || true)" = "$(cd "$DATA" && pwd -P)" ]
}

init_cluster() {
  log "initdb in $DATA (PostgreSQL $MAJOR)"
  rm -rf "$DATA"
  # Superuser `postgres`: trust over the private socket only; TCP needs a password (scram).
  as_pg "$BINDIR/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null \
    || as_pg "$BINDIR/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C \
      --auth-local=trust --auth-host=scram-sha-256 >/dev/null
}

start_cluster() {
  # Settings go on the command line so a changed BACKPATH_PG_PORT/DIR applies to a reused cluster.
  # fsync etc. are off: this cluster only ever holds disposable test data, and it is much faster.
  local opts
  opts="-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$PGDIR"
  opts+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
  (
    # The postmaster outlives us and inherits every open fd: close all but 0-2 so it holds
    # neither our stdout (a caller's $(...) would wait for EOF forever), our lock, nor any
    # pipe of the CI runner.
    for fd in /proc/self/fd/*; do
      fd="${fd##*/}"
      if [ "$fd" -gt 2 ] 2>/dev/null; then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec </dev/null
    as_pg "$PG_CTL" -D "$DATA" -l "$PGDIR/server.log" -w -t 60 start -o "$opts" >/dev/null
  )
}

# Data dir from another major version (after an upgrade) or a half-finished initdb: start over.
if [ -d "$DATA" ] && [ "$(cat "$DATA/PG_VERSION" 2>/dev/null || true)" != "$MAJOR" ]; then
  log "existing $DATA is not a PostgreSQL $MAJOR cluster; recreating it"
  if postmaster_alive; then as_pg "$PG_CTL" -D "$DATA" -m immediate stop >/dev/null 2>&1 || true; fi
  rm -rf "$DATA"
fi
[ -f "$DATA/PG_VERSION" ] || init_cluster

if is_ready; then
  log "cluster already running on 127.0.0.1:$PORT"
else
  if postmaster_alive; then
    # Running but not answering on our port/socket (started with other settings, or
    # still starting up): stop it so it comes back with the settings above.
    log "postmaster running but not ready on port $PORT; restarting it"
    as_pg "$PG_CTL" -D "$DATA" -m fast -w -t 60 stop >/dev/null 2>&1 \
      || as_pg "$PG_CTL" -D "$DATA" -m immediate stop >/dev/null 2>&1 || true
  fi
  if ! postmaster_alive; then
    # Stale lock files from a crash/reboot would otherwise block the start.
    rm -f "$DATA/postmaster.pid" "$PGDIR/.s.PGSQL.$PORT" "$PGDIR/.s.PGSQL.$PORT.lock"
  fi
  if "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
    die "127.0.0.1:$PORT is taken by another server; set BACKPATH_PG_PORT to a free port"
  fi
  log "starting cluster on 127.0.0.1:$PORT (log: $PGDIR/server.log)"
  if ! start_cluster; then
    # A cluster that cannot start is only test data: show why, re-initialise once, retry.
    tail -n 20 "$PGDIR/server.log" >&2 || true
    log "start failed; re-initialising $DATA and retrying"
    as_pg "$PG_CTL" -D "$DATA" -m immediate stop >/dev/null 2>&1 || true
    init_cluster
    start_cluster || { tail -n 20 "$PGDIR/server.log" >&2 || true; die "could not start PostgreSQL"; }
  fi
fi

for _ in $(seq 1 60); do
  is_ready && break
  sleep 0.5
done
is_ready || die "PostgreSQL on $PGDIR:$PORT did not become ready (see $PGDIR/server.log)"

# Role (re-asserting the password keeps it right even if someone changed it) and a fresh database.
as_pg "${PSQL[@]}" -d postgres <<SQL
SET client_min_messages = warning;
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER') THEN
    CREATE ROLE $DB_USER LOGIN CREATEDB PASSWORD '$DB_PASS';
  ELSE
    ALTER ROLE $DB_USER LOGIN CREATEDB PASSWORD '$DB_PASS';
  END IF;
END
\$\$;
-- DROP DATABASE ... WITH (FORCE), as the tests and benches recreate their databases, also ends an
-- autovacuum worker busy there: allowed only with pg_signal_backend.
GRANT pg_signal_backend TO $DB_USER;
DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE);
CREATE DATABASE $DB_NAME OWNER $DB_USER ENCODING 'UTF8' TEMPLATE template0;
SQL

# Prove the exact credentials we hand out work over TCP before printing them.
PGPASSWORD="$DB_PASS" "$BINDIR/psql" -X -q -w -h 127.0.0.1 -p "$PORT" -U "$DB_USER" -d "$DB_NAME" \
  -c 'SELECT 1' >/dev/null || die "cannot log in as $DB_USER over TCP on 127.0.0.1:$PORT"

log "database $DB_NAME ready"
echo "postgresql+asyncpg://$DB_USER:$DB_PASS@127.0.0.1:$PORT/$DB_NAME" >&3
