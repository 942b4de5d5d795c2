"""Mixed workload under load, with wrk: reads, searches and creates of patient data from 50 concurrent
clients for 60 s, on SQLite and PostgreSQL; and what the audit trail costs. A benchmark, not a test.

    .venv/bin/python bench/run_mixed.py                       # both databases, ~10 min
    .venv/bin/python bench/run_mixed.py --db sqlite --duration 20 --audit-duration 10 --reps 1

For each database it:

1. runs the production configuration (bearer tokens from an issuer whose JWKS file it writes, the
   audit trail on): preloads Patients with an Observation each, warms up, then runs
   `bench/wrk/mixed.lua` (25 % Patient reads, 10 % Observation reads, 15 % Observation searches by
   subject, 10 % Patient searches with `_revinclude`, 25 % Observation creates, 10 % `$apply` of the
   nl-zel pathway for a patient, 5 % CDS patient-view calls with their prefetch) with --connections
   clients for --duration seconds, twice: saturating (each client sends its next request as soon
   as the last is answered: the throughput ceiling) and paced (each client pauses --think-ms on
   average between requests, as people and integrations do); reports throughput, p50/p99 latency
   and errors (non-2xx and socket errors); goal: no errors, p99 under 250 ms;
2. measures the audit trail's cost: the same mix in development mode with the audit trail off and
   on, alternating, --reps times each for --audit-duration seconds, saturating and paced, each run
   on a fresh copy of the preloaded database (so no run inherits the growth of the runs before it,
   which slowed later runs whether the trail was on or off); reports the medians: what it costs the throughput ceiling, and what it adds to a request's latency under
   the paced load (goal: within 10 %).

With --per-kind the production server logs every request (BACKPATH_LOG_LEVEL=INFO, which costs it some
throughput) and the server-side latency of each kind of request in the saturating run is printed.

The CDS calls carry no client JWT (wrk cannot sign one per call): the servers run with
BACKPATH_CDS_CLIENT_AUTH=0.
wrk comes from Debian (`apt-get install wrk`); this script installs it when it is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import jwt  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from run_core import (  # noqa: E402  (also installs the process clean-up: atexit, SIGTERM, SIGHUP)
    Server,
    WrkResult,
    _code_version,
    _recreate_pg_databases,
    _sqlite_url,
    _stop_all,
    backpath_server,
    log,
    wrk_result,
)

SCRIPT = ROOT / "bench" / "wrk" / "mixed.lua"
PG_DATABASE = "backpath_bench_mixed"
PRELOADED, RUN = "preloaded", "run"  # the preloaded database's copy, and each audit run's copy of that
ISSUER = "https://issuer.bench.backpath"
AUDIENCE = "https://fhir.bench.backpath"
FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
P99_GOAL_MS, AUDIT_COST_GOAL = 250.0, 0.10
THINK_LABEL = [0]  # the think time of this run, for the table


def ensure_wrk() -> str:
    """wrk from Debian's packages, installed when missing (root only)."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("wrk is missing: apt-get install wrk")
    log("installing wrk with apt-get")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return shutil.which("wrk") or "/usr/bin/wrk"


class Issuer:
    """A stand-in authorization server: an RSA key, its JWKS file, long-lived bench tokens."""

    def __init__(self, folder: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        self.jwks_file = folder / "jwks.json"
        self.jwks_file.write_text(json.dumps({"keys": [{**public, "kid": "bench", "alg": "RS384", "use": "sig"}]}))

    def token(self, scope: str, lifetime: int = 7200) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "bench-user", "client_id": "bench", "scope": scope, "iat": now, "exp": now + lifetime}
        return jwt.encode(claims, self.key, algorithm="RS384", headers={"kid": "bench"})

    def env(self) -> dict[str, str]:
        return {
            "BACKPATH_DEV_MODE": "0",
            "BACKPATH_AUTH_ISSUER": ISSUER,
            "BACKPATH_AUTH_JWKS_FILE": str(self.jwks_file),
            "BACKPATH_AUTH_AUDIENCE": AUDIENCE,
            "BACKPATH_CDS_CLIENT_AUTH": "0",
        }


def _post(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def preload(server: Server, count: int, token: str | None, ids_file: Path) -> None:
    """`count` Patients with one Observation each, at known ids, in transaction Bundles of 50."""
    headers = {**FHIR, "Prefer": "return=minimal", **({"Authorization": f"Bearer {token}"} if token else {})}
    pairs = [(f"mixed-p{i:05d}", f"mixed-o{i:05d}") for i in range(count)]
    for start in range(0, count, 50):
        entries = []
        for patient_id, observation_id in pairs[start : start + 50]:
            patient = {"resourceType": "Patient", "id": patient_id, "name": [{"family": "Bench", "given": ["Mixed"]}], "birthDate": "1970-01-01"}
            observation = {
                "resourceType": "Observation",
                "id": observation_id,
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "91351-7"}]},
                "subject": {"reference": f"Patient/{patient_id}"},
                "valueInteger": 5,
            }
            entries += [
                {"resource": patient, "request": {"method": "PUT", "url": f"Patient/{patient_id}"}},
                {"resource": observation, "request": {"method": "PUT", "url": f"Observation/{observation_id}"}},
            ]
        status, answer = _post(server.url + "/", {"resourceType": "Bundle", "type": "transaction", "entry": entries}, headers)
        if status != 200:
            raise RuntimeError(f"preload failed: {status} {answer[:300]!r}")
    ids_file.write_text("".join(f"{p} {o}\n" for p, o in pairs))


@dataclass(frozen=True)
class Result:
    """wrk's figures for one run, and how many requests of each kind of the mix it sent."""

    wrk: WrkResult
    mix: dict[str, int]
    per_kind: dict[str, tuple[int, float, float]] | None = None  # kind: (requests, p50 ms, p99 ms), server-side

    @property
    def per_s(self) -> float:
        return float(self.wrk.requests / self.wrk.duration_s)

    @property
    def p50_ms(self) -> float:
        return float(self.wrk.p50_ms)

    @property
    def p99_ms(self) -> float:
        return float(self.wrk.p99_ms)

    @property
    def errors(self) -> int:
        return int(self.wrk.non2xx + self.wrk.socket_errors)


def run_wrk(
    wrk: str, server: Server, seconds: int, args: argparse.Namespace, ids_file: Path, token: str | None, think_ms: int = 0
) -> Result:
    command = [
        wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds}s", "--timeout", "30s", "--latency",
        "-s", str(SCRIPT), server.url, "--", str(ids_file), token or "-", f"n{time.time_ns()}", str(think_ms),
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120, check=False)
    mix = re.search(r"^MIX (\{.*\})$", completed.stdout, re.MULTILINE)
    if completed.returncode != 0 or mix is None:
        raise RuntimeError(f"wrk failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
    return Result(wrk_result(completed.stdout), json.loads(mix.group(1)))


def _server(url: str, log_path: Path, env: dict[str, str], workers: int) -> Server:
    server = backpath_server(url, log_path, {"BACKPATH_LOG_LEVEL": "WARNING", **env})
    server.command += ["--workers", str(workers)]
    return server


def _measure(
    wrk: str, server: Server, args: argparse.Namespace, ids_file: Path, token: str | None, seconds: int, paced: bool = False
) -> list[Result]:
    """Warm up, then one saturating run (and a paced one after it when asked)."""
    server.start()
    try:
        server.wait_ready()
        if args.warmup:
            run_wrk(wrk, server, args.warmup, args, ids_file, token)
        logged_from = server.log_path.stat().st_size
        results = [run_wrk(wrk, server, seconds, args, ids_file, token)]
        if args.per_kind:
            results[0] = replace(results[0], per_kind=_latency_per_kind(server.log_path, logged_from))
        if paced:
            results.append(run_wrk(wrk, server, seconds, args, ids_file, token, args.think_ms))
        return results
    finally:
        server.stop()


# The mix's kinds by the method and path the access log records (bench/wrk/mixed.lua).
_KINDS = [
    ("read-patient", "GET", re.compile(r"/Patient/[^/]+$")),
    ("read-observation", "GET", re.compile(r"/Observation/[^/]+$")),
    ("search-observations", "GET", re.compile(r"/Observation$")),
    ("search-patient", "GET", re.compile(r"/Patient$")),
    ("create-observation", "POST", re.compile(r"/Observation$")),
    ("apply-pathway", "GET", re.compile(r"/PlanDefinition/[^/]+/\$apply$")),
    ("cds-patient-view", "POST", re.compile(r"/cds-services/")),
]


def _latency_per_kind(log_path: Path, offset: int) -> dict[str, tuple[int, float, float]]:
    """Requests, p50 and p99 (ms, as the server measured them) per kind, from the access log past `offset`."""
    durations: dict[str, list[float]] = {kind: [] for kind, _, _ in _KINDS}
    with log_path.open("rb") as logged:
        logged.seek(offset)
        for line in logged:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not isinstance(entry, dict) or "duration_ms" not in entry:
                continue
            kind = next((k for k, method, path in _KINDS if entry.get("method") == method and path.search(str(entry.get("path", "")))), None)
            if kind is not None:
                durations[kind].append(float(entry["duration_ms"]))
    return {kind: (len(d), *_percentiles(sorted(d))) for kind, d in durations.items() if d}


def _percentiles(ordered: list[float]) -> tuple[float, float]:
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def bench_database(db: str, url: str, args: argparse.Namespace, wrk: str, workdir: Path) -> dict[str, Any]:
    issuer = Issuer(workdir)
    token = issuer.token("user/*.cruds")
    ids_file = workdir / f"{db}-ids.txt"
    loader = _server(url, workdir / f"{db}-preload.log", issuer.env(), 1)
    loader.start()
    try:
        loader.wait_ready()
        started = time.monotonic()
        preload(loader, args.preload, token, ids_file)
        log(f"{db}: preloaded {args.preload} Patients + Observations in {time.monotonic() - started:.1f}s")
    finally:
        loader.stop()
    preloaded = _copy_database(url, url, PRELOADED)
    env = {**issuer.env(), **({"BACKPATH_LOG_LEVEL": "INFO"} if args.per_kind else {})}
    server = _server(url, workdir / f"{db}-production.log", env, args.workers)
    production = _measure(wrk, server, args, ids_file, token, args.duration, paced=True)
    for name, result in zip(("saturating", "paced"), production, strict=True):
        log(f"{db} production {name}: {result.per_s:.0f} req/s, p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, errors {result.errors}")
    audit: dict[str, list[list[Result]]] = {"off": [], "on": []}
    for rep in range(args.reps):
        for setting in ("off", "on") if rep % 2 == 0 else ("on", "off"):
            env = {"BACKPATH_DEV_MODE": "1", "BACKPATH_AUDIT": "1" if setting == "on" else "0"}
            server = _server(_copy_database(url, preloaded, RUN), workdir / f"{db}-audit-{setting}.log", env, args.workers)
            results = _measure(wrk, server, args, ids_file, None, args.audit_duration, paced=True)
            audit[setting].append(results)
            for name, result in zip(("saturating", "paced"), results, strict=True):
                log(f"{db} audit {setting:<3} run {rep + 1} {name}: {result.per_s:.0f} req/s, p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms")
    return {"db": db, "production": production, "audit": audit}


def _copy_database(url: str, source_url: str, name: str) -> str:
    """The URL of `name`, made a copy of the database at `source_url` (a file copy on SQLite,
    CREATE DATABASE ... TEMPLATE on PostgreSQL); `url` is the bench's own database, beside which
    the copies live."""
    from sqlalchemy.engine import make_url

    base, source = make_url(url), make_url(source_url)
    if base.get_backend_name() == "sqlite":
        assert base.database and source.database
        target = Path(base.database).with_name(f"{Path(base.database).stem}-{name}.db")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
            if Path(f"{source.database}{suffix}").exists():
                shutil.copyfile(f"{source.database}{suffix}", f"{target}{suffix}")
        return _sqlite_url(target)
    target_name = f"{base.database}_{name}"
    asyncio.run(_pg_copy(base.set(database="postgres").render_as_string(hide_password=False), str(source.database), target_name))
    return base.set(database=target_name).render_as_string(hide_password=False)


async def _pg_copy(maintenance_url: str, source: str, target: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(maintenance_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{target}" TEMPLATE "{source}"')
    finally:
        await connection.close()


def _median(results: list[Result], attribute: str) -> float:
    return float(statistics.median(getattr(r, attribute) for r in results))


def render(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| db | load | req/s | p50 | p99 | errors (non-2xx / socket) | requests by kind | goal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for name, r in zip(("saturating", f"paced ~{THINK_LABEL[0]} ms"), row["production"], strict=True):
            ok = r.errors == 0 and r.p99_ms < P99_GOAL_MS
            kinds = ", ".join(f"{k} {v}" for k, v in r.mix.items())
            lines.append(
                f"| {row['db']} | {name} | {r.per_s:,.0f} | {r.p50_ms:.1f} ms | {r.p99_ms:.1f} ms | {r.wrk.non2xx} / {r.wrk.socket_errors} | "
                f"{kinds} | {'met' if ok else 'missed'} |"
            )
    per_kind = [(row["db"], row["production"][0].per_kind) for row in rows if row["production"][0].per_kind]
    if per_kind:
        lines += ["", "| db | kind (saturating, server-side) | requests | p50 | p99 |", "|---|---|---|---|---|"]
        for db, kinds in per_kind:
            lines += [f"| {db} | {kind} | {n} | {p50:.1f} ms | {p99:.1f} ms |" for kind, (n, p50, p99) in kinds.items()]
    lines += [
        "",
        "| db | saturating req/s, audit off / on | throughput cost | paced p50, off / on | paced p99, off / on | latency cost (p50) | goal (≤ 10 %) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        off_sat, on_sat = [r[0] for r in row["audit"]["off"]], [r[0] for r in row["audit"]["on"]]
        off_paced, on_paced = [r[1] for r in row["audit"]["off"]], [r[1] for r in row["audit"]["on"]]
        cost = 1 - _median(on_sat, "per_s") / _median(off_sat, "per_s")
        latency = _median(on_paced, "p50_ms") / _median(off_paced, "p50_ms") - 1
        lines.append(
            f"| {row['db']} | {_median(off_sat, 'per_s'):,.0f} / {_median(on_sat, 'per_s'):,.0f} | {cost:.1%} | "
            f"{_median(off_paced, 'p50_ms'):.1f} / {_median(on_paced, 'p50_ms'):.1f} ms | "
            f"{_median(off_paced, 'p99_ms'):.1f} / {_median(on_paced, 'p99_ms'):.1f} ms | {latency:.1%} | "
            f"throughput {'met' if cost <= AUDIT_COST_GOAL else 'missed'}, latency {'met' if latency <= AUDIT_COST_GOAL else 'missed'} |"
        )
    return "\n".join(lines)


def _postgres_url() -> str | None:
    """A PostgreSQL from $BENCH_POSTGRES_URL, else the private cluster of scripts/ensure_postgres.sh."""
    if os.environ.get("BENCH_POSTGRES_URL"):
        return os.environ["BENCH_POSTGRES_URL"]
    completed = subprocess.run(
        ["bash", str(ROOT / "scripts" / "ensure_postgres.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "BACKPATH_PG_DBNAME": PG_DATABASE + "_base"},
    )
    urls = [line for line in completed.stdout.splitlines() if line.startswith("postgresql")]
    return urls[-1] if completed.returncode == 0 and urls else None


def main() -> int:
    parser = argparse.ArgumentParser(description="BackPath mixed workload and audit-trail cost (wrk).")
    parser.add_argument("--db", choices=["all", "sqlite", "postgresql"], default="all")
    parser.add_argument("--duration", type=int, default=60, help="seconds of the production-configuration run (default 60)")
    parser.add_argument("--audit-duration", type=int, default=30, help="seconds per audit off/on run (default 30)")
    parser.add_argument("--reps", type=int, default=2, help="audit off/on runs each, alternating (default 2)")
    parser.add_argument("--warmup", type=int, default=5, help="seconds of warm-up before each measured run (default 5)")
    parser.add_argument("--connections", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--think-ms", type=int, default=500, help="mean pause between a paced client's requests (default 500)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    parser.add_argument("--per-kind", action="store_true", help="log requests in the production run and print latency per kind")
    parser.add_argument("--preload", type=int, default=2000, help="Patients (each with an Observation) preloaded (default 2000)")
    args = parser.parse_args()
    THINK_LABEL[0] = args.think_ms
    wrk = ensure_wrk()
    command = " ".join([".venv/bin/python", "bench/run_mixed.py", *sys.argv[1:]])
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    workdir = Path(tempfile.mkdtemp(prefix="backpath-mixed-"))
    cleanup: str | None = None
    try:
        if args.db in ("all", "sqlite"):
            rows.append(bench_database("sqlite", _sqlite_url(workdir / "mixed.db"), args, wrk, workdir))
        if args.db in ("all", "postgresql"):
            base = _postgres_url()
            if base is None:
                log("no PostgreSQL: skipped")
            else:
                url, _version = asyncio.run(_recreate_pg_databases(base, [PG_DATABASE], create=True))
                cleanup = base
                rows.append(bench_database("postgresql", url, args, wrk, workdir))
    finally:
        _stop_all()
        if cleanup is not None:
            copies = [f"{PG_DATABASE}_{name}" for name in (PRELOADED, RUN)]
            asyncio.run(_recreate_pg_databases(cleanup, [PG_DATABASE, *copies], create=False))
        shutil.rmtree(workdir, ignore_errors=True)
    load = os.getloadavg()
    print()
    print(f"command: {command}")
    print(f"code: {_code_version()}")
    print(
        f"machine: {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, "
        f"load avg at end {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}; elapsed {time.monotonic() - started:.0f}s"
    )
    print(
        f"wrk: {args.threads} threads, {args.connections} connections, {args.duration}s production runs (tokens, audit on; "
        f"saturating, then paced with ~{args.think_ms} ms between a client's requests), "
        f"audit off/on {args.reps} x {args.audit_duration}s each in development mode; {args.warmup}s warm-up each; "
        f"{args.workers} server worker(s); {args.preload} Patients preloaded"
    )
    print()
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
