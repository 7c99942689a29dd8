"""The aggregator against the real admin API (Watch stream, ReportOutcomes) and as the `xds-control aggregator`
process."""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import anyio
import httpx2
import pytest
import yaml
from mcp.shared.exceptions import MCPError

from tests.aggregator.conftest import Fleet, tool_names
from tests.aggregator.support import mcp_client
from tests.support.procs import Proc
from tests.support.waiting import async_wait_until, free_port, free_ports
from xds_control.admin.service import start_admin_server
from xds_control.aggregator import BACKEND_UNAVAILABLE, AdminViewSource, Aggregator, direct_upstream_url
from xds_control.aggregator.view_source import Backoff
from xds_control.config import parse_config
from xds_control.view import BackendState, BackendStatus, ViewStore

pytestmark = pytest.mark.integration


@dataclass
class Outcomes:
    """The control plane's side of ReportOutcomes (a HealthControl that only records)."""

    store: ViewStore
    seen: list[tuple[str, int, int, str | None]] = field(default_factory=list)

    async def record_outcomes(self, name: str, successes: int, failures: int, category: str | None) -> None:
        self.seen.append((name, successes, failures, category))

    async def probe_now(self, name: str) -> BackendStatus:
        return self.store.current.backends[name]

    async def reset_breaker(self, name: str) -> BackendStatus:
        return self.store.current.backends[name]


async def test_follows_the_admin_watch_stream_and_survives_its_loss(fleet: Fleet) -> None:
    admin_port, port = free_ports(2)
    config = parse_config(
        {
            "control_plane": {"admin": f"127.0.0.1:{admin_port}"},
            "aggregator": {"port": port, "conflict_resolution": "priority"},
            "backends": [fleet.entry("weather"), fleet.entry("alpha")],
        }
    )
    store = ViewStore(config)
    for name in ("weather", "alpha"):
        store.update_backend(name, lambda s, n=name: replace(s, state=BackendState.HEALTHY, catalog=fleet.catalogs[n]))
    outcomes = Outcomes(store)
    server = await start_admin_server(config, store, outcomes)
    source = AdminViewSource(config.control_plane.admin)
    aggregator = Aggregator(
        config, source, upstream_url=direct_upstream_url, report_interval=0.05, backoff=Backoff(base=0.02, cap=0.1)
    )
    try:
        async with aggregator.running():
            await aggregator.wait_for_view(store.version)
            async with aggregator.serving("127.0.0.1", port) as url, mcp_client(url, "legacy") as client:
                assert tool_names(await client.list_tools()) == [
                    "get_forecast",
                    "get_current_conditions",
                    "list_alerts",
                    "echo",
                    "add",
                    "slow",
                ]
                assert (await client.call_tool("echo", {"text": "over grpc"})).content[0].text == "over grpc"
                await async_wait_until(
                    lambda: ("alpha", 1, 0, None) in outcomes.seen, what="ReportOutcomes from the aggregator"
                )

                await server.stop(grace=0)  # the control plane goes away: keep serving the last view, stale
                await async_wait_until(lambda: aggregator.health()["stale"], what="the view to turn stale")
                assert (await client.call_tool("echo", {"text": "still"})).content[0].text == "still"

                store.set_state("alpha", BackendState.UNHEALTHY)  # missed while disconnected ...
                server = await start_admin_server(config, store, outcomes)
                await aggregator.wait_for_view(store.version)  # ... and seen in the full view on reconnect
                assert not aggregator.health()["stale"]
                assert tool_names(await client.list_tools()) == [
                    "get_forecast",
                    "get_current_conditions",
                    "list_alerts",
                ]
                with pytest.raises(MCPError) as info:
                    await client.call_tool("echo", {"text": "x"})
                assert info.value.code == BACKEND_UNAVAILABLE
    finally:
        await server.stop(grace=0)
        await source.aclose()


def test_the_sidecar_command_serves_stale_until_the_control_plane_answers(fleet: Fleet, tmp_path: Path) -> None:
    port, admin_port = free_ports(2)
    config = {
        "control_plane": {"admin": f"127.0.0.1:{admin_port}"},  # nothing listens there
        "aggregator": {"port": port, "failure_mode": "fail"},
        "backends": [fleet.entry("weather")],
    }
    path = tmp_path / "xds-control.yaml"
    path.write_text(yaml.safe_dump(config))
    with Proc([sys.executable, "-m", "xds_control.cli", "aggregator", "-c", str(path)], name="aggregator") as proc:
        line = proc.wait_for_line("READY", timeout=30)
        url = line.split()[-1]
        assert url == f"http://127.0.0.1:{port}/mcp"
        health = httpx2.get(f"http://127.0.0.1:{port}/healthz", trust_env=False).json()
        assert health["stale"] is True and health["backends"] == {"configured": 1, "routable": 0}

        async def list_tools() -> MCPError:
            async with mcp_client(url, "legacy") as client:
                with pytest.raises(MCPError) as info:
                    await client.list_tools()
                return info.value

        error = anyio.run(list_tools)
        assert error.code == BACKEND_UNAVAILABLE and "no backend is routable" in error.message
        assert error.data == {"unavailable": [{"backend": "weather", "state": "unknown", "retry_after": None}]}

        proc.signal(signal.SIGTERM)
        assert proc.popen.wait(timeout=15) == 0
    assert "cannot reach the control plane's view stream" in proc.output


def test_a_taken_port_fails_the_sidecar_command(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "xds-control.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "control_plane": {"admin": f"127.0.0.1:{free_port()}"},
                    "aggregator": {"port": port, "metrics": f"127.0.0.1:{free_port()}"},
                }
            )
        )
        with Proc([sys.executable, "-m", "xds_control.cli", "aggregator", "-c", str(path)], name="aggregator") as proc:
            assert proc.popen.wait(timeout=30) == 1
        assert f"error: cannot listen on aggregator.address/port 127.0.0.1:{port}" in proc.output
        assert "READY" not in proc.output
