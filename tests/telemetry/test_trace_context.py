"""W3C trace context helpers: URL redaction, extraction from headers or `_meta`, lifting `_meta` into headers."""

from __future__ import annotations

import json

import pytest
from opentelemetry.trace import get_current_span

from xds_control.telemetry.trace_context import (
    context_from_carrier,
    has_trace_context,
    redact_url,
    trace_headers_of_body,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("http://127.0.0.1:9001/mcp", "http://127.0.0.1:9001/mcp"),
        ("https://user:secret@mcp.example.com/v1/mcp?token=abc#x", "https://mcp.example.com/v1/mcp"),
        ("http://[::1]:9001/mcp?k=v", "http://[::1]:9001/mcp"),
        ("http://host:notaport/mcp", "http://host/mcp"),
    ],
)
def test_redact_url_keeps_scheme_host_port_path_only(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_a_valid_traceparent_is_extracted_from_headers_or_meta() -> None:
    for carrier in ({"traceparent": PARENT}, {"traceparent": PARENT, "tracestate": "vendor=1"}):
        ctx = context_from_carrier(carrier)
        assert ctx is not None
        span_context = get_current_span(ctx).get_span_context()
        assert f"{span_context.trace_id:032x}" == TRACE_ID and span_context.is_remote
    assert has_trace_context({"traceparent": PARENT, "other": 1})


@pytest.mark.parametrize(
    "carrier",
    [None, {}, {"traceparent": "garbage"}, {"traceparent": f"00-{'0' * 32}-00f067aa0ba902b7-01"}, {"other": "x"}],
)
def test_no_valid_traceparent_means_none_not_an_orphan_context(carrier: dict[str, str] | None) -> None:
    assert context_from_carrier(carrier) is None
    assert not has_trace_context(carrier)


def body(meta: object) -> bytes:
    return json.dumps(
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "x", "_meta": meta}}
    ).encode()


def test_trace_headers_come_from_the_request_meta() -> None:
    assert trace_headers_of_body(body({"traceparent": PARENT, "tracestate": "a=b", "progressToken": 3})) == {
        "traceparent": PARENT,
        "tracestate": "a=b",
    }
    assert trace_headers_of_body(body({"traceparent": PARENT})) == {"traceparent": PARENT}


@pytest.mark.parametrize(
    "raw",
    [
        body({"progressToken": 1}),
        body({"traceparent": 7}),
        body("not a dict"),
        b'{"jsonrpc": "2.0", "method": "x", "params": {"text": "traceparent"}}',
        b'[{"jsonrpc": "2.0", "params": {"_meta": {"traceparent": "x"}}}]',
        b"traceparent but not json",
        b"",
    ],
)
def test_bodies_without_a_usable_trace_context_give_no_headers(raw: bytes) -> None:
    assert trace_headers_of_body(raw) == {}
