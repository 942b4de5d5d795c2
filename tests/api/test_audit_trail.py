"""The audit trail: every request touching patient data leaves a BALP-shaped AuditEvent (who, what,
action, outcome, when, from where) before its answer leaves; auditors find them by patient, agent
and date; nobody changes them through the API."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from sqlalchemy.exc import IntegrityError, OperationalError

from app.api.observability import configure_logging
from app.fhir.search_params import official_search_parameters
from app.security.access import Access
from app.security.audit import SEARCH_PARAMETERS, AuditRecord
from app.services import audit as audit_service
from app.services.audit_process import AuditProcess
from app.services.search import search
from tests.factories import observation, patient, unique
from tests.tokens import Issuer

AUDITOR = "user/AuditEvent.rs"
CLINICIAN = "user/*.cruds"


async def _events(client: httpx.AsyncClient, issuer: Issuer, **params: str) -> list[dict[str, Any]]:
    response = await client.get("/AuditEvent", params={"_count": "200", **params}, headers=issuer.headers(AUDITOR))
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", []) if e["resource"]["resourceType"] == "AuditEvent"]


def _subtype(event: dict[str, Any]) -> str:
    return str(event["subtype"][0]["code"])


def _entities(event: dict[str, Any]) -> list[str]:
    return [e["what"]["reference"] for e in event["entity"] if "reference" in e.get("what", {})]


def _agent(event: dict[str, Any], code: str) -> dict[str, Any]:
    return next(a for a in event["agent"] if a["type"]["coding"][0]["code"] == code)


def _patient_read(patient_id: str, request_id: str, family: str) -> AuditRecord:
    """What a successful read of a Patient leaves for the trail to record."""
    return AuditRecord(
        interaction="read", resource_type="Patient", resource_id=patient_id, status=200, access=Access(client_id="app"),
        server="http://testserver", source_address="127.0.0.1", request_id=request_id,
        answer=orjson.dumps(patient(family, id=patient_id)),
    )


async def _new_patient(client: httpx.AsyncClient, issuer: Issuer) -> str:
    response = await client.post("/Patient", json=patient(unique("Audit")), headers=issuer.headers(CLINICIAN))
    assert response.status_code == 201
    return str(response.json()["id"])


async def test_a_read_is_recorded_with_who_what_when_and_where(secure_client: httpx.AsyncClient, issuer: Issuer) -> None:
    anna = await _new_patient(secure_client, issuer)
    headers = issuer.headers("user/Patient.rs", fhirUser="Practitioner/dr-audit", sub="dr-audit-login")
    assert (await secure_client.get(f"/Patient/{anna}", headers=headers)).status_code == 200
    reads = [e for e in await _events(secure_client, issuer, patient=f"Patient/{anna}") if _subtype(e) == "read"]
    assert len(reads) == 1
    event = reads[0]
    AuditEvent.model_validate(event)  # a valid R4 AuditEvent
    assert event["action"] == "R" and event["outcome"] == "0"
    assert event["type"]["code"] == "rest"
    assert event["meta"]["profile"] == ["https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientRead"]
    client_agent = _agent(event, "110153")
    assert client_agent["altId"] == "test-app"
    assert client_agent["network"]["address"] == "127.0.0.1"
    user = _agent(event, "IRCP")
    assert user["who"]["reference"] == "Practitioner/dr-audit" and user["requestor"] is True
    assert f"Patient/{anna}" in _entities(event)
    recorded = datetime.fromisoformat(event["recorded"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - recorded).total_seconds()) < 60


async def test_auditors_search_by_patient_agent_and_date(secure_client: httpx.AsyncClient, issuer: Issuer) -> None:
    anna = await _new_patient(secure_client, issuer)
    user = f"Practitioner/{unique('dr')}"
    await secure_client.get(f"/Patient/{anna}", headers=issuer.headers("user/Patient.rs", fhirUser=user))
    by_agent = await _events(secure_client, issuer, agent=user)
    assert {_subtype(e) for e in by_agent} == {"read"}
    assert all(f"Patient/{anna}" in _entities(e) for e in by_agent)
    today = datetime.now(UTC).date().isoformat()
    by_date = await _events(secure_client, issuer, patient=f"Patient/{anna}", date=f"ge{today}")
    assert any(_subtype(e) == "read" for e in by_date)
    assert await _events(secure_client, issuer, patient=f"Patient/{anna}", date="lt2000-01-01") == []
    by_client = await _events(secure_client, issuer, patient=f"Patient/{anna}", altid="test-app")
    assert by_client


async def test_a_search_leaves_one_event_per_patient_with_the_query(secure_client: httpx.AsyncClient, issuer: Issuer) -> None:
    anna, bram = await _new_patient(secure_client, issuer), await _new_patient(secure_client, issuer)
    code = unique("code")
    for subject in (anna, bram):
        await secure_client.post("/Observation", json=observation(f"Patient/{subject}", code=code), headers=issuer.headers(CLINICIAN))
    found = await secure_client.get("/Observation", params={"code": code}, headers=issuer.headers("user/Observation.rs"))
    assert found.json()["total"] == 2
    for subject in (anna, bram):
        searches = [e for e in await _events(secure_client, issuer, patient=f"Patient/{subject}") if _subtype(e) == "search-type"]
        assert len(searches) == 1
        event = searches[0]
        assert event["action"] == "E"
        query = next(e for e in event["entity"] if e["role"]["code"] == "24")
        assert base64.b64decode(query["query"]).decode() == f"GET /Observation?code={code}"
        assert f"Patient/{anna if subject == bram else bram}" not in _entities(event)  # one patient per event


async def test_writes_are_recorded_as_create_update_delete(secure_client: httpx.AsyncClient, issuer: Issuer) -> None:
    anna = await _new_patient(secure_client, issuer)
    headers = {**issuer.headers(CLINICIAN), "Prefer": "return=minimal"}
    created = await secure_client.post("/Observation", json=observation(f"Patient/{anna}"), headers=headers)
    obs_id = created.headers["location"].split("/")[-3]
    body = {**observation(f"Patient/{anna}", value=7), "id": obs_id}
    assert (await secure_client.put(f"/Observation/{obs_id}", json=body, headers=headers)).status_code == 200
    assert (await secure_client.delete(f"/Observation/{obs_id}", headers=headers)).status_code == 204
    events = await _events(secure_client, issuer, patient=f"Patient/{anna}", entity=f"Observation/{obs_id}")
    actions = sorted((_subtype(e), e["action"]) for e in events)
    assert actions == [("create", "C"), ("delete", "D"), ("update", "U")]


async def test_a_refused_attempt_is_recorded_as_a_failure(secure_client: httpx.AsyncClient, issuer: Issuer) -> None:
    anna = await _new_patient(secure_client, issuer)
    other = await _new_patient(secure_client, issuer)
    response = await secure_client.get(f"/Patient/{anna}", headers=issuer.headers("patient/*.rs", patient=other))
    assert response.status_code == 403
    failures = [e for e in await _events(secure_client, issuer, patient=f"Patient/{anna}") if e["outcome"] == "4"]
    assert len(failures) == 1 and failures[0]["outcomeDesc"] == "HTTP 403"


async def test_a_transaction_is_recorded_per_patient(secure_client: httpx.AsyncClient, issuer: Issuer) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:3d0c0f3e-1111-4a4a-9b9b-000000000003", "resource": patient(unique("Tx")), "request": {"method": "POST", "url": "Patient"}},
            {"resource": observation("urn:uuid:3d0c0f3e-1111-4a4a-9b9b-000000000003"), "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    response = await secure_client.post("/", json=bundle, headers={**issuer.headers(CLINICIAN), "Prefer": "return=minimal"})
    locations = [e["response"]["location"] for e in response.json()["entry"]]
    patient_id = locations[0].split("/")[1]
    events = [e for e in await _events(secure_client, issuer, patient=f"Patient/{patient_id}") if _subtype(e) == "transaction"]
    assert len(events) == 1
    assert {loc.rsplit("/_history", 1)[0] for loc in locations} <= {ref.rsplit("/_history", 1)[0] for ref in _entities(events[0])}


async def test_requests_without_patient_data_are_not_recorded(secure_client: httpx.AsyncClient, issuer: Issuer) -> None:
    name = unique("Dokter")
    created = await secure_client.post("/Practitioner", json={"resourceType": "Practitioner", "name": [{"family": name}]}, headers=issuer.headers(CLINICIAN))
    reference = f"Practitioner/{created.json()['id']}"
    await secure_client.get(f"/{reference}", headers=issuer.headers(CLINICIAN))
    assert await _events(secure_client, issuer, entity=reference) == []


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "conditional DELETE"])
async def test_audit_events_cannot_be_changed(secure_client: httpx.AsyncClient, issuer: Issuer, method: str) -> None:
    anna = await _new_patient(secure_client, issuer)
    await secure_client.get(f"/Patient/{anna}", headers=issuer.headers(CLINICIAN))
    event = (await _events(secure_client, issuer, patient=f"Patient/{anna}"))[0]
    everything = issuer.headers("user/AuditEvent.cruds")
    url = f"/AuditEvent/{event['id']}"
    if method == "PUT":
        response = await secure_client.put(url, json={**event, "outcome": "0", "action": "D"}, headers=everything)
    elif method == "PATCH":
        patch = [{"op": "replace", "path": "/action", "value": "D"}]
        response = await secure_client.patch(url, json=patch, headers={**everything, "Content-Type": "application/json-patch+json"})
    elif method == "DELETE":
        response = await secure_client.delete(url, headers=everything)
    else:
        response = await secure_client.delete("/AuditEvent", params={"_id": event["id"]}, headers=everything)
    assert response.status_code == 405, response.text
    assert response.json()["issue"][0]["code"] == "not-supported"
    again = await secure_client.get(url, headers=issuer.headers(AUDITOR))
    assert again.json() == event


async def test_one_record_that_cannot_be_written_does_not_stop_the_trail(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer drops the one bad record (logged) and writes the rest, instead of retrying all forever."""
    context = app.state.fhir
    building = audit_service.audit_events

    def poisoned(record: AuditRecord, *args: Any) -> list[dict[str, Any]]:
        if record.request_id == "poison":
            raise ValueError("cannot build this one")
        return building(record, *args)

    monkeypatch.setattr(audit_service, "audit_events", poisoned)
    trail = audit_service.AuditTrail(audit_service.AuditWriter(context), context.clock)
    anna = unique("anna")
    for request_id in ("before", "poison", "after"):
        await trail.record(_patient_read(anna, request_id, "Poison"))
    await trail.flush()
    await trail.close()
    found = await search(context, "http://testserver", "AuditEvent", [("entity", f"Patient/{anna}")])
    assert len(found.get("entry", [])) == 2


async def test_the_trail_is_searchable_by_what_auditors_search_by_and_no_more(secure_client: httpx.AsyncClient, issuer: Issuer) -> None:
    """Only the ITI-81 parameters are indexed: the CapabilityStatement lists those, and a search by
    another one is refused when strict (ignored, with a warning, when lenient)."""
    capability = (await secure_client.get("/metadata")).json()
    audit = next(r for r in capability["rest"][0]["resource"] if r["type"] == "AuditEvent")
    listed = {p["name"] for p in audit["searchParam"]}
    assert {"patient", "agent", "date", "altid", "entity", "action", "outcome", "subtype"} <= listed
    assert listed <= SEARCH_PARAMETERS and not listed & {"site", "policy", "entity-name", "agent-role", "_tag"}
    strict = {**issuer.headers(AUDITOR), "Prefer": "handling=strict"}
    refused = await secure_client.get("/AuditEvent", params={"site": "http://elsewhere"}, headers=strict)
    assert refused.status_code == 400 and refused.json()["resourceType"] == "OperationOutcome"
    assert "site" in refused.text


async def test_an_event_recorded_on_the_second_is_found_by_that_second(app: Any) -> None:
    """Events are stored through the driver's bulk path; their dates must be stored in the same form
    as every other write's, or a date search at the bound misses them (SQLite compares text)."""
    on_the_second = datetime(2026, 3, 2, 9, 30, 0)
    context = replace(app.state.fhir, clock=lambda: on_the_second)
    trail = audit_service.AuditTrail(audit_service.AuditWriter(context), context.clock)
    anna = unique("anna")
    await trail.record(AuditRecord(
        interaction="read", resource_type="Patient", resource_id=anna, status=200, access=Access(client_id="app"),
        server="http://testserver", source_address="127.0.0.1", request_id="on-the-second",
        answer=orjson.dumps(patient("Second", id=anna)),
    ))
    await trail.close()
    for date in ("ge2026-03-02T09:30:00Z", "eq2026-03-02T09:30:00Z", "le2026-03-02T09:30:00Z", "eq2026-03-02"):
        found = await search(context, "http://testserver", "AuditEvent", [("entity", f"Patient/{anna}"), ("date", date)])
        assert len(found.get("entry", [])) == 1, date
    later = await search(context, "http://testserver", "AuditEvent", [("entity", f"Patient/{anna}"), ("_lastUpdated", "gt2026-03-02T09:30:00Z")])
    assert later.get("entry", []) == []


async def test_a_store_outage_keeps_the_records_and_a_refused_record_is_dropped_alone(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database that cannot write now: the batch waits for the next round, nothing lost. Rows the
    database refuses (a constraint): that record alone is dropped, the others written."""
    context = app.state.fhir
    store = context.store
    writing = store.insert_new
    failures = {"outage": 1}

    async def flaky(creates: list[Any]) -> None:
        if failures["outage"]:
            failures["outage"] -= 1
            raise OperationalError("bulk insert", None, Exception("database is locked"))
        if any(b"refused-by-the-database" in c.content for c in creates):
            raise IntegrityError("bulk insert", None, Exception("UNIQUE constraint failed"))
        await writing(creates)

    monkeypatch.setattr(store, "insert_new", flaky)
    trail = audit_service.AuditTrail(audit_service.AuditWriter(context), context.clock)
    anna = unique("anna")
    for request_id in ("before", "refused-by-the-database", "after"):
        await trail.record(_patient_read(anna, request_id, "Outage"))
    with pytest.raises(OperationalError):  # the flush that met the outage says so; the records stay queued
        await trail.flush()
    await trail.flush()
    await trail.close()
    found = await search(context, "http://testserver", "AuditEvent", [("entity", f"Patient/{anna}")])
    assert len(found.get("entry", [])) == 2


async def test_the_writer_process_stores_the_events_and_a_new_one_takes_over_when_it_dies(app: Any) -> None:
    """The trail's writer runs in a process of its own. Killed between batches, it loses nothing
    handed to the trail: the flush that finds it gone says so, and the next batch starts a new one."""
    context = app.state.fhir
    writer = AuditProcess(app.state.settings.database_url, official_search_parameters(), configure_logging, "WARNING")
    trail = audit_service.AuditTrail(writer, context.clock)
    anna = unique("anna")
    try:
        await trail.record(_patient_read(anna, "first", "Process"))
        await trail.flush()
        first = writer.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await trail.record(_patient_read(anna, "second", "Process"))
        with pytest.raises(audit_service.WriterUnavailable):
            await trail.flush()
        await trail.flush()
        assert writer.pid not in (None, first)
    finally:
        await trail.close()
    found = orjson.loads(orjson.dumps(await search(context, "http://testserver", "AuditEvent", [("entity", f"Patient/{anna}")])))
    request_ids = sorted(e["what"]["identifier"]["value"] for r in found.get("entry", []) for e in r["resource"]["entity"] if "identifier" in e["what"])
    assert request_ids == ["first", "second"]
    assert writer.pid is None


async def test_records_the_writer_dies_on_twice_in_a_row_are_written_one_by_one(app: Any) -> None:
    """A batch during which the writer process died twice in a row may be what kills it: the trail
    then writes its records one by one, so a record that kills every writer cannot stop the trail."""
    context = app.state.fhir
    writer = AuditProcess(app.state.settings.database_url, official_search_parameters(), configure_logging, "WARNING")
    trail = audit_service.AuditTrail(writer, context.clock)
    anna = unique("anna")

    async def kill_the_next_writer() -> None:
        while writer.pid is None:  # until the trail starts a new one
            await asyncio.sleep(0.001)
        os.kill(writer.pid, signal.SIGKILL)

    try:
        assert writer.pid is not None
        os.kill(writer.pid, signal.SIGKILL)
        await trail.record(_patient_read(anna, "first", "Process"))
        await trail.record(_patient_read(anna, "second", "Process"))
        with pytest.raises(audit_service.WriterUnavailable):
            await trail.flush()
        killer = asyncio.create_task(kill_the_next_writer())
        await trail.flush()  # the second death: one by one, each record by a writer of its own start
        await killer
    finally:
        await trail.close()
    found = orjson.loads(orjson.dumps(await search(context, "http://testserver", "AuditEvent", [("entity", f"Patient/{anna}")])))
    request_ids = sorted(e["what"]["identifier"]["value"] for r in found.get("entry", []) for e in r["resource"]["entity"] if "identifier" in e["what"])
    assert request_ids == ["first", "second"]


async def test_on_sqlite_the_writer_process_queues_on_the_file_lock_with_the_servers_writers(app: Any) -> None:
    """SQLite has one writer at a time: while the server holds its write turn (and with it the
    file lock beside the database) the writer process writes nothing, and its batch lands as soon
    as the turn ends; no one polls SQLite's busy handler. PostgreSQL takes concurrent writers."""
    context = app.state.fhir
    sqlite = context.store.engine.dialect.name == "sqlite"
    writer = AuditProcess(app.state.settings.database_url, official_search_parameters(), configure_logging, "WARNING")
    trail = audit_service.AuditTrail(writer, context.clock)
    anna = unique("anna")

    async def written() -> int:
        found = await search(context, "http://testserver", "AuditEvent", [("entity", f"Patient/{anna}")])
        return len(found.get("entry", []))

    try:
        await trail.record(_patient_read(anna, "in-turn", "Turn"))
        async with context.store.writer_turn():
            flushing = asyncio.create_task(trail.flush())
            await asyncio.sleep(1.0)  # the writer process has the batch and waits for the lock
            assert flushing.done() is not sqlite
            assert await written() == (0 if sqlite else 1)
        async with asyncio.timeout(30):
            await flushing
    finally:
        await trail.close()
    assert await written() == 1
