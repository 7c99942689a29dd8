"""Control planes killed under steady load (real `xds-control serve`, Envoy, aggregator and backend processes).

Envoy keeps serving what it has while no control plane answers; the aggregator keeps its last view (and
keeps its verdicts over a restarted control plane's "unknown"); with two control planes Envoy and the
aggregator move to the second and stay there when the first comes back. No client call fails.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx2
import pytest

from tests.e2e.support import E2E_HEALTH, NO_HEALTHY_UPSTREAM, Backends
from tests.support.load import CallLoad
from tests.support.scaled import ScaledStack, scaled_config
from tests.support.stack import admin_get
from tests.support.waiting import async_wait_until, free_ports
from xds_control.admin.client import AdminClient

pytestmark = pytest.mark.integration

HEALTH = {**E2E_HEALTH, "interval": 0.5}


async def _aggregator(stack: ScaledStack) -> dict:
    async with httpx2.AsyncClient(timeout=2, trust_env=False) as client:
        response = await client.get(f"http://127.0.0.1:{stack.config.aggregator.port}/healthz")
        return response.json()


async def _envoy_connected(stack: ScaledStack, wanted: bool) -> bool:
    body = await asyncio.to_thread(stack.envoy_stat, "control_plane.connected_state")
    return f"control_plane.connected_state: {int(wanted)}" in body


async def _nodes(admin: str) -> list[str]:
    try:
        async with AdminClient(admin) as client:
            return [n.node_id for n in await client.nodes()]
    except Exception:
        return []


async def _going_on(load: CallLoad, calls: int, what: str) -> None:
    before = {n: w.ok for n, w in load.stats.workers.items()}
    await async_wait_until(
        lambda: all(w.ok >= before[n] + calls for n, w in load.stats.workers.items()), timeout=30, what=what
    )


async def test_the_control_plane_killed_and_restarted_under_load_fails_no_call(tmp_path: Path, backends: Backends):
    port = free_ports(1)[0]
    await backends.astart("alpha", port)
    config, planes = scaled_config([{"name": "alpha", "url": f"http://127.0.0.1:{port}/mcp"}], health=HEALTH)
    stack = ScaledStack(config, planes, tmp_path)
    load = CallLoad(stack.mcp_url, "alpha_echo", modern=2, legacy=2)
    try:
        await stack.start()
        await load.start()
        await _going_on(load, 3, "steady load")

        stack.kill("plane-0")
        await async_wait_until(lambda: _envoy_connected(stack, False), timeout=10, what="Envoy sees it gone")
        await async_wait_until(lambda: _stale(stack, True), timeout=10, what="the aggregator sees it gone")
        await _going_on(load, 5, "calls go on with no control plane")

        await asyncio.to_thread(stack.start_plane, 0)
        await async_wait_until(lambda: _envoy_connected(stack, True), timeout=30, what="Envoy reconnects")
        await async_wait_until(lambda: _stale(stack, False), timeout=30, what="the aggregator reconnects")
        await _going_on(load, 5, "calls go on after the restart")
        stats = await load.stop()
        assert stats.failed == 0, stats.summary()
    finally:
        await load.stop()
        stack.stop()


async def _stale(stack: ScaledStack, wanted: bool) -> bool:
    return (await _aggregator(stack))["stale"] is wanted


def _xds_hosts(stack: ScaledStack) -> dict[str, str]:
    """Envoy's ADS cluster: control plane address -> its health flags."""
    _status, body = admin_get(stack.config.envoy.admin_port, "/clusters")
    hosts = {}
    for line in body.splitlines():
        parts = line.split("::")
        if parts[0] == "xds_cluster" and len(parts) == 4 and parts[2] == "health_flags":
            hosts[parts[1]] = parts[3]
    return hosts


async def test_two_control_planes_the_active_one_killed_fails_no_call_and_nothing_flaps_back(
    tmp_path: Path, backends: Backends
):
    alpha, beta = free_ports(2)
    await backends.astart("alpha", alpha)
    beta_proc = await backends.astart("beta", beta)
    config, planes = scaled_config(
        [
            {"name": "alpha", "url": f"http://127.0.0.1:{alpha}/mcp"},
            {"name": "beta", "url": f"http://127.0.0.1:{beta}/mcp"},
        ],
        control_planes=2,
        health=HEALTH,
    )
    stack = ScaledStack(config, planes, tmp_path)
    load = CallLoad(stack.mcp_url, "alpha_echo", modern=2, legacy=2)
    node = config.envoy.node_id
    first, second = planes[0].admin, planes[1].admin
    try:
        await stack.start()
        await load.start()
        await _going_on(load, 3, "steady load")
        assert await _nodes(first) == [node] and await _nodes(second) == []
        assert (await _aggregator(stack))["control_plane"] == first

        stack.kill("plane-0")
        await async_wait_until(lambda: _nodes(second), timeout=30, what="Envoy fails over to the second")
        await async_wait_until(lambda: _on(stack, second), timeout=30, what="the aggregator fails over to the second")
        # A health flip now reaches Envoy through the second control plane.
        await asyncio.to_thread(beta_proc.kill)
        egress = f"http://127.0.0.1:{config.egress.port}/backends/beta/mcp"
        await async_wait_until(lambda: _unrouted(egress), timeout=30, what="the second's verdict reaches Envoy")
        await _going_on(load, 5, "calls go on on the second control plane")

        # The first comes back (and probes on its own): Envoy and the aggregator stay on the second.
        await asyncio.to_thread(stack.start_plane, 0)
        host = planes[0].xds
        await async_wait_until(
            lambda: _xds_hosts(stack).get(host) == "healthy", timeout=30, what="Envoy sees the first healthy again"
        )
        await _going_on(load, 5, "calls go on")
        assert await _nodes(second) == [node] and await _nodes(first) == []
        assert (await _aggregator(stack))["control_plane"] == second
        stats = await load.stop()
        assert stats.failed == 0, stats.summary()
    finally:
        await load.stop()
        stack.stop()


async def _on(stack: ScaledStack, admin: str) -> bool:
    health = await _aggregator(stack)
    return health["control_plane"] == admin and not health["stale"]


async def _unrouted(url: str) -> bool:
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    async with httpx2.AsyncClient(timeout=2, trust_env=False) as client:
        response = await client.post(url, content=json.dumps(body), headers={"content-type": "application/json"})
    return response.status_code == 503 and response.text == NO_HEALTHY_UPSTREAM
