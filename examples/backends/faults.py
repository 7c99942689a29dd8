"""Fault injection for the demo MCP backend: an ASGI middleware that breaks `/mcp` on purpose.

Each mode imitates one way a real backend fails, so the health prober and the
aggregator can be tested against the real thing instead of a mock:

    none      pass every request through
    hang      read the request, then never answer (until the process stops)
    garbage   200 `application/json` whose body is not JSON
    http429   429 with `Retry-After: 2`
    http500   500 with a plain-text body
    http401   401 with `WWW-Authenticate: Bearer`, whatever the credentials
    huge      200 `application/json`: a 50 MiB JSON-RPC response, streamed

The mode is read on every request from a callable, so a fault file can switch
it while the process runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

FAULT_MODES = ("none", "hang", "garbage", "http429", "http500", "http401", "huge")

HUGE_BODY_BYTES = 50 * 1024 * 1024
_CHUNK = 1024 * 1024


async def read_body(receive: Receive) -> bytes:
    """Drain an ASGI request body."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return bytes(body)
        body.extend(message.get("body", b""))
        if not message.get("more_body", False):
            return bytes(body)


def request_id(body: bytes) -> object:
    """The JSON-RPC id of a request body, or None if there is none."""
    try:
        decoded = json.loads(body)
    except ValueError:
        return None
    return decoded.get("id") if isinstance(decoded, dict) else None


async def send_plain(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class FaultMiddleware:
    """Answer HTTP requests according to `mode()`; `none` hands them to `app`."""

    def __init__(self, app: ASGIApp, mode: Callable[[], str]) -> None:
        self.app = app
        self.mode = mode

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        mode = self.mode() if scope["type"] == "http" else "none"
        if mode == "none":
            await self.app(scope, receive, send)
        elif mode == "hang":
            await read_body(receive)
            await anyio.sleep_forever()
        elif mode == "garbage":
            await read_body(receive)
            await send_plain(send, 200, b"<html>this is not JSON-RPC", [(b"content-type", b"application/json")])
        elif mode == "http429":
            await read_body(receive)
            await send_plain(send, 429, b"rate limited\n", [(b"content-type", b"text/plain"), (b"retry-after", b"2")])
        elif mode == "http500":
            await read_body(receive)
            await send_plain(send, 500, b"internal server error\n", [(b"content-type", b"text/plain")])
        elif mode == "http401":
            await read_body(receive)
            challenge = (b"www-authenticate", b'Bearer error="invalid_token"')
            await send_plain(send, 401, b'{"error":"invalid_token"}', [(b"content-type", b"application/json"), challenge])
        elif mode == "huge":
            await self._huge(await read_body(receive), send)
        else:  # pragma: no cover - argparse and the fault file reader only pass known modes
            raise ValueError(f"unknown fault mode {mode!r}")

    @staticmethod
    async def _huge(body: bytes, send: Send) -> None:
        """A syntactically valid JSON-RPC response padded to exactly HUGE_BODY_BYTES."""
        head = b'{"jsonrpc":"2.0","id":' + json.dumps(request_id(body)).encode() + b',"result":{"padding":"'
        tail = b'"}}'
        padding = HUGE_BODY_BYTES - len(head) - len(tail)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(HUGE_BODY_BYTES).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": head, "more_body": True})
        chunk = b"x" * _CHUNK
        while padding > 0:
            piece = chunk if padding >= _CHUNK else chunk[:padding]
            padding -= len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": tail})
