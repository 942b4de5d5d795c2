"""A search request parsed into a small, pure query value the storage layer compiles to SQL.

Spec: https://hl7.org/fhir/R4/search.html. Every parameter of the definitions works, by its type:
string, token, reference (with one level of chaining and `_has`), date, number, quantity, uri and
two-part composites; `,` is OR and a repeated parameter is AND.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.fhir.models import RESOURCE_TYPES, has_control_characters, is_valid_id
from app.fhir.outcome import ErrorCategory, FhirError, Issue
from app.fhir.search_params import SearchParameterDef, SearchParameterRegistry
from app.fhir.search_values import date_range, number_range, split_prefix
from app.fhir.views import SUMMARY_MODES

__all__ = [
    "SUPPORTED_TYPES",
    "Criterion",
    "Include",
    "SearchQuery",
    "SortKey",
    "TokenValue",
    "decode_cursor",
    "encode_cursor",
    "is_searchable",
    "parse_search",
]

SUPPORTED_TYPES = frozenset({"string", "token", "reference", "date", "number", "quantity", "uri", "composite"})

_MODIFIERS = {
    "string": {"exact", "contains", "missing"},
    "token": {"not", "text", "missing"},
    "reference": {"missing"},
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "uri": {"missing", "below", "above"},
    "composite": set(),
}
_PREFIXED = {"date", "number", "quantity"}


def is_searchable(definition: SearchParameterDef) -> bool:
    """Whether this server can search by the parameter (composites: two parts, the first a token)."""
    if definition.type == "composite":
        kinds = [kind for kind, _ in definition.components]
        return len(kinds) == 2 and kinds[0] == "token" and kinds[1] in _MODIFIERS
    return definition.type in SUPPORTED_TYPES


@dataclass(frozen=True)
class TokenValue:
    """`system|code` with None meaning "any" and `no_system` for `|code`."""

    system: str | None
    code: str | None
    no_system: bool = False


@dataclass(frozen=True)
class Criterion:
    """One parameter occurrence: the values are ORed; criteria of a query are ANDed.

    `kind` is the parameter type, or "id", "chain" (values: inner criteria on `target_types`),
    "has" (values: the inner criterion on `source_type` whose `param` points back here), and "or" /
    "and" (values: criteria; built by the server for compartments, never parsed from a request).
    """

    kind: str
    param: str
    modifier: str | None
    values: tuple[Any, ...]
    target_types: tuple[str, ...] = ()
    source_type: str | None = None


@dataclass(frozen=True)
class SortKey:
    param: str
    kind: str
    descending: bool


@dataclass(frozen=True)
class Include:
    """`_include` (forward, from `source_type`) or `_revinclude` (reverse); `iterate` adds one level."""

    source_type: str
    param: str
    target_type: str | None
    reverse: bool
    iterate: bool


@dataclass(frozen=True)
class SearchQuery:
    resource_type: str
    criteria: tuple[Criterion, ...] = ()
    sort: tuple[SortKey, ...] = ()
    includes: tuple[Include, ...] = ()
    count: int = 20
    cursor: tuple[Any, ...] | None = None
    summary: str | None = None
    elements: tuple[str, ...] = ()
    total: str | None = None  # none | estimate | accurate; None: only when it costs nothing (see the store)
    ignored: tuple[Issue, ...] = field(default=())


def parse_search(
    resource_type: str,
    params: Sequence[tuple[str, str]],
    registry: SearchParameterRegistry,
    *,
    default_count: int,
    max_count: int,
    strict: bool = False,
) -> SearchQuery:
    """Parse `params` (in order, repeats kept); unknown ones are ignored, or rejected when `strict`."""
    criteria: list[Criterion] = []
    sort: tuple[SortKey, ...] = ()
    includes: list[Include] = []
    ignored: list[Issue] = []
    count, cursor, summary = default_count, None, None
    total: str | None = None
    elements: tuple[str, ...] = ()
    for name, value in params:
        if has_control_characters(name) or has_control_characters(value):
            # No FHIR string holds one, and PostgreSQL rejects NUL in a bound text parameter.
            _bad(name, "holds a control character")
        if name == "_count":
            count = min(_non_negative(name, value), max_count)
        elif name == "_cursor":
            cursor = decode_cursor(value)
        elif name == "_summary":
            summary = value if value in SUMMARY_MODES else _bad(name, f"must be one of {', '.join(SUMMARY_MODES)}")
        elif name == "_elements":
            elements = tuple(e.strip() for e in value.split(",") if e.strip())
        elif name == "_total":
            total = value if value in ("none", "estimate", "accurate") else _bad(name, "must be none, estimate or accurate")
        elif name == "_sort":
            sort = tuple(_sort_key(resource_type, registry, key) for key in value.split(",") if key)
        elif name.split(":")[0] in ("_include", "_revinclude"):
            includes.append(_include(resource_type, registry, name, value))
        elif name in ("_format", "_pretty") or not _split_values(value):
            continue  # an empty parameter value is ignored, as the spec says
        else:
            try:
                criteria.append(_criterion(resource_type, registry, name, value))
            except _Unknown as unknown:
                message = f"Search parameter '{name}' is not known for {resource_type}: {unknown}"
                if strict:
                    raise FhirError(ErrorCategory.INVALID_PARAMETER, message, (name,)) from None
                ignored.append(Issue("warning", "not-supported", message + "; it was ignored", (name,)))
    return SearchQuery(
        resource_type=resource_type,
        criteria=tuple(criteria),
        sort=sort,
        includes=tuple(includes),
        count=count,
        cursor=cursor,
        summary=summary,
        elements=elements,
        total=total,
        ignored=tuple(ignored),
    )


class _Unknown(Exception):
    """A parameter the server does not know (lenient handling ignores it)."""


def _criterion(resource_type: str, registry: SearchParameterRegistry, name: str, value: str) -> Criterion:
    if name.startswith("_has:"):
        return _has(resource_type, registry, name, value)
    head, dot, chained = name.partition(".")
    code, _, modifier = head.partition(":")
    if code == "_id" and not dot:
        if modifier:
            _bad(name, f"does not take the modifier ':{modifier}'")
        ids = tuple(_split_values(value))
        if not all(is_valid_id(i) for i in ids):
            _bad(name, "holds a value that is not a valid id")
        return Criterion("id", "_id", None, ids)
    definition = registry.get(resource_type, code)
    if definition is None or not is_searchable(definition):
        raise _Unknown("no such parameter" if definition is None else "this server cannot search by it")
    if dot:
        return _chain(resource_type, registry, definition, name, modifier, chained, value)
    if modifier == "missing":
        if value not in ("true", "false"):
            _bad(name, "takes true or false")
        return Criterion(definition.type, code, "missing", (value == "true",))
    if modifier and definition.type == "reference" and modifier in RESOURCE_TYPES:
        values = tuple(_reference(name, v, modifier) for v in _split_values(value))
        return Criterion("reference", code, None, values, target_types=(modifier,))
    if modifier and modifier not in _MODIFIERS.get(definition.type, set()):
        _bad(name, f"has a modifier ':{modifier}' this server does not support for {definition.type} parameters")
    return Criterion(definition.type, code, modifier or None, tuple(_value(definition, name, v, modifier) for v in _split_values(value)))


def _chain(
    resource_type: str,
    registry: SearchParameterRegistry,
    definition: SearchParameterDef,
    name: str,
    modifier: str,
    chained: str,
    value: str,
) -> Criterion:
    """`subject:Patient.identifier=x` or `subject.name=x`: one level of chaining."""
    if definition.type != "reference":
        _bad(name, "chains through a parameter that is not a reference")
    if "." in chained:
        _bad(name, "chains more than one level, which this server does not support")
    targets = (modifier,) if modifier else definition.targets
    if modifier and modifier not in RESOURCE_TYPES:
        _bad(name, f"names an unknown resource type '{modifier}'")
    inner = []
    for target in targets:
        try:
            inner.append((target, _criterion(target, registry, chained, value)))
        except _Unknown:
            continue
    if not inner:
        raise _Unknown(f"'{chained}' is not a parameter of {', '.join(targets) or 'any target'}")
    return Criterion("chain", definition.code, None, tuple(c for _, c in inner), target_types=tuple(t for t, _ in inner))


def _has(resource_type: str, registry: SearchParameterRegistry, name: str, value: str) -> Criterion:
    """`_has:Observation:patient:code=x`: resources some Observation points at through `patient`."""
    parts = name.split(":", 3)
    if len(parts) != 4 or parts[1] not in RESOURCE_TYPES:
        _bad(name, "must look like _has:Type:param:criterion")
    source_type, back_param, inner_name = parts[1], parts[2], parts[3]
    back = registry.get(source_type, back_param)
    if back is None or back.type != "reference":
        _bad(name, f"'{back_param}' is not a reference parameter of {source_type}")
    if inner_name.startswith("_has:"):
        _bad(name, "nests _has, which this server does not support")
    inner = _criterion(source_type, registry, inner_name, value)
    return Criterion("has", back_param, None, (inner,), target_types=(resource_type,), source_type=source_type)


def _value(definition: SearchParameterDef, name: str, value: str, modifier: str) -> Any:
    kind = definition.type
    if kind == "token":
        return value if modifier == "text" else _token(name, value)
    if kind == "string":
        return value
    if kind == "uri":
        return value
    if kind == "reference":
        return _reference(name, value, None)
    if kind in _PREFIXED:
        return _prefixed(kind, name, value)
    if kind == "composite":
        return _composite(definition, name, value)
    raise _Unknown(f"parameters of type {kind} are not supported")


def _prefixed(kind: str, name: str, value: str) -> tuple[str, Any, str | None, str | None]:
    """(prefix, range, system, code): a date or number range, and a quantity's system and code."""
    prefix, rest = split_prefix(value)
    system = code = None
    if kind == "quantity":
        number, _, unit = rest.partition("|")
        system, _, code = unit.partition("|") if "|" in unit else ("", "", unit)
        rest, system, code = number, system or None, code or None
    found = date_range(rest) if kind == "date" else number_range(rest)
    if found is None:
        _bad(name, f"'{value}' is not a valid {kind} (with an optional prefix: eq, ne, gt, lt, ge, le, sa, eb, ap)")
    return prefix, found, system, code


def _composite(definition: SearchParameterDef, name: str, value: str) -> tuple[TokenValue, Any]:
    first, dollar, second = value.partition("$")
    if not dollar:
        _bad(name, "needs two components separated by $")
    kind = definition.components[1][0]
    if kind == "token":
        return _token(name, first), _token(name, second)
    if kind in _PREFIXED:
        return _token(name, first), _prefixed(kind, name, second)
    return _token(name, first), second


def _reference(name: str, value: str, target_type: str | None) -> tuple[str | None, str | None, str | None]:
    """(type, id, url): "Type/id", a bare id, or an absolute URL / canonical."""
    if "://" in value or value.startswith("urn:"):
        tail = value.rstrip("/").split("/")
        if len(tail) >= 2 and tail[-2] in RESOURCE_TYPES and is_valid_id(tail[-1]):
            return tail[-2], tail[-1], value.split("|")[0]
        return None, None, value.split("|")[0]
    parts = value.split("/")
    if len(parts) == 2 and parts[0] in RESOURCE_TYPES and is_valid_id(parts[1]):
        if target_type and parts[0] != target_type:
            _bad(name, f"'{value}' is not a {target_type}")
        return parts[0], parts[1], None
    if len(parts) == 1 and is_valid_id(value):
        return target_type, value, None
    _bad(name, f"'{value}' is not a reference (Type/id, id or an absolute URL)")
    raise AssertionError  # unreachable: _bad raises


def _sort_key(resource_type: str, registry: SearchParameterRegistry, key: str) -> SortKey:
    descending = key.startswith("-")
    code = key.lstrip("-")
    if code in ("_id", "_lastUpdated"):
        return SortKey(code, "date" if code == "_lastUpdated" else "id", descending)
    definition = registry.get(resource_type, code)
    if definition is None or definition.type not in ("string", "token", "date", "number", "quantity", "uri", "reference"):
        _bad("_sort", f"cannot sort by '{code}'")
        raise AssertionError
    return SortKey(code, definition.type, descending)


def _include(resource_type: str, registry: SearchParameterRegistry, name: str, value: str) -> Include:
    reverse = name.startswith("_revinclude")
    iterate = name.endswith(":iterate") or name.endswith(":recurse")
    parts = value.split(":")
    if len(parts) not in (2, 3) or parts[0] not in RESOURCE_TYPES:
        _bad(name, "must look like Type:param or Type:param:TargetType")
    definition = registry.get(parts[0], parts[1])
    if definition is None or definition.type != "reference":
        _bad(name, f"'{parts[1]}' is not a reference parameter of {parts[0]}")
    target = parts[2] if len(parts) == 3 else None
    if target is not None and target not in RESOURCE_TYPES:
        _bad(name, f"names an unknown resource type '{target}'")
    if not reverse and not iterate and parts[0] != resource_type:
        _bad(name, f"starts from {parts[0]} but the search is for {resource_type} (use :iterate)")
    return Include(parts[0], parts[1], target, reverse, iterate)


def _split_values(value: str) -> list[str]:
    """Split on commas that are not escaped with a backslash."""
    parts, current, escaped = [], "", False
    for char in value:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p]


def _token(name: str, value: str) -> TokenValue:
    if "|" not in value:
        return TokenValue(None, value)
    system, _, code = value.partition("|")
    if not system and not code:
        _bad(name, "has neither system nor code")
    if not system:
        return TokenValue(None, code, no_system=True)
    return TokenValue(system, code or None)


def _non_negative(name: str, value: str) -> int:
    if not (value.isascii() and value.isdigit()):
        _bad(name, "must be a non-negative integer")
    digits = value.lstrip("0") or "0"
    return int(digits) if len(digits) <= 12 else 10**12  # every use caps it far lower; int() stays cheap


def encode_cursor(values: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(values))).decode().rstrip("=")


def decode_cursor(value: str) -> tuple[Any, ...]:
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        _bad("_cursor", "is not a cursor this server issued")
    if not isinstance(decoded, list) or not decoded:
        _bad("_cursor", "is not a cursor this server issued")
    return tuple(decoded)


def _bad(name: str, problem: str) -> Any:
    raise FhirError(ErrorCategory.INVALID_PARAMETER, f"Parameter '{name}' {problem}", (name,))
