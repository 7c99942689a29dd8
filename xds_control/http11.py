"""A small keep-alive HTTP/1.1 client: asyncio streams, responses parsed by `httptools` (llhttp).

Used by the prober (one client per backend endpoint) and by the aggregator's requests to backends through
Envoy (aggregator/backend_http.py). Kept instead of aiohttp only while it costs more than 20 % less CPU per
request (bench/http_client.py runs both on the same workload). It does only what those callers need —
HTTP/1.1, keep-alive, TLS with one shared context, streamed bodies, no proxies, no redirects, no cookies —
and leaves the parsing (status line, headers, chunked and close-delimited bodies) to llhttp, the parser
Node.js and uvicorn use.

Requests on one client may overlap (a probe and a long-lived change stream,
concurrent calls): each takes an idle keep-alive connection or opens one; a
connection goes back to the idle list (at most `max_idle`) only when its
response was read to the end and the server allows keep-alive. An idle
connection is checked before reuse: one the server closed (its keep-alive
timer fired), or that has anything to read, is dropped, never written to.
A request is sent a second time, on a fresh connection, only if it is
idempotent (not POST or PATCH), went out on a reused connection, and that
connection failed before a single byte of the response arrived; a POST whose
bytes went out is never sent again (the server may have acted on it).
`aclose()` closes every connection, streams in use included.

Bounds: a response head holds at most `MAX_HEADERS` header lines and
`MAX_HEAD_BYTES` bytes (status line included), else `WireError(response_too_large)`
before more is read; a body is read within a caller's limit by `Response.read`
/ `Response.chunks` (a declared Content-Length over it fails before reading;
gzip and deflate are decoded, and the decoded bytes count too).

Timeouts are the caller's (`asyncio.timeout` around the request, or
`connect_timeout`); errors are the builtin ones (`OSError` family,
`ssl.SSLError`, `socket.gaierror`, `TimeoutError`), `httptools.HttpParserError`
for a response that is not HTTP, and `WireError` for a bound or an unknown
content encoding.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import select
import ssl
import sys
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi
import httptools

from xds_control.errors import WireError

READ_SIZE = 64 * 1024
MAX_IDLE = 2  # the prober's default: one probe and one change stream per endpoint
MAX_HEADERS = 100  # header lines in one response head
MAX_HEAD_BYTES = 64 * 1024  # one response head: status line, header names and values
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The one verifying TLS context (certifi's CAs) every client of the process shares: building one loads the
    CA bundle, and clients are many (one per backend endpoint, rebuilt after each connection failure)."""
    return ssl.create_default_context(cafile=certifi.where())


class PeerClosedError(ConnectionResetError):
    """The server closed the connection before the response was complete; `received`: bytes of it that came."""

    def __init__(self, message: str, received: int = 0) -> None:
        super().__init__(message)
        self.received = received


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    authority: str
    path: str

    @classmethod
    def of(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) URL")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme, parts.hostname, port, parts.netloc.rpartition("@")[2], path)


def encode_request(method: str, target: Target, headers: dict[str, str], content: bytes | None) -> bytes:
    lines = [f"{method} {target.path} HTTP/1.1", f"host: {target.authority}"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError("header with a line break")  # never echo the value: it may be a credential
        lines.append(f"{name}: {value}")
    if content is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"content-length: {len(content or b'')}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + (content or b"")


@dataclass(eq=False)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def reusable(self) -> bool:
        """Still open, and nothing to read: an idle connection that is readable was closed by the server (or
        sent something unasked); either way it must not carry another request."""
        if self.reader.at_eof() or self.writer.is_closing():
            return False
        sock = self.writer.get_extra_info("socket")
        if sock is None:
            return True
        try:
            readable, _, _ = select.select([sock.fileno()], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class _ResponseParser:
    """httptools' callback protocol, collecting one response."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.complete = False
        self.keep_alive = False  # read when the message completes (llhttp resets it afterwards)
        self.body: list[bytes] = []
        self.received = 0
        self.head_lines = 0
        self.head_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_lines += 1
        self.head_bytes += len(name) + len(value)
        if self.head_lines > MAX_HEADERS or self.head_bytes > MAX_HEAD_BYTES:
            raise WireError("response_too_large", "a response head over the limit")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()

    async def read_more(self, reader: asyncio.StreamReader) -> None:
        data = await reader.read(READ_SIZE)
        if not data:
            if self.headers_done and self._close_delimited():
                self.complete = True
                return
            raise PeerClosedError("server closed the connection mid-response", self.received)
        self.received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, WireError):
                raise exc.__context__ from None
            raise
        if not self.headers_done and self.received > MAX_HEAD_BYTES:
            raise WireError("response_too_large", "a response head over the limit")

    def _close_delimited(self) -> bool:
        return (
            "content-length" not in self.headers and "chunked" not in self.headers.get("transfer-encoding", "").lower()
        )


class Response:
    """A response whose body is read as it arrives (`aiter_bytes`). Header names are lower case.

    `aclose()` gives the connection back to its client (kept alive if the body was read to the end and the
    server allows it, else closed); call it once, in a `finally`.
    """

    def __init__(self, client: HttpClient, connection: _Connection, parser: _ResponseParser) -> None:
        self.status_code = parser.parser.get_status_code()
        self.headers = parser.headers
        self._client = client
        self._parser = parser
        self._connection: _Connection | None = connection

    @property
    def complete(self) -> bool:
        return self._parser.complete

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        parser = self._parser
        while True:
            if parser.body:
                chunks, parser.body = parser.body, []
                for chunk in chunks:
                    yield chunk
            if parser.complete:
                return
            if self._connection is None:
                raise ConnectionAbortedError("response closed")
            await parser.read_more(self._connection.reader)

    async def chunks(self, limit: int | None) -> AsyncIterator[bytes]:
        """The body decoded (identity, gzip or deflate), within `limit` bytes: `WireError(response_too_large)` when
        the declared Content-Length, the bytes received or the bytes decoded pass it. `None`: no limit (a
        long-lived stream whose parts the caller bounds)."""
        if limit is None:
            limit = sys.maxsize
        length = self.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise WireError("response_too_large", "a declared Content-Length over the limit")
        decoder = _decoder(self.headers.get("content-encoding", ""))
        received = decoded = 0
        async for chunk in self.aiter_bytes():
            received += len(chunk)
            if received > limit:
                raise WireError("response_too_large", "a body over the limit")
            if decoder is None:
                yield chunk
                continue
            while chunk:  # decoded in pieces of at most 1 MiB, each counted before the next is made
                piece = decoder.decompress(chunk, min(limit - decoded + 1, 1 << 20))
                decoded += len(piece)
                if decoded > limit:
                    raise WireError("response_too_large", "a decoded body over the limit")
                if piece:
                    yield piece
                chunk = decoder.unconsumed_tail
        if decoder is not None and (rest := decoder.flush()):
            if decoded + len(rest) > limit:
                raise WireError("response_too_large", "a decoded body over the limit")
            yield rest

    async def read(self, limit: int) -> bytes:
        """The whole body, decoded, within `limit` bytes (see `chunks`)."""
        return b"".join([chunk async for chunk in self.chunks(limit)])

    async def aclose(self) -> None:
        self.release(keep=True)

    def release(self, *, keep: bool) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._client._release(connection, keep and self._parser.complete and self._parser.keep_alive)


def _decoder(encoding: str) -> zlib._Decompress | None:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(zlib.MAX_WBITS | 16)
    if encoding == "deflate":
        return zlib.decompressobj()
    raise WireError("protocol_error", "a content encoding other than gzip or deflate")


class HttpClient:
    """Keep-alive HTTP/1.1 to one server (see the module docstring)."""

    def __init__(self, ssl_context: ssl.SSLContext | None, *, max_idle: int = MAX_IDLE) -> None:
        self._ssl = ssl_context
        self._max_idle = max_idle
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._targets: dict[str, Target] = {}
        self._closed = False

    def _target(self, url: str) -> Target:
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) > 64:  # urls come from config, but never let the cache grow without bound
                self._targets.clear()
            target = self._targets[url] = Target.of(url)
        return target

    async def _open(self, target: Target, connect_timeout: float | None) -> _Connection:
        tls = self._ssl if target.scheme == "https" else None
        async with asyncio.timeout(connect_timeout):
            reader, writer = await asyncio.open_connection(
                target.host,
                target.port,
                ssl=tls,
                server_hostname=target.host if tls is not None else None,
                limit=READ_SIZE,
            )
        connection = _Connection(reader, writer)
        self._all.add(connection)
        if self._closed:
            self._discard(connection)
            raise ConnectionAbortedError("client closed")
        return connection

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable():
                return connection
            self._discard(connection)
        return None

    def _discard(self, connection: _Connection) -> None:
        self._all.discard(connection)
        connection.close()

    def _release(self, connection: _Connection, keep: bool) -> None:
        if keep and not self._closed and connection.reusable() and len(self._idle) < self._max_idle:
            self._idle.append(connection)
        else:
            self._discard(connection)

    async def _send(self, connection: _Connection, request: bytes) -> _ResponseParser:
        connection.writer.write(request)
        await connection.writer.drain()
        parser = _ResponseParser()
        while not parser.headers_done:
            await parser.read_more(connection.reader)
        return parser

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        content: bytes | None = None,
        connect_timeout: float | None = None,
    ) -> Response:
        """Send one request; the response with its headers read and its body still to be read (`aclose` it)."""
        target = self._target(url)
        request = encode_request(method, target, headers, content)
        connection = self._take_idle()
        again = connection is not None and method in IDEMPOTENT
        if connection is None:
            connection = await self._open(target, connect_timeout)
        try:
            try:
                parser = await self._send(connection, request)
            except (ConnectionResetError, BrokenPipeError) as exc:
                if not again or (isinstance(exc, PeerClosedError) and exc.received):
                    raise
                self._discard(connection)  # reused, idempotent, no answer begun: once more, fresh
                connection = await self._open(target, connect_timeout)
                parser = await self._send(connection, request)
        except BaseException:
            self._discard(connection)
            raise
        return Response(self, connection, parser)

    @contextlib.asynccontextmanager
    async def stream(
        self, method: str, url: str, *, headers: dict[str, str], content: bytes | None = None
    ) -> AsyncIterator[Response]:
        """`send` as a context: the response is released on exit (its connection closed if the exit is an error)."""
        response = await self.send(method, url, headers=headers, content=content)
        try:
            yield response
        except BaseException:
            response.release(keep=False)
            raise
        else:
            response.release(keep=True)

    async def aclose(self) -> None:
        self._closed = True
        self._idle.clear()
        connections, self._all = list(self._all), set()
        for connection in connections:
            connection.close()
        for connection in connections:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await connection.writer.wait_closed()
