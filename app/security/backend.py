"""SMART Backend Services: clients authenticate with a signed JWT (`private_key_jwt`) and get a
short-lived access token for `system/` scopes, with no human involved.

Spec: https://hl7.org/fhir/smart-app-launch/STU2.2/backend-services.html and RFC 7523. Registered
clients come from configuration with their public JWKS and the scopes they may be granted. PyJWT does
all signing and verification.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from app.security.access import AUDIT_TYPES
from app.security.scopes import PERMISSIONS, Scope, parse_scopes
from app.security.tokens import ASYMMETRIC_ALGORITHMS, select_key

__all__ = [
    "ASSERTION_TYPE",
    "BackendClient",
    "OAuthError",
    "ReplayGuard",
    "SigningKey",
    "client_assertion",
    "grant_scopes",
    "issue_access_token",
    "load_clients",
    "load_signing_key",
    "verify_client_assertion",
]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_MAX_ASSERTION_LIFETIME = 300  # SMART: exp no more than five minutes in the future


class OAuthError(Exception):
    """An OAuth 2.0 error response (RFC 6749 §5.2): `error` code, a safe description, the status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


@dataclass(frozen=True)
class BackendClient:
    client_id: str
    jwks: tuple[dict[str, Any], ...]  # public keys the client signs its assertions with
    scopes: tuple[Scope, ...]  # the most it may be granted


def load_clients(data: Any) -> dict[str, BackendClient]:
    """Clients from configuration: `{"clients": [{"client_id", "jwks": {"keys": [...]}, "scope"}]}`."""
    clients = {}
    for entry in data.get("clients", []) if isinstance(data, dict) else []:
        client_id, keys = entry.get("client_id"), (entry.get("jwks") or {}).get("keys")
        if not isinstance(client_id, str) or not isinstance(keys, list) or not keys:
            raise ValueError("each backend client needs a client_id and a jwks with keys")
        if any("d" in key for key in keys):
            raise ValueError(f"the JWKS of backend client {client_id} holds a private key; register public keys only")
        clients[client_id] = BackendClient(client_id, tuple(keys), parse_scopes(str(entry.get("scope", ""))))
    return clients


class ReplayGuard:
    """Assertion ids seen until they expire: each assertion authenticates once (RFC 7523 §3)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], float] = {}

    def first_use(self, client_id: str, jti: str, expires: float, now: float) -> bool:
        self._seen = {key: exp for key, exp in self._seen.items() if exp >= now}
        if (client_id, jti) in self._seen:
            return False
        self._seen[(client_id, jti)] = expires
        return True


def verify_client_assertion(
    assertion: str, clients: dict[str, BackendClient], token_url: str, replay: ReplayGuard, now: float | None = None
) -> BackendClient:
    """The client whose signed assertion this is; `invalid_client` for anything wrong with it."""
    now = time.time() if now is None else now
    try:
        header = jwt.get_unverified_header(assertion)
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise OAuthError("invalid_client", "client_assertion is not a well-formed JWT", 401) from None
    algorithm = header.get("alg")
    if algorithm not in ASYMMETRIC_ALGORITHMS:
        raise OAuthError("invalid_client", "client_assertion must be signed with an asymmetric algorithm (RS384 or ES384)", 401)
    client = clients.get(str(unverified.get("iss")))
    if client is None:
        raise OAuthError("invalid_client", "unknown client", 401)
    kid = header.get("kid")
    key = select_key(client.jwks, kid if isinstance(kid, str) else None, algorithm)
    if key is None:
        raise OAuthError("invalid_client", "no registered key of the client matches the assertion's kid and alg", 401)
    try:
        claims = jwt.decode(
            assertion,
            key.key,
            algorithms=[algorithm],
            audience=token_url,
            issuer=client.client_id,
            options={"require": ["exp", "iss", "sub", "aud", "jti"]},
        )
    except jwt.PyJWTError as error:
        raise OAuthError("invalid_client", f"client_assertion rejected: {error}", 401) from None
    if claims["sub"] != client.client_id:
        raise OAuthError("invalid_client", "client_assertion sub must equal iss (the client_id)", 401)
    if claims["exp"] > now + _MAX_ASSERTION_LIFETIME + 30:
        raise OAuthError("invalid_client", "client_assertion expires more than five minutes from now", 401)
    if not replay.first_use(client.client_id, str(claims["jti"]), float(claims["exp"]), now):
        raise OAuthError("invalid_client", "client_assertion jti was already used", 401)
    return client


def grant_scopes(requested: str, allowed: Sequence[Scope]) -> str:
    """The requested system/ scopes the client may have, in v2 form; the rest are dropped."""
    granted = []
    for scope in parse_scopes(requested):
        if scope.context == "system" and any(_covers(a, scope) for a in allowed):
            letters = "".join(p for p in PERMISSIONS if p in scope.permissions)
            granted.append(f"system/{scope.resource_type}.{letters}")
    return " ".join(dict.fromkeys(granted))


def _covers(allowed: Scope, wanted: Scope) -> bool:
    same_type = allowed.resource_type == wanted.resource_type or (
        allowed.resource_type == "*" and wanted.resource_type not in AUDIT_TYPES
    )
    return allowed.context == wanted.context and same_type and wanted.permissions <= allowed.permissions


@dataclass(frozen=True)
class SigningKey:
    """One of this server's keys: the one it signs its tokens with (`public_jwk` published at the
    JWKS URL), or the one it signs its client assertions with as a partner's backend client."""

    private_key: Any
    algorithm: str
    kid: str
    public_jwk: dict[str, Any]


def load_signing_key(pem: bytes) -> SigningKey:
    """An RSA (RS384) or EC P-256/P-384 (ES256/ES384) private key in PEM; kid = RFC 7638 thumbprint."""
    key = load_pem_private_key(pem, password=None)
    if isinstance(key, rsa.RSAPrivateKey):
        algorithm = "RS384"
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        members: tuple[str, ...] = ("e", "kty", "n")
    elif isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in ("secp256r1", "secp384r1"):
        algorithm = "ES256" if key.curve.name == "secp256r1" else "ES384"
        public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        members = ("crv", "kty", "x", "y")
    else:
        raise ValueError("the signing key must be RSA or EC P-256/P-384")
    canonical = json.dumps({m: public[m] for m in members}, separators=(",", ":"), sort_keys=True)
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).decode().rstrip("=")
    return SigningKey(key, algorithm, kid, {**public, "kid": kid, "alg": algorithm, "use": "sig"})


def client_assertion(key: SigningKey, *, client_id: str, token_url: str, lifetime: int = 240, now: float | None = None) -> str:
    """Our signed `private_key_jwt` for a partner's token endpoint (`iss` = `sub` = our client id,
    `aud` = that token URL, a fresh `jti`, `exp` at most five minutes away), `kid` in the header."""
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "iat": issued,
        "exp": issued + min(lifetime, _MAX_ASSERTION_LIFETIME),
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid})


def issue_access_token(
    key: SigningKey, *, issuer: str, audience: str, client_id: str, scope: str, lifetime: int, now: float | None = None
) -> str:
    """A signed access token for a backend client (`sub` and `client_id` are the client)."""
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": client_id,
        "client_id": client_id,
        "scope": scope,
        "iat": issued,
        "nbf": issued,
        "exp": issued + lifetime,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid})
