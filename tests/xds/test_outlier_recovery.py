"""The builder's side of "a recovery beats Envoy's outlier ejection": endpoints Envoy must not route to live in
their own locality, so their return to the default locality makes Envoy build a fresh host (no ejection).

What Envoy does with that is checked against a real Envoy in tests/e2e/test_outlier_recovery.py.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from envoy_data_plane.envoy.config.endpoint.v3 import ClusterLoadAssignment

from xds_control.config import parse_config
from xds_control.view import BackendState, BreakerState, ViewStore
from xds_control.xds import typeurls as t
from xds_control.xds.encode import encode_message
from xds_control.xds.resources import UNROUTABLE_LOCALITY, build_resources, health_of
from xds_control.xds.snapshot import SnapshotBuilder

A, B = "http://127.0.0.1:9002/mcp", "http://127.0.0.1:9003/mcp"


def _store() -> ViewStore:
    return ViewStore(
        parse_config(
            {
                "backends": [
                    {"name": "weather", "url": "http://127.0.0.1:9001/mcp"},
                    {"name": "replicas", "endpoints": [A, B]},
                ]
            }
        )
    )


def _cla(store: ViewStore, name: str = "weather") -> dict:
    return build_resources(store.current)[t.ENDPOINT][name]


def _groups(cla: dict) -> list[tuple[dict | None, list[tuple[int, str]]]]:
    """(locality or None, [(port, health), ...]) per LocalityLbEndpoints group."""
    return [
        (
            group.get("locality"),
            [
                (lb["endpoint"]["address"]["socket_address"]["port_value"], lb["health_status"])
                for lb in group["lb_endpoints"]
            ],
        )
        for group in cla["endpoints"]
    ]


@pytest.mark.parametrize(
    ("state", "breaker", "drained", "health", "locality"),
    [
        (BackendState.UNKNOWN, BreakerState.CLOSED, False, "UNKNOWN", None),
        (BackendState.HEALTHY, BreakerState.CLOSED, False, "HEALTHY", None),
        (BackendState.DEGRADED, BreakerState.CLOSED, False, "DEGRADED", None),
        (BackendState.UNHEALTHY, BreakerState.CLOSED, False, "UNHEALTHY", UNROUTABLE_LOCALITY),
        (BackendState.UNAUTHENTICATED, BreakerState.CLOSED, False, "UNHEALTHY", UNROUTABLE_LOCALITY),
        (BackendState.HEALTHY, BreakerState.OPEN, False, "UNHEALTHY", UNROUTABLE_LOCALITY),
        (BackendState.HEALTHY, BreakerState.HALF_OPEN, False, "UNHEALTHY", UNROUTABLE_LOCALITY),
        (BackendState.HEALTHY, BreakerState.CLOSED, True, "DRAINING", UNROUTABLE_LOCALITY),
    ],
)
def test_only_endpoints_envoy_must_not_route_to_are_in_the_unroutable_locality(
    state, breaker, drained, health, locality
):
    store = _store()
    store.set_state("weather", state)
    store.update_backend("weather", lambda s: replace(s, breaker=breaker, drained=drained))
    assert _groups(_cla(store)) == [(locality, [(9001, health)])]


def test_routable_endpoints_carry_no_locality_so_a_healthy_fleet_is_pushed_as_before():
    store = _store()
    store.set_state("replicas", BackendState.HEALTHY)
    cla = _cla(store, "replicas")
    assert cla["endpoints"] == [{"lb_endpoints": cla["endpoints"][0]["lb_endpoints"]}]
    assert _groups(cla) == [(None, [(9002, "HEALTHY"), (9003, "HEALTHY")])]


def test_a_dead_replica_moves_to_the_unroutable_locality_and_back_on_recovery():
    store = _store()
    store.set_state("replicas", BackendState.HEALTHY)
    before = _cla(store, "replicas")

    store.set_state("replicas", BackendState.UNHEALTHY, endpoint=A)
    assert _groups(_cla(store, "replicas")) == [
        (None, [(9003, "HEALTHY")]),
        (UNROUTABLE_LOCALITY, [(9002, "UNHEALTHY")]),
    ]
    assert health_of(_cla(store, "replicas")) == ["HEALTHY", "UNHEALTHY"]

    store.set_state("replicas", BackendState.HEALTHY, endpoint=A)
    assert _cla(store, "replicas") == before  # back in the default locality: to Envoy, a new host


def test_every_endpoint_unroutable_leaves_only_the_unroutable_group():
    store = _store()
    store.set_state("replicas", BackendState.UNHEALTHY)
    assert _groups(_cla(store, "replicas")) == [(UNROUTABLE_LOCALITY, [(9002, "UNHEALTHY"), (9003, "UNHEALTHY")])]


def test_the_locality_survives_encoding():
    store = _store()
    store.set_state("replicas", BackendState.HEALTHY)
    store.set_state("replicas", BackendState.UNHEALTHY, endpoint=B)
    decoded = ClusterLoadAssignment.parse(encode_message(t.ENDPOINT, _cla(store, "replicas")))
    assert [g.locality.sub_zone if g.locality else "" for g in decoded.endpoints] == [
        "",
        UNROUTABLE_LOCALITY["sub_zone"],
    ]
    assert [lb.health_status.name for g in decoded.endpoints for lb in g.lb_endpoints] == ["HEALTHY", "UNHEALTHY"]


def test_a_recovery_is_one_eds_push_and_nothing_else_changes():
    store = _store()
    builder = SnapshotBuilder()
    store.set_state("weather", BackendState.UNHEALTHY)
    down = builder.build(store.current)
    store.set_state("weather", BackendState.HEALTHY)
    up = builder.build(store.current)
    changed = {type_url for type_url in t.PUSH_ORDER if down.version(type_url) != up.version(type_url)}
    assert changed == {t.ENDPOINT}
    assert down.resources(t.ENDPOINT)["weather"].hash != up.resources(t.ENDPOINT)["weather"].hash
    assert down.resources(t.ENDPOINT)["replicas"] is up.resources(t.ENDPOINT)["replicas"]  # not re-encoded


def test_outlier_detection_is_unchanged_while_a_backend_is_up():
    store = _store()
    store.set_state("weather", BackendState.HEALTHY)
    up = build_resources(store.current)[t.CLUSTER]["weather"]["outlier_detection"]
    store.set_state("weather", BackendState.UNHEALTHY)
    down = build_resources(store.current)[t.CLUSTER]["weather"]["outlier_detection"]
    assert up == down
    assert (up["consecutive_5xx"], up["max_ejection_percent"]) == (5, 100)
    assert "max_ejection_time" not in up
