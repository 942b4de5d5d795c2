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

__all__ = ["BearerChallenge", "install_error_handlers", "outcome_response"]

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


_REALM = 'Bearer realm="BackPath"'


class BearerChallenge(FhirError):
    """401 with the RFC 6750 challenge: no `error` for a request without a token, `invalid_token`
    (and a description that never repeats the token) for a token that does not check out."""

    def __init__(self, diagnostics: str, invalid_token: bool) -> None:
        super().__init__(ErrorCategory.UNAUTHORIZED, diagnostics)
        self.invalid_token = invalid_token


def outcome_response(error: FhirError) -> Response:
    response = FhirResponse(error.outcome(), status_code=error.status)
    if isinstance(error, BearerChallenge) and error.invalid_token:
        description = error.diagnostics.replace('"', "'")
        response.headers["WWW-Authenticate"] = f'{_REALM}, error="invalid_token", error_description="{description}"'
    elif error.status == 401:
        response.headers["WWW-Authenticate"] = _REALM
    elif error.status == 403:  # every 403 comes from the access rules: the token's scopes fall short
        response.headers["WWW-Authenticate"] = f'{_REALM}, error="insufficient_scope"'
    return response


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
