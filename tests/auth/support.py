"""Helpers of the auth tests: issuers with real keys (RS256, ES256), a JWKS served over HTTP, raw requests."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2

from xds_control.auth import devtoken
from xds_control.auth.devtoken import Alg, SigningKey

ISSUER_FILE = "https://idp-file.test"
ISSUER_URL = "https://idp-url.test"


class Issuer:
    """One issuer: its signing key and how it mints tokens for the gateway's resource."""

    def __init__(self, issuer: str, alg: Alg) -> None:
        self.issuer = issuer
        self.key: SigningKey = devtoken.new_key(alg)

    def jwks(self) -> str:
        return devtoken.jwks(self.key)

    def token(self, audience: str, *, sub: str = "alice", key: SigningKey | None = None, **claims: Any) -> str:
        body = devtoken.claims(sub=sub, audience=audience, issuer=self.issuer)
        body.update(claims)
        return (key or self.key).sign(body)


class JwksServer:
    """A JWKS document over plain HTTP on a free port (Envoy fetches it through the cluster the control plane
    makes); `document` may be replaced at any time."""

    def __init__(self, document: str) -> None:
        self.document = document
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                body = outer.document.encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @contextlib.contextmanager
    def running(self) -> Iterator[JwksServer]:
        self._thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unsigned_token(claims: dict[str, Any], header: dict[str, Any]) -> str:
    """A token with the given header, signed with nothing (alg none) or an empty signature."""
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}."


def payload_header(claims: dict[str, Any]) -> str:
    """What Envoy forwards: the payload as base64url JSON (a forger sends the same)."""
    return b64(json.dumps(claims).encode())


INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


async def post(url: str, headers: dict[str, str] | None = None, body: Any = INIT) -> httpx2.Response:
    async with httpx2.AsyncClient(trust_env=False, timeout=30) as http:
        return await http.post(url, content=json.dumps(body), headers={**HEADERS, **(headers or {})})


def now() -> int:
    return int(time.time())
