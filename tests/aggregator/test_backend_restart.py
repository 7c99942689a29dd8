"""A backend process that dies and comes back between two probes (the view never leaves healthy): real demo
backends killed with SIGKILL and started again on the same port, real SDK clients of both families.

A client's own session must outlive its backend's: the call in flight when the backend died gets the
structured BACKEND_FAILED error promptly (not the call timeout), and the next call on the same client session
reaches the new process, through a backend session the aggregator reopens by itself."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import MCPError

from tests.aggregator.support import FAMILIES, fetch_catalog, mcp_client, through_envoy
from tests.support.procs import Proc, demo_backend
from tests.support.stack import stack_config
from tests.support.waiting import free_port
from xds_control.aggregator.rpc_errors import BACKEND_FAILED
from xds_control.view import Catalog

pytestmark = pytest.mark.integration

NAME = "phoenix"


class Restartable:
    """One demo backend on a fixed port, killed and started again as the test says."""

    def __init__(self, family: str) -> None:
        self.port = free_port()
        self.family = family
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.proc: Proc = self._start()

    def _start(self) -> Proc:
        return demo_backend(NAME, self.port, "--family", self.family, "--log-level", "info")  # info: access log lines

    def crash_and_restart(self) -> None:
        self.proc.kill()
        self.proc = self._start()


@pytest.fixture(params=["legacy", "modern"])
def backend(request: pytest.FixtureRequest) -> Iterator[Restartable]:
    restartable = Restartable(request.param)
    try:
        yield restartable
    finally:
        restartable.proc.stop()


async def catalog_of(backend: Restartable) -> Catalog:
    return await fetch_catalog(backend.url, mode="legacy" if backend.family == "legacy" else "2026-07-28")


def text_of(result: Any) -> str:
    assert not result.is_error, result
    return result.content[0].text


@pytest.mark.parametrize("mode", FAMILIES)
async def test_a_backend_restarted_between_probes_is_reached_again_on_the_same_client_session(
    serve: Any, backend: Restartable, mode: str
) -> None:
    async with serve([{"name": NAME, "url": backend.url}], catalogs={NAME: await catalog_of(backend)}) as running:
        upstream = running.aggregator.gateway.upstreams[NAME]
        async with mcp_client(running.url, mode) as client:
            assert text_of(await client.call_tool(f"{NAME}_add", {"a": 1, "b": 2})) == "3"

            backend.crash_and_restart()
            assert text_of(await client.call_tool(f"{NAME}_add", {"a": 2, "b": 3})) == "5"
            assert text_of(await client.call_tool(f"{NAME}_echo", {"text": "again"})) == "again"
            if backend.family == "legacy":
                assert upstream.open_sessions == 1  # the dead process's session was replaced, not added to
    # Every backend session has ended now (the aggregator awaits them on the way out). The session the new
    # process never knew was abandoned, not DELETEd there; the one it opened was ended with its DELETE.
    if backend.family == "legacy":
        await asyncio.to_thread(
            backend.proc.wait_for_line, '"DELETE /mcp HTTP/1.1" 200', 10
        )  # the log is read by a thread
        assert '"DELETE /mcp HTTP/1.1" 404' not in backend.proc.output  # it would have come before


@pytest.mark.parametrize("mode", FAMILIES)
async def test_a_call_in_flight_when_its_backend_dies_fails_promptly_and_the_session_recovers(
    serve: Any, backend: Restartable, mode: str
) -> None:
    # The call timeout (aggregator.call_timeout, 300 s by default) is far beyond the test's own deadline: the
    # error must come from the dead connection.
    async with serve([{"name": NAME, "url": backend.url}], catalogs={NAME: await catalog_of(backend)}) as running:
        await in_flight_call_dies_then_recovers(running.url, mode, backend)


@pytest.mark.parametrize("mode", FAMILIES)
async def test_through_envoy_a_restart_is_transparent_and_a_call_in_flight_fails_promptly(
    backend: Restartable, mode: str, tmp_path: Path
) -> None:
    config = stack_config([{"name": NAME, "url": backend.url}])  # outlier detection: the defaults (5 failures eject)
    async with through_envoy(config, {NAME: await catalog_of(backend)}, tmp_path) as path:
        url = path.url
        async with mcp_client(url, mode) as client:
            assert text_of(await client.call_tool(f"{NAME}_add", {"a": 1, "b": 2})) == "3"
            backend.crash_and_restart()
            assert text_of(await client.call_tool(f"{NAME}_add", {"a": 2, "b": 3})) == "5"
        await in_flight_call_dies_then_recovers(url, mode, backend)


async def in_flight_call_dies_then_recovers(url: str, mode: str, backend: Restartable) -> None:
    async with mcp_client(url, mode) as client:
        assert text_of(await client.call_tool(f"{NAME}_add", {"a": 1, "b": 1})) == "2"
        running_on_backend = asyncio.Event()

        async def progress(value: float, total: float | None, message: str | None) -> None:
            running_on_backend.set()

        in_flight = asyncio.create_task(client.call_tool(f"{NAME}_slow", {"seconds": 60}, progress_callback=progress))
        try:
            await asyncio.wait_for(running_on_backend.wait(), 20)  # the backend is executing it
            backend.proc.kill()
            with pytest.raises(MCPError) as info:
                await asyncio.wait_for(in_flight, 20)
        finally:
            in_flight.cancel()
        assert info.value.code == BACKEND_FAILED
        assert info.value.error.data["backend"] == NAME

        backend.crash_and_restart()  # already dead: starts it again on the same port
        assert text_of(await client.call_tool(f"{NAME}_add", {"a": 4, "b": 4})) == "8"
