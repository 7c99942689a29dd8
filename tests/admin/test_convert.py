"""Proto <-> view conversion: exact round trips, conservative reading of values a newer server may send."""

from __future__ import annotations

from xds_control.admin.convert import (
    backend_from_pb,
    backend_to_pb,
    breaker_from_pb,
    node_from_pb,
    node_to_pb,
    state_from_pb,
)
from xds_control.admin.ports import NodeInfo, TypeStatus
from xds_control.admin.v1 import admin_pb2 as pb
from xds_control.view import BackendState, BackendStatus, BreakerState, Catalog, EndpointStatus


def test_every_state_and_breaker_round_trips() -> None:
    for state in BackendState:
        for breaker in BreakerState:
            status = BackendStatus(name="b", state=state, breaker=breaker)
            message = backend_to_pb(status)
            assert backend_from_pb(message) == status
            assert message.routable == status.routable


def test_unset_optionals_stay_none_and_zero_values_survive() -> None:
    status = BackendStatus(
        name="b", last_probe_ms=0.0, retry_after=0.0, endpoints=(EndpointStatus(url="http://h/mcp", last_probe_ms=0.0),)
    )
    back = backend_from_pb(pb.Backend.FromString(backend_to_pb(status).SerializeToString()))
    assert back == status
    assert back.last_success is None and back.last_error is None and back.endpoints[0].address is None


def test_catalog_travels_as_json_and_keeps_the_server_hash() -> None:
    catalog = Catalog.build(
        tools=[{"name": "t", "inputSchema": {"type": "object", "properties": {"x": {"type": "integer"}}}}]
    )
    status = BackendStatus(name="b", catalog=catalog)
    assert backend_from_pb(backend_to_pb(status)).catalog == catalog
    odd = BackendStatus(name="b", catalog=Catalog(tools=({"name": "t"},), hash="server-hash"))
    assert backend_from_pb(backend_to_pb(odd)).catalog_hash == "server-hash"
    slim = backend_to_pb(status, omit_catalog=True)
    assert slim.catalog_json == "" and slim.catalog_hash == catalog.hash and slim.tool_count == 1


def test_values_from_a_newer_server_are_never_routable() -> None:
    assert state_from_pb(99) is BackendState.UNKNOWN
    assert state_from_pb(pb.BACKEND_STATE_UNSPECIFIED) is BackendState.UNKNOWN
    assert breaker_from_pb(99) is BreakerState.OPEN
    assert breaker_from_pb(pb.BREAKER_STATE_UNSPECIFIED) is BreakerState.OPEN
    message = pb.Backend(name="b", state=pb.BACKEND_STATE_HEALTHY)  # breaker left unset
    assert not backend_from_pb(message).routable


def test_node_round_trip() -> None:
    node = NodeInfo("n", "c", 12.5, {"type.googleapis.com/x.Y": TypeStatus("1", "2", "bad")})
    assert node_from_pb(node_to_pb(node)) == node
