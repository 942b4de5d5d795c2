"""Task/$form-link and the form link as a bearer token, in-process: who gets a link, what the link
may do on the FHIR API (also in development mode, where other callers need no token), and when it is spent."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.factories import FHIR_JSON, patient, sbst_response, unique

LBP_ACTION = "http://backpath.dev/fhir/CodeSystem/lbp-action"


async def _created(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = await client.post(path, json=body, headers=FHIR_JSON)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def _task(patient_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": LBP_ACTION, "code": "sbst-request"}]},
        "focus": {"reference": "Questionnaire/start-back"},
        "for": {"reference": f"Patient/{patient_id}"},
        **fields,
    }


def _token(task: dict[str, Any]) -> str:
    url = next(i["valueUrl"] for i in task["input"] if i["type"]["text"] == "form-link")
    return parse_qs(urlsplit(url).query)["token"][0]


async def test_a_new_sbst_request_gets_a_link_in_the_patients_language(client: httpx.AsyncClient) -> None:
    person = await _created(client, "/Patient", patient(family=unique("F"), communication=[{"language": {"coding": [{"code": "da-DK"}]}}]))
    task = await _created(client, "/Task", _task(person["id"]))
    page = await client.get(urlsplit(next(i["valueUrl"] for i in task["input"] if i["type"]["text"] == "form-link")).path, params={"token": _token(task)})
    assert page.status_code == 200 and '<html lang="da">' in page.text and "Spørgeskema før din aftale" in page.text


async def test_form_link_needs_a_questionnaire_task_for_a_patient_that_is_still_open(client: httpx.AsyncClient) -> None:
    person = await _created(client, "/Patient", patient(family=unique("F")))
    no_questionnaire = await _created(client, "/Task", {**_task(person["id"]), "focus": {"reference": f"Patient/{person['id']}"}})
    not_a_patient = await _created(client, "/Task", {**_task(person["id"]), "for": {"reference": "Group/g1"}})
    done = await _created(client, "/Task", {**_task(person["id"]), "status": "completed"})
    for task in (no_questionnaire, not_a_patient, done):
        answer = await client.post(f"/Task/{task['id']}/$form-link", json={"resourceType": "Parameters"}, headers=FHIR_JSON)
        assert answer.status_code == 400 and answer.json()["resourceType"] == "OperationOutcome", answer.text
        assert "form-link" not in [i["type"]["text"] for i in task.get("input") or []]


async def test_the_link_answers_for_its_patient_only_and_is_spent_by_completing(client: httpx.AsyncClient) -> None:
    person = await _created(client, "/Patient", patient(family=unique("F")))
    other = await _created(client, "/Patient", patient(family=unique("F")))
    task = await _created(client, "/Task", _task(person["id"]))
    link = {"Authorization": f"Bearer {_token(task)}", **FHIR_JSON}
    answers = sbst_response([True] * 8, "very-much", authored="2026-03-01T10:00:00Z")
    assert (await client.post("/QuestionnaireResponse", json={**answers, "subject": {"reference": f"Patient/{other['id']}"}}, headers=link)).status_code == 403
    created = await client.post("/QuestionnaireResponse", json={**answers, "subject": {"reference": f"Patient/{person['id']}"}}, headers=link)
    assert created.status_code == 201
    assert (await client.delete(f"/Task/{task['id']}", headers=link)).status_code == 403
    current = (await client.get(f"/Task/{task['id']}", headers=link)).json()
    for status in ("accepted", "in-progress", "completed"):
        current = {k: v for k, v in current.items() if k != "meta"} | {"status": status}
        stepped = await client.put(f"/Task/{task['id']}", json=current, headers=link)
        assert stepped.status_code == 200, stepped.text
        current = stepped.json()
    spent = await client.get(f"/Task/{task['id']}", headers=link)
    assert spent.status_code == 401 and "used" in spent.json()["issue"][0]["diagnostics"]
    assert "WWW-Authenticate" in spent.headers
