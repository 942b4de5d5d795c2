"""PlanDefinition/$apply (R4 CarePlan), PlanDefinition/$r5.apply (CPG Bundle) and
ActivityDefinition/$apply.

Spec: https://hl7.org/fhir/R4/plandefinition-operation-apply.html,
https://hl7.org/fhir/uv/cpg/OperationDefinition-cpg-plandefinition-apply.html,
https://hl7.org/fhir/R4/activitydefinition-operation-apply.html.

The use case gathers what the pure engine (`app.pathway`) needs inside one read transaction — the
definition, the subject's data (the `data` Bundle and, with `useServerData`, the stored Patient,
SBST and assessment responses and score Observations), and every artifact the definition points to
by canonical URL — then applies it. `$apply` is transient: it writes nothing.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, date
from typing import Any

import orjson

from app.fhir.outcome import ErrorCategory, FhirError
from app.pathway.apply import (
    ApplyInput,
    Artifacts,
    apply_activity,
    apply_plan_definition,
    care_plan,
    referenced_definitions,
    request_bundle,
)
from app.pathway.facts import ASSESSMENT_QUESTIONNAIRE, LOINC, SBST_CODES, SBST_QUESTIONNAIRE, pathway_inputs
from app.pathway.parameters import ApplyParameters, parse_apply_parameters
from app.pathway.translation import language_of
from app.services import resources
from app.services.context import FhirContext
from app.services.operations import Operation, OperationCall, OperationResult
from app.services.search import search_in
from app.storage.repository import StoreSession

__all__ = ["ACTIVITY_DEFINITION_APPLY", "PLAN_DEFINITION_APPLY", "PLAN_DEFINITION_R5_APPLY"]

# Searches run with a base that can never prefix a canonical URL (search rewrites its own base).
_INTERNAL_BASE = "urn:backpath:pathway"
_DEFINITION_TYPES = ("PlanDefinition", "ActivityDefinition", "Questionnaire")
_TYPE_IN_URL = re.compile(r"/(PlanDefinition|ActivityDefinition|Questionnaire)/")
_RECENT = "10"  # responses per questionnaire read for the latest result (and an earlier T0)


async def apply_plan(context: FhirContext, call: OperationCall) -> OperationResult:
    """R4 `$apply`: one subject, a CarePlan."""
    params = parse_apply_parameters(call.body, call.query, "planDefinition")
    if len(params.subjects) > 1:
        raise FhirError(ErrorCategory.INVALID_PARAMETER, "R4 $apply returns one CarePlan: give one subject (or use $r5.apply)", ("subject",))
    async with context.store.reading() as session:
        plan = await _plan_definition(session, context, call, params)
        result = await _apply_for(session, context, plan, params, params.subjects[0])
    return OperationResult(care_plan(result))


async def apply_plan_r5(context: FhirContext, call: OperationCall) -> OperationResult:
    """CPG `$apply` (`$r5.apply`): a Bundle per subject (a Parameters of them for several)."""
    params = parse_apply_parameters(call.body, call.query, "planDefinition")
    async with context.store.reading() as session:
        plan = await _plan_definition(session, context, call, params)
        bundles = [request_bundle(await _apply_for(session, context, plan, params, s)) for s in params.subjects]
    if len(bundles) == 1:
        return OperationResult(bundles[0])
    return OperationResult({"resourceType": "Parameters", "parameter": [{"name": "return", "resource": b} for b in bundles]})


async def apply_activity_definition(context: FhirContext, call: OperationCall) -> OperationResult:
    """ActivityDefinition/$apply: the resource it describes; 422 when the definition cannot be applied."""
    params = parse_apply_parameters(call.body, call.query, "activityDefinition")
    if len(params.subjects) > 1:
        raise FhirError(ErrorCategory.INVALID_PARAMETER, "ActivityDefinition/$apply takes one subject", ("subject",))
    async with context.store.reading() as session:
        definition = await _definition(session, context, call, params, "ActivityDefinition", "activityDefinition")
        request = await _apply_input(session, context, params, params.subjects[0], Artifacts())
    resource, issues = apply_activity(definition, request)
    if resource is None:
        raise FhirError(ErrorCategory.INVALID_RESOURCE, "The ActivityDefinition cannot be applied", issues=issues)
    return OperationResult(resource)


async def _apply_for(session: StoreSession, context: FhirContext, plan: dict[str, Any], params: ApplyParameters, subject: str) -> Any:
    artifacts = await _artifacts(session, context, plan, params)
    request = await _apply_input(session, context, params, subject, artifacts)
    result = apply_plan_definition(plan, request)
    return replace(result, issues=(*params.warnings, *result.issues))


async def _apply_input(
    session: StoreSession, context: FhirContext, params: ApplyParameters, subject: str, artifacts: Artifacts
) -> ApplyInput:
    """The frozen request: references resolved, the subject's facts derived, the clock read once."""
    known: dict[str, dict[str, Any]] = {}
    found: list[dict[str, Any]] = list(params.data)
    for resource in params.data:
        if resource.get("id"):
            known.setdefault(f"{resource['resourceType']}/{resource['id']}", resource)
    if params.use_server_data:
        for reference in (subject, params.encounter, params.practitioner, params.organization):
            if reference and reference not in known:
                stored = await _read(session, reference)
                if stored is not None:
                    known[reference] = stored
        found += [r for r in await _subject_data(session, context, subject) if f"{r['resourceType']}/{r.get('id')}" not in known]
    if subject not in known:
        raise FhirError(ErrorCategory.NOT_FOUND, f"The subject {subject} is neither in 'data' nor stored", ("subject",))
    now = context.clock().replace(tzinfo=UTC)
    today = now.date()
    patient = known[subject] if subject.startswith("Patient/") else None
    inputs = {**pathway_inputs(subject, patient, found, today), **params.parameters}
    t0 = inputs.get("t0")
    return ApplyInput(
        subject=subject,
        today=today,
        now=now,
        artifacts=artifacts,
        resources=known,
        named_inputs=inputs,
        context_parameters=params.context,
        encounter=params.encounter,
        practitioner=params.practitioner,
        organization=params.organization,
        language=language_of(params.context.get("userLanguage")),
        anchor=date.fromisoformat(t0) if isinstance(t0, str) else None,
    )


async def _subject_data(session: StoreSession, context: FhirContext, subject: str) -> list[dict[str, Any]]:
    """The stored resources the pathway facts come from: recent SBST and assessment responses and
    SBST score Observations (every search is bounded by the subject, so store size does not matter)."""
    if not subject.startswith("Patient/"):
        return []
    found: list[dict[str, Any]] = []
    for questionnaire in (SBST_QUESTIONNAIRE, ASSESSMENT_QUESTIONNAIRE):
        found += await _search(
            session, context, "QuestionnaireResponse", [("subject", subject), ("questionnaire", questionnaire), ("_sort", "-authored"), ("_count", _RECENT)]
        )
    codes = ",".join(f"{LOINC}|{code}" for code in SBST_CODES)
    found += await _search(session, context, "Observation", [("subject", subject), ("code", codes), ("_sort", "-date"), ("_count", "30")])
    return found


async def _plan_definition(session: StoreSession, context: FhirContext, call: OperationCall, params: ApplyParameters) -> dict[str, Any]:
    return await _definition(session, context, call, params, "PlanDefinition", "planDefinition")


async def _definition(
    session: StoreSession, context: FhirContext, call: OperationCall, params: ApplyParameters, resource_type: str, parameter: str
) -> dict[str, Any]:
    """The definition to apply: the instance, the `parameter` resource, or the one `url` names."""
    if call.resource_id is not None:
        if params.definition is not None or params.url is not None:
            raise FhirError(ErrorCategory.INVALID_PARAMETER, f"At instance level, '{parameter}' and 'url' are not allowed", (parameter,))
        stored = await resources.read_in(session, resource_type, call.resource_id)
        return dict(orjson.loads(stored.content or b"{}"))
    if (params.definition is None) == (params.url is None):
        raise FhirError(ErrorCategory.INVALID_PARAMETER, f"Give either '{parameter}' or 'url' (and optionally 'version')", (parameter,))
    if params.definition is not None:
        return params.definition
    url = str(params.url)
    canonical = f"{url}|{params.version}" if params.version else url
    found = Artifacts(tuple(await _by_url(session, context, resource_type, canonical))).find(canonical)
    if found is None:
        raise FhirError(ErrorCategory.NOT_FOUND, f"No {resource_type} has the url {canonical}", ("url",))
    return dict(found)


async def _artifacts(session: StoreSession, context: FhirContext, plan: dict[str, Any], params: ApplyParameters) -> Artifacts:
    """Every definition reachable from `plan` by canonical URL: from `data`, else from the store."""
    supplied = Artifacts(tuple(r for r in params.data if r.get("resourceType") in _DEFINITION_TYPES and r.get("url")))
    collected: list[dict[str, Any]] = []
    pending, seen = referenced_definitions(plan), set()
    while pending:
        canonical = pending.pop()
        if canonical in seen:
            continue
        seen.add(canonical)
        match = _TYPE_IN_URL.search(canonical)
        candidates = list(supplied.resources)
        if supplied.find(canonical) is None:
            for resource_type in (match.group(1),) if match else _DEFINITION_TYPES:
                candidates += await _by_url(session, context, resource_type, canonical)
        artifact = Artifacts(tuple(candidates)).find(canonical)
        if artifact is not None:
            collected.append(dict(artifact))
            if artifact.get("resourceType") == "PlanDefinition":
                pending |= referenced_definitions(artifact)
    return Artifacts(tuple(collected))


async def _by_url(session: StoreSession, context: FhirContext, resource_type: str, canonical: str) -> list[dict[str, Any]]:
    url, _, version = canonical.partition("|")
    query = [("url", url), *([("version", version)] if version else [])]
    return await _search(session, context, resource_type, query)


async def _search(session: StoreSession, context: FhirContext, resource_type: str, query: list[tuple[str, str]]) -> list[dict[str, Any]]:
    found = orjson.loads(orjson.dumps(await search_in(session, context, _INTERNAL_BASE, resource_type, query)))
    return [e["resource"] for e in found.get("entry") or [] if (e.get("search") or {}).get("mode") == "match"]


async def _read(session: StoreSession, reference: str) -> dict[str, Any] | None:
    resource_type, _, resource_id = reference.partition("/")
    try:
        stored = await resources.read_in(session, resource_type, resource_id)
    except FhirError as error:
        if error.category in (ErrorCategory.NOT_FOUND, ErrorCategory.GONE):
            return None
        raise
    return dict(orjson.loads(stored.content or b"{}"))


PLAN_DEFINITION_APPLY = Operation(
    code="apply",
    definition="http://hl7.org/fhir/OperationDefinition/PlanDefinition-apply",
    resource_types=frozenset({"PlanDefinition"}),
    type_level=True,
    instance_level=True,
    system_level=False,
    affects_state=False,
    handler=apply_plan,
    documentation="Applies a PlanDefinition to a subject: a CarePlan with a RequestGroup and the proposed requests (transient).",
)

PLAN_DEFINITION_R5_APPLY = Operation(
    code="r5.apply",
    definition="http://hl7.org/fhir/uv/cpg/OperationDefinition/cpg-plandefinition-apply",
    resource_types=frozenset({"PlanDefinition"}),
    type_level=True,
    instance_level=True,
    system_level=False,
    affects_state=False,
    handler=apply_plan_r5,
    documentation="CPG-style $apply: a Bundle with the RequestGroup first, then Goals and requests (transient).",
)

ACTIVITY_DEFINITION_APPLY = Operation(
    code="apply",
    definition="http://hl7.org/fhir/OperationDefinition/ActivityDefinition-apply",
    resource_types=frozenset({"ActivityDefinition"}),
    type_level=True,
    instance_level=True,
    system_level=False,
    affects_state=False,
    handler=apply_activity_definition,
    documentation="Applies an ActivityDefinition to a subject: the request resource it describes (transient).",
)
