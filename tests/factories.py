"""Small factories for test resources: each call makes distinct data, so tests never collide."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def patient(family: str = "Jansen", **fields: Any) -> dict[str, Any]:
    identifier = fields.pop("identifier", [{"system": "urn:backpath:test", "value": unique("pat")}])
    return {
        "resourceType": "Patient",
        "identifier": identifier,
        "name": [{"family": family, "given": ["Anna"]}],
        "birthDate": "1970-01-01",
        **fields,
    }


def observation(subject: str, code: str = "91351-7", value: int = 5, **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": subject},
        "valueInteger": value,
        **fields,
    }


SBST_URL = "http://backpath.dev/fhir/Questionnaire/start-back"
SBST_ANSWER = "http://backpath.dev/fhir/CodeSystem/sbst-answer"
LBP_URL = "http://backpath.dev/fhir/Questionnaire/lbp-assessment"
LBP_ANSWER = "http://backpath.dev/fhir/CodeSystem/lbp-assessment-answer"


def sbst_response(agree: Sequence[bool], bothersome: str, status: str = "completed", **fields: Any) -> dict[str, Any]:
    """A STarT Back response: items 1-8 agree/disagree as given, item 9 the bothersomeness code."""
    items = [
        {"linkId": str(n), "answer": [{"valueCoding": {"system": SBST_ANSWER, "code": "agree" if yes else "disagree"}}]}
        for n, yes in enumerate(agree, start=1)
    ]
    items.append({"linkId": "9", "answer": [{"valueCoding": {"system": SBST_ANSWER, "code": bothersome}}]})
    return {"resourceType": "QuestionnaireResponse", "questionnaire": SBST_URL, "status": status, "item": items, **fields}


def lbp_assessment(answers: dict[str, dict[str, Any]], status: str = "completed", **fields: Any) -> dict[str, Any]:
    """An LBP assessment response; `answers` maps a linkId to its answer, e.g. {"stenosis": {"valueBoolean": True}}."""
    items = [{"linkId": link_id, "answer": [answer]} for link_id, answer in answers.items()]
    return {"resourceType": "QuestionnaireResponse", "questionnaire": LBP_URL, "status": status, "item": items, **fields}


def lbp_code(code: str) -> dict[str, Any]:
    return {"valueCoding": {"system": LBP_ANSWER, "code": code}}
