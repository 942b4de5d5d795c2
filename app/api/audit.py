"""Every FHIR request that touches patient data leaves an AuditEvent.

A plain ASGI middleware: it passes the answer through, keeps a copy of it, and hands the audit trail
what the request was, who asked, and what came back (`AuditRecord`); the trail works out which
resources and patients were touched and writes the events off the request's path. Requests
without a verified caller (401) are not audited; their log line is. Routes outside the FHIR REST
API (CDS Hooks, pages) hand the trail `AuditRecord`s of their own.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.auth import ACCESS_SCOPE_KEY
from app.api.observability import current_request_id
from app.security.audit import AuditRecord, describe_request
from app.services.audit import AuditTrail

__all__ = ["AuditMiddleware"]

_QUERIES = ("search-type", "history-instance", "history-type", "history-system", "operation")
_MAX_FORM = 65536


class AuditMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        trail: AuditTrail | None = getattr(scope["app"].state, "audit", None) if scope["type"] == "http" else None
        described = describe_request(scope["method"], scope["path"]) if trail is not None else None
        if trail is None or described is None:
            await self.app(scope, receive, send)
            return
        if described[1] == "AuditEvent" and scope["method"] == "GET":
            await trail.flush()  # an auditor sees every request answered before theirs
        form = bytearray()
        status, location, body = 500, None, bytearray()

        async def receive_and_keep() -> Message:
            message = await receive()
            if scope["path"].endswith("/_search") and len(form) < _MAX_FORM:
                form.extend(message.get("body", b""))
            return message

        async def send_and_keep(message: Message) -> None:
            nonlocal status, location
            if message["type"] == "http.response.start":
                status = message["status"]
                location = next((v.decode("latin-1") for k, v in message.get("headers", []) if k.lower() == b"location"), None)
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive_and_keep, send_and_keep)
        finally:
            access = scope.get(ACCESS_SCOPE_KEY)
            if access is not None:
                interaction, resource_type, resource_id = described
                query = None
                if interaction in _QUERIES:
                    raw = scope.get("query_string", b"").decode("latin-1")
                    query = f"{scope['method']} {scope['path']}" + (f"?{raw}" if raw else "")
                    query += f"\n\n{form.decode('utf-8', 'replace')}" if form else ""
                client = scope.get("client")
                host = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1")
                record = AuditRecord(
                    interaction=interaction,
                    resource_type=resource_type,
                    resource_id=resource_id,
                    status=status,
                    access=access,
                    server=scope["app"].state.settings.base_url or f"{scope.get('scheme', 'http')}://{host}",
                    source_address=client[0] if client else None,
                    request_id=current_request_id(),
                    query=query,
                    answer=bytes(body),
                    location=location,
                )
                await trail.record(record)
