"""The control plane's Envoy protobufs (upb classes from generated descriptors) against envoy-data-plane:
the committed descriptors are what the generator makes, every resource the builder can produce encodes to
the same message envoy-data-plane makes from the same dict, and a DiscoveryRequest envoy-data-plane encodes
reads back field for field."""

from __future__ import annotations

import copy
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from envoy_data_plane.envoy.config.cluster.v3 import Cluster, OutlierDetection
from envoy_data_plane.envoy.config.core.v3 import Node
from envoy_data_plane.envoy.config.endpoint.v3 import ClusterLoadAssignment
from envoy_data_plane.envoy.config.listener.v3 import Listener
from envoy_data_plane.envoy.config.route.v3 import RouteConfiguration

# Registers the typed_config types in betterproto2's pool, so envoy-data-plane's from_dict can parse `@type`.
from envoy_data_plane.envoy.extensions.access_loggers.stream import v3 as _stream_logs  # noqa: F401
from envoy_data_plane.envoy.extensions.filters.http.jwt_authn import v3 as _jwt_authn  # noqa: F401
from envoy_data_plane.envoy.extensions.filters.http.local_ratelimit import v3 as _local_ratelimit  # noqa: F401
from envoy_data_plane.envoy.extensions.filters.http.rbac import v3 as _rbac  # noqa: F401
from envoy_data_plane.envoy.extensions.filters.http.router import v3 as _router  # noqa: F401
from envoy_data_plane.envoy.extensions.filters.http.stateful_session import v3 as _stateful_session  # noqa: F401
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager import v3 as _hcm  # noqa: F401
from envoy_data_plane.envoy.extensions.http.early_header_mutation.header_mutation import v3 as _header_mutation  # noqa: F401
from envoy_data_plane.envoy.extensions.http.stateful_session.envelope import v3 as _envelope_session  # noqa: F401
from envoy_data_plane.envoy.extensions.transport_sockets.tls import v3 as _tls  # noqa: F401
from envoy_data_plane.envoy.extensions.upstreams.http import v3 as _http_options  # noqa: F401
from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryRequest
from envoy_data_plane.google.rpc import Status
from google.protobuf import json_format

from xds_control.config import load_config, parse_config
from xds_control.errors import XdsError
from xds_control.view import BackendState, BreakerState, ViewStore
from xds_control.xds import envoy_wire, envoy_wire_gen
from xds_control.xds import typeurls as t
from xds_control.xds.encode import encode_message, message_type
from xds_control.xds.resources import build_resources
from xds_control.xds.server import DiscoveryRequest as WireDiscoveryRequest

ROOT = Path(__file__).resolve().parents[2]
ORACLE = {t.CLUSTER: Cluster, t.ENDPOINT: ClusterLoadAssignment, t.LISTENER: Listener, t.ROUTE: RouteConfiguration}


def _oracle_bytes(type_url: str, spec: dict[str, Any]) -> bytes:
    """envoy-data-plane's encoding of `spec` (the control plane's encoder before envoy_wire)."""
    spec = copy.deepcopy(spec)
    outlier = spec.pop("outlier_detection", None)
    message = ORACLE[type_url].from_dict(spec)
    if outlier is not None:  # betterproto2's from_dict cannot spell `consecutive_5xx`
        digits = ("consecutive_5xx", "enforcing_consecutive_5xx")
        message.outlier_detection = OutlierDetection.from_dict({k: v for k, v in outlier.items() if k not in digits})
        for key in digits:
            setattr(message.outlier_detection, key, outlier.get(key))
    return bytes(message)


def _views() -> list[Any]:
    """Views that take every branch of the resource builder: plain and TLS backends, several endpoints,
    a host name, each health state, the breaker, draining, exposed backends, tuned outlier detection."""
    config = parse_config(
        {
            "backends": [
                {"name": "weather", "url": "http://127.0.0.1:9001/mcp"},
                {"name": "replicas", "endpoints": ["http://127.0.0.1:9002/api/mcp", "http://127.0.0.1:9003/api/mcp"]},
                {"name": "remote", "url": "https://mcp.example.com/v1/mcp"},
                {"name": "named", "url": "http://weather.internal:9004/mcp"},
            ],
            "listener": {"expose_backends": True, "idle_timeout": "45s"},
            "outlier_detection": {
                "consecutive_5xx": 7,
                "consecutive_gateway_failure": 3,
                "interval": "2s",
                "base_ejection_time": "250ms",
            },
        }
    )
    configs = [
        *sorted((ROOT / "examples" / "configs").glob("*.yaml")),
        ROOT / "compose" / "config.yaml",
    ]  # compose: host names
    views = [ViewStore(load_config(path)).current for path in configs]
    store = ViewStore(config)
    views.append(store.current)
    store.set_state("replicas", BackendState.HEALTHY)
    store.set_state("replicas", BackendState.UNHEALTHY, endpoint="http://127.0.0.1:9003/api/mcp")
    store.set_state("remote", BackendState.DEGRADED)
    store.update_backend("named", lambda s: replace(s, endpoints=(replace(s.endpoints[0], address="10.1.2.3"),)))
    views.append(store.current)
    for state, breaker, drained in (
        (BackendState.HEALTHY, BreakerState.OPEN, False),
        (BackendState.HEALTHY, BreakerState.CLOSED, True),
        (BackendState.UNAUTHENTICATED, BreakerState.CLOSED, False),
    ):
        store.set_state("weather", state)
        store.update_backend("weather", lambda s, b=breaker, d=drained: replace(s, breaker=b, drained=d))
        views.append(store.current)
    authenticated = ViewStore(
        parse_config(
            {
                "backends": [{"name": "weather", "url": "http://127.0.0.1:9001/mcp"}],
                "listener": {"expose_backends": True},
                "auth": {
                    "issuers": [
                        {"issuer": "https://idp.test", "jwks_file": "/keys/jwks.json"},
                        {
                            "issuer": "https://other.test",
                            "jwks_url": "https://other.test/jwks.json",
                            "audiences": ["a"],
                        },
                    ],
                    "resource": "https://gw.example.com/gateway/mcp",
                    "required_scopes": ["mcp", "tools.read"],
                },
                "rate_limit": {"requests_per_second": 0.5, "burst": 3},
            }
        )
    )
    authenticated.set_keys({"/keys/jwks.json": '{"keys": [{"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}]}'})
    views.append(authenticated.current)
    return views


def _resources() -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for view in _views():
        for type_url, specs in build_resources(view).items():
            out.extend((type_url, name, spec) for name, spec in specs.items())
    return out


def test_the_committed_descriptors_are_what_the_generator_makes() -> None:
    committed = (ROOT / "xds_control" / "xds" / "envoy_wire_descriptors.py").read_text()
    assert committed == envoy_wire_gen.render(envoy_wire_gen.build()), (
        "stale: run `.venv/bin/python -m xds_control.xds.envoy_wire_gen`"
    )


def test_every_resource_encodes_to_envoy_data_planes_message() -> None:
    resources = _resources()
    assert {type_url for type_url, _, _ in resources} == set(ORACLE)
    for type_url, name, spec in resources:
        ours = encode_message(type_url, spec)
        theirs = _oracle_bytes(type_url, spec)
        cls = message_type(type_url)

        # Same fields and values, Any payloads unpacked (field order inside an Any's bytes may differ).
        def as_json(data: bytes, cls=cls) -> dict:
            return json_format.MessageToDict(
                cls.FromString(data), descriptor_pool=envoy_wire._pool(), preserving_proto_field_name=True
            )

        assert as_json(ours) == as_json(theirs), (type_url, name)
        assert len(ours) == len(theirs), (type_url, name)
        assert as_json(ours) == json_format.MessageToDict(
            envoy_wire.from_json(cls, spec), descriptor_pool=envoy_wire._pool(), preserving_proto_field_name=True
        )


def test_a_field_or_value_the_schema_rejects_is_named_in_the_error() -> None:
    cluster = build_resources(
        ViewStore(parse_config({"backends": [{"name": "a", "url": "http://127.0.0.1:9/mcp"}]})).current
    )[t.CLUSTER]["a"]
    with pytest.raises(XdsError, match=r"cds resource 'a'.*no field named \"conect_timeout\""):
        encode_message(t.CLUSTER, {**cluster, "conect_timeout": "2s"})
    with pytest.raises(XdsError, match=r"cds resource 'a'.*connect_timeout"):
        encode_message(t.CLUSTER, {**cluster, "connect_timeout": "soon"})
    with pytest.raises(XdsError, match=r"cds resource 'a'.*lb_policy"):
        encode_message(t.CLUSTER, {**cluster, "lb_policy": "FASTEST"})
    with pytest.raises(XdsError, match="unknown resource type"):
        encode_message("type.googleapis.com/envoy.config.core.v3.Node", {})


def test_a_discovery_request_reads_back_field_for_field() -> None:
    request = DiscoveryRequest(
        version_info="7",
        node=Node(id="edge-1", cluster="edge", user_agent_name="envoy"),
        resource_names=["a", "b"],
        type_url=t.ENDPOINT,
        response_nonce="42",
        error_detail=Status(code=3, message="rejected: bad cluster"),
    )
    parsed = WireDiscoveryRequest.FromString(bytes(request))
    assert (parsed.version_info, parsed.node.id, parsed.node.cluster, parsed.node.user_agent_name) == (
        "7",
        "edge-1",
        "edge",
        "envoy",
    )
    assert (list(parsed.resource_names), parsed.type_url, parsed.response_nonce) == (["a", "b"], t.ENDPOINT, "42")
    assert (parsed.error_detail.code, parsed.error_detail.message) == (3, "rejected: bad cluster")


def test_the_control_plane_encodes_without_envoy_data_plane() -> None:
    """envoy-data-plane is a test and generation dependency only: serving and encoding never import it."""
    code = (
        "import sys; import xds_control.controlplane; from xds_control.config import parse_config; "
        "from xds_control.view import ViewStore; from xds_control.xds.resources import build_resources; "
        "from xds_control.xds.encode import encode_message; "
        "view = ViewStore(parse_config({'backends': [{'name': 'a', 'url': 'http://127.0.0.1:9/mcp'}]})).current; "
        "[encode_message(u, s) for u, specs in build_resources(view).items() for s in specs.values()]; "
        "print(sorted(m for m in sys.modules if m.startswith(('envoy_data_plane', 'betterproto'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"
