"""Tracing setup: in-memory capture for tests, and real OTLP/HTTP export to a local collector."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry import trace

from tests.support.waiting import wait_until
from xds_control.errors import ConfigError
from xds_control.telemetry.tracing import global_memory_exporter, install_memory_exporter, setup_tracing, traces_url


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("https://otel.example:443/custom/traces", "https://otel.example:443/custom/traces"),
    ],
)
def test_traces_url(endpoint, url):
    assert traces_url(endpoint) == url


@pytest.mark.parametrize("endpoint", ["collector:4318", "grpc://collector:4317", "http://"])
def test_traces_url_rejects_what_is_not_an_http_url(endpoint):
    with pytest.raises(ConfigError, match="telemetry.otlp_endpoint"):
        traces_url(endpoint)


def test_spans_reach_an_in_memory_exporter_with_the_service_name():
    provider = setup_tracing("xds-control-aggregator", set_global=False)
    exporter = install_memory_exporter(provider)
    with provider.get_tracer("test").start_as_current_span("tools/call", attributes={"mcp.backend": "weather"}):
        with provider.get_tracer("test").start_as_current_span("upstream"):
            pass
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["upstream", "tools/call"]
    assert spans[0].parent.span_id == spans[1].context.span_id
    assert spans[1].attributes["mcp.backend"] == "weather"
    assert spans[1].resource.attributes["service.name"] == "xds-control-aggregator"
    provider.shutdown()


def test_the_global_memory_exporter_sees_spans_from_the_global_tracer_and_starts_empty():
    exporter = global_memory_exporter()
    with trace.get_tracer(__name__).start_as_current_span("first"):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["first"]
    again = global_memory_exporter()
    assert again is exporter and again.get_finished_spans() == ()


class Collector:
    """A local OTLP/HTTP receiver: records each POST."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests.append((self.path, self.headers.get("Content-Type", ""), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.close()


@pytest.mark.integration
def test_spans_are_exported_over_otlp_http_when_an_endpoint_is_configured(collector):
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    provider = setup_tracing("xds-control", f"http://127.0.0.1:{collector.port}", set_global=False)
    with provider.get_tracer("test").start_as_current_span("probe", attributes={"backend": "weather"}):
        pass
    provider.force_flush(10_000)
    wait_until(lambda: collector.requests, timeout=10, what="an OTLP export request")
    provider.shutdown()
    path, content_type, body = collector.requests[0]
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    request = ExportTraceServiceRequest.FromString(body)
    (resource_spans,) = request.resource_spans
    service = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}["service.name"]
    spans = [span for scope in resource_spans.scope_spans for span in scope.spans]
    assert service == "xds-control"
    assert [s.name for s in spans] == ["probe"]


def test_without_the_otlp_exporter_package_an_endpoint_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(ConfigError, match="opentelemetry-exporter-otlp-proto-http"):
        setup_tracing("xds-control", "http://127.0.0.1:4318", set_global=False)
