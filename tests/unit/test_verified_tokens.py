"""Verified tokens remembered for their lifetime: a remembered token is let in only while a fresh
check would let it in (within `nbf`/`exp` and the leeway); the oldest is forgotten when full."""

from __future__ import annotations

from app.security.access import Access
from app.security.tokens import VerifiedTokens

_JWK = {"kty": "RSA", "kid": "k1"}
_ACCESS = Access(client_id="app")


def test_a_remembered_token_is_known_within_its_lifetime_and_leeway_only() -> None:
    tokens = VerifiedTokens(leeway=30)
    tokens.remember("t", _ACCESS, "https://issuer", _JWK, {"exp": 1000, "nbf": 500})
    assert tokens.get("t", 700) is not None
    assert tokens.get("t", 470) is not None  # nbf - leeway
    assert tokens.get("t", 1029.9) is not None  # before exp + leeway
    assert tokens.get("t", 1030) is None  # PyJWT refuses it from exp + leeway on
    assert tokens.get("t", 700) is None  # forgotten once expired: a fresh check refuses it


def test_a_token_not_valid_yet_is_not_known() -> None:
    tokens = VerifiedTokens(leeway=0)
    tokens.remember("t", _ACCESS, "https://issuer", _JWK, {"exp": 1000, "nbf": 500})
    assert tokens.get("t", 499) is None


def test_what_is_remembered_is_what_verified() -> None:
    tokens = VerifiedTokens(leeway=0)
    tokens.remember("t", _ACCESS, "https://issuer", _JWK, {"exp": 1000})
    known = tokens.get("t", 10)
    assert known is not None
    assert (known.access, known.issuer, known.jwk) == (_ACCESS, "https://issuer", _JWK)
    assert tokens.get("other", 10) is None


def test_a_huge_expiry_is_remembered_as_pyjwt_reads_it() -> None:
    tokens = VerifiedTokens(leeway=0)
    tokens.remember("t", _ACCESS, "https://issuer", _JWK, {"exp": 10**400})  # too big for a float
    assert tokens.get("t", 10) is not None


def test_the_oldest_token_is_forgotten_when_full() -> None:
    tokens = VerifiedTokens(leeway=0, size=2)
    for token in ("a", "b", "c"):
        tokens.remember(token, _ACCESS, "https://issuer", _JWK, {"exp": 1000})
    assert tokens.get("a", 10) is None
    assert tokens.get("b", 10) is not None and tokens.get("c", 10) is not None
