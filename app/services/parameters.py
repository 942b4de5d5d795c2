"""Operation inputs, whether they came as a Parameters body or in the query string.

Spec: https://hl7.org/fhir/R4/operations.html#request (primitive parameters may be sent as URL
parameters; a Parameters resource is the body of a POST).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.fhir.models import validate_resource
from app.fhir.outcome import ErrorCategory, FhirError
from app.services.operations import OperationCall

__all__ = ["OperationInput", "operation_input"]


@dataclass(frozen=True)
class OperationInput:
    """The `parameter` entries of the call (query-string ones as value-less strings)."""

    parameters: tuple[dict[str, Any], ...]
    body: Any

    def named(self, name: str) -> list[dict[str, Any]]:
        return [p for p in self.parameters if p.get("name") == name]

    def resource(self, name: str) -> dict[str, Any] | None:
        for parameter in self.named(name):
            if isinstance(parameter.get("resource"), dict):
                return parameter["resource"]  # type: ignore[no-any-return]
        return None

    def value(self, name: str) -> tuple[str, Any] | None:
        """(value type, value) of the first `name` parameter that has a value[x]."""
        for parameter in self.named(name):
            for key, value in parameter.items():
                if key.startswith("value"):
                    return key[5:], value
        return None

    def boolean(self, name: str) -> bool | None:
        found = self.value(name)
        if found is None:
            return None
        if found[0] == "Boolean" and isinstance(found[1], bool):
            return found[1]
        if found[0] == "String" and found[1] in ("true", "false"):
            return bool(found[1] == "true")
        raise FhirError(ErrorCategory.INVALID_PARAMETER, f"The parameter '{name}' must be true or false")

    def reference(self, name: str) -> str | None:
        """A reference given as valueReference, or as a string (a URL parameter)."""
        found = self.value(name)
        if found is None:
            return None
        kind, value = found
        if kind == "Reference" and isinstance(value, dict) and isinstance(value.get("reference"), str):
            return str(value["reference"])
        if kind in ("String", "Uri", "Canonical") and isinstance(value, str):
            return value
        raise FhirError(ErrorCategory.INVALID_PARAMETER, f"The parameter '{name}' must be a reference")


def operation_input(call: OperationCall) -> OperationInput:
    """The inputs of `call`: the Parameters body's entries, then the query string's."""
    parameters: list[dict[str, Any]] = []
    body = call.body
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        parameters.extend(validate_resource(body, "Parameters").get("parameter") or [])
    parameters.extend({"name": name, "valueString": value} for name, value in call.query if not name.startswith("_"))
    return OperationInput(tuple(parameters), body)
