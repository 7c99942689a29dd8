"""The HTTP edge between the aggregator and one backend: its own httpx2 client, credentials, error mapping.

The SDK's streamable-HTTP client reports a 401, a 503 or a refused connection
as a generic error (or, for a refused connection, tears the whole transport
down). `EdgeTransport` sits under it and turns everything that is not an MCP
answer into a JSON-RPC error *body* the SDK then surfaces as an ordinary
`MCPError`, carrying a sanitized category:

    httpx2 connect / read / protocol failure     -> 502 + error {category: connection_refused | ...}
    401 / 403                                    -> 502 + error {category: authentication_failed, status}
    404 to a request carrying Mcp-Session-Id     -> 502 + error {category: session_expired}
    503 "no healthy upstream" (Envoy)            -> 502 + error {category: no_healthy_upstream}
    503 "upstream connect error" (Envoy)         -> 502 + error {category: connection_refused | connect_error}
    504 "upstream request timeout" (Envoy)       -> 502 + error {category: timeout}
    other 4xx/5xx whose body is not JSON-RPC     -> 502 + error {category: http_4xx | http_5xx | rate_limited}
    200 application/json that is not JSON        -> 502 + error {category: protocol_error}
    JSON body over `max_response_bytes`          -> 502 + error {category: response_too_large}

A session's closing DELETE is not sent when the session was abandoned (see
`abandon_session_in_this_task`): it is answered here, 204, without the network.

A JSON-RPC error the backend sent itself (any status) passes untouched. The
synthesized errors are marked with `EDGE_MARKER` in their data, so the layer
above can tell them from a backend's own; `upstream.py` maps them to the
aggregator's codes (rpc_errors). Only POSTs are rewritten: the GET
notification stream and the closing DELETE keep their plain HTTP semantics.

The credential header is set here on every request from the backend's cached
`Credential` (auth.py); the cache is re-read only after a 401/403. So is the
W3C `traceparent` (and `tracestate`) header, copied from the request body's
`params._meta`, where the SDK client injected it: Envoy and the backend see
the same parent in the header as in `_meta`.

`post_json` is the same mapping for `upstream_modern`'s POSTs without
httpx2's request and response objects in the common case (a plain JSON
answer comes back decoded); that caller sets the trace headers itself.
"""

from __future__ import annotations

import contextvars
import functools
import json
import ssl
from collections.abc import Callable, Mapping
from typing import Any

import httpx2

from xds_control.aggregator import metrics
from xds_control.aggregator.upstream_transport import Http11Transport, read_bounded
from xds_control.telemetry.trace_context import trace_headers_of_body

EDGE_MARKER = "xds-control/edge"  # key in a synthesized error's data; never leaves the aggregator
SESSION_EXPIRED = "session_expired"
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
_ERROR_BODY_LIMIT = 64 * 1024
_DROPPED_HEADERS = {"content-length", "transfer-encoding"}

HeaderSource = Callable[[], tuple[str, str] | None]

_ABANDONED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "xds_control_backend_session_abandoned", default=False
)


def abandon_session_in_this_task() -> None:
    """The backend session run by the current task ends without its closing DELETE. For a session whose
    backend lost it (404) or whose connection died: a DELETE would reach a restarted process that never knew
    the session, or a dead one, where Envoy's connect retries count three failures against the backend in its
    outlier detection (measured: one DELETE, three connect failures) and can eject a backend that is already
    back. The SDK sends the DELETE from the task that runs the session, so a context variable reaches it."""
    _ABANDONED.set(True)


def classify_exception(exc: httpx2.TransportError) -> str:
    """A sanitized category for an httpx2 transport failure."""
    if isinstance(exc, httpx2.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx2.ConnectError):
        text = str(exc).lower()
        return (
            "connection_refused" if "refused" in text or "all connection attempts failed" in text else "connect_error"
        )
    if isinstance(exc, httpx2.RemoteProtocolError):
        return "protocol_error"
    if isinstance(exc, httpx2.ReadError | httpx2.WriteError):
        return "connection_reset"
    return "transport_error"


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


def _is_jsonrpc_error(body: bytes) -> bool:
    try:
        decoded = json.loads(body)
    except ValueError:
        return False
    return isinstance(decoded, dict) and decoded.get("jsonrpc") == "2.0" and isinstance(decoded.get("error"), dict)


def _error_message(
    backend: str, category: str, status: int | None = None, retry_after: str | None = None
) -> dict[str, Any]:
    """The marked JSON-RPC error the edge synthesizes for `category`."""
    data: dict[str, object] = {"backend": backend, "category": category, EDGE_MARKER: True}
    if status is not None:
        data["status"] = status
    if retry_after is not None:
        data["retry_after"] = retry_after
    return {"jsonrpc": "2.0", "id": None, "error": {"code": -32603, "message": f"backend {category}", "data": data}}


def _synthesized(
    request: httpx2.Request, backend: str, category: str, status: int | None = None, retry_after: str | None = None
) -> httpx2.Response:
    return httpx2.Response(502, json=_error_message(backend, category, status, retry_after), request=request)


def _plain_json(status: int, headers: Mapping[str, str]) -> bool:
    """A success whose body is JSON as sent (no content encoding): read whole, bounded, and checked here."""
    return (
        status < 400
        and headers.get("content-type", "").lower().startswith("application/json")
        and headers.get("content-encoding", "identity") == "identity"
    )


class EdgeTransport(httpx2.AsyncBaseTransport):
    """Wraps the real transport of one backend's client; see the module docstring."""

    def __init__(
        self,
        backend: str,
        inner: httpx2.AsyncBaseTransport,
        *,
        headers: HeaderSource | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.backend = backend
        self.inner = inner
        self.headers = headers
        self.max_response_bytes = max_response_bytes
        self._requests = metrics.UPSTREAM_REQUESTS.labels(backend=backend)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "DELETE" and _ABANDONED.get():
            return httpx2.Response(204, request=request)
        credential = self.headers() if self.headers is not None else None
        if credential is not None:
            request.headers[credential[0]] = credential[1]
        self._requests.inc()
        if request.method != "POST":
            return await self.inner.handle_async_request(request)
        try:
            if "traceparent" not in request.headers:  # upstream_modern sets it itself
                request.headers.update(trace_headers_of_body(request.content))
        except httpx2.RequestNotRead:  # a streamed body: the SDK never sends one
            pass
        try:
            return await self._answer(request)
        except httpx2.TransportError as exc:
            return _synthesized(request, self.backend, classify_exception(exc))

    async def post_json(
        self, url: str, headers: dict[str, str], content: bytes, *, connect_timeout: float | None
    ) -> Any:
        """A POST of `upstream_modern`, mapped exactly as `handle_async_request` maps it, but over
        `Http11Transport` without httpx2's request and response objects for a plain JSON answer (about a sixth of
        the aggregator's CPU per call, bench/aggregator/relay_floor.py): that answer, or a synthesized error,
        comes back as the decoded JSON message (None for an empty body). Any other answer (an event stream, an
        error status, an encoded body) comes back as the `httpx2.Response` that `handle_async_request` returns.
        `headers` (lower-case names) carry the trace context already: the body is not scanned for it."""
        inner = self.inner
        if not isinstance(inner, Http11Transport):  # a test's mock transport
            timeout = {"connect": connect_timeout}
            return await self.handle_async_request(
                httpx2.Request("POST", url, content=content, headers=headers, extensions={"timeout": timeout})
            )
        credential = self.headers() if self.headers is not None else None
        if credential is not None:
            headers = {**headers, credential[0].lower(): credential[1]}
        self._requests.inc()
        try:
            response = await inner.post(url, headers, content, connect_timeout=connect_timeout)
            if not _plain_json(response.status_code, response.headers):
                request = httpx2.Request("POST", url, content=content, headers=headers)
                return await self._map_answer(request, inner.wrapped(response, request))
            body = await inner.read(response, self.max_response_bytes)
        except httpx2.TransportError as exc:
            return _error_message(self.backend, classify_exception(exc))
        if body is None:
            return _error_message(self.backend, "response_too_large")
        try:
            return json.loads(body) if body else None
        except ValueError:
            return _error_message(self.backend, "protocol_error")

    async def _answer(self, request: httpx2.Request) -> httpx2.Response:
        return await self._map_answer(request, await self.inner.handle_async_request(request))

    async def _map_answer(self, request: httpx2.Request, response: httpx2.Response) -> httpx2.Response:
        status = response.status_code
        content_type = response.headers.get("content-type", "").lower()
        if status >= 400:
            try:
                body = await self._read(response, _ERROR_BODY_LIMIT)
            except httpx2.TransportError:  # the status says enough
                body = b""
            if status == 404 and "mcp-session-id" in request.headers:
                return _synthesized(request, self.backend, SESSION_EXPIRED, status)
            if (
                status not in (401, 403)
                and body is not None
                and content_type.startswith("application/json")
                and _is_jsonrpc_error(body)
            ):
                return self._rebuilt(request, response, body)
            return _synthesized(
                request, self.backend, classify_status(status, body or b""), status, response.headers.get("retry-after")
            )
        if _plain_json(status, response.headers):
            body = await self._read(response, self.max_response_bytes)
            if body is None:
                return _synthesized(request, self.backend, "response_too_large")
            if body:
                try:
                    json.loads(body)
                except ValueError:
                    return _synthesized(request, self.backend, "protocol_error")
            return self._rebuilt(request, response, body)
        return response

    @staticmethod
    async def _read(response: httpx2.Response, limit: int) -> bytes | None:
        """The whole body, or None if it is longer than `limit`; a failure mid-body raises httpx2's
        TransportError. The stream is closed either way."""
        return await read_bounded(response.stream, limit, response.aclose)  # type: ignore[arg-type]

    @staticmethod
    def _rebuilt(request: httpx2.Request, response: httpx2.Response, body: bytes) -> httpx2.Response:
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _DROPPED_HEADERS]
        return httpx2.Response(
            response.status_code, headers=headers, content=body, request=request, extensions=response.extensions
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """httpx2's default verifying context, built once per process and shared by every backend's client (their
    pools stay separate): each client building its own (loading the CA bundle) cost about 0.8 MB and 20-100 ms
    of CPU, i.e. 166 MB and seconds of start-up at 200 backends (bench/aggregator/calls.py)."""
    return httpx2.create_ssl_context(trust_env=False)


def make_http_client(
    backend: str,
    *,
    headers: HeaderSource | None = None,
    connect_timeout: float = 10.0,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> httpx2.AsyncClient:
    """One backend's own HTTP client (no pool shared with other backends; no proxy from the environment) over
    the project's HTTP/1.1 client (upstream_transport.py).

    No read timeout: MCP responses may stream for long; the call deadline
    (`aggregator.call_timeout`) is enforced per request above this layer.
    """
    inner = Http11Transport(_ssl_context(), max_idle=32)
    transport = EdgeTransport(backend, inner, headers=headers, max_response_bytes=max_response_bytes)
    return httpx2.AsyncClient(transport=transport, timeout=client_timeout(connect_timeout), trust_env=False)


def client_timeout(connect_timeout: float = 10.0) -> httpx2.Timeout:
    return httpx2.Timeout(connect=connect_timeout, read=None, write=30.0, pool=30.0)


def edge_of(client: httpx2.AsyncClient) -> EdgeTransport:
    """The `EdgeTransport` of a client made by `make_http_client`: requests sent to it directly skip the client's
    auth, redirect and cookie layers (about 0.4 ms of CPU per request), not the edge's error mapping."""
    transport = client._transport
    assert isinstance(transport, EdgeTransport)
    return transport
