"""The backend-to-client direction of legacy sessions: a backend's requests and notifications sent to its client.

The decisions are relay.py's; this shell gives each backend `ClientSession`
(upstream.py) the callbacks that carry them out:

* `sampling/createMessage`, `elicitation/create`, `roots/list`: offered to a
  backend only when the client declared them (relay.offer); each is sent to
  the client on the stream of its call in flight (relay.CallBook.target) or
  its standalone stream, with the SDK's own request id on that session, and
  the client's answer (result or error) returned to the backend. A request
  the client cannot take (not offered, over the pending cap, no way to reach
  the client) is refused at once with an error, so the backend takes its
  fallback; a request unanswered within what is left of its call
  (relay.time_left) is answered REQUEST_TIMEOUT and cancelled on the client side. A backend's
  `notifications/cancelled` cancels the relayed request, and the SDK tells
  the client; a client's cancelled call cancels the backend request (upstream.py).
* `notifications/message`: to the client, filtered by the level it set
  (relay.LogLevels); the level is set on each of its backend sessions.
  `notifications/elicitation/complete` (a URL elicitation done): to the client.
* `notifications/*/list_changed` (on a legacy session, or a modern backend's
  listen stream: backend_listen.py): the backend's catalog is refreshed at
  once (`refresh(backend)`, through relay.RefreshGate); clients hear the change
  from the catalog as every other change.

Progress needs nothing here: the client's token stays on its request, the
backend's on the backend request (upstream.py passes a callback).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import mcp_types as types
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

from xds_control.aggregator import sdk_compat
from xds_control.aggregator.relay import (
    NOT_SUPPORTED,
    RELAYED_REQUESTS,
    CallBook,
    Caller,
    LoggingLevel,
    LogLevels,
    Offer,
    RefreshGate,
    passes,
    refusal,
    time_left,
)

log = logging.getLogger(__name__)

Standalone = Callable[[str], Any]  # client session key -> the SDK's session object (its standalone stream), or None
Refresh = Callable[[str], Any]  # backend name -> awaitable refresh of its catalog
MAX_INPUT_ROUNDS = 8
MAX_INPUT_REQUESTS = 16
_LIST_CHANGED = (types.ToolListChangedNotification, types.PromptListChangedNotification,
                 types.ResourceListChangedNotification)  # fmt: skip


class Backchannel:
    def __init__(
        self,
        *,
        call_timeout: float,
        standalone: Standalone = lambda key: None,
        refresh: Refresh | None = None,
        book: CallBook | None = None,
        levels: LogLevels | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.call_timeout = call_timeout
        self.standalone = standalone
        self.refresh = refresh
        self.book = book or CallBook()
        self.levels = levels if levels is not None else LogLevels()  # an empty one is falsy
        self.gate = RefreshGate()
        self.relayed: dict[str, int] = {}  # outcomes of relayed requests (tests, debugging)
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._minted = 0

    # -- calls --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def calling(self, upstream: tuple[str, str], caller: Caller | None) -> Iterator[None]:
        """While a client's call is in flight on a backend session: its stream takes the backend's requests."""
        if caller is None:
            yield
            return
        token = self.book.begin(upstream, caller)
        try:
            yield
        finally:
            self.book.end(upstream, token)

    def session_options(self, backend: str, key: str, offered: Offer) -> dict[str, Any]:
        """The `ClientSession` keyword arguments of a backend session opened for client session `key`."""
        upstream = (backend, key)

        async def relay(method: str, request: BaseModel, ctx: Any) -> Any:
            return await self._relay(upstream, key, offered, method, request)

        options: dict[str, Any] = {
            "logging_callback": lambda params: self._log(upstream, key, params),
            "message_handler": lambda message: self._notified(upstream, key, message),
        }
        if offered.sampling is not None:
            options["sampling_callback"] = lambda ctx, params: relay(
                "sampling/createMessage", types.CreateMessageRequest(params=params), ctx
            )
            options["sampling_capabilities"] = offered.sampling
        if offered.elicitation is not None:
            options["elicitation_callback"] = lambda ctx, params: relay(
                "elicitation/create", types.ElicitRequest(params=params), ctx
            )
        if offered.roots:
            options["list_roots_callback"] = lambda ctx: relay("roots/list", types.ListRootsRequest(), ctx)
        return options

    async def _relay(self, upstream: tuple[str, str], key: str, offered: Offer, method: str, request: BaseModel) -> Any:
        data = request.model_dump(by_alias=True, mode="json", exclude_none=True)
        return await self._ask(key, offered, method, data, self.book.target(upstream))

    async def input_required(
        self, raw: dict[str, Any], caller: Caller, resend: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        """A 2026-07-28 backend's `InputRequiredResult` for a legacy client: each embedded request goes to the
        client as a server-to-client request (as `_relay`), and the call is sent again with the answers and the
        backend's `requestState`, for at most `MAX_INPUT_ROUNDS` rounds of at most `MAX_INPUT_REQUESTS` each."""
        for _ in range(MAX_INPUT_ROUNDS):
            requests = raw.get("inputRequests") or {}
            if not isinstance(requests, dict) or len(requests) > MAX_INPUT_REQUESTS:
                raise _input_error("too many input requests in one round")
            responses: dict[str, Any] = {}
            for name, request in requests.items():
                method = request.get("method") if isinstance(request, dict) else None
                if method not in RELAYED_REQUESTS:
                    raise _input_error("an input request of an unknown kind")
                answer = await self._ask(caller.key, caller.offer, str(method), request, caller)
                if isinstance(answer, types.ErrorData):
                    raise MCPError(code=answer.code, message=answer.message, data=answer.data)
                responses[str(name)] = answer.model_dump(by_alias=True, mode="json", exclude_none=True)
            extra: dict[str, Any] = {"inputResponses": responses} if responses else {}
            if isinstance(raw.get("requestState"), str):
                extra["requestState"] = raw["requestState"]
            raw = await resend(extra)
            if raw.get("resultType") != "input_required":
                return raw
        raise _input_error(f"still asking for input after {MAX_INPUT_ROUNDS} rounds")

    async def _ask(self, key: str, offered: Offer, method: str, data: dict[str, Any], caller: Caller | None) -> Any:
        reason = refusal(method, data.get("params"), offered)
        if reason is not None:
            return self._count("refused", types.ErrorData(code=NOT_SUPPORTED, message=reason))
        session = caller.session if caller is not None else self.standalone(key)
        if session is None:
            return self._count(
                "unreachable", types.ErrorData(code=NOT_SUPPORTED, message=f"{method}: client not reachable")
            )
        if not self.book.admit(key):
            return self._count(
                "over_limit", types.ErrorData(code=NOT_SUPPORTED, message=f"{method}: too many pending requests")
            )
        related = caller is not None and caller.request_id is not None
        self._minted += 1
        request_id = f"xds-relay-{self._minted}"  # never an integer: no clash with the SDK's own ids
        answered = False
        try:
            timeout = time_left(caller, self._clock(), self.call_timeout)
            raw = await sdk_compat.send_request_as(
                session, request_id, method, data.get("params"), related=related, timeout=timeout
            )
            answered = True
        except MCPError as exc:
            if exc.code == types.REQUEST_TIMEOUT:
                late = types.ErrorData(
                    code=types.REQUEST_TIMEOUT, message=f"{method}: the client did not answer in time"
                )
                return self._count("timeout", late)
            answered = exc.code != types.CONNECTION_CLOSED
            return self._count("client_error", types.ErrorData(code=exc.code, message=exc.message, data=exc.data))
        except Exception as exc:
            log.info("relayed request failed", extra={"method": method, "error": type(exc).__name__})
            return self._count("failed", types.ErrorData(code=NOT_SUPPORTED, message=f"{method}: client not reachable"))
        finally:
            self.book.release(key)
            if not answered:  # abandoned (the backend cancelled, its session ended, a timeout): tell the client
                self._spawn(_cancel(session, request_id))
        self._count("answered", None)
        return _result_of(method, raw)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _count(self, outcome: str, answer: Any) -> Any:
        self.relayed[outcome] = self.relayed.get(outcome, 0) + 1
        return answer

    # -- notifications ------------------------------------------------------------------------

    async def _log(self, upstream: tuple[str, str], key: str, params: types.LoggingMessageNotificationParams) -> None:
        if not key or not passes(params.level, self.levels.get(key)):
            return
        await self._to_client(upstream, key, types.LoggingMessageNotification(params=params))

    async def _notified(self, upstream: tuple[str, str], key: str, message: Any) -> None:
        backend = upstream[0]
        if isinstance(message, _LIST_CHANGED):
            await self.list_changed(backend)
        elif isinstance(message, types.ElicitCompleteNotification) and key:
            await self._to_client(upstream, key, message)

    async def _to_client(self, upstream: tuple[str, str], key: str, note: Any) -> None:
        """A backend's notification to its client: on the stream of its call in flight, else the standalone one."""
        caller = self.book.target(upstream)
        session = caller.session if caller is not None else self.standalone(key)
        if session is None:
            return
        related = caller.request_id if caller is not None else None
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5.0):
                await session.send_notification(note, related_request_id=related)

    async def list_changed(self, backend: str) -> None:
        """The backend announced a list change (on a legacy session, or a modern listen stream)."""
        if self.refresh is not None and self.gate.asked(backend):
            self._spawn(self._refresh(backend))

    async def _refresh(self, backend: str) -> None:
        assert self.refresh is not None
        while True:
            try:
                await self.refresh(backend)
            except Exception as exc:
                log.info("catalog refresh failed", extra={"backend": backend, "error": type(exc).__name__})
            if not self.gate.done(backend):
                return

    def set_level(self, key: str, level: LoggingLevel) -> None:
        self.levels.set(key, level)

    def forget(self, key: str) -> None:
        self.levels.forget(key)


async def _cancel(session: Any, request_id: str) -> None:
    """`notifications/cancelled` for a relayed request, on the client session's standalone stream (the stream of
    the call it rode may be closed by now); best effort."""
    note = types.CancelledNotification(params=types.CancelledNotificationParams(request_id=request_id))
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5.0):
            await session.send_notification(note)


def _input_error(why: str) -> MCPError:
    return MCPError(code=types.INVALID_REQUEST, message=f"The backend's request for input cannot be relayed: {why}")


def _result_of(method: str, raw: dict[str, Any]) -> Any:
    """The client's answer as the SDK client's callback type for `method` (the backend gets it re-serialized)."""
    if method == "sampling/createMessage":
        if isinstance(raw.get("content"), list) or raw.get("stopReason") == "toolUse":
            return types.CreateMessageResultWithTools.model_validate(raw, by_name=False)
        return types.CreateMessageResult.model_validate(raw, by_name=False)
    if method == "elicitation/create":
        return types.ElicitResult.model_validate(raw, by_name=False)
    return types.ListRootsResult.model_validate(raw, by_name=False)
