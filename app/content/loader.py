"""Read the content folders: every `*.json` file holds one FHIR resource with a fixed id."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from app.fhir.models import validate_resource

__all__ = ["ContentError", "read_content"]


class ContentError(ValueError):
    """A content file that is not one valid FHIR resource with an id: start-up stops on it."""


def read_content(folders: Iterable[Path]) -> list[dict[str, Any]]:
    """The resources in `folders` (recursively, sorted by path), each validated against its model."""
    resources = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.json")):
            if "node_modules" in path.parts:
                continue
            try:
                resource = validate_resource(orjson.loads(path.read_bytes()))
            except Exception as error:
                raise ContentError(f"{path}: {error}") from error
            if not resource.get("id"):
                raise ContentError(f"{path}: a content resource needs an id")
            resources.append(resource)
    return resources
