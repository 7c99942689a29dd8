"""Every failure maps to one sanitized category; no exception type of the libraries the prober meets is left
unmapped."""

from __future__ import annotations

import asyncio
import inspect
import socket
import ssl
import sys
from datetime import UTC, datetime
from email.utils import format_datetime

import httptools
import pytest

from xds_control.errors import ProbeError, WireError
from xds_control.health.classify import (
    EXCEPTION_CATEGORIES,
    Category,
    classify_exception,
    classify_jsonrpc_error,
    classify_status,
    most_specific,
    parse_retry_after,
)
from xds_control.http11 import PeerClosedError

SECRET = "s3cr3t-token-value"


def chained(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


def status_error(status: int, headers: dict[str, str] | None = None) -> ProbeError:
    error = classify_status(status, headers)
    assert error is not None
    return error


# One row per category at least: (what happened, the exception, expected category).
EXCEPTION_CASES: list[tuple[str, BaseException, Category]] = [
    ("refused", ConnectionRefusedError(111, "refused"), Category.CONNECTION_REFUSED),
    ("refused, bare OSError errno", OSError(111, "Connection refused"), Category.CONNECTION_REFUSED),
    ("unreachable", OSError(113, "No route to host"), Category.CONNECTION_REFUSED),
    ("reset while reading", ConnectionResetError(104, "reset"), Category.CONNECTION_RESET),
    (
        "server closed keep-alive",
        PeerClosedError("server closed the connection mid-response"),
        Category.CONNECTION_RESET,
    ),
    ("broken pipe", BrokenPipeError(32, "broken pipe"), Category.CONNECTION_RESET),
    ("stream cut short", asyncio.IncompleteReadError(b"", 10), Category.CONNECTION_RESET),
    ("dns", socket.gaierror(-2, "Name or service not known"), Category.DNS),
    ("tls", ssl.SSLError(1, "WRONG_VERSION_NUMBER"), Category.TLS),
    ("certificate", ssl.SSLCertVerificationError(1, "certificate verify failed"), Category.TLS),
    ("asyncio.timeout", TimeoutError(), Category.TIMEOUT),
    ("401 status", status_error(401), Category.AUTHENTICATION_FAILED),
    ("403 status", status_error(403), Category.AUTHENTICATION_FAILED),
    ("429 status", status_error(429, {"Retry-After": "7"}), Category.RATE_LIMITED),
    ("404 status", status_error(404), Category.HTTP_4XX),
    ("503 status", status_error(503), Category.HTTP_5XX),
    ("malformed HTTP", httptools.HttpParserInvalidStatusError("illegal status line"), Category.PROTOCOL_ERROR),
    ("undecodable body", UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), Category.PROTOCOL_ERROR),
    ("not UTF-8 in an event", WireError("protocol_error", "an SSE line that is not UTF-8"), Category.PROTOCOL_ERROR),
    ("JSON-RPC error", classify_jsonrpc_error({"code": -32602, "message": "Invalid params"}), Category.JSONRPC_ERROR),
    ("request timeout on the wire", classify_jsonrpc_error({"code": -32001, "message": "t"}), Category.TIMEOUT),
    (
        "session terminated",
        classify_jsonrpc_error({"code": -32600, "message": "Session terminated"}),
        Category.SESSION_EXPIRED,
    ),
    ("ours: too large", ProbeError(Category.RESPONSE_TOO_LARGE, "body over the limit"), Category.RESPONSE_TOO_LARGE),
    ("ours: catalog too large", ProbeError(Category.CATALOG_TOO_LARGE, "over the bound"), Category.CATALOG_TOO_LARGE),
    (
        "wire: head too large",
        WireError("response_too_large", "a response head over the limit"),
        Category.RESPONSE_TOO_LARGE,
    ),
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
    found = []
    for module in (ssl, httptools):
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
    """Adding a new exception class to ssl or httptools (the prober's TLS and parser) fails here until it is mapped."""
    assert exc_type in EXCEPTION_CATEGORIES, (
        f"map {exc_type.__module__}.{exc_type.__qualname__} in EXCEPTION_CATEGORIES"
    )


def test_classifying_loads_no_http_or_mcp_library() -> None:
    """The prober meets none of their exceptions: none of them is imported to classify one."""
    code = (
        "import sys; from xds_control.health.classify import classify_exception; "
        "classify_exception(ExceptionGroup('g', [KeyError('x'), OSError(111, 'refused')])); "
        "print(sorted(m for m in ('httpx2', 'httpcore2', 'mcp', 'mcp_types') if m in sys.modules))"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_exception_group_most_specific_wins() -> None:
    inner = ExceptionGroup(
        "inner", [ValueError("x"), chained(OSError(5, "failed"), ConnectionRefusedError(111, "refused"))]
    )
    outer = BaseExceptionGroup("outer", [RuntimeError("boom"), inner, TimeoutError()])
    assert classify_exception(outer).category == Category.CONNECTION_REFUSED


def test_exception_group_around_a_status() -> None:
    group = ExceptionGroup(
        "unhandled errors in a TaskGroup",
        [ExceptionGroup("nested", [status_error(401)]), classify_jsonrpc_error({"code": -32603, "message": "x"})],
    )
    assert classify_exception(group).category == Category.AUTHENTICATION_FAILED


def test_cancellation_alone_is_unknown() -> None:
    assert classify_exception(ExceptionGroup("g", [RuntimeError("x")])).category == Category.UNKNOWN


def test_cycle_in_exception_chain_terminates() -> None:
    a, b = RuntimeError("a"), ConnectionResetError("b")
    a.__context__, b.__context__ = b, a
    assert classify_exception(a).category == Category.CONNECTION_RESET


def test_most_specific_order() -> None:
    assert most_specific(Category.TIMEOUT, Category.DNS, Category.PROTOCOL_ERROR) == Category.DNS
    assert most_specific() == Category.UNKNOWN


@pytest.mark.parametrize(
    "exc",
    [
        status_error(401),
        KeyError(SECRET),
        TimeoutError(SECRET),
        classify_jsonrpc_error({"code": -1, "message": SECRET}),
        OSError(111, SECRET),
        httptools.HttpParserError(SECRET),
    ],
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
