"""QuestionnaireResponses against their Questionnaires: resolving the Questionnaire by canonical,
and the write hook that scores and validates every create and update.

Spec: https://hl7.org/fhir/uv/sdc/ (scoring, validation) and https://hl7.org/fhir/R4/references.html#canonical.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from app.fhir.outcome import ErrorCategory, FhirError, Issue
from app.fhir.search_query import parse_search
from app.questionnaire.expressions import Terminology
from app.questionnaire.submission import Submission, process_submission
from app.security.access import TRUSTED, Access
from app.security.compartment import restrict_search
from app.services.context import FhirContext, HookResult
from app.storage.repository import StoredVersion, StoreSession

__all__ = ["find_in", "resolve_questionnaire_in", "score_questionnaire_response", "submit_in", "terminology_in"]


async def find_in(
    session: StoreSession,
    context: FhirContext,
    resource_type: str,
    params: Sequence[tuple[str, str]],
    *,
    newest_first: bool = True,
    access: Access = TRUSTED,
) -> list[dict[str, Any]]:
    """The first page of what a search finds (plain dicts) within what `access` may search, newest
    first unless the search sorts itself; an unknown parameter is an error, never ignored."""
    sort = [("_sort", "-_lastUpdated")] if newest_first and not any(name == "_sort" for name, _ in params) else []
    query = parse_search(
        resource_type, [*params, *sort], context.search_parameters, default_count=10, max_count=context.max_count, strict=True
    )
    page = await session.search(restrict_search(query, access))
    return [orjson.loads(match.content or b"{}") for match in page.matches]


async def resolve_questionnaire_in(
    session: StoreSession, context: FhirContext, canonical: str, response: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The Questionnaire `canonical` ("url" or "url|version", or "#id" of one contained in
    `response`) names; the most recently stored when several share the url; None when unknown."""
    if canonical.startswith("#") and response is not None:
        return next(
            (c for c in response.get("contained") or [] if c.get("resourceType") == "Questionnaire" and c.get("id") == canonical[1:]),
            None,
        )
    url, _, version = canonical.partition("|")
    params = [("url", url)] + ([("version", version)] if version else [])
    found = await find_in(session, context, "Questionnaire", params)
    return found[0] if found else None


async def terminology_in(session: StoreSession, context: FhirContext, questionnaire: dict[str, Any]) -> Terminology:
    """The stored ValueSets the Questionnaire's items bind to and the CodeSystems of their answer
    codes, for answer membership and weights."""
    value_sets: dict[str, dict[str, Any]] = {}
    systems: set[str] = set()

    def visit(items: list[Any]) -> None:
        for item in items:
            if not isinstance(item, dict):
                continue
            bound = item.get("answerValueSet")
            if isinstance(bound, str) and not bound.startswith("#"):
                value_sets[bound] = {}
            systems.update(o["valueCoding"]["system"] for o in item.get("answerOption") or [] if isinstance(o.get("valueCoding"), dict) and "system" in o["valueCoding"])
            visit(item.get("item") or [])

    visit(questionnaire.get("item") or [])
    for url in list(value_sets):
        found = await find_in(session, context, "ValueSet", [("url", url.partition("|")[0])])
        if found:
            value_sets[url] = found[0]
            systems.update(i["system"] for i in (found[0].get("compose") or {}).get("include") or [] if isinstance(i.get("system"), str))
        else:
            del value_sets[url]
    code_systems = {}
    for system in sorted(systems):
        found = await find_in(session, context, "CodeSystem", [("url", system)])
        if found:
            code_systems[system] = found[0]
    return Terminology(value_sets, code_systems)


async def submit_in(session: StoreSession, context: FhirContext, response: dict[str, Any], questionnaire: dict[str, Any]) -> Submission:
    """Score and validate `response` against `questionnaire` with the terminology stored here."""
    return process_submission(questionnaire, response, await terminology_in(session, context, questionnaire))


async def score_questionnaire_response(
    session: StoreSession, context: FhirContext, resource: dict[str, Any], current: StoredVersion | None, access: Access
) -> HookResult:
    """Write hook for QuestionnaireResponse: fill the calculated items and refuse (422, one issue
    per item) a completed or amended response that does not match its Questionnaire."""
    canonical = resource.get("questionnaire")
    if not isinstance(canonical, str):
        return HookResult(resource)
    questionnaire = await resolve_questionnaire_in(session, context, canonical, resource)
    if questionnaire is None:
        note = f"The Questionnaire '{canonical}' is not known here, so the response was stored without validation or scoring"
        return HookResult(resource, (Issue("warning", "not-found", note, ("QuestionnaireResponse.questionnaire",)),))
    submission = await submit_in(session, context, resource, questionnaire)
    if submission.errors:
        raise FhirError(ErrorCategory.INVALID_RESOURCE, f"The response does not match the Questionnaire '{canonical}'", issues=list(submission.errors))
    return HookResult(submission.response, submission.warnings)
