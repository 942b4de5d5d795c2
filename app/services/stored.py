"""Turning a validated resource into the bytes and index entries of a new stored version."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from app.fhir.index import IndexEntries, index_resource
from app.services.context import FhirContext

__all__ = ["format_instant", "same_content", "versioned"]


def format_instant(moment: datetime) -> str:
    """A naive-UTC datetime as a FHIR instant, millisecond precision."""
    return moment.isoformat(timespec="milliseconds") + "Z"


def versioned(
    context: FhirContext, resource: dict[str, Any], resource_id: str, version: int, last_updated: datetime
) -> tuple[bytes, IndexEntries]:
    """The resource with its id and meta set for `version`, serialised, and its search index rows."""
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    stamped = {
        "resourceType": resource["resourceType"],
        "id": resource_id,
        "meta": {"versionId": str(version), "lastUpdated": format_instant(last_updated), **meta},
        **{k: v for k, v in resource.items() if k not in ("resourceType", "id", "meta")},
    }
    return orjson.dumps(stamped), index_resource(context.search_parameters, stamped)


def same_content(stored: bytes | None, resource: dict[str, Any]) -> bool:
    """Whether `resource` equals the stored version apart from meta.versionId and meta.lastUpdated."""
    if stored is None:
        return False
    return _without_version_meta(orjson.loads(stored)) == _without_version_meta(resource)


def _without_version_meta(resource: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    rest = {k: v for k, v in resource.items() if k != "meta"}
    return {**rest, "meta": meta} if meta else rest
