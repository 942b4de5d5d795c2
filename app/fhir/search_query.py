"""A search request parsed into a small, pure query value the storage layer compiles to SQL.

This slice supports `_id` and every token parameter of the definitions (`code`, `system|code`,
`|code`, `system|`), with `,` as OR and repeated parameters as AND.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from app.fhir.models import is_valid_id
from app.fhir.outcome import ErrorCategory, FhirError, Issue
from app.fhir.search_params import SearchParameterRegistry
from app.fhir.views import SUMMARY_MODES

__all__ = ["RESULT_PARAMETERS", "SearchQuery", "TokenCriterion", "TokenValue", "parse_search"]

RESULT_PARAMETERS = frozenset({"_count", "_summary", "_elements", "_total", "_format", "_pretty", "_after"})
SUPPORTED_TYPES = frozenset({"token"})


@dataclass(frozen=True)
class TokenValue:
    """`system|code` with None meaning "any" and `no_system` for `|code`."""

    system: str | None
    code: str | None
    no_system: bool = False


@dataclass(frozen=True)
class TokenCriterion:
    param: str
    values: tuple[TokenValue, ...]


@dataclass(frozen=True)
class SearchQuery:
    resource_type: str
    ids: tuple[tuple[str, ...], ...] = ()
    tokens: tuple[TokenCriterion, ...] = ()
    count: int = 20
    after: str | None = None
    summary: str | None = None
    elements: tuple[str, ...] = ()
    total: str = "accurate"
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
    known = registry.for_type(resource_type)
    ids: list[tuple[str, ...]] = []
    tokens: list[TokenCriterion] = []
    ignored: list[Issue] = []
    count, after, summary, total = default_count, None, None, "accurate"
    elements: tuple[str, ...] = ()
    for name, value in params:
        if name == "_count":
            count = min(_positive_int(name, value), max_count)
        elif name == "_after":
            after = value if is_valid_id(value) else _bad(name, "is not a valid id")
        elif name == "_summary":
            summary = value if value in SUMMARY_MODES else _bad(name, f"must be one of {', '.join(SUMMARY_MODES)}")
        elif name == "_elements":
            elements = tuple(e.strip() for e in value.split(",") if e.strip())
        elif name == "_total":
            total = value if value in ("none", "estimate", "accurate") else _bad(name, "must be none|estimate|accurate")
        elif name in ("_format", "_pretty"):
            continue
        elif name == "_id":
            ids.append(tuple(v for v in value.split(",") if v))
        elif ":" not in name and name in known and known[name].type in SUPPORTED_TYPES:
            tokens.append(TokenCriterion(name, tuple(_token(name, v) for v in _split_values(value))))
        else:
            message = f"Search parameter '{name}' is not supported for {resource_type}; it was ignored"
            if strict:
                raise FhirError(ErrorCategory.INVALID_PARAMETER, message.replace("; it was ignored", ""), (name,))
            ignored.append(Issue("warning", "not-supported", message, (name,)))
    return SearchQuery(
        resource_type=resource_type,
        ids=tuple(ids),
        tokens=tuple(tokens),
        count=count,
        after=after,
        summary=summary,
        elements=elements,
        total=total,
        ignored=tuple(ignored),
    )


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


def _positive_int(name: str, value: str) -> int:
    if not value.isdigit():
        _bad(name, "must be a non-negative integer")
    return int(value)


def _bad(name: str, problem: str) -> str:
    raise FhirError(ErrorCategory.INVALID_PARAMETER, f"Parameter '{name}' {problem}", (name,))
