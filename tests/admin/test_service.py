"""The admin service over a real ViewStore, through a real grpc.aio server and the real AdminClient."""

from __future__ import annotations

import socket
import time
from dataclasses import replace

import grpc
import pytest

from xds_control.admin.client import AdminClient, Outcome
from xds_control.admin.metrics import call_count
from xds_control.admin.ports import HealthControl, NodeDirectory, NodeInfo, TypeStatus
from xds_control.admin.service import MAX_OUTCOME_COUNT, MAX_OUTCOMES, start_admin_server
from xds_control.admin.v1 import admin_pb2 as pb
from xds_control.admin.v1 import admin_pb2_grpc as pb_grpc
from xds_control.errors import AdminError, BackendNotFound
from xds_control.view import BackendState, BackendStatus, BreakerState, Catalog, EndpointStatus, ViewStore

from .conftest import FakeHealth, FakeNodes, Harness, make_config, start_harness

CATALOG = Catalog.build(
    tools=[
        {"name": "forecast", "inputSchema": {"type": "object"}},
        {"name": "alerts", "inputSchema": {"type": "object"}},
    ],
    prompts=[{"name": "summary"}],
    protocol_version="2025-06-18",
    capabilities={"tools": {"listChanged": True}},
)


def test_fakes_satisfy_the_ports(harness: Harness) -> None:
    assert isinstance(FakeHealth(harness.store), HealthControl)
    assert isinstance(FakeNodes(), NodeDirectory)


async def test_list_backends_returns_every_backend_in_config_order(client: AdminClient) -> None:
    backends = await client.list_backends()
    assert [b.name for b in backends] == ["weather", "calc"]
    assert all(b.state is BackendState.UNKNOWN and b.breaker is BreakerState.CLOSED for b in backends)
    assert [e.url for e in backends[1].endpoints] == ["http://127.0.0.1:9002/mcp", "http://127.0.0.1:9003/mcp"]


async def test_a_fully_populated_status_round_trips_equal(harness: Harness, client: AdminClient) -> None:
    def populate(status):  # type: ignore[no-untyped-def]
        return replace(
            status,
            state=BackendState.DEGRADED,
            breaker=BreakerState.HALF_OPEN,
            consecutive_failures=4,
            consecutive_successes=1,
            last_probe_ms=12.5,
            last_success=1_700_000_000.25,
            last_error="rate_limited",
            retry_at=time.time() + 30.0,
            catalog=CATALOG,
            endpoints=(
                EndpointStatus(
                    url="http://127.0.0.1:9002/mcp",
                    state=BackendState.DEGRADED,
                    last_probe_ms=12.5,
                    address="127.0.0.1",
                ),
                EndpointStatus(url="http://127.0.0.1:9003/mcp", state=BackendState.UNHEALTHY, last_error="timeout"),
            ),
        )

    harness.store.update_backend("calc", populate)
    expected = harness.store.current.backends["calc"]

    def same(got: BackendStatus) -> bool:  # the deadline travels as the time left: equal to transit time
        assert got.retry_at is not None and expected.retry_at is not None
        return replace(got, retry_at=None) == replace(expected, retry_at=None) and (
            abs(got.retry_at - expected.retry_at) < 1.0
        )

    assert same(await client.get_backend("calc"))
    snapshot = await client.snapshot()
    assert snapshot.version == harness.store.version
    assert same(snapshot.backends["calc"])
    assert snapshot.backends["calc"].catalog == CATALOG


async def test_retry_after_counts_down_between_reads_of_one_view(harness: Harness, client: AdminClient) -> None:
    clock = [1_700_000_000.0]
    harness.server.service.wall_clock = lambda: clock[0]
    harness.store.update_backend("calc", lambda s: replace(s, breaker=BreakerState.OPEN, retry_at=clock[0] + 40.0))
    version = harness.store.version
    channel = grpc.aio.insecure_channel(harness.target)
    try:
        stub = pb_grpc.AdminStub(channel)
        seen = []
        for _ in range(3):
            response = await stub.GetBackend(pb.GetBackendRequest(name="calc"), timeout=5)
            seen.append(response.backend.retry_after)
            clock[0] += 5.0
    finally:
        await channel.close()
    assert seen == [40.0, 35.0, 30.0] and harness.store.version == version


async def test_routable_matches_the_view_rule(harness: Harness) -> None:
    harness.store.set_state("weather", BackendState.HEALTHY)
    harness.store.set_state("calc", BackendState.HEALTHY)
    harness.store.update_backend("calc", lambda s: replace(s, breaker=BreakerState.OPEN))
    channel = grpc.aio.insecure_channel(harness.target)
    try:
        response = await pb_grpc.AdminStub(channel).ListBackends(pb.ListBackendsRequest(), timeout=5)
    finally:
        await channel.close()
    assert {b.name: b.routable for b in response.backends} == {"weather": True, "calc": False}


async def test_omit_catalogs_keeps_hash_and_tool_count(harness: Harness) -> None:
    harness.store.update_backend("weather", lambda s: replace(s, catalog=CATALOG))
    channel = grpc.aio.insecure_channel(harness.target)
    try:
        stub = pb_grpc.AdminStub(channel)
        full = await stub.ListBackends(pb.ListBackendsRequest(), timeout=5)
        slim = await stub.ListBackends(pb.ListBackendsRequest(omit_catalogs=True), timeout=5)
    finally:
        await channel.close()
    assert full.backends[0].catalog_json and not slim.backends[0].catalog_json
    assert slim.backends[0].catalog_hash == CATALOG.hash
    assert slim.backends[0].tool_count == 2


async def test_unknown_backend_is_not_found(client: AdminClient) -> None:
    for call in (client.get_backend, client.drain, client.undrain, client.probe_now, client.reset_breaker):
        with pytest.raises(BackendNotFound, match="nope"):
            await call("nope")


async def test_not_found_is_the_grpc_status(harness: Harness) -> None:
    channel = grpc.aio.insecure_channel(harness.target)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await pb_grpc.AdminStub(channel).GetBackend(pb.GetBackendRequest(name="nope"), timeout=5)
    finally:
        await channel.close()
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


async def test_drain_and_undrain_change_the_view(harness: Harness, client: AdminClient) -> None:
    harness.store.set_state("weather", BackendState.HEALTHY)
    before = harness.store.version
    drained = await client.drain("weather")
    assert drained.drained and not drained.routable
    assert harness.store.current.backends["weather"].drained
    assert harness.store.version == before + 1
    undrained = await client.undrain("weather")
    assert not undrained.drained and undrained.routable
    assert not harness.store.current.backends["weather"].drained
    assert harness.store.version == before + 2


async def test_probe_and_reset_reach_the_health_control(harness: Harness, client: AdminClient) -> None:
    probed = await client.probe_now("weather")
    assert harness.health.probed == ["weather"]
    assert probed.state is BackendState.HEALTHY and probed.last_probe_ms == 7.0
    harness.store.update_backend("calc", lambda s: replace(s, breaker=BreakerState.OPEN, consecutive_failures=9))
    reset = await client.reset_breaker("calc")
    assert harness.health.resets == ["calc"]
    assert reset.breaker is BreakerState.CLOSED and reset.consecutive_failures == 0


async def test_health_key_error_is_not_found(harness: Harness, client: AdminClient) -> None:
    harness.health.raise_key_error = True  # a reload removed it between the check and the call
    with pytest.raises(BackendNotFound):
        await client.probe_now("weather")


async def test_an_unexpected_failure_is_internal_without_its_text(harness: Harness, client: AdminClient) -> None:
    async def broken(name: str) -> None:
        raise RuntimeError("boom with secret detail")

    harness.health.probe_now = broken  # type: ignore[method-assign]
    with pytest.raises(AdminError, match="INTERNAL") as info:
        await client.probe_now("weather")
    assert "secret" not in str(info.value)


async def test_report_outcomes_reaches_health_and_names_unknown_backends(harness: Harness, client: AdminClient) -> None:
    unknown = await client.report_outcomes(
        [
            Outcome("weather", successes=10, failures=2, last_failure_category="http_5xx"),
            Outcome("gone", successes=1),
            Outcome("calc", successes=3),
        ]
    )
    assert unknown == ["gone"]
    assert harness.health.outcomes == [("weather", 10, 2, "http_5xx"), ("calc", 3, 0, None)]


async def test_report_outcomes_rejects_a_free_text_category_without_applying_any(
    harness: Harness, client: AdminClient
) -> None:
    with pytest.raises(AdminError, match="INVALID_ARGUMENT"):
        await client.report_outcomes(
            [
                Outcome("weather", successes=1),
                Outcome("calc", failures=1, last_failure_category="Bearer abc: 401 from host"),
            ]
        )
    assert harness.health.outcomes == []


async def test_list_nodes(harness: Harness, client: AdminClient) -> None:
    assert await client.nodes() == []
    node = NodeInfo(
        node_id="envoy-1",
        cluster="gw",
        connected_since=1_700_000_000.5,
        types={
            "type.googleapis.com/envoy.config.cluster.v3.Cluster": TypeStatus(acked_version="3"),
            "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment": TypeStatus(
                acked_version="7", nacked_version="8", nack_detail="bad endpoint"
            ),
        },
    )
    harness.nodes.items.append(node)
    assert await client.nodes() == [node]


async def test_without_health_control_mutations_needing_it_are_unimplemented() -> None:
    h = await start_harness(health=False, nodes=False)
    try:
        async with h.client() as c:
            with pytest.raises(AdminError, match="UNIMPLEMENTED"):
                await c.probe_now("weather")
            with pytest.raises(AdminError, match="UNIMPLEMENTED"):
                await c.reset_breaker("weather")
            assert await c.nodes() == []
            assert (await c.drain("weather")).drained  # drain needs only the view
    finally:
        await h.server.stop(grace=0.5)


async def test_calls_are_counted_by_method_and_code(client: AdminClient) -> None:
    ok = call_count("GetBackend", grpc.StatusCode.OK)
    missing = call_count("GetBackend", grpc.StatusCode.NOT_FOUND)
    await client.get_backend("weather")
    with pytest.raises(BackendNotFound):
        await client.get_backend("nope")
    assert call_count("GetBackend", grpc.StatusCode.OK) == ok + 1
    assert call_count("GetBackend", grpc.StatusCode.NOT_FOUND) == missing + 1


async def test_start_refuses_an_address_in_use() -> None:
    # grpc sets SO_REUSEPORT, so a second grpc server could share the port: hold it with a plain socket instead.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        config = make_config(f"127.0.0.1:{sock.getsockname()[1]}")
        with pytest.raises(AdminError, match="cannot bind"):
            await start_admin_server(config, ViewStore(config), None, None)


async def test_report_outcomes_merges_a_backend_named_twice_and_caps_its_counts(
    harness: Harness, client: AdminClient
) -> None:
    top = 2**32 - 1
    unknown = await client.report_outcomes(
        [Outcome("weather", failures=top), Outcome("weather", failures=top, last_failure_category="timeout")]
    )
    assert unknown == []
    assert harness.health.outcomes == [("weather", 0, MAX_OUTCOME_COUNT, "timeout")]


async def test_report_outcomes_refuses_more_entries_than_the_cap_and_truncates_unknown_names(
    harness: Harness, client: AdminClient
) -> None:
    with pytest.raises(AdminError, match="INVALID_ARGUMENT"):
        await client.report_outcomes([Outcome(f"b{i}", successes=1) for i in range(MAX_OUTCOMES + 1)])
    assert harness.health.outcomes == []
    unknown = await client.report_outcomes([Outcome("x" * 10_000 + "\x1b[31m", successes=1)])
    assert len(unknown) == 1 and len(unknown[0]) < 100 and "\x1b" not in unknown[0]
