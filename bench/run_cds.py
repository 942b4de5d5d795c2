"""Latency of the CDS Hooks services with full prefetch. A benchmark, not a test.

    .venv/bin/python bench/run_cds.py                      # SQLite, client JWT authentication on and off
    .venv/bin/python bench/run_cds.py --db both --samples 500
    BENCH_POSTGRES_URL=postgresql+asyncpg://u:p@host:port/db .venv/bin/python bench/run_cds.py --db postgresql

For each database (SQLite in a fresh temp file; PostgreSQL in a fresh database `backpath_bench_cds`
beside the one from $BENCH_POSTGRES_URL or `scripts/ensure_postgres.sh`, dropped at the end) and
each authentication mode it starts our server (`backpath serve`, same helpers as bench/run_core.py)
and sends, after a warm-up, --samples sequential calls over one keep-alive httpx connection (latency,
not throughput: no load generator), round-robin over the five regional pathways:

  patient-view  POST /cds-services/lbp-pathway with every prefetch key filled: the Patient, an SBST
                response, its three score Observations, an assessment, an open ServiceRequest and
                Task, and a Condition (the target: median <= 20 ms, p95 <= 50 ms);
  order-sign    POST /cds-services/lbp-imaging-order-sign with a draft MR of the lumbar spine at
                week 2 (the imaging warning), for comparison.

With authentication on, every call carries a fresh ES384 JWT (signed before the clock starts), so
the figures include verifying it and recording its jti in the database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import httpx  # noqa: E402
from run_apply import percentile  # noqa: E402
from run_core import (  # noqa: E402  (also installs the process clean-up: atexit, SIGTERM, SIGHUP)
    _code_version,
    _recreate_pg_databases,
    _sqlite_url,
    _stop_all,
    backpath_server,
    log,
    postgres_base_url,
)

from tests.cds_support import ISSUER, ClientKeys, hook_request, mr_order, searchset, signed_jwt  # noqa: E402
from tests.factories import assessment_response, non_specific_answers, sbst_observation, scored_sbst_response  # noqa: E402
from tests.pathway_helpers import REGIONS  # noqa: E402

MEDIAN_MS, P95_MS = 20.0, 50.0
PG_DATABASE = "backpath_bench_cds"
CDS_JSON = {"Content-Type": "application/json", "Accept": "application/json"}
TODAY = date.today()


def full_prefetch(patient_id: str) -> dict[str, Any]:
    subject = f"Patient/{patient_id}"
    t0 = (TODAY - timedelta(weeks=2)).isoformat()
    lbp = "http://backpath.dev/fhir/CodeSystem/lbp-action"
    return {
        "patient": {"resourceType": "Patient", "id": patient_id, "birthDate": "1976-04-04", "name": [{"family": "Bench"}]},
        "sbst-response": searchset(scored_sbst_response(subject, 6, 4, authored=t0)),
        "sbst-scores": searchset(*(sbst_observation(subject, code, value, t0) for code, value in (("91351-7", 6), ("91350-9", 4), ("91352-5", "high")))),
        "lbp-assessments": searchset(assessment_response(subject, TODAY.isoformat(), **non_specific_answers(t0, pain_duration_weeks=2))),
        "open-service-requests": searchset({
            "resourceType": "ServiceRequest", "id": "sr-1", "status": "active", "intent": "order", "subject": {"reference": subject},
            "code": {"coding": [{"system": lbp, "code": "practice-sector-treatment", "display": "Physiotherapy or chiropractic"}]},
        }),
        "open-tasks": searchset({
            "resourceType": "Task", "id": "task-1", "status": "requested", "intent": "order", "for": {"reference": subject},
            "instantiatesCanonical": "http://backpath.dev/fhir/ActivityDefinition/reassess-t4",
            "code": {"coding": [{"system": lbp, "code": "reassess-t4", "display": "Reassessment at T4"}]},
        }),
        "conditions": searchset({
            "resourceType": "Condition", "id": "c-1", "subject": {"reference": subject},
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "279039007", "display": "Low back pain"}]},
        }),
    }


def calls() -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
    """(hook, region) → (service path, request body)."""
    found = {}
    for region in REGIONS:
        prefetch = full_prefetch(f"bench-{region}")
        pathway = {"dev.backpath.pathway": region}
        found["patient-view", region] = ("/cds-services/lbp-pathway", hook_request("patient-view", f"bench-{region}", prefetch, extension=pathway))
        order = {k: prefetch[k] for k in ("patient", "lbp-assessments", "conditions")}
        found["order-sign", region] = (
            "/cds-services/lbp-imaging-order-sign",
            hook_request("order-sign", f"bench-{region}", order, orders=[mr_order(f"bench-{region}")], extension=pathway),
        )
    return found


def measure(client: httpx.Client, base: str, keys: ClientKeys | None, samples: int) -> dict[str, list[float]]:
    bodies = calls()

    def send(path: str, body: dict[str, Any]) -> float:
        payload = json.dumps({**body, "hookInstance": str(uuid.uuid4())}).encode()
        headers = dict(CDS_JSON)
        if keys is not None:
            headers["Authorization"] = f"Bearer {signed_jwt(keys.ec, base + path)}"
        started = time.perf_counter()
        response = client.post(path, content=payload, headers=headers)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200 or not response.json()["cards"]:
            raise RuntimeError(f"{path}: {response.status_code} {response.text[:400]}")
        return elapsed

    for path, body in bodies.values():
        for _ in range(10):
            send(path, body)
    latencies: dict[str, list[float]] = {"patient-view": [], "order-sign": []}
    for n in range(samples):
        region = REGIONS[n % len(REGIONS)]
        for hook in latencies:
            latencies[hook].append(send(*bodies[hook, region]))
    return latencies


Row = tuple[str, str, str, list[float]]


def bench_database(db: str, url: str, args: argparse.Namespace, workdir: Path) -> list[Row]:
    rows: list[Row] = []
    keys = ClientKeys()
    for auth in (["on", "off"] if args.auth == "both" else [args.auth]):
        env = {"BACKPATH_CDS_CLIENT_AUTH": "1" if auth == "on" else "0"}
        if auth == "on":
            env["BACKPATH_CDS_CLIENTS"] = json.dumps({ISSUER: {"jwks": keys.jwks()}})
        server = backpath_server(url, workdir / f"server-{db}-{auth}.log", env)
        server.start()
        try:
            server.wait_ready()
            with httpx.Client(base_url=server.url, timeout=60) as client:
                measured = measure(client, server.url, keys if auth == "on" else None, args.samples)
        finally:
            server.stop()
        for hook, latencies in measured.items():
            log(f"{db} / auth {auth} / {hook}: median {statistics.median(latencies):.1f} ms, p95 {percentile(latencies, 0.95):.1f} ms")
            rows.append((db, auth, hook, latencies))
    return rows


def render(rows: list[Row]) -> str:
    lines = [
        f"| db | client JWT | hook | median ms | p95 ms | target for patient-view (median <= {MEDIAN_MS:.0f}, p95 <= {P95_MS:.0f}) |",
        "|---|---|---|---|---|---|",
    ]
    for db, auth, hook, latencies in rows:
        median, p95 = statistics.median(latencies), percentile(latencies, 0.95)
        verdict = ("ok" if median <= MEDIAN_MS and p95 <= P95_MS else "MISSED") if hook == "patient-view" else "(not a target)"
        lines.append(f"| {db} | {auth} | {hook} | {median:.1f} | {p95:.1f} | {verdict} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="sqlite")
    parser.add_argument("--auth", choices=("on", "off", "both"), default="both")
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    log(f"bench/run_cds.py at {_code_version()} on {platform.node()} ({platform.machine()}), python {platform.python_version()}")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="backpath-bench-cds-") as tmp:
        workdir = Path(tmp)
        try:
            if args.db in ("sqlite", "both"):
                rows += bench_database("sqlite", _sqlite_url(workdir / "cds.db"), args, workdir)
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
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
