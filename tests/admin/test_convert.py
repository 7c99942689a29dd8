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

NOW = 1_700_000_000.0


def test_every_state_and_breaker_round_trips() -> None:
    for state in BackendState:
        for breaker in BreakerState:
            status = BackendStatus(name="b", state=state, breaker=breaker)
            message = backend_to_pb(status, now=NOW)
            assert backend_from_pb(message, now=NOW) == status
            assert message.routable == status.routable


def test_unset_optionals_stay_none_and_zero_values_survive() -> None:
    status = BackendStatus(
        name="b", last_probe_ms=0.0, retry_at=NOW, endpoints=(EndpointStatus(url="http://h/mcp", last_probe_ms=0.0),)
    )
    back = backend_from_pb(pb.Backend.FromString(backend_to_pb(status, now=NOW).SerializeToString()), now=NOW)
    assert back == status
    assert back.last_success is None and back.last_error is None and back.endpoints[0].address is None


def test_catalog_travels_as_json_and_keeps_the_server_hash() -> None:
    catalog = Catalog.build(
        tools=[{"name": "t", "inputSchema": {"type": "object", "properties": {"x": {"type": "integer"}}}}]
    )
    status = BackendStatus(name="b", catalog=catalog)
    assert backend_from_pb(backend_to_pb(status, now=NOW), now=NOW).catalog == catalog
    odd = BackendStatus(name="b", catalog=Catalog(tools=({"name": "t"},), hash="server-hash"))
    assert backend_from_pb(backend_to_pb(odd, now=NOW), now=NOW).catalog_hash == "server-hash"
    slim = backend_to_pb(status, now=NOW, omit_catalog=True)
    assert slim.catalog_json == "" and slim.catalog_hash == catalog.hash and slim.tool_count == 1


def test_values_from_a_newer_server_are_never_routable() -> None:
    assert state_from_pb(99) is BackendState.UNKNOWN
    assert state_from_pb(pb.BACKEND_STATE_UNSPECIFIED) is BackendState.UNKNOWN
    assert breaker_from_pb(99) is BreakerState.OPEN
    assert breaker_from_pb(pb.BREAKER_STATE_UNSPECIFIED) is BreakerState.OPEN
    message = pb.Backend(name="b", state=pb.BACKEND_STATE_HEALTHY)  # breaker left unset
    assert not backend_from_pb(message, now=NOW).routable


def test_node_round_trip() -> None:
    node = NodeInfo("n", "c", 12.5, {"type.googleapis.com/x.Y": TypeStatus("1", "2", "bad")})
    assert node_from_pb(node_to_pb(node)) == node


def test_retry_after_is_the_time_left_when_served_and_a_deadline_on_the_receivers_clock() -> None:
    status = BackendStatus(name="b", breaker=BreakerState.OPEN, retry_at=NOW + 40.0)
    assert [backend_to_pb(status, now=NOW + t).retry_after for t in (0.0, 5.0, 39.5, 41.0)] == [40.0, 35.0, 0.5, 0.0]
    # served at the server's NOW + 5, received 0.25 s later on a clock 1000 s behind: 35 s from arrival
    received = backend_from_pb(backend_to_pb(status, now=NOW + 5.0), now=NOW - 1000.0 + 5.25)
    assert received.retry_at == NOW - 1000.0 + 40.25
    assert received.retry_after(NOW - 1000.0 + 10.25) == 30.0
    assert not backend_to_pb(BackendStatus(name="b"), now=NOW).HasField("retry_after")
