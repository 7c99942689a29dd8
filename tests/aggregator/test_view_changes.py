"""The view changes under connected clients: list_changed to both families, fast failure, failure modes."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError
from prometheus_client import REGISTRY

from tests.aggregator.conftest import Fleet, legacy_listener, tool_names
from tests.aggregator.support import FAMILIES, MODERN, mcp_client, next_event
from tests.support.waiting import async_wait_until
from xds_control.aggregator import BACKEND_UNAVAILABLE
from xds_control.errors import BackendError
from xds_control.view import BackendState

pytestmark = pytest.mark.integration

WEATHER_TOOLS = ["get_forecast", "get_current_conditions", "list_alerts"]
ALPHA_TOOLS = ["echo", "add", "slow"]


def upstream_requests(backend: str) -> float:
    return REGISTRY.get_sample_value("xds_control_aggregator_upstream_http_requests_total", {"backend": backend}) or 0.0


async def test_an_unroutable_backend_vanishes_fails_fast_and_comes_back(serve: Any, fleet: Fleet) -> None:
    async with serve([fleet.entry("weather"), fleet.entry("alpha")], conflict_resolution="priority") as running:
        async with legacy_listener(running) as (legacy, notes), mcp_client(running.url, MODERN) as modern:
            async with modern.listen(
                tools_list_changed=True, prompts_list_changed=True, resources_list_changed=True
            ) as sub:
                assert tool_names(await legacy.list_tools()) == WEATHER_TOOLS + ALPHA_TOOLS
                await legacy.call_tool("get_current_conditions", {"city": "Rome"})  # opens the weather session

                await running.set_state("weather", BackendState.UNHEALTHY)
                kinds = {await notes.next(), await notes.next(), await notes.next()}
                assert kinds == {
                    "notifications/tools/list_changed",
                    "notifications/prompts/list_changed",
                    "notifications/resources/list_changed",
                }
                assert {type(await next_event(sub)).__name__ for _ in range(3)} == {
                    "ToolsListChanged",
                    "PromptsListChanged",
                    "ResourcesListChanged",
                }
                for client in (legacy, modern):
                    assert tool_names(await client.list_tools()) == ALPHA_TOOLS
                assert (
                    running.aggregator.gateway.upstreams["weather"].open_sessions == 0
                )  # closed with the state change

                before = upstream_requests("weather")
                for client in (legacy, modern):
                    for _ in range(3):
                        with pytest.raises(MCPError) as info:
                            await client.call_tool("get_forecast", {"city": "Rome"})
                    assert info.value.code == BACKEND_UNAVAILABLE
                    assert info.value.data == {"backend": "weather", "state": "unhealthy", "retry_after": None}
                assert upstream_requests("weather") == before  # no network call towards the backend

                await running.set_state("weather", BackendState.HEALTHY)
                assert await notes.next() in {
                    "notifications/tools/list_changed",
                    "notifications/prompts/list_changed",
                    "notifications/resources/list_changed",
                }
                assert type(await next_event(sub)).__name__.endswith("ListChanged")
                assert tool_names(await modern.list_tools()) == WEATHER_TOOLS + ALPHA_TOOLS
                result = await modern.call_tool("get_forecast", {"city": "Rome", "days": 1})
                assert result.content[0].text.startswith("Rome day 1")


async def test_a_fast_failure_is_decided_without_the_network(serve: Any, fleet: Fleet) -> None:
    """The aggregator's own part of a fast failure, in process: no upstream request, no await on I/O. How fast
    it is lives in bench/aggregator/calls.py (dead backend), not here."""
    async with serve([fleet.entry("weather")], healthy=()) as running:
        gateway = running.aggregator.gateway
        params = {"name": "weather_get_forecast", "arguments": {}}
        before = upstream_requests("weather")
        for _ in range(5):
            with pytest.raises(BackendError) as info:
                await gateway.call("tools/call", "tools", "weather_get_forecast", params, client_key=None)
            assert info.value.code == BACKEND_UNAVAILABLE and info.value.data["backend"] == "weather"
        assert upstream_requests("weather") == before


async def test_no_list_changed_when_nothing_changed(serve: Any, fleet: Fleet) -> None:
    async with serve([fleet.entry("weather"), fleet.entry("alpha")]) as running:
        notifier = running.aggregator.notifier
        async with legacy_listener(running) as (_, notes), mcp_client(running.url, MODERN) as modern:
            async with modern.listen(tools_list_changed=True) as sub:
                sent = len(notifier.sent)
                # New view versions that leave every list as it was: an error note, a degraded state.
                running.store.update_backend(
                    "alpha", lambda s: replace(s, last_error="timeout", consecutive_failures=1)
                )
                await running.settle()
                await running.set_state("alpha", BackendState.DEGRADED)  # still routable
                assert notifier.coalescer.deadline is None and len(notifier.sent) == sent
                # A real change afterwards is the first and only announcement both clients get.
                await running.set_state("alpha", BackendState.UNHEALTHY)
                legacy_kinds = [await notes.next() for _ in range(3)]
                assert sorted(legacy_kinds) == [
                    f"notifications/{k}/list_changed" for k in ("prompts", "resources", "tools")
                ]
                assert type(await next_event(sub)).__name__ == "ToolsListChanged"  # the only kind it listens to
                assert list(notifier.sent)[sent:] == [frozenset({"tools", "prompts", "resources"})]
                assert notes.queue.empty()


@pytest.mark.parametrize("mode", FAMILIES)
async def test_failure_modes_with_a_required_backend_down(serve: Any, fleet: Fleet, mode: str) -> None:
    entries = [fleet.entry("weather", required=True), fleet.entry("alpha")]
    async with serve(entries, failure_mode="fail") as running:
        await running.set_state("weather", BackendState.UNAUTHENTICATED)
        async with mcp_client(running.url, mode) as client:
            with pytest.raises(MCPError) as info:
                await client.list_tools()
            assert info.value.code == BACKEND_UNAVAILABLE
            assert info.value.data == {
                "unavailable": [{"backend": "weather", "state": "unauthenticated", "retry_after": None}]
            }
            assert "weather (unauthenticated)" in info.value.message
            # Calls to routable backends still work (sent raw: the SDK's call_tool lists tools first to validate).
            request = types.CallToolRequest(
                params=types.CallToolRequestParams(name="alpha_echo", arguments={"text": "still routed"})
            )
            result = await client.session.send_request(request, types.CallToolResult)
            assert result.content[0].text == "still routed"

    async with serve(entries, failure_mode="best_effort") as running:
        await running.set_state("weather", BackendState.UNAUTHENTICATED)
        async with mcp_client(running.url, mode) as client:
            listed = await client.list_tools()
            assert tool_names(listed) == [f"alpha_{t}" for t in ALPHA_TOOLS]
            assert listed.meta["xds-control/unavailable"] == [
                {"backend": "weather", "state": "unauthenticated", "retry_after": None}
            ]


async def test_backend_sessions_close_with_the_client_session(serve: Any, fleet: Fleet) -> None:
    async with serve([fleet.entry("weather"), fleet.entry("calendar")], conflict_resolution="priority") as running:
        upstreams = running.aggregator.gateway.upstreams
        async with mcp_client(running.url, "legacy") as one, mcp_client(running.url, "legacy") as two:
            for client in (one, two):
                await client.call_tool("get_current_conditions", {"city": "Lima"})
                await client.call_tool("list_events", {"date": "2026-01-05"})
            assert upstreams["weather"].open_sessions == 2  # one per client session
            assert upstreams["calendar"].open_sessions == 0  # modern: plain POSTs, no backend session
        await async_wait_until(
            lambda: upstreams["weather"].open_sessions == 0, timeout=5, what="backend sessions to close"
        )
        assert len(running.aggregator.sessions) == 0
