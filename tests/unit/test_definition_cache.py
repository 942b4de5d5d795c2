"""The definition cache of $apply: entries expire, so other server processes' edits are seen."""

from __future__ import annotations

from app.services.definitions import FRESH_FOR, DefinitionCache


def test_cached_definitions_expire_and_clear() -> None:
    now = [100.0]
    cache = DefinitionCache(clock=lambda: now[0])
    cache.put("PlanDefinition/x", {"id": "x"})
    assert cache.get("PlanDefinition/x") == {"id": "x"}
    now[0] += FRESH_FOR + 0.1
    assert cache.get("PlanDefinition/x") is None
    cache.put("PlanDefinition/x", {"id": "x"})
    cache.clear()
    assert cache.get("PlanDefinition/x") is None
