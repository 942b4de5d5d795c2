"""Authenticating the CDS client by its JWT. Spec: https://cds-hooks.hl7.org/2.0/#trusting-cds-clients

Every call (discovery included) carries `Authorization: Bearer <JWT>` signed by the client. Accepted
only: ES384 or RS384 (never `none`, never HMAC), `typ` JWT and a `kid`; an `iss` on the allowlist,
whose keys are configured (out of band) or published at a `jku` on that issuer's allowlist; `aud` the
exact URL called; `exp`, `iat` (and `nbf`) within a small clock skew and a lifetime of at most an
hour; a `jti` (its replay is checked by the service, which remembers it until `exp`). Every failure
is a `ClientAuthError` whose reason is for the log, never for the caller.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = [
    "ALGORITHMS",
    "ClientAuthError",
    "ClientClaims",
    "PresentedToken",
    "TrustedClient",
    "presented_token",
    "trusted_clients",
    "verify_token",
]

ALGORITHMS = ("ES384", "RS384")
MAX_LIFETIME = 3600  # seconds from iat to exp
_MAX_CLAIM = 255


class ClientAuthError(Exception):
    """The client is not authenticated; `str(error)` says why, for the log only."""


@dataclass(frozen=True)
class TrustedClient:
    """An allowlisted issuer: its keys given out of band and/or the JWK Set URLs it may name in `jku`."""

    issuer: str
    keys: tuple[Mapping[str, Any], ...] = ()
    jku: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PresentedToken:
    """A bearer JWT whose header and issuer passed the checks that need no key."""

    token: str
    algorithm: str
    kid: str
    jku: str | None
    client: TrustedClient


@dataclass(frozen=True)
class ClientClaims:
    issuer: str
    jti: str
    expires_at: int  # seconds since the epoch
    tenant: str | None = None


def trusted_clients(config: str) -> dict[str, TrustedClient]:
    """The allowlist from its JSON: `{"<iss>": {"jwks": {"keys": [...]}, "jku": ["https://..."]}}`.

    Raises ValueError for a malformed list (so a deployment fails at start-up, not at the first call).
    """
    if not config.strip():
        return {}
    try:
        raw = json.loads(config)
    except json.JSONDecodeError as error:
        raise ValueError(f"the CDS client allowlist is not JSON: {error.msg}") from None
    if not isinstance(raw, dict):
        raise ValueError("the CDS client allowlist must map each issuer to its keys")
    clients: dict[str, TrustedClient] = {}
    for issuer, entry in raw.items():
        if not isinstance(entry, dict):
            raise ValueError(f"CDS client {issuer}: an object with 'jwks' and/or 'jku' is expected")
        keys = (entry.get("jwks") or {}).get("keys") or []
        jku = entry.get("jku") or []
        if not isinstance(keys, list) or not isinstance(jku, list) or not all(isinstance(u, str) for u in jku):
            raise ValueError(f"CDS client {issuer}: 'jwks' must be a JWK Set and 'jku' a list of URLs")
        if not keys and not jku:
            raise ValueError(f"CDS client {issuer}: give its keys ('jwks') or the URLs of its JWK Set ('jku')")
        for key in keys:
            try:
                _public_key(key, str(key.get("alg") or ""))
            except ClientAuthError as error:
                raise ValueError(f"CDS client {issuer}: {error}") from None
        clients[issuer] = TrustedClient(issuer, tuple(keys), frozenset(jku))
    return clients


def presented_token(authorization: str | None, clients: Mapping[str, TrustedClient]) -> PresentedToken:
    """The checks before any key is needed: a bearer JWT, its header, an allowlisted `iss` and `jku`."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ClientAuthError("no bearer token")
    token = token.strip()
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as error:
        raise ClientAuthError(f"not a JWT: {error}") from None
    algorithm = header.get("alg")
    if algorithm not in ALGORITHMS:
        raise ClientAuthError(f"algorithm {algorithm!r} is not accepted (only {', '.join(ALGORITHMS)})")
    if str(header.get("typ") or "").upper() != "JWT":
        raise ClientAuthError("the header's typ must be JWT")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ClientAuthError("the header has no kid")
    issuer = unverified.get("iss")
    client = clients.get(issuer) if isinstance(issuer, str) else None
    if client is None:
        raise ClientAuthError(f"issuer {issuer!r} is not on the allowlist")
    jku = header.get("jku")
    if jku is not None and (not isinstance(jku, str) or jku not in client.jku):
        raise ClientAuthError(f"jku {jku!r} is not on the allowlist of {client.issuer}")
    if jku is None and not client.keys:
        raise ClientAuthError(f"{client.issuer} publishes its keys at a jku, and the token names none")
    return PresentedToken(token, str(algorithm), kid, jku, client)


def verify_token(presented: PresentedToken, keys: Sequence[Mapping[str, Any]], audiences: Sequence[str], now: float, leeway: float) -> ClientClaims:
    """The signature with the key `kid` names, the audience, the times and the required claims."""
    jwk = next((k for k in keys if k.get("kid") == presented.kid), None)
    if jwk is None:
        raise ClientAuthError(f"no key {presented.kid!r} for {presented.client.issuer}")
    key = _public_key(jwk, presented.algorithm)
    try:
        claims = jwt.decode(
            presented.token,
            key,
            algorithms=[presented.algorithm],
            audience=list(audiences),
            issuer=presented.client.issuer,
            options={"require": ["iss", "aud", "exp", "iat", "jti"], "verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
    except jwt.PyJWTError as error:
        raise ClientAuthError(f"rejected: {error}") from None
    exp, iat, jti = claims["exp"], claims["iat"], claims["jti"]
    if not all(isinstance(t, int | float) and not isinstance(t, bool) for t in (exp, iat)):
        raise ClientAuthError("exp and iat must be numbers")
    if now > exp + leeway:
        raise ClientAuthError("expired")
    if iat > now + leeway:
        raise ClientAuthError("issued in the future")
    nbf = claims.get("nbf")
    if isinstance(nbf, int | float) and nbf > now + leeway:
        raise ClientAuthError("not valid yet (nbf)")
    if exp - iat > MAX_LIFETIME:
        raise ClientAuthError(f"valid for {exp - iat:.0f} s, more than {MAX_LIFETIME} s")
    if not isinstance(jti, str) or not jti or len(jti) > _MAX_CLAIM or len(presented.client.issuer) > 2 * _MAX_CLAIM:
        raise ClientAuthError("jti must be a string of at most 255 characters")
    tenant = claims.get("tenant")
    return ClientClaims(presented.client.issuer, jti, int(exp), tenant if isinstance(tenant, str) else None)


def _public_key(jwk: Mapping[str, Any], algorithm: str) -> Any:
    """The public key of a JWK, checked to suit `algorithm`: an EC P-384 key for ES384, RSA of at
    least 2048 bits for RS384 (an empty `algorithm` accepts either, for checking a configuration)."""
    if jwk.get("alg") and algorithm and jwk["alg"] != algorithm:
        raise ClientAuthError(f"key {jwk.get('kid')!r} is for {jwk['alg']}, the token is {algorithm}")
    try:
        key = jwt.PyJWK(dict(jwk)).key
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as error:
        raise ClientAuthError(f"key {jwk.get('kid')!r} is not a usable JWK: {error}") from None
    if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ClientAuthError(f"key {jwk.get('kid')!r} is a private key: publish only public keys")
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1" and algorithm in ("", "ES384"):
        return key
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048 and algorithm in ("", "RS384"):
        return key
    raise ClientAuthError(f"key {jwk.get('kid')!r} does not suit {algorithm or 'ES384 or RS384'}")
