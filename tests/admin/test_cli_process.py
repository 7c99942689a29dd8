"""`xds-control admin watch` as a real process: prints each change and stops cleanly on Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys

import pytest

from tests.support.procs import Proc

from .conftest import Harness

pytestmark = pytest.mark.integration


def stop(proc: Proc) -> None:
    proc.stop()
    if proc.popen.stdout is not None:  # Proc leaves its pipe open; close it so -W error stays quiet
        proc.popen.stdout.close()


async def test_watch_process_streams_changes_and_exits_130_on_ctrl_c(harness: Harness) -> None:
    proc = Proc(
        [sys.executable, "-m", "xds_control.cli", "admin", "watch", "--json", "--address", harness.target],
        name="admin-watch",
    )
    try:
        first = json.loads(await asyncio.to_thread(proc.wait_for_line, '"version": 1', 20))
        assert [b["name"] for b in first["backends"]] == ["weather", "calc"]
        harness.store.set_drained("weather", True)
        second = json.loads(await asyncio.to_thread(proc.wait_for_line, '"version": 2', 20))
        assert second["backends"][0]["drained"] is True
        proc.signal(signal.SIGINT)
        try:
            code = await asyncio.to_thread(proc.popen.wait, 20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"admin watch did not stop on SIGINT; its stacks:\n{await asyncio.to_thread(proc.stacks)}")
    finally:
        await asyncio.to_thread(stop, proc)
    assert code == 130
    assert "Traceback" not in proc.output


async def test_watch_process_reports_a_control_plane_shutdown(harness: Harness) -> None:
    proc = Proc(
        [sys.executable, "-m", "xds_control.cli", "admin", "watch", "--address", harness.target], name="admin-watch"
    )
    try:
        await asyncio.to_thread(proc.wait_for_line, "version 1:", 20)
        await harness.server.stop(grace=5)
        line = await asyncio.to_thread(proc.wait_for_line, "error:", 20)
        code = await asyncio.to_thread(proc.popen.wait, 20)
    finally:
        await asyncio.to_thread(stop, proc)
    assert code == 1
    assert "closed the watch stream" in line
    assert "Traceback" not in proc.output
