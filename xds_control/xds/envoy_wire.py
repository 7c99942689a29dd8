"""Envoy's protobuf messages for the control plane, from `xds-protos` (protoc's modules of Envoy's API).

    message_class("envoy.config.cluster.v3.Cluster")   # a google.protobuf message class
    from_json(Cluster, {"name": "a", "connect_timeout": "2s"}) -> message   # protobuf's JSON mapping

`ROOTS` names every message the control plane encodes or decodes: the four resource types, DiscoveryRequest,
and each type it packs into a `typed_config` (an `Any`, whose `@type` is resolved in the same pool). Adding a
filter or extension is one line here, `(package, message)`; `_pool` imports the generated modules of each root's
package, which import everything the message refers to. A root the modules lack fails at the first encode
(`message_class` raises KeyError) and in tests/xds/test_envoy_wire.py.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import Any

from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.message import Message

ROOTS = (
    ("envoy.config.cluster.v3", "Cluster"),
    ("envoy.config.endpoint.v3", "ClusterLoadAssignment"),
    ("envoy.config.listener.v3", "Listener"),
    ("envoy.config.route.v3", "RouteConfiguration"),
    ("envoy.service.discovery.v3", "DiscoveryRequest"),
    ("envoy.extensions.filters.network.http_connection_manager.v3", "HttpConnectionManager"),
    ("envoy.extensions.filters.http.router.v3", "Router"),
    ("envoy.extensions.access_loggers.stream.v3", "StderrAccessLog"),
    ("envoy.extensions.filters.http.stateful_session.v3", "StatefulSession"),
    ("envoy.extensions.http.stateful_session.envelope.v3", "EnvelopeSessionState"),
    ("envoy.extensions.transport_sockets.tls.v3", "UpstreamTlsContext"),
    ("envoy.extensions.upstreams.http.v3", "HttpProtocolOptions"),
)


@cache
def _pool() -> descriptor_pool.DescriptorPool:
    """The default pool, holding every root (the generated modules register their files there on import)."""
    for package, _ in ROOTS:
        path = importlib.import_module(package).__path__
        for module in pkgutil.iter_modules(path):
            if module.name.endswith("_pb2"):
                importlib.import_module(f"{package}.{module.name}")
    return descriptor_pool.Default()


@cache
def message_class(full_name: str) -> type[Message]:
    """The message class for `full_name` (KeyError if no root's package has it)."""
    return message_factory.GetMessageClass(_pool().FindMessageTypeByName(full_name))


def from_json(cls: type[Message], spec: dict[str, Any]) -> Message:
    """`spec` (Envoy's JSON/YAML shape, snake_case names) as a `cls` message. Raises json_format.ParseError,
    whose text names the field path, on a field or value the schema rejects."""
    return json_format.ParseDict(spec, cls(), descriptor_pool=_pool())
