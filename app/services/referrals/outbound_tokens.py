"""Bearer tokens for what we deliver to partners: one static token, or per partner address a token
got the SMART Backend Services way.

Spec: https://hl7.org/fhir/smart-app-launch/STU2.2/backend-services.html (RFC 7523 client
assertions). Per partner: discover `token_endpoint` from `{address}/.well-known/smart-configuration`
(or take it from configuration), sign a client assertion with our key, trade it for an access token
with `grant_type=client_credentials`, and reuse that token until shortly before it expires.
Concurrent deliveries to one partner share one fetch. Nothing here ever logs or raises with a token
or an assertion in the message.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from app.security.backend import ASSERTION_TYPE, SigningKey, client_assertion

__all__ = ["PartnerTokens", "StaticToken", "TokenSource", "TokenUnavailable"]

log = logging.getLogger("backpath.delivery")

# A token is renewed this long before it expires (at most a tenth of its lifetime), so it does not
# run out on the wire.
_RENEW_EARLY_SECONDS = 30.0
# SMART asks token endpoints for `expires_in`; one that leaves it out gets this much trust.
_ASSUMED_LIFETIME_SECONDS = 60
_OAUTH_ERROR_CODE = re.compile(r"[a-z_]{1,64}")


class TokenUnavailable(Exception):
    """No bearer token for a partner now (its discovery or token endpoint failed or refused us).
    The message is safe to log: it never holds a token or an assertion."""


class TokenSource(Protocol):
    """Where the outgoing channel gets a bearer token for a partner address (None: send without one)."""

    async def __call__(self, address: str) -> str | None:
        """The token to send to `address`; raises TokenUnavailable when there is none to be had now."""
        ...

    def rejected(self, address: str, token: str) -> None:
        """The partner answered `token` with 401: do not hand it out again."""
        ...

    async def aclose(self) -> None: ...


class StaticToken:
    """One configured token (BACKPATH_OUTBOUND_BEARER_TOKEN) for every partner, or none."""

    def __init__(self, token: str | None) -> None:
        self._token = token

    async def __call__(self, address: str) -> str | None:
        return self._token

    def rejected(self, address: str, token: str) -> None:
        """A static token cannot be renewed: the delivery retries and, at worst, fails."""

    async def aclose(self) -> None:
        """Nothing to release."""


@dataclass(frozen=True)
class _Token:
    value: str
    renew_at: float  # on the source's clock (monotonic: a wall-clock jump does not age a token)


class PartnerTokens:
    """Access tokens from each partner's token endpoint, for our backend client there."""

    def __init__(
        self,
        key: SigningKey,
        *,
        client_id: str,
        scope: str,
        token_urls: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._key = key
        self._client_id = client_id
        self._scope = scope
        self._configured = {address.rstrip("/"): url for address, url in (token_urls or {}).items()}
        self._timeout = timeout
        self._client = client
        self._own_client = client is None
        self._clock = clock
        self._discovered: dict[str, str] = {}
        self._tokens: dict[str, _Token] = {}
        self._pending: dict[str, asyncio.Future[str]] = {}

    async def __call__(self, address: str) -> str:
        address = address.rstrip("/")
        cached = self._tokens.get(address)
        if cached is not None and self._clock() < cached.renew_at:
            return cached.value
        pending = self._pending.get(address)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(address))
            self._pending[address] = pending
            pending.add_done_callback(lambda done: self._settled(address, done))
        # shield: a delivery that is cancelled does not cancel the fetch the others wait for
        return await asyncio.shield(pending)

    def rejected(self, address: str, token: str) -> None:
        address = address.rstrip("/")
        cached = self._tokens.get(address)
        if cached is not None and cached.value == token:  # not a newer one fetched meanwhile
            del self._tokens[address]

    async def aclose(self) -> None:
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def _settled(self, address: str, done: asyncio.Future[str]) -> None:
        if self._pending.get(address) is done:
            del self._pending[address]
        if not done.cancelled():
            done.exception()  # retrieved here, so a fetch no one waits for any more is not reported

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout)
        return self._client

    async def _fetch(self, address: str) -> str:
        token_url = await self._token_url(address)
        now = self._clock()  # when the token's lifetime starts, as far as the cache is concerned
        assertion = client_assertion(self._key, client_id=self._client_id, token_url=token_url)  # wall clock
        form = {
            "grant_type": "client_credentials",
            "scope": self._scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        }
        try:
            response = await self._http().post(token_url, data=form, headers={"Accept": "application/json"})
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            raise self._unavailable(address, f"token request to {token_url} failed: {type(error).__name__}") from None
        if response.status_code != 200:
            reason = f"{token_url} answered HTTP {response.status_code}{_oauth_error(response, assertion)}"
            raise self._unavailable(address, reason)
        body = _json(response)
        access_token = body.get("access_token")
        if not isinstance(access_token, str) or not access_token or str(body.get("token_type", "")).lower() != "bearer":
            raise self._unavailable(address, f"{token_url} answered without a bearer access_token")
        lifetime = body.get("expires_in")
        seconds = float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else _ASSUMED_LIFETIME_SECONDS
        self._tokens[address] = _Token(access_token, now + seconds - min(_RENEW_EARLY_SECONDS, seconds / 10))
        return access_token

    async def _token_url(self, address: str) -> str:
        known = self._configured.get(address) or self._discovered.get(address)
        if known:
            return known
        discovery = f"{address}/.well-known/smart-configuration"
        try:
            response = await self._http().get(discovery, headers={"Accept": "application/json"})
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            raise self._unavailable(address, f"discovery at {discovery} failed: {type(error).__name__}") from None
        endpoint = _json(response).get("token_endpoint") if response.status_code == 200 else None
        if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
            raise self._unavailable(address, f"{discovery} (HTTP {response.status_code}) names no token_endpoint")
        self._discovered[address] = endpoint
        return endpoint

    def _unavailable(self, address: str, reason: str) -> TokenUnavailable:
        """The failure, logged; a discovered endpoint is looked up again next time (it may have moved)."""
        self._discovered.pop(address, None)
        log.warning("no access token from a partner", extra={"status": f"{address}: {reason}"})
        return TokenUnavailable(reason)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _oauth_error(response: httpx.Response, assertion: str) -> str:
    """`: error (description)` of an OAuth error answer, short, and never echoing our assertion."""
    body = _json(response)
    code, description = body.get("error"), body.get("error_description")
    if not isinstance(code, str) or not _OAUTH_ERROR_CODE.fullmatch(code):
        return ""
    text = description.replace(assertion, "<assertion>")[:200] if isinstance(description, str) else ""
    return f": {code} ({text})" if text else f": {code}"
