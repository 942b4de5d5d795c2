"""Storing the content resources at start-up: a new version only where the file changed."""

from __future__ import annotations

from typing import Any

from app.services import resources
from app.services.context import FhirContext

__all__ = ["install_content"]


async def install_content(context: FhirContext, content: list[dict[str, Any]]) -> int:
    """Upsert every content resource in one transaction; return how many were new or changed."""
    changed = 0
    async with context.store.writing() as session:
        for resource in content:
            result = await resources.update_in(session, context, resource["resourceType"], resource["id"], resource)
            changed += result.changed
    return changed
