"""Every error leaves as an OperationOutcome with the status its category gives; nothing else leaks."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from app.api.media import FhirResponse
from app.api.observability import current_request_id
from app.fhir.outcome import ErrorCategory, FhirError

__all__ = ["install_error_handlers", "outcome_response"]

log = logging.getLogger("backpath.errors")

_HTTP_CATEGORIES = {
    400: ErrorCategory.MALFORMED,
    401: ErrorCategory.UNAUTHORIZED,
    403: ErrorCategory.FORBIDDEN,
    404: ErrorCategory.NOT_FOUND,
    405: ErrorCategory.METHOD_NOT_ALLOWED,
    406: ErrorCategory.NOT_ACCEPTABLE,
    413: ErrorCategory.TOO_LARGE,
    415: ErrorCategory.UNSUPPORTED_MEDIA_TYPE,
}


def outcome_response(error: FhirError) -> Response:
    return FhirResponse(error.outcome(), status_code=error.status)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FhirError)
    async def _fhir_error(_request: Request, error: FhirError) -> Response:
        return outcome_response(error)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_request: Request, error: RequestValidationError) -> Response:
        problems = "; ".join(str(e.get("msg")) for e in error.errors()[:5])
        return outcome_response(FhirError(ErrorCategory.MALFORMED, f"Bad request: {problems}"))

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, error: HTTPException) -> Response:
        category = _HTTP_CATEGORIES.get(error.status_code, ErrorCategory.MALFORMED)
        message = "No such endpoint" if error.status_code == 404 else str(error.detail)
        response = outcome_response(FhirError(category, message))
        response.status_code = error.status_code
        return response

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, error: Exception) -> Response:
        request_id = current_request_id()
        log.exception("unexpected error", extra={"request_id": request_id})
        return outcome_response(
            FhirError(ErrorCategory.INTERNAL, f"Internal error; quote request id {request_id} to the operator")
        )
