"""Bundles the server answers with: searchset, history, batch/transaction responses.

Stored resources are embedded as pre-serialised JSON (`orjson.Fragment`): no parse, no re-dump.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

import orjson

__all__ = ["bundle", "etag", "history_entry", "link", "resource_entry", "status_line"]

_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    410: "Gone",
    412: "Precondition Failed",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
}


def status_line(status: int) -> str:
    return f"{status} {_REASONS.get(status, '')}".strip()


def etag(version: int) -> str:
    return f'W/"{version}"'


def link(relation: str, base_url: str, path: str, params: Sequence[tuple[str, str]]) -> dict[str, str]:
    query = urlencode(list(params))
    return {"relation": relation, "url": f"{base_url}/{path}" + (f"?{query}" if query else "")}


def bundle(kind: str, entries: list[dict[str, Any]], *, total: int | None = None, links: Sequence[dict[str, str]] = ()) -> dict[str, Any]:
    result: dict[str, Any] = {"resourceType": "Bundle", "type": kind}
    if total is not None:
        result["total"] = total
    if links:
        result["link"] = list(links)
    result["entry"] = entries
    return result


def resource_entry(base_url: str, resource_type: str, resource_id: str, content: bytes | dict[str, Any]) -> dict[str, Any]:
    body = orjson.Fragment(content) if isinstance(content, bytes) else content
    return {"fullUrl": f"{base_url}/{resource_type}/{resource_id}", "resource": body}


def history_entry(
    base_url: str,
    resource_type: str,
    resource_id: str,
    version: int,
    last_modified: str,
    method: str,
    content: bytes | None,
) -> dict[str, Any]:
    """One version in a history Bundle: the resource (absent for a deletion), request and response."""
    entry: dict[str, Any] = {"fullUrl": f"{base_url}/{resource_type}/{resource_id}"}
    if content is not None:
        entry["resource"] = orjson.Fragment(content)
    url = resource_type if method == "POST" else f"{resource_type}/{resource_id}"
    status = {"POST": 201, "DELETE": 204}.get(method, 201 if version == 1 else 200)
    entry["request"] = {"method": method, "url": url}
    entry["response"] = {"status": status_line(status), "etag": etag(version), "lastModified": last_modified}
    return entry
