"""A development issuer: signing keys, their JWKS, and tokens. FOR DEVELOPMENT ONLY.

    xds-control dev-token --keys DIR init                     # DIR/dev-issuer.pem (private) + DIR/jwks.json
    xds-control dev-token --keys DIR --sub alice --groups ops # prints a signed token

A real deployment gets its tokens from its identity provider; this exists so
the walk-through in examples/auth and the tests have an issuer. Keys are made
with `cryptography` and tokens signed with PyJWT (RS256 or ES256). The private
key file is written with mode 0600; it never enters a JWKS.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

Alg = Literal["RS256", "ES256"]
DEV_ISSUER = "https://dev-issuer.xds-control.invalid"
PRIVATE_KEY_FILE = "dev-issuer.pem"
JWKS_FILE = "jwks.json"


@dataclass(frozen=True)
class SigningKey:
    alg: Alg
    kid: str
    private: Any  # a cryptography private key

    def public_jwk(self) -> dict[str, Any]:
        algorithm = RSAAlgorithm if self.alg == "RS256" else ECAlgorithm
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(self.private.public_key()))
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def pem(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def sign(self, claims: dict[str, Any], *, headers: dict[str, Any] | None = None) -> str:
        return jwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": self.kid, **(headers or {})})


def new_key(alg: Alg = "ES256", kid: str | None = None) -> SigningKey:
    private: Any = (
        ec.generate_private_key(ec.SECP256R1())
        if alg == "ES256"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    return SigningKey(alg, kid or uuid.uuid4().hex[:12], private)


def load_key(pem: bytes, kid: str) -> SigningKey:
    private: Any = serialization.load_pem_private_key(pem, password=None)
    return SigningKey("ES256" if isinstance(private, ec.EllipticCurvePrivateKey) else "RS256", kid, private)


def jwks(*keys: SigningKey) -> str:
    return json.dumps({"keys": [k.public_jwk() for k in keys]}, indent=2)


def claims(
    *,
    sub: str,
    audience: str,
    issuer: str = DEV_ISSUER,
    groups: list[str] | None = None,
    scope: str | None = None,
    lifetime: float = 3600,
    now: float | None = None,
) -> dict[str, Any]:
    issued = int(now if now is not None else time.time())
    body: dict[str, Any] = {"iss": issuer, "sub": sub, "aud": audience, "iat": issued, "nbf": issued,
                            "exp": issued + int(lifetime)}  # fmt: skip
    if groups:
        body["groups"] = groups
    if scope:
        body["scope"] = scope
    return body


def init_dir(directory: Path, alg: Alg = "ES256") -> SigningKey:
    """A new key in `directory`: the private PEM (0600, its kid in the file name's sibling) and jwks.json."""
    directory.mkdir(parents=True, exist_ok=True)
    key = new_key(alg)
    pem_path = directory / PRIVATE_KEY_FILE
    fd = os.open(pem_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.pem())
    (directory / "dev-issuer.kid").write_text(key.kid)
    (directory / JWKS_FILE).write_text(jwks(key))
    return key


def load_dir(directory: Path) -> SigningKey:
    return load_key((directory / PRIVATE_KEY_FILE).read_bytes(), (directory / "dev-issuer.kid").read_text().strip())
