"""Search latency of BackPath on a loaded database. A benchmark, not a test.

    .venv/bin/python bench/run_search.py                                  # SQLite and PostgreSQL
    .venv/bin/python bench/run_search.py --db sqlite --observations 20000 --patients 2000 --samples 30
    BENCH_POSTGRES_URL=postgresql+asyncpg://u:p@127.0.0.1:5432/db .venv/bin/python bench/run_search.py --db postgresql

For each database (SQLite in a fresh temp file; PostgreSQL in a fresh database `backpath_bench_search`
created beside the one from $BENCH_POSTGRES_URL or `scripts/ensure_postgres.sh`, dropped at the end
unless --keep), it:

1. starts our server (`backpath serve`, same helpers as bench/run_core.py);
2. loads --patients Patients (PUT, ids p0..pN-1) and --observations Observations (POST) over HTTP in
   transaction Bundles of --bundle entries (Prefer: return=minimal), and prints resources/s;
3. runs --samples sequential requests (httpx, one keep-alive connection) per query type, with varying
   parameters, after a short warm-up, and prints median / p95 latency against the targets
   (median <= 20 ms, p95 <= 50 ms):
     token         Observation?code=http://loinc.org|cK                   (_total default = accurate)
     token-nototal same, with _total=none
     date          Observation?date=geA&date=ltB                         (~2-month windows)
     include       Observation?subject=Patient/pN&_include=Observation:subject
     sort-page     Observation?_sort=-date&_count=50, following `next` links; every page is one sample
     sort-page-nototal  same with _total=none
   (the index check below runs first; a search request slower than --page-timeout ends that query
   type and restarts the server, since the server keeps working on the abandoned query)
   (PostgreSQL: VACUUM ANALYZE after the load first, as autovacuum would do on its own schedule)
4. index extraction overhead: median of `app.fhir.index.index_resource` over 200 Observations (in this
   process) vs median latency of 200 sequential `POST /Observation` on the server; target <= 30 %.

Data is random with a fixed seed (--seed), so every run and database gets the same resources.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import httpx  # noqa: E402
from run_core import (  # noqa: E402  (also installs the process clean-up: atexit, SIGTERM, SIGHUP)
    _code_version,
    _recreate_pg_databases,
    _sqlite_url,
    _stop_all,
    backpath_server,
    log,
    postgres_base_url,
)

MEDIAN_MS, P95_MS, INDEX_SHARE = 20.0, 50.0, 0.30
PG_DATABASE = "backpath_bench_search"
CODES = 50
FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
START, END = date(2010, 1, 1), date(2025, 12, 31)
GENDERS = ("male", "female", "other", "unknown")


# ---------------------------------------------------------------- data


def patient(n: int, rng: random.Random) -> dict[str, Any]:
    birth = date(1930, 1, 1) + timedelta(days=rng.randrange(0, 365 * 90))
    return {
        "resourceType": "Patient",
        "id": f"p{n}",
        "identifier": [{"system": "urn:mrn", "value": str(n)}],
        "gender": rng.choice(GENDERS),
        "birthDate": birth.isoformat(),
        "name": [{"family": f"Family{n % 997}", "given": [f"Given{n % 211}"]}],
    }


def observation(rng: random.Random, patients: int) -> dict[str, Any]:
    seconds = rng.randrange(0, int((END - START).total_seconds()))
    moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(_epoch(START) + seconds))
    code = f"c{rng.randrange(CODES)}"
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "survey",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": f"Code {code}"}]},
        "subject": {"reference": f"Patient/p{rng.randrange(patients)}"},
        "effectiveDateTime": moment,
        "valueInteger": rng.randrange(0, 200),
    }


def _epoch(day: date) -> int:
    return int((day - date(1970, 1, 1)).total_seconds())


def bundles(args: argparse.Namespace) -> Iterator[tuple[int, bytes]]:
    """(resources, body) of each transaction Bundle: Patients (PUT) first, then Observations (POST)."""
    rng = random.Random(args.seed)
    batch: list[dict[str, Any]] = []

    def body() -> tuple[int, bytes]:
        data = {"resourceType": "Bundle", "type": "transaction", "entry": batch}
        return len(batch), json.dumps(data, separators=(",", ":")).encode()

    for n in range(args.patients):
        batch.append({"resource": patient(n, rng), "request": {"method": "PUT", "url": f"Patient/p{n}"}})
        if len(batch) == args.bundle:
            yield body()
            batch = []
    if batch:
        yield body()
        batch = []
    for _ in range(args.observations):
        batch.append(
            {"resource": observation(rng, args.patients), "request": {"method": "POST", "url": "Observation"}}
        )
        if len(batch) == args.bundle:
            yield body()
            batch = []
    if batch:
        yield body()


def load(base_url: str, args: argparse.Namespace, db: str) -> float:
    """Load everything with --load-workers concurrent Bundle posts; returns resources/s."""
    total = args.patients + args.observations
    done = 0
    started = time.monotonic()
    warned = False
    headers = {**FHIR, "Prefer": "return=minimal"}

    def post(item: tuple[int, bytes]) -> int:
        count, payload = item
        with httpx.Client(timeout=600) as client:  # one per call keeps threads independent
            response = client.post(base_url + "/", content=payload, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"{db}: loading failed: {response.status_code} {response.text[:500]}")
        return count

    with ThreadPoolExecutor(args.load_workers) as pool:
        for count in pool.map(post, bundles(args)):
            done += count
            elapsed = time.monotonic() - started
            if done % 10000 < args.bundle or done == total:
                rate = done / elapsed
                log(f"{db}: loaded {done:,}/{total:,} in {elapsed:.0f}s ({rate:,.0f} res/s)")
                if not warned and elapsed > 20 and total / rate > 420:
                    warned = True
                    log(
                        f"WARNING {db}: at {rate:,.0f} res/s loading takes ~{total / rate / 60:.0f} min;"
                        " consider a smaller --observations"
                    )
    return total / (time.monotonic() - started)


# ---------------------------------------------------------------- measuring


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    rank = fraction * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class Result:
    def __init__(self, db: str, name: str, latencies: list[float], note: str) -> None:
        self.db, self.name, self.latencies, self.note = db, name, latencies, note

    @property
    def median(self) -> float:
        return statistics.median(self.latencies)

    @property
    def p95(self) -> float:
        return percentile(self.latencies, 0.95)

    @property
    def verdict(self) -> str:
        return "PASS" if self.median <= MEDIAN_MS and self.p95 <= P95_MS else "FAIL"


def timed_get(
    client: httpx.Client, url: str, params: Any = None, timeout: float | None = None
) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    response = client.get(url, params=params, timeout=timeout if timeout is not None else client.timeout)
    body = response.content
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"GET {response.url} answered {response.status_code}: {body[:500]!r}")
    return elapsed, json.loads(body)


def sampled(
    client: httpx.Client,
    base: str,
    samples: int,
    warmup: int,
    make: Callable[[int], list[tuple[str, str]]],
    budget: float,
    timeout: float,
) -> tuple[list[float], list[dict[str, Any]], bool]:
    """Up to `samples` measured requests; stops early (after 3) once `budget` seconds are spent, and
    at the first request slower than `timeout` seconds (counted as that long; the third value is True)."""
    latencies: list[float] = []
    bodies: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + budget
        for i in range(warmup):
            timed_get(client, base + "/Observation", make(10_000 + i), timeout)
            if time.monotonic() > deadline:
                break
        deadline = time.monotonic() + budget
        for i in range(samples):
            elapsed, body = timed_get(client, base + "/Observation", make(i), timeout)
            latencies.append(elapsed)
            bodies.append(body)
            if len(latencies) >= 3 and time.monotonic() > deadline:
                break
    except httpx.TimeoutException:
        latencies.append(timeout * 1000)
        return latencies, bodies, True
    return latencies, bodies, False


def paged(
    client: httpx.Client,
    base: str,
    samples: int,
    extra: list[tuple[str, str]],
    budget: float,
    page_timeout: float,
) -> tuple[list[float], int, bool]:
    """Follow `next` from the first page of _sort=-date&_count=50; every page request is one sample.
    Stops early (after 3 pages) once `budget` seconds are spent, and at the first page slower than
    `page_timeout` seconds (counted as that long; the third value is then True)."""
    deadline = time.monotonic() + budget
    latencies: list[float] = []
    rows = 0
    url: str | None = None
    while len(latencies) < samples:
        try:
            if url is None:  # (re)start at the first page
                params = [("_sort", "-date"), ("_count", "50"), *extra]
                elapsed, body = timed_get(client, base + "/Observation", params, page_timeout)
            else:
                elapsed, body = timed_get(client, url, None, page_timeout)
        except httpx.TimeoutException:
            latencies.append(page_timeout * 1000)
            return latencies, rows, True
        latencies.append(elapsed)
        rows += len(body.get("entry", []))
        url = next((link["url"] for link in body.get("link", []) if link.get("relation") == "next"), None)
        if time.monotonic() > deadline and (len(latencies) >= 3 or elapsed > budget * 1000):
            break
    return latencies, rows, False


def run_queries(server: Any, args: argparse.Namespace, db: str) -> list[Result]:
    """Every query type; after a client timeout the server is restarted (it keeps working on the
    abandoned query, which would slow whatever comes next)."""
    rng = random.Random(args.seed + 1)
    results: list[Result] = []
    codes = [rng.randrange(CODES) for _ in range(args.samples + args.warmup + 10_000)]
    subjects = [rng.randrange(args.patients) for _ in range(len(codes))]
    span_days = (END - START).days - 62
    windows = [START + timedelta(days=rng.randrange(span_days)) for _ in range(len(codes))]

    def token(i: int) -> list[tuple[str, str]]:
        return [("code", f"http://loinc.org|c{codes[i % len(codes)]}")]

    def window(i: int) -> list[tuple[str, str]]:
        low = windows[i % len(windows)]
        high = low + timedelta(days=61)
        return [("date", f"ge{low.isoformat()}"), ("date", f"lt{high.isoformat()}")]

    def include(i: int) -> list[tuple[str, str]]:
        return [("subject", f"Patient/p{subjects[i % len(subjects)]}"), ("_include", "Observation:subject")]

    with httpx.Client(headers={"Accept": "application/fhir+json"}, timeout=900) as client:
        for name, make in (
            ("token", token),
            ("token _total=none", lambda i: [*token(i), ("_total", "none")]),
            ("date range (2 mo)", window),
            ("reference+_include", include),
        ):
            latencies, bodies, timed_out = sampled(
                client, server.url, args.samples, args.warmup, make, args.budget, args.page_timeout
            )
            if timed_out:
                note = f"{len(latencies)} requests; one took > {args.page_timeout:g}s: client timeout, counted as {args.page_timeout:g}s, server restarted"
                results.append(Result(db, name, latencies, note))
                log(
                    f"{db} {name:<22} median {results[-1].median:7.1f} ms  p95 {results[-1].p95:7.1f} ms  ({note})"
                )
                restart(server)
                continue
            matches = [
                len([e for e in b.get("entry", []) if e.get("search", {}).get("mode") != "include"])
                for b in bodies
            ]
            totals = [b["total"] for b in bodies if "total" in b]
            included = sum(
                len([e for e in b.get("entry", []) if e.get("search", {}).get("mode") == "include"])
                for b in bodies
            )
            note = f"page rows avg {statistics.mean(matches):.1f}"
            if len(latencies) < args.samples:
                note += f" (stopped at the {args.budget:g}s budget)"
            if totals:
                note += f", total avg {statistics.mean(totals):,.0f}"
            if name.startswith("reference"):
                note += f", included avg {included / len(bodies):.1f}"
            results.append(Result(db, name, latencies, note))
            log(
                f"{db} {name:<22} median {results[-1].median:7.1f} ms  p95 {results[-1].p95:7.1f} ms  ({note})"
            )
        timed_out = False
        for name, extra in (
            ("_sort=-date&_count=50 pages", []),
            ("  same, _total=none", [("_total", "none")]),
        ):
            if timed_out:  # the server may still be busy with the abandoned query: not comparable
                log(f"{db} {name:<22} skipped: the previous paging query timed out")
                continue
            # no separate warm-up: the queries above warmed the server, and one page may take long
            latencies, rows, timed_out = paged(
                client, server.url, args.samples, extra, args.budget, args.page_timeout
            )
            note = f"{len(latencies)} page requests following next, {rows:,} rows"
            if timed_out:
                note += f" (a page took > {args.page_timeout:g}s: client timeout, counted as {args.page_timeout:g}s, server restarted)"
                restart(server)
            elif len(latencies) < args.samples:
                note += f" (stopped at the {args.budget:g}s budget)"
            results.append(Result(db, name, latencies, note))
            log(
                f"{db} {name:<22} median {results[-1].median:7.1f} ms  p95 {results[-1].p95:7.1f} ms  ({note})"
            )
    return results


def restart(server: Any) -> None:
    started = time.monotonic()
    server.stop()
    server.start()
    server.wait_ready()
    log(f"restarted the server after a client timeout ({time.monotonic() - started:.1f}s)")


def index_overhead(base: str, args: argparse.Namespace) -> tuple[float, float]:
    """(median index_resource ms in-process, median POST /Observation ms on the server)."""
    from app.fhir.index import index_resource
    from app.fhir.models import RESOURCE_TYPES
    from app.fhir.search_params import SearchParameterRegistry, official_search_parameters

    registry = SearchParameterRegistry(official_search_parameters(), RESOURCE_TYPES)
    rng = random.Random(args.seed + 2)
    resources = [observation(rng, args.patients) for _ in range(args.creates)]
    for resource in resources[:20]:  # warm the extractors up
        index_resource(registry, resource)
    index_ms = []
    for resource in resources:
        started = time.perf_counter()
        index_resource(registry, resource)
        index_ms.append((time.perf_counter() - started) * 1000)
    create_ms = []
    with httpx.Client(headers=FHIR, timeout=60) as client:
        for resource in resources[:20]:  # warm-up
            client.post(base + "/Observation", content=json.dumps(resource).encode())
        for resource in resources:
            payload = json.dumps(resource).encode()
            started = time.perf_counter()
            response = client.post(base + "/Observation", content=payload)
            response.read()
            create_ms.append((time.perf_counter() - started) * 1000)
            if response.status_code != 201:
                raise RuntimeError(
                    f"POST /Observation answered {response.status_code}: {response.text[:500]}"
                )
    return statistics.median(index_ms), statistics.median(create_ms)


def vacuum_analyze(url: str) -> None:
    """What autovacuum does some time after a bulk load, done at once so every run measures the
    same state: planner statistics, and the visibility map that lets a count read the index only."""
    from sqlalchemy.ext.asyncio import create_async_engine

    async def run() -> None:
        engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as connection:
                await connection.exec_driver_sql("VACUUM ANALYZE")
        finally:
            await engine.dispose()

    started = time.monotonic()
    asyncio.run(run())
    log(f"postgresql: VACUUM ANALYZE after the load took {time.monotonic() - started:.1f}s")


# ---------------------------------------------------------------- the run


def bench_database(db: str, url: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    server = backpath_server(url, workdir / f"{db}-search.log")
    try:
        server.start()
        server.wait_ready()
        log(
            f"{db}: server on {server.url}; loading {args.patients:,} Patients + {args.observations:,} Observations"
        )
        rate = load(server.url, args, db)
        index_ms, create_ms = index_overhead(
            server.url, args
        )  # before searching: a timed-out search may linger
        if db == "postgresql":
            vacuum_analyze(url)
        results = run_queries(server, args, db)
        log(f"{db}: index_resource median {index_ms:.3f} ms, POST /Observation median {create_ms:.2f} ms")
    finally:
        server.stop()
    return {"db": db, "rate": rate, "results": results, "index_ms": index_ms, "create_ms": create_ms}


def render(runs: list[dict[str, Any]]) -> str:
    header = ["db", "query", "median", "p95", "result", "n", "notes"]
    table = [header]
    for run in runs:
        for r in run["results"]:
            table.append(
                [
                    run["db"],
                    r.name,
                    f"{r.median:.1f} ms",
                    f"{r.p95:.1f} ms",
                    r.verdict,
                    str(len(r.latencies)),
                    r.note,
                ]
            )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = []
    for n, line in enumerate(table):
        cells = [
            c.rjust(w) if i in (2, 3, 5) else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description="BackPath search latency on a loaded database.")
    parser.add_argument("--db", choices=["both", "sqlite", "postgresql"], default="both")
    parser.add_argument("--observations", type=int, default=100_000)
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument(
        "--samples", type=int, default=50, help="measured requests per query type (default 50)"
    )
    parser.add_argument(
        "--warmup", type=int, default=5, help="unmeasured requests per query type first (default 5)"
    )
    parser.add_argument(
        "--bundle", type=int, default=500, help="entries per transaction Bundle (default 500)"
    )
    parser.add_argument(
        "--load-workers", type=int, default=2, help="concurrent Bundle posts while loading (default 2)"
    )
    parser.add_argument(
        "--creates", type=int, default=200, help="Observations for the index-overhead check (default 200)"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=30.0,
        help="seconds per query type (warm-up and measuring each); sampling stops early past it (default 30)",
    )
    parser.add_argument(
        "--page-timeout",
        type=float,
        default=20.0,
        help="client timeout per search request in seconds; a slower one ends that query type and restarts the server (default 20)",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--keep", action="store_true", help="keep the SQLite file / PostgreSQL database (for EXPLAIN)"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    if args.patients < 1 or args.observations < 1 or args.samples < 1:
        parser.error("--patients, --observations and --samples must be positive")

    command = " ".join([".venv/bin/python", "bench/run_search.py", *sys.argv[1:]])
    code = _code_version()
    started = time.monotonic()
    runs: list[dict[str, Any]] = []
    notes: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="backpath-search-"))
    pg_cleanup: str | None = None
    try:
        if args.db in ("both", "sqlite"):
            path = workdir / "search.db"
            notes.append(
                f"sqlite {sqlite3.sqlite_version} (WAL, synchronous=NORMAL), {path if args.keep else 'fresh temp file'}"
            )
            runs.append(bench_database("sqlite", _sqlite_url(path), args, workdir))
        if args.db in ("both", "postgresql"):
            base = postgres_base_url()
            if base is None:
                if args.db == "postgresql":
                    raise RuntimeError("no PostgreSQL: set BENCH_POSTGRES_URL")
                notes.append(
                    "postgresql: skipped (no BENCH_POSTGRES_URL and scripts/ensure_postgres.sh gave none)"
                )
            else:
                url, version = asyncio.run(_recreate_pg_databases(base, [PG_DATABASE], create=True))
                pg_cleanup = None if args.keep else base
                notes.append(
                    f"postgresql {version} (fresh database {PG_DATABASE}{', kept' if args.keep else ''})"
                )
                runs.append(bench_database("postgresql", url, args, workdir))
    finally:
        _stop_all()
        if pg_cleanup is not None:
            try:
                asyncio.run(_recreate_pg_databases(pg_cleanup, [PG_DATABASE], create=False))
            except Exception as error:  # cleanup must not hide the real outcome
                log(f"could not drop {PG_DATABASE}: {error}")
        if not args.keep:
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
        f"data: {args.patients:,} Patients + {args.observations:,} Observations ({CODES} codes, dates 2010-2025, seed "
        f"{args.seed}); {args.samples} sequential httpx requests per query after {args.warmup} warm-up; "
        f"targets median <= {MEDIAN_MS:g} ms, p95 <= {P95_MS:g} ms"
    )
    for note in notes:
        print(f"db: {note}")
    print()
    for run in runs:
        print(
            f"{run['db']}: load {run['rate']:,.0f} resources/s (transaction Bundles of {args.bundle}, "
            f"{args.load_workers} concurrent, Prefer: return=minimal)"
        )
    print()
    print(render(runs))
    print()
    missed = [f"{r.db} {r.name.strip()}" for run in runs for r in run["results"] if r.verdict == "FAIL"]
    for run in runs:
        share = run["index_ms"] / run["create_ms"]
        verdict = "PASS" if share <= INDEX_SHARE else "FAIL"
        if verdict == "FAIL":
            missed.append(f"{run['db']} index extraction")
        print(
            f"{run['db']}: index extraction = {share:.1%} of create latency (index_resource median "
            f"{run['index_ms']:.3f} ms in-process / POST /Observation median {run['create_ms']:.2f} ms, "
            f"n={args.creates}; target <= {INDEX_SHARE:.0%}) {verdict}"
        )
    print()
    print("targets missed: " + (", ".join(missed) if missed else "none"))
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
