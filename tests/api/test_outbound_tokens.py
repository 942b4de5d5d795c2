"""Our tokens for a partner, got the SMART Backend Services way from the partner's real token
endpoint (the secured app in-process): discovery, one fetch shared by concurrent deliveries, reuse
until shortly before expiry, a new one after a 401, and safe failures for a stranger's key or a
partner without a token endpoint."""

from __future__ import annotations

import asyncio

import httpx
import jwt
import pytest
from fastapi import FastAPI

from app.security.backend import SigningKey
from app.services.referrals.outbound_tokens import PartnerTokens, TokenUnavailable
from tests.tokens import AUDIENCE, KeyPair

CLIENT = "partner-backpath"  # registered at the secured app with `backend_client_key` (see conftest)


class _Recorded(httpx.ASGITransport):
    """The app's real transport, remembering what was asked of it."""

    def __init__(self, app: FastAPI) -> None:
        super().__init__(app=app)
        self.requests: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.path}")
        return await super().handle_async_request(request)


class _Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


def _signing_key(pair: KeyPair) -> SigningKey:
    return SigningKey(pair.private_key, pair.algorithm, pair.kid, pair.public_jwk)


def _tokens(app: FastAPI, pair: KeyPair, clock: _Clock | None = None, token_urls: dict[str, str] | None = None) -> tuple[PartnerTokens, _Recorded]:
    transport = _Recorded(app)
    client = httpx.AsyncClient(transport=transport)
    tokens = PartnerTokens(_signing_key(pair), client_id=CLIENT, scope="system/Observation.c", client=client, clock=clock or _Clock(), token_urls=token_urls)
    return tokens, transport


async def test_the_token_is_discovered_fetched_and_reused(secure_app: FastAPI, backend_client_key: KeyPair) -> None:
    tokens, transport = _tokens(secure_app, backend_client_key)
    token = await tokens(f"{AUDIENCE}/")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["client_id"] == CLIENT and claims["scope"] == "system/Observation.c" and claims["aud"] == AUDIENCE
    assert await tokens(AUDIENCE) == token
    assert transport.requests == ["GET /.well-known/smart-configuration", "POST /auth/token"]


async def test_concurrent_deliveries_share_one_fetch(secure_app: FastAPI, backend_client_key: KeyPair) -> None:
    tokens, transport = _tokens(secure_app, backend_client_key)
    got = await asyncio.gather(*(tokens(AUDIENCE) for _ in range(8)))
    assert len(set(got)) == 1
    assert transport.requests == ["GET /.well-known/smart-configuration", "POST /auth/token"]


async def test_a_configured_token_url_skips_discovery(secure_app: FastAPI, backend_client_key: KeyPair) -> None:
    tokens, transport = _tokens(secure_app, backend_client_key, token_urls={AUDIENCE: f"{AUDIENCE}/auth/token"})
    await tokens(AUDIENCE)
    assert transport.requests == ["POST /auth/token"]


async def test_a_token_is_renewed_shortly_before_it_expires(secure_app: FastAPI, backend_client_key: KeyPair) -> None:
    clock = _Clock()
    tokens, transport = _tokens(secure_app, backend_client_key, clock)
    first = await tokens(AUDIENCE)
    clock.now += 300 - 31  # the server's tokens live 300 s; renewed 30 s early
    assert await tokens(AUDIENCE) == first
    clock.now += 2
    assert await tokens(AUDIENCE) != first
    assert transport.requests.count("POST /auth/token") == 2
    assert transport.requests.count("GET /.well-known/smart-configuration") == 1  # the endpoint is remembered


async def test_a_rejected_token_is_not_handed_out_again(secure_app: FastAPI, backend_client_key: KeyPair) -> None:
    tokens, transport = _tokens(secure_app, backend_client_key)
    first = await tokens(AUDIENCE)
    tokens.rejected(AUDIENCE, "some-older-token")  # not the cached one: kept
    assert await tokens(AUDIENCE) == first
    tokens.rejected(AUDIENCE, first)
    assert await tokens(AUDIENCE) != first
    assert transport.requests.count("POST /auth/token") == 2


async def test_an_unregistered_key_gets_no_token_and_the_reason_holds_no_assertion(
    secure_app: FastAPI, backend_client_key: KeyPair, caplog: pytest.LogCaptureFixture
) -> None:
    stranger = KeyPair("EC", kid=backend_client_key.kid)  # same client id and kid, another key
    tokens, transport = _tokens(secure_app, stranger)
    with pytest.raises(TokenUnavailable, match="HTTP 401: invalid_client") as refused:
        await tokens(AUDIENCE)
    assert "eyJ" not in str(refused.value) and "eyJ" not in caplog.text  # no JWT in the reason or the log
    assert "no access token from a partner" in caplog.text
    with pytest.raises(TokenUnavailable):  # tried again, from discovery, next time
        await tokens(AUDIENCE)
    assert transport.requests.count("GET /.well-known/smart-configuration") == 2


async def test_a_partner_without_a_token_endpoint_gives_no_token(app: FastAPI, backend_client_key: KeyPair) -> None:
    tokens, _ = _tokens(app, backend_client_key)  # the development-mode app has no authorization
    with pytest.raises(TokenUnavailable, match="names no token_endpoint"):
        await tokens(AUDIENCE)


async def test_an_unreachable_partner_gives_no_token(backend_client_key: KeyPair) -> None:
    tokens = PartnerTokens(_signing_key(backend_client_key), client_id=CLIENT, scope="system/MessageHeader.c", timeout=2)
    try:
        with pytest.raises(TokenUnavailable, match="ConnectError"):
            await tokens("http://127.0.0.1:9")
    finally:
        await tokens.aclose()


async def test_a_malformed_token_url_gives_no_token(secure_app: FastAPI, backend_client_key: KeyPair) -> None:
    tokens, transport = _tokens(secure_app, backend_client_key, token_urls={AUDIENCE: "http://exa mple:port/auth/token"})
    with pytest.raises(TokenUnavailable, match="InvalidURL"):
        await tokens(AUDIENCE)
    assert transport.requests == []
