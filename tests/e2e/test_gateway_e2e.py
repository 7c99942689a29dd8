"""The whole gateway as separate processes, health probes on: a client on Envoy's `/mcp` sees a killed
backend's tools vanish (with list_changed, in both MCP families), gets a fast structured error for them,
and gets them back on its own when the backend returns. The control plane going away changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import mcp_types as types
import pytest
from mcp import Client, MCPError

from tests.support.procs import demo_backend
from tests.support.stack import full_stack, stack_config
from tests.support.waiting import async_wait_until, free_ports

pytestmark = pytest.mark.integration

BACKEND_UNAVAILABLE = -32050


async def _tool_names(url: str) -> set[str]:
    async with Client(url, mode="legacy", cache=None) as client:
        return {t.name for t in (await client.list_tools()).tools}


@contextlib.asynccontextmanager
async def _listeners(url: str) -> AsyncIterator[tuple[list[float], list[float]]]:
    """A legacy session and a modern `subscriptions/listen` stream, each recording when it hears tools/list_changed."""
    legacy_heard: list[float] = []
    modern_heard: list[float] = []
    ready = [asyncio.Event(), asyncio.Event()]

    async def on_message(message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            legacy_heard.append(time.monotonic())

    async def legacy() -> None:
        async with Client(url, mode="legacy", message_handler=on_message, cache=None) as client:
            await client.list_tools()
            ready[0].set()
            await asyncio.Future()

    async def modern() -> None:
        async with Client(url, mode="2026-07-28", cache=None) as client:
            async with client.listen(tools_list_changed=True) as subscription:
                ready[1].set()
                async for _event in subscription:
                    modern_heard.append(time.monotonic())

    tasks = [asyncio.create_task(legacy()), asyncio.create_task(modern())]
    try:
        await asyncio.wait_for(asyncio.gather(ready[0].wait(), ready[1].wait()), timeout=15)
        yield legacy_heard, modern_heard
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_killed_backend_vanishes_fails_fast_and_returns(tmp_path: Path) -> None:
    weather_port, calendar_port = free_ports(2)
    weather = demo_backend("weather", weather_port)
    calendar = demo_backend("calendar", calendar_port)
    config = stack_config(
        [
            {"name": "weather", "url": f"http://127.0.0.1:{weather_port}/mcp"},
            {"name": "calendar", "url": f"http://127.0.0.1:{calendar_port}/mcp"},
        ],
        health={"interval": "300ms", "timeout": "1s", "unhealthy_threshold": 1, "healthy_threshold": 1},
        circuit_breaker={"failure_threshold": 3, "open_timeout": "500ms", "max_open_timeout": "1s"},
    )
    try:
        async with full_stack(config, tmp_path) as stack:
            url = stack.mcp_url

            async def weather_listed() -> bool:
                return "weather_get_forecast" in await _tool_names(url)

            await async_wait_until(weather_listed, timeout=20, what="weather tools in the merged list")
            assert "calendar_list_events" in await _tool_names(url)

            async with _listeners(url) as (legacy_heard, modern_heard):
                weather.kill()
                await async_wait_until(
                    lambda: legacy_heard and modern_heard, timeout=15, what="list_changed in both families"
                )
                names = await _tool_names(url)
                assert not any(n.startswith("weather_") for n in names)
                assert "calendar_list_events" in names

                async with Client(url, mode="legacy", cache=None) as client:
                    await client.list_tools()
                    with pytest.raises(MCPError) as info:
                        await client.call_tool("weather_get_forecast", {"city": "Oslo"})
                    assert info.value.code == BACKEND_UNAVAILABLE
                    assert info.value.error.data["backend"] == "weather"
                    # unhealthy after the threshold; circuit_open once the breaker has seen enough failures too
                    assert info.value.error.data["state"] in ("unhealthy", "circuit_open", "circuit_half_open")
                    calendar_call = await client.call_tool("calendar_list_events", {"date": "2026-01-05"})
                    assert not calendar_call.is_error

                heard_before = (len(legacy_heard), len(modern_heard))
                weather = demo_backend("weather", weather_port)
                await async_wait_until(weather_listed, timeout=20, what="weather tools back")
                await async_wait_until(
                    lambda: len(legacy_heard) > heard_before[0] and len(modern_heard) > heard_before[1],
                    timeout=10,
                    what="list_changed again in both families",
                )
            async with Client(url, mode="2026-07-28", cache=None) as client:
                result = await client.call_tool("weather_get_forecast", {"city": "Oslo", "days": 1})
                assert "Oslo" in result.content[0].text

            # Control plane gone: Envoy and the aggregator keep serving the last view.
            stack.procs["control-plane"].kill()
            async with Client(url, mode="legacy", cache=None) as client:
                assert "weather_get_forecast" in {t.name for t in (await client.list_tools()).tools}
                result = await client.call_tool("weather_get_current_conditions", {"city": "Rome"})
                assert "Rome" in result.content[0].text
    finally:
        weather.stop()
        calendar.stop()
