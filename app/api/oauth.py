"""The authorization server side: SMART discovery, the Backend Services token endpoint and its JWKS.

Specs: https://hl7.org/fhir/smart-app-launch/STU2.2/conformance.html (discovery),
https://hl7.org/fhir/smart-app-launch/STU2.2/backend-services.html (token endpoint). The token
endpoint answers OAuth 2.0 JSON (RFC 6749 §5), not FHIR: that is what OAuth clients read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from app.config import Settings
from app.fhir.outcome import ErrorCategory, FhirError
from app.security.backend import (
    ASSERTION_TYPE,
    BackendClient,
    OAuthError,
    ReplayGuard,
    SigningKey,
    grant_scopes,
    issue_access_token,
    verify_client_assertion,
)

__all__ = ["TokenIssuer", "own_issuer", "router", "smart_security"]

router = APIRouter(include_in_schema=False)

_MAX_TOKEN_REQUEST = 64 * 1024
_SIGNING_ALGORITHMS = ["RS384", "ES384", "RS256", "ES256"]
_SCOPES = ["system/*.rs", "system/*.cruds", "system/AuditEvent.rs", "user/*.rs", "user/*.cruds", "patient/*.rs", "patient/*.cruds"]


def own_issuer(base_url: str) -> str:
    """The `iss` of the tokens this server issues."""
    return f"{base_url}/auth"


@dataclass
class TokenIssuer:
    """What the token endpoint needs: the registered clients, the signing key, where it lives."""

    clients: dict[str, BackendClient]
    key: SigningKey
    issuer: str
    audience: str
    token_url: str
    lifetime: int
    replay: ReplayGuard


def _discovery(settings: Settings) -> dict[str, Any] | None:
    """The `.well-known/smart-configuration` document; None when the server has no authorization."""
    base = settings.base_url or ""
    if settings.token_endpoint_enabled:
        document: dict[str, Any] = {
            "issuer": own_issuer(base),
            "jwks_uri": f"{base}/auth/jwks",
            "token_endpoint": f"{base}/auth/token",
            "grant_types_supported": ["client_credentials"],
        }
    elif settings.auth_issuer:
        document = {"issuer": settings.auth_issuer, "grant_types_supported": ["client_credentials"]}
        if settings.auth_token_url:
            document["token_endpoint"] = settings.auth_token_url
        if settings.auth_jwks_url:
            document["jwks_uri"] = settings.auth_jwks_url
    else:
        return None
    capabilities = ["client-confidential-asymmetric", "permission-v1", "permission-v2", "permission-patient", "permission-user"]
    if settings.auth_authorize_url:
        document["authorization_endpoint"] = settings.auth_authorize_url
        document["grant_types_supported"] = ["authorization_code", *document["grant_types_supported"]]
        document["response_types_supported"] = ["code"]
        capabilities.append("launch-standalone")
    return {
        **document,
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": _SIGNING_ALGORITHMS,
        "scopes_supported": _SCOPES,
        "capabilities": capabilities,
        "code_challenge_methods_supported": ["S256"],
    }


def smart_security(settings: Settings) -> dict[str, Any] | None:
    """The CapabilityStatement's `rest.security`: SMART-on-FHIR and where to get tokens."""
    discovery = _discovery(settings)
    if discovery is None:
        return None
    uris = [{"url": "token", "valueUri": discovery["token_endpoint"]}] if "token_endpoint" in discovery else []
    if "authorization_endpoint" in discovery:
        uris.append({"url": "authorize", "valueUri": discovery["authorization_endpoint"]})
    security: dict[str, Any] = {
        "cors": bool(settings.cors_origins),
        "service": [
            {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}],
                "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)",
            }
        ],
        "description": "Bearer tokens (SMART App Launch 2.2 scopes, v1 forms understood); SMART Backend Services "
        "(client_credentials with private_key_jwt) for system-to-system access. See /.well-known/smart-configuration.",
    }
    if uris:
        security["extension"] = [{"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris", "extension": uris}]
    return security


@router.get("/.well-known/smart-configuration")
async def smart_configuration(request: Request) -> Response:
    discovery = _discovery(request.app.state.settings)
    if discovery is None:
        raise FhirError(ErrorCategory.NOT_FOUND, "This server runs in development mode, without authorization")
    return JSONResponse(discovery)


@router.get("/auth/jwks")
async def jwks(request: Request) -> Response:
    issuer: TokenIssuer | None = request.app.state.token_issuer
    if issuer is None:
        raise FhirError(ErrorCategory.NOT_FOUND, "This server issues no tokens")
    return JSONResponse({"keys": [issuer.key.public_jwk]})


@router.post("/auth/token")
async def token(request: Request) -> Response:
    """Client credentials with a signed client assertion → a short-lived access token."""
    issuer: TokenIssuer | None = request.app.state.token_issuer
    if issuer is None:
        raise FhirError(ErrorCategory.NOT_FOUND, "This server issues no tokens")
    try:
        form = await _form(request)
        if form.get("grant_type") != "client_credentials":
            raise OAuthError("unsupported_grant_type", "grant_type must be client_credentials")
        if form.get("client_assertion_type") != ASSERTION_TYPE or not form.get("client_assertion"):
            raise OAuthError("invalid_request", f"client_assertion_type must be {ASSERTION_TYPE}, with a client_assertion")
        client = verify_client_assertion(form["client_assertion"], issuer.clients, issuer.token_url, issuer.replay)
        scope = grant_scopes(form.get("scope", ""), client.scopes)
        if not scope:
            raise OAuthError("invalid_scope", "none of the requested scopes may be granted to this client")
    except OAuthError as error:
        return JSONResponse({"error": error.error, "error_description": error.description}, status_code=error.status)
    access_token = issue_access_token(
        issuer.key, issuer=issuer.issuer, audience=issuer.audience, client_id=client.client_id, scope=scope, lifetime=issuer.lifetime
    )
    body = {"access_token": access_token, "token_type": "bearer", "expires_in": issuer.lifetime, "scope": scope}
    return JSONResponse(body, headers={"Pragma": "no-cache"})


async def _form(request: Request) -> dict[str, str]:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "the token request must be application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_TOKEN_REQUEST:
            raise OAuthError("invalid_request", "the token request is too large")
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
