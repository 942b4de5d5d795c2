"""The referral workflow in-process, three organisations whose delivery workers reach each other:
activation, the Task state machine and its guard, every decision on both sides, forwarding, cc."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from app.config import Settings
from app.referral import codes
from app.referral.validation import read_message
from app.storage.outbox import outbox
from tests.api.referral_apps import Running, connect, running, settle
from tests.factories import unique
from tests.referral_data import (
    FHIR_JSON,
    Practice,
    dk_org,
    endpoint,
    parameters,
    patient,
    post,
    put,
    referral,
)

GP, SPINE, TOWN = "http://gp.test", "http://spine.test", "http://municipality.test"


@dataclass
class Exchange:
    gp: Running
    spine: Running
    town: Running
    practice: Practice


@pytest.fixture(scope="module")
async def exchange(settings: Settings, scratch_database: Callable[[str], str]) -> AsyncIterator[Exchange]:
    orgs = {GP: dk_org("gp-practice"), SPINE: dk_org("spine-unit"), TOWN: dk_org("municipality")}
    async with AsyncExitStack() as stack:
        apps = {}
        for address, org in orgs.items():
            partners = {a: o for a, o in orgs.items() if a != address}
            name = "wf_" + address.split("//")[1].split(".")[0]
            apps[address] = await stack.enter_async_context(running(settings, scratch_database(name), org, address, partners))
        await connect(*apps.values())
        practice = Practice(orgs[GP])
        await practice.store(apps[GP].client)
        yield Exchange(apps[GP], apps[SPINE], apps[TOWN], practice)


async def _refer(x: Exchange, performer: str | None = None, **changes: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A patient and an activated referral at the GP; returns (ServiceRequest, Patient)."""
    person = await post(x.gp.client, patient("DK"))
    request = referral(f"Patient/{person['id']}", x.practice.role_reference, performer or x.spine.org.reference, country="DK")
    return await post(x.gp.client, {**request, **changes}), person


def _rid(request: dict[str, Any]) -> str:
    return next(i["value"] for i in request["identifier"] if i["system"] == codes.REFERRAL_ID)


async def _task(app: Running, rid: str) -> dict[str, Any]:
    found = (await app.client.get("/Task", params={"identifier": f"{codes.REFERRAL_ID}|{rid}"})).json()
    [task] = [e["resource"] for e in found["entry"] if e["search"]["mode"] == "match"]
    return task


async def _read(app: Running, reference: str) -> dict[str, Any]:
    response = await app.client.get(f"/{reference}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def _decide(app: Running, task: dict[str, Any], code: str, status: int = 200, **values: Any) -> dict[str, Any]:
    response = await app.client.post(f"/Task/{task['id']}/${code}", json=parameters(**values), headers=FHIR_JSON)
    assert response.status_code == status, response.text
    result: dict[str, Any] = response.json()
    return result


async def _messages(app: Running, rid: str) -> list[dict[str, Any]]:
    async with app.context.store.reading() as session:
        rows = (await session.connection.execute(select(outbox.c.payload, outbox.c.destination).where(outbox.c.exchange == rid).order_by(outbox.c.seq))).all()
    return [{**orjson.loads(payload), "_to": destination} for payload, destination in rows]


def _header(message: dict[str, Any]) -> dict[str, Any]:
    header: dict[str, Any] = message["entry"][0]["resource"]
    return header


def _provenances(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in message["entry"] if e["resource"]["resourceType"] == "Provenance"]


async def test_an_illegal_task_status_change_is_409_and_a_legal_one_is_stored(client: Any) -> None:
    task = {"resourceType": "Task", "status": "requested", "intent": "order", "description": unique("plain")}
    created = (await client.post("/Task", json=task, headers=FHIR_JSON)).json()
    for status in ("received", "accepted", "in-progress"):
        response = await client.put(f"/Task/{created['id']}", json={**created, "status": status}, headers=FHIR_JSON)
        assert response.status_code == 200, response.text
        created = response.json()
    response = await client.put(f"/Task/{created['id']}", json={**created, "status": "requested"}, headers=FHIR_JSON)
    assert response.status_code == 409
    issue = response.json()["issue"][0]
    assert issue["code"] == "conflict" and "from 'in-progress' to 'requested'" in issue["diagnostics"]


async def test_activation_creates_the_task_and_queues_the_message_in_one_go(exchange: Exchange) -> None:
    request, person = await _refer(exchange)
    rid = _rid(request)
    task = await _task(exchange.gp, rid)
    assert (task["status"], task["intent"], task["businessStatus"]["coding"][0]["code"]) == ("requested", "order", "queued")
    assert task["focus"] == {"reference": f"ServiceRequest/{request['id']}"} and task["owner"] == {"reference": exchange.spine.org.reference}
    assert task["code"]["coding"][0] == {"system": codes.SNOMED, "code": codes.PATIENT_REFERRAL, "display": "Patient referral"}
    [sent] = await _messages(exchange.gp, rid)
    assert sent["_to"] == SPINE
    # the receiver's own checks accept it: header first, every reference inside, addressed to it
    spine_identity = frozenset((i["system"], i["value"]) for i in exchange.spine.org.identifiers)
    read = read_message({k: v for k, v in sent.items() if k != "_to"}, spine_identity, SPINE, 200)
    kinds = sorted(r["resourceType"] for r in read.entries.values())
    assert kinds == sorted(["MessageHeader", "Organization", "Organization", "ServiceRequest", "Task", "Patient", "PractitionerRole", "Practitioner", "Provenance"])
    assert [p["activity"]["coding"][0]["code"] for p in _provenances(sent)] == ["new-message"]
    shipped = next(r for r in read.entries.values() if r["resourceType"] == "Patient")
    assert shipped["identifier"] == person["identifier"]  # CPR
    organizations = [r for r in read.entries.values() if r["resourceType"] == "Organization"]
    assert all({i["system"] for i in o["identifier"]} == {codes.SOR, codes.GLN} for o in organizations)

    await settle(exchange.gp, exchange.spine)
    assert (await _task(exchange.gp, rid))["status"] == "received"  # acknowledged ok
    assert (await _task(exchange.spine, rid))["status"] == "received"


async def test_a_referral_task_changes_status_only_through_the_decision_operations(exchange: Exchange) -> None:
    request, _ = await _refer(exchange)
    task = await _task(exchange.gp, _rid(request))
    response = await exchange.gp.client.put(f"/Task/{task['id']}", json={**task, "status": "cancelled"}, headers=FHIR_JSON)
    assert response.status_code == 409 and "$cancel" in response.json()["issue"][0]["diagnostics"]
    annotated = {**task, "description": "a note the EHR may add"}
    assert (await exchange.gp.client.put(f"/Task/{task['id']}", json=annotated, headers=FHIR_JSON)).status_code == 200


async def test_only_the_owner_decides_and_only_the_requester_cancels(exchange: Exchange) -> None:
    request, _ = await _refer(exchange)
    rid = _rid(request)
    await settle(exchange.gp, exchange.spine)
    ours, theirs = await _task(exchange.gp, rid), await _task(exchange.spine, rid)
    assert "Only the receiving organisation" in (await _decide(exchange.gp, ours, "accept", 409, start={"valueDateTime": "2026-04-01T09:00:00Z"}))["issue"][0]["diagnostics"]
    assert "Only the referring organisation" in (await _decide(exchange.spine, theirs, "cancel", 409))["issue"][0]["diagnostics"]
    assert (await _decide(exchange.spine, theirs, "reject", 400))["issue"][0]["code"] == "invalid"  # a reason is required
    assert (await _task(exchange.spine, rid))["status"] == "received"


async def test_no_endpoint_means_stored_not_sent_and_a_non_partner_endpoint_is_refused(exchange: Exchange) -> None:
    lonely = dk_org("no-endpoint")
    await put(exchange.gp.client, lonely.resource)
    request, _ = await _refer(exchange, performer=lonely.reference)
    assert not [i for i in request.get("identifier", []) if i["system"] == codes.REFERRAL_ID]
    stranger = dk_org("stranger")
    await put(exchange.gp.client, stranger.resource)
    await put(exchange.gp.client, endpoint(stranger, "http://stranger.test"))
    before = await exchange.gp.snapshot()
    person = await post(exchange.gp.client, patient("DK"))
    after_patient = await exchange.gp.snapshot()
    body = referral(f"Patient/{person['id']}", exchange.practice.role_reference, stranger.reference, country="DK")
    response = await exchange.gp.client.post("/ServiceRequest", json=body, headers=FHIR_JSON)
    assert response.status_code == 422 and "not a configured partner" in response.json()["issue"][0]["diagnostics"]
    assert await exchange.gp.snapshot() == after_patient != before


async def test_a_proposal_becomes_a_referral_when_it_is_made_an_active_order(exchange: Exchange) -> None:
    proposal, _ = await _refer(exchange, status="draft", intent="proposal")
    assert not any(i["system"] == codes.REFERRAL_ID for i in proposal.get("identifier", []))
    ordered = (await exchange.gp.client.put(f"/ServiceRequest/{proposal['id']}", json={**proposal, "status": "active", "intent": "order"}, headers=FHIR_JSON)).json()
    rid = _rid(ordered)
    assert (await _task(exchange.gp, rid))["status"] == "requested"
    again = {**ordered, "note": [{"text": "edited after activation"}]}
    assert (await exchange.gp.client.put(f"/ServiceRequest/{proposal['id']}", json=again, headers=FHIR_JSON)).status_code == 200
    assert len(await _messages(exchange.gp, rid)) == 1  # activated once


async def test_information_asked_and_supplied_priority_changed_then_rejected(exchange: Exchange) -> None:
    request, person = await _refer(exchange)
    rid = _rid(request)
    await settle(exchange.gp, exchange.spine)
    theirs = await _task(exchange.spine, rid)

    held = await _decide(exchange.spine, theirs, "request-information", question="Has an MR been done?")
    assert held["status"] == "on-hold" and held["statusReason"]["text"] == "Has an MR been done?"
    assert (await _read(exchange.spine, theirs["focus"]["reference"]))["status"] == "on-hold"
    await settle(exchange.gp, exchange.spine)
    ours = await _task(exchange.gp, rid)
    assert (ours["status"], ours["businessStatus"]["coding"][0]["code"]) == ("on-hold", "information-requested")
    assert ours["note"][-1]["text"] == "Has an MR been done?"
    assert (await _read(exchange.gp, f"ServiceRequest/{request['id']}"))["status"] == "on-hold"

    finding = {"resourceType": "Observation", "status": "final", "code": {"text": "MR lumbar spine: no stenosis"}, "subject": {"reference": f"Patient/{person['id']}"}}
    supplied = await _decide(exchange.gp, ours, "supply-information", note="MR done last week.", resource=finding)
    assert supplied["status"] == "received"
    await settle(exchange.gp, exchange.spine)
    theirs = await _task(exchange.spine, rid)
    assert theirs["status"] == "received"
    their_request = await _read(exchange.spine, theirs["focus"]["reference"])
    assert their_request["status"] == "active"
    arrived = [await _read(exchange.spine, s["reference"]) for s in their_request["supportingInfo"]]
    assert "MR lumbar spine: no stenosis" in [a.get("code", {}).get("text") for a in arrived]

    await _decide(exchange.spine, theirs, "change-priority", priority={"valueCode": "urgent"})
    await settle(exchange.gp, exchange.spine)
    assert (await _task(exchange.gp, rid))["priority"] == "urgent"
    assert (await _read(exchange.gp, f"ServiceRequest/{request['id']}"))["priority"] == "urgent"

    await _decide(exchange.spine, await _task(exchange.spine, rid), "reject", reason="Treat in primary care first.")
    await settle(exchange.gp, exchange.spine)
    ours = await _task(exchange.gp, rid)
    assert ours["status"] == "rejected" and ours["statusReason"]["text"] == "Treat in primary care first."
    assert (await _read(exchange.gp, f"ServiceRequest/{request['id']}"))["status"] == "revoked"

    replies = [m for m in await _messages(exchange.spine, rid)]
    assert [_header(m)["reason"]["coding"][0]["code"] for m in replies] == ["request-information", "change-priority", "reject"]
    last = replies[-1]
    chain = _provenances(last)
    # every message of the exchange so far, oldest first, then this reply naming the one it answers
    assert [p["activity"]["coding"][0]["code"] for p in chain] == ["new-message", "reply-message", "reply-message", "reply-message", "reply-message"]
    answered = (await _messages(exchange.gp, rid))[-1]["id"]
    assert chain[-1]["entity"] == [{"role": "revision", "what": {"reference": f"MessageHeader/{answered}"}}]
    assert decided_once(chain)


def decided_once(chain: list[dict[str, Any]]) -> bool:
    return len({p["id"] for p in chain}) == len(chain)


async def test_a_cancellation_retracts_the_first_message(exchange: Exchange) -> None:
    request, _ = await _refer(exchange)
    rid = _rid(request)
    await settle(exchange.gp, exchange.spine)
    await _decide(exchange.gp, await _task(exchange.gp, rid), "cancel", reason="Recovered.")
    await settle(exchange.gp, exchange.spine)
    theirs = await _task(exchange.spine, rid)
    assert theirs["status"] == "cancelled" and theirs["statusReason"]["text"] == "Recovered."
    assert (await _read(exchange.spine, theirs["focus"]["reference"]))["status"] == "revoked"
    first, cancellation = await _messages(exchange.gp, rid)
    assert _header(cancellation)["eventCoding"]["code"] == "cancel-referral"
    own = _provenances(cancellation)[-1]
    assert own["activity"]["coding"][0]["code"] == "retract-message"
    assert own["entity"] == [{"role": "removal", "what": {"reference": f"MessageHeader/{first['id']}"}}]
    assert (await _decide(exchange.spine, theirs, "accept", 409, start={"valueDateTime": "2026-04-01T09:00:00Z"}))["issue"][0]["code"] == "conflict"


async def test_a_forward_hands_the_referral_on_and_the_new_owner_answers_the_gp(exchange: Exchange) -> None:
    request, _ = await _refer(exchange)
    rid = _rid(request)
    await settle(exchange.gp, exchange.spine)
    theirs = await _task(exchange.spine, rid)
    town_at_spine = exchange.town.org.reference
    forwarded = await _decide(exchange.spine, theirs, "forward", organization={"valueReference": {"reference": town_at_spine}}, reason="Municipal prevention offer fits better.")
    assert (forwarded["status"], forwarded["businessStatus"]["coding"][0]["code"]) == ("rejected", "forwarded")
    to_gp, to_town = await _messages(exchange.spine, rid)
    assert (to_gp["_to"], to_town["_to"]) == (GP, TOWN)
    assert _header(to_town)["eventCoding"]["code"] == "new-referral"
    own = _provenances(to_town)[-1]
    assert own["activity"]["coding"][0]["code"] == "forward-message" and own["entity"][0]["role"] == "revision"

    await settle(exchange.gp, exchange.spine, exchange.town)
    at_town = await _task(exchange.town, rid)
    assert at_town["status"] == "received" and at_town["owner"]["reference"] == exchange.town.org.reference
    ours = await _task(exchange.gp, rid)
    assert ours["owner"]["reference"] == exchange.town.org.reference and ours["businessStatus"]["coding"][0]["code"] == "forwarded"
    assert (await _read(exchange.gp, f"ServiceRequest/{request['id']}"))["performer"] == [{"reference": exchange.town.org.reference}]

    await _decide(exchange.town, at_town, "accept", start={"valueDateTime": "2026-05-01T13:00:00Z"})
    await settle(exchange.gp, exchange.spine, exchange.town)
    assert (await _task(exchange.gp, rid))["status"] == "accepted"  # the new owner answers the GP directly


async def test_cc_receivers_get_the_same_message_for_information(settings: Settings, scratch_database: Callable[[str], str]) -> None:
    gp, spine, town = dk_org("gp-practice"), dk_org("spine-unit"), dk_org("municipality")
    partners = {SPINE: spine, TOWN: town}
    async with (
        running(settings, scratch_database("cc_gp"), gp, GP, partners, referral_cc=(town.reference,)) as sender,
        running(settings, scratch_database("cc_spine"), spine, SPINE, {GP: gp}) as receiver,
        running(settings, scratch_database("cc_town"), town, TOWN, {GP: gp}) as copy,
    ):
        await connect(sender, receiver, copy)
        practice = Practice(gp)
        await practice.store(sender.client)
        person = await post(sender.client, patient("DK"))
        request = await post(sender.client, referral(f"Patient/{person['id']}", practice.role_reference, spine.reference, country="DK"))
        rid = _rid(request)
        primary, cc = await _messages(sender, rid)
        assert primary["id"] == cc["id"] and (primary["_to"], cc["_to"]) == (SPINE, TOWN)
        uses = [d["extension"][0]["valueCoding"]["code"] for d in _header(primary)["destination"]]
        assert uses == ["primary", "cc"]
        await settle(sender, receiver, copy)
        assert (await _task(receiver, rid))["status"] == "received"
        kept = (await copy.client.get("/Bundle", params={"type": "message"})).json()
        assert [e["resource"]["entry"][0]["resource"]["id"] for e in kept["entry"]] == [primary["id"]]  # stored, no Task there
        assert not (await copy.client.get("/Task", params={"identifier": f"{codes.REFERRAL_ID}|{rid}"})).json()["entry"]


async def test_a_referral_posted_in_a_transaction_with_its_patient_is_activated_with_it(exchange: Exchange) -> None:
    person = patient("DK")
    temporary = f"urn:uuid:{uuid.uuid4()}"
    request = referral(temporary, exchange.practice.role_reference, exchange.spine.org.reference, country="DK")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": temporary, "resource": person, "request": {"method": "POST", "url": "Patient"}},
            {"resource": request, "request": {"method": "POST", "url": "ServiceRequest"}},
        ],
    }
    response = await exchange.gp.client.post("/", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    location = response.json()["entry"][1]["response"]["location"].split("/_history")[0]
    stored = await _read(exchange.gp, location)
    [sent] = await _messages(exchange.gp, _rid(stored))
    shipped = next(e["resource"] for e in sent["entry"] if e["resource"]["resourceType"] == "Patient")
    assert shipped["identifier"] == person["identifier"]
