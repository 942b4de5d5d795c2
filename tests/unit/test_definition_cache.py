"""The definition cache of $apply: entries expire, so other server processes' edits are seen, and a
read that straddles a clear does not fill the cache with what the clear was for."""

from __future__ import annotations

from app.services.definitions import FRESH_FOR, DefinitionCache


def test_cached_definitions_expire_and_clear() -> None:
    now = [100.0]
    cache = DefinitionCache(clock=lambda: now[0])
    cache.put("PlanDefinition/x", {"id": "x"}, cache.generation)
    assert cache.get("PlanDefinition/x") == {"id": "x"}
    now[0] += FRESH_FOR + 0.1
    assert cache.get("PlanDefinition/x") is None
    cache.put("PlanDefinition/x", {"id": "x"}, cache.generation)
    cache.clear()
    assert cache.get("PlanDefinition/x") is None


def test_a_read_from_before_a_clear_is_not_kept() -> None:
    cache = DefinitionCache()
    before = cache.generation
    cache.clear()  # a commit changed a definition while the read was under way
    cache.put("PlanDefinition/x", {"id": "x", "version": "old"}, before)
    assert cache.get("PlanDefinition/x") is None
