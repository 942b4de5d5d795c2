"""Search parameters from their definitions: the official R4 set plus our own SearchParameters.

Each definition's FHIRPath `expression` is split into the part per resource type and compiled once;
a plain dotted path (most of them) is walked directly over the JSON, which is much faster.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources as package_data
from typing import Any

import orjson

from app.fhir.fhirpath import FhirPathError, compile_expression

__all__ = [
    "ComponentExtractor",
    "SearchParameterDef",
    "SearchParameterRegistry",
    "compartment_parameters",
    "official_search_parameters",
]

Extractor = Callable[[dict[str, Any]], list[Any]]
ComponentExtractor = Callable[[Any, dict[str, Any]], list[Any]]  # (element, resource) -> values

_PLAIN_PATH = re.compile(r"[A-Z][A-Za-z]+(\.[a-z][A-Za-z0-9]*)+")
# `path.where(resolve() is Type)`: a reference of one target type (no resolution needed to check it).
# `(path as Type)[.more]` or `path.as(Type)`: one type of a choice element, the JSON key pathType.
_AS_CHOICE = re.compile(r"\(([A-Z][A-Za-z]+(?:\.[a-z][A-Za-z0-9]*)+) as ([A-Za-z]+)\)((?:\.[a-z][A-Za-z0-9]*)*)")
_AS_FUNCTION = re.compile(r"([A-Z][A-Za-z]+(?:\.[a-z][A-Za-z0-9]*)+)\.as\(([A-Za-z]+)\)")
# `path.where(field='literal')`, e.g. telecom.where(system='phone').
_WHERE_EQUALS = re.compile(r"\(?([A-Z][A-Za-z]+(?:\.[a-z][A-Za-z0-9]*)+)\.where\(([a-z][A-Za-z0-9]*) ?= ?'([^']*)'\)\)?")
_RESOLVE_IS = re.compile(r"\(?([A-Z][A-Za-z]+(?:\.[a-z][A-Za-z0-9]*)+)\.where\(resolve\(\) is ([A-Z][A-Za-z]+)\)\)?")
_RELATIVE_PATH = re.compile(r"[a-z][A-Za-z0-9]*(\.[a-z][A-Za-z0-9]*)*")
_AS_TYPE = re.compile(r"([a-z][A-Za-z0-9]*)\.as\(([A-Za-z]+)\)")


@dataclass(frozen=True)
class SearchParameterDef:
    """One search parameter as it applies to one resource type."""

    code: str
    type: str
    url: str
    expression: str
    extract: Extractor
    targets: tuple[str, ...] = ()
    components: tuple[tuple[str, ComponentExtractor], ...] = field(default=())


def _data(name: str) -> Any:
    return orjson.loads(package_data.files("app.data").joinpath(name).read_bytes())


def official_search_parameters() -> list[dict[str, Any]]:
    """The official R4 SearchParameter resources, vendored from hl7.fhir.r4.examples."""
    return [entry["resource"] for entry in _data("search-parameters.json")["entry"]]


def compartment_parameters() -> dict[str, tuple[str, ...]]:
    """Per resource type, the parameters that put it in a Patient's compartment (official definition)."""
    definition = _data("compartmentdefinition-patient.json")
    return {r["code"]: tuple(r["param"]) for r in definition["resource"] if r.get("param")}


class SearchParameterRegistry:
    """The search parameters of every resource type, built once at start-up."""

    def __init__(
        self,
        definitions: Iterable[dict[str, Any]],
        resource_types: Iterable[str],
        only: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        """`only`: for some types, the codes of the parameters kept; their other parameters are
        neither indexed nor searchable (listed so in the CapabilityStatement)."""
        self._by_type: dict[str, dict[str, SearchParameterDef]] = {t: {} for t in resource_types}
        definitions = list(definitions)
        self._kind_by_url = {d.get("url"): d.get("type", "") for d in definitions}
        for definition in definitions:
            self._add(definition)
        for resource_type, codes in (only or {}).items():
            kept = self._by_type.get(resource_type, {})
            self._by_type[resource_type] = {code: p for code, p in kept.items() if code in codes}

    def _add(self, definition: dict[str, Any]) -> None:
        expression = definition.get("expression")
        if not expression or definition.get("type") == "special":
            return
        components = tuple(
            (self._kind_by_url.get(c.get("definition"), ""), _component_extractor(c.get("expression", "")))
            for c in definition.get("component", [])
        )
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
                    targets=tuple(definition.get("target", [])),
                    components=components,
                )

    def for_type(self, resource_type: str) -> dict[str, SearchParameterDef]:
        return self._by_type.get(resource_type, {})

    def get(self, resource_type: str, code: str) -> SearchParameterDef | None:
        return self._by_type.get(resource_type, {}).get(code)


def _expression_for(expression: str, resource_type: str, base: str) -> str | None:
    """The union members of `expression` that apply to `resource_type`, rooted at that type."""
    parts = [p.strip() for p in _split_union(expression)]
    root = base if base in ("Resource", "DomainResource") else resource_type
    mine = [p for p in parts if p.lstrip("(").startswith(f"{root}.") or p == root]
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


Keep = Callable[[Any], bool]


def _extractor(expression: str) -> Extractor:
    """Plain paths, choice types and simple filters are walked directly; anything else goes to FHIRPath."""
    parts = [p.strip() for p in _split_union(expression)]
    walks: list[tuple[list[str], Keep | None]] = []
    for part in parts:
        typed = _RESOLVE_IS.fullmatch(part)
        equals = _WHERE_EQUALS.fullmatch(part)
        choice = _AS_CHOICE.fullmatch(part) or _AS_FUNCTION.fullmatch(part)
        if typed:
            walks.append((typed.group(1).split(".")[1:], _refers_to(typed.group(2))))
        elif equals:
            walks.append((equals.group(1).split(".")[1:], _has_field(equals.group(2), equals.group(3))))
        elif choice:
            path = choice.group(1).split(".")[1:]
            type_name = choice.group(2)
            rest = choice.group(3).split(".")[1:] if choice.re is _AS_CHOICE and choice.group(3) else []
            walks.append(([*path[:-1], path[-1] + type_name[0].upper() + type_name[1:], *rest], None))
        elif _PLAIN_PATH.fullmatch(part) or "." not in part:
            walks.append((part.split(".")[1:], None))
        else:
            break
    else:
        return lambda resource: [
            value for path, keep in walks for value in walk(resource, path) if keep is None or keep(value)
        ]
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


def _refers_to(target: str) -> Keep:
    """A Reference whose literal reference names `target` (relative or absolute)."""

    def keep(value: Any) -> bool:
        reference = value.get("reference") if isinstance(value, dict) else None
        return isinstance(reference, str) and (reference.startswith(f"{target}/") or f"/{target}/" in reference)

    return keep


def _has_field(name: str, literal: str) -> Keep:
    return lambda value: isinstance(value, dict) and value.get(name) == literal


def _component_extractor(expression: str) -> ComponentExtractor:
    """Component expressions are relative to the composite's element: plain paths, `x.as(T)`, `%resource.path`."""
    steps: list[tuple[bool, list[str]]] = []  # (from the resource root?, path)
    for part in (p.strip() for p in _split_union(expression)):
        as_type = _AS_TYPE.fullmatch(part)
        if as_type:
            steps.append((False, [as_type.group(1) + as_type.group(2)[0].upper() + as_type.group(2)[1:]]))
        elif part.startswith("%resource."):
            steps.append((True, part.split(".")[1:]))
        elif _RELATIVE_PATH.fullmatch(part):
            steps.append((False, part.split(".")))

    def extract(element: Any, resource: dict[str, Any]) -> list[Any]:
        return [value for from_root, path in steps for value in walk(resource if from_root else element, path)]

    return extract


# Choice elements (value[x], effective[x], ...) and the type suffixes their JSON keys take in R4.
_CHOICES: dict[str, list[str]] = _data("choice-elements.json")


def walk(node: Any, path: list[str]) -> list[Any]:
    """Follow a plain dotted path through JSON, flattening arrays and resolving choice types."""
    current = [node]
    for name in path:
        following: list[Any] = []
        suffixes = _CHOICES.get(name, ())
        for item in current:
            if not isinstance(item, dict):
                continue
            value = item.get(name)
            if value is None and suffixes:
                value = next((item[name + s] for s in suffixes if name + s in item), None)
            if isinstance(value, list):
                following.extend(value)
            elif value is not None:
                following.append(value)
        current = following
    return current
