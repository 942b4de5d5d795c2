"""Prefetch templates and the data that answers them. Spec: https://cds-hooks.hl7.org/2.0/#prefetch-template

A template is a FHIR read or search relative to the FHIR server, with tokens `{{context.<field>}}`
for the primitive fields at the root of the hook context and `{{userPractitionerId}}` (and its
siblings) from `context.userId`. The data of a key is a resource, a Bundle of them, or `null` for
"no data"; an OperationOutcome means the client could not get it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["PrefetchError", "Query", "prefetch_resources", "render_template"]

_TOKEN = re.compile(r"\{\{\s*([A-Za-z.]+)\s*\}\}")
_USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}
_SAFE_VALUE = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # a FHIR id: nothing that could change the query


class PrefetchError(ValueError):
    """A template whose tokens the hook context cannot fill, or data that is not FHIR."""


@dataclass(frozen=True)
class Query:
    """A rendered template: `Patient/123` (a read) or a search of `resource_type` with `params`."""

    resource_type: str
    resource_id: str | None
    params: tuple[tuple[str, str], ...]

    def path(self) -> str:
        return f"{self.resource_type}/{self.resource_id}" if self.resource_id else self.resource_type


def render_template(template: str, context: Mapping[str, Any]) -> Query:
    """The template with its tokens replaced by the values of the hook context."""

    def value(match: re.Match[str]) -> str:
        token = match.group(1)
        found: Any = None
        if token.startswith("context."):
            found = context.get(token.removeprefix("context."))
        elif token in _USER_TOKENS:
            kind, _, user = str(context.get("userId") or "").partition("/")
            found = user if kind == _USER_TOKENS[token] else None
        if not isinstance(found, str) or not _SAFE_VALUE.fullmatch(found):
            raise PrefetchError(f"the hook context has no id for the prefetch token {{{{{token}}}}}")
        return found

    rendered = _TOKEN.sub(value, template)
    path, _, query = rendered.partition("?")
    resource_type, _, resource_id = path.partition("/")
    return Query(resource_type, resource_id or None, tuple(parse_qsl(query, keep_blank_values=True)))


def prefetch_resources(value: Any, key: str) -> list[dict[str, Any]] | None:
    """The resources a prefetch value holds (`null`: none); None when the value is an
    OperationOutcome, i.e. the client could not fetch it either."""
    if value is None:
        return []
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        raise PrefetchError(f"prefetch '{key}' is neither a FHIR resource nor null")
    if value["resourceType"] == "OperationOutcome":
        return None
    if value["resourceType"] != "Bundle":
        return [value]
    entries = value.get("entry")
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise PrefetchError(f"prefetch '{key}': Bundle.entry must be a list")
    found = [e.get("resource") for e in entries if isinstance(e, dict)]
    resources = [r for r in found if isinstance(r, dict) and isinstance(r.get("resourceType"), str)]
    # A searchset may carry an OperationOutcome about the search itself: it is not data.
    return [r for r in resources if r["resourceType"] != "OperationOutcome"]
