"""Dependencies the routes declare: the FHIR context, settings, base URL, and common headers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.api.media import check_accept
from app.config import Settings
from app.fhir.models import stored_number
from app.fhir.outcome import ErrorCategory, FhirError
from app.services.context import FhirContext
from app.services.operations import OperationRegistry

__all__ = ["AppSettings", "BaseUrl", "Context", "IfMatch", "Negotiated", "Operations", "PreferReturn"]


async def _context(request: Request) -> FhirContext:
    return request.app.state.fhir  # type: ignore[no-any-return]


async def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def _operations(request: Request) -> OperationRegistry:
    return request.app.state.operations  # type: ignore[no-any-return]


async def _base_url(request: Request) -> str:
    configured: str | None = request.app.state.settings.base_url
    return (configured or str(request.base_url)).rstrip("/")


async def _if_match(request: Request) -> int | None:
    header = request.headers.get("if-match")
    if header is None:
        return None
    version = stored_number(header.strip().removeprefix("W/").strip('"'))
    if version is None:
        raise FhirError(ErrorCategory.MALFORMED, f"If-Match '{header}' is not a version ETag such as W/\"3\"")
    return version


async def _prefer_return(request: Request) -> str:
    """`representation` (default), `minimal` or `OperationOutcome` from the Prefer header."""
    for part in request.headers.get("prefer", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "return" and value.strip() in ("minimal", "representation", "OperationOutcome"):
            return value.strip()
    return "representation"


Context = Annotated[FhirContext, Depends(_context)]
AppSettings = Annotated[Settings, Depends(_settings)]
Operations = Annotated[OperationRegistry, Depends(_operations)]
BaseUrl = Annotated[str, Depends(_base_url)]
IfMatch = Annotated[int | None, Depends(_if_match)]
PreferReturn = Annotated[str, Depends(_prefer_return)]
Negotiated = Depends(check_accept)
