"""One span per probe, over a mock transport (no sockets): backend, endpoint without credentials,
outcome, latency."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx2
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from xds_control.config import parse_config
from xds_control.health import probe
from xds_control.health.probe import PROBE_SPAN, EndpointProber

URL = "http://127.0.0.1:9001/mcp"  # (the config refuses user info and queries in URLs; the credential is a header)


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROBE_SPAN_TOKEN", "s3cret")


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(probe, "tracer", provider.get_tracer("test"))
    yield exporter
    provider.shutdown()


def prober(handler: httpx2.MockTransport) -> EndpointProber:
    config = parse_config({"backends": [{"name": "weather", "url": URL, "protocol": "modern", "auth": {"token_env": "PROBE_SPAN_TOKEN"}}]})
    backend = config.backends[0]
    return EndpointProber(backend, backend.endpoint_urls[0], config.health, transport=handler)


def discover_ok(request: httpx2.Request) -> httpx2.Response:
    assert request.headers["authorization"] == "Bearer s3cret"
    body = json.loads(request.content)
    result = {"supportedVersions": ["2026-07-28"], "capabilities": {}}
    return httpx2.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": result})


async def test_a_good_probe_is_one_ok_span_without_credentials(spans: InMemorySpanExporter) -> None:
    p = prober(httpx2.MockTransport(discover_ok))
    try:
        result = await p.probe()
    finally:
        await p.aclose()
    assert result.ok
    (span,) = spans.get_finished_spans()
    assert span.name == PROBE_SPAN and span.kind is SpanKind.CLIENT and span.parent is None
    attributes = dict(span.attributes)
    assert attributes.pop("latency_ms") == pytest.approx(result.latency * 1000, abs=0.01)
    assert attributes == {"backend": "weather", "endpoint": "http://127.0.0.1:9001/mcp", "catalog.fetch": False, "outcome": "ok", "protocol": "modern"}
    assert span.status.status_code is StatusCode.UNSET
    assert "s3cret" not in span.to_json()


async def test_a_failed_probe_is_an_error_span_named_by_its_category(spans: InMemorySpanExporter) -> None:
    p = prober(httpx2.MockTransport(lambda request: httpx2.Response(503, text="upstream is on fire: token=s3cret")))
    try:
        result = await p.probe()
        result_again = await p.probe()
    finally:
        await p.aclose()
    assert not result.ok and result.category == "http_5xx" and not result_again.ok
    first, second = spans.get_finished_spans()
    assert first.attributes["outcome"] == "http_5xx" and first.status.status_code is StatusCode.ERROR
    assert first.status.description == "http_5xx"
    assert first.context.trace_id != second.context.trace_id, "every probe is its own trace"
    assert "fire" not in first.to_json() and "s3cret" not in first.to_json()


async def test_a_catalog_fetch_is_counted_on_the_span(spans: InMemorySpanExporter) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        if body["method"] == "server/discover":
            result = {"supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}}}
        else:
            result = {"tools": [{"name": "a", "inputSchema": {"type": "object"}}, {"name": "b", "inputSchema": {"type": "object"}}]}
        return httpx2.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": result})

    p = prober(httpx2.MockTransport(handler))
    try:
        assert (await p.probe(fetch_catalog=True)).ok
    finally:
        await p.aclose()
    (span,) = spans.get_finished_spans()
    assert span.attributes["catalog.fetch"] is True and span.attributes["catalog.tools"] == 2
