"""The identity Envoy verified, as the aggregator reads it. Pure.

With `auth` configured, Envoy's public listener

1. removes every request header named here (`IDENTITY_HEADERS`) before any
   filter runs (the HCM's early header mutation), so a client cannot send one;
2. verifies the bearer token (jwt_authn) and only then sets
   `PAYLOAD_HEADER` to the token's payload (base64url JSON) and
   `PRINCIPAL_HEADER` to the principal claim (the rate limiter's key; set
   only when a rate limit or a scope check is configured, as nothing else
   reads it);
3. drops the `Authorization` header (jwt_authn `forward: false`): the token
   never reaches the aggregator, let alone a backend.

The aggregator reads identity only from `PAYLOAD_HEADER`, and only when
`auth` is configured; without `auth` it reads nothing and everyone is
anonymous and granted everything. `claims_of` never raises: a missing,
oversized or malformed payload is `None` (the endpoint answers 401).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from xds_control.config import Config
from xds_control.sanitize import preview

PAYLOAD_HEADER = "x-xds-control-jwt-payload"
PRINCIPAL_HEADER = "x-xds-control-principal"
IDENTITY_HEADERS = (PAYLOAD_HEADER, PRINCIPAL_HEADER)
MAX_PAYLOAD_CHARS = 64 * 1024
MAX_PRINCIPAL_CHARS = 256


@dataclass(frozen=True, slots=True)
class Identity:
    principal: str  # escaped and truncated: safe to log
    claims: Mapping[str, Any]
    owner: bytes = b""  # who this is exactly (issuer and principal claim, or the whole token without one, digested)


def claims_of(header: str | bytes | None) -> dict[str, Any] | None:
    """The JSON object in a base64url payload header, or None."""
    if header is None:
        return None
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    if not header or len(header) > MAX_PAYLOAD_CHARS:
        return None
    try:
        raw = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
        claims = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        return None
    return claims if isinstance(claims, dict) else None


def identity_of(header: str | bytes | None, principal_claim: str) -> Identity | None:
    claims = claims_of(header)
    if claims is None:
        return None
    value = claims.get(principal_claim)
    named = isinstance(value, str | int) and value != ""
    principal = preview(value, MAX_PRINCIPAL_CHARS) if named else "-"
    if named:
        exact = json.dumps(["principal", claims.get("iss"), value], sort_keys=True, default=str)
    else:  # no principal claim: nobody is known to be the same one, so only this very token (its claims) is
        exact = json.dumps(["token", claims], sort_keys=True, default=str)
    return Identity(principal, claims, hashlib.blake2b(exact.encode(), digest_size=16).digest())


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge(config: Config, *, error: str | None = None, scope: str | None = None) -> str:
    """The `WWW-Authenticate` value (RFC 6750 §3, RFC 9728 §5.1)."""
    parts = [f"resource_metadata={_quoted(config.resource_metadata_url())}"]
    if error is not None:
        parts.append(f"error={_quoted(error)}")
    if scope is not None:
        parts.append(f"scope={_quoted(scope)}")
    return "Bearer " + ", ".join(parts)
