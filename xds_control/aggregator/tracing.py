"""Tracing in the aggregator: where a client's trace comes in, the call span, and what goes out.

    client ──traceparent (HTTP header) or params._meta.traceparent──▶ aggregator
      SDK server span `tools/call NAME`           (the SDK's OpenTelemetryMiddleware; parent from `_meta`,
                                                   else from the header, attached by `TraceHeaderMiddleware`)
        `xds_control.aggregator.call`             (`call_span`: backend, name, outcome)
          `xds_control.aggregator.auth_retry`     (auth.py, only after a 401/403)
          SDK client span `MCP send tools/call`   (injects its context into the backend request's `_meta`)
    aggregator ──params._meta.traceparent + the same `traceparent` header──▶ Envoy ──▶ backend

The header towards the backend is copied from the outgoing `_meta` at the HTTP
edge (sdk_transport.SdkTransport), because the SDK's transport sends from a
task of its own that does not see the caller's context. The client's own
`traceparent`/`tracestate` are not forwarded as they came (upstream.clean_params
drops them): the backend's parent is the aggregator's span, in the client's trace.

Attributes carry names, states and sanitized categories only, never arguments,
results or backend error text.

All of this only while the process exports spans (`exporting()`, shared with
the prober in telemetry/trace_context.py); otherwise no
span is made and the client's own trace context goes to the backend unchanged
(`passthrough`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from mcp.server import ServerRequestContext
from mcp.server.context import CallNext, HandlerResult
from opentelemetry import context as otel_context
from opentelemetry import trace

from xds_control.telemetry.trace_context import (
    CARRIER_KEYS,
    TRACEPARENT,
    context_from_carrier,
    exporting,
    has_trace_context,
)

CALL_SPAN = "xds_control.aggregator.call"
OK_OUTCOMES = frozenset({"ok"})
# What the exposed key of each kind is called on the span.
KEY_ATTRIBUTE = {"tools": "tool", "prompts": "prompt", "resources": "uri", "resource_templates": "uri"}

tracer = trace.get_tracer("xds_control.aggregator")


class TraceHeaderMiddleware:
    """Server middleware (put it first: outermost): a request whose `_meta` carries no trace context
    but whose HTTP request has a `traceparent` header runs with that context attached, so the SDK's
    server span, and everything under it, joins the client's trace."""

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        headers = getattr(ctx.request, "headers", None)
        if headers is None or TRACEPARENT not in headers or has_trace_context(ctx.meta):  # type: ignore[arg-type]
            return await call_next(ctx)
        parent = context_from_carrier(headers)
        if parent is None:
            return await call_next(ctx)
        token = otel_context.attach(parent)
        try:
            return await call_next(ctx)
        finally:
            otel_context.detach(token)


def passthrough(meta: Mapping[str, Any] | None, headers: Mapping[str, str] | None) -> dict[str, str]:
    """The client's trace context to forward when not exporting: `_meta`'s when it has a `traceparent`,
    else the HTTP headers'."""
    for carrier in (meta, headers):
        if carrier and isinstance(carrier.get(TRACEPARENT), str):
            return {key: carrier[key] for key in CARRIER_KEYS if isinstance(carrier.get(key), str)}
    return {}


@contextlib.contextmanager
def call_span(method: str, kind: str, key: str) -> Iterator[trace.Span]:
    """The span of one routed request (a no-op one when not `exporting`). The caller sets `backend`,
    `original` and, always, `outcome` (via `finish`); exceptions are not recorded (their text may be the backend's)."""
    if not exporting():
        yield trace.INVALID_SPAN
        return
    attributes = {"mcp.method.name": method, KEY_ATTRIBUTE.get(kind, "name"): key}
    with tracer.start_as_current_span(
        CALL_SPAN, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        yield span


def finish(span: trace.Span, outcome: str, category: str | None = None) -> None:
    if not span.is_recording():
        return
    span.set_attribute("outcome", outcome)
    if category:
        span.set_attribute("error.category", category)
    if outcome not in OK_OUTCOMES:
        span.set_status(trace.StatusCode.ERROR, category or outcome)
