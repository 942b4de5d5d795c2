"""Bearer tokens: what gets a request in (a JWT from the trusted issuer, asymmetric, for this
audience, in its lifetime) and what gets 401 with a WWW-Authenticate challenge, never echoing the token."""

from __future__ import annotations

import time

import httpx
import jwt
import pytest

from tests.factories import FHIR_JSON, patient
from tests.tokens import Issuer, KeyPair


def _bearer(token: str) -> dict[str, str]:
    return {**FHIR_JSON, "Authorization": f"Bearer {token}"}


def _assert_unauthorized(response: httpx.Response, token: str | None = None) -> None:
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Bearer realm="BackPath"')
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "login"
    if token is not None:
        assert token not in response.text and token not in str(response.headers)


async def test_a_request_without_a_token_gets_401_with_a_bearer_challenge(secure_client: httpx.AsyncClient) -> None:
    response = await secure_client.get("/Patient", headers=FHIR_JSON)
    _assert_unauthorized(response)
    assert "error=" not in response.headers["www-authenticate"]  # RFC 6750 §3.1: no error code without a token


async def test_every_fhir_route_needs_a_token(secure_client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/Patient/abc"),
        ("GET", "/Patient/abc/_history/1"),
        ("GET", "/Patient/abc/_history"),
        ("GET", "/Patient/_history"),
        ("GET", "/_history"),
        ("POST", "/Patient"),
        ("PUT", "/Patient/abc"),
        ("PATCH", "/Patient/abc"),
        ("DELETE", "/Patient/abc"),
        ("PUT", "/Patient?identifier=x"),
        ("DELETE", "/Patient?identifier=x"),
        ("POST", "/Patient/_search"),
        ("POST", "/"),
        ("POST", "/Patient/$validate"),
        ("GET", "/Patient/abc/Observation"),
        ("GET", "/Unknown"),  # not even a 404 before the caller is known
    ]:
        response = await secure_client.request(method, path, headers=FHIR_JSON, content=b"{}")
        assert response.status_code == 401, (method, path, response.status_code)


@pytest.mark.parametrize(
    "problem",
    ["expired", "not yet valid", "other audience", "other issuer", "no exp", "unknown key", "bad signature", "HS256", "alg none", "not a JWT"],
)
async def test_a_bad_token_gets_401_invalid_token_without_echoing_it(secure_client: httpx.AsyncClient, issuer: Issuer, problem: str) -> None:
    now = int(time.time())
    claims = issuer.claims("user/*.rs")
    stranger = KeyPair(kid=issuer.current.kid)  # same kid, different key
    tokens = {
        "expired": lambda: issuer.current.sign({**claims, "exp": now - 3600}),
        "not yet valid": lambda: issuer.current.sign({**claims, "nbf": now + 3600}),
        "other audience": lambda: issuer.current.sign({**claims, "aud": "https://elsewhere.test"}),
        "other issuer": lambda: issuer.current.sign({**claims, "iss": "https://evil.test"}),
        "no exp": lambda: issuer.current.sign({k: v for k, v in claims.items() if k != "exp"}),
        "unknown key": lambda: KeyPair().sign(claims),
        "bad signature": lambda: stranger.sign(claims),
        "HS256": lambda: jwt.encode(claims, "a-shared-secret-of-32-bytes-long!", algorithm="HS256", headers={"kid": issuer.current.kid}),
        "alg none": lambda: jwt.encode(claims, None, algorithm="none"),
        "not a JWT": lambda: "secret-token-value-xyz",
    }
    token = tokens[problem]()
    response = await secure_client.get("/Patient", headers=_bearer(token))
    _assert_unauthorized(response, token)
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_a_token_with_another_scheme_gets_401(secure_client: httpx.AsyncClient, issuer: Issuer) -> None:
    token = issuer.token("user/*.rs")
    response = await secure_client.get("/Patient", headers={**FHIR_JSON, "Authorization": f"Basic {token}"})
    _assert_unauthorized(response, token)


async def test_a_valid_token_gets_in(secure_client: httpx.AsyncClient, issuer: Issuer) -> None:
    response = await secure_client.get("/Patient", params={"_count": "1"}, headers=issuer.headers("user/Patient.rs"))
    assert response.status_code == 200
    assert response.json()["type"] == "searchset"


async def test_a_rotated_key_is_picked_up_by_its_kid(secure_client: httpx.AsyncClient, issuer: Issuer) -> None:
    """The issuer publishes a new key in its JWKS: tokens signed with it work without a restart."""
    issuer.rotate()
    response = await secure_client.get("/Patient", params={"_count": "1"}, headers=issuer.headers("user/Patient.rs"))
    assert response.status_code == 200
    old = issuer.keys[0].sign(issuer.claims("user/Patient.rs"))
    assert (await secure_client.get("/Patient", params={"_count": "1"}, headers=_bearer(old))).status_code == 200


async def test_a_token_that_got_in_is_refused_once_its_key_is_withdrawn(secure_client: httpx.AsyncClient, issuer: Issuer) -> None:
    """A verified token is remembered, but only while its issuer still publishes the key that signed it."""
    headers, signer = issuer.headers("user/Patient.rs"), issuer.current
    assert (await secure_client.get("/Patient", params={"_count": "1"}, headers=headers)).status_code == 200
    issuer.rotate()
    issuer.keys.remove(signer)
    issuer.publish()
    # a token with the new key's kid makes the server read the JWKS again
    assert (await secure_client.get("/Patient", params={"_count": "1"}, headers=issuer.headers("user/Patient.rs"))).status_code == 200
    _assert_unauthorized(await secure_client.get("/Patient", params={"_count": "1"}, headers=headers))


async def test_a_v1_scope_is_understood(secure_client: httpx.AsyncClient, issuer: Issuer) -> None:
    created = await secure_client.post("/Patient", json=patient(), headers=issuer.headers("user/*.write"))
    assert created.status_code == 201
    read = await secure_client.get(f"/Patient/{created.json()['id']}", headers=issuer.headers("user/*.read"))
    assert read.status_code == 200
    refused = await secure_client.post("/Patient", json=patient(), headers=issuer.headers("user/*.read"))
    assert refused.status_code == 403


async def test_the_capability_statement_and_smart_configuration_need_no_token(secure_client: httpx.AsyncClient) -> None:
    statement = (await secure_client.get("/metadata", headers=FHIR_JSON)).json()
    security = statement["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    assert security["cors"] is True
    uris = {u["url"]: u["valueUri"] for u in security["extension"][0]["extension"]}
    assert uris["token"] == "http://testserver/auth/token"
    discovery = (await secure_client.get("/.well-known/smart-configuration")).json()
    assert discovery["token_endpoint"] == "http://testserver/auth/token"
    assert discovery["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert "client_credentials" in discovery["grant_types_supported"]
    assert {"permission-v1", "permission-v2", "client-confidential-asymmetric"} <= set(discovery["capabilities"])
    keys = (await secure_client.get(discovery["jwks_uri"].removeprefix("http://testserver"))).json()["keys"]
    assert keys and all("d" not in key for key in keys)  # public keys only


async def test_the_development_app_has_no_smart_configuration(client: httpx.AsyncClient) -> None:
    assert (await client.get("/.well-known/smart-configuration")).status_code == 404
    assert "security" not in (await client.get("/metadata")).json()["rest"][0]
