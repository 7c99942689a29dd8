"""Events written straight onto open GET streams (aggregator/get_streams.py): the chunk is the SDK's own SSE
event, chunks go out in order, a stream whose socket does not drain holds at most `depth` and delays nobody, and
nothing is written to a stream after its end."""

from __future__ import annotations

import asyncio
from typing import Any

import mcp_types as types
from mcp.server.streamable_http import EventMessage, StreamableHTTPServerTransport
from sse_starlette import ServerSentEvent

from xds_control.aggregator.get_streams import GetStreams

NOTE = types.JSONRPCNotification(jsonrpc="2.0", method="notifications/resources/updated", params={"uri": "x://1"})


class _Send:
    """An ASGI `send` that records body chunks; while `blocked` is clear it waits, as a socket that does not drain."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.blocked = asyncio.Event()
        self.blocked.set()

    async def __call__(self, message: Any) -> None:
        await self.blocked.wait()
        self.bodies.append(message["body"])


async def _until(condition: Any) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0)


def test_the_chunk_is_the_event_the_sdks_get_stream_writes() -> None:
    transport = StreamableHTTPServerTransport(mcp_session_id="s", is_json_response_enabled=False)
    sdk = ServerSentEvent(**transport._create_event_data(EventMessage(NOTE))).encode()
    assert GetStreams.event(NOTE) == sdk
    assert sdk.startswith(b"event: message\r\ndata: {") and sdk.endswith(b"}\r\n\r\n")


async def test_chunks_go_out_in_order_only_while_the_stream_is_open() -> None:
    streams, send = GetStreams(), _Send()
    assert streams.offer("s", b"0") is None  # no GET stream: nothing kept
    streams.opened("s", send)
    assert [streams.offer("s", b"%d" % i) for i in range(1, 4)] == [True, True, True]
    await _until(lambda: len(send.bodies) == 3)
    assert send.bodies == [b"1", b"2", b"3"]
    streams.ended("s", send)
    assert streams.offer("s", b"4") is None and not await streams.put("s", b"4")
    await asyncio.sleep(0)
    assert send.bodies == [b"1", b"2", b"3"] and len(streams) == 0


async def test_a_stream_that_does_not_drain_holds_at_most_depth_and_delays_nobody() -> None:
    streams, slow, quick = GetStreams(depth=4), _Send(), _Send()
    slow.blocked.clear()
    streams.opened("slow", slow)
    streams.opened("quick", quick)
    offered = [streams.offer("slow", b"x") for _ in range(10)]
    assert offered == [True] * 4 + [False] * 6
    await asyncio.sleep(0)  # the writer takes one and waits on the socket: room for one more
    assert streams.offer("slow", b"x") is True and streams.offer("slow", b"x") is False
    for _ in range(100):
        assert streams.offer("quick", b"y") is True
        await asyncio.sleep(0)
    await _until(lambda: len(quick.bodies) == 100)
    assert slow.bodies == []
    putting = asyncio.create_task(streams.put("slow", b"z"))  # waits for room
    await asyncio.sleep(0)
    assert not putting.done()
    slow.blocked.set()
    assert await asyncio.wait_for(putting, 5)
    await _until(lambda: len(slow.bodies) == 6)
    assert slow.bodies == [b"x"] * 5 + [b"z"]


async def test_ending_a_blocked_stream_cancels_its_writer_and_releases_its_waiters() -> None:
    streams, send = GetStreams(depth=1), _Send()
    send.blocked.clear()
    streams.opened("s", send)
    assert streams.offer("s", b"a") is True
    await asyncio.sleep(0)  # the writer took "a" and waits on the socket
    assert streams.offer("s", b"b") is True and streams.offer("s", b"c") is False
    putting = asyncio.create_task(streams.put("s", b"c"))
    await asyncio.sleep(0)
    streams.ended("s", send)
    assert await asyncio.wait_for(putting, 5) is False
    send.blocked.set()
    await asyncio.sleep(0)
    assert send.bodies == []  # nothing written after the end, not even what waited


async def test_a_new_stream_replaces_the_old_and_the_old_ones_end_leaves_it() -> None:
    streams, old, new = GetStreams(), _Send(), _Send()
    streams.opened("s", old)
    streams.opened("s", new)
    streams.ended("s", old)  # the old request finishing later must not end the new stream
    assert streams.offer("s", b"n") is True
    await _until(lambda: new.bodies == [b"n"])
    assert old.bodies == []


async def test_the_endpoint_ends_a_stream_before_its_last_message_and_registers_only_a_200() -> None:
    """`Endpoint._to_sdk` around an SDK answer to a GET: open once its 200 went out, ended before the body's last
    message (a chunk offered after it would follow the end of the response), never opened for a refusal."""
    from xds_control.aggregator.endpoint import Endpoint

    streams, sent = GetStreams(), _Send()
    endpoint = Endpoint.__new__(Endpoint)  # only what `_to_sdk` uses: the SDK app and the streams
    endpoint.get_streams = streams
    seen: list[bool | None] = []

    async def sdk_app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        seen.append(streams.offer("s", b"between"))
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        seen.append(streams.offer("s", b"after"))

    async def started(message: Any) -> None:
        if message["type"] == "http.response.start":
            return
        await sent(message)

    endpoint.sdk_app = sdk_app
    for status in (200, 409):
        seen.clear()
        assert await endpoint._to_sdk({"type": "http", "method": "GET"}, None, started, stream_of="s") == status  # type: ignore[arg-type]
        assert seen == ([True, None] if status == 200 else [None, None])
    await asyncio.sleep(0)
    assert len(streams) == 0
