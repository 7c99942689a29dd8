"""The HTTP edge of the demo MCP backend: what happens to a request before the SDK sees it.

`FaultMiddleware` breaks `/mcp` on purpose, imitating one way a real backend
fails, so the health prober and the aggregator are tested against the real
thing instead of a mock:

    none      pass every request through
    hang      read the request, then never answer (until shutdown, then 503)
    garbage   200 `application/json` whose body is not JSON
    http429   429 with `Retry-After: 2`
    http500   500 with a plain-text body
    http401   401 with `WWW-Authenticate: Bearer`, whatever the credentials
    huge      200 `application/json`: a 50 MiB JSON-RPC response, streamed

`Gate` checks the bearer token and narrows the endpoint to one protocol
family. Both read their settings through callables on every request
(`file_reader`), so a token file or a fault file can change them while the
process runs. `host_patterns` builds the SDK's allowed-Host list.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from starlette.types import ASGIApp, Receive, Scope, Send

FAULT_MODES = ("none", "hang", "garbage", "http429", "http500", "http401", "huge")

HUGE_BODY_BYTES = 50 * 1024 * 1024
_CHUNK = 1024 * 1024
_JSON = (b"content-type", b"application/json")
_CHALLENGE = (b"www-authenticate", b'Bearer error="invalid_token"')


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
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(body)).encode()), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


class FaultMiddleware:
    """Answer HTTP requests according to `mode()`; `none` hands them to `app`."""

    def __init__(self, app: ASGIApp, mode: Callable[[], str], stopping: anyio.Event) -> None:
        self.app, self.mode, self.stopping = app, mode, stopping

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        mode = self.mode() if scope["type"] == "http" else "none"
        if mode == "none":
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        if mode == "hang":
            await self.stopping.wait()
            await send_plain(send, 503, b"shutting down\n", [(b"content-type", b"text/plain")])
        elif mode == "garbage":
            await send_plain(send, 200, b"<html>this is not JSON-RPC", [_JSON])
        elif mode == "http429":
            await send_plain(send, 429, b"rate limited\n", [(b"content-type", b"text/plain"), (b"retry-after", b"2")])
        elif mode == "http500":
            await send_plain(send, 500, b"internal server error\n", [(b"content-type", b"text/plain")])
        elif mode == "http401":
            await send_plain(send, 401, b'{"error":"invalid_token"}', [_JSON, _CHALLENGE])
        elif mode == "huge":
            await self._huge(body, send)
        else:  # pragma: no cover - argparse and the fault file reader only pass known modes
            raise ValueError(f"unknown fault mode {mode!r}")

    @staticmethod
    async def _huge(body: bytes, send: Send) -> None:
        """A syntactically valid JSON-RPC response padded to exactly HUGE_BODY_BYTES."""
        head = b'{"jsonrpc":"2.0","id":' + json.dumps(request_id(body)).encode() + b',"result":{"padding":"'
        tail = b'"}}'
        padding = HUGE_BODY_BYTES - len(head) - len(tail)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [_JSON, (b"content-length", str(HUGE_BODY_BYTES).encode())],
            }
        )
        await send({"type": "http.response.body", "body": head, "more_body": True})
        chunk = b"x" * _CHUNK
        while padding > 0:
            piece = chunk[: min(padding, _CHUNK)]
            padding -= len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": tail})


class Gate:
    """Bearer auth and the protocol-family filter, plus a hook telling the app which sessions ended.

    `family`: `both` passes everything; `legacy` strips a modern
    `MCP-Protocol-Version` header so the SDK answers as a handshake-only server
    would (400 "Missing session ID" to `server/discover`); `modern` answers
    handshake-era requests -32022 naming the versions it serves, like the
    SDK's own modern-only transports.
    """

    def __init__(
        self, app: ASGIApp, family: str, token: Callable[[], str | None] | None, ended: Callable[[str], None]
    ) -> None:
        self.app, self.family, self.token, self.ended = app, family, token, ended

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.token is not None and not self._authorized(headers.get("authorization", "")):
            body = b'{"error":"invalid_token","error_description":"missing or wrong bearer token"}'
            await send_plain(send, 401, body, [_JSON, _CHALLENGE])
            return
        version = headers.get("mcp-protocol-version")
        if self.family == "legacy" and version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"mcp-protocol-version"]}
        elif self.family == "modern" and version not in MODERN_PROTOCOL_VERSIONS:
            await self._refuse_handshake(scope, receive, send)
            return
        session_id = headers.get("mcp-session-id")

        async def watch(message: dict[str, Any]) -> None:
            if (
                session_id
                and message["type"] == "http.response.start"
                and (message["status"] == 404 or scope["method"] == "DELETE")
            ):
                self.ended(session_id)
            await send(message)

        await self.app(scope, receive, watch)

    def _authorized(self, header: str) -> bool:
        expected = self.token() if self.token is not None else None
        scheme, _, presented = header.partition(" ")
        return (
            bool(expected)
            and scheme.lower() == "bearer"
            and hmac.compare_digest(presented.strip().encode(), (expected or "").encode())
        )

    @staticmethod
    async def _refuse_handshake(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await send_plain(send, 405, b"", [(b"allow", b"POST")])
            return
        body = await read_body(receive)
        try:
            requested = json.loads(body).get("params", {}).get("protocolVersion", "")
        except (ValueError, AttributeError):
            requested = ""
        data = {"supported": list(MODERN_PROTOCOL_VERSIONS), "requested": str(requested)}
        error = {"code": -32022, "message": "Unsupported protocol version", "data": data}
        await send_plain(
            send, 400, json.dumps({"jsonrpc": "2.0", "id": request_id(body), "error": error}).encode(), [_JSON]
        )


def host_patterns(extra: Sequence[str]) -> list[str]:
    """Allowed Host values. The SDK matches a value exactly, or `name:*` as `name:` plus any port (never a bare name)."""
    patterns: list[str] = []
    for host in ["127.0.0.1", "localhost", "[::1]", *extra]:
        has_port = "]:" in host if host.startswith("[") else ":" in host
        patterns += [host] if has_port else [host, f"{host}:*"]
    return patterns


def file_reader(path: Path | None, fallback: str | None) -> Callable[[], str | None]:
    """Read `path` afresh on every call (stripped); `fallback` when there is no file or it is empty."""

    def read() -> str | None:
        try:
            return (path.read_text().strip() if path is not None else None) or fallback
        except OSError:
            return fallback

    return read
