"""Nothing acknowledged is lost: a real server under write load from several clients is killed with
SIGKILL mid-load, restarted on the same database, and every write that got a 2xx is there, and no
transaction is half-applied. Three kills at different moments, on the database of the run (SQLite
file or PostgreSQL).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests import servers
from tests.factories import FHIR_JSON, observation, patient

CLIENTS = 6
KILL_AFTER = (12, 45, 90)  # acknowledged writes before each SIGKILL
OBSERVATIONS_PER_TRANSACTION = 3


@dataclass
class Load:
    """What the clients sent and what the server acknowledged, shared by the client threads."""

    run: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    created: dict[str, str] = field(default_factory=dict)  # Patient id -> identifier value
    transactions_sent: set[str] = field(default_factory=set)
    transactions_acknowledged: dict[str, set[str]] = field(default_factory=dict)  # tx id -> "Type/id"s
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def acknowledged(self) -> int:
        return len(self.created) + len(self.transactions_acknowledged)

    @property
    def system(self) -> str:
        return f"urn:backpath:crash:{self.run}"


def _transaction(load: Load, tx: str) -> dict[str, Any]:
    tag = {"system": load.system, "code": tx}
    full_url = f"urn:uuid:{uuid.uuid4()}"
    entries = [{"fullUrl": full_url, "resource": patient("Crash", meta={"tag": [tag]}), "request": {"method": "POST", "url": "Patient"}}]
    entries += [
        {"resource": observation(full_url, value=i, meta={"tag": [tag]}), "request": {"method": "POST", "url": "Observation"}}
        for i in range(OBSERVATIONS_PER_TRANSACTION)
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _client(base: str, load: Load, number: int) -> None:
    """Alternate creates and transactions until the server dies; record only what got a 2xx."""
    with httpx.Client(base_url=base, headers=FHIR_JSON, timeout=30) as http:
        turn = 0
        while not load.stop.is_set():
            turn += 1
            try:
                if turn % 2:
                    value = f"{load.run}-{number}-{turn}"
                    body = patient("Crash", identifier=[{"system": load.system, "value": value}])
                    response = http.post("/Patient", json=body)
                    if response.status_code == 201:
                        with load.lock:
                            load.created[response.json()["id"]] = value
                else:
                    tx = f"{number}-{turn}"
                    with load.lock:
                        load.transactions_sent.add(tx)
                    response = http.post("/", json=_transaction(load, tx), headers={"Prefer": "return=minimal"})
                    if response.status_code == 200:
                        written = {"/".join(e["response"]["location"].split("/")[:2]) for e in response.json()["entry"]}
                        with load.lock:
                            load.transactions_acknowledged[tx] = written
            except httpx.HTTPError:
                return  # the server is gone: whatever was in flight is unacknowledged


def _tagged(http: httpx.Client, resource_type: str, load: Load) -> dict[str, set[str]]:
    """Per transaction id, the resources of that type carrying its tag (every page)."""
    found: dict[str, set[str]] = {}
    url: str | None = f"/{resource_type}?_tag={load.system}|&_count=500&_elements=meta"
    while url:
        page = http.get(url).json()
        for entry in page.get("entry", []):
            resource = entry["resource"]
            for tag in resource["meta"].get("tag", []):
                if tag.get("system") == load.system:
                    found.setdefault(tag["code"], set()).add(f"{resource_type}/{resource['id']}")
        url = next((link["url"] for link in page.get("link", []) if link["relation"] == "next"), None)
    return found


def _check(base: str, load: Load) -> None:
    with httpx.Client(base_url=base, headers=FHIR_JSON, timeout=30) as http:
        for patient_id, value in load.created.items():
            response = http.get(f"/Patient/{patient_id}")
            assert response.status_code == 200, f"acknowledged Patient/{patient_id} is missing after the crash"
            assert response.json()["identifier"][0]["value"] == value
        patients, observations = _tagged(http, "Patient", load), _tagged(http, "Observation", load)
    for tx in load.transactions_sent:
        stored = patients.get(tx, set()) | observations.get(tx, set())
        assert len(stored) in (0, 1 + OBSERVATIONS_PER_TRANSACTION), f"transaction {tx} is half-applied: {sorted(stored)}"
        if tx in load.transactions_acknowledged:
            assert stored == load.transactions_acknowledged[tx], f"acknowledged transaction {tx} is not all there"


def _assert_ended(pids: list[int], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while any(Path(f"/proc/{pid}").exists() and "(Z)" not in _state(pid) for pid in pids):
        assert time.monotonic() < deadline, f"processes {pids} outlived their server"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return "(" + Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] + ")"
    except OSError:
        return "(Z)"


def _database(database_url: str, tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'crash.db'}" if database_url.startswith("sqlite") else database_url


def test_acknowledged_writes_survive_sigkill(database_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": _database(database_url, tmp_path), "BACKPATH_DEV_MODE": "1", "BACKPATH_LOG_LEVEL": "WARNING"}
    log = tmp_path / "crash.log"
    server = servers.start(env, log)
    try:
        for kill_after in KILL_AFTER:
            load = Load(run=uuid.uuid4().hex[:10])
            clients = [threading.Thread(target=_client, args=(server.url, load, n), daemon=True) for n in range(CLIENTS)]
            for client in clients:
                client.start()
            while load.acknowledged < kill_after and all(c.is_alive() for c in clients):
                threading.Event().wait(0.005)
            writers = server.children()
            assert writers, "the audit trail's writer process runs beside the server"
            server.kill()  # mid-load: the other clients have requests in flight
            load.stop.set()
            for client in clients:
                client.join(timeout=30)
            assert load.acknowledged >= kill_after, log.read_text()[-2000:]
            _assert_ended(writers)  # no writer of the dead server goes on beside the next one
            server = servers.start(env, log)
            _check(server.url, load)
    finally:
        server.stop()
