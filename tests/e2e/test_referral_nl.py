"""NL, between two real servers on loopback: a GP asks a physiotherapy practice for a
Meekijkconsult with ZorgDomein-style documents; with a high-risk SBST attached the report comes
back HASP-structured into the GP's record; without one the physiotherapist's side asks the
patient for it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from app.referral import codes
from tests.e2e.referral_flow import (
    Site,
    introduce,
    operation,
    output,
    read,
    referral_id,
    start_pair,
    status_is,
    wait_for,
)
from tests.referral_data import (
    FHIR_JSON,
    nl_org,
    parameters,
    patient,
    post,
    referral,
    sbst_observations,
    sbst_response,
)
from tests.servers import Server


@pytest.fixture
def nl_pair(servers: Callable[[str], Server]) -> tuple[Site, Site]:
    """Two real servers with their own databases: a GP practice and a physiotherapy practice."""
    return start_pair(servers, (nl_org("gp-practice"), "nl_gp"), (nl_org("physio-practice"), "nl_physio"))


async def test_meekijkconsult_with_sbst_ends_with_the_hasp_report_in_the_gps_record(nl_pair: tuple[Site, Site]) -> None:
    gp, physio = nl_pair
    practice = await introduce(gp, physio)
    async with gp.client() as client:
        person = await post(client, patient("NL"))
        subject = f"Patient/{person['id']}"
        response = await post(client, sbst_response(subject))
        scores = [await post(client, {**o, "derivedFrom": [{"reference": f"QuestionnaireResponse/{response['id']}"}]}) for o in sbst_observations(subject)]
        supporting = [f"QuestionnaireResponse/{response['id']}", *(f"Observation/{o['id']}" for o in scores)]
        request = await post(client, referral(subject, practice.role_reference, physio.org.reference, country="NL", supporting=supporting))
    rid = referral_id(request)

    await wait_for(gp, rid, status_is("received"))
    received = await wait_for(physio, rid, status_is("received"))
    assert "businessStatus" not in received  # an SBST came along: nothing to ask the patient
    async with physio.client() as client:
        their_request = await read(client, received["focus"]["reference"])
        assert their_request["status"] == "active"
        attached = [await read(client, s["reference"]) for s in their_request["supportingInfo"]]
        assert {a["resourceType"] for a in attached} == {"QuestionnaireResponse", "Observation"}
        their_patient = await read(client, received["for"]["reference"])
        assert their_patient["identifier"][0]["system"] == codes.BSN
        forms = (await client.get(f"/{received['for']['reference']}/Composition", headers=FHIR_JSON)).json()
        form = forms["entry"][0]["resource"]  # the request form is in the physiotherapist's record
        assert {c["code"] for c in form["type"]["coding"]} == {codes.REFERRAL_NOTE, "teleconsult-request-form"}
        assert form["identifier"]["value"] == rid  # the exchange number

        await operation(client, f"/Task/{received['id']}/$accept", parameters(start={"valueDateTime": "2026-03-05T14:00:00Z"}))
        report = parameters(
            findings="High risk of delayed recovery; fear-avoidance, no red flags.",
            advice="Graded activity with a psychologically informed approach.",
            involve="Physiotherapy practice (this practice), 6 sessions.",
            followUp="Review at T8; refer back if no progress.",
        )
        assert (await operation(client, f"/Task/{received['id']}/$report", report))["status"] == "completed"

    done = await wait_for(gp, rid, status_is("completed"))
    async with gp.client() as client:
        composition = await read(client, output(done, "report"))
        assert composition["type"]["coding"][0] == {"system": codes.DOCUMENT_TYPE, "code": "teleconsult-answer", "display": "Teleconsult answer"}
        assert composition["identifier"]["value"] == rid and composition["subject"]["reference"] == subject
        answer = composition["section"][0]
        assert answer["title"] == "Antwoord op uw vraag"
        assert [s["code"]["coding"][0]["code"] for s in answer["section"]] == ["findings", "advice", "involve", "follow-up"]
        record = (await client.get(f"/{subject}/Composition", headers=FHIR_JSON)).json()
        assert composition["id"] in [e["resource"]["id"] for e in record["entry"]]


async def test_meekijkconsult_without_sbst_makes_the_physiotherapist_side_request_one(nl_pair: tuple[Site, Site]) -> None:
    gp, physio = nl_pair
    practice = await introduce(gp, physio)
    async with gp.client() as client:
        person = await post(client, patient("NL"))
        request = await post(client, referral(f"Patient/{person['id']}", practice.role_reference, physio.org.reference, country="NL"))
    rid = referral_id(request)

    received = await wait_for(physio, rid, status_is("received"))
    assert received["businessStatus"]["coding"][0]["code"] == "sbst-requested"
    async with physio.client() as client:
        asks = (await client.get("/Task", params={"patient": received["for"]["reference"], "code": f"{codes.LBP_ACTION}|sbst-request"}, headers=FHIR_JSON)).json()
        [ask] = [e["resource"] for e in asks["entry"] if e["search"]["mode"] == "match"]
        assert ask["status"] == "requested" and ask["owner"]["reference"] == received["for"]["reference"]
        assert ask["input"][0]["valueCanonical"] == codes.SBST_QUESTIONNAIRE

    await wait_for(gp, rid, status_is("received"))
    async with gp.client() as client:
        ours = await wait_for(gp, rid, status_is("received"))
        cancelled = await operation(client, f"/Task/{ours['id']}/$cancel", parameters(reason="Complaints resolved."))
        assert cancelled["status"] == "cancelled"
    theirs = await wait_for(physio, rid, status_is("cancelled"))
    async with physio.client() as client:
        assert (await read(client, theirs["focus"]["reference"]))["status"] == "revoked"
