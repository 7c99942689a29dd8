"""W3C trace context across the gateway's hops (OpenTelemetry API only; never the SDK).

A trace enters the aggregator either as an HTTP `traceparent` header or, the
MCP convention (SEP-414), as `params._meta.traceparent` / `tracestate` of the
request; `_meta` wins when both are present. It leaves towards a backend in
both forms as well: the SDK client injects `_meta`, and the aggregator's HTTP
edge copies that into the `traceparent` header (see `trace_headers_of_body`),
so Envoy and the backend see one and the same parent.

Span attributes never carry credentials: endpoint URLs go through
`redact_url` (no user info, no query, no fragment).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract
from opentelemetry.trace import get_current_span

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
CARRIER_KEYS = (TRACEPARENT, TRACESTATE)
_NEEDLE = TRACEPARENT.encode()
_MAX_BODY = 1 << 20  # larger request bodies are not searched for a trace context


def exporting() -> bool:
    """Does this process record spans (a tracer provider is installed: an OTLP exporter is configured, or a
    test captures spans)? Without one, hot paths make no spans at all: the probe's and the aggregator's."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def redact_url(url: str) -> str:
    """`https://user:secret@host:8443/mcp?token=x#f` -> `https://host:8443/mcp`: safe for spans and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def context_from_carrier(carrier: Mapping[str, Any] | None) -> Context | None:
    """The trace context in `carrier` (HTTP headers or a `_meta` dict), or None when it holds no valid
    `traceparent` (so the caller keeps its ambient context instead of starting an orphan)."""
    if not carrier:
        return None
    try:
        ctx = extract(carrier)
    except (ValueError, TypeError):
        return None
    return ctx if get_current_span(ctx).get_span_context().is_valid else None


def has_trace_context(meta: Mapping[str, Any] | None) -> bool:
    """Does a request's `_meta` carry a valid `traceparent`?"""
    return context_from_carrier(meta) is not None if meta and TRACEPARENT in meta else False


def trace_headers_of_body(body: bytes) -> dict[str, str]:
    """`traceparent` / `tracestate` from a JSON-RPC request body's `params._meta`, as HTTP headers.

    Cheap for bodies without one (a substring test before any parsing); a batch or a body that
    is not JSON yields nothing."""
    if _NEEDLE not in body or len(body) > _MAX_BODY:
        return {}
    try:
        message = json.loads(body)
    except ValueError:
        return {}
    params = message.get("params") if isinstance(message, dict) else None
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(meta, dict):
        return {}
    return {key: meta[key] for key in CARRIER_KEYS if isinstance(meta.get(key), str) and meta[key]}
