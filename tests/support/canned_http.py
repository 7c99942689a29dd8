"""A real HTTP/1.1 server on a free loopback port whose answers a test writes as a function.

    async with CannedServer(handler) as server:      # handler(Request) -> Answer | bytes (raw wire bytes)
        server.url                                   # http://127.0.0.1:PORT/mcp
        server.connections                           # connections accepted so far

An `Answer` is sent with Content-Length (or chunked, or close-delimited); returning `bytes` writes them
raw, for garbage and half responses. Keep-alive is on unless the answer says `close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httptools


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    framing: str = "length"  # "length" | "chunked" | "close"

    @classmethod
    def json(cls, payload: Any, status: int = 200, **kwargs: Any) -> Answer:
        return cls(
            status,
            json.dumps(payload).encode(),
            {"content-type": "application/json", **kwargs.pop("headers", {})},
            **kwargs,
        )

    def encode(self) -> bytes:
        head = [f"HTTP/1.1 {self.status} X"] + [f"{k}: {v}" for k, v in self.headers.items()]
        if self.framing == "length":
            head.append(f"content-length: {len(self.body)}")
            tail = self.body
        elif self.framing == "chunked":
            head.append("transfer-encoding: chunked")
            tail = b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in _split(self.body)) + b"0\r\n\r\n"
        else:
            head.append("connection: close")
            tail = self.body
        return ("\r\n".join(head) + "\r\n\r\n").encode() + tail


def _split(body: bytes, size: int = 7) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)] or []


Handler = Callable[[Request], "Answer | bytes | Awaitable[Answer | bytes]"]


class _Parsed:
    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.body = b""
        self.url = b""
        self.done = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


class CannedServer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[Request] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    async def __aenter__(self) -> CannedServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/mcp"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self.drop_connections()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def drop_connections(self) -> None:
        """Close every open connection (what a server's keep-alive timer does); returns once they are closed."""
        writers = list(self._writers)
        for writer in writers:
            writer.close()
        for writer in writers:
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                parsed = _Parsed()
                parser = httptools.HttpRequestParser(parsed)
                while not parsed.done:
                    data = await reader.read(65536)
                    if not data:
                        return
                    parser.feed_data(data)
                request = Request(parser.get_method().decode(), parsed.url.decode(), parsed.headers, parsed.body)
                self.requests.append(request)
                answer = self.handler(request)
                if asyncio.iscoroutine(answer):
                    answer = await answer
                writer.write(answer if isinstance(answer, bytes) else answer.encode())
                await writer.drain()
                if isinstance(answer, bytes) or answer.framing == "close":
                    return
        except (ConnectionError, httptools.HttpParserError, asyncio.CancelledError):
            return
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
