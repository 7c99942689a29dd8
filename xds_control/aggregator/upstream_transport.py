"""httpx2's transport interface over the project's own HTTP/1.1 client (xds_control/http11.py).

The aggregator's upstream requests all go to one place, Envoy's egress
listener on loopback, as small JSON-RPC POSTs (and, for legacy backends, one
GET notification stream and one DELETE per session). httpx2's default
transport (httpcore pool, anyio streams, h11) cost about 1 ms of CPU per
request there, about half of the aggregator's work for a proxied tools/call;
this one costs about a third of that. Everything above it — the SDK's
streamable-HTTP client, `EdgeTransport`'s error mapping — still sees httpx2
requests, responses and exceptions; `post` and `read`, the lean POST of
modern backend requests (`EdgeTransport.post_json`), skip httpx2's request
and response objects but raise the same exceptions:

    connect refused / DNS / TLS / unreachable    -> httpx2.ConnectError (its text says "refused" when it was)
    connect over `timeout["connect"]`            -> httpx2.ConnectTimeout
    reset, broken pipe or early close            -> httpx2.ReadError
    any other socket error reading a body        -> httpx2.ReadError (ETIMEDOUT: ReadTimeout)
    an answer that is not HTTP/1.1               -> httpx2.RemoteProtocolError

No read or write timeout (as with httpx2 before: MCP answers may stream for
long, and the call deadline is enforced above; request bodies are small and
Envoy reads them at once). Bodies are passed on as they arrive, never
decompressed here (httpx2's response does that from `content-encoding`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager

import httptools
import httpx2

from xds_control.http11 import HttpClient, Response

_HOP_HEADERS = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection", b"keep-alive"})


@contextmanager
def _mapped(*, reading: bool = False) -> Iterator[None]:
    """Builtin network errors as the httpx2 exceptions the layers above expect. The only timeout inside
    `HttpClient.send` is its connect timeout; refusals, DNS and TLS failures happen only while connecting;
    any OSError while `reading` a body is a read failure."""
    try:
        yield
    except TimeoutError as exc:  # (an OSError: ETIMEDOUT from the socket while reading is one too)
        raise (httpx2.ReadTimeout("read timed out") if reading else httpx2.ConnectTimeout("connect timed out")) from exc
    except httptools.HttpParserError as exc:
        raise httpx2.RemoteProtocolError("the answer is not HTTP/1.1") from exc
    except ConnectionRefusedError as exc:
        raise httpx2.ConnectError("connection refused") from exc
    except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, asyncio.IncompleteReadError) as exc:
        raise httpx2.ReadError(f"connection lost: {type(exc).__name__}") from exc
    except OSError as exc:
        if reading:
            raise httpx2.ReadError(f"connection lost: {type(exc).__name__}") from exc
        # socket.gaierror, ssl.SSLError, EHOSTUNREACH...
        raise httpx2.ConnectError(f"connection failed: {type(exc).__name__}") from exc


async def read_bounded(chunks: AsyncIterable[bytes], limit: int, close: Callable[[], Awaitable[None]]) -> bytes | None:
    """The whole body from `chunks`, or None once it is longer than `limit`; `close` runs either way."""
    body = bytearray()
    try:
        async for chunk in chunks:
            body.extend(chunk)
            if len(body) > limit:
                return None
    finally:
        await close()
    return bytes(body)


class _Body(httpx2.AsyncByteStream):
    def __init__(self, response: Response) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped(reading=True):
            async for chunk in self._response.aiter_bytes():
                yield chunk

    async def aclose(self) -> None:
        await self._response.aclose()


class Http11Transport(httpx2.AsyncBaseTransport):
    """One backend's connections (kept alive up to `max_idle`); see the module docstring."""

    def __init__(self, ssl_context: ssl.SSLContext | None, *, max_idle: int = 32) -> None:
        self._client = HttpClient(ssl_context, max_idle=max_idle)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        headers: dict[str, str] = {}
        for raw_name, raw_value in request.headers.raw:
            name = raw_name.lower()
            if name in _HOP_HEADERS:
                continue
            key, value = name.decode("latin-1"), raw_value.decode("latin-1")
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        content = await request.aread()
        with _mapped():
            response = await self._client.send(
                request.method,
                str(request.url),
                headers=headers,
                content=content if content or request.method in ("POST", "PUT", "PATCH") else None,
                connect_timeout=(request.extensions.get("timeout") or {}).get("connect"),
            )
        return self.wrapped(response, request)

    async def post(
        self, url: str, headers: dict[str, str], content: bytes, *, connect_timeout: float | None
    ) -> Response:
        """A POST without httpx2's request and response objects (`EdgeTransport.post_json`): `headers` go out as
        given (lower-case names, none hop-by-hop); the response's body is still to be read (`read`, or `wrapped`)."""
        with _mapped():
            return await self._client.send(
                "POST", url, headers=headers, content=content, connect_timeout=connect_timeout
            )

    @staticmethod
    async def read(response: Response, limit: int) -> bytes | None:
        """The whole body of a `post` response, or None if it is longer than `limit`; a failure mid-body raises
        httpx2's ReadError. The connection goes back to the pool (or is closed) either way."""
        with _mapped(reading=True):
            return await read_bounded(response.aiter_bytes(), limit, response.aclose)

    @staticmethod
    def wrapped(response: Response, request: httpx2.Request) -> httpx2.Response:
        """A response as httpx2's, its body streamed as it arrives."""
        return httpx2.Response(
            response.status_code, headers=list(response.headers.items()), stream=_Body(response), request=request
        )

    async def aclose(self) -> None:
        await self._client.aclose()
