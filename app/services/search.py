"""Type search (GET and POST `_search`). Spec: https://hl7.org/fhir/R4/search.html"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from app.fhir.bundles import bundle, link, resource_entry
from app.fhir.models import require_resource_type
from app.fhir.outcome import operation_outcome
from app.fhir.search_query import SearchQuery, parse_search
from app.fhir.views import subset
from app.services.context import FhirContext
from app.storage.repository import StoreSession

__all__ = ["search", "search_in"]


async def search(
    context: FhirContext, base_url: str, resource_type: str, params: Sequence[tuple[str, str]], *, strict: bool = False
) -> dict[str, Any]:
    async with context.store.reading() as session:
        return await search_in(session, context, base_url, resource_type, params, strict=strict)


async def search_in(
    session: StoreSession,
    context: FhirContext,
    base_url: str,
    resource_type: str,
    params: Sequence[tuple[str, str]],
    *,
    strict: bool = False,
) -> dict[str, Any]:
    """A searchset Bundle: one page of matches in id order, with self/next links and ignored parameters."""
    require_resource_type(resource_type)
    query = parse_search(
        resource_type,
        params,
        context.search_parameters,
        default_count=context.default_count,
        max_count=context.max_count,
        strict=strict,
    )
    page = await session.search(query)
    entries = [
        {**resource_entry(base_url, m.type, m.id, _shown(m.content or b"{}", query)), "search": {"mode": "match"}}
        for m in page.matches
    ]
    if query.ignored:
        entries.append({"resource": operation_outcome(list(query.ignored)), "search": {"mode": "outcome"}})
    # Ignored parameters are left out of the links, as the spec advises.
    ignored = {name for issue in query.ignored for name in issue.expression}
    kept = [(k, v) for k, v in params if k != "_after" and k not in ignored]
    links = [link("self", base_url, resource_type, [*kept, *([("_after", query.after)] if query.after else [])])]
    if page.has_more and page.matches:
        links.append(link("next", base_url, resource_type, [*kept, ("_after", page.matches[-1].id)]))
    if query.summary == "count":
        entries = []
    return bundle("searchset", entries, total=page.total, links=links)


def _shown(content: bytes, query: SearchQuery) -> bytes | dict[str, Any]:
    if query.summary in (None, "false") and not query.elements:
        return content
    return subset(orjson.loads(content), query.summary, list(query.elements) or None)
