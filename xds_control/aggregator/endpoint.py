"""`/mcp`: every request classified once, the sessions kept, plain requests answered here, the rest by the SDK.

`Endpoint` is the ASGI app in front of the SDK's streamable-HTTP app. For
each request to `/mcp` it

1. reads the body, at most `max_request_bytes` (beyond: HTTP 413 with a
   JSON-RPC error, where the SDK would answer plain text);
2. classifies it (inbound.classify, pure);
3. keeps the legacy sessions (sessions.SessionTable): admission before an
   `initialize` goes on, each request's start and end, cancellations, the
   session's end (DELETE, gone from the SDK, evicted, expired); a session
   serves only the principal that opened it (another one naming it is told
   what an unknown session id is told); a session's open GET stream is
   registered with the fan-out (get_streams.py);
4. answers a `Plain` request itself: `tools/call` through `Gateway.call`, a
   list from the catalog's memo (list_pages.py); the result shaped, and an
   error mapped, by the SDK's own functions (sdk_compat), so the answer is the
   one the SDK gives. A legacy request is answered only for a session the
   server issued, that completed `initialize` and that the SDK still serves;
   a legacy `tools/call` only for a name the catalog knows;
5. hands everything else to the SDK unchanged, the body replayed: a legacy
   request whose answer nothing else can precede as one JSON body (the SDK's
   JSON-response mode, chosen per request), a rejected request without a
   session id without the id of the session the SDK made for it and dropped.

While spans are exported, an answer made here runs inside the server's
middleware chain as the SDK runs its handlers, so the spans are the SDK
path's; tracing on or off, the same requests are answered here.

A client that goes away cancels its call here (the modern cancellation
signal; the SDK would let a legacy call run to its end unread), and a legacy
`notifications/cancelled` for a call in flight here cancels it; the call is
answered REQUEST_CANCELLED, as the SDK's legacy transport answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from mcp.server import Server, ServerRequestContext
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from xds_control.aggregator import sdk_compat
from xds_control.aggregator.access import CURRENT_PRINCIPAL, FOREIGN_SESSIONS, PRINCIPAL_KEY, principal_of_scope
from xds_control.aggregator.gateway import Gateway
from xds_control.aggregator.get_streams import GetStreams
from xds_control.aggregator.inbound import Plain, Rules, Verdict, classify
from xds_control.aggregator.sessions import Session, SessionTable
from xds_control.aggregator.tracing import passthrough
from xds_control.telemetry.trace_context import exporting

MCP_PATH = "/mcp"
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024
# Requests that may open a legacy session (`initialize`) handed to the SDK at once; the rest wait their turn.
# Opening a session is the dearest thing a caller can ask for nothing: a flood of them, each in flight at once,
# lengthens every turn of the event loop for every other request; in turn, they cost the same and stall nothing.
OPENING_AT_ONCE = 4
_KIND = {"tools/list": "tools", "resources/list": "resources", "resources/templates/list": "resource_templates",
         "prompts/list": "prompts"}  # fmt: skip
_SESSION_HEADER = b"mcp-session-id"
_JSON = (b"content-type", b"application/json")
# The SDK's answer to a second GET stream of a session, word for word.
_CONFLICT = b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Conflict: Only one SSE stream is allowed per session"}}'


class Endpoint:
    def __init__(
        self,
        sdk_app: ASGIApp,
        *,
        gateway: Gateway,
        server: Server[Any],
        sessions: SessionTable,
        rules: Rules,
        get_streams: GetStreams,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sdk_app = sdk_app
        self.get_streams = get_streams  # the fan-out's: the endpoint tells it which GET streams are open
        self.gateway = gateway
        self.server = server
        self.sessions = sessions
        self.rules = rules
        self.max_request_bytes = max_request_bytes
        self._clock = clock
        self._shape = sdk_compat.Shaper(server)
        self._opening_turns = asyncio.Semaphore(OPENING_AT_ONCE)
        self._getting: set[str] = set()  # sessions with a GET (a stream, or one being opened) in progress
        self.answering = True  # False: every request goes to the SDK (tests compare both answers)
        self.answered: Counter[str] = Counter()  # requests answered here, by method

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != MCP_PATH:
            await self.sdk_app(scope, receive, send)
            return
        body = b""
        if scope["method"] == "POST":
            read = await self._body(scope, receive, send)
            if read is None:
                return
            body = read
            receive = _replaying(body, receive)
        principal = self.gateway.access.principal(scope)
        if principal is None:  # auth is on and Envoy verified no identity: the request did not come through it
            await _send_json(
                send,
                401,
                _error_body(None, -32001, "Unauthorized"),
                [(b"www-authenticate", self.gateway.access.challenge)],
            )
            return
        scope[PRINCIPAL_KEY] = principal
        token = CURRENT_PRINCIPAL.set(principal)  # what tool schemas this request may see (Gateway.tool_schema)
        try:
            verdict = classify(scope, body, self.rules)
            if verdict.session_id is None:
                await self._without_session(verdict, scope, receive, send)
            else:
                await self._in_session(verdict, verdict.session_id, scope, receive, send)
        finally:
            CURRENT_PRINCIPAL.reset(token)

    # -- sessions -------------------------------------------------------------------------------

    async def _without_session(self, verdict: Verdict, scope: Scope, receive: Receive, send: Send) -> None:
        if verdict.plain is not None and self.answering:
            await self._answer(verdict.plain, None, scope, receive, send)
            return
        if not verdict.opens:
            await self._to_sdk_without_session(verdict, False, scope, receive, send)
            return
        async with self._opening_turns:
            admitted, evicted = self.sessions.admit()
            for session_id in evicted:
                await sdk_compat.end_session(self.server, session_id)
            if not admitted:
                await _send_json(send, 503, _error_body(None, -32603, "Too many open sessions"))
                return
            await self._to_sdk_without_session(verdict, admitted, scope, receive, send)

    async def _to_sdk_without_session(
        self, verdict: Verdict, admitted: bool, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """The SDK answers a request that carried no session id; a session it issued is kept (`admitted`: the
        place `admit` held for it), a session it made for a request it refused is dropped from the answer."""
        issued: list[str] = []

        def opened(session_id: str) -> None:  # before the client sees the id: its next request finds the session
            issued.append(session_id)
            self.sessions.opened(session_id, self._clock(), admitted=admitted, owner=principal_of_scope(scope).owner)
            if verdict.answers_back and (known := self.sessions.get(session_id)) is not None:
                known.answers_back = True

        try:
            await self._to_sdk(scope, receive, send, on_issued=opened)
        finally:
            if admitted and not issued:
                self.sessions.opened(None, self._clock())

    async def _in_session(self, verdict: Verdict, session_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        known = self.sessions.get(session_id)
        if known is not None and known.owner != principal_of_scope(scope).owner:
            FOREIGN_SESSIONS.inc()  # another principal's session: answered as the SDK answers an unknown one
            await _send_json(send, 404, _error_body(None, -32600, "Session not found"))
            return
        getting = scope["method"] == "GET"
        if getting and session_id in self._getting:  # the SDK checks this only once its stream runs: two at once pass
            await _send_json(send, 409, _CONFLICT, [(_SESSION_HEADER, session_id.encode("latin-1"))])
            return
        session = self.sessions.started(session_id, self._clock(), settles=verdict.settles, stream=getting)
        if session is None:  # not a session this server issued: the SDK answers (404), nothing is kept
            await self._to_sdk(scope, receive, send, json_answer=verdict.json_answer)
            return
        status = 0
        try:
            for request_id in verdict.cancels:
                call = session.calls.get(request_id)
                if call is not None and not call.done():
                    call.cancel()
            plain = verdict.plain
            if (
                plain is not None
                and self.answering
                and not session.answers_back
                and self._answerable(plain, session, scope)
            ):
                await self._answer(plain, session, scope, receive, send)
                return
            json_answer = verdict.json_answer and not session.answers_back  # a backend may ask before the answer
            if getting:
                self._getting.add(session_id)
            stream_of = session_id if getting else None
            status = await self._to_sdk(scope, receive, send, json_answer=json_answer, stream_of=stream_of)
        finally:
            if getting:
                self._getting.discard(session_id)
            self.sessions.ended(session_id, self._clock())
        ended = scope["method"] == "DELETE" and 200 <= status < 300
        if ended or (status == 404 and not sdk_compat.session_live(self.server, session_id)):
            self.sessions.closed(session_id)

    def _answerable(self, plain: Plain, session: Session, scope: Scope) -> bool:
        sdk = session.sdk
        if sdk is None or sdk.client_params is None or not sdk_compat.session_live(self.server, session.id):
            return False
        if plain.method == "tools/call":
            catalog = self.gateway.catalog
            return principal_of_scope(scope).grant.allows("tools", plain.name) and (
                catalog.route("tools", plain.name) is not None
                or catalog.unavailable_owner("tools", plain.name) is not None
            )  # a name the principal may not use goes to the SDK, as an unknown one does
        return sdk_compat.list_params_valid(plain.method, sdk.protocol_version, plain.params)

    async def sweep(self) -> None:
        """End the sessions past their timeout, here and in the SDK."""
        for session_id in self.sessions.sweep(self._clock()):
            await sdk_compat.end_session(self.server, session_id)

    async def _to_sdk(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        json_answer: bool = False,
        on_issued: Callable[[str], None] | None = None,
        stream_of: str | None = None,
    ) -> int:
        """The SDK answers; its status. `on_issued`: the request carried no session id; called with the id of a
        session the SDK issued in its answer, before the answer goes out. `stream_of`: the request is that
        session's GET; once its stream is open, `get_streams` writes events onto it too, until its end."""
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if stream_of is not None and message["type"] == "http.response.body" and not message.get("more_body"):
                self.get_streams.ended(stream_of, send)  # nothing may follow the stream's last message
            if message["type"] == "http.response.start":
                status = message["status"]
                if on_issued is not None:
                    headers = message.get("headers") or []
                    if status >= 400:  # a session the SDK made for a request it refused, and dropped
                        message = {**message, "headers": [(k, v) for k, v in headers if k.lower() != _SESSION_HEADER]}
                    elif status < 300:
                        issued = next((v.decode("latin-1") for k, v in headers if k.lower() == _SESSION_HEADER), None)
                        if issued is not None:
                            on_issued(issued)
            await send(message)
            if stream_of is not None and message["type"] == "http.response.start" and status == 200:
                self.get_streams.opened(stream_of, send)

        try:
            with sdk_compat.json_answers(json_answer):
                await self.sdk_app(scope, receive, watch)
        finally:
            if stream_of is not None:
                self.get_streams.ended(stream_of, send)
        return status

    # -- answers --------------------------------------------------------------------------------

    async def _answer(self, plain: Plain, session: Session | None, scope: Scope, receive: Receive, send: Send) -> None:
        self.answered[plain.method] += 1
        version = plain.version if session is None else session.sdk.protocol_version
        if plain.method != "tools/call":
            status, data = await self._list(plain, version, session, scope)
        else:
            routed = asyncio.ensure_future(self._run(plain, version, session, scope, self._call))
            key = sdk_compat.request_key(plain.id)
            if session is not None:
                session.calls[key] = routed  # a repeated id replaces the older entry, as the SDK's dispatcher does
            try:
                gone = await _until_done_or_gone(routed, receive)
            finally:
                if session is not None and session.calls.get(key) is routed:
                    del session.calls[key]
            if gone:  # nobody to answer
                return
            status, data = self._outcome(plain, routed)
        headers = [(_SESSION_HEADER, session.id.encode("latin-1"))] if session is not None else []
        await _send_json(send, status, data, headers)

    async def _run(self, plain: Plain, version: str, session: Session | None, scope: Scope, inner: Any) -> Any:
        """`inner(plain, version, session, scope)`, inside the server's middleware chain while spans are exported."""
        if not exporting():
            return await inner(plain, version, session, scope)
        ctx = ServerRequestContext(
            session=session.sdk if session is not None else None,  # type: ignore[arg-type]
            lifespan_context=None,
            protocol_version=version,
            method=plain.method,
            params=plain.params,
            request_id=plain.id,
            meta=plain.params.get("_meta"),  # type: ignore[arg-type]
            request=Request(scope),
        )
        return await sdk_compat.through_middleware(self.server, ctx, lambda _: inner(plain, version, session, scope))

    async def _call(self, plain: Plain, version: str, session: Session | None, scope: Scope) -> dict[str, Any]:
        params = plain.params
        trace_context = None
        if not exporting():
            headers = Headers(scope=scope)
            trace_context = passthrough(
                params.get("_meta") or {}, {k: headers[k] for k in ("traceparent", "tracestate") if k in headers}
            )
        result = await self.gateway.call(
            "tools/call", "tools", plain.name, params, client_key=session.id if session is not None else None,
            arguments=params.get("arguments"), trace_context=trace_context, principal=principal_of_scope(scope),
        )  # fmt: skip
        return self._shape(plain.method, version, result, sieved=getattr(result, "version", None) == version)

    def _outcome(self, plain: Plain, routed: asyncio.Future[Any]) -> tuple[int, bytes]:
        if routed.cancelled():  # by the client's notifications/cancelled: the legacy wire's answer
            return _error_answer(plain, sdk_compat.CANCELLED)
        if (exc := routed.exception()) is not None:
            return _error_answer(plain, sdk_compat.error_data(exc, modern=plain.modern))
        return 200, _result_body(plain.id, _dumps(routed.result()))

    async def _list(self, plain: Plain, version: str, session: Session | None, scope: Scope) -> tuple[int, bytes]:
        try:
            page = await self._run(plain, version, session, scope, self._page)
        except Exception as exc:
            return _error_answer(plain, sdk_compat.error_data(exc, modern=plain.modern))
        return 200, _result_body(plain.id, page)

    async def _page(self, plain: Plain, version: str, session: Session | None, scope: Scope) -> bytes:
        catalog = self.gateway.catalog
        cursor = plain.params.get("cursor")
        principal = principal_of_scope(scope)
        key = (principal.grant.key, plain.method, version, self.gateway.page_size, cursor)
        page = catalog.pages.get(key)
        if page is None:
            result = self.gateway.list_page(_KIND[plain.method], cursor, catalog=catalog, principal=principal)  # type: ignore[arg-type]
            page = _dumps(self._shape(plain.method, version, result))
            catalog.pages.keep(key, page)
        return page

    async def _body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole request body, or None once a body over the limit was answered 413."""
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_request_bytes:
            await self._too_large(send)
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_request_bytes:
                await self._too_large(send)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _too_large(self, send: Send) -> None:
        limit = self.max_request_bytes
        message = f"request body too large: the limit is {limit} bytes"
        await _send_json(send, 413, _error_body(None, -32600, message, {"limit": limit}))


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _result_body(request_id: int | str, result: bytes) -> bytes:
    return b'{"jsonrpc":"2.0","id":%s,"result":%s}' % (_dumps(request_id), result)


def _error_answer(plain: Plain, error: Any) -> tuple[int, bytes]:
    """(HTTP status, body) of a JSON-RPC error answer: the modern entry's status table, 200 on the legacy wire."""
    wire = error.model_dump(mode="json", by_alias=True, exclude_none=True)
    status = sdk_compat.http_status(error.code) if plain.modern else 200
    return status, _dumps({"jsonrpc": "2.0", "id": plain.id, "error": wire})


def _error_body(request_id: int | str | None, code: int, message: str, data: Any = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return _dumps({"jsonrpc": "2.0", "id": request_id, "error": error})


async def _send_json(send: Send, status: int, data: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    start = [_JSON, *(headers or []), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": data})


def _replaying(body: bytes, receive: Receive) -> Receive:
    """`receive` that gives the body already read once, then what the server sends next (the disconnect)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _until_done_or_gone(routed: asyncio.Future[Any], receive: Receive) -> bool:
    """Wait for the routed call; True if the client went away first (the call is cancelled then, as it is if
    this task is cancelled)."""
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((routed, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        went = gone.done() and not gone.cancelled()
        if not routed.done():
            routed.cancel()
            with contextlib.suppress(BaseException):
                await routed
        gone.cancel()
    return went


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
