"""Subsets of a resource a client asks for with `_summary` and `_elements`."""

from __future__ import annotations

from typing import Any

from app.fhir.models import SUBSETTED_TAG, mandatory_elements, summary_elements
from app.fhir.outcome import ErrorCategory, FhirError

__all__ = ["SUMMARY_MODES", "subset"]

SUMMARY_MODES = ("true", "false", "text", "data", "count")
_ALWAYS = frozenset({"resourceType", "id", "meta"})


def subset(resource: dict[str, Any], summary: str | None, elements: list[str] | None) -> dict[str, Any]:
    """The resource reduced per `_summary` / `_elements`; marked SUBSETTED when reduced."""
    if summary not in (None, "false", "count") and summary not in SUMMARY_MODES:
        raise FhirError(ErrorCategory.INVALID_PARAMETER, f"Unknown _summary value '{summary}'", ("_summary",))
    resource_type = resource["resourceType"]
    keep: frozenset[str] | None = None
    drop: frozenset[str] = frozenset()
    if summary == "true":
        keep = summary_elements(resource_type) | _ALWAYS
    elif summary == "text":
        keep = mandatory_elements(resource_type) | _ALWAYS | {"text"}
    elif summary == "data":
        drop = frozenset({"text"})
    elif elements:
        keep = frozenset(elements) | mandatory_elements(resource_type) | _ALWAYS
    if keep is None and not drop:
        return resource
    reduced = {
        name: value
        for name, value in resource.items()
        if name not in drop and (keep is None or name.removeprefix("_") in keep)
    }
    if reduced.keys() == resource.keys():
        return resource
    meta = dict(reduced.get("meta", {}))
    meta["tag"] = [*meta.get("tag", []), SUBSETTED_TAG]
    reduced["meta"] = meta
    return reduced
