"""SMART Backend Services at /auth/token: a registered client signs an assertion with its private key
and gets a short-lived token for the system/ scopes it may have; everything else is an OAuth error."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import jwt
import pytest

from tests.factories import FHIR_JSON, observation, patient
from tests.tokens import AUDIENCE, Issuer, KeyPair

TOKEN_URL = f"{AUDIENCE}/auth/token"
CLIENT = "partner-backpath"


def _assertion(key: KeyPair, **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": CLIENT, "sub": CLIENT, "aud": TOKEN_URL, "exp": now + 240, "jti": str(uuid.uuid4()), **overrides}
    return key.sign(claims)


async def _token_request(client: httpx.AsyncClient, assertion: str, scope: str = "system/*.rs", **form: str) -> httpx.Response:
    data = {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
        **form,
    }
    return await client.post("/auth/token", data=data)


async def test_a_backend_client_gets_a_short_lived_token_and_uses_it(secure_client: httpx.AsyncClient, backend_client_key: KeyPair) -> None:
    response = await _token_request(secure_client, _assertion(backend_client_key), "system/Patient.rs system/Observation.cr system/Task.c")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] <= 300
    assert body["scope"] == "system/Patient.rs"  # Observation.cr and Task.c exceed what the client may have
    assert response.headers["cache-control"] == "no-store"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == CLIENT and claims["aud"] == AUDIENCE and claims["exp"] - claims["iat"] <= 300
    headers = {**FHIR_JSON, "Authorization": f"Bearer {body['access_token']}"}
    assert (await secure_client.get("/Patient", params={"_count": "1"}, headers=headers)).status_code == 200
    assert (await secure_client.post("/Patient", json=patient(), headers=headers)).status_code == 403
    assert (await secure_client.get("/Observation", params={"_count": "1"}, headers=headers)).status_code == 403


async def test_a_granted_create_scope_writes(secure_client: httpx.AsyncClient, backend_client_key: KeyPair, issuer: Issuer) -> None:
    subject = (await secure_client.post("/Patient", json=patient(), headers=issuer.headers("user/Patient.c"))).json()["id"]
    body = (await _token_request(secure_client, _assertion(backend_client_key), "system/Observation.c")).json()
    headers = {**FHIR_JSON, "Authorization": f"Bearer {body['access_token']}"}
    assert (await secure_client.post("/Observation", json=observation(f"Patient/{subject}"), headers=headers)).status_code == 201


@pytest.mark.parametrize(
    ("problem", "error"),
    [
        ("wrong audience", "invalid_client"),
        ("expired", "invalid_client"),
        ("too long-lived", "invalid_client"),
        ("replayed", "invalid_client"),
        ("unknown client", "invalid_client"),
        ("unregistered key", "invalid_client"),
        ("HS256", "invalid_client"),
        ("sub differs", "invalid_client"),
        ("no scope it may have", "invalid_scope"),
        ("wrong grant type", "unsupported_grant_type"),
        ("wrong assertion type", "invalid_request"),
    ],
)
async def test_a_bad_token_request_gets_an_oauth_error(
    secure_client: httpx.AsyncClient, backend_client_key: KeyPair, problem: str, error: str
) -> None:
    now = int(time.time())
    assertion = _assertion(backend_client_key)
    scope, form = "system/*.rs", {}
    if problem == "wrong audience":
        assertion = _assertion(backend_client_key, aud="https://elsewhere.test/token")
    elif problem == "expired":
        assertion = _assertion(backend_client_key, exp=now - 60)
    elif problem == "too long-lived":
        assertion = _assertion(backend_client_key, exp=now + 3600)
    elif problem == "replayed":
        assert (await _token_request(secure_client, assertion)).status_code == 200
    elif problem == "unknown client":
        assertion = _assertion(backend_client_key, iss="stranger", sub="stranger")
    elif problem == "unregistered key":
        assertion = _assertion(KeyPair("EC", kid=backend_client_key.kid))
    elif problem == "HS256":
        claims = {"iss": CLIENT, "sub": CLIENT, "aud": TOKEN_URL, "exp": now + 60, "jti": "x"}
        assertion = jwt.encode(claims, "a-shared-secret-of-32-bytes-long!", algorithm="HS256")
    elif problem == "sub differs":
        assertion = _assertion(backend_client_key, sub="someone-else")
    elif problem == "no scope it may have":
        scope = "system/Patient.cud user/*.rs"
    elif problem == "wrong grant type":
        form = {"grant_type": "password"}
    elif problem == "wrong assertion type":
        form = {"client_assertion_type": "urn:example:secret"}
    response = await _token_request(secure_client, assertion, scope, **form)
    assert response.status_code in (400, 401)
    body = response.json()
    assert body["error"] == error
    assert assertion not in response.text


async def test_the_token_endpoint_takes_only_a_form(secure_client: httpx.AsyncClient) -> None:
    response = await secure_client.post("/auth/token", json={"grant_type": "client_credentials"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
