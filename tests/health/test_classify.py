"""Every failure maps to one sanitized category; no exception type of the libraries we call is left unmapped."""

from __future__ import annotations

import inspect
import socket
import ssl
import types
from datetime import UTC, datetime
from email.utils import format_datetime

import anyio
import httpcore2
import httpx2
import mcp.client.auth.exceptions
import mcp.client.streamable_http
import mcp.client.subscriptions
import mcp.shared.exceptions
import pytest
from mcp.shared.exceptions import MCPError

from xds_control.errors import ProbeError
from xds_control.health.classify import (
    EXCEPTION_CATEGORIES,
    Category,
    classify_exception,
    classify_jsonrpc_error,
    classify_status,
    most_specific,
    parse_retry_after,
)

SECRET = "s3cr3t-token-value"
REQUEST = httpx2.Request("POST", "http://127.0.0.1:9/mcp")


def chained(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


def status_error(status: int, headers: dict[str, str] | None = None) -> httpx2.HTTPStatusError:
    response = httpx2.Response(status, headers=headers, request=REQUEST)
    return httpx2.HTTPStatusError(f"HTTP {status} {SECRET}", request=REQUEST, response=response)


# One row per category at least: (what happened, the exception, expected category).
EXCEPTION_CASES: list[tuple[str, BaseException, Category]] = [
    (
        "refused via httpx2",
        chained(httpx2.ConnectError("All connection attempts failed"), ConnectionRefusedError(111, "refused")),
        Category.CONNECTION_REFUSED,
    ),
    ("refused, bare OSError errno", OSError(111, "Connection refused"), Category.CONNECTION_REFUSED),
    ("reset while reading", httpx2.ReadError("connection reset"), Category.CONNECTION_RESET),
    (
        "server closed keep-alive",
        httpx2.RemoteProtocolError("Server disconnected without sending a response."),
        Category.CONNECTION_RESET,
    ),
    ("reset OSError", ConnectionResetError(104, "reset"), Category.CONNECTION_RESET),
    (
        "dns via httpx2",
        chained(
            httpx2.ConnectError("[Errno -2] Name or service not known"),
            socket.gaierror(-2, "Name or service not known"),
        ),
        Category.DNS,
    ),
    (
        "tls via httpx2",
        chained(httpx2.ConnectError("wrong version number"), ssl.SSLError(1, "WRONG_VERSION_NUMBER")),
        Category.TLS,
    ),
    ("certificate", ssl.SSLCertVerificationError(1, "certificate verify failed"), Category.TLS),
    ("read timeout", httpx2.ReadTimeout("timed out"), Category.TIMEOUT),
    ("asyncio.timeout", TimeoutError(), Category.TIMEOUT),
    ("401 status error", status_error(401), Category.AUTHENTICATION_FAILED),
    ("403 status error", status_error(403), Category.AUTHENTICATION_FAILED),
    ("oauth flow", mcp.client.auth.exceptions.OAuthTokenError("bad token"), Category.AUTHENTICATION_FAILED),
    ("429 status error", status_error(429, {"Retry-After": "7"}), Category.RATE_LIMITED),
    ("404 status error", status_error(404), Category.HTTP_4XX),
    ("503 status error", status_error(503), Category.HTTP_5XX),
    ("malformed HTTP", httpx2.RemoteProtocolError("illegal status line"), Category.PROTOCOL_ERROR),
    ("undecodable body", httpx2.DecodingError("bad gzip"), Category.PROTOCOL_ERROR),
    ("SDK transport error", mcp.client.streamable_http.StreamableHTTPError("bad"), Category.PROTOCOL_ERROR),
    ("JSON-RPC error via SDK", MCPError(-32602, "Invalid params"), Category.JSONRPC_ERROR),
    ("SDK connection closed", MCPError(-32000, "Connection closed"), Category.CONNECTION_RESET),
    ("SDK request timeout", MCPError(-32001, "Request timed out"), Category.TIMEOUT),
    ("SDK session terminated", MCPError(-32600, "Session terminated"), Category.SESSION_EXPIRED),
    ("ours: too large", ProbeError(Category.RESPONSE_TOO_LARGE, "body over the limit"), Category.RESPONSE_TOO_LARGE),
    ("ours: catalog too large", ProbeError(Category.CATALOG_TOO_LARGE, "over the bound"), Category.CATALOG_TOO_LARGE),
    ("ours: session", ProbeError(Category.SESSION_EXPIRED), Category.SESSION_EXPIRED),
    ("a bug", KeyError(SECRET), Category.UNKNOWN),
]

STATUS_CASES = [
    (200, None),
    (202, None),
    (301, Category.PROTOCOL_ERROR),
    (400, Category.HTTP_4XX),
    (401, Category.AUTHENTICATION_FAILED),
    (403, Category.AUTHENTICATION_FAILED),
    (404, Category.HTTP_4XX),
    (405, Category.NOT_MCP),
    (413, Category.RESPONSE_TOO_LARGE),
    (429, Category.RATE_LIMITED),
    (500, Category.HTTP_5XX),
    (501, Category.NOT_MCP),
    (502, Category.HTTP_5XX),
]


@pytest.mark.parametrize(("what", "exc", "expected"), EXCEPTION_CASES, ids=[c[0] for c in EXCEPTION_CASES])
def test_exception_maps_to_category(what: str, exc: BaseException, expected: Category) -> None:
    assert classify_exception(exc).category == expected


def test_every_category_has_a_case() -> None:
    covered = {c[2] for c in EXCEPTION_CASES} | {c[1] for c in STATUS_CASES if c[1] is not None}
    assert covered == set(Category)


@pytest.mark.parametrize(("status", "expected"), STATUS_CASES)
def test_status_maps_to_category(status: int, expected: Category | None) -> None:
    error = classify_status(status, {})
    assert (error.category if error else None) == expected


def _library_exceptions() -> list[type[BaseException]]:
    modules: list[types.ModuleType] = [
        httpx2,
        httpcore2,
        anyio,
        mcp.shared.exceptions,
        mcp.client.streamable_http,
        mcp.client.subscriptions,
        mcp.client.auth.exceptions,
        ssl,
    ]
    found = []
    for module in modules:
        root = module.__name__.split(".")[0]
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(obj, BaseException)
                and obj.__module__.split(".")[0] in (root, "_ssl")
                and not issubclass(obj, Warning)
            ):
                found.append(obj)
    return sorted(set(found), key=lambda c: f"{c.__module__}.{c.__qualname__}")


@pytest.mark.parametrize("exc_type", _library_exceptions(), ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_no_library_exception_is_left_unmapped(exc_type: type[BaseException]) -> None:
    """Adding a new exception class to httpx2, httpcore2, anyio, ssl or the SDK fails here until it is mapped."""
    assert exc_type in EXCEPTION_CATEGORIES, (
        f"map {exc_type.__module__}.{exc_type.__qualname__} in EXCEPTION_CATEGORIES"
    )


def test_exception_group_most_specific_wins() -> None:
    inner = ExceptionGroup(
        "inner", [ValueError("x"), chained(httpx2.ConnectError("failed"), ConnectionRefusedError(111, "refused"))]
    )
    outer = BaseExceptionGroup("outer", [RuntimeError("boom"), inner, httpx2.ReadTimeout("slow")])
    assert classify_exception(outer).category == Category.CONNECTION_REFUSED


def test_exception_group_of_sdk_error_around_status() -> None:
    group = ExceptionGroup(
        "unhandled errors in a TaskGroup",
        [ExceptionGroup("nested", [status_error(401)]), MCPError(-32603, "Server returned an error response")],
    )
    assert classify_exception(group).category == Category.AUTHENTICATION_FAILED


def test_cancellation_alone_is_unknown() -> None:
    assert classify_exception(ExceptionGroup("g", [RuntimeError("x")])).category == Category.UNKNOWN


def test_cycle_in_exception_chain_terminates() -> None:
    a, b = RuntimeError("a"), httpx2.ReadError("b")
    a.__context__, b.__context__ = b, a
    assert classify_exception(a).category == Category.CONNECTION_RESET


def test_most_specific_order() -> None:
    assert most_specific(Category.TIMEOUT, Category.DNS, Category.PROTOCOL_ERROR) == Category.DNS
    assert most_specific() == Category.UNKNOWN


@pytest.mark.parametrize(
    "exc", [status_error(401), KeyError(SECRET), httpx2.ReadTimeout(SECRET), MCPError(-1, SECRET), OSError(111, SECRET)]
)
def test_classification_never_carries_exception_text(exc: BaseException) -> None:
    error = classify_exception(exc)
    assert SECRET not in str(error) and SECRET not in error.detail and SECRET not in error.category


def test_jsonrpc_error_objects() -> None:
    assert classify_jsonrpc_error({"code": -32601, "message": "Method not found"}).category == Category.JSONRPC_ERROR
    assert classify_jsonrpc_error({"code": -32600, "message": "Session not found"}).category == Category.SESSION_EXPIRED
    assert (
        classify_jsonrpc_error({"code": -32600, "message": "Bad Request: Missing session ID"}).category
        == Category.JSONRPC_ERROR
    )
    assert classify_jsonrpc_error({"message": "no code"}).category == Category.PROTOCOL_ERROR
    assert classify_jsonrpc_error("not an object").category == Category.PROTOCOL_ERROR


def test_429_carries_retry_after() -> None:
    assert classify_status(429, {"Retry-After": "7"}).retry_after == 7.0
    assert classify_exception(status_error(429, {"retry-after": "3"})).retry_after == 3.0
    assert classify_status(429, {}).retry_after is None


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("120", 120.0),
        (format_datetime(datetime.fromtimestamp(NOW + 90, UTC), usegmt=True), 90.0),
        (format_datetime(datetime.fromtimestamp(NOW - 90, UTC), usegmt=True), 0.0),
        ("Wed, 21 Oct 2015 07:28:00", None),  # no zone: not an HTTP-date
        ("-5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_server_error_minus_32000_on_the_wire_is_a_jsonrpc_error_not_a_reset():
    """TypeScript-SDK servers answer server/discover with -32000; `protocol: auto` must fall back to legacy."""
    from xds_control.health.classify import classify_jsonrpc_error

    assert (
        classify_jsonrpc_error({"code": -32000, "message": "Bad Request: no session"}).category
        == Category.JSONRPC_ERROR
    )
