"""Every probe failure mapped to one sanitized category (pure: no I/O, no clock of its own).

The category is the only error text that leaves the health part: it is what
the view's `last_error`, the transition logs and the metrics labels carry.
Nothing here ever copies a header, a URL or an exception message into a
category or into `ProbeError.detail` (the detail is an HTTP status or an
exception class name, both safe).

Three entry points:

* `classify_status(status, headers, now=...)`: an HTTP response status
  (None for 2xx);
* `classify_jsonrpc_error(error)`: a JSON-RPC error object a backend answered;
* `classify_exception(exc)`: any exception, including ExceptionGroups and
  exception chains (`__cause__`, `__context__`). Every exception in the tree
  is classified and the most specific category wins (`SPECIFICITY`).

The prober's client (xds_control/http11.py) raises builtin errors (OS,
socket, TLS, asyncio), llhttp's parser errors and `WireError`; the prober
itself `ProbeError`. `EXCEPTION_CATEGORIES` names each of those types
explicitly; the test suite fails if an exception class of `ssl` or
`httptools` is missing from it.
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import json
import socket
import ssl
from collections.abc import Iterator, Mapping
from enum import StrEnum
from typing import Any

import httptools

from xds_control.errors import ProbeError, WireError


class Category(StrEnum):
    CONNECTION_REFUSED = "connection_refused"
    CONNECTION_RESET = "connection_reset"
    DNS = "dns"
    TLS = "tls"
    TIMEOUT = "timeout"
    AUTHENTICATION_FAILED = "authentication_failed"
    RATE_LIMITED = "rate_limited"
    HTTP_4XX = "http_4xx"
    HTTP_5XX = "http_5xx"
    PROTOCOL_ERROR = "protocol_error"
    NOT_MCP = "not_mcp"  # an HTTP server that does not speak MCP at all (a plain web server, a proxy page)
    JSONRPC_ERROR = "jsonrpc_error"
    RESPONSE_TOO_LARGE = "response_too_large"
    CATALOG_TOO_LARGE = "catalog_too_large"  # over health.max_catalog_bytes / _items / _pages across pages
    SESSION_EXPIRED = "session_expired"
    UNKNOWN = "unknown"


# Most specific first: when an exception tree holds several classifiable errors
# (an ExceptionGroup, or an error raised from the OSError that says what happened), the one
# earliest in this list names the failure.
SPECIFICITY: tuple[Category, ...] = (
    Category.AUTHENTICATION_FAILED,
    Category.RATE_LIMITED,
    Category.RESPONSE_TOO_LARGE,
    Category.CATALOG_TOO_LARGE,
    Category.SESSION_EXPIRED,
    Category.TLS,
    Category.DNS,
    Category.CONNECTION_REFUSED,
    Category.CONNECTION_RESET,
    Category.TIMEOUT,
    Category.NOT_MCP,
    Category.HTTP_5XX,
    Category.HTTP_4XX,
    Category.JSONRPC_ERROR,
    Category.PROTOCOL_ERROR,
    Category.UNKNOWN,
)
_RANK = {c: i for i, c in enumerate(SPECIFICITY)}

# Categories after which the HTTP client is thrown away (a replaced backend
# process must not be reached over a stale keep-alive connection).
CONNECTION_CATEGORIES = frozenset(
    {
        Category.CONNECTION_REFUSED,
        Category.CONNECTION_RESET,
        Category.DNS,
        Category.TLS,
        Category.TIMEOUT,
        Category.RESPONSE_TOO_LARGE,
    }
)

C = Category
EXCEPTION_CATEGORIES: Mapping[type[BaseException], Category] = {
    # OS, socket, TLS, asyncio
    OSError: C.UNKNOWN,  # refined by errno below
    ConnectionError: C.CONNECTION_RESET,
    ConnectionRefusedError: C.CONNECTION_REFUSED,
    ConnectionResetError: C.CONNECTION_RESET,
    ConnectionAbortedError: C.CONNECTION_RESET,
    BrokenPipeError: C.CONNECTION_RESET,
    socket.gaierror: C.DNS,
    socket.herror: C.DNS,
    ssl.SSLError: C.TLS,
    ssl.SSLCertVerificationError: C.TLS,
    ssl.SSLZeroReturnError: C.TLS,
    ssl.SSLWantReadError: C.TLS,
    ssl.SSLWantWriteError: C.TLS,
    ssl.SSLSyscallError: C.TLS,
    ssl.SSLEOFError: C.TLS,
    TimeoutError: C.TIMEOUT,  # also asyncio.TimeoutError and socket.timeout
    asyncio.IncompleteReadError: C.CONNECTION_RESET,
    EOFError: C.CONNECTION_RESET,
    # decoding what a backend sent
    json.JSONDecodeError: C.PROTOCOL_ERROR,
    UnicodeDecodeError: C.PROTOCOL_ERROR,
    # llhttp, the prober's response parser (xds_control/http11.py)
    httptools.HttpParserError: C.PROTOCOL_ERROR,
    httptools.HttpParserCallbackError: C.PROTOCOL_ERROR,
    httptools.HttpParserInvalidStatusError: C.PROTOCOL_ERROR,
    httptools.HttpParserInvalidMethodError: C.PROTOCOL_ERROR,
    httptools.HttpParserInvalidURLError: C.PROTOCOL_ERROR,
    httptools.HttpParserUpgrade: C.PROTOCOL_ERROR,
    # ours
    ProbeError: C.UNKNOWN,  # carries its own category
    WireError: C.UNKNOWN,  # carries its own category
}
del C

_CONNECT_ERRNOS = {
    errno.ECONNREFUSED: Category.CONNECTION_REFUSED,
    errno.EHOSTUNREACH: Category.CONNECTION_REFUSED,
    errno.ENETUNREACH: Category.CONNECTION_REFUSED,
    errno.EADDRNOTAVAIL: Category.CONNECTION_REFUSED,
    errno.ECONNRESET: Category.CONNECTION_RESET,
    errno.ECONNABORTED: Category.CONNECTION_RESET,
    errno.EPIPE: Category.CONNECTION_RESET,
    errno.ETIMEDOUT: Category.TIMEOUT,
}
_SESSION_WORDS = ("session not found", "session terminated", "session expired", "unknown session", "invalid session")

# Answers to a POST that no MCP endpoint gives (every MCP request is a POST): the server does not take POSTs
# at this URL (405) or at all (501, e.g. `python -m http.server`). A plain web server, not a failing MCP one.
NOT_MCP_STATUSES = frozenset({405, 501})

REQUEST_TIMEOUT = -32001  # a server's own "request timed out"


def most_specific(*categories: Category | str) -> Category:
    """The most specific of `categories` (`unknown` if there are none)."""
    known = [Category(c) for c in categories]
    return min(known, key=_RANK.__getitem__, default=Category.UNKNOWN)


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """`Retry-After` as seconds from `now` (unix time): delta-seconds or an HTTP-date. None if absent or invalid."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def classify_status(status: int, headers: Mapping[str, str] | None = None, *, now: float = 0.0) -> ProbeError | None:
    """A ProbeError for a non-2xx HTTP status, or None for 2xx. `headers` keys are matched case-insensitively."""
    if 200 <= status < 300:
        return None
    detail = f"HTTP {status}"
    if status in (401, 403):
        return ProbeError(Category.AUTHENTICATION_FAILED, detail, status=status)
    if status == 429:
        lowered = {k.lower(): v for k, v in (headers or {}).items()}
        return ProbeError(
            Category.RATE_LIMITED,
            detail,
            status=status,
            retry_after=parse_retry_after(lowered.get("retry-after"), now=now),
        )
    if status == 413:
        return ProbeError(Category.RESPONSE_TOO_LARGE, detail, status=status)
    if status in NOT_MCP_STATUSES:
        return ProbeError(Category.NOT_MCP, detail, status=status)
    if 400 <= status < 500:
        return ProbeError(Category.HTTP_4XX, detail, status=status)
    if status >= 500:
        return ProbeError(Category.HTTP_5XX, detail, status=status)
    return ProbeError(Category.PROTOCOL_ERROR, detail, status=status)  # 1xx/3xx: an MCP endpoint does not redirect


def is_session_error(error: Mapping[str, Any]) -> bool:
    message = str(error.get("message", "")).lower()
    return any(word in message for word in _SESSION_WORDS)


def classify_jsonrpc_error(error: Any) -> ProbeError:
    """A JSON-RPC `error` member a backend answered (the message is inspected, never copied). -32000 is a
    server's generic error (TypeScript-SDK servers answer `server/discover` with it), not a lost connection."""
    if not isinstance(error, Mapping) or not isinstance(error.get("code"), int):
        return ProbeError(Category.PROTOCOL_ERROR, "malformed JSON-RPC error")
    code = error["code"]
    if is_session_error(error):
        return ProbeError(Category.SESSION_EXPIRED, f"JSON-RPC {code}")
    if code == REQUEST_TIMEOUT:
        return ProbeError(Category.TIMEOUT, f"JSON-RPC {code}")
    return ProbeError(Category.JSONRPC_ERROR, f"JSON-RPC {code}")


def _walk(exc: BaseException) -> Iterator[BaseException]:
    """Every exception in the tree: group members, causes and contexts (cycle-safe)."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                stack.append(linked)


def _lookup(exc: BaseException) -> Category | None:
    for cls in type(exc).__mro__:
        if cls in EXCEPTION_CATEGORIES:
            return EXCEPTION_CATEGORIES[cls]
    return None


def _one(exc: BaseException) -> ProbeError | None:
    """Classify a single exception (not its tree). None if it says nothing (cancellation, groups, unrelated types)."""
    if isinstance(exc, ProbeError):
        return exc
    if isinstance(exc, WireError):
        return ProbeError(exc.category, exc.detail)
    category = _lookup(exc)
    if isinstance(exc, OSError) and category in (None, Category.UNKNOWN, Category.CONNECTION_RESET):
        category = _CONNECT_ERRNOS.get(exc.errno or 0, category)
    if category is None:
        return None
    return ProbeError(category, type(exc).__name__)


def classify_exception(exc: BaseException) -> ProbeError:
    """The most specific ProbeError found anywhere in `exc`'s tree; `unknown` if nothing in it is known."""
    best: ProbeError | None = None
    for member in _walk(exc):
        found = _one(member)
        if found is None:
            continue
        if best is None or _RANK[Category(found.category)] < _RANK[Category(best.category)]:
            best = found
    if best is None:
        return ProbeError(Category.UNKNOWN, type(exc).__name__)
    if best.category == Category.UNKNOWN and not isinstance(exc, ProbeError):
        return ProbeError(Category.UNKNOWN, type(exc).__name__)
    return best
