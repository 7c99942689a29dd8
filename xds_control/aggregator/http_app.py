"""The HTTP face of the aggregator: the SDK's streamable-HTTP app on `/mcp`, and two thin ASGI layers.

* `JsonBodyLimit`: a request body over the limit gets 413 with a JSON-RPC
  error body (the SDK's own limit answers plain text, which clients report as
  an opaque failure);
* `front` (fastpath.FastPath): plain modern `tools/call` and list requests, and
  a legacy session's call to an unroutable backend, answered before the SDK's stack;
* `JsonAnswers`: a legacy session's request that nothing but its response can
  follow (no `progressToken`) is answered as one `application/json` body
  rather than an SSE stream (the SDK's JSON-response mode, chosen per request;
  about 2 ms of aggregator CPU less for a fast-failed call);
* `SessionTracker`: tells `ClientSessions` when a legacy session's requests
  start and end, and when it ends (DELETE, or 404 for its id).

Host checking (DNS-rebinding protection) stays on. Allowed `Host` values:
Envoy's public listener and the aggregator's own socket as `address:port`,
the localhost spellings (`127.0.0.1`, `localhost`, `[::1]`) on those ports,
and every `aggregator.allowed_hosts` entry (`name:port` exactly; a bare name
with any port). A wildcard bind address (0.0.0.0, ::) adds nothing by
itself: list the names clients use in `aggregator.allowed_hosts`.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from mcp.server import Server
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from xds_control.aggregator.sessions import ClientSessions
from xds_control.config import Config

MCP_PATH = "/mcp"
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024
_LOCAL_NAMES = ("127.0.0.1", "localhost", "[::1]")


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def allowed_hosts(config: Config) -> list[str]:
    """The `Host` header values `/mcp` accepts (see the module docstring)."""
    hosts: list[str] = []
    for host, port in (
        (config.listener.address, config.listener.port),
        (config.aggregator.address, config.aggregator.port),
    ):
        if not _is_wildcard(host):
            hosts.append(f"{_bracketed(host)}:{port}")
        hosts += [f"{name}:{port}" for name in _LOCAL_NAMES]
    for extra in config.aggregator.allowed_hosts:
        has_port = "]:" in extra if extra.startswith("[") else ":" in extra and not extra.count(":") > 1
        hosts += [extra] if has_port else [_bracketed(extra), f"{_bracketed(extra)}:*"]
    return list(dict.fromkeys(hosts))


def transport_security(config: Config) -> TransportSecuritySettings:
    hosts = allowed_hosts(config)
    origins = [f"{scheme}://{host}" for host in hosts for scheme in ("http", "https")]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def _jsonrpc_error(status: int, code: int, message: str, data: Any = None) -> Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return Response(
        json.dumps({"jsonrpc": "2.0", "id": None, "error": error}), status_code=status, media_type="application/json"
    )


class JsonBodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> Response:
        return _jsonrpc_error(
            413, -32600, f"request body too large: the limit is {self.max_bytes} bytes", {"limit": self.max_bytes}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large()(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body.extend(message.get("body", b""))
            if len(body) > self.max_bytes:
                await self._too_large()(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        await self.app(
            scope, replaying({"type": "http.request", "body": bytes(body), "more_body": False}, receive), send
        )


def replaying(first: Message, receive: Receive) -> Receive:
    """`receive` that gives `first` (a message already read) once, then the rest."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return first
        return await receive()

    return replay


_JSON_ANSWER: ContextVar[bool] = ContextVar("xds_control_json_answer", default=False)


class _JsonPerRequest:
    """The SDK transport's `json_response`, decided per request: the transport tests it on every POST
    (`if self.is_json_response_enabled`), so it is true exactly while `JsonAnswers` passes on a request it
    chose. Its message router, a task of its own, always sees false; that is safe because a chosen request
    has no progress token, and progress is the only message the aggregator relates to a client's request."""

    def __bool__(self) -> bool:
        return _JSON_ANSWER.get()


JSON_PER_REQUEST: Any = _JsonPerRequest()


class JsonAnswers:
    """A legacy session's POST carrying one JSON-RPC request without `_meta.progressToken` (and a client that
    accepts `application/json`) is answered as a JSON body: the SSE stream would carry the response alone,
    at the cost of a stream, a writer task and three more writes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if (
            "mcp-session-id" not in headers
            or headers.get("mcp-protocol-version") in MODERN_PROTOCOL_VERSIONS
            or "application/json" not in headers.get("accept", "")
        ):
            await self.app(scope, receive, send)
            return
        first = await receive()
        alone = (
            first["type"] == "http.request" and not first.get("more_body") and _answers_alone(first.get("body", b""))
        )
        token = _JSON_ANSWER.set(alone)
        try:
            await self.app(scope, replaying(first, receive), send)
        finally:
            _JSON_ANSWER.reset(token)


def _answers_alone(body: bytes) -> bool:
    """One JSON-RPC request (not a batch, not a notification) whose answer nothing else precedes."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return False
    if not isinstance(message, dict) or "id" not in message or not isinstance(message.get("method"), str):
        return False
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    return not (isinstance(meta, dict) and "progressToken" in meta)


class SessionTracker:
    def __init__(self, app: ASGIApp, sessions: ClientSessions) -> None:
        self.app = app
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session_id = Headers(scope=scope).get("mcp-session-id") if scope["type"] == "http" else None
        if not session_id:
            await self.app(scope, receive, send)
            return
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.sessions.request_started(session_id)
        try:
            await self.app(scope, receive, watch)
        finally:
            self.sessions.request_ended(session_id)
            if status == 404 or (scope["method"] == "DELETE" and 200 <= status < 300):
                self.sessions.closed(session_id)


def build_asgi_app(
    config: Config,
    server: Server[Any],
    sessions: ClientSessions,
    *,
    health: Callable[[], dict[str, Any]],
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    front: Callable[[ASGIApp], ASGIApp] = lambda app: app,
) -> ASGIApp:
    """The whole ASGI app: `/mcp` (both families) and `GET /healthz` (view version, staleness, routable count).
    `front` wraps the MCP app inside the body limit (the fast path, fastpath.py)."""

    async def healthz(request: Request) -> Response:
        return JSONResponse(health())

    starlette = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        transport_security=transport_security(config),
        max_request_body_size=max_request_bytes + 1,  # ours answers first, as JSON-RPC
        json_response=JSON_PER_REQUEST,  # JsonAnswers picks the requests
        session_idle_timeout=sessions.idle_timeout,
        max_sessions=sessions.max_sessions,
        custom_starlette_routes=[Route("/healthz", healthz, methods=["GET"])],
    )
    return JsonBodyLimit(front(SessionTracker(JsonAnswers(starlette), sessions)), max_request_bytes)
