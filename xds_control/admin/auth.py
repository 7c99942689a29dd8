"""Who may call the mutating admin RPCs.

Bound to a loopback address (all of 127.0.0.0/8, ::1, `localhost`) the admin
API is open: anyone who can reach it is on the machine. Bound anywhere else
(a wildcard, a routable address, a host name), mutating calls need
`authorization: Bearer <token>` metadata matching the token in the environment
variable named by `control_plane.admin_token_env`, and the server refuses to
start without one. Read-only calls stay open either way.

The token is compared in constant time and never written to a log line, an
error message or a metric.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Iterable, Mapping

from xds_control.errors import AdminError, Unauthorized


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # a host name other than localhost: assume it is reachable from elsewhere
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


class TokenGuard:
    """Checks mutating calls. `token=None` means the API is open (loopback bind)."""

    def __init__(self, token: str | None) -> None:
        self._expected = f"Bearer {token}".encode() if token else None

    @property
    def required(self) -> bool:
        return self._expected is not None

    def __repr__(self) -> str:  # never the token
        return f"TokenGuard(required={self.required})"

    def check(self, metadata: Iterable[tuple[str, str | bytes]] | None, method: str) -> None:
        """Raise `Unauthorized` unless the metadata carries the expected bearer token."""
        if self._expected is None:
            return
        presented = b""
        for key, value in metadata or ():
            if key.lower() == "authorization":
                presented = value if isinstance(value, bytes) else value.encode()
                break
        # Accept any capitalisation of the scheme; the token itself is compared in constant time.
        if presented[:7].lower() == b"bearer ":
            presented = b"Bearer " + presented[7:]
        if not hmac.compare_digest(presented, self._expected):
            raise Unauthorized(f"{method} needs 'authorization: Bearer <token>' with the admin token")


def guard_for(host: str, token_env: str | None, environ: Mapping[str, str] | None = None) -> TokenGuard:
    """The guard for a server bound to `host`. Raises AdminError when a token is needed and missing."""
    if is_loopback(host):
        return TokenGuard(None)
    env = os.environ if environ is None else environ
    if not token_env:
        raise AdminError(
            f"control_plane.admin is bound to {host}, which is not a loopback address: mutating admin calls need a "
            "token, so set control_plane.admin_token_env to the name of an environment variable holding it "
            "(or bind the admin API to 127.0.0.1)"
        )
    token = env.get(token_env, "").strip()
    if not token:
        raise AdminError(
            f"control_plane.admin is bound to {host}, which is not a loopback address, and the environment variable "
            f"{token_env} (control_plane.admin_token_env) is unset or empty: set it to the admin token"
        )
    return TokenGuard(token)
