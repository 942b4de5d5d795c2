"""Knowledge artifacts for `$apply` (PlanDefinition, ActivityDefinition, Questionnaire) and the
CodeSystems the CDS cards read, cached.

Applying a plan reads the same few definitions on every call, and reading them costs more than
applying them. They are kept per store, dropped on every create or update of a definition type
(a write hook, in the writing transaction), and never used when older than `FRESH_FOR` seconds,
which bounds what another server process on the same database can have changed meanwhile
(deletes, which run no hook, are bounded the same way).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any
from weakref import WeakKeyDictionary

from app.services.context import FhirContext, HookResult, WriteHook
from app.storage.repository import Store, StoredVersion, StoreSession

__all__ = ["DEFINITION_TYPES", "DEFINITION_WRITE_HOOKS", "FRESH_FOR", "DefinitionCache", "definition_cache"]

DEFINITION_TYPES = ("PlanDefinition", "ActivityDefinition", "Questionnaire")
FRESH_FOR = 5.0


class DefinitionCache:
    """Definitions by key (`Type/id`, or a canonical `url[|version]`), each with the time it was read."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[str, tuple[float, Mapping[str, Any]]] = {}

    def get(self, key: str) -> Mapping[str, Any] | None:
        entry = self._entries.get(key)
        if entry is None or self._clock() - entry[0] > FRESH_FOR:
            return None
        return entry[1]

    def put(self, key: str, resource: Mapping[str, Any]) -> None:
        self._entries[key] = (self._clock(), resource)

    def clear(self) -> None:
        self._entries.clear()


_CACHES: WeakKeyDictionary[Store, DefinitionCache] = WeakKeyDictionary()


def definition_cache(context: FhirContext) -> DefinitionCache:
    """The cache of this context's store (one per database, shared by the contexts using it)."""
    cache = _CACHES.get(context.store)
    if cache is None:
        cache = _CACHES[context.store] = DefinitionCache()
    return cache


async def _forget_definitions(
    session: StoreSession, context: FhirContext, resource: dict[str, Any], current: StoredVersion | None
) -> HookResult:
    definition_cache(context).clear()
    return HookResult(resource)


# CodeSystems are cached too (the CDS override reasons), though `$apply` never searches them.
DEFINITION_WRITE_HOOKS: Mapping[str, list[WriteHook]] = {t: [_forget_definitions] for t in (*DEFINITION_TYPES, "CodeSystem")}
