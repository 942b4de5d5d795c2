"""The CDS client's JWT (CDS Hooks 2.0.1 "Trusting CDS Clients"), with keys this test run made: what
is accepted (ES384 and RS384 with configured keys, a key published at an allowlisted jku) and every
way a token is refused — each a 401 OperationOutcome that says no more than that."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.utils import base64url_encode

from tests.cds_support import (
    CDS_JSON,
    ISSUER,
    KID_JKU,
    KID_RSA,
    ClientKeys,
    Stub,
    hook_request,
    public_jwk,
    signed_jwt,
    subject_resources,
)

BASE = "http://testserver/cds-services"
SERVICE = f"{BASE}/lbp-pathway"
REFUSED = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "login", "diagnostics": "The CDS client is not authenticated"}]}


async def _status(client: httpx.AsyncClient, token: str | None, url: str = SERVICE) -> httpx.Response:
    headers = {**CDS_JSON, **({"Authorization": f"Bearer {token}"} if token is not None else {})}
    path = url.removeprefix("http://testserver")
    if path == "/cds-services":
        return await client.get(path, headers=headers)
    body = hook_request("patient-view", "auth-1", subject_resources("auth-1")) if not path.endswith("/feedback") else {
        "feedback": [{"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": "2026-01-05T10:00:00Z"}]
    }
    return await client.post(path, json=body, headers=headers)


@pytest.mark.parametrize("url", [BASE, SERVICE, f"{SERVICE}/feedback"], ids=["discovery", "call", "feedback"])
async def test_a_signed_es384_token_is_accepted_on_every_route(raw_cds_client: httpx.AsyncClient, client_keys: ClientKeys, url: str) -> None:
    response = await _status(raw_cds_client, signed_jwt(client_keys.ec, url), url)
    assert response.status_code == 200, response.text


async def test_rs384_an_audience_list_and_the_service_url_for_feedback_are_accepted(raw_cds_client: httpx.AsyncClient, client_keys: ClientKeys) -> None:
    assert (await _status(raw_cds_client, signed_jwt(client_keys.rsa, SERVICE, alg="RS384", kid=KID_RSA))).status_code == 200
    assert (await _status(raw_cds_client, signed_jwt(client_keys.ec, SERVICE, aud=[SERVICE, "https://elsewhere"]))).status_code == 200
    assert (await _status(raw_cds_client, signed_jwt(client_keys.ec, SERVICE), f"{SERVICE}/feedback")).status_code == 200


async def test_a_key_published_at_an_allowlisted_jku_is_fetched_and_accepted(
    raw_cds_client: httpx.AsyncClient, client_keys: ClientKeys, stub_server: Stub
) -> None:
    jku = stub_server.url + "/jwks.json"
    token = signed_jwt(client_keys.published, SERVICE, kid=KID_JKU, headers={"jku": jku})
    assert (await _status(raw_cds_client, token)).status_code == 200
    assert any(path == "/jwks.json" for path, _ in stub_server.received)


def _other_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def _unsigned(keys: ClientKeys) -> str:
    now = int(time.time())
    return jwt.encode({"iss": ISSUER, "aud": SERVICE, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4())}, None, algorithm="none", headers={"kid": "ec-1"})


def _hs256_with_public_key(keys: ClientKeys) -> str:
    """The classic confusion attack: HMAC keyed with the client's public key."""
    secret = keys.ec.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": SERVICE, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4())}
    header = base64url_encode(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "ec-1"}).encode())
    payload = base64url_encode(json.dumps(claims).encode())
    signature = base64url_encode(hmac.new(secret, header + b"." + payload, hashlib.sha256).digest())
    return (header + b"." + payload + b"." + signature).decode()


def _tampered(keys: ClientKeys) -> str:
    """A valid signature over another payload (the tenant changed)."""
    header, _, signature = signed_jwt(keys.ec, SERVICE).split(".")
    payload = signed_jwt(keys.ec, SERVICE, tenant="someone-else").split(".")[1]
    return f"{header}.{payload}.{signature}"


NOW = int(time.time())
REFUSALS: dict[str, Callable[[ClientKeys, Stub], str | None]] = {
    "no token": lambda k, s: None,
    "not a JWT": lambda k, s: "abc.def",
    "wrong alg (ES256)": lambda k, s: signed_jwt(ec.generate_private_key(ec.SECP256R1()), SERVICE, alg="ES256"),
    "alg none": lambda k, s: _unsigned(k),
    "HS256": lambda k, s: _hs256_with_public_key(k),
    "missing kid": lambda k, s: signed_jwt(k.ec, SERVICE, kid=None),
    "unknown kid": lambda k, s: signed_jwt(k.ec, SERVICE, kid="nobody"),
    "signed by another key": lambda k, s: signed_jwt(_other_key(), SERVICE),
    "tampered payload": lambda k, s: _tampered(k),
    "unknown iss": lambda k, s: signed_jwt(k.ec, SERVICE, issuer="https://evil.example"),
    "jku not allowlisted": lambda k, s: signed_jwt(k.published, SERVICE, kid=KID_JKU, headers={"jku": s.url + "/other-jwks.json"}),
    "wrong aud": lambda k, s: signed_jwt(k.ec, BASE),
    "aud of another server": lambda k, s: signed_jwt(k.ec, "https://cds.example.org/cds-services/lbp-pathway"),
    "expired": lambda k, s: signed_jwt(k.ec, SERVICE, exp=NOW - 120, iat=NOW - 420),
    "future iat": lambda k, s: signed_jwt(k.ec, SERVICE, iat=NOW + 600, exp=NOW + 900),
    "no jti": lambda k, s: signed_jwt(k.ec, SERVICE, jti=None),
    "no exp": lambda k, s: signed_jwt(k.ec, SERVICE, exp=None),
    "valid for a day": lambda k, s: signed_jwt(k.ec, SERVICE, exp=NOW + 86400),
    "RS384 key for ES384": lambda k, s: signed_jwt(k.ec, SERVICE, kid=KID_RSA),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
async def test_every_bad_token_is_401_without_saying_why(raw_cds_client: httpx.AsyncClient, client_keys: ClientKeys, stub_server: Stub, case: str) -> None:
    stub_server.serve("/other-jwks.json", {"keys": [public_jwk(client_keys.published, KID_JKU, "ES384")]})
    response = await _status(raw_cds_client, REFUSALS[case](client_keys, stub_server))
    assert response.status_code == 401
    assert response.json() == REFUSED
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_replayed_token_is_refused(raw_cds_client: httpx.AsyncClient, client_keys: ClientKeys) -> None:
    token = signed_jwt(client_keys.ec, SERVICE)
    assert (await _status(raw_cds_client, token)).status_code == 200
    replay = await _status(raw_cds_client, token)
    assert replay.status_code == 401 and replay.json() == REFUSED


async def test_discovery_needs_the_token_too(raw_cds_client: httpx.AsyncClient) -> None:
    assert (await raw_cds_client.get("/cds-services")).status_code == 401


async def test_the_default_app_without_an_allowlist_refuses_every_client(secure_client: httpx.AsyncClient, client_keys: ClientKeys) -> None:
    """Client authentication is on outside development mode, and an empty allowlist trusts nobody."""
    response = await secure_client.get("/cds-services", headers={"Authorization": f"Bearer {signed_jwt(client_keys.ec, BASE)}"})
    assert response.status_code == 401

