"""Referral messaging figures with real servers on loopback. A benchmark, not a test.

    .venv/bin/python bench/run_messages.py                     # SQLite, and PostgreSQL if one can be had
    .venv/bin/python bench/run_messages.py --db sqlite --duration 10 --activations 200

1. Throughput of `$process-message` (check, store, acknowledge): a receiving server, and wrk
   (installed with apt-get when missing) posting DK new-referral messages, each with a new
   MessageHeader id, referral id and CPR, so every request is a message processed and stored.
   Processed messages/s is counted from the receiver's inbox, not from HTTP responses, so a
   refused message would not count.
2. End-to-end latency from activation to acknowledgement: a sending server delivers to the
   receiver; referrals are activated one after the other (POST ServiceRequest) and each one's
   outbox row gives the time from its creation (in the activating transaction) to the
   acknowledgement recorded (both on the sender's clock); p50 and p95 are reported.

Goal on the 2-core development machine: >= 100 messages/s and p95 <= 100 ms.
PostgreSQL: $BENCH_POSTGRES_URL (two databases beside it are created), else the private test
cluster through scripts/ensure_postgres.sh with databases backpath_bench_msg_{recv,send}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import run_core

from app.referral import codes
from app.referral.medcom import Envelope, Party, message_bundle, provenance

ROOT = Path(__file__).resolve().parent.parent
WRK_SCRIPT = ROOT / "bench" / "wrk" / "message.lua"
FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
log = run_core.log


def ensure_wrk(path: str | None) -> str:
    found = path or shutil.which("wrk")
    if found:
        return found
    log("wrk not found: apt-get install wrk")
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk could not be installed")
    return found


def organization(kind: str, gln: str) -> dict[str, Any]:
    # GS1 prefix 952 is reserved for demonstrations: clearly not a real location number.
    return {
        "resourceType": "Organization",
        "id": f"bench-{kind}",
        "identifier": [{"system": codes.SOR, "value": f"9999{gln[-11:]}"}, {"system": codes.GLN, "value": gln}],
        "name": f"TEST bench {kind}",
    }


SENDER = organization("sender", "9520000000101")
RECEIVER = organization("receiver", "9520000000118")


def identity(org: dict[str, Any]) -> str:
    return ",".join(f"{i['system']}|{i['value']}" for i in org["identifier"])


def endpoint(org: dict[str, Any], address: str) -> dict[str, Any]:
    return {
        "resourceType": "Endpoint",
        "id": f"{org['id']}-endpoint",
        "status": "active",
        "connectionType": {"system": codes.CHANNEL, "code": "medcom-fhir-message"},
        "managingOrganization": {"reference": f"Organization/{org['id']}"},
        "payloadType": [{"text": "any"}],
        "address": address,
    }


def template(sender_address: str, receiver_address: str) -> str:
    """A DK new-referral message (BackPath's own builders) with {{MID}}, {{RID}}, {{CPR}} slots."""
    us = Party(SENDER, sender_address)
    person = {"resourceType": "Patient", "id": "p1", "identifier": [{"system": codes.CPR, "value": "{{CPR}}"}], "name": [{"family": "TEST"}], "birthDate": "1970-01-01"}
    role = {"resourceType": "PractitionerRole", "id": "r1", "organization": {"reference": "Organization/bench-sender"}}
    rid = [{"system": codes.REFERRAL_ID, "value": "{{RID}}"}]
    request = {
        "resourceType": "ServiceRequest", "id": "s1", "identifier": rid, "status": "active", "intent": "order", "priority": "routine",
        "code": {"coding": [{"system": codes.LBP_ACTION, "code": "spine-centre-referral"}]},
        "subject": {"reference": "Patient/p1"}, "requester": {"reference": "PractitionerRole/r1"}, "performer": [{"reference": "Organization/bench-receiver"}],
        "note": [{"text": "Eight weeks without satisfactory progress."}],
    }
    task = {
        "resourceType": "Task", "id": "t1", "identifier": rid, "status": "requested", "intent": "order",
        "focus": {"reference": "ServiceRequest/s1"}, "for": {"reference": "Patient/p1"}, "owner": {"reference": "Organization/bench-receiver"},
    }
    envelope = Envelope(
        message_id="{{MID}}", event={"system": codes.MESSAGE_EVENT, "code": "new-referral"}, sender=us,
        primary=Party(RECEIVER, receiver_address), timestamp="2026-03-02T10:00:00.000Z", focus=("ServiceRequest/s1",),
    )
    bundle = message_bundle(envelope, [request, task, person, role], [provenance("{{MID}}-p", "{{MID}}", "new-message", us, "2026-03-02T10:00:00.000Z")])
    return json.dumps(bundle)


def server(name: str, database_url: str, folder: Path, org: dict[str, Any], partner: str, port: int, workers: int) -> run_core.Server:
    address = f"http://127.0.0.1:{port}"
    env = {
        "BACKPATH_ORGANIZATION_IDENTIFIERS": identity(org),
        "BACKPATH_ENDPOINT": address,
        "BACKPATH_BASE_URL": address,
        "BACKPATH_PARTNER_ENDPOINTS": partner,
    }
    made = run_core.backpath_server(database_url, folder / f"{name}.log", env)
    made.command += ["--workers", str(workers)]
    made.port = port
    return made


def put(base: str, resource: dict[str, Any]) -> None:
    response = httpx.put(f"{base}/{resource['resourceType']}/{resource['id']}", json=resource, headers=FHIR, timeout=30)
    response.raise_for_status()


async def count_rows(database_url: str, table: str) -> int:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(database_url)
    async with engine.connect() as connection:
        value = (await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
    await engine.dispose()
    return int(value)


async def latencies(database_url: str) -> list[float]:
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import create_async_engine

    from app.storage.outbox import outbox

    engine = create_async_engine(database_url)
    async with engine.connect() as connection:
        rows = (await connection.execute(select(outbox.c.created_at, outbox.c.delivered_at).where(outbox.c.status == "delivered"))).all()
    await engine.dispose()
    return [(delivered - created).total_seconds() * 1000 for created, delivered in rows]


def run_wrk(wrk: str, url: str, template_path: Path, duration: int, connections: int) -> dict[str, Any]:
    command = [wrk, "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(WRK_SCRIPT), url, "--", uuid.uuid4().hex[:8], str(template_path)]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    line = next(line for line in completed.stdout.splitlines() if line.startswith("BENCH "))
    result: dict[str, Any] = json.loads(line[len("BENCH ") :])
    return result


def activate(base: str, count: int, pause: float) -> None:
    """POST `count` referrals one after the other (the GP activating them)."""
    with httpx.Client(base_url=base, headers=FHIR, timeout=30) as client:
        role = client.post("/PractitionerRole", json={"resourceType": "PractitionerRole", "organization": {"reference": "Organization/bench-sender"}}).json()
        for index in range(count):
            person = client.post("/Patient", json={"resourceType": "Patient", "identifier": [{"system": codes.CPR, "value": f"98{index:08d}"}], "birthDate": "1970-01-01"}).json()
            request = {
                "resourceType": "ServiceRequest", "status": "active", "intent": "order",
                "subject": {"reference": f"Patient/{person['id']}"}, "requester": {"reference": f"PractitionerRole/{role['id']}"},
                "performer": [{"reference": "Organization/bench-receiver"}],
            }
            response = client.post("/ServiceRequest", json=request)
            if response.status_code != 201:
                raise RuntimeError(f"activation failed: {response.status_code} {response.text[:300]}")
            time.sleep(pause)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def database_urls(kind: str, folder: Path) -> tuple[str, str]:
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{folder / 'receiver.db'}", f"sqlite+aiosqlite:///{folder / 'sender.db'}"
    given = os.environ.get("BENCH_POSTGRES_URL")
    if given:
        from tests.servers import scratch_database_url

        return scratch_database_url(given, folder, "bench_msg_recv"), scratch_database_url(given, folder, "bench_msg_send")
    urls = []
    for name in ("backpath_bench_msg_recv", "backpath_bench_msg_send"):
        urls.append(subprocess.run(["bash", "scripts/ensure_postgres.sh"], cwd=ROOT, env={**os.environ, "BACKPATH_PG_DBNAME": name}, capture_output=True, text=True, check=True).stdout.strip())
    return urls[0], urls[1]


def bench(kind: str, args: argparse.Namespace, wrk: str) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix=f"backpath-bench-msg-{kind}-"))
    receiver_db, sender_db = database_urls(kind, folder)
    receiver_port, sender_port = run_core._free_port(), run_core._free_port()
    receiver_address, sender_address = f"http://127.0.0.1:{receiver_port}", f"http://127.0.0.1:{sender_port}"
    receiver = server("receiver", receiver_db, folder, RECEIVER, sender_address, receiver_port, args.workers)
    sender = server("sender", sender_db, folder, SENDER, receiver_address, sender_port, args.workers)
    try:
        receiver.start()
        sender.start()
        receiver.wait_ready()
        sender.wait_ready()
        for base, other, other_address in ((receiver_address, SENDER, sender_address), (sender_address, RECEIVER, receiver_address)):
            put(base, RECEIVER if base == receiver_address else SENDER)
            put(base, other)
            put(base, endpoint(other, other_address))
        template_path = folder / "message.json"
        template_path.write_text(template(sender_address, receiver_address))
        log(f"{kind}: warm-up")
        run_wrk(wrk, receiver_address, template_path, 3, args.connections)
        time.sleep(1)  # let the warm-up's last requests finish before counting
        before = asyncio.run(count_rows(receiver_db, "inbox"))
        log(f"{kind}: $process-message for {args.duration}s, {args.connections} connections")
        result = run_wrk(wrk, receiver_address, template_path, args.duration, args.connections)
        processed = asyncio.run(count_rows(receiver_db, "inbox")) - before
        seconds = result["duration_us"] / 1e6
        log(f"{kind}: {args.activations} activations, one after the other")
        activate(sender_address, args.activations, args.pause)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(asyncio.run(latencies(sender_db))) < args.activations:
            time.sleep(0.5)
        delays = asyncio.run(latencies(sender_db))
        return {
            "db": kind,
            "messages_per_s": processed / seconds,
            "requests": result["requests"],
            "processed": processed,
            "http_p50_ms": result["p50_us"] / 1000,
            "http_p99_ms": result["p99_us"] / 1000,
            "e2e_n": len(delays),
            "e2e_p50_ms": statistics.median(delays) if delays else float("nan"),
            "e2e_p95_ms": percentile(delays, 0.95) if delays else float("nan"),
        }
    finally:
        receiver.stop()
        sender.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Referral messaging throughput and latency (wrk).")
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk load (default 10)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    parser.add_argument("--activations", type=int, default=200, help="referrals activated for the latency (default 200)")
    parser.add_argument("--pause", type=float, default=0.1, help="seconds between activations (default 0.1: 10 referrals a second)")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes per server (default 1)")
    parser.add_argument("--wrk", default=None)
    args = parser.parse_args()
    wrk = ensure_wrk(args.wrk)
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    results = [bench(kind, args, wrk) for kind in kinds]
    print()
    print("| db | $process-message msg/s (goal >= 100) | HTTP p50 / p99 | activation -> ack p50 / p95 (goal p95 <= 100 ms) |")
    print("|---|---|---|---|")
    for r in results:
        print(
            f"| {r['db']} | {r['messages_per_s']:.0f} ({r['processed']} processed of {r['requests']} sent) "
            f"| {r['http_p50_ms']:.0f} / {r['http_p99_ms']:.0f} ms | {r['e2e_p50_ms']:.0f} / {r['e2e_p95_ms']:.0f} ms (n={r['e2e_n']}) |"
        )


if __name__ == "__main__":
    main()
