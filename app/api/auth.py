"""Who is calling: the bearer token of every FHIR request, turned into the `Access` the services apply.

Spec: https://hl7.org/fhir/smart-app-launch/STU2.2/ and https://hl7.org/fhir/R4/security.html.
No token or a bad one is 401 with `WWW-Authenticate`; what a valid token may do is decided by the
services (403). In development mode every request gets full access, without a token.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from app.api.errors import BearerChallenge
from app.api.keys import JwksSource
from app.security.access import DEVELOPMENT, Access
from app.security.form_link import FormLinkRefused
from app.security.tokens import (
    InvalidToken,
    VerifiedTokens,
    access_from_claims,
    public_key,
    route_token,
    signing_jwk,
    verify_token,
)
from app.services.form_links import FormLinks

__all__ = ["ACCESS_SCOPE_KEY", "Authenticator", "RequestAccess", "request_access"]

# Where the request's Access is left in the ASGI scope, for the audit middleware.
ACCESS_SCOPE_KEY = "backpath.access"

# Declares the bearer scheme in the OpenAPI document; the header itself is read below.
_bearer = HTTPBearer(auto_error=False, description="An access token from a trusted issuer (SMART on FHIR)")


class Authenticator:
    """Verifies bearer tokens from the trusted issuers against their keys."""

    def __init__(self, issuers: dict[str, JwksSource], audience: str, leeway: int) -> None:
        self._issuers = issuers
        self._audience = audience
        self._leeway = leeway
        self._verified = VerifiedTokens(leeway)

    async def authenticate(self, authorization: str | None) -> Access:
        if not authorization:
            raise BearerChallenge("This request needs an access token (Authorization: Bearer ...)", invalid_token=False)
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise BearerChallenge("The Authorization header must be 'Bearer' and a token", invalid_token=True)
        try:
            return await self._verify(token.strip())
        except InvalidToken as problem:
            raise BearerChallenge(str(problem), invalid_token=True) from None

    async def _verify(self, token: str) -> Access:
        known = self._verified.get(token, time.time())
        if known is not None and known.jwk in await self._issuers[known.issuer].keys(refresh=False):
            return known.access
        route = route_token(token)
        source = self._issuers.get(route.issuer)
        if source is None:
            raise InvalidToken("The access token is not from a trusted issuer")
        jwk = signing_jwk(await source.keys(refresh=False), route.kid, route.algorithm)
        if jwk is None:  # perhaps the issuer rotated its keys
            jwk = signing_jwk(await source.keys(refresh=True), route.kid, route.algorithm)
        if jwk is None or (key := public_key(jwk, route.algorithm)) is None:
            raise InvalidToken("The access token is signed with a key the issuer does not publish")
        claims = verify_token(token, key, route, audience=self._audience, leeway=self._leeway)
        access = access_from_claims(claims)
        self._verified.remember(token, access, route.issuer, jwk, claims)
        return access


async def _access(request: Request, _credentials: Annotated[object, Depends(_bearer)]) -> Access:
    return await request_access(request)


async def request_access(request: Request) -> Access:
    """The caller of `request` (the pages call this themselves, to answer a refusal with a page)."""
    authenticator: Authenticator | None = request.app.state.authenticator
    authorization = request.headers.get("authorization")
    form_link = _form_link_token(request, authorization)
    if form_link is not None:  # a patient's form link is held to its narrow grant, in development mode too
        access = await _form_link_access(request, form_link)
    elif authenticator is None:
        access = DEVELOPMENT
    else:
        access = await authenticator.authenticate(authorization)
    request.scope[ACCESS_SCOPE_KEY] = access
    return access


def _form_link_token(request: Request, authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").strip().partition(" ")
    links: FormLinks | None = getattr(request.app.state, "form_links", None)
    if scheme.lower() != "bearer" or links is None or not links.claims(token.strip()):
        return None
    return token.strip()


async def _form_link_access(request: Request, token: str) -> Access:
    try:
        links: FormLinks = request.app.state.form_links
        session = await links.session(request.app.state.fhir, token)
    except FormLinkRefused as refused:
        raise BearerChallenge(f"The form link cannot be used ({refused.reason})", invalid_token=True) from None
    return session.access


RequestAccess = Annotated[Access, Depends(_access)]
