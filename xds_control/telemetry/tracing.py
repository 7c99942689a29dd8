"""OpenTelemetry tracing: `setup_tracing(service_name, otlp_endpoint)` and test helpers.

Spans are exported over OTLP/HTTP only when `telemetry.otlp_endpoint` is set;
otherwise a TracerProvider still exists (so span context propagates and tests
can capture spans) but nothing leaves the process. Code that makes spans uses
`opentelemetry.trace.get_tracer(__name__)` and never imports the SDK.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from xds_control.errors import ConfigError, ConfigIssue

OTLP_TRACES_PATH = "/v1/traces"


def traces_url(otlp_endpoint: str) -> str:
    """`http://collector:4318` -> `http://collector:4318/v1/traces`; a URL with a path is used as given."""
    parts = urlsplit(otlp_endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            ConfigIssue(
                "telemetry.otlp_endpoint", "must be an http(s) URL such as http://collector:4318", otlp_endpoint
            )
        )
    path = parts.path if parts.path not in ("", "/") else OTLP_TRACES_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def otlp_exporter(otlp_endpoint: str, *, timeout: float = 10.0) -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise ConfigError(
            ConfigIssue(
                "telemetry.otlp_endpoint", "OTLP export needs the opentelemetry-exporter-otlp-proto-http package"
            )
        ) from None
    return OTLPSpanExporter(endpoint=traces_url(otlp_endpoint), timeout=timeout)


def setup_tracing(service_name: str, otlp_endpoint: str | None = None, *, set_global: bool = True) -> TracerProvider:
    """A TracerProvider for `service_name`, batching spans to `otlp_endpoint` when given.

    `set_global`: make it the process's provider (OpenTelemetry allows that once per process;
    a later call keeps the first and returns its own provider unused globally). Call
    `provider.shutdown()` on exit to flush pending spans."""
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    if otlp_endpoint:
        provider.add_span_processor(BatchSpanProcessor(otlp_exporter(otlp_endpoint)))
    if set_global and not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(provider)
    return provider


def install_memory_exporter(provider: TracerProvider) -> InMemorySpanExporter:
    """Tests: every span `provider` ends from now on is also kept in memory (`exporter.get_finished_spans()`)."""
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


_global_memory: InMemorySpanExporter | None = None


def global_memory_exporter() -> InMemorySpanExporter:
    """Tests of code that uses the global tracer: one in-memory exporter on the process's provider
    (set up on first use), emptied on every call so each test sees only its own spans."""
    global _global_memory
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        setup_tracing("xds-control-test")
        provider = trace.get_tracer_provider()
    if _global_memory is None:
        assert isinstance(provider, TracerProvider)
        _global_memory = install_memory_exporter(provider)
    _global_memory.clear()
    return _global_memory
