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


_RISK_CODES = {"low": ("LA9194-7", "Low"), "medium": ("LA8982-6", "Medium"), "high": ("LA9193-9", "High")}


def keele_risk(total: int, distress: int) -> str:
    """The STarT Back risk group (Keele): high if the distress subscale is 4 or more, medium if the
    total is 4 or more, otherwise low."""
    return "high" if distress >= 4 else "medium" if total >= 4 else "low"


def scored_sbst_response(
    subject: str, total: int, distress: int, authored: str = "2026-03-01", risk: str | None = None, **fields: Any
) -> dict[str, Any]:
    """A completed SBST response whose answers give `total` and `distress` (distress <= 5, total -
    distress <= 4), with the calculated items of the contract (`total-score`, `distress-subscale`,
    `risk-level`) filled in as the server computes them; `risk` forces another risk level."""
    if not (0 <= distress <= 5 and 0 <= total - distress <= 4):
        raise ValueError(f"no SBST answers give total {total} with distress {distress}")
    agree = [n <= total - distress for n in range(1, 5)] + [n - 4 <= distress for n in range(5, 9)]
    answered = sbst_response(agree, "very-much" if distress == 5 else "not-at-all")["item"]
    code, display = _RISK_CODES[risk or keele_risk(total, distress)]
    items = [
        *answered,
        {"linkId": "total-score", "answer": [{"valueInteger": total}]},
        {"linkId": "distress-subscale", "answer": [{"valueInteger": distress}]},
        {"linkId": "risk-level", "answer": [{"valueCoding": {"system": "http://loinc.org", "code": code, "display": display}}]},
    ]
    return {**_response(SBST_URL, subject, authored, items), **fields}


def sbst_observation(subject: str, code: str, value: int | str, effective: str = "2026-03-01") -> dict[str, Any]:
    """A score Observation as SBST $extract makes them: 91351-7 / 91350-9 integers, 91352-5 the LA coding
    (give the risk group: low, medium or high)."""
    result = observation(subject, code=code, value=0, effectiveDateTime=effective)
    if code == "91352-5":
        del result["valueInteger"]
        risk_code, display = _RISK_CODES[str(value)]
        result["valueCodeableConcept"] = {"coding": [{"system": "http://loinc.org", "code": risk_code, "display": display}]}
    else:
        result["valueInteger"] = value
    return result


def assessment_response(subject: str, authored: str = "2026-03-02", **answers: Any) -> dict[str, Any]:
    """An lbp-assessment QuestionnaireResponse with the given answers (`red_flag_paresis="none"`
    is linkId `red-flag-paresis`); strings are answer codes, a None answer is left out (unknown)."""
    items = []
    for name, value in answers.items():
        if value is None:
            continue
        link_id = name.replace("_", "-")
        if isinstance(value, bool):
            answer: dict[str, Any] = {"valueBoolean": value}
        elif isinstance(value, int):
            answer = {"valueInteger": value}
        elif link_id == "episode-start":
            answer = {"valueDate": value}
        else:
            answer = {"valueCoding": {"system": LBP_ANSWER, "code": value}}
        items.append({"linkId": link_id, "answer": [answer]})
    return _response(LBP_URL, subject, authored, items)


def _response(questionnaire: str, subject: str, authored: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "QuestionnaireResponse",
        "status": "completed",
        "questionnaire": questionnaire,
        "subject": {"reference": subject},
        "authored": authored,
        "item": items,
    }


def non_specific_answers(episode_start: str, **changes: Any) -> dict[str, Any]:
    """A complete assessment of non-specific low back pain without red flags (every contract fact
    the Questionnaire asks for known), for `assessment_response(subject, **answers)`; `changes` override (None: left unanswered)."""
    answers: dict[str, Any] = {
        "episode_start": episode_start,
        "episode_type": "first",
        "pain_duration_weeks": 2,
        "region_of_pain": "low-back",
        "red_flag_cauda_equina": False,
        "red_flag_paresis": "none",
        "red_flag_serious_pathology": False,
        "nerve_root": "none",
        "stenosis": False,
        "course": "improving",
        "considerable_impairment": False,
        "health_function_complexity": "low",
        "contextual_complexity": "low",
        "sick_leave": "none",
        "mr_done": False,
        "options_exhausted": False,
    }
    answers = {**answers, **changes}
    if int(answers.get("pain_duration_weeks") or 0) > 26:  # lbp-assessment asks these only then
        answers = {"diagnostically_clarified": False, "multidisciplinary_need": False, **answers}
    return answers


def parameters(*entries: tuple[str, Any]) -> dict[str, Any]:
    """A Parameters resource: a dict value is a resource, a str a valueString, a bool a valueBoolean."""
    parameter = []
    for name, value in entries:
        if isinstance(value, dict) and "resourceType" in value:
            parameter.append({"name": name, "resource": value})
        elif isinstance(value, bool):
            parameter.append({"name": name, "valueBoolean": value})
        elif isinstance(value, dict):
            parameter.append({"name": name, **value})
        else:
            parameter.append({"name": name, "valueString": value})
    return {"resourceType": "Parameters", "parameter": parameter}


def collection(*resources: dict[str, Any]) -> dict[str, Any]:
    """A collection Bundle of `resources` (for the `data` parameter)."""
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}
