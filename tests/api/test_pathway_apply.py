"""PlanDefinition/$apply, $r5.apply and ActivityDefinition/$apply over the FHIR API, on the
content loaded at start-up and data stored in (or sent to) the server."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import httpx
import pytest

from app.services import pathway as pathway_service
from tests.factories import (
    FHIR_JSON,
    assessment_response,
    collection,
    non_specific_answers,
    parameters,
    patient,
    scored_sbst_response,
    unique,
)
from tests.pathway_helpers import Applied, lbp_codes

TODAY = date.today()
T0 = TODAY - timedelta(weeks=4)
PLAN = "http://backpath.dev/fhir/PlanDefinition"

SJAELLAND_T4 = non_specific_answers(T0.isoformat(), pain_duration_weeks=5, course="no-significant-progress")


async def _post(client: httpx.AsyncClient, path: str, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    response = await client.post(path, json=body, headers=FHIR_JSON)
    assert response.status_code == status, response.text
    return dict(response.json())


@pytest.fixture
async def stored_patient(client: httpx.AsyncClient) -> str:
    """A patient with an SBST response and a T4 assessment stored in the server."""
    created = await _post(client, "/Patient", patient(family=unique("Apply"), birthDate="1975-05-05"))
    subject = f"Patient/{created['id']}"
    await _post(client, "/QuestionnaireResponse", scored_sbst_response(subject, 6, 4, authored=T0.isoformat()))
    await _post(client, "/QuestionnaireResponse", assessment_response(subject, TODAY.isoformat(), **SJAELLAND_T4))
    return subject


def _care_plan_codes(care_plan: dict[str, Any]) -> set[str]:
    bundle = {"entry": [{"resource": r} for r in care_plan["contained"]]}
    return Applied(bundle).codes()


async def test_type_level_apply_by_url_returns_a_care_plan_from_stored_data(client: httpx.AsyncClient, stored_patient: str) -> None:
    response = await client.get("/PlanDefinition/$apply", params={"url": f"{PLAN}/dk-sjaelland", "subject": stored_patient})
    assert response.status_code == 200, response.text
    care_plan = response.json()
    assert care_plan["resourceType"] == "CarePlan"
    assert care_plan["instantiatesCanonical"] == [f"{PLAN}/dk-sjaelland"]
    codes = _care_plan_codes(care_plan)
    assert {"mr-lumbar", "spine-centre-referral", "reassess-t8", "self-management-advice"} <= codes
    assert not {"acute-referral", "reassess-t4", "imaging-not-indicated"} & codes
    task = next(r for r in care_plan["contained"] if r["resourceType"] == "Task" and "reassess-t8" in lbp_codes(r["code"]))
    assert task["restriction"]["period"]["end"] == (T0 + timedelta(weeks=8)).isoformat()
    referral = next(r for r in care_plan["contained"] if "spine-centre-referral" in lbp_codes(r.get("code") or []))
    assert referral["performer"][0]["reference"] == "Organization/dk-rygheden"


async def test_instance_level_post_and_r5_bundle(client: httpx.AsyncClient, stored_patient: str) -> None:
    care_plan = await _post(client, "/PlanDefinition/nl-zel/$apply", parameters(("subject", stored_patient)), 200)
    assert {"meekijkconsult", "consult-report"} <= _care_plan_codes(care_plan)
    bundle = await _post(client, "/PlanDefinition/nl-zel/$r5.apply", parameters(("subject", stored_patient)), 200)
    assert bundle["type"] == "collection" and bundle["entry"][0]["resource"]["resourceType"] == "RequestGroup"
    assert {"meekijkconsult", "consult-report"} <= Applied(bundle).codes()


async def test_r5_apply_for_several_subjects_returns_a_bundle_each(client: httpx.AsyncClient, stored_patient: str) -> None:
    other = await _post(client, "/Patient", patient(family=unique("Other")))
    body = parameters(("subject", stored_patient), ("subject", f"Patient/{other['id']}"))
    result = await _post(client, "/PlanDefinition/dk-syddanmark/$r5.apply", body, 200)
    assert [p["name"] for p in result["parameter"]] == ["return", "return"]
    assert [p["resource"]["entry"][0]["resource"]["subject"]["reference"] for p in result["parameter"]] == [stored_patient, f"Patient/{other['id']}"]


async def test_data_bundle_without_server_data(client: httpx.AsyncClient, stored_patient: str) -> None:
    """Data only: a subject that is not stored, and stored facts that are not used."""
    subject = f"Patient/{unique('transient')}"
    person = {**patient(), "id": subject.split("/")[1], "birthDate": "1970-01-01"}
    assessment = assessment_response(subject, TODAY.isoformat(), **{**SJAELLAND_T4, "red_flag_cauda_equina": True})
    body = parameters(("subject", subject), ("data", collection(person, assessment)), ("useServerData", False))
    result = await _post(client, "/PlanDefinition/dk-syddanmark/$r5.apply", body, 200)
    assert Applied(result).codes() == {"acute-referral"}
    stored_ignored = parameters(("subject", stored_patient), ("useServerData", False))
    refused = await client.post("/PlanDefinition/dk-syddanmark/$apply", json=stored_ignored, headers=FHIR_JSON)
    assert refused.status_code == 404 and "neither in 'data' nor stored" in refused.text


async def test_the_latest_assessment_decides(client: httpx.AsyncClient, stored_patient: str) -> None:
    await _post(client, "/QuestionnaireResponse", assessment_response(stored_patient, (TODAY + timedelta(days=1)).isoformat(), **{**SJAELLAND_T4, "red_flag_paresis": "progressive"}))
    bundle = await _post(client, "/PlanDefinition/dk-midtjylland/$r5.apply", parameters(("subject", stored_patient)), 200)
    assert Applied(bundle).codes() == {"acute-referral"}
    assert Applied(bundle).priority("acute-referral") == "stat"


async def test_apply_writes_nothing(client: httpx.AsyncClient, stored_patient: str) -> None:
    before = (await client.get("/_history", params={"_count": "1"})).json()["total"]
    await _post(client, "/PlanDefinition/dk-sjaelland/$apply", parameters(("subject", stored_patient)), 200)
    await _post(client, "/ActivityDefinition/mr-lumbar/$apply", parameters(("subject", stored_patient)), 200)
    assert (await client.get("/_history", params={"_count": "1"})).json()["total"] == before
    found = (await client.get("/ServiceRequest", params={"subject": stored_patient})).json()
    assert found.get("total", 0) == 0


async def test_user_language_gives_translated_texts(client: httpx.AsyncClient, stored_patient: str) -> None:
    response = await client.get("/PlanDefinition/dk-sjaelland/$r5.apply", params={"subject": stored_patient, "userLanguage": "da"})
    bundle = response.json()
    titles = [a["title"] for a in Applied(bundle).actions()]
    assert "Patientkontakt senest ved T8" in titles
    advice = Applied(bundle).request("self-management-advice")
    assert advice["payload"][0]["contentString"].startswith("Lev så vidt muligt som du plejer")


async def test_activity_definition_apply_gives_the_request(client: httpx.AsyncClient, stored_patient: str) -> None:
    response = await client.get("/ActivityDefinition/mr-lumbar/$apply", params={"subject": stored_patient})
    assert response.status_code == 200, response.text
    request = response.json()
    assert request["resourceType"] == "ServiceRequest" and request["intent"] == "proposal"
    assert {"system": "http://snomed.info/sct", "code": "433141005", "display": "Magnetic resonance imaging of lumbar and sacral spine (procedure)"} in request["code"]["coding"]
    by_url = await client.get("/ActivityDefinition/$apply", params={"url": "http://backpath.dev/fhir/ActivityDefinition/sbst-request", "subject": stored_patient})
    task = by_url.json()
    assert task["owner"] == {"reference": stored_patient} and task["focus"]["reference"] == "Questionnaire/start-back"


async def test_unknown_facts_are_named_in_the_result(client: httpx.AsyncClient) -> None:
    created = await _post(client, "/Patient", patient(family=unique("Unknown")))
    subject = f"Patient/{created['id']}"
    await _post(client, "/QuestionnaireResponse", assessment_response(subject, TODAY.isoformat(), **{**SJAELLAND_T4, "red_flag_cauda_equina": None}))
    care_plan = await _post(client, "/PlanDefinition/dk-hovedstaden/$apply", parameters(("subject", subject)), 200)
    group = care_plan["contained"][0]
    assert "red-flag-cauda-equina" in group["note"][0]["text"]
    assert care_plan["extension"][0]["url"] == "http://hl7.org/fhir/StructureDefinition/cqf-messages"
    outcome = next(r for r in care_plan["contained"] if r["resourceType"] == "OperationOutcome")
    assert any(i["code"] == "incomplete" and "red-flag-cauda-equina" in i["diagnostics"] for i in outcome["issue"])
    assert _care_plan_codes(care_plan) == set()


async def test_an_expression_error_is_reported_not_raised(client: httpx.AsyncClient, stored_patient: str) -> None:
    broken = {"resourceType": "PlanDefinition", "status": "active", "url": "http://test/broken", "action": [
        {"id": "bad", "condition": [{"kind": "applicability", "expression": {"language": "text/fhirpath", "expression": "%`no-such-fact` = 1"}}]},
        {"id": "good", "title": "still here"},
    ]}  # fmt: skip
    care_plan = await _post(client, "/PlanDefinition/$apply", parameters(("planDefinition", broken), ("subject", stored_patient)), 200)
    assert [a["id"] for a in care_plan["contained"][0]["action"]] == ["good"]
    outcome = next(r for r in care_plan["contained"] if r["resourceType"] == "OperationOutcome")
    assert outcome["issue"][0]["severity"] == "error" and "no-such-fact" in outcome["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    ("method", "path", "query", "body", "status"),
    [
        ("GET", "/PlanDefinition/no-such-plan/$apply", {"subject": "Patient/x"}, None, 404),
        ("GET", "/PlanDefinition/$apply", {"url": "http://nowhere/PlanDefinition/x", "subject": "Patient/x"}, None, 404),
        ("GET", "/PlanDefinition/$apply", {"url": f"{PLAN}/nl-zel", "version": "9.9", "subject": "Patient/x"}, None, 404),
        ("GET", "/PlanDefinition/$apply", {"subject": "Patient/x"}, None, 400),
        ("GET", "/PlanDefinition/nl-zel/$apply", {"url": f"{PLAN}/nl-zel", "subject": "Patient/x"}, None, 400),
        ("GET", "/PlanDefinition/nl-zel/$apply", {}, None, 400),
        ("GET", "/PlanDefinition/nl-zel/$apply", {"subject": "Patient/does-not-exist"}, None, 404),
        ("GET", "/PlanDefinition/nl-zel/$apply", {"subject": "Patient/x", "bogus": "1"}, None, 400),
        ("POST", "/PlanDefinition/nl-zel/$apply", {}, {"resourceType": "Patient"}, 400),
        ("POST", "/PlanDefinition/$apply", {}, parameters(("subject", "Patient/x"), ("planDefinition", {"resourceType": "PlanDefinition", "status": "active", "action": "not a list"})), 422),
        ("POST", "/PlanDefinition/nl-zel/$apply", {}, parameters(("subject", "Patient/a"), ("subject", "Patient/b")), 400),
        ("GET", "/Observation/$apply", {"subject": "Patient/x"}, None, 404),
    ],
)
async def test_bad_calls_are_operation_outcomes(client: httpx.AsyncClient, method: str, path: str, query: dict[str, str], body: Any, status: int) -> None:
    response = await client.request(method, path, params=query, json=body, headers=FHIR_JSON if body is not None else None)
    assert response.status_code == status, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_url_and_version_pick_the_stored_plan(client: httpx.AsyncClient, stored_patient: str) -> None:
    response = await client.get("/PlanDefinition/$apply", params={"url": f"{PLAN}/dk-syddanmark", "version": "0.1.0", "subject": stored_patient})
    assert response.status_code == 200


async def test_capability_statement_lists_the_apply_operations(client: httpx.AsyncClient) -> None:
    statement = (await client.get("/metadata")).json()
    by_type = {r["type"]: {o["name"]: o["definition"] for o in r.get("operation", [])} for r in statement["rest"][0]["resource"]}
    assert by_type["PlanDefinition"]["apply"] == "http://hl7.org/fhir/OperationDefinition/PlanDefinition-apply"
    assert "r5.apply" in by_type["PlanDefinition"]
    assert by_type["ActivityDefinition"]["apply"] == "http://hl7.org/fhir/OperationDefinition/ActivityDefinition-apply"


async def test_an_edited_rule_applies_at_once(client: httpx.AsyncClient, stored_patient: str) -> None:
    """Definitions are cached, but a committed write of any definition drops the cache; so does a delete."""
    plan_id = unique("edited")
    rule: dict[str, Any] = {"resourceType": "PlanDefinition", "id": plan_id, "url": f"http://test/PlanDefinition/{plan_id}", "status": "active",
                            "action": [{"id": "rule", "title": "before", "condition": [{"kind": "applicability", "expression": {"language": "text/fhirpath", "expression": "%`sbst-risk` = 'high'"}}]}]}  # fmt: skip
    assert (await client.put(f"/PlanDefinition/{plan_id}", json=rule, headers=FHIR_JSON)).status_code == 201
    first = await _post(client, f"/PlanDefinition/{plan_id}/$apply", parameters(("subject", stored_patient)), 200)
    assert [a["title"] for a in first["contained"][0]["action"]] == ["before"]
    rule["action"][0]["title"] = "after"
    rule["action"][0]["condition"][0]["expression"]["expression"] = "%`sbst-risk` = 'low'"
    assert (await client.put(f"/PlanDefinition/{plan_id}", json=rule, headers=FHIR_JSON)).status_code == 200
    second = await _post(client, f"/PlanDefinition/{plan_id}/$apply", parameters(("subject", stored_patient)), 200)
    assert "action" not in second["contained"][0]
    by_url = parameters(("url", rule["url"]), ("subject", stored_patient))
    await _post(client, "/PlanDefinition/$apply", by_url, 200)
    assert (await client.delete(f"/PlanDefinition/{plan_id}")).status_code in (200, 204)
    await _post(client, "/PlanDefinition/$apply", by_url, 404)
    await _post(client, f"/PlanDefinition/{plan_id}/$apply", parameters(("subject", stored_patient)), 410)


async def test_every_page_of_the_subjects_data_is_read(client: httpx.AsyncClient, stored_patient: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pathway_service, "_PAGE", "1")
    newest = (TODAY + timedelta(days=2)).isoformat()
    await _post(client, "/QuestionnaireResponse", assessment_response(stored_patient, newest, **{**SJAELLAND_T4, "red_flag_paresis": "progressive"}))
    await _post(client, "/QuestionnaireResponse", assessment_response(stored_patient, T0.isoformat(), **SJAELLAND_T4))
    bundle = await _post(client, "/PlanDefinition/dk-sjaelland/$r5.apply", parameters(("subject", stored_patient)), 200)
    assert Applied(bundle).codes() == {"acute-referral"}
