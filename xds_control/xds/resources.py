"""Pure translation of the view into Envoy resources.

Each resource is built as a plain dict in Envoy's own (YAML/JSON) shape, so it
reads like the Envoy docs and hashes cheaply; `snapshot.py` encodes only the
dicts whose hash changed. Nothing here does I/O or knows about probes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from xds_control.config import BackendConfig, Config
from xds_control.view import BackendStatus, EnvoyHealth, View, envoy_health
from xds_control.xds import auth_filters
from xds_control.xds import typeurls as t
from xds_control.xds.profiles import DEFAULT_PROFILE, NodeProfile

Spec = dict[str, Any]
ADS_SOURCE: Spec = {"ads": {}, "resource_api_version": "V3"}
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
HTTP_OPTIONS_TYPE = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
STDERR_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog"
STATEFUL_SESSION_TYPE = "type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSession"
ENVELOPE_SESSION_TYPE = "type.googleapis.com/envoy.extensions.http.stateful_session.envelope.v3.EnvelopeSessionState"
PREVIOUS_HOSTS_TYPE = "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
SESSION_HEADER = "mcp-session-id"
RETRY_ON = "connect-failure,refused-stream,reset"
# Response flags that mean the gateway could not serve a request (not DC/SI: a client closing its stream,
# or an idle MCP stream timing out, are how long-lived streams end).
LOGGED_FLAGS = ("UH", "UF", "UO", "NR", "URX", "NC", "UT", "LR", "UR", "UC", "LH", "UMSDR", "OM", "DF")
CONNECT_TIMEOUT = "2s"


def _duration(seconds: float) -> str:
    """Seconds as a protobuf JSON duration (`10s`, `0.250s`)."""
    millis = round(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis / 1000:.3f}s"


def _ip_or_none(host: str) -> str | None:
    if host == "localhost":
        return "127.0.0.1"
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def backend_path(name: str) -> str:
    """The route path that reaches backend `name` through Envoy."""
    return f"/backends/{name}/mcp"


# -- CDS ------------------------------------------------------------------------------------


def backend_cluster(backend: BackendConfig, config: Config) -> Spec:
    od = config.outlier_detection
    limits = config.cluster_limits
    cluster: Spec = {
        "name": backend.name,
        "type": "EDS",
        "connect_timeout": CONNECT_TIMEOUT,
        "eds_cluster_config": {"eds_config": ADS_SOURCE, "service_name": backend.name},
        # Without this Envoy routes to an UNHEALTHY sole endpoint anyway (panic mode).
        "common_lb_config": {"healthy_panic_threshold": {"value": 0.0}},
        "outlier_detection": {
            "consecutive_5xx": od.consecutive_5xx,
            "consecutive_gateway_failure": od.consecutive_gateway_failure,
            "enforcing_consecutive_5xx": 100,
            "enforcing_consecutive_gateway_failure": 100,
            "interval": _duration(od.interval),
            "base_ejection_time": _duration(od.base_ejection_time),
            "max_ejection_percent": 100,  # so a one-host cluster can be ejected
        },
        "circuit_breakers": {
            "thresholds": [
                {
                    "priority": "DEFAULT",
                    "max_connections": limits.max_connections,
                    "max_pending_requests": limits.max_pending_requests,
                    "max_requests": limits.max_requests,
                    "max_retries": limits.max_retries,
                }
            ]
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_OPTIONS_TYPE,
                "explicit_http_config": {"http_protocol_options": {}},
                "common_http_protocol_options": {"idle_timeout": _duration(min(config.listener.idle_timeout, 60.0))},
            }
        },
    }
    if backend.scheme == "https":
        sni = backend.endpoint_urls[0].host
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": TLS_TYPE, "sni": sni},
        }
    return cluster


def aggregator_cluster(config: Config) -> Spec:
    """Every aggregator replica (`aggregator.replicas`; or one DNS name Envoy resolves to several addresses).
    A replica Envoy cannot reach (two connection failures or resets in a row: local-origin errors) is ejected
    for 5 s; what a replica answers, 5xx included, never ejects it."""
    endpoints = [{"endpoint": {"address": _socket(host, port)}} for host, port in config.aggregator_upstreams()]
    return {
        "name": t.AGGREGATOR_CLUSTER,
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": CONNECT_TIMEOUT,
        "load_assignment": {"cluster_name": t.AGGREGATOR_CLUSTER, "endpoints": [{"lb_endpoints": endpoints}]},
        "outlier_detection": {
            "split_external_local_origin_errors": True,
            "consecutive_local_origin_failure": 2,
            "enforcing_consecutive_local_origin_failure": 100,
            "enforcing_consecutive_5xx": 0,
            "enforcing_consecutive_gateway_failure": 0,
            "enforcing_success_rate": 0,
            "interval": "1s",
            "base_ejection_time": "5s",
            "max_ejection_percent": 100,
        },
        # Envoy allows 3 retries in flight per cluster by default: when a replica dies, every client's next
        # request fails to connect at once and needs its retry to the survivor, so the cap is that of requests.
        "circuit_breakers": {"thresholds": [{"max_retries": 1024}]},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_OPTIONS_TYPE,
                "explicit_http_config": {"http_protocol_options": {}},
            }
        },
    }


def _socket(host: str, port: int) -> Spec:
    return {"socket_address": {"address": host, "port_value": port}}


# -- EDS ------------------------------------------------------------------------------------


# Endpoints Envoy must not send new requests to (UNHEALTHY, DRAINING) are grouped under this locality.
# Envoy matches an EDS endpoint to its existing host by address but recreates the host when the
# locality changes, and outlier ejection state lives on the host object: so an endpoint moving back
# from here to the default locality (the control plane saw it recover) becomes a fresh host that no
# earlier ejection keeps out. No locality-aware load balancing is configured: localities only name hosts.
UNROUTABLE_LOCALITY: Spec = {"sub_zone": "xds-control/unroutable"}
HELD_OUT = frozenset({EnvoyHealth.UNHEALTHY, EnvoyHealth.DRAINING})


def load_assignment(backend: BackendConfig, status: BackendStatus | None) -> Spec:
    """Every endpoint with its health from the view; Host is rewritten to `hostname` (the backend's authority).

    Endpoints Envoy may route to come first, in the default locality; the others (UNHEALTHY, DRAINING)
    follow in `UNROUTABLE_LOCALITY`, so an endpoint's recovery reaches Envoy as a new host with no
    outlier ejection (see docs/dev/health.md, "Recovery and Envoy's outlier detection")."""
    routable: list[Spec] = []
    held_out: list[Spec] = []
    by_url = {e.url: e for e in status.endpoints} if status else {}
    for url in backend.endpoint_urls:
        endpoint_status = by_url.get(url.url)
        address = _ip_or_none(url.host) or (endpoint_status.address if endpoint_status else None)
        if address is None:
            continue  # a host name not resolved yet: nothing Envoy could dial
        health = envoy_health(status, endpoint_status) if status and endpoint_status else EnvoyHealth.UNKNOWN
        (held_out if health in HELD_OUT else routable).append(
            {
                "endpoint": {"address": _socket(address, url.port), "hostname": url.authority},
                "health_status": health.value,
            }
        )
    groups: list[Spec] = []
    if routable:
        groups.append({"lb_endpoints": routable})
    if held_out:
        groups.append({"locality": dict(UNROUTABLE_LOCALITY), "lb_endpoints": held_out})
    return {"cluster_name": backend.name, "endpoints": groups}


# -- LDS / RDS ------------------------------------------------------------------------------


def _session_affinity() -> Spec:
    """Keep a legacy MCP session on the replica that opened it: Envoy's envelope session state
    appends the chosen host to the `Mcp-Session-Id` a backend answers with, and on later requests
    strips it again and routes to that host while it is healthy (else to another host, whose
    "session not found" makes the aggregator open a new session there). Backends without sessions
    (the 2026-07-28 family, stateless servers) send no such header and are balanced as before."""
    envelope = {"@type": ENVELOPE_SESSION_TYPE, "header": {"name": SESSION_HEADER}}
    session_state = {"name": "envoy.http.stateful_session.envelope", "typed_config": envelope}
    return {
        "name": "envoy.filters.http.stateful_session",
        "typed_config": {"@type": STATEFUL_SESSION_TYPE, "session_state": session_state},
    }


def _listener(
    name: str,
    address: str,
    port: int,
    route_config: str,
    config: Config,
    *,
    sticky_sessions: bool = False,
    keys: Mapping[str, str] | None = None,
) -> Spec:
    """`keys`: the public listener's JWKS documents (View.keys); None: a listener without incoming auth."""
    router = {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}
    authenticating = keys is not None and config.auth is not None
    auth = auth_filters.auth_http_filters(config, dict(keys or {})) if authenticating else []
    hcm: Spec = {
        "@type": HCM_TYPE,
        "stat_prefix": name,
        "codec_type": "AUTO",
        "rds": {"route_config_name": route_config, "config_source": ADS_SOURCE},
        "http_filters": [*auth, _session_affinity(), router] if sticky_sessions else [*auth, router],
        "stream_idle_timeout": _duration(config.listener.idle_timeout),
        # Slow clients (a slowloris) are cut off: headers, then the whole request, each within its bound; the
        # response is not timed (MCP streams are long-lived), and a connection with no stream closes when idle.
        "request_headers_timeout": _duration(config.listener.request_headers_timeout),
        "request_timeout": _duration(config.listener.request_timeout),
        "common_http_protocol_options": {"idle_timeout": _duration(config.listener.idle_timeout)},
        "normalize_path": True,
        "merge_slashes": True,
        "access_log": [_failure_access_log(name)],
    }
    if authenticating:
        hcm["early_header_mutation_extensions"] = auth_filters.strip_identity_headers()
        hcm["local_reply_config"] = auth_filters.local_reply_config(config)
        hcm["access_log"].append(auth_filters.refusal_access_log(name))
    return {
        "name": name,
        "address": _socket(address, port),
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }


def _failure_access_log(listener: str) -> Spec:
    """One line on Envoy's stderr per request that failed at the gateway (a response flag of
    `LOGGED_FLAGS`: UH, UF, URX, NR, ...) or got a 5xx: what tells "no healthy upstream" from "the backend broke". No query
    string and no headers, so no credential can reach it."""
    line = (
        f"[access] %START_TIME% listener={listener} %REQ(:METHOD)% %PATH(NQ)% status=%RESPONSE_CODE% "
        "flags=%RESPONSE_FLAGS% details=%RESPONSE_CODE_DETAILS% cluster=%UPSTREAM_CLUSTER% upstream=%UPSTREAM_HOST% "
        "duration_ms=%DURATION%\n"
    )
    five_xx = {
        "status_code_filter": {
            "comparison": {
                "op": "GE",
                "value": {"default_value": 500, "runtime_key": "xds_control.access_log.min_status"},
            }
        }
    }
    return {
        "name": "envoy.access_loggers.stderr",
        "filter": {"or_filter": {"filters": [{"response_flag_filter": {"flags": list(LOGGED_FLAGS)}}, five_xx]}},
        "typed_config": {"@type": STDERR_LOG_TYPE, "log_format": {"text_format_source": {"inline_string": line}}},
    }


def _mcp_route(path: str, cluster: str, config: Config, *, rewrite: str | None) -> Spec:
    route: Spec = {
        "cluster": cluster,
        "timeout": "0s",  # no route timeout: MCP streams are long-lived; the idle timeout closes dead ones
        "idle_timeout": _duration(config.listener.idle_timeout),
        "retry_policy": {
            "retry_on": RETRY_ON,
            "num_retries": 2,
            # A retry goes to another replica: not the one that just refused or reset (a session pinned to a
            # replica that died is pinned only for the first try).
            "retry_host_predicate": [
                {"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {"@type": PREVIOUS_HOSTS_TYPE}}
            ],
            "host_selection_retry_max_attempts": 3,
        },
    }
    if rewrite is not None:
        route["prefix_rewrite"] = rewrite
        route["auto_host_rewrite"] = True  # Host := the endpoint's hostname (its authority): SDK servers check it
    return {"name": cluster, "match": {"path": path}, "route": route}


def public_routes(config: Config) -> Spec:
    routes = [_mcp_route("/mcp", t.AGGREGATOR_CLUSTER, config, rewrite=None)]
    if config.listener.expose_backends:
        routes += [_mcp_route(backend_path(b.name), b.name, config, rewrite=b.path) for b in config.backends]
    if config.auth is not None and config.rate_limit is not None:
        limit = auth_filters.route_rate_limit(config.rate_limit)
        for route in routes:
            route["typed_per_filter_config"] = {auth_filters.RATE_LIMIT_FILTER: limit}
    routes = auth_filters.metadata_routes(config) + routes
    return {"name": t.PUBLIC_ROUTES, "virtual_hosts": [{"name": "public", "domains": ["*"], "routes": routes}]}


def egress_routes(config: Config) -> Spec:
    routes = [_mcp_route(backend_path(b.name), b.name, config, rewrite=b.path) for b in config.backends]
    return {"name": t.EGRESS_ROUTES, "virtual_hosts": [{"name": "egress", "domains": ["*"], "routes": routes}]}


# -- the whole set --------------------------------------------------------------------------

Plan = dict[str, dict[str, tuple[Any, Callable[[], Spec]]]]


def profile_clusters(config: Config, profile: NodeProfile) -> tuple[bool, bool]:
    """(backend clusters?, the aggregator cluster?) for a node of `profile`: what its listeners route to."""
    return profile.egress or config.listener.expose_backends, profile.public


def plan_assignment(backend: BackendConfig, status: BackendStatus | None) -> tuple[Any, Callable[[], Spec]]:
    """One backend's ClusterLoadAssignment as (key, build)."""
    return (backend, status.significant() if status else None), partial(load_assignment, backend, status)


def plan_clusters(view: View, profile: NodeProfile = DEFAULT_PROFILE) -> Plan:
    """CDS and EDS of a node of `profile`, as (key, build) per resource: equal keys mean an equal resource."""
    config = view.config
    plan: Plan = {t.CLUSTER: {}, t.ENDPOINT: {}}
    backends, aggregator = profile_clusters(config, profile)
    if backends:
        cluster_inputs = (config.outlier_detection, config.cluster_limits, config.listener.idle_timeout)
        for b in config.backends:
            plan[t.CLUSTER][b.name] = ((b, cluster_inputs), partial(backend_cluster, b, config))
            plan[t.ENDPOINT][b.name] = plan_assignment(b, view.backends.get(b.name))
    if aggregator:
        plan[t.CLUSTER][t.AGGREGATOR_CLUSTER] = (
            (tuple(config.aggregator_upstreams()),),
            partial(aggregator_cluster, config),
        )
        for name, spec in auth_filters.jwks_clusters(config).items():
            plan[t.CLUSTER][name] = ((spec,), partial(dict, spec))
    return plan


def plan_listeners(view: View, profile: NodeProfile = DEFAULT_PROFILE) -> Plan:
    """LDS and RDS of a node of `profile` (its role and its own ports), as (key, build) per resource."""
    config = view.config
    plan: Plan = {t.LISTENER: {}, t.ROUTE: {}}
    route_inputs = (config.listener, tuple(config.backends))
    if profile.public:
        port = profile.listener_port or config.listener.port
        auth_inputs = (config.auth, config.rate_limit, tuple(sorted(view.keys.items())) if config.auth else ())
        plan[t.LISTENER][t.PUBLIC_LISTENER] = (
            (config.listener, port, auth_inputs),
            partial(
                _listener,
                t.PUBLIC_LISTENER,
                config.listener.address,
                port,
                t.PUBLIC_ROUTES,
                config,
                sticky_sessions=True,  # a legacy session stays on the aggregator replica that opened it
                keys=view.keys,
            ),
        )
        plan[t.ROUTE][t.PUBLIC_ROUTES] = (
            (*route_inputs, config.auth, config.rate_limit),
            partial(public_routes, config),
        )
    if profile.egress:
        port = profile.egress_port or config.egress.port
        plan[t.LISTENER][t.EGRESS_LISTENER] = (
            (config.listener, config.egress, port),
            partial(
                _listener, t.EGRESS_LISTENER, config.egress.address, port, t.EGRESS_ROUTES, config, sticky_sessions=True
            ),
        )
        plan[t.ROUTE][t.EGRESS_ROUTES] = (route_inputs, partial(egress_routes, config))
    return plan


def plan_resources(view: View, profile: NodeProfile = DEFAULT_PROFILE) -> Plan:
    """Every resource of every type a node of `profile` gets, as (key, build): equal keys mean an equal
    resource, so a snapshot builder can skip building and encoding whatever did not change."""
    return {**plan_clusters(view, profile), **plan_listeners(view, profile)}


def build_resources(view: View, profile: NodeProfile = DEFAULT_PROFILE) -> dict[str, dict[str, Spec]]:
    """Every resource of every type, keyed by type URL then resource name."""
    return {
        type_url: {name: build() for name, (_key, build) in items.items()}
        for type_url, items in plan_resources(view, profile).items()
    }


def health_of(spec: Mapping[str, Any]) -> list[str]:
    """The health statuses in a load assignment spec (for tests and the admin API)."""
    return [lb["health_status"] for group in spec.get("endpoints", []) for lb in group["lb_endpoints"]]
