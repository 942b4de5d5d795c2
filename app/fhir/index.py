"""Index values extracted from a resource at write time, per its search parameters."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from app.fhir.search_params import SearchParameterRegistry

__all__ = ["TokenEntry", "token_entries"]

TokenEntry = tuple[str, str | None, str | None]  # (parameter code, system, code)

_MAX = 255


def token_entries(registry: SearchParameterRegistry, resource: dict[str, Any]) -> list[TokenEntry]:
    """Every (parameter, system, code) the token parameters of the resource's type yield."""
    entries: set[TokenEntry] = set()
    for parameter in registry.of_kind(resource["resourceType"], "token"):
        if parameter.code == "_id":  # the id column answers _id
            continue
        for value in parameter.extract(resource):
            for system, code in _tokens(value):
                entries.add((parameter.code, _clip(system), _clip(code)))
    return sorted(entries, key=lambda e: (e[0], e[1] or "", e[2] or ""))


def _tokens(value: Any) -> Iterator[tuple[str | None, str | None]]:
    if isinstance(value, bool):
        yield None, "true" if value else "false"
    elif isinstance(value, str | int):
        yield None, str(value)
    elif isinstance(value, dict):
        if "coding" in value:  # CodeableConcept
            for coding in value.get("coding") or []:
                if isinstance(coding, dict):
                    yield coding.get("system"), coding.get("code")
        elif "value" in value and "code" not in value:  # Identifier or ContactPoint
            yield value.get("system"), _text(value.get("value"))
        elif "code" in value or "system" in value:  # Coding
            yield value.get("system"), value.get("code")


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _clip(value: str | None) -> str | None:
    return value if value is None or len(value) <= _MAX else value[:_MAX]
