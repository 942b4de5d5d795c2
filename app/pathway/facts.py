"""The named inputs of BackPath's pathways, derived from plain resources (no I/O).

The contract (`../shared/pathways.md`, end; `plandefinitions/README.md`): the latest STarT Back
result from the SBST QuestionnaireResponse's calculated items or the score Observations, the facts
of the latest `lbp-assessment` QuestionnaireResponse by linkId, and derived facts (T0, weeks since
T0, age at T0). Every contract fact is always defined; an unanswered one is empty (unknown).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from app.pathway.apply import ApplyInput, Artifacts

__all__ = [
    "ASSESSMENT_FACTS",
    "ASSESSMENT_QUESTIONNAIRE",
    "CALLER_INPUTS",
    "INPUT_NAMES",
    "SBST_CODES",
    "SBST_QUESTIONNAIRE",
    "pathway_input",
    "pathway_inputs",
]

SBST_QUESTIONNAIRE = "http://backpath.dev/fhir/Questionnaire/start-back"
ASSESSMENT_QUESTIONNAIRE = "http://backpath.dev/fhir/Questionnaire/lbp-assessment"
LOINC = "http://loinc.org"

# Calculated items of the SBST response and the LOINC codes of the score Observations.
_SBST_ITEMS = {"total-score": "sbst-total", "distress-subscale": "sbst-distress", "risk-level": "sbst-risk"}
SBST_CODES = {"91351-7": "sbst-total", "91350-9": "sbst-distress", "91352-5": "sbst-risk"}
# LOINC answer list LL3578-3 (STarT Back risk level).
_RISK = {"LA9194-7": "low", "LA8982-6": "medium", "LA9193-9": "high"}

# The lbp-assessment items of the contract table, in its order.
ASSESSMENT_FACTS = (
    "episode-start",
    "episode-type",
    "pain-duration-weeks",
    "region-of-pain",
    "red-flag-cauda-equina",
    "red-flag-paresis",
    "red-flag-serious-pathology",
    "nerve-root",
    "stenosis",
    "course",
    "considerable-impairment",
    "health-function-complexity",
    "contextual-complexity",
    "sick-leave",
    "mr-done",
    "options-exhausted",
    "diagnostically-clarified",
    "multidisciplinary-need",
)

# Named inputs the caller supplies — CDS Hooks from the hook context and prefetch, `$apply` through
# `parameters` — and that are empty when it does not: the draft orders of an order-select /
# order-sign call, the subject's open ServiceRequests and Tasks, and its active Conditions.
CALLER_INPUTS = ("draft-orders", "open-requests", "conditions")

_SBST_INPUTS = ("sbst", "sbst-date", *SBST_CODES.values())
_DERIVED = ("today", "t0", "days-since-t0", "weeks-since-t0", "age", "age-at-t0")
INPUT_NAMES = frozenset({*_SBST_INPUTS, *ASSESSMENT_FACTS, "lbp-assessment", "assessment-date", *_DERIVED})

_FINAL_RESPONSE = frozenset({"completed", "amended"})
_FINAL_OBSERVATION = frozenset({"final", "amended", "corrected"})


@dataclass(frozen=True)
class _Dated:
    when: str
    value: Any


def pathway_input(
    subject: str,
    known: Mapping[str, Mapping[str, Any]],
    resources: Iterable[Mapping[str, Any]],
    now: datetime,
    artifacts: Artifacts | None = None,
    parameters: Mapping[str, Any] | None = None,
    **options: Any,
) -> ApplyInput:
    """The frozen request of one BackPath `$apply`: the named inputs derived from `resources`,
    `known` resources by `Type/id` (subject, encounter, practitioner, organization), the clock
    read once, and timing anchored at T0 when it is known. `options` are further ApplyInput fields
    (encounter, practitioner, organization, context_parameters, language, event)."""
    today = now.date()
    patient = known.get(subject) if subject.startswith("Patient/") else None
    caller: dict[str, Any] = {name: [] for name in CALLER_INPUTS}
    inputs = {**caller, **pathway_inputs(subject, patient, list(resources), today), **(parameters or {})}
    t0 = inputs.get("t0")
    return ApplyInput(
        subject=subject,
        today=today,
        now=now,
        artifacts=artifacts or Artifacts(),
        resources=known,
        named_inputs=inputs,
        anchor=date.fromisoformat(t0) if isinstance(t0, str) else None,
        **options,
    )


def pathway_inputs(subject: str, patient: Mapping[str, Any] | None, resources: Iterable[Mapping[str, Any]], today: date) -> dict[str, Any]:
    """Every named input for `subject` ("Patient/123"), from the resources known for it.

    `resources` may hold anything (the `data` Bundle and the stored resources); only those about
    the subject are read. Values are FHIRPath-ready: codes as strings, unknown as [].
    """
    responses = [r for r in resources if r.get("resourceType") == "QuestionnaireResponse" and _about(r, subject)]
    observations = [r for r in resources if r.get("resourceType") == "Observation" and _about(r, subject)]
    inputs: dict[str, Any] = {}
    inputs.update(_sbst(responses, observations))
    inputs.update(_assessment(responses))
    inputs.update(_derived(inputs, patient, today))
    return inputs


def _sbst(responses: Sequence[Mapping[str, Any]], observations: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """`sbst-total`, `sbst-distress`, `sbst-risk` (low/medium/high): each the latest value found in
    an SBST response or a score Observation; `sbst` is the latest response, `sbst-date` its date."""
    latest: dict[str, _Dated] = {}

    def offer(name: str, when: str, value: Any) -> None:
        if value is not None and (name not in latest or when >= latest[name].when):
            latest[name] = _Dated(when, value)

    sbst_responses = _latest_first(r for r in responses if _answers(r, SBST_QUESTIONNAIRE))
    for response in reversed(sbst_responses):
        when = str(response.get("authored") or "")
        for item in _items(response):
            name = _SBST_ITEMS.get(item.get("linkId", ""))
            if name:
                offer(name, when, _sbst_value(name, _answer_value(item)))
    for observation in observations:
        if observation.get("status") not in _FINAL_OBSERVATION:
            continue
        when = str(observation.get("effectiveDateTime") or observation.get("issued") or "")
        for coding in (observation.get("code") or {}).get("coding") or []:
            name = SBST_CODES.get(coding.get("code", "")) if coding.get("system") == LOINC else None
            if name:
                offer(name, when, _sbst_value(name, _observation_value(observation)))
    inputs: dict[str, Any] = {name: (latest[name].value if name in latest else []) for name in SBST_CODES.values()}
    inputs["sbst"] = sbst_responses[0] if sbst_responses else []
    dates = [d.when for d in latest.values() if d.when]
    inputs["sbst-date"] = max(dates)[:10] if dates else []
    return inputs


def _assessment(responses: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The contract facts from the latest assessment; T0 may come from an earlier one of the
    subject's assessments when the latest does not repeat it (T0 belongs to the episode)."""
    assessments = _latest_first(r for r in responses if _answers(r, ASSESSMENT_QUESTIONNAIRE))
    inputs: dict[str, Any] = {key: [] for key in ASSESSMENT_FACTS}
    inputs["lbp-assessment"] = assessments[0] if assessments else []
    if not assessments:
        return {**inputs, "assessment-date": []}
    inputs["assessment-date"] = str(assessments[0].get("authored") or "")[:10] or []
    for item in _items(assessments[0]):
        link_id = item.get("linkId")
        if isinstance(link_id, str) and item.get("answer"):
            inputs[link_id] = _fact_value(item)
    if inputs["episode-start"] == []:
        for earlier in assessments[1:]:
            start = next((_fact_value(i) for i in _items(earlier) if i.get("linkId") == "episode-start" and i.get("answer")), None)
            if start is not None:
                inputs["episode-start"] = start
                break
    return inputs


def _derived(inputs: Mapping[str, Any], patient: Mapping[str, Any] | None, today: date) -> dict[str, Any]:
    t0 = _date(inputs.get("episode-start"))
    birth = str((patient or {}).get("birthDate") or "")
    derived: dict[str, Any] = {
        "today": today.isoformat(),
        "t0": t0.isoformat() if t0 else [],
        "days-since-t0": (today - t0).days if t0 else [],
        "weeks-since-t0": (today - t0).days // 7 if t0 else [],
        "age": _age(birth, today),
        "age-at-t0": _age(birth, t0) if t0 else [],
    }
    return derived


def _age(birth: str, on: date) -> Any:
    """Full years on `on`; with a partial birth date, only when every possible day gives the same."""
    if not birth:
        return []
    parts = birth[:10].split("-")
    try:
        year = int(parts[0])
        months = [int(parts[1])] if len(parts) > 1 else list(range(1, 13))
        days = [int(parts[2])] if len(parts) > 2 else [1, 31]
    except ValueError:
        return []
    ages = {on.year - year - ((on.month, on.day) < (month, day)) for month in months for day in days}
    return ages.pop() if len(ages) == 1 else []


def _date(value: Any) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _fact_value(item: Mapping[str, Any]) -> Any:
    values = [_answer_value(item, index) for index in range(len(item.get("answer") or []))]
    return values[0] if len(values) == 1 else values


def _answer_value(item: Mapping[str, Any], index: int = 0) -> Any:
    """An answer's value for FHIRPath: a Coding becomes its code, everything else stays as is."""
    answers = item.get("answer") or []
    if len(answers) <= index:
        return None
    for key, value in answers[index].items():
        if key.startswith("value"):
            return value.get("code") if key == "valueCoding" and isinstance(value, dict) else value
    return None


def _observation_value(observation: Mapping[str, Any]) -> Any:
    if "valueInteger" in observation:
        return observation["valueInteger"]
    if "valueQuantity" in observation:
        return (observation["valueQuantity"] or {}).get("value")
    codings = (observation.get("valueCodeableConcept") or {}).get("coding") or []
    return next((c.get("code") for c in codings if c.get("system") == LOINC), None)


def _sbst_value(name: str, value: Any) -> Any:
    if name == "sbst-risk":
        return _RISK.get(value) if isinstance(value, str) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _answers(response: Mapping[str, Any], questionnaire: str) -> bool:
    canonical = str(response.get("questionnaire") or "").split("|")[0]
    return canonical == questionnaire and response.get("status") in _FINAL_RESPONSE


def _latest_first(responses: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(responses, key=lambda r: str(r.get("authored") or ""), reverse=True)


def _items(response: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [i for i in response.get("item") or [] if isinstance(i, dict)]


def _about(resource: Mapping[str, Any], subject: str) -> bool:
    reference = str((resource.get("subject") or {}).get("reference") or "")
    return reference == subject or reference.endswith("/" + subject)
