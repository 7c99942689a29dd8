"""The ADS server's telemetry, over a fake Envoy stream (no sockets): one span per DiscoveryResponse,
settled by the ACK or NACK, and one log line per NACK with its fields."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from envoy_data_plane.envoy.config.core.v3 import Node
from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryRequest, DiscoveryResponse
from envoy_data_plane.google.rpc import Status
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from xds_control.config import parse_config
from xds_control.view import ViewStore
from xds_control.xds import server
from xds_control.xds import typeurls as t
from xds_control.xds.nodes import NodeDirectory
from xds_control.xds.server import PUSH_SPAN, AdsService
from xds_control.xds.snapshot import SnapshotBuilder, SnapshotCache

NODE = Node(id="edge-1", cluster="edge")


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(server, "tracer", provider.get_tracer("test"))
    yield exporter
    provider.shutdown()


class FakeEnvoy:
    """One ADS stream: requests go in through a queue, responses are parsed as they are written."""

    def __init__(self) -> None:
        self.requests: asyncio.Queue[Any] = asyncio.Queue()
        self.responses: asyncio.Queue[DiscoveryResponse] = asyncio.Queue()

    async def iterator(self) -> AsyncIterator[Any]:
        while (request := await self.requests.get()) is not None:
            yield request

    async def write(self, body: bytes) -> None:  # the servicer context's write
        self.responses.put_nowait(DiscoveryResponse.parse(body))

    def send(self, type_url: str, *, version: str = "", nonce: str = "", error: str = "") -> None:
        detail = Status(code=3, message=error) if error else None
        request = DiscoveryRequest(
            node=NODE, type_url=type_url, version_info=version, response_nonce=nonce, error_detail=detail
        )
        # What the gRPC server hands the service: envoy-data-plane's encoding, parsed by the server's own class.
        self.requests.put_nowait(server.DiscoveryRequest.FromString(bytes(request)))

    async def response(self) -> DiscoveryResponse:
        return await asyncio.wait_for(self.responses.get(), timeout=5)


def config(*ports: int) -> Any:
    return parse_config({"backends": [{"name": f"b{p}", "url": f"http://127.0.0.1:{p}/mcp"} for p in ports]})


@contextlib.asynccontextmanager
async def stream(cache: SnapshotCache) -> AsyncIterator[FakeEnvoy]:
    envoy = FakeEnvoy()
    task = asyncio.create_task(AdsService(cache, NodeDirectory()).stream(envoy.iterator(), envoy))  # type: ignore[arg-type]
    try:
        yield envoy
    finally:
        envoy.requests.put_nowait(None)
        await asyncio.wait_for(task, timeout=5)


async def test_a_push_is_one_span_settled_by_its_ack_or_nack_or_the_stream_end(spans: InMemorySpanExporter) -> None:
    store, builder, cache = ViewStore(config(9001)), SnapshotBuilder(), SnapshotCache()
    cache.set(builder.build(store.current))
    async with stream(cache) as envoy:
        envoy.send(t.CLUSTER)
        first = await envoy.response()
        assert spans.get_finished_spans() == (), "the span stays open until Envoy answers"
        envoy.send(t.CLUSTER, version=first.version_info, nonce=first.nonce)  # ACK

        store.replace_config(config(9001, 9002))
        cache.set(builder.build(store.current))
        second = await envoy.response()
        envoy.send(t.CLUSTER, version=first.version_info, nonce=second.nonce, error="cluster b9002: bad thing")  # NACK

        store.replace_config(config(9001, 9002, 9003))
        cache.set(builder.build(store.current))
        third = await envoy.response()  # never answered: the stream ends first

    acked, nacked, unanswered = spans.get_finished_spans()
    assert {s.name for s in (acked, nacked, unanswered)} == {PUSH_SPAN}
    assert acked.kind is SpanKind.PRODUCER
    assert dict(acked.attributes) == {
        "xds.node": "edge-1",
        "xds.type": "cds",
        "xds.version": first.version_info,
        "xds.resources": 2,  # b9001 and the aggregator's cluster
        "xds.nonce": first.nonce,
        "xds.response": "ack",
    }
    assert [e.name for e in acked.events] == ["ack"] and acked.status.status_code is StatusCode.UNSET

    assert nacked.attributes["xds.version"] == second.version_info and nacked.attributes["xds.resources"] == 3
    assert nacked.attributes["xds.response"] == "nack"
    assert nacked.status.status_code is StatusCode.ERROR and nacked.status.description == "cluster b9002: bad thing"
    (event,) = nacked.events
    assert event.name == "nack" and dict(event.attributes) == {
        "xds.kept_version": first.version_info,
        "xds.error_detail": "cluster b9002: bad thing",
    }

    assert (
        unanswered.attributes["xds.version"] == third.version_info and unanswered.attributes["xds.response"] == "none"
    )
    assert len({s.context.trace_id for s in (acked, nacked, unanswered)}) == 3, "each push is its own trace"


async def test_each_nack_is_one_warning_line_with_node_type_versions_and_detail(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, builder, cache = ViewStore(config(9001)), SnapshotBuilder(), SnapshotCache()
    cache.set(builder.build(store.current))
    with caplog.at_level(logging.INFO, logger="xds_control.xds.server"):
        async with stream(cache) as envoy:
            envoy.send(t.CLUSTER)
            first = await envoy.response()
            envoy.send(t.CLUSTER, version=first.version_info, nonce=first.nonce)
            store.replace_config(config(9002))
            cache.set(builder.build(store.current))
            second = await envoy.response()
            envoy.send(t.CLUSTER, version=first.version_info, nonce=second.nonce, error="no such cluster")
            envoy.send(
                t.CLUSTER, version=first.version_info, nonce=second.nonce, error="no such cluster"
            )  # stale repeat
    nacks = [r for r in caplog.records if getattr(r, "event", None) == "nack"]
    assert len(nacks) == 1
    (record,) = nacks
    assert record.levelno == logging.WARNING
    fields = {k: getattr(record, k) for k in ("node", "type", "version", "kept_version", "detail")}
    assert fields == {
        "node": "edge-1",
        "type": "cds",
        "version": second.version_info,
        "kept_version": first.version_info,
        "detail": "no such cluster",
    }
