"""Who may call the mutating admin RPCs: whoever holds the admin token, loopback included.

Every mutating call needs `authorization: Bearer <token>` metadata (any local user can reach a loopback
port, so loopback alone proves nothing). The token is either configured (the environment variable named by
`control_plane.admin_token_env`) or, when none is, made at start and written to the admin cookie file
(`cookie.py`), which only the control plane's user can read. Bound off loopback (a wildcard, a routable
address, a host name) a configured token is required and the server refuses to start without one: a
cookie on this machine is no credential for a caller elsewhere. Read-only calls stay open either way.

The token is compared in constant time and never written to a log line, an error message or a metric.
A refusal names where the right token is found (the variable's config key, or the cookie file's path),
never the token.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from xds_control.admin.cookie import write_cookie
from xds_control.config import is_loopback_host
from xds_control.errors import AdminError, Unauthorized


def is_loopback(host: str) -> bool:
    return is_loopback_host(host)


class TokenGuard:
    """Checks mutating calls. `token=None` means the API is open (only for in-process tests).
    `hint` says where a caller finds the token (shown in refusals)."""

    def __init__(self, token: str | None, hint: str = "") -> None:
        self._expected = f"Bearer {token}".encode() if token else None
        self.hint = hint

    @property
    def required(self) -> bool:
        return self._expected is not None

    def accepts(self, token: str | None) -> bool:
        """Whether `token` is the expected one (constant time)."""
        if self._expected is None or token is None:
            return False
        return hmac.compare_digest(f"Bearer {token}".encode(), self._expected)

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
            what = "a different token" if presented else "no token"
            raise Unauthorized(
                f"{method} needs 'authorization: Bearer <token>' with the admin token and got {what}"
                + (f"; {self.hint}" if self.hint else "")
            )


def configured_token(token_env: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The token in the variable `token_env` names (stripped), or None when unset or empty."""
    if not token_env:
        return None
    env = os.environ if environ is None else environ
    return env.get(token_env, "").strip() or None


def configured_guard(host: str, token_env: str | None, environ: Mapping[str, str] | None = None) -> TokenGuard | None:
    """The guard of a configured token, or None when the server is to make one (a loopback bind with no
    configured token: see `cookie_guard`). Off loopback without a configured token: AdminError naming what
    to set. Decided before any I/O."""
    token = configured_token(token_env, environ)
    if token is not None:
        return TokenGuard(token, "it is the token control_plane.admin_token_env names")
    if is_loopback(host):
        return None
    if not token_env:
        raise AdminError(
            f"control_plane.admin is bound to {host}, which is not a loopback address: mutating admin calls need a "
            "token, so set control_plane.admin_token_env to the name of an environment variable holding it "
            "(or bind the admin API to 127.0.0.1)"
        )
    raise AdminError(
        f"control_plane.admin is bound to {host}, which is not a loopback address, and the environment variable "
        f"{token_env} (control_plane.admin_token_env) is unset or empty: set it to the admin token"
    )


def cookie_guard(cookie: Path) -> TokenGuard:
    """Make a token, write it to the cookie file `cookie` (AdminError if that fails) and guard with it."""
    return TokenGuard(write_cookie(cookie), f"this control plane wrote it to {cookie} (readable by its user only)")
