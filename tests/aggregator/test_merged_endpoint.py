"""One endpoint over real backends, with real SDK clients of both families: merged lists, routing, pagination."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from tests.aggregator.conftest import Fleet, tool_names
from tests.aggregator.support import FAMILIES, MODERN, mcp_client, next_event
from xds_control.aggregator.service import listening_socket
from xds_control.errors import ConfigError
from xds_control.view import BackendState

pytestmark = pytest.mark.integration

GENERIC = ["echo", "add", "slow"]


async def all_tools(client: Any) -> list[str]:
    names, cursor = [], None
    while True:
        page = await client.list_tools(cursor=cursor)
        names += tool_names(page)
        cursor = page.next_cursor
        if cursor is None:
            return names


@pytest.mark.parametrize("mode", FAMILIES)
@pytest.mark.parametrize(
    ("strategy", "extra", "tools", "prompts"),
    [
        ("prefix", {}, [f"alpha_{t}" for t in GENERIC] + [f"beta_{t}" for t in GENERIC], ["alpha_greet", "beta_greet"]),
        ("priority", {}, GENERIC + [f"beta_{t}" for t in GENERIC], ["greet", "beta_greet"]),
        (
            "manual",
            {"tools": {"rename": {"echo": "echo2", "add": "plus", "slow": "sleepy", "greet": "hello"}}},
            [*GENERIC, "echo2", "plus", "sleepy"],
            ["greet", "hello"],
        ),
    ],
)
async def test_merged_lists_per_strategy(
    serve: Any, fleet: Fleet, mode: str, strategy: str, extra: dict, tools: list[str], prompts: list[str]
) -> None:
    entries = [fleet.entry("alpha"), fleet.entry("beta", **extra)]
    async with serve(entries, conflict_resolution=strategy) as running:
        async with mcp_client(running.url, mode) as client:
            if mode == "legacy":
                capabilities = client.server_capabilities
            else:  # the client adopted a pinned version without asking: ask
                capabilities = types.DiscoverResult.model_validate(
                    await client.session.send_discover(mode)
                ).capabilities
            assert (
                capabilities.tools.list_changed
                and capabilities.prompts.list_changed
                and capabilities.resources.list_changed
            )
            assert capabilities.resources.subscribe  # resource updates are relayed (test_resource_subscriptions.py)
            listed = await client.list_tools()
            assert tool_names(listed) == tools
            assert listed.tools[0].meta == {"xds-control/backend": "alpha"}
            assert [p.name for p in (await client.list_prompts()).prompts] == prompts
            assert sorted(r.uri for r in (await client.list_resources()).resources) == [
                "demo://alpha/info",
                "demo://beta/info",
            ]
            # The renamed or prefixed name reaches beta under its own name.
            result = await client.call_tool(tools[3], {"text": f"via {mode}"})
            assert result.content[0].text == f"via {mode}" and not result.is_error


async def test_a_modern_listen_is_not_told_a_subscription_its_backend_refused_is_honored(
    serve: Any, fleet: Fleet
) -> None:
    """The ack names what will be delivered: list changes yes, the updates of a resource whose backend does not
    serve `resources/subscribe` no (the SDK would echo the URI back and never fire it). The stream still serves
    the list changes."""
    async with serve([fleet.entry("alpha"), fleet.entry("beta")]) as running:
        async with mcp_client(running.url, MODERN) as client:
            async with client.listen(tools_list_changed=True, resource_subscriptions=["demo://alpha/info"]) as sub:
                assert sub.honored.tools_list_changed and not sub.honored.resource_subscriptions
                await running.set_state("beta", BackendState.UNHEALTHY)
                assert type(await next_event(sub)).__name__ == "ToolsListChanged"


async def test_manual_conflicts_are_a_config_error_at_start(serve: Any, fleet: Fleet) -> None:
    with pytest.raises(BaseExceptionGroup) as info:
        async with (
            asyncio.timeout(20),
            serve([fleet.entry("alpha"), fleet.entry("beta")], conflict_resolution="manual"),
        ):
            pass
    [error] = info.value.exceptions
    assert isinstance(error, ConfigError) and "backends.1.tools.rename" in str(error)


@pytest.mark.parametrize("mode", FAMILIES)
async def test_calls_reach_backends_of_both_families(serve: Any, fleet: Fleet, mode: str) -> None:
    entries = [fleet.entry("weather"), fleet.entry("calendar"), fleet.entry("beta")]
    async with serve(entries, conflict_resolution="priority") as running:
        async with mcp_client(running.url, mode) as client:
            weather = await client.call_tool("get_current_conditions", {"city": "Oslo"})
            assert weather.content[0].text.startswith("Oslo:")
            calendar = await client.call_tool("list_events", {"date": "2026-01-05"})  # a modern-only backend
            assert "Standup" in calendar.content[0].text
            beta = await client.call_tool("add", {"a": 2, "b": 3})  # a legacy-only backend
            assert beta.content[0].text == "5"
            stations = await client.read_resource("weather://stations")
            assert "London" in stations.contents[0].text
            today = await client.read_resource("calendar://today")
            assert "Standup" in today.contents[0].text
            prompt = await client.get_prompt("plan_day", {"date": "2026-01-05"})
            assert "list_events" in prompt.messages[0].content.text
            tool_error = await client.call_tool(
                "get_forecast", {"city": "Oslo", "days": 9}
            )  # the backend's own isError
            assert tool_error.is_error and "between 1 and 7" in tool_error.content[0].text
            with pytest.raises(MCPError) as info:  # routed to calendar, whose own JSON-RPC error passes unchanged
                await client.complete(
                    types.PromptReference(type="ref/prompt", name="plan_day"), {"name": "date", "value": "2026"}
                )
            assert (info.value.code, info.value.data) == (types.METHOD_NOT_FOUND, "completion/complete")
        upstream = running.aggregator.gateway.upstreams
        assert (upstream["weather"].family, upstream["calendar"].family, upstream["beta"].family) == (
            "legacy",
            "modern",
            "legacy",
        )


@pytest.mark.parametrize("mode", FAMILIES)
async def test_a_modern_backend_gets_the_mcp_param_headers_its_tool_declares(
    serve: Any, fleet: Fleet, mode: str
) -> None:
    """weather's list_alerts annotates `region` with `x-mcp-header: Region`: a 2026-07-28 backend rejects a call
    without a matching `Mcp-Param-Region` header, so the aggregator sends one, whatever the client's family."""
    async with serve([fleet.entry("weather", protocol="modern")], conflict_resolution="priority") as running:
        async with mcp_client(running.url, mode) as client:
            listed = {
                tool.name: tool for tool in (await client.list_tools()).tools
            }  # the schema reaches clients as it is
            assert listed["list_alerts"].input_schema["properties"]["region"]["x-mcp-header"] == "Region"
            for region in ("Nordland", "North Sea / Skagerrak"):  # a token, and a value sent base64-wrapped
                result = await client.call_tool("list_alerts", {"region": region})
                assert not result.is_error and region in result.content[0].text
        assert running.aggregator.gateway.upstreams["weather"].family == "modern"


@pytest.mark.parametrize("mode", FAMILIES)
async def test_pagination_over_the_merged_list(serve: Any, fleet: Fleet, mode: str) -> None:
    async with serve([fleet.entry("many"), fleet.entry("alpha")], conflict_resolution="priority") as running:
        async with mcp_client(running.url, mode) as client:
            first = await client.list_tools()
            assert len(first.tools) == 100 and first.next_cursor
            names = await all_tools(client)
            assert len(names) == len(set(names)) == 256
            assert names[-3:] == ["alpha_echo", "alpha_add", "alpha_slow"]
            with pytest.raises(Exception) as info:
                await client.list_tools(cursor="not-a-cursor")
            assert getattr(info.value, "code", None) == types.INVALID_PARAMS and "invalid cursor" in str(info.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_accepted_connections_get_tcp_nodelay(host: str) -> None:
    """Regression: a listening socket made without IPPROTO_TCP gets no TCP_NODELAY from asyncio on the
    connections it accepts, and each small answer then waits ~40 ms for a delayed ACK. Checked on the
    socket, not with a stopwatch; the control socket shows the check can fail."""

    async def nodelay_of(sock: socket.socket) -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accepted, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(host, sock.getsockname()[1])
            try:
                return await asyncio.wait_for(seen, 10)
            finally:
                writer.close()

    if ":" in host:
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
                probe.bind((host, 0))
        except OSError:
            pytest.skip("no IPv6 loopback here")
    assert await nodelay_of(listening_socket(host, 0)) != 0
    control = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)  # proto 0
    control.bind((host, 0))
    control.listen()
    control.setblocking(False)
    assert await nodelay_of(control) == 0
