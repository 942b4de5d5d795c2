"""Authenticating CDS clients: the checks of `app.cds.client_jwt`, the keys behind a `jku` (fetched
with httpx and cached), and the replay check (each `jti` once per issuer until the token expires,
recorded in the database so every server process sees it).

Spec: https://cds-hooks.hl7.org/2.0/#trusting-cds-clients
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from app.cds.client_jwt import ClientAuthError, ClientClaims, TrustedClient, presented_token, verify_token
from app.fhir.outcome import ErrorCategory, FhirError
from app.services.context import FhirContext
from app.storage.cds import purge_client_tokens, remember_client_token

__all__ = ["ClientAuthenticator"]

log = logging.getLogger("backpath.cds")

_KEYS_FRESH_FOR = 300.0  # seconds a fetched JWK Set is used
_REFETCH_AFTER = 30.0  # an unknown kid refetches the set (key rotation), at most this often
_MAX_JWKS_BYTES = 64 * 1024
_PURGE_EVERY = 256  # calls between clean-ups of expired token ids


class ClientAuthenticator:
    """Checks the bearer JWT of every CDS Hooks call against the allowlist of CDS clients."""

    def __init__(
        self,
        clients: Mapping[str, TrustedClient],
        leeway: float,
        fetch_timeout: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clients = dict(clients)
        self.leeway = leeway
        self.fetch_timeout = fetch_timeout
        self.clock = clock
        self._key_sets: dict[str, tuple[float, tuple[Mapping[str, Any], ...]]] = {}
        self._calls = itertools.count(1)

    async def authenticate(self, context: FhirContext, authorization: str | None, audiences: Sequence[str]) -> ClientClaims:
        """The client's claims; a 401 that says nothing more when anything is wrong (the reason is logged)."""
        try:
            presented = presented_token(authorization, self.clients)
            keys = presented.client.keys if presented.jku is None else await self._published_keys(presented.jku, presented.kid)
            claims = verify_token(presented, keys, audiences, self.clock(), self.leeway)
            if not await self._first_use(context, claims):
                raise ClientAuthError(f"jti {claims.jti!r} of {claims.issuer} was used before (replay)")
        except ClientAuthError as error:
            log.warning(f"CDS client not authenticated: {error}")
            raise FhirError(ErrorCategory.UNAUTHORIZED, "The CDS client is not authenticated") from None
        return claims

    async def _first_use(self, context: FhirContext, claims: ClientClaims) -> bool:
        expires = datetime.fromtimestamp(claims.expires_at + self.leeway, UTC).replace(tzinfo=None)
        async with context.store.writing() as session:
            if next(self._calls) % _PURGE_EVERY == 0:
                await purge_client_tokens(session, datetime.fromtimestamp(self.clock(), UTC).replace(tzinfo=None))
            return await remember_client_token(session, claims.issuer, claims.jti, expires)

    async def _published_keys(self, jku: str, kid: str) -> tuple[Mapping[str, Any], ...]:
        """The JWK Set at an allowlisted `jku`, from the cache while fresh and while it knows `kid`."""
        cached = self._key_sets.get(jku)
        now = time.monotonic()
        if cached is not None:
            age = now - cached[0]
            knows_kid = any(k.get("kid") == kid for k in cached[1])
            if age < _KEYS_FRESH_FOR and (knows_kid or age < _REFETCH_AFTER):
                return cached[1]
        keys = await self._fetch_keys(jku)
        self._key_sets[jku] = (now, keys)
        return keys

    async def _fetch_keys(self, jku: str) -> tuple[Mapping[str, Any], ...]:
        try:
            async with (
                httpx.AsyncClient(timeout=self.fetch_timeout) as client,
                client.stream("GET", jku, headers={"Accept": "application/json"}) as response,
            ):
                if response.status_code != 200:
                    raise ClientAuthError(f"the JWK Set at {jku} answered {response.status_code}")
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > _MAX_JWKS_BYTES:
                        raise ClientAuthError(f"the JWK Set at {jku} is larger than {_MAX_JWKS_BYTES} bytes")
        except httpx.HTTPError as error:
            raise ClientAuthError(f"the JWK Set at {jku} cannot be fetched: {type(error).__name__}") from None
        try:
            keys = orjson.loads(body).get("keys")
        except (orjson.JSONDecodeError, AttributeError):
            keys = None
        if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
            raise ClientAuthError(f"{jku} is not a JWK Set")
        return tuple(keys)
