"""Latency of PlanDefinition/$apply for each regional pathway. A benchmark, not a test.

    .venv/bin/python bench/run_apply.py                          # SQLite, 100,000 unrelated resources
    .venv/bin/python bench/run_apply.py --db both --samples 300
    .venv/bin/python bench/run_apply.py --unrelated 20000 --samples 50     # a quick look

For each database (SQLite in a fresh temp file; PostgreSQL in a fresh database `backpath_bench_apply`
beside the one from $BENCH_POSTGRES_URL or `scripts/ensure_postgres.sh`, dropped at the end), it:

1. starts our server (`backpath serve`, the pathway content loaded at start-up, same helpers as
   bench/run_core.py) on an empty store;
2. per region, after a warm-up, sends --samples sequential `POST /PlanDefinition/<region>/$apply`
   (one keep-alive connection, round-robin over regions and modes) in two modes:
     data    the patient, an SBST response and an LBP assessment in the `data` Bundle, with
             useServerData=false (the plan and its definitions still come from the store);
     stored  the same three resources stored beforehand, only `subject` sent;
   and prints median / p99 latency against the targets (median <= 10 ms, p99 <= 30 ms);
3. loads --unrelated resources of the very types and codes the pathway searches (10 % Patients,
   60 % Observations with the SBST LOINC codes among others, 30 % SBST / assessment responses), all
   about other patients, in transaction Bundles;
4. waits --settle seconds (the database's background work after a bulk load: PostgreSQL autovacuum
   and analyze, checkpoints) and measures step 2 again: the cost must not grow with the store.

Also printed: the pure engine (in this process, no HTTP, no database) per region, for scale.
Data is random with a fixed seed (--seed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
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

from tests.factories import (  # noqa: E402
    assessment_response,
    collection,
    non_specific_answers,
    parameters,
    scored_sbst_response,
)
from tests.pathway_helpers import ARTIFACTS, REGIONS, region_plan  # noqa: E402

MEDIAN_MS, P99_MS = 10.0, 30.0
PG_DATABASE = "backpath_bench_apply"
FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
TODAY = date.today()
T0 = TODAY - timedelta(weeks=4)
ANSWERS = non_specific_answers(
    T0.isoformat(), pain_duration_weeks=5, nerve_root="mild", course="no-significant-progress", considerable_impairment=True, sick_leave="current"
)
SBST_CODES = ("91351-7", "91350-9", "91352-5")


def subject_data(patient_id: str) -> list[dict[str, Any]]:
    """The patient of the measurements and their SBST response and T4 assessment."""
    subject = f"Patient/{patient_id}"
    patient = {"resourceType": "Patient", "id": patient_id, "birthDate": "1976-04-04", "name": [{"family": "Bench"}]}
    return [patient, scored_sbst_response(subject, 6, 4, authored=T0.isoformat()), assessment_response(subject, TODAY.isoformat(), **ANSWERS)]


# ---------------------------------------------------------------- unrelated data


def unrelated(n: int, patients: int, rng: random.Random) -> dict[str, Any]:
    """Resource n of the unrelated load: Patients u0.. first, then Observations and responses about them."""
    if n < patients:
        return {"resourceType": "Patient", "id": f"u{n}", "birthDate": f"{rng.randrange(1930, 2008)}-01-01"}
    subject = f"Patient/u{rng.randrange(patients)}"
    when = (TODAY - timedelta(days=rng.randrange(0, 3650))).isoformat()
    if rng.random() < 2 / 3:
        code = rng.choice((*SBST_CODES, *(f"c{i}" for i in range(20))))
        return {"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "subject": {"reference": subject}, "effectiveDateTime": when, "valueInteger": rng.randrange(0, 10)}  # fmt: skip
    if rng.random() < 0.5:
        distress = rng.randrange(0, 6)  # items 5-9; the total adds the four other items
        return scored_sbst_response(subject, distress + rng.randrange(0, 5), distress, authored=when)
    return assessment_response(subject, when, **ANSWERS)


def bundles(count: int, seed: int, size: int) -> Iterator[tuple[bool, int, bytes]]:
    """(holds Patients, resources, body) of each transaction Bundle; the Patients come first."""
    rng = random.Random(seed)
    patients = max(1, count // 10)
    batch: list[dict[str, Any]] = []
    for n in range(count):
        resource = unrelated(n, patients, rng)
        request = {"method": "PUT", "url": f"Patient/u{n}"} if n < patients else {"method": "POST", "url": resource["resourceType"]}
        batch.append({"resource": resource, "request": request})
        if len(batch) == size or n == count - 1 or n == patients - 1:
            body = json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": batch}, separators=(",", ":")).encode()
            yield n < patients, len(batch), body
            batch = []


def load(base_url: str, args: argparse.Namespace, db: str) -> float:
    """Post the unrelated load, two Bundles at a time, Patients first so every reference resolves."""
    started = time.monotonic()
    done = 0

    def post(item: tuple[bool, int, bytes]) -> int:
        _, count, payload = item
        with httpx.Client(timeout=600) as client:
            response = client.post(base_url + "/", content=payload, headers={**FHIR, "Prefer": "return=minimal"})
        if response.status_code != 200:
            raise RuntimeError(f"{db}: loading failed: {response.status_code} {response.text[:500]}")
        return count

    items = list(bundles(args.unrelated, args.seed, args.bundle))
    with ThreadPoolExecutor(2) as pool:
        for group in ([i for i in items if i[0]], [i for i in items if not i[0]]):
            for count in pool.map(post, group):
                done += count
                if done % 10000 < args.bundle:
                    log(f"{db}: loaded {done:,}/{args.unrelated:,} ({done / (time.monotonic() - started):,.0f} res/s)")
    return args.unrelated / (time.monotonic() - started)


# ---------------------------------------------------------------- measuring


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    rank = fraction * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def measure(client: httpx.Client, calls: dict[tuple[str, str], bytes], samples: int) -> dict[tuple[str, str], list[float]]:
    """Latencies of each (region, mode) call, round-robin, so load from elsewhere hits them alike."""
    for (region, _), body in calls.items():
        for _ in range(30):
            response = client.post(f"/PlanDefinition/{region}/$apply", content=body, headers=FHIR)
            if response.status_code != 200:
                raise RuntimeError(f"{region}: {response.status_code} {response.text[:400]}")
    latencies: dict[tuple[str, str], list[float]] = {key: [] for key in calls}
    for _ in range(samples):
        for (region, mode), body in calls.items():
            started = time.perf_counter()
            response = client.post(f"/PlanDefinition/{region}/$apply", content=body, headers=FHIR)
            latencies[region, mode].append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
    return latencies


def engine_only(region: str, samples: int) -> list[float]:
    from app.pathway.apply import apply_plan_definition
    from app.pathway.facts import pathway_input
    from app.pathway.render import care_plan

    data = subject_data("engine")
    plan = region_plan(region)
    now = datetime.combine(TODAY, clock_time(9), UTC)
    latencies = []
    for _ in range(samples):
        started = time.perf_counter()
        request = pathway_input("Patient/engine", {"Patient/engine": data[0]}, data, now, ARTIFACTS)
        care_plan(apply_plan_definition(plan, request))
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


Row = tuple[str, str, str, str, list[float]]


def phase(client: httpx.Client, db: str, store: str, args: argparse.Namespace) -> list[Row]:
    calls: dict[tuple[str, str], bytes] = {}
    for region in REGIONS:
        data = subject_data(f"bench-{region}-data")
        supplied = parameters(("subject", f"Patient/bench-{region}-data"), ("data", collection(*data)), ("useServerData", False))
        calls[region, "data"] = json.dumps(supplied).encode()
        calls[region, "stored"] = json.dumps(parameters(("subject", f"Patient/bench-{region}"))).encode()
    measured = measure(client, calls, args.samples)
    for region in REGIONS:
        log(f"{db} / {store} / {region}: data {statistics.median(measured[region, 'data']):.1f} ms, stored {statistics.median(measured[region, 'stored']):.1f} ms (medians)")
    return [(db, store, region, mode, latencies) for (region, mode), latencies in measured.items()]


def store_subjects(client: httpx.Client) -> None:
    for region in REGIONS:
        for resource in subject_data(f"bench-{region}"):
            if resource["resourceType"] == "Patient":
                response = client.put(f"/Patient/{resource['id']}", json=resource, headers=FHIR)
            else:
                response = client.post(f"/{resource['resourceType']}", json=resource, headers=FHIR)
            assert response.status_code in (200, 201), response.text


def bench_database(db: str, url: str, args: argparse.Namespace, workdir: Path) -> list[Row]:
    server = backpath_server(url, workdir / f"server-{db}.log")
    server.start()
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=60) as client:
            store_subjects(client)
            rows = phase(client, db, "empty", args)
            if args.unrelated:
                rate = load(server.url, args, db)
                log(f"{db}: {args.unrelated:,} unrelated resources loaded ({rate:,.0f} res/s); settling {args.settle:.0f} s")
                time.sleep(args.settle)  # the database's own work after a bulk load (autovacuum, checkpoints)
                rows += phase(client, db, f"+{args.unrelated:,}", args)
        return rows
    finally:
        server.stop()


def render(rows: list[Row], engine: dict[str, list[float]]) -> str:
    lines = [
        f"| db | store | region | mode | median ms | p99 ms | target with data supplied (median <= {MEDIAN_MS:.0f}, p99 <= {P99_MS:.0f}) |",
        "|---|---|---|---|---|---|---|",
    ]
    for db, store, region, mode, latencies in rows:
        median, p99 = statistics.median(latencies), percentile(latencies, 0.99)
        verdict = ("ok" if median <= MEDIAN_MS and p99 <= P99_MS else "MISSED") if mode == "data" else "(not a target)"
        lines.append(f"| {db} | {store} | {region} | {mode} | {median:.1f} | {p99:.1f} | {verdict} |")
    lines.append("")
    lines.append("| engine only (no HTTP, no database) | median ms | p99 ms |")
    lines.append("|---|---|---|")
    for region, latencies in engine.items():
        lines.append(f"| {region} | {statistics.median(latencies):.2f} | {percentile(latencies, 0.99):.2f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="sqlite")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--unrelated", type=int, default=100_000)
    parser.add_argument("--bundle", type=int, default=500)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--settle", type=float, default=60.0, help="seconds to wait after loading, before measuring")
    args = parser.parse_args()
    log(f"bench/run_apply.py at {_code_version()} on {platform.node()} ({platform.machine()}), python {platform.python_version()}")
    engine = {region: engine_only(region, args.samples) for region in REGIONS}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="backpath-bench-apply-") as tmp:
        workdir = Path(tmp)
        try:
            if args.db in ("sqlite", "both"):
                rows += bench_database("sqlite", _sqlite_url(workdir / "apply.db"), args, workdir)
            if args.db in ("postgresql", "both"):
                base = postgres_base_url()
                if base is None:
                    log("no PostgreSQL available; skipped")
                else:
                    url, version = asyncio.run(_recreate_pg_databases(base, [PG_DATABASE], create=True))
                    log(f"PostgreSQL {version}")
                    try:
                        rows += bench_database("postgresql", url, args, workdir)
                    finally:
                        asyncio.run(_recreate_pg_databases(base, [PG_DATABASE], create=False))
        finally:
            _stop_all()
    print(render(rows, engine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
