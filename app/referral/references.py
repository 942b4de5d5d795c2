"""References inside resources and Bundles: find them, resolve them among entries, rewrite them.

Spec: https://hl7.org/fhir/R4/bundle.html#references (resolving references in Bundles).
Resources are plain JSON; every object with a string `reference` is a Reference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["bundle_target", "local_key", "references", "rewrite_references"]


def references(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(FHIRPath-like location, reference) for every Reference in `value`, in document order."""
    if isinstance(value, dict):
        reference = value.get("reference")
        if isinstance(reference, str):
            yield path, reference
        for key, item in value.items():
            if key != "contained":
                yield from references(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from references(item, f"{path}[{index}]")


def rewrite_references(value: Any, target: Callable[[str], str | None]) -> Any:
    """A copy of `value` with each reference replaced by `target(reference)`. When `target` gives
    None the `reference` goes; a Reference left with neither display nor identifier goes with it."""
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                new = target(item)
                if new is not None:
                    result[key] = new
                continue
            rewritten = rewrite_references(item, target)
            if rewritten is not _GONE:
                result[key] = rewritten
        if isinstance(value.get("reference"), str) and "reference" not in result and not ({"display", "identifier"} & result.keys()):
            return _GONE
        return result if result or not value else _GONE  # FHIR has no empty objects
    if isinstance(value, list):
        items = [rewrite_references(item, target) for item in value]
        kept = [item for item in items if item is not _GONE]
        return kept if kept else _GONE if value else []
    return value


class _Gone:
    """Marker for an element removed by a rewrite."""


_GONE: Any = _Gone()


def local_key(reference: str) -> tuple[str, str] | None:
    """(type, id) of a relative `Type/id` or `Type/id/_history/n` reference, else None."""
    parts = reference.split("/")
    if len(parts) in (2, 4) and parts[0][:1].isupper() and (len(parts) == 2 or parts[2] == "_history"):
        return parts[0], parts[1]
    return None


def bundle_target(reference: str, entry_full_url: str | None, full_urls: frozenset[str]) -> str | None:
    """The fullUrl `reference` (made in the entry at `entry_full_url`) points to, or None.

    Absolute and `urn:` references must equal a fullUrl; a relative `Type/id` resolves against
    the base of the entry's own RESTful fullUrl, as the Bundle rules say.
    """
    plain = reference.split("/_history/")[0]
    if plain in full_urls:
        return plain
    key = local_key(reference)
    if key is None or not entry_full_url or "://" not in entry_full_url:
        return None
    parts = entry_full_url.rstrip("/").split("/")
    if len(parts) < 2:
        return None
    candidate = "/".join([*parts[:-2], key[0], key[1]])
    return candidate if candidate in full_urls else None
