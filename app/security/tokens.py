"""Bearer access tokens: JWTs from a trusted issuer, checked with PyJWT against the issuer's JWKS.

Spec: https://www.rfc-editor.org/rfc/rfc6750 (bearer), RFC 7519 (JWT), RFC 7517 (JWK). Asymmetric
algorithms only (an HS256 token would make the public key a shared secret); `exp`, `iss` and `aud`
are required, `nbf` honoured; the key is picked by `kid`, so an issuer can rotate keys. Messages in
`InvalidToken` are safe to return: they never hold the token. A verified token is remembered for its
lifetime (`VerifiedTokens`): a client sends the same token with every request, and checking it anew
each time (parsing the key, verifying the signature) cost ~8 % of a server's CPU under load.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from app.security.access import Access
from app.security.scopes import parse_scopes

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "InvalidToken",
    "TokenRoute",
    "Verified",
    "VerifiedTokens",
    "access_from_claims",
    "public_key",
    "route_token",
    "select_key",
    "signing_jwk",
    "verify_token",
]

ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


class InvalidToken(Exception):
    """Why a token was refused, in words that may go back to the client."""


@dataclass(frozen=True)
class TokenRoute:
    """What an unverified token says about how to verify it: who issued it, with which key."""

    issuer: str
    kid: str | None
    algorithm: str


def route_token(token: str) -> TokenRoute:
    """The issuer, key id and algorithm a token names (nothing is trusted until `verify_token`)."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise InvalidToken("The access token is not a well-formed JWT") from None
    algorithm = header.get("alg")
    if algorithm not in ASYMMETRIC_ALGORITHMS:
        raise InvalidToken("The access token is not signed with an asymmetric algorithm")
    issuer = claims.get("iss")
    if not isinstance(issuer, str):
        raise InvalidToken("The access token has no issuer")
    kid = header.get("kid")
    return TokenRoute(issuer, kid if isinstance(kid, str) else None, algorithm)


def select_key(jwks: Sequence[dict[str, Any]], kid: str | None, algorithm: str) -> jwt.PyJWK | None:
    """The signing key for `kid` (or the only suitable key when the token names none)."""
    jwk = signing_jwk(jwks, kid, algorithm)
    return public_key(jwk, algorithm) if jwk is not None else None


def public_key(jwk: dict[str, Any], algorithm: str) -> jwt.PyJWK | None:
    """The key a JWK describes, for `algorithm`; None when it describes none."""
    try:
        return jwt.PyJWK(jwk, algorithm)
    except jwt.PyJWTError:
        return None


def signing_jwk(jwks: Sequence[dict[str, Any]], kid: str | None, algorithm: str) -> dict[str, Any] | None:
    """The JWK of the signing key for `kid`, as published (or the only suitable one when the token names none)."""
    suitable = [
        jwk
        for jwk in jwks
        if jwk.get("kty") == _KEY_TYPES.get(algorithm[:2])
        and jwk.get("use", "sig") == "sig"
        and jwk.get("alg", algorithm) == algorithm
        and (kid is None or jwk.get("kid") == kid)
    ]
    return suitable[0] if len(suitable) == 1 else None


def verify_token(token: str, key: jwt.PyJWK, route: TokenRoute, *, audience: str, leeway: int) -> dict[str, Any]:
    """The claims of a token whose signature, issuer, audience and lifetime all check out."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=[route.algorithm],
            audience=audience,
            issuer=route.issuer,
            leeway=leeway,
            options={"require": ["exp", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("The access token has expired") from None
    except jwt.ImmatureSignatureError:
        raise InvalidToken("The access token is not valid yet") from None
    except jwt.InvalidAudienceError:
        raise InvalidToken("The access token is not meant for this server (aud)") from None
    except jwt.InvalidSignatureError:
        raise InvalidToken("The access token's signature does not verify") from None
    except jwt.MissingRequiredClaimError as missing:
        raise InvalidToken(f"The access token lacks the '{missing.claim}' claim") from None
    except jwt.PyJWTError:
        raise InvalidToken("The access token is invalid") from None
    return claims


def access_from_claims(claims: dict[str, Any]) -> Access:
    """The caller a verified token describes: SMART `scope` (or `scp`), `client_id`, `fhirUser`, `patient`."""
    scope = claims.get("scope", claims.get("scp", ""))
    text = " ".join(str(s) for s in scope) if isinstance(scope, list) else str(scope)
    client_id = next((str(claims[k]) for k in ("client_id", "azp", "cid") if claims.get(k)), None)
    subject = str(claims["sub"]) if claims.get("sub") else None
    user = str(claims["fhirUser"]) if claims.get("fhirUser") else (subject if subject != client_id else None)
    patient = claims.get("patient")
    if isinstance(patient, str):
        patient = patient.removeprefix("Patient/")
    return Access(
        client_id=client_id or subject,
        user=user,
        scopes=parse_scopes(text),
        patient=patient if isinstance(patient, str) and patient else None,
    )


@dataclass(frozen=True)
class Verified:
    """A token that verified: who it lets in, the key that signed it, and its lifetime (seconds since the epoch)."""

    access: Access
    issuer: str
    jwk: dict[str, Any]
    not_before: int
    expires: int


class VerifiedTokens:
    """Tokens that verified, remembered until they expire; the oldest is forgotten when full.

    A remembered token is let in only while its lifetime (with the leeway) lasts and while its
    issuer still publishes the key that signed it (the caller checks that), as a fresh check would."""

    def __init__(self, leeway: int, size: int = 4096) -> None:
        self._leeway = leeway
        self._size = size
        self._tokens: dict[str, Verified] = {}

    def get(self, token: str, now: float) -> Verified | None:
        verified = self._tokens.get(token)
        if verified is None:
            return None
        if not verified.not_before - self._leeway <= now < verified.expires + self._leeway:  # as PyJWT decides
            del self._tokens[token]  # checked anew, it gets the error it deserves
            return None
        return verified

    def remember(self, token: str, access: Access, issuer: str, jwk: dict[str, Any], claims: dict[str, Any]) -> None:
        if len(self._tokens) >= self._size:
            del self._tokens[next(iter(self._tokens))]
        # int(), as PyJWT reads them: it took both (a float could overflow on a huge integer)
        self._tokens[token] = Verified(access, issuer, jwk, int(claims.get("nbf", 0)), int(claims["exp"]))
