"""Config hot reload: the file changing on disk, or SIGHUP, re-reads it.

    await watch_config(path, monitor.apply_config)

The file's directory is watched (editors and Kubernetes config maps replace
the file rather than write it in place), and only changes to that one file
count. A new file that fails validation is logged with every bad field path
and the running config is kept; a valid one that differs from the last one
applied is handed to `on_config`. SIGHUP forces a re-read (where the loop
supports signal handlers; elsewhere only the file watch works).

Each reload that changes something, or fails, is one log line on
`xds_control.health.reload` with `extra={event: "config_reload", path,
source: file | sighup, result: applied | rejected | failed}` (plus `backends`
when applied, `fields` when rejected); an unchanged file is a DEBUG line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

import watchfiles

from xds_control.config import Config, load_config
from xds_control.errors import ConfigError

logger = logging.getLogger("xds_control.health.reload")


async def _reload(path: Path, last: Config | None, on_config: Callable[[Config], None], trigger: str) -> Config | None:
    """Load `path`; apply it if valid and new. Returns the config now in force (None: unchanged from `last`).

    The file is read and validated on a worker thread: a large or hostile file (bounded by the loader in
    bytes, nesting and alias expansion) costs the event loop nothing but the switch back."""
    base = {"event": "config_reload", "path": str(path), "source": trigger}
    try:
        config = await asyncio.to_thread(load_config, path)
    except ConfigError as exc:
        fields = ", ".join(issue.path or "<root>" for issue in exc.issues)
        logger.error(
            "config reload rejected; keeping the running config: %s",
            "; ".join(str(issue) for issue in exc.issues),
            extra={**base, "result": "rejected", "fields": fields},
        )
        return last
    if config == last:
        logger.debug("config unchanged", extra={**base, "result": "unchanged"})
        return last
    try:
        on_config(config)
    except Exception:
        logger.exception("applying the reloaded config failed", extra={**base, "result": "failed"})
        return last
    logger.info("config reloaded", extra={**base, "result": "applied", "backends": len(config.backends)})
    return config


async def watch_config(
    path: str | os.PathLike[str],
    on_config: Callable[[Config], None],
    *,
    initial: Config | None = None,
    ready: asyncio.Event | None = None,
    sighup: bool = True,
) -> None:
    """Watch `path` (and SIGHUP) until cancelled, calling `on_config(new)` for every valid, changed config.

    `initial` is the config already running (a reload to an identical file is
    then a no-op); by default the file's current content is taken as running.
    `ready` is set once the watch is in place.
    """
    target = Path(path).resolve()
    last = initial
    if last is None:
        with contextlib.suppress(ConfigError):
            last = load_config(target)
    hup = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = False
    if sighup:
        try:
            loop.add_signal_handler(signal.SIGHUP, hup.set)
            installed = True
        except (NotImplementedError, RuntimeError, ValueError):
            logger.debug("SIGHUP reload unavailable on this loop")
    stop = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as group:

            async def on_hup() -> None:
                nonlocal last
                while True:
                    await hup.wait()
                    hup.clear()
                    last = await _reload(target, last, on_config, "sighup")

            group.create_task(on_hup())
            started = asyncio.Event()

            async def on_files() -> None:
                nonlocal last
                watcher = watchfiles.awatch(
                    target.parent,
                    # Only the config file: its directory may be busy (/tmp), and watchfiles logs every batch.
                    watch_filter=lambda _change, changed: Path(changed).resolve() == target,
                    stop_event=stop,
                    debounce=200,
                    step=20,
                    rust_timeout=200,
                    yield_on_timeout=True,
                    recursive=False,
                )
                async for changes in watcher:
                    if not started.is_set():
                        started.set()
                        if ready is not None:
                            ready.set()
                    if any(Path(changed).resolve() == target for _, changed in changes):
                        last = await _reload(target, last, on_config, "file")

            group.create_task(on_files())
            try:
                await started.wait()
                await asyncio.Future()
            finally:
                stop.set()  # lets the watcher thread return before the group waits for it
    finally:
        stop.set()
        if installed:
            loop.remove_signal_handler(signal.SIGHUP)
