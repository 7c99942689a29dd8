"""The JSON-RPC errors the aggregator itself answers with, in the server-error range (-32000..-32099).

    code     name                  when                                              data
    -32050   BACKEND_UNAVAILABLE   the owning backend is not routable (fail fast,    backend, state, retry_after
                                   no network call), or Envoy answered 503
                                   "no healthy upstream"; also a list request in     unavailable: [{backend, state,
                                   failure_mode `fail` with a required backend       retry_after}, ...]
                                   down or no backend routable
    -32051   BACKEND_FAILED        transport failure (refused, reset), a 5xx, or     backend, category, status?
                                   a response that is not MCP (garbage, too large)
    -32052   BACKEND_TIMEOUT       no answer within `aggregator.call_timeout`        backend, category, timeout
    -32053   BACKEND_AUTH_FAILED   401/403 from the backend after the credential     backend, category, status
                                   was re-read and the call retried

The codes avoid the SDK's own (-32000 connection closed, -32001 request
timeout, -32002 resource not found, -32020..-32022, -32042). A JSON-RPC error
the backend itself returned passes through unchanged: same code, message and
data. `category` is a sanitized word, never text from the backend or a
credential.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xds_control.aggregator.catalog import Unavailable
from xds_control.errors import BackendError, CallerError

BACKEND_UNAVAILABLE = -32050
BACKEND_FAILED = -32051
BACKEND_TIMEOUT = -32052
BACKEND_AUTH_FAILED = -32053

# Outcome categories (call metrics and data-path reports to the control plane).
OK = "ok"
TRANSPORT = "transport"
HTTP_5XX = "http_5xx"
TIMEOUT = "timeout"
AUTH = "auth"
UNAVAILABLE = "unavailable"
FAILURE_OUTCOMES = (TRANSPORT, HTTP_5XX, TIMEOUT)  # what the control plane counts against a backend's health

# Sanitized failure categories carried in `data.category`, and the outcome each one counts as.
CATEGORY_OUTCOME = {
    "connection_refused": TRANSPORT,
    "connection_reset": TRANSPORT,
    "connect_error": TRANSPORT,
    "transport_error": TRANSPORT,
    "protocol_error": TRANSPORT,
    "response_too_large": TRANSPORT,
    "connection_closed": TRANSPORT,
    "http_4xx": TRANSPORT,
    "rate_limited": HTTP_5XX,
    "http_5xx": HTTP_5XX,
    "no_healthy_upstream": UNAVAILABLE,
    "timeout": TIMEOUT,
    "authentication_failed": AUTH,
}


GatewayError = BackendError  # the name upstream*.py raise and catch it by

# Every error about a backend ends with what to do: where the operator sees why.
ADVICE = "`xds-control admin backends` shows why"


def _retry(retry_after: float | None) -> str:
    return f", next chance in {retry_after:.0f}s" if isinstance(retry_after, int | float) and retry_after > 0 else ""


def backend_unavailable(backend: str, state: str, retry_after: float | None = None, **extra: Any) -> BackendError:
    data = {"backend": backend, "state": state, "retry_after": retry_after, **extra}
    message = f"backend {backend!r} is unavailable (state: {state}{_retry(retry_after)}); {ADVICE}"
    return BackendError(BACKEND_UNAVAILABLE, message, data, UNAVAILABLE)


def from_unavailable(unavailable: Unavailable) -> BackendError:
    return backend_unavailable(unavailable.backend, unavailable.state, unavailable.retry_after)


def list_unavailable(kind: str, missing: Sequence[Unavailable], *, reason: str) -> BackendError:
    """`failure_mode: fail`: a list request refused because `reason` (names every unavailable backend)."""
    names = ", ".join(f"{u.backend} ({u.state}{_retry(u.retry_after)})" for u in missing)
    return BackendError(
        BACKEND_UNAVAILABLE,
        f"cannot list {kind.replace('_', ' ')}: {reason}: {names}; {ADVICE}",
        {"unavailable": [u.to_json() for u in missing]},
        UNAVAILABLE,
    )


def backend_failed(backend: str, category: str, *, status: int | None = None, detail: str = "") -> BackendError:
    outcome = CATEGORY_OUTCOME.get(category, TRANSPORT)
    if category == "no_healthy_upstream":
        return backend_unavailable(backend, "no_healthy_upstream", category=category, status=status)
    if category == "timeout":
        return BackendError(
            BACKEND_TIMEOUT,
            f"backend {backend!r} did not answer in time; {ADVICE}",
            {"backend": backend, "category": category},
            TIMEOUT,
        )
    if category == "authentication_failed":
        data = {"backend": backend, "category": category, "status": status}
        return BackendError(
            BACKEND_AUTH_FAILED,
            f"backend {backend!r} rejected the gateway's credentials (HTTP {status}): check backends[].auth; {ADVICE}",
            data,
            AUTH,
        )
    data: dict[str, Any] = {"backend": backend, "category": category}
    if status is not None:
        data["status"] = status
    text = f"backend {backend!r} failed: {category.replace('_', ' ')}" + (f" (HTTP {status})" if status else "")
    detail = detail or _DETAILS.get(category, "")
    return BackendError(BACKEND_FAILED, text + (f": {detail}" if detail else "") + f"; {ADVICE}", data, outcome)


def caller_error(outcome: str, code: int, message: str, data: Any = None) -> CallerError:
    """An error about the request itself (`outcome`: unknown_name, invalid_arguments, not_found, bad_cursor)."""
    return CallerError(code, message, data, outcome)


_DETAILS = {
    "protocol_error": "the answer is not MCP (not JSON-RPC over JSON or SSE)",
    "response_too_large": "the answer exceeds the aggregator's response size limit",
    "connection_closed": "the connection to the backend closed",
    "session_expired": "the backend lost the session twice in a row",
}


def backend_timeout(backend: str, timeout: float) -> BackendError:
    data = {"backend": backend, "category": "timeout", "timeout": timeout}
    message = f"backend {backend!r} did not answer within {timeout:g}s (aggregator.call_timeout); {ADVICE}"
    return BackendError(BACKEND_TIMEOUT, message, data, TIMEOUT)
