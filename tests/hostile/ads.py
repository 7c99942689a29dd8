"""A raw ADS client for hostile tests: DiscoveryRequests (or any bytes) on a real gRPC stream."""

from __future__ import annotations

from typing import Any

import grpc

from xds_control.xds import typeurls as t
from xds_control.xds.envoy_wire import message_class

METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
DiscoveryRequest = message_class("envoy.service.discovery.v3.DiscoveryRequest")


def response(raw: bytes) -> Any:
    """A DiscoveryResponse (envoy-data-plane's class: the server's own descriptors hold only what it parses)."""
    from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryResponse

    return DiscoveryResponse.parse(raw)


def request(
    type_url: str = t.CLUSTER,
    *,
    node: str = "hostile",
    nonce: str = "",
    version: str = "",
    error: str = "",
    names: list[str] | None = None,
) -> bytes:
    message: Any = DiscoveryRequest(type_url=type_url, response_nonce=nonce, version_info=version)
    message.node.id = node
    if error:
        message.error_detail.code = 3
        message.error_detail.message = error
    if names:
        message.resource_names.extend(names)
    return message.SerializeToString()


def open_stream(
    channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] | None = None
) -> grpc.aio.StreamStreamCall:
    """One ADS stream sending and receiving raw bytes (responses parse with `response`)."""
    call = channel.stream_stream(METHOD, request_serializer=None, response_deserializer=None)
    return call(metadata=metadata)


def channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=[("grpc.max_send_message_length", 256 * 1024 * 1024)])
