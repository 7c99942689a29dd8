"""`xds-control admin watch` on a terminal: a live table, redrawn from the Watch stream as the view changes.

The CLI runs in a pseudo-terminal against a real in-process control plane; the test changes the view (a state
change in the store, then a drain and an undrain through the admin API) and reads each change off the redrawn
table. Only the live path draws a table: the line and JSON modes are tested in test_cli_process.py.
"""

from __future__ import annotations

import asyncio
import sys

import pytest

from tests.support.stack import running_control_plane, stack_config
from tests.support.terminal import Terminal, last_title, table_row
from tests.support.waiting import async_wait_until
from xds_control.admin.client import AdminClient
from xds_control.view import BackendState

pytestmark = pytest.mark.integration

START = 30.0  # the CLI's first frame: a Python start and imports on a loaded 2-core machine
STEP = 10.0  # each redraw after a change
HEADER = ["NAME", "STATE", "BREAKER", "ROUTABLE", "LAST PROBE", "TOOLS", "LAST ERROR", "ENDPOINTS"]


async def test_watch_on_a_terminal_redraws_the_table_on_every_change() -> None:
    config = stack_config(
        [
            {"name": "weather", "url": "http://127.0.0.1:9/mcp"},
            {"name": "calendar", "endpoints": ["http://127.0.0.1:9/mcp", "http://127.0.0.2:9/mcp"]},
        ]
    )
    async with running_control_plane(config) as plane:  # no health monitor: the test drives the view
        target = f"127.0.0.1:{plane.admin.port}"
        argv = [sys.executable, "-m", "xds_control.cli", "admin", "watch", "--address", target, "--count", "4"]
        term = await asyncio.to_thread(Terminal, argv)
        try:

            async def shows(name: str, cells: dict[str, str], version: int, timeout: float = STEP) -> list[str]:
                def drawn() -> list[str] | None:
                    text = term.text
                    frame = text[text.rfind("xds-control · ") :]  # the newest redraw
                    row = table_row(frame, name)
                    if row is None or last_title(frame) != f"xds-control · 2 backends · view {version}":
                        return None
                    got = dict(zip(HEADER, row, strict=True))
                    return row if all(got[k] == v for k, v in cells.items()) else None

                try:
                    return await async_wait_until(
                        drawn, timeout=timeout, what=f"{name} drawn as {cells} at view {version}"
                    )
                except AssertionError as exc:
                    raise AssertionError(f"{exc}\n--- the terminal so far ---\n{term.text[-4000:]}") from None

            first = await shows(
                "weather", {"STATE": "unknown", "BREAKER": "closed", "ROUTABLE": "no", "ENDPOINTS": "0/1 up"}, 1, START
            )
            assert first[4:7] == ["-", "-", "-"]  # no probe, no catalog, no error yet
            await shows("calendar", {"STATE": "unknown", "ENDPOINTS": "0/2 up"}, 1)
            text = term.text
            assert all(header in text for header in HEADER)
            assert "version 1:" not in text, "a table on a terminal, not change lines"

            plane.store.set_state("weather", BackendState.HEALTHY)
            await shows("weather", {"STATE": "healthy", "ROUTABLE": "yes", "ENDPOINTS": "1/1 up"}, 2)

            async with AdminClient(target) as client:
                assert (await client.drain("weather")).drained
                await shows("weather", {"STATE": "healthy", "BREAKER": "closed", "ROUTABLE": "drained"}, 3)
                assert table_row(term.text, "calendar")[1:4] == ["unknown", "closed", "no"]  # type: ignore[index]
                assert not (await client.undrain("weather")).drained
            await shows("weather", {"STATE": "healthy", "ROUTABLE": "yes"}, 4)

            # --count 4: the fourth view was the last; the CLI leaves the table on the screen and exits 0.
            await async_wait_until(term.exited, timeout=STEP, what="watch to exit after --count 4")
            assert term.popen.returncode == 0, term.text[-4000:]
            assert "Traceback" not in term.text and "error:" not in term.text
        finally:
            await asyncio.to_thread(term.stop)
