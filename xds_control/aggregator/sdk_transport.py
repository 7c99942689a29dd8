"""The httpx2 transport the MCP SDK's streamable-HTTP client needs, over `BackendHttp` (backend_http.py).

Legacy backend sessions are SDK `ClientSession`s (upstream.py), and the SDK's client speaks httpx2. This
adapter is the only place httpx2 meets the aggregator's upstream requests:

* POST: `BackendHttp.post`, the one mapping of both families. The SDK reports a 401, a 503 or a refused
  connection as a generic error (a refused connection even tears its transport down), so an `EdgeFailure`
  reaches it as a 502 whose JSON-RPC error body is marked with `EDGE_MARKER`, which it surfaces as an
  ordinary `MCPError` for `upstream.map_error`; a `Passed` body as the answer it was (decoded, without its
  framing and encoding headers); a `Streamed` answer as it streams. The W3C `traceparent` / `tracestate`
  headers are copied from the body's `params._meta`, where the SDK client injected them (it posts from a
  task of its own that does not see the caller's context): Envoy and the backend see the same parent in
  the header as in `_meta`.
* GET (the notification stream) and DELETE (the session's end) keep their plain HTTP meaning; their
  failures are raised as the httpx2 exceptions the SDK handles (`_as_httpx2`). A session's closing DELETE is
  not sent when the session was abandoned (`abandon_session_in_this_task`): it is answered 204 here.

Bodies are passed on as they arrive; a streamed body's content encoding is httpx2's to decode above.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import httpx2

from xds_control.aggregator.backend_http import BackendHttp, Streamed
from xds_control.aggregator.upstream_answers import EdgeFailure, edge_error, failure_category
from xds_control.http11 import Response
from xds_control.telemetry.trace_context import trace_headers_of_body

ACCEPT_ENCODING = "gzip, deflate"
_HOP_HEADERS = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection", b"keep-alive"})
_DECODED_HEADERS = frozenset({"content-length", "transfer-encoding", "content-encoding"})
_HTTPX2_ERRORS: dict[str, type[httpx2.TransportError]] = {
    "timeout": httpx2.ConnectTimeout,
    "connection_refused": httpx2.ConnectError,
    "connect_error": httpx2.ConnectError,
    "protocol_error": httpx2.RemoteProtocolError,
    "response_too_large": httpx2.RemoteProtocolError,
    "connection_reset": httpx2.ReadError,
}

_ABANDONED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "xds_control_backend_session_abandoned", default=False
)


def abandon_session_in_this_task() -> None:
    """The backend session run by the current task ends without its closing DELETE. For a session whose
    backend lost it (404) or whose connection died: a DELETE would reach a restarted process that never knew
    the session, or a dead one, where Envoy's connect retries count failures against the backend in its
    outlier detection and can eject a backend that is already back. The SDK sends the DELETE from the task
    that runs the session, so a context variable reaches it."""
    _ABANDONED.set(True)


@contextmanager
def _as_httpx2(*, reading: bool = False) -> Iterator[None]:
    """A failed exchange as the httpx2 exception the SDK handles (its text says "refused" when it was)."""
    try:
        yield
    except Exception as exc:
        category = failure_category(exc, reading=reading)
        if category is None:
            raise
        error = _HTTPX2_ERRORS[category]
        if category == "timeout" and reading:
            error = httpx2.ReadTimeout
        raise error(category.replace("_", " ")) from exc


class _Body(httpx2.AsyncByteStream):
    def __init__(self, response: Response) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx2(reading=True):
            async for chunk in self._response.aiter_bytes():
                yield chunk

    async def aclose(self) -> None:
        await self._response.aclose()


def _streamed(response: Response, request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(
        response.status_code, headers=list(response.headers.items()), stream=_Body(response), request=request
    )


class SdkTransport(httpx2.AsyncBaseTransport):
    """One backend's `BackendHttp` seen as an httpx2 transport; see the module docstring."""

    def __init__(self, http: BackendHttp) -> None:
        self.http = http

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "DELETE" and _ABANDONED.get():
            return httpx2.Response(204, request=request)
        headers: dict[str, str] = {}
        for raw_name, raw_value in request.headers.raw:
            name = raw_name.lower()
            if name in _HOP_HEADERS:
                continue
            key, value = name.decode("latin-1"), raw_value.decode("latin-1")
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        if "accept-encoding" in headers:
            headers["accept-encoding"] = ACCEPT_ENCODING  # what http11.Response.chunks decodes, whatever httpx2 could
        content = await request.aread()
        url = str(request.url)
        if request.method != "POST":
            with _as_httpx2():
                response = await self.http.send(request.method, url, headers, content or None)
            return _streamed(response, request)
        if "traceparent" not in headers:
            headers.update(trace_headers_of_body(content))
        answer = await self.http.post(url, headers, content)
        if isinstance(answer, Streamed):
            return _streamed(answer.response, request)
        if isinstance(answer, EdgeFailure):
            body = json.dumps(edge_error(self.http.backend, answer)).encode()
            return httpx2.Response(502, content=body, headers={"content-type": "application/json"}, request=request)
        return httpx2.Response(
            answer.status,
            headers=[(k, v) for k, v in answer.headers.items() if k not in _DECODED_HEADERS],
            content=answer.body,
            request=request,
        )

    async def aclose(self) -> None:
        await self.http.aclose()


def sdk_client(http: BackendHttp) -> httpx2.AsyncClient:
    """The httpx2 client an SDK session of this backend runs on (no proxy from the environment; no read
    timeout: the call deadline is enforced above)."""
    timeout = httpx2.Timeout(connect=http.connect_timeout, read=None, write=30.0, pool=30.0)
    return httpx2.AsyncClient(transport=SdkTransport(http), timeout=timeout, trust_env=False)
