"""The admin cookie: the token a control plane makes at start when none is configured.

Every mutating admin call needs a token, loopback included (any local user can reach a loopback port).
With `control_plane.admin_token_env` unset, the control plane makes a random token at start and writes it
to a file only its user can read (mode 0600, in a directory only that user can enter); whoever can read the
file may steer the control plane: the operator's shell (`xds-control admin ...`) and the aggregator `up`
starts, both running as that user. The file is rewritten at every start (a restarted control plane has a
new token) and removed at a clean stop.

Where: `control_plane.admin_cookie_file` if set, else `admin-<port>.cookie` (the admin port) in
`$XDG_RUNTIME_DIR/xds-control/` when XDG_RUNTIME_DIR is set, else in `~/.cache/xds-control/`. A client finds
it from the same config (or, given only `--address`, from the port): see `cookie_path`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

from xds_control.config import ControlPlaneConfig
from xds_control.errors import AdminError

MAX_TOKEN_BYTES = 512  # a cookie (or a configured token) longer than this is not read


def default_dir() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR", "").strip()
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "xds-control"
    return Path.home() / ".cache" / "xds-control"


def cookie_path_for_port(port: int, configured: str | None = None) -> Path:
    return Path(configured).expanduser() if configured else default_dir() / f"admin-{port}.cookie"


def cookie_path(control_plane: ControlPlaneConfig) -> Path:
    """Where the control plane configured as `control_plane` keeps its cookie."""
    return cookie_path_for_port(control_plane.admin_host_port[1], control_plane.admin_cookie_file)


def _private_dir(directory: Path) -> None:
    """Create `directory` (0700) or check that it is ours and writable by nobody else."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.stat()
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise AdminError(
            f"the admin cookie directory {directory} is not this user's own (owner or permissions): refusing to "
            "write the admin token there; set control_plane.admin_cookie_file or control_plane.admin_token_env"
        )


def write_cookie(path: Path) -> str:
    """Make a fresh token and write it to `path` (0600, atomically). Returns the token. AdminError on failure."""
    token = secrets.token_urlsafe(32)
    try:
        _private_dir(path.parent)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        os.replace(tmp, path)  # a rename: never follows a link planted at `path`
    except OSError as exc:
        raise AdminError(
            f"cannot write the admin cookie file {path}: {exc.strerror or exc}; set control_plane.admin_cookie_file "
            "to a writable path or control_plane.admin_token_env to a configured token"
        ) from None
    return token


def read_cookie(path: Path) -> str | None:
    """The token in the cookie file at `path`, or None when there is none (or it cannot be read)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_TOKEN_BYTES + 1)
    except OSError:
        return None
    token = raw.decode("ascii", errors="replace").strip()
    return token if token and len(raw) <= MAX_TOKEN_BYTES else None


def remove_cookie(path: Path, ours: Callable[[str | None], bool]) -> None:
    """Remove the cookie at a clean stop, unless it no longer holds our token (`ours(token)`): another
    control plane on the same port has written its own since."""
    if ours(read_cookie(path)):
        with contextlib.suppress(OSError):
            path.unlink()


def token_source(
    control_plane: ControlPlaneConfig, token_env: str | None = None, environ: Mapping[str, str] | None = None
) -> tuple[Callable[[], str | None], str]:
    """Where a client of the control plane configured as `control_plane` finds the admin token, as (a reader
    called at each mutating call, a description for refusals). In order: the variable `token_env` (a CLI
    override), the variable `admin_token_env` names (when set and non-empty), the admin cookie file."""
    env = os.environ if environ is None else environ
    if token_env:
        return (lambda: env.get(token_env, "").strip() or None), f"${token_env}"
    configured = control_plane.admin_token_env
    if configured and env.get(configured, "").strip():
        return (lambda: env.get(configured, "").strip() or None), f"${configured}"
    path = cookie_path(control_plane)
    return (lambda: read_cookie(path)), f"the admin cookie file {path}"
