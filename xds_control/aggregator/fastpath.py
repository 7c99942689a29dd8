"""The hot path: a plain `tools/call` (2026-07-28, or of a legacy session) answered in front of the SDK's HTTP stack.

A modern request is a single exchange (one POST, no session), so the common
case needs none of the SDK's per-request machinery (a memory stream, a task
group, a dispatch context, a server runner, the middleware chain), which cost
about a third of the aggregator's CPU per call. `FastPath` takes a request
only when it is the plain case, and hands everything else to the SDK app
unchanged (the body replayed):

    POST /mcp, `MCP-Protocol-Version` modern, no `Mcp-Session-Id`; the SDK's own
    checks pass (transport security: Content-Type, Host, Origin; Accept; routing
    headers not duplicated; the inbound ladder: envelope, header/body agreement,
    supported version; `Mcp-Param-*` headers); the body is one JSON-RPC request
    `tools/call` whose params hold only `name`, `arguments` (an object) and
    `_meta`; no `progressToken` (progress needs the SDK's event stream); and
    this process exports no spans (then the SDK's server span is wanted).

The answer is built as the SDK builds it: the result sieved by the protocol
version's schema (once: a modern backend's result of the client's version was
sieved on its way in, modern_request.Sieved), `resultType`, the server-info stamp; errors through the
SDK's exception-to-wire mapping with its HTTP status table. A client that
disconnects cancels the call (the modern cancellation signal).

A legacy session's plain `tools/call` of a known tool, routable or not, is
answered here too (legacy_calls.py: the SDK's legacy path costs about 1.6 ms
of CPU per request before the handler runs). The conditions: the session is
one the SDK has (it reached the MCP server, sessions.ClientSessions),
initialized, and its SDK transport is live with the idle fields
legacy_calls.SdkTransports expects; the `MCP-Protocol-Version` header is a
handshake version or absent (the SDK's own era routing); no `user` in the
scope; the same transport, Accept and body checks as above, `_meta` optional,
no `progressToken`. The request counts for the session's idle timer in the
SDK and in the mirror, as it would through the SDK; `notifications/cancelled`
for it cancels it.

A plain 2026-07-28 list request (`tools/list`, `resources/list`,
`resources/templates/list`, `prompts/list`: the checks above, params only
`cursor` and `_meta`, valid for the SDK) goes to `list_answers.KeptListAnswers`:
the SDK answers it once per catalog, and repeats are answered from that answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from mcp.server import Server
from mcp.server.runner import modern_error_data
from mcp.server.streamable_http import check_accept_headers
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
    validate_mcp_param_headers,
)
from mcp_types import CORE_RESULT_TYPES, INTERNAL_ERROR, SERVER_INFO_META_KEY
from mcp_types import methods as mcp_methods
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from xds_control.aggregator import legacy_calls
from xds_control.aggregator.gateway import Gateway
from xds_control.aggregator.http_app import replaying
from xds_control.aggregator.list_answers import KeptListAnswers
from xds_control.aggregator.list_cache import LIST_METHODS
from xds_control.aggregator.modern_request import Sieved
from xds_control.aggregator.sessions import ClientSessions
from xds_control.aggregator.tracing import exporting, passthrough

_CALL_KEYS = frozenset({"name", "arguments", "_meta"})
_LIST_KEYS = frozenset({"cursor", "_meta"})
_VERSION_HEADER = b"mcp-protocol-version"
_SESSION_HEADER = b"mcp-session-id"


class _Call:
    """A request the fast path takes: a `tools/call` (`name` its tool) or a list request."""

    __slots__ = ("body", "id", "method", "name", "params", "request", "version")

    def __init__(
        self,
        request: Request,
        request_id: int | str,
        method: str,
        params: dict[str, Any],
        version: str,
        body: dict[str, Any],
    ) -> None:
        self.request, self.id, self.method, self.params, self.version, self.body = (
            request,
            request_id,
            method,
            params,
            version,
            body,
        )
        self.name = params.get("name", "")


class FastPath:
    def __init__(
        self, app: ASGIApp, gateway: Gateway, server: Server[Any], security: TransportSecuritySettings, path: str, *,
        sessions: ClientSessions | None = None, enabled: Callable[[], bool] = lambda: not exporting(),
    ) -> None:  # fmt: skip
        self.app = app
        self.sessions = sessions
        self.gateway = gateway
        self.server = server
        self.security = TransportSecurityMiddleware(security)
        self.path = path
        self.enabled = enabled
        self.taken = 0  # tools/call requests answered here (tests and the benchmark check the path is used)
        self.lists = KeptListAnswers(app, lambda: gateway.catalog)
        self.transports = legacy_calls.SdkTransports(self._session_manager)
        self.in_flight = legacy_calls.InFlight()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path or not self.enabled():
            await self.app(scope, receive, send)
            return
        version = next((v for k, v in scope["headers"] if k == _VERSION_HEADER), b"").decode("latin-1")
        session_id = next((v for k, v in scope["headers"] if k == _SESSION_HEADER), b"").decode("latin-1")
        modern = version in MODERN_PROTOCOL_VERSIONS
        if session_id and not modern:
            await self._legacy(scope, receive, send, session_id, version)
            return
        if not modern or session_id:
            await self.app(scope, receive, send)
            return
        first = await receive()
        call = (
            await self._plain_call(scope, first, version)
            if first["type"] == "http.request" and not first.get("more_body")
            else None
        )
        if call is None:
            await self.app(scope, replaying(first, receive), send)
        elif call.method != "tools/call":
            await self.lists.serve(
                call.id, call.method, call.version, call.params, scope, replaying(first, receive), send
            )
        else:
            self.taken += 1
            await self._serve(call, scope, receive, send)

    async def _legacy(self, scope: Scope, receive: Receive, send: Send, session_id: str, version: str) -> None:
        """A legacy session's plain call of a known tool, answered here (legacy_calls.py); all else to the SDK."""
        session = self.sessions.session(session_id) if self.sessions is not None else None
        plain = (
            session is not None
            and session.client_params is not None
            and not (version and version not in HANDSHAKE_PROTOCOL_VERSIONS)
            and "user" not in scope
        )
        transport = self.transports.of(session_id) if plain else None
        if session is None or transport is None:
            await self.app(scope, receive, send)
            return
        first = await receive()
        whole = first["type"] == "http.request" and not first.get("more_body")
        if whole and self.in_flight.any_in(session_id):
            with contextlib.suppress(ValueError, RecursionError):
                self.in_flight.cancel_from(session_id, json.loads(first.get("body", b"")))
        call = await self._request(scope, first, version, meta_required=False) if whole else None
        catalog = self.gateway.catalog
        if (
            call is None
            or call.method != "tools/call"
            or (catalog.route("tools", call.name) is None and catalog.unavailable_owner("tools", call.name) is None)
        ):
            await self.app(scope, replaying(first, receive), send)
            return
        self.taken += 1
        assert self.sessions is not None
        routed = self._route(call, scope, session_id)
        with (
            legacy_calls.activity(transport, self.sessions, session_id),
            self.in_flight.tracking(session_id, call.id, routed),
        ):
            went = await _until_done_or_gone(routed, receive)
            cancelled = routed in self.in_flight.cancelled
        if not went:  # else the client went away: nobody to answer
            await _send_json(
                send,
                200,
                legacy_calls.answer(call.id, session, routed, cancelled),
                [(b"mcp-session-id", session_id.encode("latin-1"))],
            )

    def _route(self, call: _Call, scope: Scope, client_key: str | None) -> asyncio.Future[Any]:
        """`Gateway.call` for a plain tools/call, as a future; the client's trace context passed through."""
        headers = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope["headers"]
            if k in (b"traceparent", b"tracestate")
        }
        return asyncio.ensure_future(
            self.gateway.call(
                "tools/call", "tools", call.name, call.params, client_key=client_key, arguments=call.params.get("arguments"),
                trace_context=passthrough(call.params.get("_meta") or {}, headers),
            )
        )  # fmt: skip

    def _session_manager(self) -> StreamableHTTPSessionManager | None:
        try:
            return self.server.session_manager
        except RuntimeError:  # the SDK's app is not built yet
            return None

    async def _request(self, scope: Scope, message: Message, version: str, *, meta_required: bool) -> _Call | None:
        """The request, if it is one plain `tools/call` or list request that passes the SDK's transport checks."""
        request = Request(scope)
        if await self.security.validate_request(request, is_post=True) is not None:
            return None
        if (
            check_accept_headers(request) != (True, True)
            or find_duplicated_routing_header(request.headers.items()) is not None
        ):
            return None
        try:
            body = json.loads(message.get("body", b""))
        except (ValueError, RecursionError):
            return None
        if (
            not isinstance(body, dict)
            or body.get("jsonrpc") != "2.0"
            or body.keys() - {"jsonrpc", "id", "method", "params"}
        ):
            return None
        request_id, method, params = body.get("id"), body.get("method"), body.get("params")
        if isinstance(request_id, bool) or not isinstance(request_id, int | str) or not isinstance(params, dict):
            return None
        meta = params.get("_meta", None if meta_required else {})
        if not isinstance(meta, dict) or "progressToken" in meta:
            return None
        if method == "tools/call":
            name, arguments = params.get("name"), params.get("arguments")
            if (
                params.keys() - _CALL_KEYS
                or not isinstance(name, str)
                or not (arguments is None or isinstance(arguments, dict))
            ):
                return None
        elif method in LIST_METHODS:
            if params.keys() - _LIST_KEYS or not (
                params.get("cursor") is None or isinstance(params.get("cursor"), str)
            ):
                return None
        else:
            return None
        return _Call(request, request_id, method, params, version, body)

    async def _plain_call(self, scope: Scope, message: Message, version: str) -> _Call | None:
        """The request, if it is the plain modern case (see the module docstring); None hands it to the SDK."""
        call = await self._request(scope, message, version, meta_required=True)
        if call is None:
            return None
        request = call.request
        if isinstance(classify_inbound_request(call.body, headers=dict(request.headers)), InboundLadderRejection):
            return None
        if call.method != "tools/call":
            return call if self.lists.valid(call.method, version, call.params) else None
        schema = self.gateway.tool_schema(call.name)
        if (
            schema is not None
            and validate_mcp_param_headers(schema, call.params.get("arguments") or {}, request.headers) is not None
        ):
            return None
        return call

    async def _serve(self, call: _Call, scope: Scope, receive: Receive, send: Send) -> None:
        routed = self._route(call, scope, None)
        if not await _until_done_or_gone(routed, receive):
            await _send_json(send, *self._answer(call, routed))

    def _answer(self, call: _Call, routed: asyncio.Future[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON-RPC message), as the SDK's modern entry shapes them."""
        exc = routed.exception()
        if exc is None:
            try:
                return 200, {
                    "jsonrpc": "2.0",
                    "id": call.id,
                    "result": self._wire_result(call.version, routed.result()),
                }
            except MCPError as invalid:
                exc = invalid
        error = modern_error_data(exc) if isinstance(exc, Exception) else modern_error_data(RuntimeError())
        wire = error.model_dump(mode="json", by_alias=True, exclude_none=True)
        return ERROR_CODE_HTTP_STATUS.get(error.code, 200), {"jsonrpc": "2.0", "id": call.id, "error": wire}

    def _wire_result(self, version: str, result: Mapping[str, Any]) -> dict[str, Any]:
        """The SDK runner's result shaping: the version's schema sieve (core result types), `resultType`, serverInfo."""
        dumped = dict(result)
        result_type = dumped.get("resultType")
        already = isinstance(result, Sieved) and result.version == version  # shaped by this version upstream
        if not already and (not isinstance(result_type, str) or result_type in CORE_RESULT_TYPES):
            try:
                dumped = mcp_methods.serialize_server_result("tools/call", version, dumped)
            except ValidationError:
                raise MCPError(INTERNAL_ERROR, "Handler returned an invalid result") from None
        dumped.setdefault("resultType", "complete")
        meta = dumped.get("_meta")
        if meta is None or (isinstance(meta, dict) and meta.get(SERVER_INFO_META_KEY) is None):
            dumped["_meta"] = {**(meta or {}), SERVER_INFO_META_KEY: self.server.server_info_stamp}
        return dumped


async def _send_json(
    send: Send, status: int, message: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = json.dumps(message, separators=(",", ":")).encode()
    start = [(b"content-type", b"application/json"), *(headers or []), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": data})


async def _until_done_or_gone(routed: asyncio.Future[Any], receive: Receive) -> bool:
    """Wait for the routed call; True if the client went away first (the call is cancelled then, as it is if
    this task is cancelled)."""
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((routed, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        went = gone.done() and not gone.cancelled()
        if not routed.done():  # the client went away (or we are cancelled): cancel the backend request
            routed.cancel()
            with contextlib.suppress(BaseException):
                await routed
        gone.cancel()
    return went


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
