"""Security headers on every answer; CORS closed unless an origin is configured, then only for it."""

from __future__ import annotations

import httpx

from tests.factories import FHIR_JSON

_PREFLIGHT = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}


async def test_every_answer_carries_the_security_headers(secure_client: httpx.AsyncClient, client: httpx.AsyncClient) -> None:
    for response in [
        await secure_client.get("/Patient", headers=FHIR_JSON),  # 401
        await secure_client.get("/metadata"),
        await client.get("/Patient/never-was"),  # 404
    ]:
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["cache-control"] == "no-store"


async def test_cors_is_closed_by_default(client: httpx.AsyncClient) -> None:
    response = await client.options("/Patient", headers={"Origin": "https://app.backpath.test", **_PREFLIGHT})
    assert "access-control-allow-origin" not in response.headers
    response = await client.get("/metadata", headers={"Origin": "https://app.backpath.test"})
    assert "access-control-allow-origin" not in response.headers


async def test_cors_answers_only_the_configured_origin(secure_client: httpx.AsyncClient) -> None:
    allowed = await secure_client.options("/Patient", headers={"Origin": "https://app.backpath.test", **_PREFLIGHT})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.backpath.test"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    refused = await secure_client.options("/Patient", headers={"Origin": "https://evil.test", **_PREFLIGHT})
    assert "access-control-allow-origin" not in refused.headers
    simple = await secure_client.get("/metadata", headers={"Origin": "https://evil.test"})
    assert "access-control-allow-origin" not in simple.headers
