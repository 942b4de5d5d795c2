"""Observation-based extraction: what becomes an Observation, and what it carries."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from app.fhir.models import validate_resource
from app.questionnaire.extract import EXTRACT_IDENTIFIER_SYSTEM, extract_observations
from app.questionnaire.submission import process_submission
from tests.factories import lbp_assessment, lbp_code, sbst_response

AUTHORED = "2026-11-30T09:15:00+01:00"


def ids() -> Any:
    counter = itertools.count(1)
    return lambda: f"00000000-0000-0000-0000-{next(counter):012d}"


def observations(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["resource"]["code"]["coding"][0]["code"]: e for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"}


def test_the_three_sbst_scores_become_observations(start_back: dict[str, Any]) -> None:
    response = sbst_response([True] * 4 + [False] * 4, "very-much", subject={"reference": "Patient/p1"}, authored=AUTHORED,
                             author={"reference": "Practitioner/gp"}, encounter={"reference": "Encounter/e1"})
    scored = process_submission(start_back, response).response
    extraction = extract_observations(start_back, scored, response_reference="QuestionnaireResponse/qr1", new_id=ids())
    validate_resource(extraction.bundle, "Bundle")
    found = observations(extraction.bundle)
    assert set(found) == {"91351-7", "91350-9", "91352-5"}
    total = found["91351-7"]["resource"]
    assert total["valueInteger"] == 5 and found["91350-9"]["resource"]["valueInteger"] == 1
    assert found["91352-5"]["resource"]["valueCodeableConcept"] == {"coding": [{"system": "http://loinc.org", "code": "LA8982-6", "display": "Medium"}]}
    assert total["status"] == "final"
    assert total["subject"] == {"reference": "Patient/p1"} and total["encounter"] == {"reference": "Encounter/e1"}
    assert total["effectiveDateTime"] == AUTHORED and total["issued"] == AUTHORED
    assert total["performer"] == [{"reference": "Practitioner/gp"}]
    assert total["derivedFrom"] == [{"reference": "QuestionnaireResponse/qr1"}]
    assert total["category"][0]["coding"][0]["code"] == "survey"
    assert extraction.bundle["type"] == "transaction" and extraction.issues == ()


def test_a_stored_response_gives_conditional_updates_keyed_by_item(start_back: dict[str, Any]) -> None:
    scored = process_submission(start_back, sbst_response([True] * 8, "extremely", authored="2026-11-30")).response
    entry = observations(extract_observations(start_back, scored, response_reference="QuestionnaireResponse/qr1", new_id=ids()).bundle)["91351-7"]
    assert entry["resource"]["identifier"] == [{"system": EXTRACT_IDENTIFIER_SYSTEM, "value": "QuestionnaireResponse/qr1/total-score/0"}]
    assert entry["request"]["method"] == "PUT"
    assert unquote(entry["request"]["url"]) == f"Observation?identifier={EXTRACT_IDENTIFIER_SYSTEM}|QuestionnaireResponse/qr1/total-score/0"
    assert "issued" not in entry["resource"]  # a date-only authored is no instant


def test_an_unstored_response_can_be_created_by_the_same_transaction(start_back: dict[str, Any]) -> None:
    scored = process_submission(start_back, sbst_response([False] * 8, "slightly")).response
    bundle = extract_observations(start_back, scored, response_reference=None, new_id=ids(), include_response=True).bundle
    first = bundle["entry"][0]
    assert first["request"] == {"method": "POST", "url": "QuestionnaireResponse"}
    assert all(e["resource"]["derivedFrom"] == [{"reference": first["fullUrl"]}] for e in bundle["entry"][1:])
    assert all(e["request"]["method"] == "POST" for e in bundle["entry"][1:])


def test_the_answered_assessment_facts_are_extracted_with_the_local_codes(lbp: dict[str, Any]) -> None:
    response = lbp_assessment({
        "episode-start": {"valueDate": "2026-11-01"},
        "pain-duration-weeks": {"valueInteger": 4},
        "nerve-root": lbp_code("severe"),
        "stenosis": {"valueBoolean": False},
    }, subject={"reference": "Patient/p1"}, authored=AUTHORED)
    scored = process_submission(lbp, response)
    assert scored.errors == ()
    found = observations(extract_observations(lbp, scored.response, response_reference="QuestionnaireResponse/a1", new_id=ids()).bundle)
    assert set(found) == {"episode-start", "pain-duration-weeks", "nerve-root", "stenosis"}
    assert all(e["resource"]["code"]["coding"][0]["system"] == "http://backpath.dev/fhir/CodeSystem/lbp-assessment" for e in found.values())
    assert found["episode-start"]["resource"]["valueDateTime"] == "2026-11-01"
    assert found["pain-duration-weeks"]["resource"]["valueInteger"] == 4
    assert found["stenosis"]["resource"]["valueBoolean"] is False
    assert found["nerve-root"]["resource"]["valueCodeableConcept"]["coding"][0]["code"] == "severe"
    assert found["nerve-root"]["resource"]["category"][0]["coding"][0]["code"] == "exam"


def test_sdc3_marks_on_item_codes_are_honoured(shared_dir: Path) -> None:
    questionnaire = json.loads((shared_dir / "conformance/sdc/Questionnaire-questionnaire-sdc-profile-example-cqf-PHQ9.json").read_text())
    response = {"resourceType": "QuestionnaireResponse", "status": "completed", "subject": {"reference": "Patient/p"},
                "item": [{"linkId": "LittleInterest", "answer": [{"valueCoding": {"system": "http://loinc.org", "code": "LA6568-5"}}]},
                         {"linkId": "TotalScore", "answer": [{"valueInteger": 7}]}]}
    bundle = extract_observations(questionnaire, response, response_reference=None, new_id=ids()).bundle
    [entry] = bundle["entry"]
    assert entry["resource"]["valueInteger"] == 7
    assert entry["resource"]["code"]["coding"] == [{"system": "http://loinc.org", "code": "44261-6"}, {"system": "http://snomed.info/sct", "code": "720433000"}]
    assert entry["resource"]["category"][0]["coding"][0]["code"] == "survey"
    assert "derivedFrom" not in entry["resource"]


def test_nothing_to_extract_is_said(start_back: dict[str, Any]) -> None:
    response = sbst_response([True] * 8, "extremely", status="in-progress")
    response["item"] = response["item"][:2]
    extraction = extract_observations(start_back, response, response_reference=None, new_id=ids())
    assert extraction.bundle["entry"] == []
    assert [i.severity for i in extraction.issues] == ["information"]
