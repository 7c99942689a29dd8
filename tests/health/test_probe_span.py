"""One span per probe (against a canned loopback HTTP server): backend, endpoint without credentials,
outcome, latency."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.support.canned_http import Answer, CannedServer, Handler, Request
from xds_control.config import parse_config
from xds_control.health import probe
from xds_control.health.probe import PROBE_SPAN, EndpointProber


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROBE_SPAN_TOKEN", "s3cret")


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(probe, "tracer", provider.get_tracer("test"))
    monkeypatch.setattr(probe, "exporting", lambda: True)  # as when a provider is installed (OTLP configured)
    yield exporter
    provider.shutdown()


def prober(url: str) -> EndpointProber:
    config = parse_config(
        {"backends": [{"name": "weather", "url": url, "protocol": "modern", "auth": {"token_env": "PROBE_SPAN_TOKEN"}}]}
    )
    backend = config.backends[0]
    return EndpointProber(backend, backend.endpoint_urls[0], config.health)


async def probed(handler: Handler, *, times: int = 1, fetch_catalog: bool = False) -> tuple[list, str]:
    async with CannedServer(handler) as server:
        p = prober(server.url)
        try:
            return [await p.probe(fetch_catalog=fetch_catalog) for _ in range(times)], server.url
        finally:
            await p.aclose()


def discover_ok(request: Request) -> Answer:
    assert request.headers["authorization"] == "Bearer s3cret"
    result = {"supportedVersions": ["2026-07-28"], "capabilities": {}}
    return Answer.json({"jsonrpc": "2.0", "id": request.json()["id"], "result": result})


async def test_a_good_probe_is_one_ok_span_without_credentials(spans: InMemorySpanExporter) -> None:
    (result,), url = await probed(discover_ok)
    assert result.ok
    (span,) = spans.get_finished_spans()
    assert span.name == PROBE_SPAN and span.kind is SpanKind.CLIENT and span.parent is None
    attributes = dict(span.attributes)
    assert attributes.pop("latency_ms") == pytest.approx(result.latency * 1000, abs=0.01)
    assert attributes == {
        "backend": "weather",
        "endpoint": url,
        "catalog.fetch": False,
        "outcome": "ok",
        "protocol": "modern",
    }
    assert span.status.status_code is StatusCode.UNSET
    assert "s3cret" not in span.to_json()


async def test_a_failed_probe_is_an_error_span_named_by_its_category(spans: InMemorySpanExporter) -> None:
    (result, result_again), _ = await probed(lambda request: Answer(503, b"upstream is on fire: token=s3cret"), times=2)
    assert not result.ok and result.category == "http_5xx" and not result_again.ok
    first, second = spans.get_finished_spans()
    assert first.attributes["outcome"] == "http_5xx" and first.status.status_code is StatusCode.ERROR
    assert first.status.description == "http_5xx"
    assert first.context.trace_id != second.context.trace_id, "every probe is its own trace"
    assert "fire" not in first.to_json() and "s3cret" not in first.to_json()


async def test_a_catalog_fetch_is_counted_on_the_span(spans: InMemorySpanExporter) -> None:
    def handler(request: Request) -> Answer:
        body = request.json()
        if body["method"] == "server/discover":
            result = {"supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}}}
        else:
            result = {
                "tools": [
                    {"name": "a", "inputSchema": {"type": "object"}},
                    {"name": "b", "inputSchema": {"type": "object"}},
                ]
            }
        return Answer.json({"jsonrpc": "2.0", "id": body["id"], "result": result})

    (result,), _ = await probed(handler, fetch_catalog=True)
    assert result.ok
    (span,) = spans.get_finished_spans()
    assert span.attributes["catalog.fetch"] is True and span.attributes["catalog.tools"] == 2


async def test_no_span_is_made_while_the_process_records_none(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probe, "exporting", lambda: False)  # no provider installed: no OTLP endpoint configured
    (result,), _ = await probed(discover_ok)
    assert result.ok and result.protocol == "modern"
    assert spans.get_finished_spans() == ()
