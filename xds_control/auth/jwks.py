"""JWKS files: read and checked by the control plane, which pushes them to Envoy inline.

`read_keys(config)` reads every `auth.issuers[].jwks_file` (ConfigError naming
the issuer's field when one is missing, too large or not a JWKS; the file's
text is never echoed: it is key material). `watch_keys(get_config, store)`
re-reads them when one changes on disk (its directory is watched: a rotation
usually replaces the file) and puts the new set into the view
(`ViewStore.set_keys`), which re-pushes the public listener. A file that
became unreadable or invalid keeps the last good keys and is logged once per
change.

Only public keys belong in a JWKS file: a key with a private part (`d`, or a
symmetric `k`) is refused, so a misplaced signing key is never pushed to
Envoy or echoed anywhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path

import watchfiles

from xds_control.config import Config
from xds_control.errors import ConfigError, ConfigIssue
from xds_control.view import ViewStore

log = logging.getLogger("xds_control.auth.jwks")
MAX_JWKS_BYTES = 256 * 1024
MAX_KEYS = 64
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k")


def check_jwks(text: str) -> str | None:
    """Why `text` is not a JWKS of public keys, or None when it is."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return "not JSON"
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or not keys:
        return 'not a JWKS: no "keys" list with at least one key'
    if len(keys) > MAX_KEYS:
        return f"more than {MAX_KEYS} keys"
    for key in keys:
        if not isinstance(key, dict) or not isinstance(key.get("kty"), str):
            return 'a key without "kty"'
        if any(member in key for member in _PRIVATE_MEMBERS):
            return "a key with a private or symmetric part: only public keys belong here"
    return None


def read_jwks(path: str) -> str:
    """The file's text if it is a JWKS of public keys; ValueError (its reason) else."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_JWKS_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read it: {exc.strerror or type(exc).__name__}") from None
    if len(raw) > MAX_JWKS_BYTES:
        raise ValueError(f"larger than {MAX_JWKS_BYTES // 1024} KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    problem = check_jwks(text)
    if problem is not None:
        raise ValueError(problem)
    return text


def key_files(config: Config) -> dict[str, str]:
    """jwks_file path -> its field path, for every issuer that has one."""
    if config.auth is None:
        return {}
    return {i.jwks_file: f"auth.issuers.{n}.jwks_file" for n, i in enumerate(config.auth.issuers) if i.jwks_file}


def read_keys(config: Config) -> dict[str, str]:
    """Every JWKS file of the config, read and checked. ConfigError lists each bad one."""
    keys: dict[str, str] = {}
    issues = []
    for path, field in key_files(config).items():
        try:
            keys[path] = read_jwks(path)
        except ValueError as exc:
            issues.append(ConfigIssue(field, str(exc), path))
    if issues:
        raise ConfigError(issues)
    return keys


def refresh_keys(config: Config, store: ViewStore) -> None:
    """Re-read the config's JWKS files into the view; a bad one keeps its last good text (logged)."""
    current = dict(store.current.keys)
    fresh: dict[str, str] = {}
    for path, field in key_files(config).items():
        try:
            fresh[path] = read_jwks(path)
        except ValueError as exc:
            log.error(
                "JWKS file rejected; keeping its last good keys: %s",
                exc,
                extra={"event": "jwks_reload", "field": field, "path": path, "result": "rejected"},
            )
            if path in current:
                fresh[path] = current[path]
    if fresh != current:
        store.set_keys(fresh)
        log.info("JWKS reloaded", extra={"event": "jwks_reload", "files": len(fresh), "result": "applied"})


async def watch_keys(get_config: Callable[[], Config], store: ViewStore) -> None:
    """Refresh the keys whenever a JWKS file's directory changes (and the config names other files: on the
    next change; `refresh_keys` is also called by a config reload)."""
    while True:
        files = key_files(get_config())
        if not files:
            return
        directories = sorted({str(Path(p).resolve().parent) for p in files})
        watched = {str(Path(p).resolve()) for p in files}
        async for changes in watchfiles.awatch(*directories, debounce=100, step=20, recursive=False):
            if any(str(Path(p).resolve()) in watched for _change, p in changes):
                refresh_keys(get_config(), store)
            if key_files(get_config()) != files:
                break
        await asyncio.sleep(0)
