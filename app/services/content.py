"""Storing the content resources at start-up: a new version only where the file changed."""

from __future__ import annotations

from typing import Any

import orjson

from app.services import resources
from app.services.context import FhirContext

__all__ = ["install_content"]


async def install_content(context: FhirContext, content: list[dict[str, Any]]) -> int:
    """Upsert every content resource in one transaction; return how many were new or changed."""
    changed = 0
    async with context.store.writing() as session:
        for resource in content:
            current = await session.current(resource["resourceType"], resource["id"])
            if current is not None and not current.deleted and _same(current.content, resource):
                continue
            await resources.update_in(session, context, resource["resourceType"], resource["id"], resource)
            changed += 1
    return changed


def _same(stored: bytes | None, resource: dict[str, Any]) -> bool:
    if stored is None:
        return False
    old = orjson.loads(stored)
    strip = ("versionId", "lastUpdated")
    old_meta = {k: v for k, v in (old.pop("meta", None) or {}).items() if k not in strip}
    new = dict(resource)
    new_meta = {k: v for k, v in (new.pop("meta", None) or {}).items() if k not in strip}
    return bool(old == new and old_meta == new_meta)
