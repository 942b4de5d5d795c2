"""DK, between two real servers on loopback: a GP practice refers to a spine unit (a test stand-in
for Rygheden) with MedCom-style messages; the receiver acknowledges, accepts with an Appointment,
reports back; the GP's Task ends `completed` with the report as output. Then the same with the
receiver down for a while, and with the sender killed mid-delivery."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import date, timedelta

import pytest

from app.referral import codes
from tests.e2e.referral_flow import (
    Site,
    introduce,
    operation,
    output,
    read,
    referral_id,
    referral_task,
    start_pair,
    status_is,
    wait_for,
)
from tests.factories import assessment_response, non_specific_answers, scored_sbst_response
from tests.referral_data import FHIR_JSON, Org, dk_org, parameters, patient, post, referral
from tests.servers import ROOT, Server


@pytest.fixture
def dk_pair(servers: Callable[[str], Server]) -> tuple[Site, Site]:
    """Two real servers with their own databases: a GP practice and a spine unit."""
    return start_pair(servers, (dk_org("gp-practice"), "dk_gp"), (dk_org("spine-unit"), "dk_spine"))


async def _refer(gp: Site, spine: Site) -> tuple[str, dict[str, str]]:
    """The GP activates a referral to the spine unit; returns the referral id and the GP's records."""
    practice = await introduce(gp, spine)
    async with gp.client() as client:
        person = await post(client, patient("DK"))
        request = await post(client, referral(f"Patient/{person['id']}", practice.role_reference, spine.org.reference, country="DK"))
    return referral_id(request), {"patient": f"Patient/{person['id']}", "request": f"ServiceRequest/{request['id']}"}


async def test_dk_referral_is_acknowledged_accepted_and_reported_back(dk_pair: tuple[Site, Site]) -> None:
    gp, spine = dk_pair
    rid, records = await _refer(gp, spine)

    sent = await wait_for(gp, rid, status_is("received"))  # the acknowledgement came back ok
    assert sent["businessStatus"]["coding"][0]["code"] == "delivered"
    received = await wait_for(spine, rid, status_is("received"))
    assert received["owner"]["reference"] == spine.org.reference
    async with spine.client() as client:
        their_request = await read(client, received["focus"]["reference"])
        their_patient = await read(client, received["for"]["reference"])
        assert their_request["status"] == "active" and their_request["identifier"][0]["value"] == rid
        assert their_patient["identifier"][0]["system"] == codes.CPR

        accepted = await operation(client, f"/Task/{received['id']}/$accept", parameters(start={"valueDateTime": "2026-04-01T09:00:00Z"}, end={"valueDateTime": "2026-04-01T09:30:00Z"}))
        assert accepted["status"] == "accepted"

    ours = await wait_for(gp, rid, status_is("accepted"))
    async with gp.client() as client:
        appointment = await read(client, output(ours, "appointment"))
        assert appointment["status"] == "booked" and appointment["start"] == "2026-04-01T09:00:00Z"
        assert appointment["participant"][0]["actor"]["reference"] == records["patient"]
        assert (await read(client, records["request"]))["status"] == "completed"  # accepted and booked

    async with spine.client() as client:
        report = parameters(findings="Non-specific low back pain; no signs of nerve-root involvement.", advice="Supervised exercise.", followUp="See the patient again in 4 weeks.")
        completed = await operation(client, f"/Task/{received['id']}/$report", report)
        assert completed["status"] == "completed"

    done = await wait_for(gp, rid, status_is("completed"))
    assert sorted(o["type"]["text"] for o in done["output"]) == ["appointment", "report"]  # each arrived once
    async with gp.client() as client:
        composition = await read(client, output(done, "report"))
        assert composition["type"]["coding"][0]["code"] == codes.DISCHARGE_SUMMARY
        assert composition["subject"]["reference"] == records["patient"]
        record = (await client.get(f"/{records['patient']}/Composition", headers=FHIR_JSON)).json()
        assert composition["id"] in [e["resource"]["id"] for e in record["entry"]]  # in the GP's record
        # one Task per side, never a duplicate
        assert (await referral_task(client, rid)) is not None


async def _outbox(server: Server, exchange: str) -> list[tuple[object, ...]]:
    return await server.rows("SELECT message_id, status, attempts FROM outbox WHERE exchange = :e ORDER BY seq", e=exchange)


async def _processed(server: Server, message_id: object) -> int:
    rows = await server.rows("SELECT count(*) FROM inbox WHERE message_id = :m", m=message_id)
    return int(str(rows[0][0]))


@pytest.fixture
def dk_pair_retrying(servers: Callable[[str], Server]) -> tuple[Site, Site]:
    """The pair again, the GP retrying 0.5 s, 1 s, then every 2 s, up to 40 attempts."""
    return start_pair(servers, (dk_org("gp-practice"), "dk_gp_retry"), (dk_org("spine-unit"), "dk_spine_retry"), BACKPATH_DELIVERY_MAX_ATTEMPTS="40")


@pytest.fixture
def dk_pair_giving_up(servers: Callable[[str], Server]) -> tuple[Site, Site]:
    """The pair again, the GP giving up after 5 attempts (0.5 s, 1 s, 2 s, 2 s apart)."""
    return start_pair(servers, (dk_org("gp-practice"), "dk_gp_give_up"), (dk_org("spine-unit"), "dk_spine_give_up"), BACKPATH_DELIVERY_MAX_ATTEMPTS="5")


async def test_receiver_down_for_a_while_gets_the_message_once_after_retries(dk_pair_retrying: tuple[Site, Site]) -> None:
    gp, spine = dk_pair_retrying
    await introduce(gp, spine)
    spine.server.stop()
    rid, _ = await _refer_again(gp, spine)
    await asyncio.sleep(2.0)
    [(message_id, status, attempts)] = await _outbox(gp.server, rid)
    assert status == "pending" and int(str(attempts)) >= 2  # tried, failed, waiting to retry
    assert (await wait_for(gp, rid, status_is("requested")))["businessStatus"]["coding"][0]["code"] == "queued"

    spine.server.start()
    received = await wait_for(spine, rid, status_is("received"))
    await wait_for(gp, rid, status_is("received"))
    assert await _processed(spine.server, message_id) == 1  # one delivery processed, however many tries
    [(_, status, _)] = await _outbox(gp.server, rid)
    assert status == "delivered"
    async with spine.client() as client:
        accepted = await operation(client, f"/Task/{received['id']}/$accept", parameters(start={"valueDateTime": "2026-04-02T10:00:00Z"}))
    assert accepted["status"] == "accepted"
    await wait_for(gp, rid, status_is("accepted"))


async def test_exhausted_delivery_marks_the_task_failed_and_resend_delivers_it(dk_pair_giving_up: tuple[Site, Site]) -> None:
    gp, spine = dk_pair_giving_up
    await introduce(gp, spine)
    spine.server.stop()
    rid, _ = await _refer_again(gp, spine)
    failed = await wait_for(gp, rid, lambda t: t["businessStatus"]["coding"][0]["code"] == "delivery-failed", seconds=30)
    assert failed["status"] == "requested" and "failed" in failed["note"][-1]["text"]
    [(message_id, status, attempts)] = await _outbox(gp.server, rid)
    assert (status, attempts) == ("failed", 5)

    spine.server.start()
    async with gp.client() as client:
        outcome = await operation(client, f"/Task/{failed['id']}/$resend", parameters())
        assert "1 message(s)" in outcome["issue"][0]["diagnostics"]
    await wait_for(gp, rid, status_is("received"))
    await wait_for(spine, rid, status_is("received"))
    assert await _processed(spine.server, message_id) == 1


async def test_sender_killed_mid_delivery_loses_nothing_and_sends_nothing_twice(dk_pair: tuple[Site, Site]) -> None:
    gp, spine = dk_pair
    await introduce(gp, spine)
    spine.server.pause()  # its socket still accepts: the GP's request goes out and waits
    rid, _ = await _refer_again(gp, spine)
    for _ in range(50):  # until the worker has claimed it and its request is on the wire
        [(message_id, status, attempts)] = await _outbox(gp.server, rid)
        if int(str(attempts)) >= 1:
            break
        await asyncio.sleep(0.1)
    assert status == "pending" and int(str(attempts)) >= 1  # not yet acknowledged
    await asyncio.sleep(1.0)  # the claim is committed just before the POST: let the request go out
    gp.server.kill()
    spine.server.resume()
    await wait_for(spine, rid, status_is("received"))  # the receiver processed what reached it
    assert await _processed(spine.server, message_id) == 1

    gp.server.start()  # same database, same address: the outbox is still there
    await wait_for(gp, rid, status_is("received"))
    [(_, status, attempts)] = await _outbox(gp.server, rid)
    assert status == "delivered" and int(str(attempts)) >= 2  # sent again after the restart …
    assert await _processed(spine.server, message_id) == 1  # … and processed once
    async with spine.client() as client:
        assert (await referral_task(client, rid)) is not None


async def _refer_again(gp: Site, spine: Site) -> tuple[str, dict[str, str]]:
    """A referral with the parties already introduced."""
    async with gp.client() as client:
        roles = (await client.get("/PractitionerRole", params={"organization": gp.org.reference}, headers=FHIR_JSON)).json()
        role = roles["entry"][0]["resource"]["id"]
        person = await post(client, patient("DK"))
        request = await post(client, referral(f"Patient/{person['id']}", f"PractitionerRole/{role}", spine.org.reference, country="DK"))
    return referral_id(request), {"patient": f"Patient/{person['id']}"}


def _rygheden() -> Org:
    """Rygheden as the content describes it (`plandefinitions/Organization-dk-rygheden.json`)."""
    content = json.loads((ROOT / "plandefinitions" / "Organization-dk-rygheden.json").read_text())
    identifiers = [{"system": i["system"], "value": i["value"]} for i in content["identifier"]]
    return Org(content["id"], content["name"], identifiers, "DK")


@pytest.fixture
def sjaelland_pair(servers: Callable[[str], Server]) -> tuple[Site, Site]:
    """A GP practice in Region Sjælland and a server that is Rygheden (GLN 5790001992644)."""
    return start_pair(servers, (dk_org("gp-practice"), "dk_gp_sjaelland"), (_rygheden(), "dk_rygheden"))


async def test_sjaelland_pathway_proposes_rygheden_and_the_activated_referral_travels_to_the_report(
    sjaelland_pair: tuple[Site, Site],
) -> None:
    """The whole DK flow from the pathway: $apply of dk-sjaelland for a patient not better at T8
    proposes the Rygheden referral; the GP activates that proposal; it is delivered, acknowledged,
    accepted with an Appointment and answered with a discharge report that completes the GP's Task."""
    gp, rygheden = sjaelland_pair
    practice = await introduce(gp, rygheden)
    t0 = date.today() - timedelta(weeks=8)
    async with gp.client() as client:
        person = await post(client, patient("DK"))
        subject = f"Patient/{person['id']}"
        await post(client, scored_sbst_response(subject, 5, 2, authored=t0.isoformat()))
        answers = non_specific_answers(t0.isoformat(), pain_duration_weeks=9, course="worse", considerable_impairment=True)
        await post(client, assessment_response(subject, date.today().isoformat(), **answers))
        applied = await client.get("/PlanDefinition/dk-sjaelland/$apply", params={"subject": subject, "practitioner": practice.role_reference}, headers=FHIR_JSON)
        assert applied.status_code == 200, applied.text
        proposals = [
            r for r in applied.json().get("contained", [])
            if r["resourceType"] == "ServiceRequest" and any(c.get("code") == "spine-centre-referral" for c in r["code"]["coding"])
        ]
        assert len(proposals) == 1, applied.text
        proposal = proposals[0]
        assert proposal["performer"][0]["reference"] == "Organization/dk-rygheden"
        # The GP turns the proposal into the order: the pathway's request, now active, from the GP.
        order = {k: v for k, v in proposal.items() if k not in ("id", "meta")}
        order |= {"status": "active", "intent": "order", "requester": {"reference": practice.role_reference}}
        request = await post(client, order)
    rid = referral_id(request)

    assert (await wait_for(gp, rid, status_is("received")))["businessStatus"]["coding"][0]["code"] == "delivered"
    received = await wait_for(rygheden, rid, status_is("received"))
    assert received["owner"]["reference"] == "Organization/dk-rygheden"
    async with rygheden.client() as client:
        their_request = await read(client, received["focus"]["reference"])
        assert any(c.get("code") == "spine-centre-referral" for c in their_request["code"]["coding"])
        slot = parameters(start={"valueDateTime": "2026-12-14T09:00:00Z"}, end={"valueDateTime": "2026-12-14T09:45:00Z"})
        assert (await operation(client, f"/Task/{received['id']}/$accept", slot))["status"] == "accepted"
    await wait_for(gp, rid, status_is("accepted"))
    async with rygheden.client() as client:
        report = parameters(findings="Lumbar disc degeneration L4-L5, no root compression.", advice="Interdisciplinary back programme.", followUp="GP follows up after the programme.")
        assert (await operation(client, f"/Task/{received['id']}/$report", report))["status"] == "completed"
    done = await wait_for(gp, rid, status_is("completed"))
    async with gp.client() as client:
        composition = await read(client, output(done, "report"))
        assert composition["subject"]["reference"] == subject
