"""The fan-out of `notifications/resources/updated` to legacy sessions' GET streams, on real sockets: the in-process
aggregator calling a real SDK backend (tests/support/resource_backend.py) directly, GET streams read raw.

A client that stops reading fills its own bounded queue; the others go on hearing every update at once, and the
stopped one still hears the latest update of each URI once it reads again (its outbox coalesces meanwhile)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx2
import pytest
from mcp_types import ErrorData, JSONRPCError

from tests.aggregator.support import fetch_catalog, legacy_session, make_config
from tests.support.procs import python_module
from tests.support.waiting import async_wait_until, free_ports
from xds_control.aggregator import Aggregator, StoreViewSource, direct_upstream_url
from xds_control.view import BackendState, ViewStore

# The SDK's answer to a second GET stream of a session.
CONFLICT = JSONRPCError(
    jsonrpc="2.0", id=None, error=ErrorData(code=-32600, message="Conflict: Only one SSE stream is allowed per session")
).model_dump_json(by_alias=True, exclude_unset=True)

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore:resources/(un)?subscribe is removed")]


class Stream:
    """A session's GET stream on a plain socket with a small receive buffer; counts the updates per URI read."""

    def __init__(self) -> None:
        self.heard: dict[str, int] = {}
        self.reading = asyncio.Event()
        self.reading.set()
        self.task: asyncio.Task[None] | None = None
        self.session = ""

    async def open(self, url: str, headers: dict[str, str]) -> None:
        self.session = headers["mcp-session-id"]
        parsed = httpx2.URL(url)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (parsed.host, parsed.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
        lines = [f"GET {parsed.raw_path.decode()} HTTP/1.1", f"host: {parsed.host}:{parsed.port}"]
        lines += ["accept: text/event-stream", *(f"{k}: {v}" for k, v in headers.items() if k.startswith("mcp-"))]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        status = await reader.readline()
        if b" 200 " not in status:
            writer.close()
            raise AssertionError(status.decode(errors="replace"))
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        self.task = asyncio.create_task(self._read(reader, writer))

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self.reading.wait()
                line = await reader.readline()
                if not line:
                    return
                if b"notifications/resources/updated" in line:
                    uri = line.split(b'"uri":"', 1)[1].split(b'"', 1)[0].decode()
                    self.heard[uri] = self.heard.get(uri, 0) + 1
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def gateway() -> AsyncIterator[tuple[Aggregator, str]]:
    backend_port, port = free_ports(2)
    backend_url = f"http://127.0.0.1:{backend_port}/mcp"
    proc = python_module("tests.support.resource_backend", "--port", str(backend_port), name="backend-note")
    try:
        proc.wait_for_line("READY", timeout=20)
        config = make_config([{"name": "notes", "url": backend_url, "protocol": "legacy"}], port=port)
        store = ViewStore(config)
        catalog = await fetch_catalog(backend_url)
        store.update_backend("notes", lambda s: replace(s, state=BackendState.HEALTHY, catalog=catalog))
        aggregator = Aggregator(config, StoreViewSource(store), upstream_url=direct_upstream_url)
        async with aggregator.running(), aggregator.serving("127.0.0.1", port) as url:
            await aggregator.wait_for_view(store.version)
            yield aggregator, url
    finally:
        proc.kill()


async def subscribed_stream(http: httpx2.AsyncClient, url: str) -> Stream:
    headers = await legacy_session(http, url)
    stream = Stream()
    await stream.open(url, headers)
    for i, uri in enumerate(("note://0", "note://1")):
        body = {"jsonrpc": "2.0", "id": i + 1, "method": "resources/subscribe", "params": {"uri": uri}}
        answer = await http.post(url, json=body, headers=headers)
        assert answer.status_code == 200 and "error" not in answer.text, answer.text
    return stream


async def test_a_client_that_stops_reading_delays_nobody_and_hears_the_latest_update_later() -> None:
    async with gateway() as (aggregator, url), httpx2.AsyncClient(trust_env=False, timeout=30) as http:
        stuck, live = await subscribed_stream(http, url), await subscribed_stream(http, url)
        try:
            await flood(aggregator, stuck, live)
        finally:
            for stream in (stuck, live):
                if stream.task is not None:
                    stream.task.cancel()


async def flood(aggregator: Aggregator, stuck: Stream, live: Stream) -> None:
    subs = aggregator.subscriptions
    await subs.updated("notes", "note://1")  # both read: both hear it at once
    await async_wait_until(lambda: stuck.heard.get("note://1") == live.heard.get("note://1") == 1, timeout=10)
    stuck.reading.clear()
    for _ in range(1_000):  # until the stuck client's queue stays full: the socket buffers before it are
        for _ in range(100):
            await subs.updated("notes", "note://0")
            await asyncio.sleep(0)
        if stuck.session not in subs._outboxes:
            continue
        heard = live.heard["note://0"]
        await subs.updated("notes", "note://0")
        await async_wait_until(lambda: live.heard["note://0"] > heard, timeout=10, what="the live client reads")
        if stuck.session in subs._outboxes:
            break
    assert stuck.session in subs._outboxes and len(subs._outboxes[stuck.session].pending) <= 2
    await subs.updated("notes", "note://1")
    await async_wait_until(lambda: live.heard.get("note://1") == 2, timeout=10, what="the live client hears it")
    assert stuck.heard.get("note://1") == 1
    assert all(len(box.pending) <= 2 for box in subs._outboxes.values())  # at most its subscriptions, coalesced
    stuck.reading.set()
    await async_wait_until(
        lambda: stuck.heard.get("note://1") == 2, timeout=20, what="the stuck client hears the latest update"
    )


async def test_a_get_stream_closed_and_reopened_hears_the_updates_after_it_and_a_second_one_is_refused() -> None:
    async with gateway() as (aggregator, url), httpx2.AsyncClient(trust_env=False, timeout=30) as http:
        aggregator.subscriptions.keepalive = 3600  # a URI added to a link that is up goes at once, not at a ping
        first = await asyncio.wait_for(subscribed_stream(http, url), 10)
        headers = {"mcp-session-id": first.session, "mcp-protocol-version": "2025-11-25"}
        try:
            await aggregator.subscriptions.updated("notes", "note://0")
            await async_wait_until(lambda: first.heard.get("note://0") == 1, timeout=10)
            second = await http.get(url, headers={**headers, "accept": "text/event-stream"})
            assert (second.status_code, second.text) == (409, CONFLICT)  # the SDK's answer: one GET stream
            await aggregator.subscriptions.updated("notes", "note://1")  # the refused one left the first unharmed
            await async_wait_until(lambda: first.heard.get("note://1") == 1, timeout=10)
            assert first.task is not None
            first.task.cancel()  # the client goes away: its stream is forgotten, not written to
            await async_wait_until(lambda: len(aggregator.get_streams) == 0, timeout=10, what="the stream ends")
            await aggregator.subscriptions.updated("notes", "note://0")  # nobody to hear it: nothing kept
            again = Stream()
            await again.open(url, headers)
            try:
                await async_wait_until(lambda: len(aggregator.get_streams) == 1, timeout=10)
                await aggregator.subscriptions.updated("notes", "note://1")
                await async_wait_until(lambda: again.heard == {"note://1": 1}, timeout=10, what="the new stream hears")
            finally:
                assert again.task is not None
                again.task.cancel()
        finally:
            if first.task is not None:
                first.task.cancel()


def _dechunked(data: bytes) -> tuple[list[bytes], bytes | None]:
    """An HTTP/1.1 chunked body: its chunks, and what follows its terminating chunk (None: not terminated)."""
    chunks: list[bytes] = []
    at = 0
    while at < len(data):
        eol = data.index(b"\r\n", at)
        size = int(data[at:eol], 16)
        if size == 0:
            assert data[eol : eol + 4] == b"\r\n\r\n"
            return chunks, data[eol + 4 :]
        chunks.append(data[eol + 2 : eol + 2 + size])
        assert data[eol + 2 + size : eol + 4 + size] == b"\r\n"
        at = eol + 4 + size
    return chunks, None


async def test_a_session_deleted_while_updates_pour_in_ends_its_stream_cleanly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every chunk on the wire is one whole SSE event and the body's terminating chunk comes last: nothing is
    written to a GET stream once its last message went (the server would refuse it: a warning)."""
    caplog.set_level(logging.WARNING, logger="xds_control.aggregator.get_streams")
    async with gateway() as (aggregator, url), httpx2.AsyncClient(trust_env=False, timeout=30) as http:
        headers = await legacy_session(http, url)
        parsed = httpx2.URL(url)
        reader, writer = await asyncio.open_connection(parsed.host, parsed.port)
        lines = [f"GET {parsed.raw_path.decode()} HTTP/1.1", f"host: {parsed.host}:{parsed.port}"]
        lines += ["accept: text/event-stream", *(f"{k}: {v}" for k, v in headers.items() if k.startswith("mcp-"))]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert b" 200 " in head and b"transfer-encoding: chunked" in head.lower()
        body = {"jsonrpc": "2.0", "id": 1, "method": "resources/subscribe", "params": {"uri": "note://0"}}
        assert "error" not in (await http.post(url, json=body, headers=headers)).text
        received = bytearray()
        reading = asyncio.create_task(_read_all(reader, received))
        pouring = True

        async def pour() -> None:
            while pouring:
                await aggregator.subscriptions.updated("notes", "note://0")
                await asyncio.sleep(0)

        updates = asyncio.create_task(pour())
        try:
            await async_wait_until(lambda: received.count(b"resources/updated") >= 50, timeout=10)
            assert (await http.delete(url, headers=headers)).status_code == 200
            await asyncio.wait_for(reading, 10)  # the server ended the body
        finally:
            pouring = False
            await updates
            writer.close()
        chunks, after = _dechunked(bytes(received))
        assert after == b"" and len(chunks) >= 50
        assert all(c.startswith((b"event: message\r\n", b": ping")) and c.endswith(b"\r\n\r\n") for c in chunks)
        assert len(aggregator.get_streams) == 0
    assert [r.getMessage() for r in caplog.records if r.name == "xds_control.aggregator.get_streams"] == []


async def _read_all(reader: asyncio.StreamReader, into: bytearray) -> None:
    while chunk := await reader.read(65536):
        into += chunk
        if into.endswith(b"0\r\n\r\n") and _dechunked(bytes(into))[1] is not None:
            return


async def test_two_get_streams_asked_at_once_one_is_refused_and_the_other_hears_the_updates() -> None:
    async with gateway() as (aggregator, url), httpx2.AsyncClient(trust_env=False, timeout=30) as http:
        headers = await legacy_session(http, url)
        body = {"jsonrpc": "2.0", "id": 1, "method": "resources/subscribe", "params": {"uri": "note://0"}}
        assert "error" not in (await http.post(url, json=body, headers=headers)).text
        streams = [Stream(), Stream()]
        opened = await asyncio.gather(*(s.open(url, headers) for s in streams), return_exceptions=True)
        refused = [r for r in opened if isinstance(r, AssertionError)]
        assert len(refused) == 1 and b" 409 " in str(refused[0]).encode()  # not both: one GET stream per session
        live = next(s for s, r in zip(streams, opened, strict=True) if r is None)
        try:
            await aggregator.subscriptions.updated("notes", "note://0")
            await async_wait_until(lambda: live.heard == {"note://0": 1}, timeout=10, what="the open stream hears")
        finally:
            for stream in streams:
                if stream.task is not None:
                    stream.task.cancel()
