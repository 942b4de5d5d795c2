"""QuestionnaireResponses over HTTP: scored and validated on every write; $extract; $populate."""

from __future__ import annotations

import itertools
import random
from typing import Any
from urllib.parse import quote

import httpx

from tests.factories import (
    FHIR_JSON,
    LBP_URL,
    SBST_URL,
    lbp_assessment,
    lbp_code,
    patient,
    sbst_response,
    unique,
)

OUTCOME = {**FHIR_JSON, "Prefer": "return=OperationOutcome"}


async def new_patient(client: httpx.AsyncClient, **fields: Any) -> str:
    created = await client.post("/Patient", json=patient(family=unique("Q"), **fields), headers=FHIR_JSON)
    assert created.status_code == 201
    return f"Patient/{created.json()['id']}"


def scores(response: dict[str, Any]) -> dict[str, Any]:
    found = {i["linkId"]: i["answer"][0] for i in response["item"] if i.get("answer")}
    return {k: found.get(k) for k in ("total-score", "distress-subscale", "risk-level")}


async def test_the_questionnaires_and_their_code_systems_are_served(client: httpx.AsyncClient) -> None:
    for path in ("Questionnaire/start-back", "Questionnaire/lbp-assessment", "CodeSystem/sbst-answer",
                 "CodeSystem/lbp-assessment", "CodeSystem/lbp-assessment-answer",
                 "OperationDefinition/QuestionnaireResponse-extract", "StructureDefinition/questionnaire-extract-persist"):
        assert (await client.get(f"/{path}")).status_code == 200, path
    found = (await client.get("/Questionnaire", params={"url": SBST_URL})).json()
    assert [e["resource"]["id"] for e in found["entry"]] == ["start-back"]
    statement = (await client.get("/metadata")).json()
    operations = {r["type"]: {o["name"] for o in r.get("operation", [])} for r in statement["rest"][0]["resource"]}
    assert "extract" in operations["QuestionnaireResponse"] and "populate" in operations["Questionnaire"]


async def test_a_posted_sbst_response_is_stored_with_its_scores(client: httpx.AsyncClient) -> None:
    subject = await new_patient(client)
    created = await client.post("/QuestionnaireResponse", json=sbst_response([True] * 5 + [False] * 3, "moderately", subject={"reference": subject}), headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    stored = (await client.get(f"/QuestionnaireResponse/{created.json()['id']}")).json()
    assert scores(stored) == {
        "total-score": {"valueInteger": 5},
        "distress-subscale": {"valueInteger": 1},
        "risk-level": {"valueCoding": {"system": "http://loinc.org", "code": "LA8982-6", "display": "Medium"}},
    }


async def test_a_sample_of_answer_combinations_scores_over_http(client: httpx.AsyncClient) -> None:
    combinations = list(itertools.product(itertools.product((False, True), repeat=8), ("not-at-all", "slightly", "moderately", "very-much", "extremely")))
    for agree, bothersome in random.Random(5).sample(combinations, 12):
        created = await client.post("/QuestionnaireResponse", json=sbst_response(agree, bothersome), headers=FHIR_JSON)
        items = [int(a) for a in agree] + [int(bothersome in ("very-much", "extremely"))]
        assert scores(created.json())["total-score"] == {"valueInteger": sum(items)}
        assert scores(created.json())["distress-subscale"] == {"valueInteger": sum(items[4:])}


async def test_an_invalid_completed_response_gets_422_with_one_issue_per_item(client: httpx.AsyncClient) -> None:
    body = sbst_response([True] * 8, "extremely")
    body["item"][2]["answer"] = [{"valueCoding": {"system": "http://backpath.dev/fhir/CodeSystem/sbst-answer", "code": "maybe"}}]
    body["item"][4]["answer"] = [{"valueBoolean": True}]
    del body["item"][6]
    refused = await client.post("/QuestionnaireResponse", json=body, headers=FHIR_JSON)
    assert refused.status_code == 422
    outcome = refused.json()
    assert outcome["resourceType"] == "OperationOutcome"
    located = {(i["code"], i["expression"][0]) for i in outcome["issue"]}
    assert located == {
        ("code-invalid", "QuestionnaireResponse.item.where(linkId='3')"),
        ("value", "QuestionnaireResponse.item.where(linkId='5')"),
        ("required", "QuestionnaireResponse.item.where(linkId='7')"),
    }
    assert all(i["severity"] == "error" for i in outcome["issue"])


async def test_an_update_is_validated_too_and_a_refusal_keeps_the_stored_version(client: httpx.AsyncClient) -> None:
    created = (await client.post("/QuestionnaireResponse", json=sbst_response([False] * 8, "slightly"), headers=FHIR_JSON)).json()
    broken = {**created, "item": [i for i in created["item"] if i["linkId"] != "9"]}
    refused = await client.put(f"/QuestionnaireResponse/{created['id']}", json=broken, headers=FHIR_JSON)
    assert refused.status_code == 422
    assert refused.json()["issue"][0]["expression"] == ["QuestionnaireResponse.item.where(linkId='9')"]
    assert (await client.get(f"/QuestionnaireResponse/{created['id']}")).json()["meta"]["versionId"] == "1"


async def test_a_wrong_read_only_score_is_replaced_and_a_warning_returned(client: httpx.AsyncClient) -> None:
    body = sbst_response([True] * 8, "extremely")
    body["item"].append({"linkId": "total-score", "answer": [{"valueInteger": 1}]})
    created = await client.post("/QuestionnaireResponse", json=body, headers=OUTCOME)
    assert created.status_code == 201
    issues = created.json()["issue"]
    assert [i["severity"] for i in issues] == ["information", "warning"]
    assert issues[1]["expression"] == ["QuestionnaireResponse.item.where(linkId='total-score')"]
    stored = (await client.get(created.headers["location"].split("/_history")[0].replace("http://testserver", ""))).json()
    assert scores(stored)["total-score"] == {"valueInteger": 9}


async def test_an_in_progress_response_may_be_incomplete(client: httpx.AsyncClient) -> None:
    body = sbst_response([True] * 8, "extremely", status="in-progress")
    body["item"] = body["item"][:3]
    created = await client.post("/QuestionnaireResponse", json=body, headers=FHIR_JSON)
    assert created.status_code == 201
    assert [i["linkId"] for i in created.json()["item"]] == ["1", "2", "3"]


async def test_a_response_to_an_unknown_questionnaire_is_stored_unvalidated_with_a_warning(client: httpx.AsyncClient) -> None:
    body = {"resourceType": "QuestionnaireResponse", "status": "completed", "questionnaire": f"http://example.org/{unique()}",
            "item": [{"linkId": "x", "answer": [{"valueString": "y"}]}]}
    created = await client.post("/QuestionnaireResponse", json=body, headers=OUTCOME)
    assert created.status_code == 201
    assert created.json()["issue"][1]["code"] == "not-found"


async def test_a_translation_added_as_json_is_accepted_without_code_changes(client: httpx.AsyncClient) -> None:
    questionnaire = (await client.get("/Questionnaire/start-back")).json()
    url = f"http://example.org/{unique('sbst')}"
    copy = {k: v for k, v in questionnaire.items() if k not in ("id", "meta")}
    copy["url"] = url
    copy["item"][1]["_text"] = {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/translation", "extension": [
        {"url": "lang", "valueCode": "nl"}, {"url": "content", "valueString": "(officiële vertaling van item 1)"}]}]}
    assert (await client.post("/Questionnaire", json=copy, headers=FHIR_JSON)).status_code == 201
    body = sbst_response([True] * 8, "extremely", questionnaire=url, language="nl")
    body["item"][0]["text"] = "(officiële vertaling van item 1)"
    assert (await client.post("/QuestionnaireResponse", json=body, headers=FHIR_JSON)).status_code == 201
    body["item"][0]["text"] = "a text of my own"
    assert (await client.post("/QuestionnaireResponse", json=body, headers=FHIR_JSON)).status_code == 422


async def extract(client: httpx.AsyncClient, path: str, body: Any = None, **params: str) -> httpx.Response:
    return await client.post(path, json=body or {"resourceType": "Parameters"}, params=params, headers=FHIR_JSON)


def entries_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    bundle = result if result["resourceType"] == "Bundle" else next(p["resource"] for p in result["parameter"] if p["name"] == "return")
    return bundle["entry"]  # type: ignore[no-any-return]


async def test_extract_at_instance_level_returns_the_observations_bundle(client: httpx.AsyncClient) -> None:
    subject = await new_patient(client)
    created = (await client.post("/QuestionnaireResponse", json=sbst_response([True] * 8, "extremely", subject={"reference": subject},
                                                                              authored="2026-11-30T08:00:00Z"), headers=FHIR_JSON)).json()
    result = await extract(client, f"/QuestionnaireResponse/{created['id']}/$extract")
    assert result.status_code == 200
    bundle = result.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
    codes = {e["resource"]["code"]["coding"][0]["code"]: e["resource"] for e in bundle["entry"]}
    assert set(codes) == {"91351-7", "91350-9", "91352-5"}
    assert codes["91351-7"]["derivedFrom"] == [{"reference": f"QuestionnaireResponse/{created['id']}"}]
    assert codes["91351-7"]["effectiveDateTime"] == "2026-11-30T08:00:00Z"
    assert codes["91351-7"]["subject"] == {"reference": subject}
    found = (await client.get("/Observation", params={"subject": subject})).json()
    assert found.get("entry", []) == []  # not persisted


async def test_extract_with_persist_stores_the_observations_once(client: httpx.AsyncClient) -> None:
    subject = await new_patient(client)
    created = (await client.post("/QuestionnaireResponse", json=sbst_response([False] * 8, "very-much", subject={"reference": subject}), headers=FHIR_JSON)).json()
    for _ in range(2):
        result = await extract(client, f"/QuestionnaireResponse/{created['id']}/$extract", persist="true")
        assert result.status_code == 200
        parameters = {p["name"]: p["resource"] for p in result.json()["parameter"]}
        assert parameters["transaction"]["type"] == "transaction-response"
    found = (await client.get("/Observation", params={"subject": subject, "code": "http://loinc.org|91351-7"})).json()
    assert [e["resource"]["valueInteger"] for e in found["entry"]] == [1]
    derived = (await client.get("/Observation", params={"derived-from": f"QuestionnaireResponse/{created['id']}"})).json()
    assert derived["total"] == 3 if "total" in derived else len(derived["entry"]) == 3


async def test_extract_at_type_level_with_persist_stores_the_response_and_its_observations(client: httpx.AsyncClient) -> None:
    subject = await new_patient(client)
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "questionnaire-response", "resource": sbst_response([True] * 8, "not-at-all", subject={"reference": subject})},
        {"name": "persist", "valueBoolean": True}]}
    result = await extract(client, "/QuestionnaireResponse/$extract", body)
    assert result.status_code == 200, result.text
    responses = (await client.get("/QuestionnaireResponse", params={"subject": subject})).json()["entry"]
    assert len(responses) == 1
    assert scores(responses[0]["resource"])["total-score"] == {"valueInteger": 8}
    risk = (await client.get("/Observation", params={"subject": subject, "code": "http://loinc.org|91352-5"})).json()["entry"]
    assert risk[0]["resource"]["valueCodeableConcept"]["coding"][0]["code"] == "LA9193-9"  # distress 4: high
    assert risk[0]["resource"]["derivedFrom"] == [{"reference": f"QuestionnaireResponse/{responses[0]['resource']['id']}"}]


async def test_the_questionnaire_can_ask_for_persisting(client: httpx.AsyncClient) -> None:
    questionnaire = (await client.get("/Questionnaire/start-back")).json()
    url = f"http://example.org/{unique('persisting')}"
    copy = {k: v for k, v in questionnaire.items() if k not in ("id", "meta")}
    copy["url"] = url
    copy["extension"].append({"url": "http://backpath.dev/fhir/StructureDefinition/questionnaire-extract-persist", "valueBoolean": True})
    assert (await client.post("/Questionnaire", json=copy, headers=FHIR_JSON)).status_code == 201
    subject = await new_patient(client)
    created = (await client.post("/QuestionnaireResponse", json=sbst_response([True] * 8, "extremely", questionnaire=url, subject={"reference": subject}), headers=FHIR_JSON)).json()
    assert (await extract(client, f"/QuestionnaireResponse/{created['id']}/$extract")).status_code == 200
    assert len((await client.get("/Observation", params={"subject": subject})).json()["entry"]) == 3


async def test_extract_of_an_invalid_response_is_422_and_of_an_unknown_one_404(client: httpx.AsyncClient) -> None:
    body = {"resourceType": "Parameters", "parameter": [{"name": "questionnaire-response", "resource": {**sbst_response([True] * 8, "x")}}]}
    refused = await extract(client, "/QuestionnaireResponse/$extract", body)
    assert refused.status_code == 422
    assert refused.json()["issue"][0]["expression"] == ["QuestionnaireResponse.item.where(linkId='9')"]
    assert (await extract(client, f"/QuestionnaireResponse/{unique()}/$extract")).status_code == 404
    assert (await extract(client, "/QuestionnaireResponse/$extract", {"resourceType": "Parameters"})).status_code == 400


async def test_populate_carries_the_episode_over_from_the_previous_assessment(client: httpx.AsyncClient) -> None:
    subject = await new_patient(client)
    first = lbp_assessment({"episode-start": {"valueDate": "2026-10-05"}, "episode-type": lbp_code("first"), "course": lbp_code("worse"),
                            "mr-done": {"valueBoolean": True}}, subject={"reference": subject}, authored="2026-10-05T09:00:00Z")
    later = lbp_assessment({"episode-start": {"valueDate": "2026-10-19"}, "episode-type": lbp_code("recurrent")},
                           subject={"reference": subject}, authored="2026-10-19T09:00:00Z")
    for body in (first, later):
        assert (await client.post("/QuestionnaireResponse", json=body, headers=FHIR_JSON)).status_code == 201
    other = await new_patient(client)
    await client.post("/QuestionnaireResponse", json=lbp_assessment({"episode-start": {"valueDate": "2020-01-01"}}, subject={"reference": other},
                                                                     authored="2026-11-01T09:00:00Z"), headers=FHIR_JSON)
    result = await client.post("/Questionnaire/lbp-assessment/$populate", headers=FHIR_JSON,
                               json={"resourceType": "Parameters", "parameter": [{"name": "subject", "valueReference": {"reference": subject}}]})
    assert result.status_code == 200, result.text
    parameters = {p["name"]: p["resource"] for p in result.json()["parameter"]}
    assert set(parameters) == {"response"}, parameters.get("issues")
    response = parameters["response"]
    answered = {i["linkId"]: i["answer"] for i in response["item"] if i.get("answer")}
    assert answered == {"episode-start": [{"valueDate": "2026-10-19"}],
                        "episode-type": [{"valueCoding": {"system": "http://backpath.dev/fhir/CodeSystem/lbp-assessment-answer", "code": "recurrent"}}]}
    assert response["subject"] == {"reference": subject} and response["questionnaire"].startswith(LBP_URL)
    response["status"] = "completed"
    assert (await client.post("/QuestionnaireResponse", json=response, headers=FHIR_JSON)).status_code == 201


async def test_populate_at_type_level_by_canonical_and_its_errors(client: httpx.AsyncClient) -> None:
    subject = await new_patient(client)
    result = await client.get("/Questionnaire/$populate", params={"questionnaire": LBP_URL, "subject": subject})
    assert result.status_code == 200
    assert not [i for i in result.json()["parameter"][0]["resource"]["item"] if i.get("answer")]
    assert (await client.get("/Questionnaire/$populate", params={"subject": subject})).status_code == 400
    assert (await client.get("/Questionnaire/$populate", params={"questionnaire": "http://example.org/none"})).status_code == 404
    missing = await client.get("/Questionnaire/$populate", params={"questionnaire": LBP_URL, "subject": f"Patient/{unique()}"})
    assert missing.status_code == 404
    no_patient = (await client.get("/Questionnaire/$populate", params={"questionnaire": SBST_URL})).json()
    assert no_patient["parameter"][0]["resource"]["status"] == "in-progress"


async def test_a_response_is_found_by_its_questionnaire(client: httpx.AsyncClient) -> None:
    subject = await new_patient(client)
    await client.post("/QuestionnaireResponse", json=sbst_response([True] * 8, "extremely", subject={"reference": subject}), headers=FHIR_JSON)
    found = (await client.get(f"/QuestionnaireResponse?questionnaire={quote(SBST_URL)}&subject={subject}")).json()
    assert len(found["entry"]) == 1
