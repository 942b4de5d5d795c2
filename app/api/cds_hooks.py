"""CDS Hooks routes: discovery, service calls, feedback. Spec: https://cds-hooks.hl7.org/2.0/

Every route, discovery included, first authenticates the CDS client's JWT when the deployment has
client authentication on (its `aud` must be the URL called); a refusal is a 401 OperationOutcome
that says nothing about why. A service call leaves an AuditEvent for its patient. Answers are `application/json`; errors are OperationOutcomes (as
CDS Hooks 3.0 recommends) with the status the spec gives (412 for missing data).
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from app.api.auth import Authenticator
from app.api.deps import AppSettings, BaseUrl, Context
from app.api.errors import outcome_response
from app.api.media import read_json_body
from app.api.observability import current_request_id
from app.cds.client_jwt import ClientClaims
from app.fhir.models import is_valid_id
from app.fhir.outcome import FhirError
from app.security.access import Access
from app.security.audit import AuditRecord, Touched
from app.services import cds, cds_feedback
from app.services.cds import CdsHooks
from app.services.cds_data import TokenVerifier

__all__ = ["router"]

router = APIRouter(prefix="/cds-services", tags=["CDS Hooks"])

_JSON_BODY: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
}
_ANSWERS: dict[int | str, dict[str, Any]] = {
    "default": {
        "description": "A CDS Hooks JSON answer, or an OperationOutcome (FHIR JSON) for an error",
        "content": {"application/json": {}, "application/fhir+json": {}},
    }
}


async def _hooks(request: Request) -> CdsHooks:
    return request.app.state.cds_hooks  # type: ignore[no-any-return]


Hooks = Annotated[CdsHooks, Depends(_hooks)]


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


async def _client(request: Request, context: Context, hooks: Hooks, base_url: BaseUrl, *also: str) -> ClientClaims | None:
    """The authenticated client (None when client authentication is off)."""
    if hooks.authenticator is None:
        return None
    called = base_url + request.url.path
    try:
        return await hooks.authenticator.authenticate(context, request.headers.get("authorization"), [called, *also])
    except FhirError as error:
        response = outcome_response(error)
        response.headers["WWW-Authenticate"] = 'Bearer realm="cds-services"'
        raise _Refused(response) from None


def _json(content: Any) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")


@router.get("", summary="CDS Hooks discovery", responses=_ANSWERS)
async def discovery(request: Request, context: Context, hooks: Hooks, base_url: BaseUrl) -> Response:
    try:
        await _client(request, context, hooks, base_url)
    except _Refused as refused:
        return refused.response
    return _json(cds.discovery())


@router.post("/{service_id}", summary="Call a CDS Service (patient-view, order-select, order-sign)", openapi_extra=_JSON_BODY, responses=_ANSWERS)
async def call(request: Request, service_id: str, context: Context, hooks: Hooks, settings: AppSettings, base_url: BaseUrl) -> Response:
    try:
        client = await _client(request, context, hooks, base_url)
    except _Refused as refused:
        return refused.response
    body = await read_json_body(request, settings.max_body_bytes)
    status = 500
    try:
        answer = await cds.call_service(context, hooks, service_id, body, base_url, request.headers.get("accept-language"), _verifier(request))
        status = 200
    except FhirError as error:
        status = error.status
        raise
    finally:
        await _audit(request, client, body, status, base_url)
    return _json(answer)


def _verifier(request: Request) -> TokenVerifier | None:
    """How a `fhirAuthorization` token for this server is checked: as the FHIR API checks bearer
    tokens (None in development mode, where the API needs none)."""
    authenticator: Authenticator | None = request.app.state.authenticator
    if authenticator is None:
        return None

    async def verify(token: str) -> Access:
        return await authenticator.authenticate(f"Bearer {token}")

    return verify


async def _audit(request: Request, client: ClientClaims | None, body: Any, status: int, base_url: str) -> None:
    """A service call reads the patient's data, so it leaves an AuditEvent like a FHIR request:
    the CDS client as the agent, `context.userId` as the user, `context.patientId` as the patient."""
    trail = getattr(request.app.state, "audit", None)
    if trail is None:
        return
    hook_context = body.get("context") if isinstance(body, dict) else None
    named = hook_context if isinstance(hook_context, dict) else {}
    patient, user = named.get("patientId"), named.get("userId")
    touched = (Touched("Patient", patient, None, frozenset({patient})),) if isinstance(patient, str) and is_valid_id(patient) else ()
    await trail.record(
        AuditRecord(
            interaction="operation",
            resource_type=None,
            resource_id=None,
            status=status,
            access=Access(client_id=client.issuer if client else None, user=user if isinstance(user, str) else None),
            server=base_url,
            source_address=request.client.host if request.client else None,
            request_id=current_request_id(),
            query=f"POST {request.url.path}",
            touched=touched,
        )
    )


@router.post("/{service_id}/feedback", summary="Feedback on the cards of a CDS Service", openapi_extra=_JSON_BODY, responses=_ANSWERS)
async def feedback(request: Request, service_id: str, context: Context, hooks: Hooks, settings: AppSettings, base_url: BaseUrl) -> Response:
    try:
        client = await _client(request, context, hooks, base_url, f"{base_url}/cds-services/{service_id}")
    except _Refused as refused:
        return refused.response
    body = await read_json_body(request, settings.max_body_bytes)
    return _json(await cds_feedback.receive_feedback(context, service_id, body, client.issuer if client else None))
