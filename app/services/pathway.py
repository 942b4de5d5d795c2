"""PlanDefinition/$apply (R4 CarePlan), PlanDefinition/$r5.apply (CPG Bundle) and
ActivityDefinition/$apply.

Spec: https://hl7.org/fhir/R4/plandefinition-operation-apply.html,
https://hl7.org/fhir/uv/cpg/OperationDefinition-cpg-plandefinition-apply.html,
https://hl7.org/fhir/R4/activitydefinition-operation-apply.html.

The use case gathers what the pure engine (`app.pathway`) needs inside one read transaction — the
definition, the subject's data (the `data` Bundle and, with `useServerData`, the stored Patient,
SBST and assessment responses and score Observations), and every artifact the definition points to
by canonical URL — then applies it. `$apply` is transient: it writes nothing. CDS Hooks calls the
same use case (`apply_pathway`) with the data of its prefetch.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import replace
from datetime import UTC
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from app.fhir.outcome import ErrorCategory, FhirError
from app.pathway.apply import (
    ApplyInput,
    Artifacts,
    PlanResult,
    apply_activity,
    apply_plan_definition,
    referenced_definitions,
)
from app.pathway.facts import LOINC, SBST_CODES, pathway_input
from app.pathway.parameters import ApplyParameters, parse_apply_parameters
from app.pathway.render import care_plan, request_bundle
from app.pathway.translation import language_of
from app.security.access import TRUSTED, Access
from app.services import resources
from app.services.context import FhirContext
from app.services.definitions import DEFINITION_TYPES, definition_cache
from app.services.operations import Operation, OperationCall, OperationResult
from app.services.permissions import check_stored
from app.services.search import search_in
from app.storage.repository import StoreSession

__all__ = ["ACTIVITY_DEFINITION_APPLY", "PLAN_DEFINITION_APPLY", "PLAN_DEFINITION_R5_APPLY", "apply_pathway"]

# The base of the searchsets read here; they never leave the server.
_INTERNAL_BASE = "urn:backpath:pathway"
_TYPE_IN_URL = re.compile(r"/(PlanDefinition|ActivityDefinition|Questionnaire)/")
_PAGE, _MAX_PAGES = "200", 25  # a subject's stored responses / score Observations, read in full up to 5,000


class _Reads:
    """One read transaction for the whole call, opened on first use: a call whose plan and
    definitions are cached and whose data is supplied never touches the database. The patient data
    it reads is held to the caller's `access`; definitions are content anyone applying may use."""

    def __init__(self, context: FhirContext, access: Access) -> None:
        self._context = context
        self.access = access
        # Taken before any read: a cache clear after it means what this call read may be stale.
        self.generation = definition_cache(context).generation
        self._stack = contextlib.AsyncExitStack()
        self._session: StoreSession | None = None

    async def session(self) -> StoreSession:
        if self._session is None:
            self._session = await self._stack.enter_async_context(self._context.store.reading())
        return self._session

    async def __aenter__(self) -> _Reads:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()


async def apply_pathway(
    context: FhirContext, params: ApplyParameters, plan_id: str | None = None, access: Access = TRUSTED
) -> PlanResult:
    """Apply a PlanDefinition (stored `plan_id`, else the one `params` give) for the first subject,
    reading only what `access` may: the computed result, not yet rendered. R4 `$apply` and the CDS
    Hooks services both run this."""
    async with _Reads(context, access) as reads:
        plan = await _definition(reads, context, plan_id, params, "PlanDefinition", "planDefinition")
        return await _apply_for(reads, context, plan, params, params.subjects[0])


async def apply_plan(context: FhirContext, call: OperationCall) -> OperationResult:
    """R4 `$apply`: one subject, a CarePlan."""
    params = parse_apply_parameters(call.body, call.query, "planDefinition")
    if len(params.subjects) > 1:
        raise FhirError(ErrorCategory.INVALID_PARAMETER, "R4 $apply returns one CarePlan: give one subject (or use $r5.apply)", ("subject",))
    return OperationResult(care_plan(await apply_pathway(context, params, call.resource_id, call.access)))


async def apply_plan_r5(context: FhirContext, call: OperationCall) -> OperationResult:
    """CPG `$apply` (`$r5.apply`): a Bundle per subject (a Parameters of them for several)."""
    params = parse_apply_parameters(call.body, call.query, "planDefinition")
    async with _Reads(context, call.access) as reads:
        plan = await _definition(reads, context, call.resource_id, params, "PlanDefinition", "planDefinition")
        bundles = [request_bundle(await _apply_for(reads, context, plan, params, s)) for s in params.subjects]
    if len(bundles) == 1:
        return OperationResult(bundles[0])
    return OperationResult({"resourceType": "Parameters", "parameter": [{"name": "return", "resource": b} for b in bundles]})


async def apply_activity_definition(context: FhirContext, call: OperationCall) -> OperationResult:
    """ActivityDefinition/$apply: the resource it describes; 422 when the definition cannot be applied."""
    params = parse_apply_parameters(call.body, call.query, "activityDefinition")
    if len(params.subjects) > 1:
        raise FhirError(ErrorCategory.INVALID_PARAMETER, "ActivityDefinition/$apply takes one subject", ("subject",))
    async with _Reads(context, call.access) as reads:
        definition = await _definition(reads, context, call.resource_id, params, "ActivityDefinition", "activityDefinition")
        request = await _apply_input(reads, context, params, params.subjects[0], Artifacts())
    resource, issues = apply_activity(definition, request)
    if resource is None:
        raise FhirError(ErrorCategory.INVALID_RESOURCE, "The ActivityDefinition cannot be applied", issues=issues)
    return OperationResult(resource)


async def _apply_for(reads: _Reads, context: FhirContext, plan: dict[str, Any], params: ApplyParameters, subject: str) -> PlanResult:
    artifacts = await _artifacts(reads, context, plan, params)
    request = await _apply_input(reads, context, params, subject, artifacts)
    result = apply_plan_definition(plan, request)
    return replace(result, issues=(*params.warnings, *result.issues))


async def _apply_input(
    reads: _Reads, context: FhirContext, params: ApplyParameters, subject: str, artifacts: Artifacts
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
                stored = await _read(reads, context, reference)
                if stored is not None:
                    known[reference] = stored
        found += [r for r in await _subject_data(reads, context, subject) if f"{r['resourceType']}/{r.get('id')}" not in known]
    if subject not in known:
        raise FhirError(ErrorCategory.NOT_FOUND, f"The subject {subject} is neither in 'data' nor stored", ("subject",))
    return pathway_input(
        subject,
        known,
        found,
        context.clock().replace(tzinfo=UTC),
        artifacts,
        params.parameters,
        context_parameters=params.context,
        encounter=params.encounter,
        practitioner=params.practitioner,
        organization=params.organization,
        language=language_of(params.context.get("userLanguage")),
        event=params.event,
    )


async def _subject_data(reads: _Reads, context: FhirContext, subject: str) -> list[dict[str, Any]]:
    """The stored resources the pathway facts come from: the subject's QuestionnaireResponses and
    SBST score Observations. Only the subject narrows the search (the index makes that cheap at any
    store size; a canonical `questionnaire` criterion or `_sort` would not), every page is read, and
    the facts pick the SBST / assessment responses and the latest values themselves."""
    if not subject.startswith("Patient/"):
        return []
    codes = ",".join(f"{LOINC}|{code}" for code in SBST_CODES)
    responses = await _search_all(reads, context, "QuestionnaireResponse", [("subject", subject)])
    observations = await _search_all(reads, context, "Observation", [("subject", subject), ("code", codes)])
    return [*responses, *observations]


async def _definition(
    reads: _Reads, context: FhirContext, resource_id: str | None, params: ApplyParameters, resource_type: str, parameter: str
) -> dict[str, Any]:
    """The definition to apply: the instance, the `parameter` resource, or the one `url` names."""
    if resource_id is not None:
        if params.definition is not None or params.url is not None:
            raise FhirError(ErrorCategory.INVALID_PARAMETER, f"At instance level, '{parameter}' and 'url' are not allowed", (parameter,))
        key, cache = f"{resource_type}/{resource_id}", definition_cache(context)
        cached = cache.get(key)
        if cached is None:
            stored = await resources.read_in(await reads.session(), resource_type, resource_id)
            cached = orjson.loads(stored.content or b"{}")
            cache.put(key, cached, reads.generation)
        return dict(cached)
    if (params.definition is None) == (params.url is None):
        raise FhirError(ErrorCategory.INVALID_PARAMETER, f"Give either '{parameter}' or 'url' (and optionally 'version')", (parameter,))
    if params.definition is not None:
        return params.definition
    url = str(params.url)
    canonical = f"{url}|{params.version}" if params.version else url
    key, cache = f"{resource_type}?{canonical}", definition_cache(context)
    found = cache.get(key)
    if found is None:
        found = Artifacts(tuple(await _by_url(reads, context, resource_type, canonical))).find(canonical)
        if found is not None:
            cache.put(key, found, reads.generation)
    if found is None:
        raise FhirError(ErrorCategory.NOT_FOUND, f"No {resource_type} has the url {canonical}", ("url",))
    return dict(found)


async def _artifacts(reads: _Reads, context: FhirContext, plan: dict[str, Any], params: ApplyParameters) -> Artifacts:
    """Every definition reachable from `plan` by canonical URL: from `data`, else from the cache or
    the store, one search per resource type and level of nesting (`url=a,b,c`)."""
    supplied = Artifacts(tuple(r for r in params.data if r.get("resourceType") in DEFINITION_TYPES and r.get("url")))
    cache = definition_cache(context)
    collected: list[dict[str, Any]] = []
    pending, seen = referenced_definitions(plan), set()
    while pending:
        seen |= pending
        cached = {c: cache.get(c) for c in pending if supplied.find(c) is None}
        wanted = sorted(c for c, hit in cached.items() if hit is None)
        found = [*supplied.resources, *(hit for hit in cached.values() if hit is not None)]
        for resource_type in DEFINITION_TYPES:
            urls = [c for c in wanted if (m := _TYPE_IN_URL.search(c)) is None or m.group(1) == resource_type]
            plain = sorted({c for c in urls if "|" not in c})
            if plain:
                found += await _search(reads, context, resource_type, [("url", ",".join(plain)), ("_total", "none"), ("_count", "1000")])
            for canonical in (c for c in urls if "|" in c):
                found += await _by_url(reads, context, resource_type, canonical)
        candidates = Artifacts(tuple(found))
        pending = set()
        for canonical in sorted(seen - {str(r.get("url")) for r in collected}):
            artifact = candidates.find(canonical)
            if artifact is not None and artifact not in collected:
                if supplied.find(canonical) is None:
                    cache.put(canonical, artifact, reads.generation)
                collected.append(dict(artifact))
                if artifact.get("resourceType") == "PlanDefinition":
                    pending |= referenced_definitions(artifact) - seen
    return Artifacts(tuple(collected))


async def _by_url(reads: _Reads, context: FhirContext, resource_type: str, canonical: str) -> list[dict[str, Any]]:
    url, _, version = canonical.partition("|")
    query = [("url", url), *([("version", version)] if version else [])]
    return await _search(reads, context, resource_type, query)


async def _search_all(reads: _Reads, context: FhirContext, resource_type: str, query: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Every match, page by page (at most `_MAX_PAGES` of `_PAGE`: a subject's own data)."""
    found: list[dict[str, Any]] = []
    cursor: list[tuple[str, str]] = []
    for _ in range(_MAX_PAGES):
        bundle = await _bundle(reads, context, resource_type, [*query, ("_count", _PAGE), ("_total", "none"), *cursor], reads.access)
        found += _matches(bundle)
        next_url = next((link["url"] for link in bundle.get("link") or [] if link.get("relation") == "next"), None)
        if next_url is None:
            break
        cursor = [(k, v) for k, v in parse_qsl(urlsplit(next_url).query) if k == "_cursor"]
    return found


async def _bundle(
    reads: _Reads, context: FhirContext, resource_type: str, query: list[tuple[str, str]], access: Access = TRUSTED
) -> dict[str, Any]:
    searched = await search_in(await reads.session(), context, _INTERNAL_BASE, resource_type, query, access=access)
    found: dict[str, Any] = orjson.loads(orjson.dumps(searched))
    return found


def _matches(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry") or [] if (e.get("search") or {}).get("mode") == "match"]


async def _search(reads: _Reads, context: FhirContext, resource_type: str, query: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return _matches(await _bundle(reads, context, resource_type, query))


async def _read(reads: _Reads, context: FhirContext, reference: str) -> dict[str, Any] | None:
    """The resource `reference` names (None when not stored); 403 when the caller may not read it."""
    resource_type, _, resource_id = reference.partition("/")
    reads.access.require("r", resource_type)
    try:
        stored = await resources.read_in(await reads.session(), resource_type, resource_id)
    except FhirError as error:
        if error.category in (ErrorCategory.NOT_FOUND, ErrorCategory.GONE):
            return None
        raise
    check_stored(context, reads.access, stored, "r")
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
