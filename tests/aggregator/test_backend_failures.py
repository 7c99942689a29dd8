"""Backends that misbehave behind a routable view: auth rotation, garbage, hangs, 5xx, refused connections;
and requests that are wrong on the client's side. Real backends, real SDK clients."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from tests.aggregator.conftest import FLAKY_TOKEN, Fleet
from tests.aggregator.support import FAMILIES, cancelled, mcp_client
from tests.support.waiting import async_wait_until, free_port
from xds_control.aggregator import BACKEND_AUTH_FAILED, BACKEND_FAILED, BACKEND_TIMEOUT

pytestmark = pytest.mark.integration

UPSTREAM_FAMILIES = ("legacy", "modern")  # how the aggregator talks to the (dual-family) flaky backend


def flaky(fleet: Fleet, family: str, **extra: Any) -> dict[str, Any]:
    return fleet.entry("flaky", protocol=family, **extra)


async def echo(client: Any, text: str = "hi") -> str:
    return (await client.call_tool("echo", {"text": text})).content[0].text


@pytest.mark.parametrize("family", UPSTREAM_FAMILIES)
async def test_token_rotation_through_the_token_file_recovers_without_restart(
    serve: Any, reset_flaky: Fleet, tmp_path: Path, family: str
) -> None:
    fleet = reset_flaky
    token_file = tmp_path / "flaky-token"
    token_file.write_text(FLAKY_TOKEN)
    entry = flaky(fleet, family, auth={"type": "bearer", "token_file": str(token_file)})
    async with serve([entry], conflict_resolution="priority") as running:
        upstream = running.aggregator.gateway.upstreams["flaky"]
        async with mcp_client(running.url, "legacy") as client:
            assert await echo(client, "before") == "before"

            fleet.set_backend_token("token-two")  # the backend rotates; our file still has the old token
            with pytest.raises(MCPError) as info:
                await echo(client)
            assert info.value.code == BACKEND_AUTH_FAILED
            assert info.value.data == {"backend": "flaky", "category": "authentication_failed", "status": 401}
            assert upstream.breaker.exhausted == 1
            assert "token-one" not in info.value.message and "token-one" not in str(info.value.data)

            token_file.write_text("token-two\n")  # the operator rotates ours
            reads = upstream.credential.reads
            assert await echo(client, "after") == "after"
            assert upstream.credential.reads == reads + 1 and upstream.breaker.exhausted == 0


@pytest.mark.parametrize("mode", FAMILIES)
async def test_client_mistakes_get_clear_jsonrpc_errors(serve: Any, fleet: Fleet, mode: str) -> None:
    async with serve([fleet.entry("alpha")]) as running:
        async with mcp_client(running.url, mode) as client:
            with pytest.raises(MCPError) as info:
                await client.call_tool("no_such_tool", {})
            assert (info.value.code, info.value.message) == (types.INVALID_PARAMS, "Unknown tool: no_such_tool")
            with pytest.raises(MCPError) as info:
                await client.call_tool("alpha_add", {"a": "one", "b": 2})
            assert info.value.code == types.INVALID_PARAMS
            assert info.value.data["errors"] == [{"path": "a", "message": "'one' is not of type 'number'"}]
            with pytest.raises(MCPError) as info:
                await client.read_resource("demo://nobody/info")
            assert info.value.code == -32002
            with pytest.raises(MCPError) as info:
                await client.call_tool("alpha_echo", {"text": "x" * (5 * 1024 * 1024)})
            assert info.value.code == types.INVALID_REQUEST and "request body too large" in info.value.message
            assert await echo_prefixed(client) == "still fine"
        async with httpx2.AsyncClient(trust_env=False) as http:
            response = await http.post(
                running.url,
                content=b"{not json",
                headers={"content-type": "application/json", "accept": "application/json, text/event-stream"},
            )
            assert response.json()["error"]["code"] == types.PARSE_ERROR


async def echo_prefixed(client: Any) -> str:
    return (await client.call_tool("alpha_echo", {"text": "still fine"})).content[0].text


@pytest.mark.parametrize("family", UPSTREAM_FAMILIES)
async def test_a_backend_answering_garbage_or_5xx(serve: Any, reset_flaky: Fleet, tmp_path: Path, family: str) -> None:
    fleet = reset_flaky
    token_file = tmp_path / "token"
    token_file.write_text(FLAKY_TOKEN)
    async with serve(
        [flaky(fleet, family, auth={"token_file": str(token_file)})], conflict_resolution="priority"
    ) as running:
        async with mcp_client(running.url, "legacy") as client:
            assert await echo(client) == "hi"
            for fault, category, status in [
                ("garbage", "protocol_error", None),
                ("http500", "http_5xx", 500),
                ("http429", "rate_limited", 429),
            ]:
                fleet.set_fault(fault)
                with pytest.raises(MCPError) as info:
                    await echo(client)
                assert info.value.code == BACKEND_FAILED, fault
                assert info.value.data["backend"] == "flaky" and info.value.data["category"] == category
                assert info.value.data.get("status") == status
                assert "flaky" in info.value.message
            fleet.set_fault("none")
            assert await echo(client, "recovered") == "recovered"
        reports = running.source.reports
        await async_wait_until(
            lambda: sum(r.failed for r in reports if r.backend == "flaky") >= 3, what="outcome reports"
        )
        assert {r.last_failure_category for r in reports if r.failed} <= {"protocol_error", "http_5xx", "rate_limited"}
        assert sum(r.successes for r in reports) >= 1


@pytest.mark.parametrize("family", UPSTREAM_FAMILIES)
async def test_a_hanging_backend_times_out_naming_it(
    serve: Any, reset_flaky: Fleet, tmp_path: Path, family: str
) -> None:
    fleet = reset_flaky
    token_file = tmp_path / "token"
    token_file.write_text(FLAKY_TOKEN)
    async with serve(
        [flaky(fleet, family, auth={"token_file": str(token_file)})], conflict_resolution="priority", call_timeout=0.5
    ) as running:
        fleet.set_fault("hang")
        async with mcp_client(running.url, "legacy") as client:
            with pytest.raises(MCPError) as info:
                await echo(client)
            assert info.value.code == BACKEND_TIMEOUT
            assert info.value.data["backend"] == "flaky" and info.value.data["timeout"] == 0.5


@pytest.mark.parametrize("mode", FAMILIES)
async def test_a_refused_connection_is_a_transport_failure(serve: Any, fleet: Fleet, mode: str) -> None:
    dead = {"name": "dead", "url": f"http://127.0.0.1:{free_port()}/mcp"}
    async with serve(
        [dead, fleet.entry("alpha")], catalogs={"dead": fleet.catalogs["weather"]}, conflict_resolution="priority"
    ) as running:
        async with mcp_client(running.url, mode) as client:
            with pytest.raises(MCPError) as info:
                await client.call_tool("get_forecast", {"city": "Kyiv"})
            assert info.value.code == BACKEND_FAILED
            assert info.value.data == {"backend": "dead", "category": "connection_refused"}
            assert (await client.call_tool("echo", {"text": "alive"})).content[0].text == "alive"


@pytest.mark.parametrize("mode", FAMILIES)
async def test_progress_passes_through(serve: Any, fleet: Fleet, mode: str) -> None:
    async with serve([fleet.entry("alpha"), fleet.entry("beta")], conflict_resolution="priority") as running:
        async with mcp_client(running.url, mode) as client:
            for tool in ("slow", "beta_slow"):  # a dual-family backend (legacy session) and a legacy-only one
                seen: list[tuple[float, float | None]] = []

                async def progress(value: float, total: float | None, message: str | None) -> None:
                    seen.append((value, total))

                result = await client.call_tool(tool, {"seconds": 0.2}, progress_callback=progress)
                assert result.content[0].text == "slept 0.2s"
                assert seen and seen[-1] == (2, 2), tool


@pytest.mark.parametrize("mode", FAMILIES)
async def test_cancellation_passes_through(serve: Any, fleet: Fleet, mode: str) -> None:
    async with serve([fleet.entry("alpha")], conflict_resolution="priority") as running:
        async with mcp_client(running.url, mode) as client:
            before = cancelled("slow")
            started = asyncio.Event()

            async def progress(value: float, total: float | None, message: str | None) -> None:
                started.set()

            with anyio.move_on_after(10) as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(lambda: client.call_tool("slow", {"seconds": 30}, progress_callback=progress))
                    await started.wait()  # the backend is working on it
                    tg.cancel_scope.cancel()
            assert not scope.cancelled_caught
            await async_wait_until(
                lambda: cancelled("slow") == before + 1, what="the aggregator's call to end cancelled"
            )
            assert (await client.call_tool("echo", {"text": "next"})).content[0].text == "next"
        assert running.aggregator.gateway.upstreams["alpha"].open_sessions <= 1
