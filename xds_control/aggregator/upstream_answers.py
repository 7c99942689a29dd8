"""What a backend's HTTP answer means to the aggregator, for both MCP families (pure: no I/O, no clock).

Every request the aggregator sends a backend is a POST through Envoy's egress listener (the SDK client's GET
notification stream and closing DELETE keep their plain HTTP meaning and do not come here). Its answer is
read as far as `body_limit` says, then `map_answer(status, headers, body)` says what it is:

    a JSON-RPC error at any status, from the backend   -> Passed (the backend's own error passes unchanged)
    a 2xx/3xx application/json body that is JSON       -> Passed (decoded once, here)
    404 to a request carrying Mcp-Session-Id           -> EdgeFailure session_expired
    401 / 403                                          -> EdgeFailure authentication_failed
    503 "no healthy upstream" (Envoy)                  -> EdgeFailure no_healthy_upstream
    503 "upstream connect error" (Envoy)               -> EdgeFailure connection_refused | connect_error
    504 "upstream request timeout" (Envoy)             -> EdgeFailure timeout
    any other 4xx / 5xx                                -> EdgeFailure http_4xx | http_5xx | rate_limited
    application/json that is not JSON                  -> EdgeFailure protocol_error
    a body over its limit                              -> EdgeFailure response_too_large
    anything else (an event stream, text/html, ...)    -> None: a stream the caller reads itself

`failure_category(exc)` names a failure of the exchange itself (xds_control/http11.py raises builtin errors):
refused, reset, DNS/TLS, timeout, not HTTP. Categories are sanitized words, never the backend's text; an
`EdgeFailure` becomes a JSON-RPC error marked with `EDGE_MARKER` (`edge_error`), so the layer above
(upstream.map_error) can tell it from a backend's own and map it to the aggregator's codes (rpc_errors).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httptools

from xds_control.errors import WireError

EDGE_MARKER = "xds-control/edge"  # key in a synthesized error's data; never leaves the aggregator
SESSION_EXPIRED = "session_expired"
SESSION_HEADER = "mcp-session-id"
ERROR_BODY_LIMIT = 64 * 1024  # how much of an error answer is read to look for a JSON-RPC error
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Passed:
    """A JSON answer the caller reads as JSON-RPC: `body` as read, `message` decoded (None for an empty body)."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    message: Any


@dataclass(frozen=True)
class EdgeFailure:
    """A failure of the backend or of the way to it, as a sanitized category."""

    category: str
    status: int | None = None
    retry_after: str | None = None


def is_json(headers: Mapping[str, str]) -> bool:
    return headers.get("content-type", "").lower().startswith("application/json")


def body_limit(status: int, headers: Mapping[str, str], max_response_bytes: int) -> int | None:
    """How much of the body `map_answer` needs, read whole before it decides; None: a stream it leaves unread."""
    if status >= 400:
        return ERROR_BODY_LIMIT
    if is_json(headers):
        return max_response_bytes
    return None


def map_answer(
    status: int, headers: Mapping[str, str], body: bytes | None, *, sent_session: bool = False
) -> Passed | EdgeFailure | None:
    """What an answer is (see the module docstring). `headers` have lower-case names; `body` is what
    `body_limit` asked for, None if it was longer; `sent_session`: the request carried Mcp-Session-Id."""
    if status >= 400:
        if status == 404 and sent_session:
            return EdgeFailure(SESSION_EXPIRED, status)
        if status not in (401, 403) and body is not None and is_json(headers):
            message = _json(body)
            if _is_jsonrpc_error(message):
                return Passed(status, headers, body, message)
        return EdgeFailure(classify_status(status, body or b""), status, headers.get("retry-after"))
    if not is_json(headers):
        return None
    if body is None:
        return EdgeFailure("response_too_large")
    if not body:
        return Passed(status, headers, body, None)
    message = _json(body)
    return EdgeFailure("protocol_error") if message is _NOT_JSON else Passed(status, headers, body, message)


def classify_status(status: int, body: bytes) -> str:
    """A sanitized category for an HTTP failure; Envoy's own local replies are recognised by their text."""
    if status in (401, 403):
        return "authentication_failed"
    if status == 429:
        return "rate_limited"
    text = body[:512].lower()
    if status == 503 and b"no healthy upstream" in text:
        return "no_healthy_upstream"
    if status == 503 and b"upstream connect error" in text:
        return (
            "connection_refused" if b"connection refused" in text or b"connection failure" in text else "connect_error"
        )
    if status == 504 and b"upstream request timeout" in text:
        return "timeout"
    return "http_5xx" if status >= 500 else "http_4xx"


def failure_category(exc: BaseException, *, reading: bool = False) -> str | None:
    """The category of a failed exchange (None for an exception that is not one). Refusals, DNS and TLS
    failures happen only while connecting; once `reading` a body, any OSError is the connection's loss."""
    if isinstance(exc, WireError):
        return exc.category
    if isinstance(exc, TimeoutError):  # also ETIMEDOUT from the socket while reading
        return "timeout"
    if isinstance(exc, httptools.HttpParserError):
        return "protocol_error"
    if isinstance(exc, ConnectionRefusedError):
        return "connection_refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError | asyncio.IncompleteReadError):
        return "connection_reset"
    if isinstance(exc, OSError):  # socket.gaierror, ssl.SSLError, EHOSTUNREACH...
        return "connection_reset" if reading else "connect_error"
    return None


def edge_error(backend: str, failure: EdgeFailure) -> dict[str, Any]:
    """The marked JSON-RPC error message of `failure`."""
    data: dict[str, object] = {"backend": backend, "category": failure.category, EDGE_MARKER: True}
    if failure.status is not None:
        data["status"] = failure.status
    if failure.retry_after is not None:
        data["retry_after"] = failure.retry_after
    return {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32603, "message": f"backend {failure.category}", "data": data},
    }


_NOT_JSON = object()


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return _NOT_JSON


def _is_jsonrpc_error(message: Any) -> bool:
    return isinstance(message, dict) and message.get("jsonrpc") == "2.0" and isinstance(message.get("error"), dict)
