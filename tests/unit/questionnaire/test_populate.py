"""$populate, the domain part: launch contexts, x-fhir-query variables, initialExpression."""

from __future__ import annotations

from datetime import date
from typing import Any

from app.questionnaire.populate import launch_context_names, populate_response, population_queries

PATIENT = {"resourceType": "Patient", "id": "p7", "birthDate": "1970-06-15"}
SDC = "http://hl7.org/fhir/uv/sdc/StructureDefinition/"


def answers(response: dict[str, Any]) -> dict[str, Any]:
    return {i["linkId"]: i.get("answer") for i in response.get("item", [])}


def previous_assessment(**values: dict[str, Any]) -> dict[str, Any]:
    items = [{"linkId": k.replace("_", "-"), "answer": [v]} for k, v in values.items()]
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {"resourceType": "QuestionnaireResponse", "status": "completed", "item": items}}]}


def test_the_previous_assessment_query_is_filled_in_from_the_patient(lbp: dict[str, Any]) -> None:
    assert launch_context_names(lbp) == {"patient": "Patient"}
    [query], issues = population_queries(lbp, {"patient": PATIENT})
    assert issues == []
    assert (query.name, query.resource_type) == ("previous", "QuestionnaireResponse")
    assert ("subject", "Patient/p7") in query.params
    assert ("questionnaire", "http://backpath.dev/fhir/Questionnaire/lbp-assessment") in query.params


def test_episode_facts_are_carried_over_from_the_previous_assessment(lbp: dict[str, Any]) -> None:
    previous = previous_assessment(
        episode_start={"valueDate": "2026-10-01"},
        mr_done={"valueBoolean": False},
        region_of_pain={"valueCoding": {"system": "http://backpath.dev/fhir/CodeSystem/lbp-assessment-answer", "code": "low-back"}},
        stenosis={"valueBoolean": True},
    )
    response, issues = populate_response(lbp, subject={"reference": "Patient/p7"}, launch={"patient": PATIENT},
                                         prefetched={"previous": previous}, authored="2026-11-30T10:00:00.000Z")
    assert issues == []
    found = answers(response)
    assert found["episode-start"] == [{"valueDate": "2026-10-01"}]
    assert found["region-of-pain"][0]["valueCoding"]["code"] == "low-back"
    assert found["mr-done"] is None  # only an MR that was done carries over
    assert found["stenosis"] is None  # findings are assessed anew
    assert response["status"] == "in-progress" and response["subject"] == {"reference": "Patient/p7"}
    assert response["questionnaire"] == "http://backpath.dev/fhir/Questionnaire/lbp-assessment|1.0.0"
    assert len(response["item"]) == 18


def test_without_a_previous_assessment_nothing_is_prefilled(lbp: dict[str, Any]) -> None:
    empty = {"resourceType": "Bundle", "type": "searchset"}
    response, issues = populate_response(lbp, subject=None, launch={"patient": PATIENT}, prefetched={"previous": empty}, authored="2026-11-30")
    assert issues == [] and not any(answers(response).values())


def test_a_missing_launch_context_is_reported(lbp: dict[str, Any]) -> None:
    _, issues = populate_response(lbp, subject=None, launch={}, prefetched={}, authored="2026-11-30")
    assert any("'patient'" in i.diagnostics for i in issues)


def test_age_from_the_birth_date_and_static_initial_values() -> None:
    age = ("today().toString().substring(0, 4).toInteger() - %patient.birthDate.toString().substring(0, 4).toInteger()"
           " - iif(today().toString().substring(5) < %patient.birthDate.toString().substring(5), 1, 0)")
    questionnaire = {
        "resourceType": "Questionnaire", "status": "active",
        "extension": [{"url": SDC + "sdc-questionnaire-launchContext", "extension": [
            {"url": "name", "valueCoding": {"system": "http://hl7.org/fhir/uv/sdc/CodeSystem/launchContext", "code": "patient"}},
            {"url": "type", "valueCode": "Patient"}]}],
        "item": [
            {"linkId": "age", "type": "integer", "extension": [
                {"url": SDC + "sdc-questionnaire-initialExpression", "valueExpression": {"language": "text/fhirpath", "expression": age}}]},
            {"linkId": "country", "type": "string", "initial": [{"valueString": "NL"}]},
            {"linkId": "about", "type": "group", "item": [{"linkId": "note", "type": "text"}]},
        ],
    }
    response, issues = populate_response(questionnaire, subject=None, launch={"patient": PATIENT}, prefetched={}, authored="2026-11-30")
    today = date.today()
    expected = today.year - 1970 - ((today.month, today.day) < (6, 15))
    assert issues == []
    assert answers(response)["age"] == [{"valueInteger": expected}]
    assert answers(response)["country"] == [{"valueString": "NL"}]
    assert response["item"][2] == {"linkId": "about", "item": [{"linkId": "note"}]}
