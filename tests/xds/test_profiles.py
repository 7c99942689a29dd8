"""Per-node snapshots: a node's metadata selects its profile (role, own listener ports); pure, no sockets."""

from __future__ import annotations

import pytest
from google.protobuf import struct_pb2

from xds_control.config import parse_config
from xds_control.view import BackendState, ViewStore
from xds_control.xds import typeurls as t
from xds_control.xds.profiles import (
    DEFAULT_PROFILE,
    NodeProfile,
    NodeRole,
    profile_from_fields,
    profile_from_struct,
)
from xds_control.xds.snapshot import MAX_PROFILES, SnapshotBuilder, SnapshotCache

EDGE = NodeProfile(NodeRole.EDGE, listener_port=11000)
EGRESS = NodeProfile(NodeRole.EGRESS, egress_port=11001)


def _store(n: int = 3, **sections) -> ViewStore:
    backends = [{"name": f"b{i}", "url": f"http://127.0.0.1:{9000 + i}/mcp"} for i in range(n)]
    return ViewStore(parse_config({"backends": backends, **sections}))


def _port(snapshot, listener: str) -> int:
    return snapshot_spec_port(snapshot.resources(t.LISTENER)[listener].message)


def snapshot_spec_port(message: bytes) -> int:
    from xds_control.xds.envoy_wire import message_class

    listener = message_class("envoy.config.listener.v3.Listener").FromString(message)
    return listener.address.socket_address.port_value


def test_metadata_selects_role_and_ports_and_absent_metadata_is_the_default() -> None:
    assert profile_from_fields(None) == DEFAULT_PROFILE
    assert profile_from_fields({"role": "edge", "listener_port": 11000.0}) == EDGE
    assert profile_from_fields({"role": "egress", "egress_port": 11001}) == EGRESS
    struct = struct_pb2.Struct()
    struct.update({"xds_control": {"role": "edge", "listener_port": 11000}, "other": {"x": [1, 2, 3]}})
    assert profile_from_struct(struct) == EDGE
    assert profile_from_struct(struct_pb2.Struct()) == DEFAULT_PROFILE


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"role": "gateway"}, "xds_control.role"),
        ({"role": "x" * 10_000}, "xds_control.role"),
        ({"listener_port": 0}, "xds_control.listener_port"),
        ({"listener_port": 70000}, "xds_control.listener_port"),
        ({"egress_port": 10.5}, "xds_control.egress_port"),
        ({"egress_port": "<struct_value>"}, "xds_control.egress_port"),
        ({"listener_port": True}, "xds_control.listener_port"),
    ],
)
def test_a_bad_metadata_value_is_refused_naming_its_key_and_truncated(fields, named) -> None:
    with pytest.raises(ValueError) as info:
        profile_from_fields(fields)
    message = str(info.value)
    assert named in message
    assert len(message) < 200


def test_metadata_that_is_not_a_mapping_is_refused() -> None:
    struct = struct_pb2.Struct()
    struct.update({"xds_control": "edge"})
    with pytest.raises(ValueError, match="xds_control must be a mapping"):
        profile_from_struct(struct)


def test_an_edge_node_gets_the_public_listener_on_its_port_and_only_the_aggregator_cluster() -> None:
    store, builder = _store(), SnapshotBuilder()
    base = builder.build(store.current)
    edge = builder.build_for(store.current, base, EDGE)
    assert set(edge.resources(t.LISTENER)) == {t.PUBLIC_LISTENER}
    assert set(edge.resources(t.ROUTE)) == {t.PUBLIC_ROUTES}
    assert set(edge.resources(t.CLUSTER)) == {t.AGGREGATOR_CLUSTER}
    assert set(edge.resources(t.ENDPOINT)) == set()
    assert _port(edge, t.PUBLIC_LISTENER) == 11000
    assert _port(base, t.PUBLIC_LISTENER) == store.current.config.listener.port


def test_an_egress_node_gets_no_public_listener_and_every_backend() -> None:
    store, builder = _store(), SnapshotBuilder()
    base = builder.build(store.current)
    egress = builder.build_for(store.current, base, EGRESS)
    assert set(egress.resources(t.LISTENER)) == {t.EGRESS_LISTENER}
    assert set(egress.resources(t.CLUSTER)) == {"b0", "b1", "b2"}
    assert set(egress.resources(t.ENDPOINT)) == {"b0", "b1", "b2"}
    assert _port(egress, t.EGRESS_LISTENER) == 11001
    # the very encodings of the base snapshot: a flip is encoded once for every node
    assert all(egress.resources(t.ENDPOINT)[n] is base.resources(t.ENDPOINT)[n] for n in ("b0", "b1", "b2"))


def test_an_edge_node_with_exposed_backends_gets_their_clusters_too() -> None:
    store, builder = _store(listener={"expose_backends": True}), SnapshotBuilder()
    edge = builder.build_for(store.current, builder.build(store.current), EDGE)
    assert set(edge.resources(t.CLUSTER)) == {"b0", "b1", "b2", t.AGGREGATOR_CLUSTER}
    assert set(edge.resources(t.LISTENER)) == {t.PUBLIC_LISTENER}


def test_a_health_flip_reuses_every_profiles_listeners_and_changes_only_eds() -> None:
    store, builder = _store(), SnapshotBuilder()
    base = builder.build(store.current)
    before = {p: builder.build_for(store.current, base, p) for p in (EDGE, EGRESS)}
    store.set_state("b1", BackendState.UNHEALTHY)
    flipped = builder.build(store.current)
    for profile, old in before.items():
        new = builder.build_for(store.current, flipped, profile)
        assert new.resources(t.LISTENER) == old.resources(t.LISTENER)
        assert all(new.resources(t.LISTENER)[n] is r for n, r in old.resources(t.LISTENER).items())
        assert new.version(t.LISTENER) == old.version(t.LISTENER)
        assert new.version(t.CLUSTER) == old.version(t.CLUSTER)
    assert builder.build_for(store.current, flipped, EGRESS).version(t.ENDPOINT) != before[EGRESS].version(t.ENDPOINT)
    assert builder.build_for(store.current, flipped, EDGE).version(t.ENDPOINT) == before[EDGE].version(t.ENDPOINT)


def test_the_cache_composes_each_profile_once_per_snapshot_and_every_node_shares_a_plain_snapshot() -> None:
    store, builder, cache = _store(), SnapshotBuilder(), SnapshotCache()
    base = builder.build(store.current)
    calls: list[NodeProfile] = []

    def compose(profile: NodeProfile):
        calls.append(profile)
        return builder.build_for(store.current, base, profile)

    cache.set(base, compose)
    assert cache.snapshot_for(DEFAULT_PROFILE) is base
    first = cache.snapshot_for(EDGE)
    assert cache.snapshot_for(EDGE) is first
    assert calls == [EDGE]
    cache.set(base)  # a snapshot set without compose (a test, a tool): every node gets it
    assert cache.snapshot_for(EDGE) is base


def test_profiles_kept_are_bounded() -> None:
    store, builder = _store(1), SnapshotBuilder()
    base = builder.build(store.current)
    for port in range(1, MAX_PROFILES + 10):
        builder.build_for(store.current, base, NodeProfile(NodeRole.EDGE, listener_port=port))
    assert builder.profiles_kept == MAX_PROFILES
