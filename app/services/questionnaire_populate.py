"""`Questionnaire/$populate`, at type and instance level.

Spec: https://hl7.org/fhir/uv/sdc/OperationDefinition-Questionnaire-populate.html. The service
gathers what the Questionnaire's expressions need (the subject as the `patient` launch context,
`context` parameters, the results of its x-fhir-query variables, run here); the domain code
evaluates. Returns a Parameters with `response` (and `issues` when there are any).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson

from app.fhir.models import validate_resource
from app.fhir.outcome import ErrorCategory, FhirError, operation_outcome
from app.questionnaire.populate import populate_response, population_queries
from app.services import resources
from app.services.context import FhirContext
from app.services.operations import Operation, OperationCall, OperationResult
from app.services.parameters import OperationInput, operation_input
from app.services.permissions import check_stored
from app.services.questionnaires import find_in, resolve_questionnaire_in, terminology_in
from app.services.stored import format_instant
from app.storage.repository import StoreSession

__all__ = ["POPULATE"]

async def populate(context: FhirContext, call: OperationCall) -> OperationResult:
    given = operation_input(call)
    async with context.store.reading() as session:
        questionnaire = await _questionnaire(session, context, call, given)
        subject_reference = given.reference("subject")
        launch: dict[str, Any] = {}
        subject = None
        if subject_reference is not None:
            subject = {"reference": subject_reference}
            launched = await _read(session, context, call, subject_reference)
            launch[launched["resourceType"].lower()] = launched
        for part in given.named("context"):
            name, content = _context_part(part)
            launch[name] = content if isinstance(content, dict) and "resourceType" in content else await _read(session, context, call, str(content))
        queries, issues = population_queries(questionnaire, launch)
        prefetched = {}
        for query in queries:
            try:
                found = await find_in(session, context, query.resource_type, query.params, newest_first=False, access=call.access)
            except FhirError as error:
                issues.append(replace(error.issues[0], severity="warning", diagnostics=f"Variable '{query.name}': {error.diagnostics}"))
                continue
            prefetched[query.name] = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in found]}
        terminology = await terminology_in(session, context, questionnaire)
    response, more = populate_response(
        questionnaire,
        subject=subject,
        launch=launch,
        prefetched=prefetched,
        authored=format_instant(context.clock()),
        terminology=terminology,
    )
    outputs: list[dict[str, Any]] = [{"name": "response", "resource": response}]
    if issues or more:
        outputs.append({"name": "issues", "resource": operation_outcome([*issues, *more])})
    return OperationResult({"resourceType": "Parameters", "parameter": outputs})


async def _questionnaire(session: StoreSession, context: FhirContext, call: OperationCall, given: OperationInput) -> dict[str, Any]:
    if call.resource_id is not None:
        return await _read(session, context, call, f"Questionnaire/{call.resource_id}")
    inline = given.resource("questionnaire")
    if inline is not None:
        return validate_resource(inline, "Questionnaire")
    named = given.reference("questionnaire")
    if named is not None:
        if named.startswith("Questionnaire/"):
            return await _read(session, context, call, named)
        found = await resolve_questionnaire_in(session, context, named)
        if found is None:
            raise FhirError(ErrorCategory.NOT_FOUND, f"The Questionnaire '{named}' is not known here")
        return found
    identifier = given.value("identifier")
    if identifier is not None and isinstance(identifier[1], dict):
        token = f"{identifier[1].get('system', '')}|{identifier[1].get('value', '')}"
        matches = await find_in(session, context, "Questionnaire", [("identifier", token)])
        if matches:
            return matches[0]
        raise FhirError(ErrorCategory.NOT_FOUND, f"No Questionnaire has the identifier {token}")
    raise FhirError(ErrorCategory.INVALID_PARAMETER, "$populate needs a questionnaire (canonical, reference or resource) or an identifier")


async def _read(session: StoreSession, context: FhirContext, call: OperationCall, reference: str) -> dict[str, Any]:
    """The resource `reference` names, if the caller may read it (403 otherwise)."""
    resource_type, _, resource_id = reference.partition("/")
    if not resource_id or "/" in resource_id:
        raise FhirError(ErrorCategory.INVALID_PARAMETER, f"'{reference}' is not a Type/id reference to a resource on this server")
    call.access.require("r", resource_type)
    stored = await resources.read_in(session, resource_type, resource_id)
    check_stored(context, call.access, stored, "r")
    return orjson.loads(stored.content or b"{}")  # type: ignore[no-any-return]


def _context_part(part: dict[str, Any]) -> tuple[str, Any]:
    """(name, resource or reference) of a `context` parameter."""
    name = content = None
    for sub in part.get("part") or []:
        if sub.get("name") == "name":
            name = sub.get("valueString")
        elif sub.get("name") == "content":
            content = sub.get("resource") or (sub.get("valueReference") or {}).get("reference")
    if not isinstance(name, str) or content is None:
        raise FhirError(ErrorCategory.INVALID_PARAMETER, "A context parameter needs a name and a content (resource or reference)")
    return name, content


POPULATE = Operation(
    code="populate",
    definition="http://hl7.org/fhir/uv/sdc/OperationDefinition/Questionnaire-populate",
    resource_types=frozenset({"Questionnaire"}),
    type_level=True,
    instance_level=True,
    system_level=False,
    affects_state=False,
    handler=populate,
    documentation="SDC expression-based population: launchContext, x-fhir-query variables, initialExpression.",
)
