"""What a backend's answer means (pure `map_answer`, both families), and how the marked errors map to the
aggregator's codes. The same answers through the real HTTP path: test_sdk_transport.py, test_modern_request.py."""

from __future__ import annotations

import asyncio
import json
import socket

import httptools
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from xds_control.aggregator.rpc_errors import BACKEND_AUTH_FAILED, BACKEND_FAILED, BACKEND_TIMEOUT, BACKEND_UNAVAILABLE
from xds_control.aggregator.upstream import _SessionExpired, map_error
from xds_control.aggregator.upstream_answers import (
    EDGE_MARKER,
    ERROR_BODY_LIMIT,
    EdgeFailure,
    Passed,
    body_limit,
    edge_error,
    failure_category,
    map_answer,
)
from xds_control.errors import WireError
from xds_control.http11 import PeerClosedError

JSON = {"content-type": "application/json"}
TEXT = {"content-type": "text/plain"}


@pytest.mark.parametrize(
    ("exc", "category"),
    [
        (ConnectionRefusedError(), "connection_refused"),
        (socket.gaierror(-2, "Name or service not known"), "connect_error"),
        (OSError(113, "No route to host"), "connect_error"),
        (TimeoutError(), "timeout"),
        (httptools.HttpParserError("bad"), "protocol_error"),
        (ConnectionResetError(), "connection_reset"),
        (PeerClosedError("closed", 10), "connection_reset"),
        (BrokenPipeError(), "connection_reset"),
        (asyncio.IncompleteReadError(b"", 10), "connection_reset"),
        (WireError("response_too_large", "head"), "response_too_large"),
    ],
)
def test_transport_failures(exc: Exception, category: str) -> None:
    assert failure_category(exc) == category


def test_any_network_error_while_reading_a_body_is_a_reset_and_other_errors_are_none() -> None:
    assert failure_category(OSError(5, "Input/output error"), reading=True) == "connection_reset"
    assert failure_category(TimeoutError(110, "Connection timed out"), reading=True) == "timeout"
    assert failure_category(ValueError("x")) is None


@pytest.mark.parametrize(
    ("status", "body", "category"),
    [
        (401, b'{"error":"invalid_token"}', "authentication_failed"),
        (403, b"forbidden", "authentication_failed"),
        (503, b"no healthy upstream", "no_healthy_upstream"),
        (503, b"overloaded", "http_5xx"),
        (
            503,
            b"upstream connect error or disconnect/reset before headers. reset reason: connection failure",
            "connection_refused",
        ),
        (503, b"upstream connect error or disconnect/reset before headers. reset reason: overflow", "connect_error"),
        (504, b"upstream request timeout", "timeout"),
        (500, b"Internal Server Error", "http_5xx"),
        (429, b"slow down", "rate_limited"),
        (400, b"<html>", "http_4xx"),
    ],
)
def test_http_failures(status: int, body: bytes, category: str) -> None:
    headers = JSON if body.startswith(b"{") else TEXT
    assert body_limit(status, headers, 1 << 20) == ERROR_BODY_LIMIT
    assert map_answer(status, {**headers, "retry-after": "7"}, body) == EdgeFailure(category, status, "7")


def test_a_404_for_a_session_is_an_expired_session() -> None:
    error = b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Session not found"}}'
    assert map_answer(404, JSON, error, sent_session=True) == EdgeFailure("session_expired", 404)
    assert isinstance(map_answer(404, JSON, error), Passed)  # without a session id it is the backend's own error


def test_a_backends_own_jsonrpc_error_passes_at_any_status() -> None:
    error = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "Unknown tool", "data": {"x": 1}}}
    body = json.dumps(error).encode()
    for status in (200, 400, 404, 500):
        answer = map_answer(status, JSON, body)
        assert isinstance(answer, Passed) and answer.status == status and answer.message == error
    assert map_answer(401, JSON, body) == EdgeFailure("authentication_failed", 401)  # never for 401/403
    assert map_answer(500, TEXT, body) == EdgeFailure("http_5xx", 500)  # not JSON by its content type
    assert map_answer(500, JSON, None) == EdgeFailure("http_5xx", 500)  # an error body over its limit


def test_garbage_oversized_empty_and_streamed_answers() -> None:
    assert body_limit(200, {"content-type": "application/json; charset=utf-8"}, 1024) == 1024
    assert map_answer(200, JSON, b"this is not json") == EdgeFailure("protocol_error")
    assert map_answer(200, JSON, None) == EdgeFailure("response_too_large")
    assert map_answer(200, JSON, b"") == Passed(200, JSON, b"", None)
    fine = map_answer(200, JSON, b'{"jsonrpc":"2.0","id":1,"result":{}}')
    assert isinstance(fine, Passed) and fine.message["result"] == {}
    for headers in ({"content-type": "text/event-stream"}, {"content-type": "text/html"}, {}):
        assert body_limit(200, headers, 1024) is None
        assert map_answer(200, headers, None) is None


def test_the_marked_error_carries_category_status_and_retry_after_only() -> None:
    message = edge_error("b", EdgeFailure("rate_limited", 429, "7"))
    assert message["error"]["data"] == {
        "backend": "b",
        "category": "rate_limited",
        EDGE_MARKER: True,
        "status": 429,
        "retry_after": "7",
    }
    assert edge_error("b", EdgeFailure("timeout"))["error"]["data"] == {
        "backend": "b",
        "category": "timeout",
        EDGE_MARKER: True,
    }


def marked(category: str, status: int | None = None) -> MCPError:
    data = {"backend": "b", "category": category, EDGE_MARKER: True}
    if status is not None:
        data["status"] = status
    return MCPError(-32603, f"backend {category}", data)


@pytest.mark.parametrize(
    ("exc", "code", "outcome"),
    [
        (marked("connection_refused"), BACKEND_FAILED, "transport"),
        (marked("http_5xx", 500), BACKEND_FAILED, "http_5xx"),
        (marked("authentication_failed", 401), BACKEND_AUTH_FAILED, "auth"),
        (marked("no_healthy_upstream", 503), BACKEND_UNAVAILABLE, "unavailable"),
        (marked("timeout"), BACKEND_TIMEOUT, "timeout"),
        (MCPError(types.REQUEST_TIMEOUT, "Request 'tools/call' timed out"), BACKEND_TIMEOUT, "timeout"),
        (MCPError(types.CONNECTION_CLOSED, "Connection closed"), BACKEND_FAILED, "transport"),
        (MCPError(types.PARSE_ERROR, "Failed to parse SSE message: x"), BACKEND_FAILED, "transport"),
        (ExceptionGroup("g", [marked("connection_reset")]), BACKEND_FAILED, "transport"),
        (WireError("response_too_large", "x"), BACKEND_FAILED, "transport"),
        (PeerClosedError("cut", 10), BACKEND_FAILED, "transport"),
    ],
)
def test_edge_errors_map_to_gateway_codes_naming_the_backend(exc: BaseException, code: int, outcome: str) -> None:
    mapped = map_error("b", exc, 2.0)
    assert mapped.code == code and mapped.outcome == outcome and mapped.data["backend"] == "b"
    assert EDGE_MARKER not in mapped.data
    assert "b" in mapped.message


def test_a_backends_own_error_passes_unchanged_and_bad_results_are_protocol_errors() -> None:
    own = MCPError(-32602, "Unknown tool: x", {"tool": "x"})
    assert map_error("b", own, None) is own
    assert isinstance(map_error("b", marked("session_expired", 404), None), _SessionExpired)
    try:
        types.CallToolResult.model_validate({"content": "nope"})
    except ValidationError as exc:
        mapped = map_error("b", exc, None)
    assert mapped.code == BACKEND_FAILED and mapped.data["category"] == "protocol_error"
    assert json.dumps(mapped.data)  # serializable
