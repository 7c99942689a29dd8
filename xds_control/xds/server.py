"""The ADS server (State of the World, grpc.aio).

Registered through a generic handler: requests are parsed as the upb
`DiscoveryRequest` of envoy_wire.py, responses are framed from
pre-encoded bytes (see encode.py). Each stream is one task reading requests and
one loop deciding pushes (the rules live in nodes.py); both belong to the
stream's task group, so nothing outlives the stream.

Telemetry: one span per DiscoveryResponse (`xds_control.xds.push`: node,
type, version, resource count, nonce), open from the write until Envoy ACKs
or NACKs it (`xds.response` = ack | nack, plus an `ack`/`nack` event; a NACK
sets the span's status to error with Envoy's detail) or the stream ends
(`none`). Every NACK is one WARNING line with node, type, version, the
version Envoy kept, and Envoy's error detail.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message
from opentelemetry import trace

from xds_control.errors import XdsError
from xds_control.xds import metrics
from xds_control.xds import typeurls as t
from xds_control.xds.encode import discovery_response
from xds_control.xds.envoy_wire import message_class
from xds_control.xds.nodes import (
    NodeDirectory,
    Pending,
    RequestKind,
    TypeState,
    classify_request,
    decide_push,
    note_first_request,
    on_cluster_push,
    on_request,
)
from xds_control.xds.profiles import DEFAULT_PROFILE, NodeProfile, profile_from_struct
from xds_control.xds.snapshot import SNAPSHOT_CHANGED, SnapshotCache

log = logging.getLogger(__name__)
tracer = trace.get_tracer("xds_control.xds")

PUSH_SPAN = "xds_control.xds.push"
SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
_END = object()
DiscoveryRequest = message_class("envoy.service.discovery.v3.DiscoveryRequest")

GRPC_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
    ("grpc.so_reuseport", 0),  # a second control plane on the same port must fail, not split the Envoys
]


class AdsService:
    """Serves the snapshot in `cache` to every Envoy that opens an ADS stream."""

    def __init__(
        self, cache: SnapshotCache, nodes: NodeDirectory, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._cache = cache
        self._nodes = nodes
        self._clock = clock
        self._nonces = itertools.count(1)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self.stream, request_deserializer=DiscoveryRequest.FromString, response_serializer=bytes
                ),
                "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self.delta, request_deserializer=bytes, response_serializer=bytes
                ),
            },
        )

    async def delta(self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "delta xDS is not served; configure ADS with api_type GRPC (state of the world)",
        )

    async def stream(self, request_iterator: AsyncIterator[Message], context: grpc.aio.ServicerContext) -> None:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        types = {type_url: TypeState() for type_url in t.PUSH_ORDER}
        spans: dict[str, trace.Span] = {}  # type URL -> the span of its response in flight (at most one)
        stream_id: int | None = None
        node_id = ""
        profile = DEFAULT_PROFILE
        refused = ""
        self._cache.subscribe(queue)
        metrics.CONNECTED.inc()
        try:
            async with asyncio.TaskGroup() as group:
                reader = group.create_task(self._read(request_iterator, queue))
                while (item := await queue.get()) is not _END:
                    if item is not SNAPSHOT_CHANGED:
                        if stream_id is None:
                            node_id = item.node.id
                            try:
                                profile = profile_from_struct(item.node.metadata)
                            except ValueError as exc:
                                refused = str(exc)
                                break
                            stream_id = self._nodes.connect(node_id, item.node.cluster, types, profile)
                            log.info("envoy connected", extra={"node": node_id, "profile": profile.describe()})
                        self._on_request(node_id, types, item, spans, profile)
                    await self._push(context, types, node_id, spans, profile)
                reader.cancel()
            if refused:
                log.warning("refusing an Envoy node: %s", refused, extra={"node": node_id[:200]})
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, refused)
        finally:
            for span in spans.values():
                span.set_attribute("xds.response", "none")
                span.end()
            self._cache.unsubscribe(queue)
            metrics.CONNECTED.dec()
            if stream_id is not None:
                self._nodes.disconnect(stream_id)
                log.info("envoy disconnected", extra={"node": node_id})

    async def _read(self, request_iterator: AsyncIterator[Message], queue: asyncio.Queue[Any]) -> None:
        try:
            async for request in request_iterator:
                queue.put_nowait(request)
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        finally:
            queue.put_nowait(_END)

    def _on_request(
        self,
        node_id: str,
        types: dict[str, TypeState],
        request: Message,
        spans: dict[str, trace.Span],
        profile: NodeProfile = DEFAULT_PROFILE,
    ) -> None:
        state = types.get(request.type_url)
        if state is None:
            log.debug("ignoring request for unserved type", extra={"node": node_id, "type_url": request.type_url})
            return
        error = bool(request.error_detail.code or request.error_detail.message)
        kind = classify_request(state, request.response_nonce, error)
        detail = request.error_detail.message if error else ""
        settled = on_request(
            state, request.type_url, kind, list(request.resource_names), request.response_nonce, detail
        )
        if state.reported_version is None and (snapshot := self._cache.snapshot_for(profile)) is not None:
            note_first_request(types, request.type_url, request.version_info, snapshot)
        if settled is None:
            return
        short = t.SHORT[request.type_url]
        latency = self._clock() - settled.sent_at
        metrics.ACK_LATENCY.labels(short).observe(latency)
        span = spans.pop(request.type_url, None)
        if kind is RequestKind.ACK:
            metrics.ACKS.labels(short).inc()
            self._nodes.notify_ack(node_id, request.type_url, settled.version, latency)
            if span is not None:
                span.add_event("ack")
                span.set_attribute("xds.response", "ack")
        else:
            metrics.NACKS.labels(short).inc()
            kept = request.version_info or "none"
            log.warning(
                "envoy rejected %s version %s (keeping its last good config %s): %s",
                short,
                settled.version,
                kept,
                detail,
                extra={
                    "event": "nack",
                    "node": node_id,
                    "type": short,
                    "version": settled.version,
                    "kept_version": kept,
                    "detail": detail,
                },
            )
            if span is not None:
                span.add_event("nack", {"xds.kept_version": kept, "xds.error_detail": detail})
                span.set_attribute("xds.response", "nack")
                span.set_status(trace.StatusCode.ERROR, detail)
        if span is not None:
            span.end()

    async def _push(
        self,
        context: grpc.aio.ServicerContext,
        types: dict[str, TypeState],
        node_id: str,
        spans: dict[str, trace.Span],
        profile: NodeProfile = DEFAULT_PROFILE,
    ) -> None:
        snapshot = self._cache.snapshot_for(profile)
        if snapshot is None:
            return
        for type_url in t.PUSH_ORDER:
            state = types[type_url]
            resources = decide_push(state, type_url, snapshot)
            if resources is None:
                continue
            nonce = str(next(self._nonces))
            version = snapshot.version(type_url)
            state.pending = Pending(nonce, version, {r.name: r.hash for r in resources}, self._clock())
            state.force = False
            if type_url in t.DEPENDENT:
                types[t.DEPENDENT[type_url]].force = True
            if type_url == t.CLUSTER:
                on_cluster_push(types, version)
            body = discovery_response(
                version=version, type_url=type_url, nonce=nonce, resources=[r.field for r in resources]
            )
            short = t.SHORT[type_url]
            metrics.PUSHES.labels(short).inc()
            metrics.PUSHED_RESOURCES.labels(short).inc(len(resources))
            attributes = {
                "xds.node": node_id,
                "xds.type": short,
                "xds.version": version,
                "xds.resources": len(resources),
                "xds.nonce": nonce,
            }
            if (
                superseded := spans.pop(type_url, None)
            ) is not None:  # cannot happen while one is pending; never leak one
                superseded.set_attribute("xds.response", "none")
                superseded.end()
            spans[type_url] = tracer.start_span(PUSH_SPAN, kind=trace.SpanKind.PRODUCER, attributes=attributes)
            await context.write(body)


@dataclass
class XdsServer:
    server: grpc.aio.Server
    port: int

    async def stop(self, grace: float | None = 1.0) -> None:
        await self.server.stop(grace)


async def start_xds_server(host: str, port: int, service: AdsService) -> XdsServer:
    """Bind and start the ADS server. Raises XdsError if the address cannot be bound."""
    server = grpc.aio.server(options=GRPC_OPTIONS)
    server.add_generic_rpc_handlers((service.handler(),))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise XdsError(f"cannot bind the xDS server to {address}: {exc}") from None
    if bound == 0:
        raise XdsError(f"cannot bind the xDS server to {address}")
    await server.start()
    return XdsServer(server=server, port=bound)
