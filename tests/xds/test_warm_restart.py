"""A restarted control plane starts warm (real Envoy; the control plane in process, its view set by hand).

Envoy keeps what it has while the new control plane has no verdict of its own: no endpoint is pushed
UNKNOWN (routable) over the UNHEALTHY it holds, nor over the HEALTHY; the first verdicts go out as usual.
A new Envoy meanwhile gets the same control plane's UNKNOWN, as at any start.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.support.stack import admin_get, async_start_envoy, running_control_plane, stack_config
from tests.support.waiting import async_wait_until, free_ports
from xds_control.view import BackendState
from xds_control.xds import typeurls as t
from xds_control.xds.bootstrap import NodeOverrides

pytestmark = pytest.mark.integration


async def _eds(admin_port: int) -> dict[str, list[str]]:
    status, body = await asyncio.to_thread(admin_get, admin_port, "/clusters?format=json")
    assert status == 200, body
    return {
        entry["name"]: [h.get("health_status", {}).get("eds_health_status", "") for h in entry.get("host_statuses", [])]
        for entry in json.loads(body).get("cluster_statuses", [])
        if entry["name"] in ("up", "down")
    }


def _node(plane, node_id: str):
    return next((n for n in plane.nodes.nodes() if n.node_id == node_id), None)


async def test_a_restarted_control_plane_pushes_nothing_unknown_over_what_envoy_holds(tmp_path):
    # Endpoints need not listen: this is about what Envoy holds, read from its admin API.
    config = stack_config(
        [{"name": "up", "url": "http://127.0.0.1:9/mcp"}, {"name": "down", "url": "http://127.0.0.1:7/mcp"}]
    )
    envoy = None
    try:
        async with running_control_plane(config) as plane:
            envoy = await async_start_envoy(config, tmp_path / "old")
            plane.store.set_state("up", BackendState.HEALTHY)
            plane.store.set_state("down", BackendState.UNHEALTHY)
            await async_wait_until(
                lambda: _eds_is(config.envoy.admin_port, {"up": ["HEALTHY"], "down": ["UNHEALTHY"]}),
                timeout=10,
                what="Envoy holds the verdicts",
            )
        # The control plane is gone; a new one on the same addresses starts with no verdict (every backend unknown).
        async with running_control_plane(config) as plane:
            assert {s.state for s in plane.store.current.backends.values()} == {BackendState.UNKNOWN}
            cds = plane.cache.current.version(t.CLUSTER)
            node_id = config.envoy.node_id
            await async_wait_until(
                lambda: (n := _node(plane, node_id)) is not None and n.acked.get("cds") == cds,
                timeout=30,  # Envoy's reconnect backoff
                what="Envoy resumes on the new control plane",
            )
            assert _node(plane, node_id).types[t.ENDPOINT].held == frozenset({"up", "down"})
            assert await _eds(config.envoy.admin_port) == {"up": ["HEALTHY"], "down": ["UNHEALTHY"]}

            # A new Envoy meanwhile gets this control plane's view, unknown and all (nothing else to keep).
            p = free_ports(3)
            fresh = await async_start_envoy(
                config,
                tmp_path / "new",
                node=NodeOverrides("fresh", admin_port=p[0], listener_port=p[1], egress_port=p[2]),
            )
            try:
                # (Envoy's admin API shows an endpoint pushed UNKNOWN as HEALTHY: it routes to it.)
                assert await _eds(p[0]) == {"up": ["HEALTHY"], "down": ["HEALTHY"]}
                assert await _eds(config.envoy.admin_port) == {"up": ["HEALTHY"], "down": ["UNHEALTHY"]}

                # Its own verdicts go out at once: one that differs from Envoy's, and then the other.
                plane.store.set_state("up", BackendState.UNHEALTHY)
                await async_wait_until(
                    lambda: _eds_is(config.envoy.admin_port, {"up": ["UNHEALTHY"], "down": ["UNHEALTHY"]}),
                    timeout=10,
                    what="the first verdict reaches the resumed Envoy",
                )
                plane.store.set_state("down", BackendState.HEALTHY)
                await async_wait_until(
                    lambda: _eds_is(config.envoy.admin_port, {"up": ["UNHEALTHY"], "down": ["HEALTHY"]}),
                    timeout=10,
                    what="the second verdict reaches it",
                )
                assert _node(plane, node_id).types[t.ENDPOINT].held == frozenset()
            finally:
                fresh.stop()
    finally:
        if envoy is not None:
            envoy.stop()


async def _eds_is(admin_port: int, wanted: dict[str, list[str]]) -> bool:
    return await _eds(admin_port) == wanted
