"""A legacy session's plain `tools/call`, answered in front of the SDK's session transport (fastpath.py decides
which requests are plain).

The SDK's legacy path costs about 1.6 ms of aggregator CPU per request before
the handler runs (a memory stream per request, the session's message loop, the
dispatcher, the middleware chain): half of what a routed legacy call costs
(bench/aggregator/calls.py). What that path does for a plain call, done here:

* the handler's work: `Gateway.call` with the session as the client key (so a
  legacy backend gets this client's own backend session), the client's trace
  context passed through;
* the answer: the result sieved by the session's negotiated version's schema
  (no `resultType`, no serverInfo stamp on this era's wire); an `MCPError` as
  its error, a pydantic `ValidationError` as INVALID_PARAMS, anything else as
  the SDK's catch-all (code 0, the message), in a 200 `application/json` body
  with the session's id (the transport's JSON-response mode, http_app.JsonAnswers);
* the session's idle timer: the SDK transport's own in-flight bookkeeping
  (`StreamableHTTPServerTransport.handle_request`: a request in flight holds
  the session, the countdown restarts when the last one ends), and the
  session mirror's (sessions.ClientSessions), so both see the request. These
  are private fields of the SDK's transport: `SdkTransports.of` checks they
  are there, with the types this code expects, and returns None if not (the
  request then goes to the SDK, so a change in the SDK costs speed, not
  correctness; tests/aggregator/test_legacy_calls.py fails on it);
* cancellation: `notifications/cancelled` (alone or in a batch) for a call in flight here cancels it
  and the call is answered REQUEST_CANCELLED, as the SDK's transport answers a
  cancelled request on this era's wire; the notification still goes on to the
  SDK (which does not know the id and ignores it). A client that goes away
  cancels the call too (the SDK would let it run to its end unread).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import anyio
from mcp.server.session import ServerSession
from mcp.server.streamable_http import REQUEST_CANCELLED, StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.dispatcher import coerce_request_id
from mcp.shared.jsonrpc_dispatcher import cancelled_request_id_from_params
from mcp_types import INTERNAL_ERROR, ErrorData
from mcp_types import methods as mcp_methods
from pydantic import ValidationError

from xds_control.aggregator import sdk_compat
from xds_control.aggregator.sessions import ClientSessions

log = logging.getLogger(__name__)

RequestId = str | int


class SdkTransports:
    """The SDK's transport of a legacy session, for its idle bookkeeping (see the module docstring)."""

    def __init__(self, manager: Callable[[], StreamableHTTPSessionManager | None]) -> None:
        self._manager = manager

    def of(self, session_id: str) -> StreamableHTTPServerTransport | None:
        """The live transport of `session_id` whose idle fields are as expected, else None."""
        manager = self._manager()
        instances = getattr(manager, "_server_instances", None)
        transport = instances.get(session_id) if isinstance(instances, dict) else None
        if not isinstance(transport, StreamableHTTPServerTransport) or transport.is_terminated:
            return None
        scope, timeout, in_flight = (
            getattr(transport, "idle_scope", None),
            getattr(transport, "_idle_timeout", None),
            getattr(transport, "_requests_in_flight", None),
        )
        if (
            not isinstance(in_flight, int)
            or (scope is None) != (timeout is None)
            or (scope is not None and not isinstance(scope, anyio.CancelScope))
        ):
            return None
        if scope is not None and scope.cancel_called:  # idle already: the SDK is ending this session
            return None
        return transport


@contextlib.contextmanager
def activity(transport: StreamableHTTPServerTransport, sessions: ClientSessions, session_id: str) -> Iterator[None]:
    """A request in flight for the SDK's idle timer (as its `handle_request` counts one) and the session mirror."""
    scope = transport.idle_scope
    sessions.request_started(session_id)
    if scope is not None:
        transport._requests_in_flight += 1
        scope.deadline = math.inf
    try:
        yield
    finally:
        if scope is not None:
            transport._requests_in_flight -= 1
            if not transport._requests_in_flight:
                scope.deadline = anyio.current_time() + transport._idle_timeout
        sessions.request_ended(session_id)


class InFlight:
    """Legacy calls in flight here, by (session, request id), for `notifications/cancelled`."""

    def __init__(self) -> None:
        self._calls: dict[tuple[str, RequestId], asyncio.Future[Any]] = {}
        self._per_session: dict[str, int] = {}
        self.cancelled: set[asyncio.Future[Any]] = set()

    @contextlib.contextmanager
    def tracking(self, session_id: str, request_id: RequestId, routed: asyncio.Future[Any]) -> Iterator[None]:
        key = (session_id, coerce_request_id(request_id))
        self._calls[key] = routed  # a duplicate id replaces the older entry, as the SDK's dispatcher does
        self._per_session[session_id] = self._per_session.get(session_id, 0) + 1
        try:
            yield
        finally:
            if self._calls.get(key) is routed:
                del self._calls[key]
            left = self._per_session[session_id] - 1
            if left:
                self._per_session[session_id] = left
            else:
                del self._per_session[session_id]
            self.cancelled.discard(routed)

    def any_in(self, session_id: str) -> bool:
        return session_id in self._per_session

    def cancel_from(self, session_id: str, message: Any) -> None:
        """If `message` (or, in a batch, any of them) is a `notifications/cancelled` for a call of this session in
        flight here, cancel that call."""
        if isinstance(message, list):
            for item in message:
                self.cancel_from(session_id, item)
            return
        if not isinstance(message, dict) or message.get("method") != "notifications/cancelled" or "id" in message:
            return
        params = message.get("params")
        request_id = cancelled_request_id_from_params(params if isinstance(params, dict) else None)
        routed = self._calls.get((session_id, coerce_request_id(request_id))) if request_id is not None else None
        if routed is not None and not routed.done():
            self.cancelled.add(routed)
            routed.cancel()


def answer(
    request_id: RequestId, session: ServerSession, routed: asyncio.Future[Any], cancelled: bool
) -> dict[str, Any]:
    """The JSON-RPC message the SDK's legacy path answers with (see the module docstring)."""
    if cancelled:
        error = ErrorData(code=REQUEST_CANCELLED, message="Request cancelled")
    else:
        exc = routed.exception()
        if exc is None:
            try:
                return {
                    "jsonrpc": "2.0",
                    "id": request_id,
                    "result": mcp_methods.serialize_server_result(
                        "tools/call", session.protocol_version, dict(routed.result())
                    ),
                }
            except ValidationError:
                log.error(
                    "a tools/call result does not match the client's protocol version",
                    extra={"version": session.protocol_version},
                )
                error = ErrorData(code=INTERNAL_ERROR, message="Handler returned an invalid result")
        else:
            error = sdk_compat.error_data(exc, modern=False)
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "error": error.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
