"""Writing a value at a `dynamicValue.path`. Spec: https://hl7.org/fhir/R4/activitydefinition-definitions.html#ActivityDefinition.dynamicValue.path

The path is restricted FHIRPath: names and list indexes only (`payload[0].contentString`,
`performer[0].reference`, `priority`), optionally starting with the resource type.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["PathError", "set_path"]

_SEGMENT = re.compile(r"([A-Za-z][A-Za-z0-9_]*)(?:\[(\d+)\])?")


class PathError(ValueError):
    """A path that is not a restricted FHIRPath path, or that runs into a non-object."""


def set_path(target: dict[str, Any], path: str, values: list[Any], resource_type: str | None = None) -> None:
    """Set `values` (a FHIRPath result) at `path` in `target`, creating objects on the way.

    One value is set as it is, several as a list; an empty result leaves the element unchanged,
    so an unknown fact never erases what the definition said.
    """
    if not values:
        return
    steps = [_step(segment, path) for segment in path.split(".")]
    if resource_type is not None and len(steps) > 1 and steps[0] == (resource_type, None):
        steps = steps[1:]
    node: Any = target
    for position, (name, index) in enumerate(steps):
        last = position == len(steps) - 1
        if not isinstance(node, dict):
            raise PathError(f"'{path}' runs into a value that is not an object")
        if index is None:
            if last:
                node[name] = values if len(values) > 1 or isinstance(node.get(name), list) else values[0]
                return
            node = node.setdefault(name, {})
            continue
        items = node.setdefault(name, [])
        if not isinstance(items, list):
            items = node[name] = [items]
        while len(items) <= index:
            items.append({})
        if last:
            items[index] = values[0] if len(values) == 1 else values
            return
        node = items[index]


def _step(segment: str, path: str) -> tuple[str, int | None]:
    match = _SEGMENT.fullmatch(segment)
    if match is None:
        raise PathError(f"'{path}' is not a restricted FHIRPath path (names and [n] indexes only)")
    return match.group(1), int(match.group(2)) if match.group(2) is not None else None
