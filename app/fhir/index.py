"""Index values extracted from a resource at write time, per its search parameters' expressions.

Each parameter type has one extractor that turns the FHIR values its expression yields into the
rows of that type's index table.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from app.fhir.search_params import SearchParameterDef, SearchParameterRegistry
from app.fhir.search_values import date_range, normalise, period_range

__all__ = ["IndexEntries", "index_resource"]

_MAX = 255
_UCUM = "http://unitsofmeasure.org"
_CURRENCY = "urn:iso:std:iso:4217"
_INF = float("inf")

TokenRow = tuple[str, str | None, str | None, str | None]  # param, system, code, text
StringRow = tuple[str, str, str]  # param, normalised, exact
ReferenceRow = tuple[str, str | None, str | None, str | None]  # param, target type, target id, url
DateRow = tuple[str, datetime, datetime]  # param, low, high
NumberRow = tuple[str, float, float]  # param, low, high
QuantityRow = tuple[str, str | None, str | None, float, float]  # param, system, code (or unit), low, high
UriRow = tuple[str, str]
# param, first component (system, code), second component as token / range / text
CompositeRow = tuple[str, str | None, str | None, str | None, str | None, float | None, float | None, datetime | None, datetime | None, str | None]


@dataclass
class IndexEntries:
    """Every index row one resource yields, by table."""

    tokens: list[TokenRow] = field(default_factory=list)
    strings: list[StringRow] = field(default_factory=list)
    references: list[ReferenceRow] = field(default_factory=list)
    dates: list[DateRow] = field(default_factory=list)
    numbers: list[NumberRow] = field(default_factory=list)
    quantities: list[QuantityRow] = field(default_factory=list)
    uris: list[UriRow] = field(default_factory=list)
    composites: list[CompositeRow] = field(default_factory=list)


def index_resource(registry: SearchParameterRegistry, resource: dict[str, Any]) -> IndexEntries:
    """The index rows of `resource` for every search parameter of its type (deduplicated)."""
    entries = IndexEntries()
    for parameter in registry.for_type(resource["resourceType"]).values():
        if parameter.code == "_id":  # the id column answers _id
            continue
        values = parameter.extract(resource)
        if not values:
            continue
        kind = parameter.type
        if kind == "token":
            entries.tokens += [(parameter.code, *t) for v in values for t in tokens_of(v)]
        elif kind == "string":
            entries.strings += [(parameter.code, normalise(s)[:_MAX], s[:_MAX]) for v in values for s in strings_of(v)]
        elif kind == "reference":
            entries.references += [(parameter.code, *r) for v in values if (r := reference_of(v))]
        elif kind == "date":
            entries.dates += [(parameter.code, d[0], d[1]) for v in values if (d := dates_of(v))]
        elif kind == "number":
            entries.numbers += [(parameter.code, n, n) for v in values if (n := number_of(v)) is not None]
        elif kind == "quantity":
            entries.quantities += [(parameter.code, *q) for v in values for q in quantities_of(v)]
        elif kind == "uri":
            entries.uris += [(parameter.code, v[:_MAX]) for v in values if isinstance(v, str)]
        elif kind == "composite":
            entries.composites += composites_of(registry, parameter, resource, values)
    for name in ("tokens", "strings", "references", "dates", "numbers", "quantities", "uris", "composites"):
        rows = getattr(entries, name)
        setattr(entries, name, list(dict.fromkeys(rows)))
    return entries


def _clip(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= _MAX else text[:_MAX]


def tokens_of(value: Any) -> Iterator[tuple[str | None, str | None, str | None]]:
    """(system, code, text) of a code, Coding, CodeableConcept, Identifier, ContactPoint or boolean."""
    if isinstance(value, bool):
        yield None, "true" if value else "false", None
    elif isinstance(value, str | int):
        yield None, _clip(value), None
    elif isinstance(value, dict):
        if "coding" in value or ("text" in value and "value" not in value):  # CodeableConcept
            text = value.get("text")
            codings = [c for c in value.get("coding") or [] if isinstance(c, dict)]
            for coding in codings:
                label = text or coding.get("display")
                yield _clip(coding.get("system")), _clip(coding.get("code")), _norm(label)
            if not codings and text:
                yield None, None, _norm(text)
        elif "value" in value and "code" not in value:  # Identifier or ContactPoint
            label = (value.get("type") or {}).get("text") if isinstance(value.get("type"), dict) else None
            yield _clip(value.get("system")), _clip(value.get("value")), _norm(label)
        elif "code" in value or "system" in value:  # Coding
            yield _clip(value.get("system")), _clip(value.get("code")), _norm(value.get("display"))


def _norm(text: Any) -> str | None:
    return normalise(text)[:_MAX] if isinstance(text, str) else None


_NAME_PARTS = ("text", "family", "given", "prefix", "suffix")
_ADDRESS_PARTS = ("text", "line", "city", "district", "state", "postalCode", "country")


def strings_of(value: Any) -> Iterator[str]:
    """A string, or each textual part of a HumanName, Address or other complex value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        keys = _NAME_PARTS if "family" in value or "given" in value else _ADDRESS_PARTS if "city" in value or "line" in value else None
        for key, item in value.items():
            if (keys is None and key not in ("id", "system", "url", "extension")) or (keys and key in keys):
                yield from strings_of(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_of(item)


def reference_of(value: Any) -> tuple[str | None, str | None, str | None] | None:
    """(target type, target id, url) of a Reference or canonical; local "Type/id" gets type and id."""
    reference = value.get("reference") if isinstance(value, dict) else value if isinstance(value, str) else None
    if not isinstance(reference, str) or not reference or reference.startswith("#"):
        return None
    if "://" in reference or reference.startswith("urn:"):
        return None, None, _clip(reference.split("|")[0])
    parts = reference.split("/")
    if len(parts) in (2, 4) and parts[0][:1].isupper():
        return parts[0], _clip(parts[1]), None
    return None, None, _clip(reference)


def dates_of(value: Any) -> tuple[datetime, datetime] | None:
    """The range of a date/dateTime/instant, Period or Timing."""
    found = None
    if isinstance(value, str):
        found = date_range(value)
    elif isinstance(value, dict):
        if "start" in value or "end" in value:
            found = period_range(value.get("start"), value.get("end"))
        elif "event" in value or "repeat" in value:
            events = [r for e in value.get("event") or [] if isinstance(e, str) and (r := date_range(e))]
            bounds = (value.get("repeat") or {}).get("boundsPeriod")
            if isinstance(bounds, dict):
                period = period_range(bounds.get("start"), bounds.get("end"))
                events += [period] if period else []
            if events:
                return min(r.low for r in events), max(r.high for r in events)
    return (found.low, found.high) if found else None


def number_of(value: Any) -> float | None:
    """A JSON number (or the Decimal FHIRPath gives for one) as a float."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | Decimal):
        return float(value)
    return None


def quantities_of(value: Any) -> Iterator[tuple[str | None, str | None, float, float]]:
    """(system, code, low, high) of a Quantity, Money or Range; a Quantity is indexed by code and by unit."""
    if not isinstance(value, dict):
        return
    if "low" in value or "high" in value:  # Range
        low, high = value.get("low") or {}, value.get("high") or {}
        unit = low if low.get("value") is not None else high
        lower = number_of(low.get("value"))
        upper = number_of(high.get("value"))
        yield _clip(unit.get("system")), _clip(unit.get("code") or unit.get("unit")), -_INF if lower is None else lower, _INF if upper is None else upper
        return
    amount = number_of(value.get("value"))
    if amount is None:
        return
    if "currency" in value:  # Money
        yield _CURRENCY, _clip(value.get("currency")), amount, amount
        return
    yield _clip(value.get("system")), _clip(value.get("code") or value.get("unit")), amount, amount
    if value.get("unit") and value.get("unit") != value.get("code"):
        yield None, _clip(value.get("unit")), amount, amount


def composites_of(
    registry: SearchParameterRegistry, parameter: SearchParameterDef, resource: dict[str, Any], elements: list[Any]
) -> list[CompositeRow]:
    """One row per element per combination of its first two components' values."""
    if len(parameter.components) != 2:
        return []
    (first_kind, first), (second_kind, second) = parameter.components
    if first_kind != "token":
        return []
    rows: list[CompositeRow] = []
    for element in elements:
        if not isinstance(element, dict):
            continue
        for system, code, _ in (t for v in first(element, resource) for t in tokens_of(v)):
            for value in second(element, resource):
                rows += [(parameter.code, system, code, *part) for part in _second(second_kind, value)]
    return rows


def _second(kind: str, value: Any) -> Iterator[tuple[str | None, str | None, float | None, float | None, datetime | None, datetime | None, str | None]]:
    if kind == "token":
        for system, code, _ in tokens_of(value):
            yield system, code, None, None, None, None, None
    elif kind == "quantity":
        for system, code, low, high in quantities_of(value):
            yield system, code, low, high, None, None, None
    elif kind == "number":
        number = number_of(value)
        if number is not None:
            yield None, None, number, number, None, None, None
    elif kind == "date":
        found = dates_of(value)
        if found:
            yield None, None, None, None, found[0], found[1], None
    elif kind == "string":
        for text in strings_of(value):
            yield None, None, None, None, None, None, normalise(text)[:_MAX]
    elif kind == "reference":
        target = reference_of(value)
        if target:
            yield None, None, None, None, None, None, target[2] or f"{target[0]}/{target[1]}"

