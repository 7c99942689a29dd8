"""The ADS server (State of the World, grpc.aio).

Registered through a generic handler: requests are parsed as the upb
`DiscoveryRequest` of envoy_wire.py, responses are framed from
pre-encoded bytes (see encode.py). Each stream is one task reading requests and
one loop deciding pushes (the rules live in nodes.py); both belong to the
stream's task group, so nothing outlives the stream.

Hostile peers (every limit is a constant below): requests arrive as bytes and are parsed here, so a
malformed message ends its stream with INVALID_ARGUMENT (never a traceback, never an ExceptionGroup's text
to the peer); a stream that sends more than `MAX_STALE_STREAK` requests in a row with nonces it was never
sent is closed with INVALID_ARGUMENT; each stream's inbox holds at most `MAX_QUEUED_REQUESTS` requests (a peer that sends faster
than it reads our answers gets RESOURCE_EXHAUSTED, its stream closed) and coalesces snapshot changes into
one flag; at most `MAX_STREAMS` streams are served at once; requests are at most `MAX_REQUEST_BYTES`;
nonces are a random per-stream prefix and a counter (no stream can guess another's); the node id,
cluster, NACK detail and any other peer string are escaped and truncated before they are stored, logged or
served (`xds_control.sanitize`). With `control_plane.xds_token_env` set, a stream must carry
`authorization: Bearer <token>` metadata (Envoy sends it from the bootstrap's `initial_metadata`).

Telemetry: one span per DiscoveryResponse (`xds_control.xds.push`: node,
type, version, resource count, nonce), open from the write until Envoy ACKs
or NACKs it (`xds.response` = ack | nack, plus an `ack`/`nack` event; a NACK
sets the span's status to error with Envoy's detail) or the stream ends
(`none`). Every NACK is one WARNING line with node, type, version, the
version Envoy kept, and Envoy's error detail.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import itertools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message
from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from xds_control.errors import XdsError
from xds_control.sanitize import preview
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

MAX_REQUEST_BYTES = 1024 * 1024  # a DiscoveryRequest: 30,000 EDS names fit; nothing legitimate comes near it
MAX_QUEUED_REQUESTS = 64  # per stream; Envoy has at most a request or two per type outstanding
MAX_STREAMS = 1024  # ADS streams served at once (one per Envoy)
MAX_DETAIL_CHARS = 2048  # a NACK's error_detail as stored, logged and served by `admin nodes`
MAX_NAME_CHARS = 256  # node id, cluster, type URL, version as stored and logged
MAX_STALE_STREAK = 256  # requests in a row whose nonce this stream never sent (Envoy sends at most one per push)

GRPC_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
    ("grpc.so_reuseport", 0),  # a second control plane on the same port must fail, not split the Envoys
]


class _Refused(Exception):
    """Ends one stream with a status the peer may read (the message names what was wrong, never echoes it)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class StreamInbox:
    """What one ADS stream handles next: the peer's requests (at most `limit` waiting) and a "snapshot
    changed" flag (set by `SnapshotCache.set` through `put_nowait`; any number of changes is one flag)."""

    def __init__(self, limit: int = MAX_QUEUED_REQUESTS) -> None:
        self._limit = limit
        self._requests: collections.deque[Message] = collections.deque()
        self._changed = False
        self._end: _Refused | object | None = None
        self._wake = asyncio.Event()

    def put_nowait(self, item: object) -> None:
        """The snapshot cache's notification (the only item it puts)."""
        if item is SNAPSHOT_CHANGED:
            self._changed = True
            self._wake.set()

    def request(self, request: Message) -> None:
        if len(self._requests) >= self._limit:
            raise _Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"more than {self._limit} requests waiting on this ADS stream: read the responses before asking again",
            )
        self._requests.append(request)
        self._wake.set()

    def end(self, refusal: _Refused | None = None) -> None:
        self._end = refusal if refusal is not None else _END
        self._wake.set()

    @property
    def refusal(self) -> _Refused | None:
        return self._end if isinstance(self._end, _Refused) else None

    async def get(self) -> Any:  # a parsed DiscoveryRequest (descriptor-built class), _END, a refusal or a change
        """The next request, else SNAPSHOT_CHANGED, else the end (`_END` or a `_Refused`)."""
        while True:
            if self._end is not None and isinstance(self._end, _Refused):
                return self._end  # a refusal ends the stream before anything else queued
            if self._requests:
                return self._requests.popleft()
            if self._changed:
                self._changed = False
                return SNAPSHOT_CHANGED
            if self._end is not None:
                return self._end
            self._wake.clear()
            await self._wake.wait()


def _parse(raw: bytes | Message) -> Message:
    if not isinstance(raw, bytes | bytearray):
        return raw  # already a message (in-process tests feed parsed requests)
    try:
        return DiscoveryRequest.FromString(bytes(raw))
    except Exception:  # DecodeError, or anything the parser raises on garbage
        raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "not a DiscoveryRequest (malformed protobuf)") from None


class AdsService:
    """Serves the snapshot in `cache` to every Envoy that opens an ADS stream."""

    def __init__(
        self,
        cache: SnapshotCache,
        nodes: NodeDirectory,
        *,
        clock: Callable[[], float] = time.monotonic,
        token: str | None = None,
        max_streams: int = MAX_STREAMS,
    ) -> None:
        self._cache = cache
        self._nodes = nodes
        self._clock = clock
        self._expected = f"Bearer {token}".encode() if token else None
        self._max_streams = max_streams
        self.streams = 0  # ADS streams being served now

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self.stream, request_deserializer=None, response_serializer=bytes
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

    def _authorized(self, context: grpc.aio.ServicerContext) -> bool:
        if self._expected is None:
            return True
        presented = b""
        for key, value in context.invocation_metadata() or ():
            if key.lower() == "authorization":
                presented = value if isinstance(value, bytes) else value.encode()
                break
        if presented[:7].lower() == b"bearer ":
            presented = b"Bearer " + presented[7:]
        return hmac.compare_digest(presented, self._expected)

    async def stream(self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        """One ADS stream. Ends with OK when the peer closes, or a clean status naming what was wrong."""
        refusal: _Refused | None = None
        if self._expected is not None and not self._authorized(context):
            refusal = _Refused(
                grpc.StatusCode.UNAUTHENTICATED,
                "this ADS server needs 'authorization: Bearer <token>' metadata (control_plane.xds_token_env; "
                "Envoy sends it from the bootstrap's initial_metadata)",
            )
        elif self.streams >= self._max_streams:
            refusal = _Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, f"more than {self._max_streams} ADS streams")
        else:
            self.streams += 1
            try:
                refusal = await self._serve(request_iterator, context)
            except Exception:  # a bug of ours: logged here once, never its text to the peer
                log.exception("ADS stream failed", extra={"peer": preview(context.peer(), 80)})
                refusal = _Refused(grpc.StatusCode.INTERNAL, "internal error (see the control plane log)")
            finally:
                self.streams -= 1
        if refusal is not None:
            log.warning(
                "ADS stream refused: %s",
                refusal.message,
                extra={"event": "xds_stream_refused", "code": refusal.code.name, "peer": preview(context.peer(), 80)},
            )
            await context.abort(refusal.code, refusal.message)

    async def _serve(self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> _Refused | None:
        inbox = StreamInbox()
        types = {type_url: TypeState() for type_url in t.PUSH_ORDER}
        spans: dict[str, trace.Span] = {}  # type URL -> the span of its response in flight (at most one)
        stream_id: int | None = None
        node_id = ""
        profile = DEFAULT_PROFILE
        nonces = _Nonces()
        refusal: _Refused | None = None
        stale = 0  # requests in a row with a nonce this stream never sent
        self._cache.subscribe(inbox)  # type: ignore[arg-type]
        metrics.CONNECTED.inc()
        this = asyncio.current_task()
        assert this is not None
        reader = asyncio.create_task(self._read(request_iterator, inbox, this))
        try:
            while (item := await inbox.get()) is not _END:
                if isinstance(item, _Refused):
                    refusal = item
                    break
                if item is not SNAPSHOT_CHANGED:
                    if stream_id is None:
                        first: Any = item  # a DiscoveryRequest (its class is built at run time)
                        node_id = preview(first.node.id, MAX_NAME_CHARS)
                        cluster = preview(first.node.cluster, MAX_NAME_CHARS)
                        try:
                            profile = profile_from_struct(first.node.metadata)
                        except ValueError as exc:  # the message names the key; the value is truncated
                            refusal = _Refused(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                            break
                        stream_id = self._nodes.connect(node_id, cluster, types, profile)
                        log.info("envoy connected", extra={"node": node_id, "profile": profile.describe()})
                    if self._on_request(node_id, types, item, spans, profile) is RequestKind.STALE:
                        stale += 1
                        if stale > MAX_STALE_STREAK:
                            refusal = _Refused(
                                grpc.StatusCode.INVALID_ARGUMENT,
                                f"more than {MAX_STALE_STREAK} requests in a row with a nonce this stream never sent",
                            )
                            break
                    else:
                        stale = 0
                await self._push(context, types, node_id, spans, nonces, profile)
        except _WriteFailed:
            pass  # the peer went away mid-write: nothing to tell it
        except asyncio.CancelledError:
            if not isinstance(inbox.refusal, _Refused):
                raise  # the peer or the server ended the call
            this.uncancel()  # the reader refused the stream while a write was blocked: answer with the refusal
            refusal = inbox.refusal
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            for span in spans.values():
                span.set_attribute("xds.response", "none")
                span.end()
            self._cache.unsubscribe(inbox)  # type: ignore[arg-type]
            metrics.CONNECTED.dec()
            if stream_id is not None:
                self._nodes.disconnect(stream_id)
                log.info("envoy disconnected", extra={"node": node_id})
        return refusal

    async def _read(self, request_iterator: AsyncIterator[Any], inbox: StreamInbox, stream: asyncio.Task[Any]) -> None:
        refusal: _Refused | None = None
        try:
            async for raw in request_iterator:
                inbox.request(_parse(raw))
        except _Refused as exc:
            refusal = exc
            stream.cancel()  # the stream may be blocked writing to a peer that does not read: stop it there
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            pass  # the peer went away, or gRPC refused its message (over MAX_REQUEST_BYTES): the stream ends
        except asyncio.CancelledError:
            raise
        except Exception:  # a failure of the transport's iterator: end the stream, one line, no traceback
            log.warning("ADS stream read failed", exc_info=False)
        finally:
            inbox.end(refusal)

    def _on_request(
        self,
        node_id: str,
        types: dict[str, TypeState],
        request: Any,
        spans: dict[str, trace.Span],
        profile: NodeProfile = DEFAULT_PROFILE,
    ) -> RequestKind | None:
        """Apply one request; returns its kind (None: a type this server does not serve)."""
        # `request`: a DiscoveryRequest of the class envoy_wire builds from descriptors at run time, so its
        # fields are unknown to a type checker (Any, not Message)
        state = types.get(request.type_url)
        if state is None:
            log.debug(
                "ignoring request for unserved type",
                extra={"node": node_id, "type_url": preview(request.type_url, MAX_NAME_CHARS)},
            )
            return None
        error = bool(request.error_detail.code or request.error_detail.message)
        kind = classify_request(state, request.response_nonce, error)
        detail = preview(request.error_detail.message, MAX_DETAIL_CHARS) if error else ""  # stored, logged, served
        settled = on_request(
            state, request.type_url, kind, list(request.resource_names), request.response_nonce, detail
        )
        if state.reported_version is None and (snapshot := self._cache.snapshot_for(profile)) is not None:
            reported = preview(request.version_info, MAX_NAME_CHARS)  # compared with ours only, kept per stream
            note_first_request(types, request.type_url, reported, snapshot)
        if settled is None:
            return kind
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
            kept = preview(request.version_info, MAX_NAME_CHARS) or "none"
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
        return kind

    async def _push(
        self,
        context: grpc.aio.ServicerContext,
        types: dict[str, TypeState],
        node_id: str,
        spans: dict[str, trace.Span],
        nonces: _Nonces,
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
            nonce = nonces.next()
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
            attributes: dict[str, AttributeValue] = {
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
            try:
                await context.write(body)
            except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError, RuntimeError) as exc:
                raise _WriteFailed from exc


class _WriteFailed(Exception):
    """A response could not be written: the peer is gone."""


class _Nonces:
    """One stream's nonces: a random prefix (unguessable from any other stream) and a counter."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._count = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._count)}"


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
