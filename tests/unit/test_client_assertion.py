"""Our client assertion for a partner's token endpoint (SMART Backend Services, RFC 7523): the claims
SMART asks for, signed with our key so the public key verifies it, short-lived, and accepted by the
token endpoint's own check."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app.security.backend import (
    BackendClient,
    OAuthError,
    ReplayGuard,
    client_assertion,
    load_signing_key,
    verify_client_assertion,
)
from app.security.scopes import parse_scopes
from tests.tokens import KeyPair

TOKEN_URL = "https://partner.backpath.test/auth/token"
CLIENT = "gp-backpath"


@pytest.mark.parametrize(("kind", "algorithm"), [("RSA", "RS384"), ("EC", "ES384")])
def test_the_assertion_carries_the_smart_claims_and_verifies_with_our_public_key(kind: str, algorithm: str) -> None:
    key = load_signing_key(KeyPair(kind).pem())
    now = time.time()
    assertion = client_assertion(key, client_id=CLIENT, token_url=TOKEN_URL, now=now)

    header = jwt.get_unverified_header(assertion)
    assert header["alg"] == algorithm == key.algorithm and header["kid"] == key.kid == key.public_jwk["kid"]
    public = jwt.PyJWK(key.public_jwk).key
    claims = jwt.decode(assertion, public, algorithms=[algorithm], audience=TOKEN_URL, issuer=CLIENT)
    assert claims["sub"] == CLIENT
    assert 0 < claims["exp"] - int(now) <= 300  # SMART: no more than five minutes
    assert claims["iat"] == int(now)
    assert "d" not in key.public_jwk  # what partners register is public only


def test_every_assertion_has_a_fresh_jti() -> None:
    key = load_signing_key(KeyPair("EC").pem())
    ids = {jwt.decode(client_assertion(key, client_id=CLIENT, token_url=TOKEN_URL), options={"verify_signature": False})["jti"] for _ in range(5)}
    assert len(ids) == 5


def test_a_longer_lifetime_asked_for_is_capped_at_five_minutes() -> None:
    key = load_signing_key(KeyPair("EC").pem())
    claims = jwt.decode(client_assertion(key, client_id=CLIENT, token_url=TOKEN_URL, lifetime=3600, now=1_000_000), options={"verify_signature": False})
    assert claims["exp"] == 1_000_300


def test_an_expired_assertion_does_not_verify() -> None:
    key = load_signing_key(KeyPair("RSA").pem())
    assertion = client_assertion(key, client_id=CLIENT, token_url=TOKEN_URL, now=time.time() - 600)
    with pytest.raises(jwt.ExpiredSignatureError):
        jwt.decode(assertion, jwt.PyJWK(key.public_jwk).key, algorithms=["RS384"], audience=TOKEN_URL)


def test_the_token_endpoint_accepts_it_once_from_the_registered_key_only() -> None:
    key = load_signing_key(KeyPair("EC").pem())
    registered = {CLIENT: BackendClient(CLIENT, (key.public_jwk,), parse_scopes("system/MessageHeader.c"))}
    replay = ReplayGuard()
    assertion = client_assertion(key, client_id=CLIENT, token_url=TOKEN_URL)
    assert verify_client_assertion(assertion, registered, TOKEN_URL, replay).client_id == CLIENT
    with pytest.raises(OAuthError, match="already used"):
        verify_client_assertion(assertion, registered, TOKEN_URL, replay)
    with pytest.raises(OAuthError, match="rejected"):  # addressed to another token endpoint
        verify_client_assertion(client_assertion(key, client_id=CLIENT, token_url=f"{TOKEN_URL}/other"), registered, TOKEN_URL, replay)
    stranger = load_signing_key(KeyPair("EC").pem())
    with pytest.raises(OAuthError, match="no registered key"):
        verify_client_assertion(client_assertion(stranger, client_id=CLIENT, token_url=TOKEN_URL), registered, TOKEN_URL, replay)


def test_a_p256_key_signs_es256() -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key = load_signing_key(pem)
    assert jwt.get_unverified_header(client_assertion(key, client_id=CLIENT, token_url=TOKEN_URL))["alg"] == "ES256"
