"""Knowledge artifacts for `$apply` (PlanDefinition, ActivityDefinition, Questionnaire) and the
CodeSystems the CDS cards read, cached.

Applying a plan reads the same few definitions on every call, and reading them costs more than
applying them. They are kept per store and dropped whenever a transaction that created, updated or
deleted one of those types has committed in this process; a read that began before that commit
does not fill the cache afterwards (the generation check). Entries older than `FRESH_FOR` seconds
are never used, which bounds what another server process on the same database can have changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any
from weakref import WeakKeyDictionary

from app.services.context import FhirContext
from app.storage.repository import Store, on_commit_of

__all__ = ["CACHED_TYPES", "DEFINITION_TYPES", "FRESH_FOR", "DefinitionCache", "definition_cache"]

DEFINITION_TYPES = ("PlanDefinition", "ActivityDefinition", "Questionnaire")
# CodeSystems are cached too (the CDS override reasons), though `$apply` never searches them.
CACHED_TYPES = (*DEFINITION_TYPES, "CodeSystem")
FRESH_FOR = 5.0


class DefinitionCache:
    """Definitions by key (`Type/id`, or a canonical `url[|version]`), each with the time it was read."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[str, tuple[float, Mapping[str, Any]]] = {}
        self._generation = 0

    @property
    def generation(self) -> int:
        """Changes on every clear: take it before reading from the store, give it to `put`."""
        return self._generation

    def get(self, key: str) -> Mapping[str, Any] | None:
        entry = self._entries.get(key)
        if entry is None or self._clock() - entry[0] > FRESH_FOR:
            return None
        return entry[1]

    def put(self, key: str, resource: Mapping[str, Any], generation: int) -> None:
        """Keep what was read since `generation`, unless a commit has cleared the cache since."""
        if generation == self._generation:
            self._entries[key] = (self._clock(), resource)

    def clear(self) -> None:
        self._generation += 1
        self._entries.clear()


_CACHES: WeakKeyDictionary[Store, DefinitionCache] = WeakKeyDictionary()


def definition_cache(context: FhirContext) -> DefinitionCache:
    """The cache of this context's store (one per database, shared by the contexts using it)."""
    cache = _CACHES.get(context.store)
    if cache is None:
        cache = _CACHES[context.store] = DefinitionCache()
        on_commit_of(context.store.writes, CACHED_TYPES, cache.clear)
    return cache
