"""Core throughput of BackPath against a *floor*, with wrk. A benchmark, not a test.

    .venv/bin/python bench/run_core.py                      # SQLite, and PostgreSQL if one can be had
    BENCH_POSTGRES_URL=postgresql+asyncpg://u:p@127.0.0.1:5432/db .venv/bin/python bench/run_core.py
    .venv/bin/python bench/run_core.py --db sqlite --duration 5 --reps 3

For each database (SQLite always; PostgreSQL from $BENCH_POSTGRES_URL, else from
`scripts/ensure_postgres.sh` with BACKPATH_PG_DBNAME=backpath_bench, unless --db sqlite), it:

1. starts our server (`backpath serve`) and the floor (bench/floor_app.py: raw ASGI, same engine,
   same tables, no FHIR logic) on fresh databases of their own (on PostgreSQL: two databases it
   creates beside the given one and drops at the end; the given database is never touched);
2. preloads the same Patients into both (transaction Bundles of PUT entries, ids known);
3. checks once per operation that each server answers it with a 2xx;
4. per operation (read, create, update, transaction), warms each server up, then runs wrk
   --reps times on each, alternating which goes first, and takes medians (2xx responses/s);
5. stops both servers (also on failure or Ctrl-C) and prints the table.

Only 2xx responses count (wrk counts status > 399 as errors; they are reported as non-2xx, and
socket errors and timeouts as sock-err). Targets (2-core machine): read >= 50 % of the floor,
create >= 35 % of the floor, transaction ingest >= 1,500 resources/s on SQLite.
Exit status is 0 unless the run itself fails; --strict also makes a missed target exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WRK_DIR = ROOT / "bench" / "wrk"
PYTHON = ROOT / ".venv" / "bin" / "python"
BACKPATH = ROOT / ".venv" / "bin" / "backpath"
OPERATIONS = ("read", "create", "update", "transaction")
# operation -> (what is compared, minimum); "ratio" = ours/floor of 2xx req/s, "resources" = ours resources/s.
TARGETS: dict[tuple[str, str], tuple[str, float]] = {
    ("sqlite", "read"): ("ratio", 0.50),
    ("sqlite", "create"): ("ratio", 0.35),
    ("sqlite", "transaction"): ("resources", 1500.0),
    ("postgresql", "read"): ("ratio", 0.50),
    ("postgresql", "create"): ("ratio", 0.35),
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes, always cleaned up


_children: list[subprocess.Popen[bytes]] = []


def _stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop a server we started (its own process group, by id): SIGTERM, then SIGKILL."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout)
        except (ProcessLookupError, PermissionError):
            pass
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
    if process in _children:
        _children.remove(process)


def _stop_all() -> None:
    for process in list(_children):
        _stop(process)


def _on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks, then atexit


atexit.register(_stop_all)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGHUP, _on_signal)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str  # "ours" | "floor"
    command: list[str]
    env: dict[str, str]
    log_path: Path
    ready_path: str
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [part.replace("{port}", str(self.port)) for part in self.command]
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        _children.append(self.process)

    def wait_ready(self, timeout: float = 120.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as response:
                    if response.status < 500:
                        return
            except urllib.error.HTTPError as error:
                if error.code < 500:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


SERVER_ENV = {"BACKPATH_DEV_MODE": "1", "BACKPATH_LOG_LEVEL": "WARNING"}


def backpath_server(database_url: str, log_path: Path, env: dict[str, str] | None = None) -> Server:
    """Our server (`backpath serve`) on `database_url`, not started yet (also used by run_search.py)."""
    return Server(
        "ours",
        [str(BACKPATH), "serve", "--host", "127.0.0.1", "--port", "{port}"],
        {**SERVER_ENV, "DATABASE_URL": database_url, **(env or {})},
        log_path,
        "/metadata",
    )


# ---------------------------------------------------------------- HTTP helpers (setup only, not load)


def _http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


_FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def _patient(template: str, ident: str, resource_id: str | None = None) -> dict[str, Any]:
    patient = json.loads(template.replace("{{IDENT}}", ident))
    return {"id": resource_id, **patient} if resource_id else patient


def preload(server: Server, ids: list[str], template: str, batch: int = 100) -> None:
    """PUT entries in transaction Bundles, so both servers hold the same ids (identifier = id)."""
    for start in range(0, len(ids), batch):
        entries = [
            {"resource": _patient(template, i, i), "request": {"method": "PUT", "url": f"Patient/{i}"}}
            for i in ids[start : start + batch]
        ]
        body = json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}).encode()
        status, answer = _http("POST", server.url + "/", body, {**_FHIR, "Prefer": "return=minimal"})
        if status != 200:
            raise RuntimeError(f"preloading {server.name} failed: {status} {answer[:500]!r}")


def smoke(server: Server, ids: list[str], template: str) -> None:
    """One request per operation, shaped like the wrk scripts', must answer 2xx."""
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:6f0c7bde-0d7a-4b7a-9d3e-2b8f5d1c0a11",
                "resource": _patient(template, "smoke-tx"),
                "request": {"method": "POST", "url": "Patient"},
            }
        ],
    }
    checks = [
        ("read", "GET", f"/Patient/{ids[0]}", None, {}),
        ("create", "POST", "/Patient", json.dumps(_patient(template, "smoke-create")).encode(), {}),
        (
            "update",
            "PUT",
            f"/Patient/{ids[-1]}",
            json.dumps(_patient(template, ids[-1], ids[-1])).encode(),
            {},
        ),
        ("transaction", "POST", "/", json.dumps(bundle).encode(), {"Prefer": "return=minimal"}),
    ]
    for operation, method, path, body, extra in checks:
        status, answer = _http(method, server.url + path, body, {**_FHIR, **extra})
        if not 200 <= status < 300:
            raise RuntimeError(
                f"{server.name} {operation}: {method} {path} answered {status}: {answer[:500]!r}"
            )


# ---------------------------------------------------------------- wrk


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    non2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float

    @property
    def ok_per_s(self) -> float:
        return (self.requests - self.non2xx) / self.duration_s


def run_wrk(
    server: Server, operation: str, seconds: int, args: argparse.Namespace, ids_file: Path, nonce: str
) -> WrkResult:
    connections = args.tx_connections if operation == "transaction" else args.connections
    threads = min(args.threads, connections)
    script_args = {
        "read": [str(ids_file)],
        "create": [nonce],
        "update": [str(ids_file), str(threads), nonce],
        "transaction": [str(args.entries), nonce],
    }[operation]
    command = [
        args.wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, seconds)}s",
        "--timeout",
        "30s",
        "-s",
        str(WRK_DIR / f"{operation}.lua"),
        server.url,
        "--",
        *script_args,
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if completed.returncode != 0:
        raise RuntimeError(
            f"wrk failed ({completed.returncode}): {' '.join(command)}\n{completed.stdout}\n{completed.stderr}"
        )
    return wrk_result(completed.stdout)


def wrk_result(output: str) -> WrkResult:
    """The figures of the BENCH line that bench/wrk/common.lua's done() prints (also used by run_mixed.py)."""
    match = re.search(r"^BENCH (\{.*\})$", output, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk printed no BENCH line:\n{output}")
    data = json.loads(match.group(1))
    return WrkResult(
        requests=data["requests"],
        duration_s=data["duration_us"] / 1e6,
        non2xx=data["non2xx"],
        socket_errors=data["connect_errors"] + data["read_errors"] + data["write_errors"] + data["timeouts"],
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
    )


# ---------------------------------------------------------------- databases


def _sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def postgres_base_url() -> str | None:
    url = os.environ.get("BENCH_POSTGRES_URL")
    if url:
        return url
    script = ROOT / "scripts" / "ensure_postgres.sh"
    if not script.exists():
        return None
    log("asking scripts/ensure_postgres.sh for a PostgreSQL (database backpath_bench)")
    try:
        completed = subprocess.run(
            ["bash", str(script)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            env={**os.environ, "BACKPATH_PG_DBNAME": "backpath_bench"},
        )
    except subprocess.TimeoutExpired:
        log("ensure_postgres.sh timed out; skipping PostgreSQL")
        return None
    lines = [line for line in completed.stdout.splitlines() if line.startswith("postgresql")]
    if completed.returncode != 0 or not lines:
        log(f"no PostgreSQL ({completed.returncode}): {completed.stderr.strip()[-500:]}; skipping it")
        return None
    return lines[-1].strip()


async def _recreate_pg_databases(base_url: str, names: list[str], *, create: bool) -> list[str]:
    import asyncpg
    from sqlalchemy.engine import make_url

    url = make_url(base_url)
    connection = await asyncpg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=url.database,
    )
    try:
        for name in names:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if create:
                await connection.execute(f'CREATE DATABASE "{name}"')
        version = await connection.fetchval("SHOW server_version")
    finally:
        await connection.close()
    return [url.set(database=name).render_as_string(hide_password=False) for name in names] + [str(version)]


# ---------------------------------------------------------------- the run


@dataclass
class Row:
    db: str
    operation: str
    ours: list[WrkResult]
    floor: list[WrkResult]
    entries: int

    def median(self, side: str, attribute: str) -> float:
        results = self.ours if side == "ours" else self.floor
        return statistics.median(getattr(r, attribute) for r in results)

    @property
    def ratio(self) -> float:
        floor = self.median("floor", "ok_per_s")
        return self.median("ours", "ok_per_s") / floor if floor else float("nan")

    @property
    def per_request(self) -> int:
        return self.entries if self.operation == "transaction" else 1

    def verdict(self) -> tuple[str, str]:
        target = TARGETS.get((self.db, self.operation))
        if target is None:
            return "-", "-"
        kind, minimum = target
        if kind == "ratio":
            return f">= {minimum:.0%} floor", "PASS" if self.ratio >= minimum else "FAIL"
        value = self.median("ours", "ok_per_s") * self.per_request
        return f">= {minimum:,.0f} res/s", "PASS" if value >= minimum else "FAIL"


def bench_database(
    db: str, url_ours: str, url_floor: str, args: argparse.Namespace, workdir: Path
) -> list[Row]:
    template = (WRK_DIR / "patient.json").read_text().strip()
    ids = [f"bench-{i:05d}" for i in range(args.preload)]
    ids_file = workdir / "ids.txt"
    ids_file.write_text("\n".join(ids) + "\n")
    common_env = dict(SERVER_ENV)
    ours = backpath_server(url_ours, workdir / f"{db}-ours.log")
    floor = Server(
        "floor",
        [str(PYTHON), str(ROOT / "bench" / "floor_app.py"), "--host", "127.0.0.1", "--port", "{port}"],
        {**common_env, "DATABASE_URL": url_floor},
        workdir / f"{db}-floor.log",
        "/Patient/ready-probe",
    )
    rows: list[Row] = []
    try:
        for server in (ours, floor):
            server.start()
        for server in (ours, floor):
            server.wait_ready()
            started = time.monotonic()
            preload(server, ids, template)
            log(
                f"{db}: {server.name} on {server.url}, preloaded {len(ids)} Patients in {time.monotonic() - started:.1f}s"
            )
            smoke(server, ids, template)
        for operation in OPERATIONS:
            results: dict[str, list[WrkResult]] = {"ours": [], "floor": []}
            for server in (ours, floor):
                if args.warmup > 0:
                    run_wrk(
                        server, operation, args.warmup, args, ids_file, f"w{server.name[0]}{int(time.time())}"
                    )
            for rep in range(args.reps):
                order = (ours, floor) if rep % 2 == 0 else (floor, ours)
                for server in order:
                    result = run_wrk(
                        server,
                        operation,
                        args.duration,
                        args,
                        ids_file,
                        f"r{rep}{server.name[0]}{int(time.time())}",
                    )
                    results[server.name].append(result)
                    log(
                        f"{db} {operation:<11} {server.name:<5} run {rep + 1}: {result.ok_per_s:9.1f} 2xx/s  "
                        f"p50 {result.p50_ms:7.2f} ms  non-2xx {result.non2xx}  sock-err {result.socket_errors}"
                    )
            rows.append(Row(db, operation, results["ours"], results["floor"], args.entries))
    finally:
        for server in (ours, floor):
            server.stop()
    return rows


def render(rows: list[Row]) -> str:
    header = [
        "db",
        "operation",
        "ours req/s",
        "floor req/s",
        "ours/floor",
        "ours res/s",
        "floor res/s",
        "target",
        "result",
        "p50 ours",
        "p50 floor",
        "non-2xx o/f",
        "sock-err o/f",
    ]
    table = [header]
    for row in rows:
        target, result = row.verdict()
        ours_rps, floor_rps = row.median("ours", "ok_per_s"), row.median("floor", "ok_per_s")
        table.append(
            [
                row.db,
                row.operation,
                f"{ours_rps:,.1f}",
                f"{floor_rps:,.1f}",
                f"{row.ratio:.0%}",
                f"{ours_rps * row.per_request:,.0f}",
                f"{floor_rps * row.per_request:,.0f}",
                target,
                result,
                f"{row.median('ours', 'p50_ms'):.1f} ms",
                f"{row.median('floor', 'p50_ms'):.1f} ms",
                f"{sum(r.non2xx for r in row.ours)}/{sum(r.non2xx for r in row.floor)}",
                f"{sum(r.socket_errors for r in row.ours)}/{sum(r.socket_errors for r in row.floor)}",
            ]
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = []
    for n, line in enumerate(table):
        cells = [
            cell.ljust(w) if i < 2 or i in (7, 8) else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _code_version() -> str:
    """The commit measured, and whether app/ differs from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "app"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{commit}" + (" + uncommitted changes in app/" if dirty else "")


def main() -> int:
    parser = argparse.ArgumentParser(description="BackPath core throughput vs a floor (wrk).")
    parser.add_argument(
        "--db",
        choices=["all", "sqlite", "postgresql"],
        default="all",
        help="all = SQLite, plus PostgreSQL when one can be had (default)",
    )
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run (default 8)")
    parser.add_argument(
        "--warmup", type=int, default=2, help="seconds of warm-up per operation and server (default 2)"
    )
    parser.add_argument(
        "--reps",
        type=int,
        default=3,
        help="wrk runs per operation and server; medians are reported (default 3)",
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="wrk threads (default 2; the server shares the 2 cores)"
    )
    parser.add_argument(
        "--connections", type=int, default=16, help="wrk connections for read/create/update (default 16)"
    )
    parser.add_argument(
        "--tx-connections", type=int, default=4, help="wrk connections for transactions (default 4)"
    )
    parser.add_argument(
        "--entries", type=int, default=50, help="Patients per transaction Bundle (default 50)"
    )
    parser.add_argument(
        "--preload", type=int, default=2000, help="Patients preloaded into each server (default 2000)"
    )
    parser.add_argument("--wrk", default=shutil.which("wrk") or "/usr/bin/wrk")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    if args.preload < 2 * args.connections:
        parser.error("--preload must exceed 2 x --connections (update gives each connection its own ids)")
    if not Path(args.wrk).exists():
        parser.error(f"wrk not found at {args.wrk} (apt-get install wrk)")

    command = " ".join([".venv/bin/python", "bench/run_core.py", *sys.argv[1:]])
    code = _code_version()
    started = time.monotonic()
    rows: list[Row] = []
    notes: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="backpath-bench-"))
    pg_cleanup: tuple[str, list[str]] | None = None
    try:
        if args.db in ("all", "sqlite"):
            sqlite_dir = workdir / "sqlite"
            sqlite_dir.mkdir()
            notes.append(
                f"sqlite {sqlite3.sqlite_version} (WAL, synchronous=NORMAL), files in a fresh temp dir"
            )
            rows += bench_database(
                "sqlite",
                _sqlite_url(sqlite_dir / "ours.db"),
                _sqlite_url(sqlite_dir / "floor.db"),
                args,
                workdir,
            )
        if args.db in ("all", "postgresql"):
            base = postgres_base_url()
            if base is None:
                if args.db == "postgresql":
                    raise RuntimeError("no PostgreSQL: set BENCH_POSTGRES_URL")
                notes.append(
                    "postgresql: skipped (no BENCH_POSTGRES_URL and scripts/ensure_postgres.sh gave none)"
                )
            else:
                names = ["backpath_bench_ours", "backpath_bench_floor"]
                url_ours, url_floor, version = asyncio.run(_recreate_pg_databases(base, names, create=True))
                pg_cleanup = (base, names)
                notes.append(
                    f"postgresql {version} (fresh databases {', '.join(names)} beside the one given)"
                )
                rows += bench_database("postgresql", url_ours, url_floor, args, workdir)
    finally:
        _stop_all()
        if pg_cleanup is not None:
            try:
                asyncio.run(_recreate_pg_databases(pg_cleanup[0], pg_cleanup[1], create=False))
            except Exception as error:  # cleanup must not hide the real outcome
                log(f"could not drop the bench databases: {error}")
        shutil.rmtree(workdir, ignore_errors=True)

    load = os.getloadavg()
    print()
    print(f"command: {command}")
    print(f"code: {code}")
    print(
        f"machine: {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, "
        f"load avg at end {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}; elapsed {time.monotonic() - started:.0f}s"
    )
    print(
        f"wrk: {args.threads} threads, {args.connections} connections ({args.tx_connections} for transactions), "
        f"{args.duration:g}s x {args.reps} runs per operation and server after {args.warmup:g}s warm-up, alternating "
        f"order; medians of 2xx responses/s; transaction = Bundle of {args.entries} new Patients, Prefer: return=minimal"
    )
    for note in notes:
        print(f"db: {note}")
    print()
    print(render(rows))
    missed = [f"{r.db} {r.operation}" for r in rows if r.verdict()[1] == "FAIL"]
    print()
    print("targets missed: " + (", ".join(missed) if missed else "none"))
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
