"""Many Envoys on one control plane, each with its own node id, role and ports (real Envoys, real gRPC).

Node metadata (written by `render_bootstrap(config, NodeOverrides(...))`, as `xds-control bootstrap --node-id
--role --listener-port ...` does) selects what each node gets; ACK and NACK are per node.
"""

from __future__ import annotations

import asyncio
import json
import socket

import httpx2
import pytest

from tests.support.procs import demo_backend
from tests.support.stack import admin_get, async_start_envoy, running_control_plane, stack_config
from tests.support.waiting import async_wait_until, free_port, free_ports
from xds_control.admin.client import AdminClient
from xds_control.view import BackendState
from xds_control.xds import typeurls as t
from xds_control.xds.bootstrap import NodeOverrides
from xds_control.xds.profiles import NodeRole

pytestmark = pytest.mark.integration

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
}
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


@pytest.fixture
def weather():
    port = free_port()
    proc = demo_backend("weather", port)
    yield port
    proc.stop()


async def _listeners(admin_port: int) -> dict[str, int]:
    """Envoy's active listeners: name -> port."""
    status, body = await asyncio.to_thread(admin_get, admin_port, "/listeners?format=json")
    assert status == 200, body
    return {
        entry["name"]: entry["local_address"]["socket_address"]["port_value"]
        for entry in json.loads(body).get("listener_statuses", [])
    }


async def _clusters(admin_port: int) -> dict[str, list[str]]:
    """Envoy's dynamic clusters: name -> the EDS health of each host."""
    status, body = await asyncio.to_thread(admin_get, admin_port, "/clusters?format=json")
    assert status == 200, body
    return {
        entry["name"]: [h.get("health_status", {}).get("eds_health_status", "") for h in entry.get("host_statuses", [])]
        for entry in json.loads(body).get("cluster_statuses", [])
        if entry["name"] != "xds_cluster"  # the bootstrap's static cluster (envoy/bootstrap.yaml.tmpl)
    }


async def _initialize(port: int, name: str = "weather") -> int:
    async with httpx2.AsyncClient(timeout=5, trust_env=False) as client:
        response = await client.post(f"http://127.0.0.1:{port}/backends/{name}/mcp", json=INIT, headers=MCP_HEADERS)
        return response.status_code


def _acked_everything(plane, node_id: str) -> bool:
    found = [n for n in plane.nodes.nodes() if n.node_id == node_id]
    if not found:
        return False
    snapshot = plane.cache.snapshot_for(found[0].profile)
    served = [k for k in t.PUSH_ORDER if snapshot.resources(k)]  # an edge node has no EDS to ask for
    return all(found[0].acked.get(t.SHORT[k]) == snapshot.version(k) for k in served)


async def test_envoys_with_different_node_ids_and_roles_get_their_own_listeners(weather, tmp_path):
    config = stack_config([{"name": "weather", "url": f"http://127.0.0.1:{weather}/mcp"}])
    p = free_ports(7)
    nodes = {
        "edge-1": NodeOverrides("edge-1", NodeRole.EDGE, admin_port=p[0], listener_port=p[1]),
        "egress-1": NodeOverrides("egress-1", NodeRole.EGRESS, admin_port=p[2], egress_port=p[3]),
        "all-1": NodeOverrides("all-1", admin_port=p[4], listener_port=p[5], egress_port=p[6]),
    }
    async with running_control_plane(config) as plane:
        envoys = []
        try:
            for node_id, node in nodes.items():
                envoys.append(await async_start_envoy(config, tmp_path / node_id, node=node))
            for node_id in nodes:
                await async_wait_until(
                    lambda n=node_id: _acked_everything(plane, n), timeout=10, what=f"{node_id} ACKs"
                )

            assert await _listeners(p[0]) == {t.PUBLIC_LISTENER: p[1]}
            assert await _listeners(p[2]) == {t.EGRESS_LISTENER: p[3]}
            assert await _listeners(p[4]) == {t.PUBLIC_LISTENER: p[5], t.EGRESS_LISTENER: p[6]}
            assert set(await _clusters(p[0])) == {t.AGGREGATOR_CLUSTER}
            assert set(await _clusters(p[2])) == {"weather"}
            assert await _initialize(p[3]) == 200 and await _initialize(p[6]) == 200

            async with AdminClient(config.control_plane.admin) as client:
                listed = {n.node_id: n.role for n in await client.nodes()}
            assert listed == {
                "edge-1": f"edge listener={p[1]}",
                "egress-1": f"egress egress={p[3]}",
                "all-1": f"all listener={p[5]} egress={p[6]}",
            }

            plane.store.set_state("weather", BackendState.UNHEALTHY)
            for admin in (p[2], p[4]):
                await async_wait_until(
                    lambda a=admin: _eds_is(a, "UNHEALTHY"), timeout=5, what="the flip reaches every node with it"
                )
            assert await _initialize(p[3]) == 503
        finally:
            for envoy in envoys:
                envoy.stop()


async def _eds_is(admin_port: int, wanted: str) -> bool:
    return (await _clusters(admin_port)).get("weather") == [wanted]


async def test_a_nack_from_one_node_leaves_the_others_alone(weather, tmp_path):
    """One node's listener port is taken by another process: Envoy cannot bind it and NACKs that LDS. The
    others ACK theirs; every node, the NACKing one included, still takes the next EDS flip; and the NACKed
    version is sent once (no push loop)."""
    config = stack_config([{"name": "weather", "url": f"http://127.0.0.1:{weather}/mcp"}])
    p = free_ports(5)
    taken = socket.socket()
    taken.bind(("127.0.0.1", p[1]))
    taken.listen(1)
    bad = NodeOverrides("bad", admin_port=p[0], listener_port=p[1])
    good = NodeOverrides("good", admin_port=p[2], listener_port=p[3], egress_port=p[4])
    async with running_control_plane(config) as plane:
        envoys = []
        try:
            envoys.append(await async_start_envoy(config, tmp_path / "bad", node=bad, wait_ready=False))
            envoys.append(await async_start_envoy(config, tmp_path / "good", node=good))

            def node(node_id: str):
                return next((n for n in plane.nodes.nodes() if n.node_id == node_id), None)

            nacked = await async_wait_until(
                lambda: (n := node("bad")) and n.nacked.get("lds"), timeout=20, what="the bad node's LDS NACK"
            )
            assert "bind" in nacked[1] or "address" in nacked[1].lower(), nacked
            await async_wait_until(lambda: _acked_everything(plane, "good"), timeout=10, what="the good node ACKs")
            assert not node("good").nacked
            assert await _listeners(p[2]) == {t.PUBLIC_LISTENER: p[3], t.EGRESS_LISTENER: p[4]}

            plane.store.set_state("weather", BackendState.UNHEALTHY)
            eds = plane.cache.current.version(t.ENDPOINT)
            await async_wait_until(
                lambda: node("bad").acked.get("eds") == eds and node("good").acked.get("eds") == eds,
                timeout=10,
                what="both nodes ACK the flip",
            )
            lds_state = node("bad").types[t.LISTENER]
            assert lds_state.pending is None and lds_state.nacked_version == nacked[0]
            assert node("bad").acked.get("lds", "") != nacked[0]
        finally:
            for envoy in envoys:
                envoy.stop()
            taken.close()
