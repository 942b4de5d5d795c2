"""Every FHIR request that touches patient data leaves an AuditEvent before its answer leaves.

A plain ASGI middleware: it holds the answer back, works out from it (and the request) which
resources and patients were touched, hands that to the audit trail, and sends the answer once the
events are committed. Requests without a verified caller (401) are not audited; their log line is.
Routes outside the FHIR REST API (CDS Hooks, pages) record their own `AuditRecord`s.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.auth import ACCESS_SCOPE_KEY
from app.api.observability import current_request_id
from app.fhir.models import SUBSETTED_TAG
from app.security.access import Access
from app.security.audit import AuditRecord, Touched, describe_request
from app.security.compartment import patients_of
from app.services.audit import AuditTrail

__all__ = ["AuditMiddleware"]

_QUERIES = ("search-type", "history-instance", "history-type", "history-system", "operation")
_RESPONSE_BUNDLES = {"transaction-response": "transaction", "batch-response": "batch"}


class AuditMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        trail: AuditTrail | None = getattr(scope["app"].state, "audit", None) if scope["type"] == "http" else None
        described = describe_request(scope["method"], scope["path"]) if trail is not None else None
        if trail is None or described is None:
            await self.app(scope, receive, send)
            return
        form = bytearray()

        async def receive_and_keep(message_source: Receive = receive) -> Message:
            message = await message_source()
            if scope["path"].endswith("/_search") and len(form) < 65536:
                form.extend(message.get("body", b""))
            return message

        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        try:
            await self.app(scope, receive_and_keep, hold)
        except Exception:
            access = scope.get(ACCESS_SCOPE_KEY)
            if access is not None:
                await trail.record(_record(scope, access, described, 500, {}, None, bytes(form)))
            raise
        access = scope.get(ACCESS_SCOPE_KEY)
        start = next((m for m in held if m["type"] == "http.response.start"), None)
        if access is not None and start is not None:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start.get("headers", [])}
            body = b"".join(m.get("body", b"") for m in held if m["type"] == "http.response.body")
            await trail.record(_record(scope, access, described, start["status"], headers, body, bytes(form)))
        for message in held:
            await send(message)


def _record(
    scope: Scope,
    access: Access,
    described: tuple[str, str | None, str | None],
    status: int,
    headers: dict[str, str],
    body: bytes | None,
    form: bytes,
) -> AuditRecord:
    interaction, resource_type, resource_id = described
    context = scope["app"].state.fhir
    answer: Any = None
    if body and "json" in headers.get("content-type", ""):
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            answer = None
    touched = _touched(context.search_parameters, answer, headers.get("location"))
    if isinstance(answer, dict) and answer.get("resourceType") == "Bundle":
        interaction = _RESPONSE_BUNDLES.get(answer.get("type", ""), interaction)
    if not touched and resource_type is not None and resource_id is not None and interaction != "operation":
        touched = [Touched(resource_type, resource_id)]  # a delete or a refusal: the service looks up whose it is
    query = None
    if interaction in _QUERIES:
        raw_query = scope.get("query_string", b"").decode("latin-1")
        query = f"{scope['method']} {scope['path']}" + (f"?{raw_query}" if raw_query else "") + (f"\n\n{form.decode('utf-8', 'replace')}" if form else "")
    client = scope.get("client")
    settings = scope["app"].state.settings
    host = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1")
    return AuditRecord(
        interaction=interaction,
        resource_type=resource_type,
        resource_id=resource_id,
        status=status,
        access=access,
        server=settings.base_url or f"{scope.get('scheme', 'http')}://{host}",
        source_address=client[0] if client else None,
        request_id=current_request_id(),
        query=query,
        touched=tuple(touched),
    )


def _touched(registry: Any, answer: Any, location: str | None) -> list[Touched]:
    """The resources an answer discloses or reports written, with their patients where the content shows them."""
    found: list[Touched] = []
    if isinstance(answer, dict) and answer.get("resourceType") == "Bundle":
        for entry in answer.get("entry") or []:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict) and resource.get("resourceType") not in (None, "OperationOutcome"):
                found.extend(_of(registry, resource))
            elif isinstance(entry, dict) and isinstance(entry.get("response"), dict):
                found.extend(_located(entry["response"].get("location")))
    elif isinstance(answer, dict) and answer.get("resourceType") == "Parameters":
        for parameter in answer.get("parameter") or []:
            if isinstance(parameter, dict) and isinstance(parameter.get("resource"), dict):
                found.extend(_of(registry, parameter["resource"]))
    elif isinstance(answer, dict) and answer.get("resourceType") not in (None, "OperationOutcome"):
        found.extend(_of(registry, answer))
    if not found:
        found.extend(_located(location))
    return found


def _of(registry: Any, resource: dict[str, Any]) -> list[Touched]:
    resource_id = resource.get("id")
    meta: dict[str, Any] = resource["meta"] if isinstance(resource.get("meta"), dict) else {}
    version = meta.get("versionId") if isinstance(meta.get("versionId"), str) else None
    subsetted = any(isinstance(t, dict) and t.get("code") == SUBSETTED_TAG["code"] for t in meta.get("tag") or [])
    if not isinstance(resource_id, str):
        return [Touched(resource["resourceType"], "", None, patients_of(registry, resource))]
    # a _summary/_elements answer may lack the references: the stored version tells whose it is
    patients = None if subsetted else patients_of(registry, resource)
    return [Touched(resource["resourceType"], resource_id, version, patients)]


def _located(location: Any) -> list[Touched]:
    """`Type/id/_history/v` from a Location header or a response entry (absolute or relative)."""
    if not isinstance(location, str):
        return []
    parts = location.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        return [Touched(parts[-4], parts[-3], parts[-1])]
    return []
