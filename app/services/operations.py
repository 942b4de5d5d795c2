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


class OperationRegistry:
    def __init__(self, operations: list[Operation]) -> None:
        self.operations = {op.code: op for op in operations}

    def find(self, code: str, resource_type: str | None, instance: bool) -> Operation:
        """The operation called `$code` at this level, or 404 when there is none."""
        operation = self.operations.get(code)
        level_ok = operation is not None and (
            (resource_type is None and operation.system_level)
            or (resource_type is not None and not instance and operation.type_level)
            or (instance and operation.instance_level)
        )
        if operation is None or not level_ok or (
            resource_type is not None
            and operation.resource_types is not None
            and resource_type not in operation.resource_types
        ):
            where = f"{resource_type}{'/[id]' if instance else ''}" if resource_type else "the system"
            raise FhirError(ErrorCategory.NOT_FOUND, f"There is no operation ${code} on {where}")
        return operation

    def for_type(self, resource_type: str) -> list[Operation]:
        return [
            op
            for op in self.operations.values()
            if (op.type_level or op.instance_level) and (op.resource_types is None or resource_type in op.resource_types)
        ]

    def system_operations(self) -> list[Operation]:
        return [op for op in self.operations.values() if op.system_level]
