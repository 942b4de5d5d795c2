"""Keys and signed JWTs for the security tests: each test run generates its own keys."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

AUDIENCE = "http://testserver"
ISSUER = "https://issuer.backpath.test"


class KeyPair:
    """A private signing key and its public JWK (RSA → RS384, EC P-384 → ES384)."""

    def __init__(self, kind: str = "RSA", kid: str | None = None) -> None:
        self.kid = kid or uuid.uuid4().hex[:8]
        if kind == "RSA":
            self.private_key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.algorithm = "RS384"
            public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key.public_key()))
        else:
            self.private_key = ec.generate_private_key(ec.SECP384R1())
            self.algorithm = "ES384"
            public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.private_key.public_key()))
        self.public_jwk = {**public, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def sign(self, claims: dict[str, Any], **headers: Any) -> str:
        return jwt.encode(claims, self.private_key, algorithm=self.algorithm, headers={"kid": self.kid, **headers})


class Issuer:
    """A stand-in authorization server: signs access tokens and publishes its keys as a JWKS file."""

    def __init__(self, jwks_file: Path, name: str = ISSUER) -> None:
        self.name = name
        self.jwks_file = jwks_file
        self.keys = [KeyPair()]
        self.publish()

    @property
    def current(self) -> KeyPair:
        return self.keys[-1]

    def publish(self) -> None:
        self.jwks_file.write_text(json.dumps({"keys": [k.public_jwk for k in self.keys]}))

    def rotate(self) -> KeyPair:
        """A new signing key, published beside the old one."""
        self.keys.append(KeyPair())
        self.publish()
        return self.current

    def claims(self, scope: str, **extra: Any) -> dict[str, Any]:
        now = int(time.time())
        return {"iss": self.name, "aud": AUDIENCE, "sub": "user-1", "client_id": "test-app", "scope": scope, "iat": now, "exp": now + 300, **extra}

    def token(self, scope: str, **extra: Any) -> str:
        return self.current.sign(self.claims(scope, **extra))

    def headers(self, scope: str, **extra: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(scope, **extra)}", "Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
