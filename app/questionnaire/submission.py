"""What happens to a submitted QuestionnaireResponse: calculated items are filled in, then the
result is validated against its Questionnaire.

Spec: https://hl7.org/fhir/uv/sdc/expressions.html and https://hl7.org/fhir/R4/questionnaireresponse.html.
A `completed` or `amended` response must be valid; `in-progress` and `stopped` ones may be
incomplete, so their problems come back as warnings; `entered-in-error` is stored as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.fhir.outcome import Issue
from app.questionnaire.enablement import Enablement
from app.questionnaire.expressions import SdcEnvironment, Terminology
from app.questionnaire.scoring import calculate
from app.questionnaire.tree import QuestionnaireIndex, response_nodes
from app.questionnaire.validation import validate_response

__all__ = ["FINAL_STATUSES", "Submission", "process_submission"]

FINAL_STATUSES = frozenset({"completed", "amended"})


@dataclass(frozen=True)
class Submission:
    """The response to store, the errors that refuse it, and the warnings that go with it."""

    response: dict[str, Any]
    errors: tuple[Issue, ...]
    warnings: tuple[Issue, ...]


def process_submission(
    questionnaire: dict[str, Any],
    response: dict[str, Any],
    terminology: Terminology | None = None,
    launch: Mapping[str, Any] | None = None,
) -> Submission:
    """Score and validate `response` (not changed; the scored copy is returned)."""
    if response.get("status") == "entered-in-error":
        return Submission(response, (), ())
    index = QuestionnaireIndex.of(questionnaire)
    calculated = calculate(index, response, terminology, launch)
    scored = calculated.response
    nodes = response_nodes(index, scored)
    enablement = Enablement(SdcEnvironment(index, scored, terminology, launch), nodes)
    complete = scored.get("status") in FINAL_STATUSES
    problems = validate_response(index, scored, nodes, enablement, terminology, complete=complete)
    errors = tuple(p for p in problems if p.severity == "error")
    warnings = (*calculated.issues, *enablement.issues, *(p for p in problems if p.severity != "error"))
    return Submission(scored, errors, warnings)
