"""Bearer access tokens: JWTs from a trusted issuer, checked with PyJWT against the issuer's JWKS.

Spec: https://www.rfc-editor.org/rfc/rfc6750 (bearer), RFC 7519 (JWT), RFC 7517 (JWK). Asymmetric
algorithms only (an HS256 token would make the public key a shared secret); `exp`, `iss` and `aud`
are required, `nbf` honoured; the key is picked by `kid`, so an issuer can rotate keys. Messages in
`InvalidToken` are safe to return: they never hold the token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from app.security.access import Access
from app.security.scopes import parse_scopes

__all__ = ["ASYMMETRIC_ALGORITHMS", "InvalidToken", "TokenRoute", "access_from_claims", "route_token", "select_key", "verify_token"]

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
    suitable = [
        jwk
        for jwk in jwks
        if jwk.get("kty") == _KEY_TYPES.get(algorithm[:2])
        and jwk.get("use", "sig") == "sig"
        and jwk.get("alg", algorithm) == algorithm
        and (kid is None or jwk.get("kid") == kid)
    ]
    if len(suitable) != 1:
        return None
    try:
        return jwt.PyJWK(suitable[0], algorithm)
    except jwt.PyJWTError:
        return None


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
