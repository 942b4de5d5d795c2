"""`$validate` at type and instance level. Spec: https://hl7.org/fhir/R4/resource-operation-validate.html

The operation itself succeeds (200) whatever it finds; the findings are the OperationOutcome.
"""

from __future__ import annotations

from typing import Any

from app.fhir.models import validate_resource
from app.fhir.outcome import ErrorCategory, FhirError, Issue, operation_outcome
from app.services import resources
from app.services.context import FhirContext
from app.services.operations import Operation, OperationCall, OperationResult

__all__ = ["VALIDATE"]


async def validate(context: FhirContext, call: OperationCall) -> OperationResult:
    assert call.resource_type is not None  # the registry only routes type and instance calls here
    mode = dict(call.query).get("mode")
    resource = _resource_of(call.body)
    if call.resource_id is not None and (mode == "delete" or resource is None):
        await resources.read(context, call.resource_type, call.resource_id)
        return OperationResult(_outcome([]))
    if resource is None:
        raise FhirError(ErrorCategory.MALFORMED, "$validate needs a resource in the body")
    problems: list[Issue] = []
    try:
        validate_resource(resource, call.resource_type)
        if call.resource_id is not None and resource.get("id") != call.resource_id:
            problems.append(Issue("error", "invalid", "The resource id does not match the URL id", ("id",)))
        if mode == "create" and resource.get("id") is not None:
            problems.append(Issue("warning", "invalid", "A create ignores the id in the body", ("id",)))
    except FhirError as error:
        problems.extend(error.issues)
    return OperationResult(_outcome(problems))


def _resource_of(body: Any) -> Any:
    """The resource itself, or the `resource` parameter of a Parameters body."""
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        for parameter in body.get("parameter") or []:
            if isinstance(parameter, dict) and parameter.get("name") == "resource":
                return parameter.get("resource")
        return None
    return body


def _outcome(problems: list[Issue]) -> dict[str, Any]:
    return operation_outcome(problems or [Issue("information", "informational", "No problems found")])


VALIDATE = Operation(
    code="validate",
    definition="http://hl7.org/fhir/OperationDefinition/Resource-validate",
    resource_types=None,
    type_level=True,
    instance_level=True,
    system_level=False,
    affects_state=False,
    handler=validate,
    documentation="Validates a resource against the R4 model of its type (no profiles yet).",
)
