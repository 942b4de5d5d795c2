"""FHIR media types: what a client may send and accept, and the JSON response every route returns."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from app.fhir.outcome import ErrorCategory, FhirError

__all__ = ["FHIR_JSON", "FhirResponse", "check_accept", "read_json_body"]

FHIR_JSON = "application/fhir+json"
_JSON_TYPES = {FHIR_JSON, "application/json", "application/json+fhir", "text/json"}
_ACCEPTABLE = _JSON_TYPES | {"*/*", "application/*", "application/fhir+*"}
_FORMAT_ALIASES = {"json", "application/json", FHIR_JSON, "application/json+fhir", "text/json"}


class FhirResponse(Response):
    """A JSON response; a dict body is serialised with orjson (stored resources inside as Fragments)."""

    media_type = f"{FHIR_JSON}; charset=utf-8"

    def render(self, content: Any) -> bytes:
        if content is None:
            return b""
        if isinstance(content, bytes):
            return content
        return orjson.dumps(content)


def _media_types(header: str) -> list[str]:
    return [part.split(";")[0].strip().lower() for part in header.split(",") if part.strip()]


async def check_accept(request: Request) -> None:
    """406 unless the client accepts JSON (`_format` wins over `Accept`, as the spec says)."""
    wanted = request.query_params.get("_format")
    if wanted is not None:
        if wanted.lower() not in _FORMAT_ALIASES:
            raise FhirError(ErrorCategory.NOT_ACCEPTABLE, f"_format '{wanted}' is not supported; this server speaks JSON")
        return
    accept = request.headers.get("accept")
    if accept and not any(t in _ACCEPTABLE for t in _media_types(accept)):
        raise FhirError(ErrorCategory.NOT_ACCEPTABLE, "This server answers application/fhir+json only")


async def read_json_body(request: Request, limit: int, allowed: frozenset[str] | None = None) -> Any:
    """The parsed JSON body: 415 for another media type, 413 past `limit` bytes, 400 when malformed."""
    content_type = request.headers.get("content-type")
    media = _media_types(content_type)[0] if content_type else ""
    if media not in (allowed or _JSON_TYPES):
        raise FhirError(ErrorCategory.UNSUPPORTED_MEDIA_TYPE, f"Content-Type '{media or 'none'}' is not supported here")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        raise FhirError(ErrorCategory.TOO_LARGE, f"The body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise FhirError(ErrorCategory.TOO_LARGE, f"The body is larger than {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise FhirError(ErrorCategory.MALFORMED, "The body is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise FhirError(ErrorCategory.MALFORMED, f"The body is not valid JSON: {error.msg}") from None
