"""Config hot reload: file changes and SIGHUP; an invalid file is logged by field and the running config kept."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from xds_control.config import Config, parse_config_text
from xds_control.health.reload import watch_config

BASE = "health:\n  interval: 30s\nbackends:\n  - name: a\n    url: http://127.0.0.1:9001/mcp\n"


def write(path: Path, text: str) -> None:
    """Replace the file the way editors and config maps do (write a temp file, rename over)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


@contextlib.asynccontextmanager
async def watching(path: Path, initial: Config | None = None) -> AsyncIterator[asyncio.Queue[Config]]:
    applied: asyncio.Queue[Config] = asyncio.Queue()
    ready = asyncio.Event()
    task = asyncio.create_task(watch_config(path, applied.put_nowait, initial=initial, ready=ready))
    try:
        async with asyncio.timeout(5):
            await ready.wait()
        yield applied
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def next_config(applied: asyncio.Queue[Config]) -> Config:
    async with asyncio.timeout(5):
        return await applied.get()


async def test_a_valid_change_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(BASE)
    async with watching(path) as applied:
        write(path, BASE.replace("30s", "5s"))
        assert (await next_config(applied)).health.interval == 5.0
        path.write_text(BASE.replace("30s", "7s"))  # written in place, too
        assert (await next_config(applied)).health.interval == 7.0


async def test_an_invalid_file_is_logged_by_field_and_the_running_config_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="xds_control.health.reload")
    path = tmp_path / "config.yaml"
    path.write_text(BASE)
    async with watching(path) as applied:
        write(path, BASE.replace("30s", "soon"))
        await asyncio.wait_for(_logged(caplog, "health.interval"), timeout=5)
        assert applied.empty()
        write(path, BASE.replace("30s", "9s"))
        assert (await next_config(applied)).health.interval == 9.0
    record = next(r for r in caplog.records if "rejected" in r.getMessage())
    assert "health.interval" in record.__dict__["fields"]


async def test_an_identical_rewrite_and_other_files_change_nothing(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(BASE)
    async with watching(path) as applied:
        write(path, BASE)
        (tmp_path / "other.yaml").write_text("backends: []\n")
        write(path, BASE.replace("30s", "3s"))  # a marker change, so the earlier events have surely been seen
        assert (await next_config(applied)).health.interval == 3.0
        assert applied.empty()


async def test_sighup_rereads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(BASE)
    running = parse_config_text(BASE.replace("30s", "1m"))
    async with watching(path, initial=running) as applied:
        os.kill(os.getpid(), signal.SIGHUP)
        assert (await next_config(applied)).health.interval == 30.0
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL  # the handler is removed with the watch


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> None:
    while not any(text in r.getMessage() for r in caplog.records):
        await asyncio.sleep(0.02)
