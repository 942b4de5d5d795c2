"""Operations as data: each entry names its code, definition, levels and the use case that runs it.

The router dispatches `$name` through this registry and the CapabilityStatement is generated from
it, so an operation is advertised exactly when it can be called.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from app.fhir.outcome import ErrorCategory, FhirError
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

    def for_type(self, resource_type: str) -> list[Operation]:
        return [
            op
            for op in self.operations
            if op.callable_at(resource_type, instance=False) or op.callable_at(resource_type, instance=True)
        ]

    def system_operations(self) -> list[Operation]:
        return [op for op in self.operations if op.system_level]
