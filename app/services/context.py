"""What every use case needs: the store, the search definitions, the clock and the id generator."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from uuid6 import uuid7

from app.fhir.models import RESOURCE_TYPES
from app.fhir.outcome import Issue
from app.fhir.search_params import SearchParameterRegistry
from app.security.access import Access
from app.security.audit import SEARCH_PARAMETERS as AUDIT_SEARCH_PARAMETERS
from app.storage.repository import Store, StoredVersion, StoreSession

__all__ = ["FhirContext", "HookResult", "WriteHook", "merged_write_hooks", "search_registry", "utc_now_ms"]


def utc_now_ms() -> datetime:
    """Now in UTC to the millisecond, naive: what `meta.lastUpdated` and the database both hold."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def search_registry(definitions: Sequence[dict[str, Any]]) -> SearchParameterRegistry:
    """The server's search parameters: every one defined, except that AuditEvents are indexed by
    what auditors search them by only (see `app.security.audit.SEARCH_PARAMETERS`)."""
    return SearchParameterRegistry(definitions, RESOURCE_TYPES, only={"AuditEvent": AUDIT_SEARCH_PARAMETERS})


@dataclass(frozen=True)
class HookResult:
    """What a write hook hands back: the resource to store (possibly amended) and any warnings."""

    resource: dict[str, Any]
    issues: tuple[Issue, ...] = ()


# A use case that must see every create/update of one resource type (e.g. QuestionnaireResponse
# validation and scoring, referral activation) registers a hook instead of editing the core: it runs
# inside the write's transaction after model validation, gets the current stored version (None on
# create) and the writer's access (what it reads on the writer's behalf must be readable by the
# writer), may raise FhirError to refuse the write, and may write further resources in the session.
WriteHook = Callable[["StoreSession", "FhirContext", dict[str, Any], StoredVersion | None, Access], Awaitable[HookResult]]


def merged_write_hooks(*tables: Mapping[str, Sequence[WriteHook]]) -> dict[str, tuple[WriteHook, ...]]:
    """The hooks of several use cases per resource type, in the order the tables are given."""
    merged: dict[str, tuple[WriteHook, ...]] = {}
    for table in tables:
        for resource_type, hooks in table.items():
            merged[resource_type] = (*merged.get(resource_type, ()), *hooks)
    return merged


@dataclass(frozen=True)
class FhirContext:
    store: Store
    search_parameters: SearchParameterRegistry
    clock: Callable[[], datetime] = utc_now_ms
    # Time-ordered (RFC 9562 UUIDv7): new rows land at the end of the id indexes instead of at random
    # pages, which halves SQLite's cost of an insert once the tables outgrow its cache.
    new_id: Callable[[], str] = field(default=lambda: str(uuid7()))
    default_count: int = 20
    max_count: int = 1000
    write_hooks: Mapping[str, Sequence[WriteHook]] = field(default_factory=dict)

    async def run_write_hooks(
        self, session: StoreSession, resource: dict[str, Any], current: StoredVersion | None, access: Access
    ) -> HookResult:
        """Pass the resource through the hooks of its type, in order; their warnings add up."""
        issues: list[Issue] = []
        for hook in self.write_hooks.get(resource["resourceType"], ()):
            result = await hook(session, self, resource, current, access)
            resource = result.resource
            issues.extend(result.issues)
        return HookResult(resource, tuple(issues))
