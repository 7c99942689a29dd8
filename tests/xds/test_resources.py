"""The pure resource builder: what Envoy is told, checked on the dicts and on the encoded protobufs."""

from __future__ import annotations

from dataclasses import replace

import pytest
from envoy_data_plane.envoy.config.cluster.v3 import Cluster
from envoy_data_plane.envoy.config.endpoint.v3 import ClusterLoadAssignment

from xds_control.config import parse_config
from xds_control.view import BackendState, BreakerState, ViewStore
from xds_control.xds import typeurls as t
from xds_control.xds.encode import encode_message
from xds_control.xds.resources import build_resources, health_of


def _config(**extra):
    return parse_config(
        {
            "backends": [
                {"name": "weather", "url": "http://127.0.0.1:9001/mcp"},
                {"name": "replicas", "endpoints": ["http://127.0.0.1:9002/api/mcp", "http://127.0.0.1:9003/api/mcp"]},
                {"name": "remote", "url": "https://mcp.example.com/v1/mcp"},
            ],
            **extra,
        }
    )


def _routes(resources, name):
    return {r["match"]["path"]: r for r in resources[t.ROUTE][name]["virtual_hosts"][0]["routes"]}


def test_backend_cluster_has_panic_threshold_zero_and_ejectable_outlier_detection():
    config = _config(
        outlier_detection={
            "consecutive_5xx": 7,
            "consecutive_gateway_failure": 3,
            "interval": "2s",
            "base_ejection_time": "250ms",
        }
    )
    cluster = build_resources(ViewStore(config).current)[t.CLUSTER]["weather"]
    assert cluster["type"] == "EDS"
    assert cluster["eds_cluster_config"]["eds_config"]["ads"] == {}
    assert cluster["common_lb_config"]["healthy_panic_threshold"] == {"value": 0.0}
    od = cluster["outlier_detection"]
    assert (od["consecutive_5xx"], od["consecutive_gateway_failure"], od["max_ejection_percent"]) == (7, 3, 100)
    assert (od["interval"], od["base_ejection_time"]) == ("2s", "0.250s")
    assert od["enforcing_consecutive_gateway_failure"] == 100
    limits = cluster["circuit_breakers"]["thresholds"][0]
    assert limits["max_connections"] == config.cluster_limits.max_connections


def test_cluster_encoding_keeps_outlier_and_panic_fields():
    """betterproto2 cannot parse `consecutive_5xx` from a dict; the encoder must still carry it."""
    cluster = build_resources(ViewStore(_config()).current)[t.CLUSTER]["weather"]
    decoded = Cluster.parse(encode_message(t.CLUSTER, cluster))
    assert decoded.outlier_detection.consecutive_5xx == 5
    assert decoded.outlier_detection.max_ejection_percent == 100
    assert decoded.common_lb_config.healthy_panic_threshold is not None
    assert decoded.common_lb_config.healthy_panic_threshold.value == 0.0


def test_https_backend_gets_tls_with_sni():
    cluster = build_resources(ViewStore(_config()).current)[t.CLUSTER]["remote"]
    assert cluster["transport_socket"]["typed_config"]["sni"] == "mcp.example.com"
    assert "transport_socket" not in build_resources(ViewStore(_config()).current)[t.CLUSTER]["weather"]


def test_egress_routes_rewrite_path_and_host_with_no_route_timeout():
    resources = build_resources(ViewStore(_config(listener={"idle_timeout": "90s"})).current)
    routes = _routes(resources, t.EGRESS_ROUTES)
    assert set(routes) == {"/backends/weather/mcp", "/backends/replicas/mcp", "/backends/remote/mcp"}
    route = routes["/backends/replicas/mcp"]["route"]
    assert route["cluster"] == "replicas"
    assert route["prefix_rewrite"] == "/api/mcp"
    assert route["auto_host_rewrite"] is True
    assert route["timeout"] == "0s"
    assert route["idle_timeout"] == "90s"
    assert route["retry_policy"]["retry_on"] == "connect-failure,refused-stream,reset"


def test_public_listener_routes_mcp_to_aggregator_and_backends_only_when_exposed():
    hidden = _routes(build_resources(ViewStore(_config()).current), t.PUBLIC_ROUTES)
    assert set(hidden) == {"/mcp"}
    assert hidden["/mcp"]["route"]["cluster"] == t.AGGREGATOR_CLUSTER
    assert "prefix_rewrite" not in hidden["/mcp"]["route"]
    exposed = _routes(build_resources(ViewStore(_config(listener={"expose_backends": True})).current), t.PUBLIC_ROUTES)
    assert set(exposed) == {"/mcp", "/backends/weather/mcp", "/backends/replicas/mcp", "/backends/remote/mcp"}


def test_the_aggregator_cluster_lets_every_request_retry_a_dead_replica_at_once():
    cluster = build_resources(ViewStore(_config()).current)[t.CLUSTER][t.AGGREGATOR_CLUSTER]
    thresholds = cluster["circuit_breakers"]["thresholds"][0]
    assert thresholds["max_retries"] > 3, "Envoy's default of 3 retries in flight fails clients when a replica dies"
    decoded = Cluster.parse(encode_message(t.CLUSTER, cluster))
    assert decoded.circuit_breakers.thresholds[0].max_retries == thresholds["max_retries"]


def test_listeners_bind_configured_addresses_and_use_rds():
    config = _config(listener={"address": "0.0.0.0", "port": 8080}, egress={"port": 8081})
    listeners = build_resources(ViewStore(config).current)[t.LISTENER]
    assert listeners[t.PUBLIC_LISTENER]["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 8080}
    assert listeners[t.EGRESS_LISTENER]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 8081}
    hcm = listeners[t.PUBLIC_LISTENER]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["rds"]["route_config_name"] == t.PUBLIC_ROUTES
    assert hcm["request_timeout"] == "30s" and hcm["request_headers_timeout"] == "10s"  # slow clients cut off
    assert hcm["common_http_protocol_options"] == {"idle_timeout": "300s"}


def test_both_listeners_pin_mcp_sessions_to_the_replica_that_opened_them_and_encode():
    # egress: a backend replica; public: an aggregator replica (aggregator.replicas)
    listeners = build_resources(ViewStore(_config()).current)[t.LISTENER]
    for name in (t.EGRESS_LISTENER, t.PUBLIC_LISTENER):
        filters = listeners[name]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
        assert [f["name"] for f in filters] == ["envoy.filters.http.stateful_session", "envoy.filters.http.router"]
        state = filters[0]["typed_config"]["session_state"]
        assert state["name"] == "envoy.http.stateful_session.envelope"
        assert state["typed_config"]["header"] == {"name": "mcp-session-id"}
        assert encode_message(t.LISTENER, listeners[name])


def test_endpoint_hostname_is_the_backend_authority():
    cla = build_resources(ViewStore(_config()).current)[t.ENDPOINT]["replicas"]
    endpoints = [lb["endpoint"] for lb in cla["endpoints"][0]["lb_endpoints"]]
    assert [e["hostname"] for e in endpoints] == ["127.0.0.1:9002", "127.0.0.1:9003"]
    assert [e["address"]["socket_address"]["port_value"] for e in endpoints] == [9002, 9003]


@pytest.mark.parametrize(
    ("state", "breaker", "drained", "expected"),
    [
        (BackendState.UNKNOWN, BreakerState.CLOSED, False, "UNKNOWN"),
        (BackendState.HEALTHY, BreakerState.CLOSED, False, "HEALTHY"),
        (BackendState.DEGRADED, BreakerState.CLOSED, False, "DEGRADED"),
        (BackendState.UNHEALTHY, BreakerState.CLOSED, False, "UNHEALTHY"),
        (BackendState.UNAUTHENTICATED, BreakerState.CLOSED, False, "UNHEALTHY"),
        (BackendState.HEALTHY, BreakerState.OPEN, False, "UNHEALTHY"),
        (BackendState.HEALTHY, BreakerState.HALF_OPEN, False, "UNHEALTHY"),
        (BackendState.HEALTHY, BreakerState.CLOSED, True, "DRAINING"),
    ],
)
def test_endpoint_health_follows_the_view(state, breaker, drained, expected):
    store = ViewStore(_config())
    store.set_state("weather", state)
    store.update_backend("weather", lambda s: replace(s, breaker=breaker, drained=drained))
    cla = build_resources(store.current)[t.ENDPOINT]["weather"]
    assert health_of(cla) == [expected]
    decoded = ClusterLoadAssignment.parse(encode_message(t.ENDPOINT, cla))
    assert decoded.endpoints[0].lb_endpoints[0].health_status.name == expected


def test_per_endpoint_health_within_a_healthy_backend():
    store = ViewStore(_config())
    store.set_state("replicas", BackendState.HEALTHY)
    store.set_state("replicas", BackendState.UNHEALTHY, endpoint="http://127.0.0.1:9003/api/mcp")
    assert health_of(build_resources(store.current)[t.ENDPOINT]["replicas"]) == ["HEALTHY", "UNHEALTHY"]


def test_host_name_endpoints_wait_for_a_resolved_address():
    config = parse_config({"backends": [{"name": "svc", "url": "http://weather.internal:9001/mcp"}]})
    store = ViewStore(config)
    assert build_resources(store.current)[t.ENDPOINT]["svc"]["endpoints"] == []
    store.update_backend("svc", lambda s: replace(s, endpoints=(replace(s.endpoints[0], address="10.1.2.3"),)))
    lb = build_resources(store.current)[t.ENDPOINT]["svc"]["endpoints"][0]["lb_endpoints"][0]
    assert lb["endpoint"]["address"]["socket_address"]["address"] == "10.1.2.3"
    assert lb["endpoint"]["hostname"] == "weather.internal:9001"


def test_every_resource_encodes():
    resources = build_resources(ViewStore(_config(listener={"expose_backends": True})).current)
    for type_url, items in resources.items():
        for spec in items.values():
            assert encode_message(type_url, spec)
