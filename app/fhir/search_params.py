"""Search parameters from their definitions: the official R4 set plus our own SearchParameters.

Each definition's FHIRPath `expression` is split into the part per resource type and compiled once;
a plain dotted path (most of them) is walked directly over the JSON, which is much faster.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import resources as package_data
from typing import Any

import orjson

from app.fhir.fhirpath import FhirPathError, compile_expression

__all__ = ["SearchParameterDef", "SearchParameterRegistry", "official_search_parameters"]

Extractor = Callable[[dict[str, Any]], list[Any]]

_PLAIN_PATH = re.compile(r"[A-Z][A-Za-z]+(\.[a-z][A-Za-z0-9]*)+")


@dataclass(frozen=True)
class SearchParameterDef:
    """One search parameter as it applies to one resource type."""

    code: str
    type: str
    url: str
    expression: str
    extract: Extractor


def official_search_parameters() -> list[dict[str, Any]]:
    """The official R4 SearchParameter resources, vendored from hl7.fhir.r4.examples."""
    raw = package_data.files("app.data").joinpath("search-parameters.json").read_bytes()
    return [entry["resource"] for entry in orjson.loads(raw)["entry"]]


class SearchParameterRegistry:
    """The search parameters of every resource type, built once at start-up."""

    def __init__(self, definitions: Iterable[dict[str, Any]], resource_types: Iterable[str]) -> None:
        self._by_type: dict[str, dict[str, SearchParameterDef]] = {t: {} for t in resource_types}
        for definition in definitions:
            self._add(definition)

    def _add(self, definition: dict[str, Any]) -> None:
        expression = definition.get("expression")
        if not expression:
            return
        for base in definition.get("base", []):
            targets = list(self._by_type) if base in ("Resource", "DomainResource") else [base]
            for resource_type in targets:
                if resource_type not in self._by_type:
                    continue
                part = _expression_for(expression, resource_type, base)
                if part is None:
                    continue
                self._by_type[resource_type][definition["code"]] = SearchParameterDef(
                    code=definition["code"],
                    type=definition["type"],
                    url=definition.get("url", ""),
                    expression=part,
                    extract=_extractor(part),
                )

    def for_type(self, resource_type: str) -> dict[str, SearchParameterDef]:
        return self._by_type.get(resource_type, {})

    def of_kind(self, resource_type: str, kind: str) -> list[SearchParameterDef]:
        return [p for p in self.for_type(resource_type).values() if p.type == kind]


def _expression_for(expression: str, resource_type: str, base: str) -> str | None:
    """The union members of `expression` that apply to `resource_type`, rooted at that type."""
    parts = [p.strip() for p in _split_union(expression)]
    root = base if base in ("Resource", "DomainResource") else resource_type
    mine = [p for p in parts if p.lstrip("(").startswith(f"{root}.")]
    if not mine:
        return None
    if root != resource_type:
        mine = [p.replace(f"{root}.", f"{resource_type}.", 1) for p in mine]
    return " | ".join(mine)


def _split_union(expression: str) -> Iterator[str]:
    depth, start = 0, 0
    for index, char in enumerate(expression):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == "|" and depth == 0:
            yield expression[start:index]
            start = index + 1
    yield expression[start:]


def _extractor(expression: str) -> Extractor:
    parts = [p.strip() for p in _split_union(expression)]
    if all(_PLAIN_PATH.fullmatch(p) for p in parts):
        paths = [p.split(".")[1:] for p in parts]
        return lambda resource: [value for path in paths for value in _walk(resource, path)]
    try:
        compiled = compile_expression(expression)
    except FhirPathError:
        return lambda resource: []

    def evaluate(resource: dict[str, Any]) -> list[Any]:
        try:
            return list(compiled(resource, {"resource": resource, "context": resource}))
        except Exception:  # an expression that fails on one resource indexes nothing for it
            return []

    return evaluate


def _walk(node: Any, path: list[str]) -> list[Any]:
    """Follow a plain dotted path through JSON, flattening arrays and resolving choice types."""
    current = [node]
    for name in path:
        following: list[Any] = []
        for item in current:
            if not isinstance(item, dict):
                continue
            value = item.get(name)
            if value is None:
                value = next((v for k, v in item.items() if k.startswith(name) and k[len(name):][:1].isupper()), None)
            if isinstance(value, list):
                following.extend(value)
            elif value is not None:
                following.append(value)
        current = following
    return current
