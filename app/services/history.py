"""History at instance, type and system level. Spec: https://hl7.org/fhir/R4/http.html#history"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from app.fhir.bundles import bundle, history_entry, link
from app.fhir.models import MAX_SEQUENCE, is_valid_id, require_resource_type
from app.fhir.outcome import ErrorCategory, FhirError
from app.security.access import TRUSTED, Access, Limit
from app.services.context import FhirContext
from app.services.permissions import visible_stored
from app.services.stored import format_instant
from app.storage.repository import StoredVersion, StoreSession

__all__ = ["history"]

# Versions examined per request when some are hidden from the caller; the next link goes on from there.
_MAX_SCANNED = 2000


async def history(
    context: FhirContext,
    base_url: str,
    resource_type: str | None,
    resource_id: str | None,
    params: Sequence[tuple[str, str]],
    access: Access = TRUSTED,
) -> dict[str, Any]:
    """A history Bundle, newest first, paged with `_count` and a cursor; `_since` filters by time.

    Instance history needs read permission, type and system history search permission (SMART); a
    caller who may not see every version gets the ones it may see, without a total.
    """
    permission = "r" if resource_id is not None else "s"
    if resource_type is not None:
        require_resource_type(resource_type)
        access.require(permission, resource_type)
    count, since, before = context.default_count, None, None
    for name, value in params:
        if name == "_count":
            count = min(_non_negative(name, value, context.max_count), context.max_count)
        elif name == "_since":
            since = _instant(value)
        elif name == "_after":
            before = _non_negative(name, value, MAX_SEQUENCE)
    async with context.store.reading() as session:
        if resource_id is not None and resource_type is not None:
            current = await session.current(resource_type, resource_id) if is_valid_id(resource_id) else None
            if current is None:
                raise FhirError(ErrorCategory.NOT_FOUND, f"{resource_type}/{resource_id} is not known")
            if not await visible_stored(session, context, access, current):
                raise FhirError(ErrorCategory.FORBIDDEN, f"{resource_type}/{resource_id} is not in the compartment of the patient the access token is for")
        total: int | None
        if access.unrestricted or (resource_type is not None and access.limit(permission, resource_type) is Limit.ANY):
            page = await session.history(resource_type, resource_id, since=since, count=count, before_seq=before)
            entries, total = page.entries, page.total
            next_seq = page.entries[-1][0] if page.has_more and page.entries else None
        else:
            entries, next_seq = await _visible_history(session, context, access, resource_type, resource_id, since, count, before, permission)
            total = None
    rendered = [
        history_entry(base_url, v.type, v.id, v.version, format_instant(v.last_updated), v.method, v.content)
        for _, v in entries
    ]
    path = "/".join(p for p in (resource_type, resource_id, "_history") if p)
    kept = [(k, v) for k, v in params if k in ("_count", "_since")]
    links = [link("self", base_url, path, list(params))]
    if next_seq is not None:
        links.append(link("next", base_url, path, [*kept, ("_after", str(next_seq))]))
    return bundle("history", rendered, total=total, links=links)


async def _visible_history(
    session: StoreSession,
    context: FhirContext,
    access: Access,
    resource_type: str | None,
    resource_id: str | None,
    since: datetime | None,
    count: int,
    before: int | None,
    permission: str,
) -> tuple[list[tuple[int, StoredVersion]], int | None]:
    """The next `count` versions `access` may see, and where the next page starts (None: no more)."""
    found: list[tuple[int, StoredVersion]] = []
    if count == 0:
        return found, None
    scanned = 0
    while scanned < _MAX_SCANNED:
        page = await session.history(resource_type, resource_id, since=since, count=max(count, 50), before_seq=before)
        for seq, version in page.entries:
            scanned += 1
            before = seq
            if len(found) == count:
                return found, found[-1][0]
            if await visible_stored(session, context, access, version, permission):
                found.append((seq, version))
        if not page.has_more:
            return found, None
    return found, before


def _non_negative(name: str, value: str, maximum: int) -> int:
    """A non-negative integer; above `maximum` it is capped, which means the same for a count or a cursor."""
    if not (value.isascii() and value.isdigit()):
        raise FhirError(ErrorCategory.INVALID_PARAMETER, f"Parameter '{name}' must be a non-negative integer", (name,))
    digits = value.lstrip("0") or "0"
    return maximum if len(digits) > 19 else min(int(digits), maximum)


def _instant(value: str) -> datetime:
    """A FHIR instant (or date) as naive UTC."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise FhirError(ErrorCategory.INVALID_PARAMETER, f"_since '{value}' is not an instant", ("_since",)) from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment
