"""Operations as data: each entry names its code, definition, levels and the use case that runs it.

The router dispatches `$name` through this registry and the CapabilityStatement is generated from
it, so an operation is advertised exactly when it can be called. Access is checked here from the
entry, so a new operation is covered without code of its own: the caller needs `r` on the type it
is invoked on (and `c` + `u` when it affects state), or what its `requires` names; on an instance, the instance must be readable;
with a token for one patient, every parameter named in `patient_parameters` must name that patient,
and every patient-data resource in the result must be in that patient's compartment.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from app.fhir.models import RESOURCE_TYPES
from app.fhir.outcome import ErrorCategory, FhirError
from app.security.access import AUDIT_TYPES, NON_PATIENT_TYPES, TRUSTED, Access, Limit
from app.security.compartment import resources_in, visible
from app.services import resources
from app.services.context import FhirContext

__all__ = ["Operation", "OperationCall", "OperationRegistry", "OperationResult"]


@dataclass(frozen=True)
class OperationCall:
    """One invocation: where it was called (type, instance), how, and with what."""

    name: str
    resource_type: str | None
    resource_id: str | None
    method: str
    body: Any
    query: list[tuple[str, str]]
    # What the caller may do; set by `OperationRegistry.invoke`, so handlers that read or write
    # beyond the instance they were called on hold those reads and writes to it too.
    access: Access = TRUSTED


@dataclass(frozen=True)
class OperationResult:
    resource: dict[str, Any]
    status: int = 200


Handler = Callable[[FhirContext, OperationCall], Awaitable[OperationResult]]


@dataclass(frozen=True)
class Operation:
    code: str
    definition: str
    resource_types: frozenset[str] | None  # None: every type
    type_level: bool
    instance_level: bool
    system_level: bool
    affects_state: bool
    handler: Handler
    documentation: str = ""
    # Parameters that name the patient the operation works on (e.g. $apply's `subject`): with a
    # token for one patient they must name that patient. Add a name here when an operation has another.
    patient_parameters: tuple[str, ...] = ("subject", "patient")
    # (permission, type) pairs the caller needs instead of the rule above, for an operation whose
    # writes are the server's own (e.g. $process-message: the sender needs `c` on MessageHeader,
    # not a scope on every type the server files the message's contents under).
    requires: tuple[tuple[str, str], ...] | None = None

    @property
    def permissions(self) -> str:
        return "rcu" if self.affects_state else "r"

    def callable_at(self, resource_type: str | None, instance: bool) -> bool:
        """Whether this operation can be invoked on `resource_type` (None: the system) at that level."""
        if resource_type is None:
            return self.system_level
        if self.resource_types is not None and resource_type not in self.resource_types:
            return False
        return self.instance_level if instance else self.type_level


class OperationRegistry:
    """Operations by code; one code may have several entries for different resource types
    (`PlanDefinition/$apply` and `ActivityDefinition/$apply` are different operations)."""

    def __init__(self, operations: list[Operation]) -> None:
        self.operations = list(operations)

    def find(self, code: str, resource_type: str | None, instance: bool) -> Operation:
        """The operation called `$code` at this level, or 404 when there is none."""
        for operation in self.operations:
            if operation.code == code and operation.callable_at(resource_type, instance):
                return operation
        where = f"{resource_type}{'/[id]' if instance else ''}" if resource_type else "the system"
        raise FhirError(ErrorCategory.NOT_FOUND, f"There is no operation ${code} on {where}")

    async def invoke(self, context: FhirContext, call: OperationCall, access: Access = TRUSTED) -> OperationResult:
        """Run the operation `call` names, held to `access` as the module docstring says."""
        operation = self.find(call.name, call.resource_type, call.resource_id is not None)
        if call.method == "GET" and operation.affects_state:
            raise FhirError(ErrorCategory.METHOD_NOT_ALLOWED, f"${call.name} changes data, so it must be invoked with POST")
        call = replace(call, access=access)
        if access.unrestricted:
            return await operation.handler(context, call)
        if operation.requires is not None:
            for permission, resource_type in operation.requires:
                access.require(permission, resource_type)
        else:
            for permission in operation.permissions:
                if call.resource_type is None:
                    _require_everywhere(access, permission, call.name)
                else:
                    access.require(permission, call.resource_type)
        if call.resource_id is not None and call.resource_type is not None:
            await resources.read(context, call.resource_type, call.resource_id, access)
        if access.restricted_to_patient:
            _require_own_patient(access, operation, call)
        result = await operation.handler(context, call)
        if operation.requires is not None:
            return result  # its answer is the server's own (an acknowledgement), not data read for the caller
        for resource in resources_in(result.resource):
            holds_patient_data = resource["resourceType"] not in (*_CONTAINERS, *NON_PATIENT_TYPES)
            if holds_patient_data and not visible(context.search_parameters, access, resource):
                raise FhirError(ErrorCategory.FORBIDDEN, f"The result of ${call.name} holds {resource['resourceType']} data the access token may not read")
        return result

    def for_type(self, resource_type: str) -> list[Operation]:
        return [
            op
            for op in self.operations
            if op.callable_at(resource_type, instance=False) or op.callable_at(resource_type, instance=True)
        ]

    def system_operations(self) -> list[Operation]:
        return [op for op in self.operations if op.system_level]


_CONTAINERS = ("Bundle", "Parameters", "OperationOutcome")


def _require_everywhere(access: Access, permission: str, name: str) -> None:
    """A system-level operation may touch any type: it needs the permission on every one."""
    if any(access.limit(permission, t) is not Limit.ANY for t in RESOURCE_TYPES - AUDIT_TYPES):
        raise FhirError(ErrorCategory.FORBIDDEN, f"${name} at system level needs a user/ or system/ scope on every resource type")


def _require_own_patient(access: Access, operation: Operation, call: OperationCall) -> None:
    """Every value of a patient parameter (query or Parameters body) names the token's patient."""
    values = [value for name, value in call.query if name in operation.patient_parameters]
    body = call.body
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        for parameter in body.get("parameter") or []:
            if isinstance(parameter, dict) and parameter.get("name") in operation.patient_parameters:
                values.extend(_named_patients(parameter))
    allowed = {f"Patient/{access.patient}", str(access.patient)}
    for value in values:
        if value not in allowed:
            raise FhirError(ErrorCategory.FORBIDDEN, f"${call.name} may only be called for the patient the access token is for")


def _named_patients(parameter: dict[str, Any]) -> list[str]:
    """Every value a Parameters entry could name a patient by: each value[x] is checked, since the
    operation may read whichever it prefers (a reference, a string, a uri...)."""
    values = [str(v.get("reference", "")) if isinstance(v, dict) and k == "valueReference" else v for k, v in parameter.items() if k.startswith("value")]
    named = [v for v in values if isinstance(v, str)]
    if not named or len(named) < len(values):
        named.append("")  # a value no patient check can read is refused rather than trusted
    return named
