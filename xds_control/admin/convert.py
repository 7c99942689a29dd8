"""View objects <-> admin protobuf messages. Pure; both directions round-trip exactly (given one `now`).

`retry_after` travels as what the proto promises, the seconds until the next
chance of recovery: `backend_to_pb` computes it from the view's deadline
(`BackendStatus.retry_at`) at the `now` it is served, and `backend_from_pb`
turns it back into a deadline on the receiver's own clock at the `now` it
arrived, so the figure counts down on both sides and no two clocks need agree.

A catalog travels as the JSON text of `Catalog.to_json()` in `catalog_json`
(empty: no catalog, or catalogs omitted on request); `catalog_hash` and
`tool_count` are always filled. Enum values a newer server may add are read
conservatively: an unknown state as `unknown`, an unknown breaker state as
`open`, so neither makes a backend routable.
"""

from __future__ import annotations

import json
from dataclasses import replace

from xds_control.admin.ports import NodeInfo, NodeView, TypeStatus
from xds_control.admin.v1 import admin_pb2 as pb
from xds_control.view import BackendState, BackendStatus, BreakerState, Catalog, EndpointStatus

_STATE_TO_PB = {
    BackendState.UNKNOWN: pb.BACKEND_STATE_UNKNOWN,
    BackendState.HEALTHY: pb.BACKEND_STATE_HEALTHY,
    BackendState.DEGRADED: pb.BACKEND_STATE_DEGRADED,
    BackendState.UNHEALTHY: pb.BACKEND_STATE_UNHEALTHY,
    BackendState.UNAUTHENTICATED: pb.BACKEND_STATE_UNAUTHENTICATED,
}
_STATE_FROM_PB: dict[int, BackendState] = {v: k for k, v in _STATE_TO_PB.items()}

_BREAKER_TO_PB = {
    BreakerState.CLOSED: pb.BREAKER_STATE_CLOSED,
    BreakerState.OPEN: pb.BREAKER_STATE_OPEN,
    BreakerState.HALF_OPEN: pb.BREAKER_STATE_HALF_OPEN,
}
_BREAKER_FROM_PB: dict[int, BreakerState] = {v: k for k, v in _BREAKER_TO_PB.items()}


def state_to_pb(state: BackendState) -> pb.BackendState:
    return _STATE_TO_PB[state]


def state_from_pb(value: int) -> BackendState:
    return _STATE_FROM_PB.get(value, BackendState.UNKNOWN)


def breaker_to_pb(breaker: BreakerState) -> pb.BreakerState:
    return _BREAKER_TO_PB[breaker]


def breaker_from_pb(value: int) -> BreakerState:
    return _BREAKER_FROM_PB.get(value, BreakerState.OPEN)


def catalog_to_json_text(catalog: Catalog) -> str:
    return json.dumps(catalog.to_json(), separators=(",", ":"), default=str)


def catalog_from_json_text(text: str, catalog_hash: str) -> Catalog:
    """Rebuild a catalog; the server's hash is kept (it is the one versions are keyed on)."""
    catalog = Catalog.from_json(json.loads(text))
    return catalog if not catalog_hash or catalog.hash == catalog_hash else replace(catalog, hash=catalog_hash)


def endpoint_to_pb(endpoint: EndpointStatus) -> pb.Endpoint:
    msg = pb.Endpoint(url=endpoint.url, state=state_to_pb(endpoint.state))
    if endpoint.last_probe_ms is not None:
        msg.last_probe_ms = endpoint.last_probe_ms
    if endpoint.last_error is not None:
        msg.last_error = endpoint.last_error
    if endpoint.address is not None:
        msg.address = endpoint.address
    return msg


def endpoint_from_pb(msg: pb.Endpoint) -> EndpointStatus:
    return EndpointStatus(
        url=msg.url,
        state=state_from_pb(msg.state),
        last_probe_ms=msg.last_probe_ms if msg.HasField("last_probe_ms") else None,
        last_error=msg.last_error if msg.HasField("last_error") else None,
        address=msg.address if msg.HasField("address") else None,
    )


def backend_to_pb(status: BackendStatus, *, now: float, omit_catalog: bool = False) -> pb.Backend:
    """`now`: unix time at which the message is served (`retry_after` is counted from it)."""
    msg = pb.Backend(
        name=status.name,
        state=state_to_pb(status.state),
        breaker=breaker_to_pb(status.breaker),
        drained=status.drained,
        routable=status.routable,
        consecutive_failures=status.consecutive_failures,
        consecutive_successes=status.consecutive_successes,
        catalog_hash=status.catalog_hash,
        tool_count=len(status.catalog.tools) if status.catalog else 0,
        endpoints=[endpoint_to_pb(e) for e in status.endpoints],
    )
    for name in ("last_probe_ms", "last_success", "last_error", "state_since"):
        value = getattr(status, name)
        if value is not None:
            setattr(msg, name, value)
    retry_after = status.retry_after(now)
    if retry_after is not None:
        msg.retry_after = retry_after
    if status.catalog is not None and not omit_catalog:
        msg.catalog_json = catalog_to_json_text(status.catalog)
    return msg


def backend_from_pb(msg: pb.Backend, *, now: float) -> BackendStatus:
    """A `BackendStatus` equal to the server's (its catalog is None if catalogs were omitted). `now`: unix time
    at which the message arrived (the deadline `retry_at` is `now + retry_after`)."""

    def opt(name: str) -> object:
        return getattr(msg, name) if msg.HasField(name) else None

    return BackendStatus(
        name=msg.name,
        state=state_from_pb(msg.state),
        breaker=breaker_from_pb(msg.breaker),
        drained=msg.drained,
        consecutive_failures=msg.consecutive_failures,
        consecutive_successes=msg.consecutive_successes,
        last_probe_ms=opt("last_probe_ms"),  # type: ignore[arg-type]
        last_success=opt("last_success"),  # type: ignore[arg-type]
        last_error=opt("last_error"),  # type: ignore[arg-type]
        retry_at=round(now + msg.retry_after, 3) if msg.HasField("retry_after") else None,
        state_since=opt("state_since"),  # type: ignore[arg-type]
        catalog=catalog_from_json_text(msg.catalog_json, msg.catalog_hash) if msg.catalog_json else None,
        endpoints=tuple(endpoint_from_pb(e) for e in msg.endpoints),
    )


def node_to_pb(node: NodeView) -> pb.Node:
    return pb.Node(
        node_id=node.node_id,
        cluster=node.cluster,
        connected_since=node.connected_since,
        types=[
            pb.TypeStatus(
                type_url=url, acked_version=t.acked_version, nacked_version=t.nacked_version, nack_detail=t.nack_detail
            )
            for url, t in sorted(node.types.items())
        ],
        role=getattr(node, "role", ""),
    )


def node_from_pb(msg: pb.Node) -> NodeInfo:
    return NodeInfo(
        node_id=msg.node_id,
        cluster=msg.cluster,
        connected_since=msg.connected_since,
        types={
            t.type_url: TypeStatus(
                acked_version=t.acked_version, nacked_version=t.nacked_version, nack_detail=t.nack_detail
            )
            for t in msg.types
        },
        role=msg.role,
    )
