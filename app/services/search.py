"""Search: type level (GET and POST `_search`) and Patient compartment.
Spec: https://hl7.org/fhir/R4/search.html
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import orjson

from app.fhir.bundles import bundle, link, resource_entry
from app.fhir.models import is_valid_id, require_resource_type
from app.fhir.outcome import ErrorCategory, FhirError, operation_outcome
from app.fhir.search_params import compartment_parameters
from app.fhir.search_query import Criterion, SearchQuery, encode_cursor, parse_search
from app.fhir.views import subset
from app.security.access import TRUSTED, Access
from app.security.compartment import restrict_search
from app.services.context import FhirContext
from app.services.permissions import visible_stored
from app.storage.repository import SearchPage, StoredVersion, StoreSession

__all__ = ["search", "search_compartment", "search_in"]

_COMPARTMENTS = {"Patient": compartment_parameters()}
_MAX_INCLUDED = 1000


async def search(
    context: FhirContext,
    base_url: str,
    resource_type: str,
    params: Sequence[tuple[str, str]],
    *,
    strict: bool = False,
    access: Access = TRUSTED,
) -> dict[str, Any]:
    async with context.store.reading() as session:
        return await search_in(session, context, base_url, resource_type, params, strict=strict, access=access)


async def search_compartment(
    context: FhirContext,
    base_url: str,
    compartment: str,
    compartment_id: str,
    resource_type: str,
    params: Sequence[tuple[str, str]],
    *,
    strict: bool = False,
    access: Access = TRUSTED,
) -> dict[str, Any]:
    """`Patient/{id}/{type}`: the search, limited to resources that point at that patient through
    any of the parameters the official Patient CompartmentDefinition lists for the type."""
    require_resource_type(resource_type)
    members = _COMPARTMENTS.get(compartment, {}).get(resource_type)
    if not members or not is_valid_id(compartment_id):
        raise FhirError(ErrorCategory.NOT_FOUND, f"{resource_type} is not in the {compartment} compartment")
    references = tuple(Criterion("reference", param, None, ((compartment, compartment_id, None),)) for param in members)
    scope = Criterion("or", "_compartment", None, references)
    async with context.store.reading() as session:
        return await search_in(
            session,
            context,
            base_url,
            resource_type,
            params,
            strict=strict,
            scope=scope,
            path=f"{compartment}/{compartment_id}/{resource_type}",
            access=access,
        )


async def search_in(
    session: StoreSession,
    context: FhirContext,
    base_url: str,
    resource_type: str,
    params: Sequence[tuple[str, str]],
    *,
    strict: bool = False,
    scope: Criterion | None = None,
    path: str | None = None,
    access: Access = TRUSTED,
) -> dict[str, Any]:
    """A searchset Bundle: one page of matches, the included resources, links, ignored parameters.

    The matches are limited to what `access` may search; included resources it may not read are left out.
    """
    require_resource_type(resource_type)
    query = parse_search(
        resource_type,
        _local_references(context, resource_type, params, base_url),
        context.search_parameters,
        default_count=context.default_count,
        max_count=context.max_count,
        strict=strict,
    )
    query = restrict_search(query, access)
    if scope is not None:
        query = replace(query, criteria=(scope, *query.criteria))
    page = await session.search(query)
    included = await session.included(query.includes, page.matches, _MAX_INCLUDED) if query.includes else []
    if not access.unrestricted:
        included = [r for r in included if await visible_stored(session, context, access, r)]
    entries = [_entry(base_url, m, query, "match") for m in page.matches]
    entries += [_entry(base_url, r, query, "include") for r in included]
    if query.ignored:
        entries.append({"resource": operation_outcome(list(query.ignored)), "search": {"mode": "outcome"}})
    if query.summary == "count":
        entries = []
    return bundle("searchset", entries, total=page.total, links=_links(base_url, path or resource_type, params, query, page))


def _entry(base_url: str, stored: StoredVersion, query: SearchQuery, mode: str) -> dict[str, Any]:
    content = stored.content or b"{}"
    shown: bytes | dict[str, Any] = content
    if query.summary not in (None, "false") or query.elements:
        shown = subset(orjson.loads(content), query.summary, list(query.elements) or None)
    return {**resource_entry(base_url, stored.type, stored.id, shown), "search": {"mode": mode}}


def _links(base_url: str, path: str, params: Sequence[tuple[str, str]], query: SearchQuery, page: SearchPage) -> list[dict[str, str]]:
    """self, and next/previous with keyset cursors; ignored parameters are left out, as the spec advises."""
    ignored = {name for issue in query.ignored for name in issue.expression}
    kept = [(k, v) for k, v in params if k != "_cursor" and k not in ignored]
    current = [("_cursor", encode_cursor(list(query.cursor)))] if query.cursor else []
    links = [link("self", base_url, path, [*kept, *current])]
    if page.matches and page.has_next:
        last = page.matches[-1]
        cursor = encode_cursor(["n", *map(_portable, page.last_sort_values), last.id])
        links.append(link("next", base_url, path, [*kept, ("_cursor", cursor)]))
    if page.matches and page.has_previous:
        first = page.matches[0]
        cursor = encode_cursor(["p", *map(_portable, page.first_sort_values), first.id])
        links.append(link("previous", base_url, path, [*kept, ("_cursor", cursor)]))
    return links


def _portable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _local_references(context: FhirContext, resource_type: str, params: Sequence[tuple[str, str]], base_url: str) -> list[tuple[str, str]]:
    """Values of reference parameters that are absolute URLs on this server become local `Type/id`
    (other values, such as a canonical `url`, are left as they are)."""
    prefix = base_url.rstrip("/") + "/"

    def is_reference(name: str) -> bool:
        if "." in name:  # a chain: the value is for the last parameter, on another type
            return False
        definition = context.search_parameters.get(resource_type, name.split(":", 1)[0])
        return definition is not None and definition.type == "reference"

    return [(name, value.replace(prefix, "") if prefix in value and is_reference(name) else value) for name, value in params]
