"""`QuestionnaireResponse/$extract` (observation-based), at type and instance level.

Spec: https://hl7.org/fhir/uv/sdc/OperationDefinition-QuestionnaireResponse-extract.html. BackPath
adds `persist`: with `persist=true`, or when the Questionnaire carries BackPath's
`questionnaire-extract-persist` extension, the Bundle is also executed as one transaction (an
unstored response is then stored with its Observations). The output is the Bundle itself, or a
Parameters with `return`, `issues` and (when persisted) `transaction` when there is more to say.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.fhir.models import validate_resource
from app.fhir.outcome import ErrorCategory, FhirError, operation_outcome
from app.questionnaire.extensions import EXTRACT_PERSIST, extension_value
from app.questionnaire.extract import extract_observations
from app.services import resources
from app.services.context import FhirContext
from app.services.operations import Operation, OperationCall, OperationResult
from app.services.parameters import operation_input
from app.services.questionnaires import resolve_questionnaire_in, submit_in
from app.services.transactions import process_bundle

__all__ = ["EXTRACT"]

# The extracted Bundle holds relative URLs only, so the transaction needs no base URL.
_RELATIVE = ""


async def extract(context: FhirContext, call: OperationCall) -> OperationResult:
    given = operation_input(call)
    response, stored = await _response(context, call, given.resource("questionnaire-response"))
    async with context.store.reading() as session:
        questionnaire = given.resource("questionnaire")
        if questionnaire is not None:
            validate_resource(questionnaire, "Questionnaire")
        else:
            canonical = response.get("questionnaire")
            if not isinstance(canonical, str):
                raise FhirError(ErrorCategory.INVALID_PARAMETER, "The response names no questionnaire, and none was given")
            questionnaire = await resolve_questionnaire_in(session, context, canonical, response)
            if questionnaire is None:
                raise FhirError(ErrorCategory.NOT_FOUND, f"The Questionnaire '{canonical}' is not known here")
        submission = await submit_in(session, context, response, questionnaire)
    if submission.errors:
        raise FhirError(ErrorCategory.INVALID_RESOURCE, "The response does not match its Questionnaire", issues=list(submission.errors))
    persist = given.boolean("persist")
    if persist is None:
        persist = extension_value(questionnaire, EXTRACT_PERSIST) is True
    if persist and call.method == "GET":
        raise FhirError(ErrorCategory.METHOD_NOT_ALLOWED, "$extract that persists changes data, so it must be invoked with POST")
    reference = f"QuestionnaireResponse/{response['id']}" if stored else None
    extraction = extract_observations(
        questionnaire, submission.response, response_reference=reference, new_id=context.new_id, include_response=persist and not stored
    )
    issues = [*submission.warnings, *extraction.issues]
    outputs: list[dict[str, Any]] = [{"name": "return", "resource": extraction.bundle}]
    if issues:
        outputs.append({"name": "issues", "resource": operation_outcome(issues)})
    if persist:
        executed = await process_bundle(context, _RELATIVE, extraction.bundle, return_resources=False, access=call.access)
        outputs.append({"name": "transaction", "resource": executed})
    if len(outputs) == 1:
        return OperationResult(extraction.bundle)
    return OperationResult({"resourceType": "Parameters", "parameter": outputs})


async def _response(context: FhirContext, call: OperationCall, given: dict[str, Any] | None) -> tuple[dict[str, Any], bool]:
    """The response to extract, and whether it is a stored one (instance level) rather than one
    sent in the call (type level, stored only by a persisting extraction)."""
    if call.resource_id is not None:
        stored = await resources.read(context, "QuestionnaireResponse", call.resource_id, call.access)
        return orjson.loads(stored.content or b"{}"), True
    response = given if given is not None else call.body
    if not isinstance(response, dict) or response.get("resourceType") != "QuestionnaireResponse":
        raise FhirError(ErrorCategory.INVALID_PARAMETER, "$extract needs a QuestionnaireResponse: the body or the 'questionnaire-response' parameter")
    return validate_resource(response, "QuestionnaireResponse"), False


EXTRACT = Operation(
    code="extract",
    definition="http://backpath.dev/fhir/OperationDefinition/QuestionnaireResponse-extract",
    resource_types=frozenset({"QuestionnaireResponse"}),
    type_level=True,
    instance_level=True,
    system_level=False,
    affects_state=False,  # unless it persists: then the transaction holds each write to the caller's scopes
    handler=extract,
    documentation="SDC observation-based extraction to a transaction Bundle; persist=true also stores it.",
)
