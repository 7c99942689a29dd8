"""Server-to-client events written straight onto legacy sessions' open GET streams.

The SDK answers a legacy session's `GET /mcp` (its checks, headers, pings,
and the messages it sends there itself); the endpoint tells `GetStreams`
when such a stream opened (its 200 went out) and when it ends (its last body
message is about to go, or the request is over). Between the two, an event
the aggregator fans out (a resource update) is one SSE chunk, encoded once
for every session, written through that request's own ASGI `send` by a task
of the stream's own, started while chunks wait and cancelled when the stream
ends (it never outlives the request): none of the SDK's per-session queues,
writer task and SSE response sit between the fan-out and the socket.

Per stream at most `depth` chunks wait, in order; a stream whose writer is
blocked (a reader that does not read: the HTTP server waits for the socket to
drain) refuses more (`offer` says False) and delays nobody else. A session
without a GET stream open hears nothing, as with the SDK. Every chunk is a
whole SSE event handed to the HTTP server in one body message, so chunks of
the SDK's writer and of this one never interleave inside an event (an ASGI
server writes a body message whole once its socket drained, as uvicorn does;
no middleware that re-chunks a body may sit in front of the endpoint). Events
of the SDK's own (its pings, `list_changed`, requests to the client) and
these are two queues: their relative order is not kept, which MCP does not
promise across notifications.
"""

from __future__ import annotations

import asyncio
import logging

from mcp_types import JSONRPCNotification
from sse_starlette import ServerSentEvent
from starlette.types import Send

log = logging.getLogger(__name__)

DEPTH = 16  # chunks waiting per stream: the depth of the SDK's own GET stream queue


class _Stream:
    """One open GET stream: its `send`, the chunks waiting for it, and the task writing them (while any wait)."""

    __slots__ = ("open", "pending", "room", "send", "writer")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.pending: list[bytes] = []  # at most `depth`: a list is the smallest queue an idle stream can hold
        self.writer: asyncio.Task[None] | None = None
        self.room: asyncio.Future[None] | None = None  # a `put` waiting for the queue to shrink
        self.open = True

    def push(self, chunk: bytes) -> None:
        self.pending.append(chunk)
        if self.writer is None:
            self.writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        try:
            while self.pending and self.open:
                chunk = self.pending.pop(0)
                self._made_room()
                await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
        except Exception as exc:  # a server refusing a write it should have taken: the stream is lost, say so
            log.warning("GET stream write failed, the stream is dropped: %s", type(exc).__name__)
            self.open = False
        finally:
            self.writer = None
            if not self.open:
                self.pending.clear()
                self._made_room()

    def _made_room(self) -> None:
        if self.room is not None and not self.room.done():
            self.room.set_result(None)

    def close(self) -> None:
        self.open = False
        self.pending.clear()
        self._made_room()
        if self.writer is not None:  # blocked on a socket that does not drain: nothing more goes to it
            self.writer.cancel()


class GetStreams:
    """The open GET streams of legacy sessions, by session id; see the module docstring."""

    def __init__(self, depth: int = DEPTH) -> None:
        self.depth = depth
        self._streams: dict[str, _Stream] = {}

    def __len__(self) -> int:
        return len(self._streams)

    @staticmethod
    def event(notification: JSONRPCNotification) -> bytes:
        """The SSE chunk of `notification`, as the SDK's GET stream writes a message."""
        data = notification.model_dump_json(by_alias=True, exclude_unset=True)
        return ServerSentEvent(data=data, event="message").encode()

    # -- the endpoint ---------------------------------------------------------------------------

    def opened(self, session_id: str, send: Send) -> None:
        """The session's GET stream answered 200 through `send`; a stream it had before is over."""
        previous = self._streams.pop(session_id, None)
        if previous is not None:
            previous.close()
        self._streams[session_id] = _Stream(send)

    def ended(self, session_id: str, send: Send | None = None) -> None:
        """The session's GET stream ends (`send`: only if it is the stream opened through that `send`)."""
        stream = self._streams.get(session_id)
        if stream is not None and (send is None or stream.send is send):
            del self._streams[session_id]
            stream.close()

    # -- the fan-out ----------------------------------------------------------------------------

    def offer(self, session_id: str, chunk: bytes) -> bool | None:
        """Queue `chunk` on the session's GET stream now: True, or False when `depth` chunks wait already (a
        slow reader); None when the session has no GET stream open (nothing is kept for it)."""
        stream = self._streams.get(session_id)
        if stream is None or not stream.open:
            return None
        if len(stream.pending) >= self.depth:
            return False
        stream.push(chunk)
        return True

    async def put(self, session_id: str, chunk: bytes) -> bool:
        """Queue `chunk` on the session's GET stream, waiting for room; False when it has none open."""
        while True:
            stream = self._streams.get(session_id)
            if stream is None or not stream.open:
                return False
            if len(stream.pending) < self.depth:
                stream.push(chunk)
                return True
            if stream.room is None or stream.room.done():
                stream.room = asyncio.get_running_loop().create_future()
            await asyncio.shield(stream.room)
