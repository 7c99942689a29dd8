"""The whole path: control plane (admin Watch, xDS) + a real Envoy; the aggregator calls backends through
Envoy's egress listener."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp.shared.exceptions import MCPError

from tests.aggregator.conftest import FLAKY_TOKEN, Fleet, tool_names
from tests.aggregator.support import FAMILIES, mcp_client, through_envoy
from tests.support.stack import stack_config
from tests.support.waiting import async_wait_until
from xds_control.aggregator import BACKEND_FAILED, BACKEND_UNAVAILABLE
from xds_control.view import BackendState

pytestmark = pytest.mark.integration


async def test_calls_cross_envoy_and_an_ejected_backend_is_unavailable(reset_flaky: Fleet, tmp_path: Path) -> None:
    fleet = reset_flaky
    token = tmp_path / "token"
    token.write_text(FLAKY_TOKEN)
    config = stack_config(
        [fleet.entry("weather"), fleet.entry("calendar"), fleet.entry("flaky", auth={"token_file": str(token)})],
        aggregator={"conflict_resolution": "priority"},
        outlier_detection={"consecutive_5xx": 2, "consecutive_gateway_failure": 2, "base_ejection_time": "60s"},
    )
    catalogs = {name: fleet.catalogs[name] for name in ("weather", "calendar", "flaky")}
    async with through_envoy(config, catalogs, tmp_path) as path:
        plane, aggregator, url = path.plane, path.aggregator, path.url
        for mode in FAMILIES:
            async with mcp_client(url, mode) as client:
                assert "get_forecast" in tool_names(await client.list_tools())
                weather = await client.call_tool("get_current_conditions", {"city": "Cairo"})  # legacy upstream
                assert weather.content[0].text.startswith("Cairo:")
                calendar = await client.call_tool("list_events", {"date": "2026-01-05"})  # modern upstream
                assert "Standup" in calendar.content[0].text
                assert (await client.call_tool("echo", {"text": "with a token"})).content[0].text == "with a token"

        # Envoy's outlier detection ejects the 5xx-ing backend before the control plane notices:
        # its "no healthy upstream" is the same error as a fast failure.
        fleet.set_fault("http500")
        async with mcp_client(url, "legacy") as client:
            codes = []

            async def ejected() -> bool:
                with pytest.raises(MCPError) as info:
                    await client.call_tool("echo", {"text": "x"})
                codes.append(info.value.code)
                return info.value.code == BACKEND_UNAVAILABLE

            await async_wait_until(ejected, timeout=10, what="Envoy to eject the failing backend")
            assert BACKEND_FAILED in codes  # the 5xx answers before the ejection
            with pytest.raises(MCPError) as info:
                await client.call_tool("echo", {"text": "x"})
            assert info.value.data["backend"] == "flaky" and info.value.data["state"] == "no_healthy_upstream"

            plane.store.set_state("weather", BackendState.UNHEALTHY)  # and the view still rules first
            await aggregator.wait_for_view(plane.store.version)
            with pytest.raises(MCPError) as info:
                await client.call_tool("get_forecast", {"city": "Cairo"})
            assert info.value.data == {"backend": "weather", "state": "unhealthy", "retry_after": None}
