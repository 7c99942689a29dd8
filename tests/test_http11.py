"""The prober's HTTP/1.1 client against a real loopback server: framing, keep-alive, stale connections,
broken and garbage answers, and how each failure is classified."""

from __future__ import annotations

import asyncio
import gzip
import zlib

import pytest

from tests.support.canned_http import Answer, CannedServer, Request
from tests.support.waiting import async_wait_until, free_port
from xds_control.errors import WireError
from xds_control.health.classify import Category, classify_exception
from xds_control.http11 import MAX_HEAD_BYTES, MAX_HEADERS, HttpClient, Target, encode_request

BODY = b'{"jsonrpc":"2.0","id":1,"result":{}}'


async def fetch(
    client: HttpClient, url: str, method: str = "POST", content: bytes | None = b"{}"
) -> tuple[int, dict[str, str], bytes]:
    async with client.stream(method, url, headers={"accept": "application/json"}, content=content) as response:
        body = b"".join([chunk async for chunk in response.aiter_bytes()])
        return response.status_code, response.headers, body


def ok(request: Request) -> Answer:
    return Answer(200, BODY, {"content-type": "application/json", "x-echo-method": request.method})


async def classified(coro: object) -> str:
    with pytest.raises(Exception) as caught:
        await coro  # type: ignore[misc]
    return classify_exception(caught.value).category


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
async def test_every_body_framing_reads_the_whole_body(framing: str) -> None:
    async with CannedServer(
        lambda request: Answer(200, BODY * 50, {"content-type": "application/json"}, framing)
    ) as server:
        client = HttpClient(None)
        try:
            status, headers, body = await fetch(client, server.url)
        finally:
            await client.aclose()
    assert status == 200 and headers["content-type"] == "application/json" and body == BODY * 50


async def test_keep_alive_reuses_one_connection_and_sends_the_request_as_given() -> None:
    async with CannedServer(ok) as server:
        client = HttpClient(None)
        try:
            for _ in range(5):
                assert (await fetch(client, server.url))[0] == 200
            await fetch(client, server.url, "DELETE", None)
        finally:
            await client.aclose()
    assert server.connections == 1
    first = server.requests[0]
    assert first.method == "POST" and first.path == "/mcp" and first.body == b"{}"
    assert first.headers["host"] == server.url.split("/")[2] and first.headers["content-length"] == "2"
    assert server.requests[-1].method == "DELETE" and "content-length" not in server.requests[-1].headers


async def test_a_connection_the_server_dropped_while_idle_is_replaced_without_a_failure() -> None:
    async with CannedServer(ok) as server:
        client = HttpClient(None)
        try:
            assert (await fetch(client, server.url))[0] == 200
            await server.drop_connections()  # the server's keep-alive timer fired between two probes
            assert (await fetch(client, server.url))[0] == 200
        finally:
            await client.aclose()
    assert server.connections == 2


async def test_a_response_left_half_read_closes_its_connection() -> None:
    async with CannedServer(
        lambda request: Answer(200, BODY * 5000, {"content-type": "application/json"}, "chunked")
    ) as server:
        client = HttpClient(None)
        try:
            async with client.stream("POST", server.url, headers={}, content=b"{}") as response:
                assert response.status_code == 200 and not response.complete
            assert (await fetch(client, server.url))[2] == BODY * 5000
        finally:
            await client.aclose()
    assert server.connections == 2


async def test_refused_connection_is_connection_refused() -> None:
    client = HttpClient(None)
    try:
        assert await classified(fetch(client, f"http://127.0.0.1:{free_port()}/mcp")) == Category.CONNECTION_REFUSED
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("raw", "category"),
    [
        (b"this is not HTTP at all\r\n\r\n", Category.PROTOCOL_ERROR),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part", Category.CONNECTION_RESET),
        (b"HTTP/1.1 200 OK\r\ncontent-le", Category.CONNECTION_RESET),
        (b"", Category.CONNECTION_RESET),
    ],
    ids=["garbage", "body cut short", "headers cut short", "closed at once"],
)
async def test_broken_answers_are_classified(raw: bytes, category: Category) -> None:
    async with CannedServer(lambda request: raw) as server:
        client = HttpClient(None)
        try:
            assert await classified(fetch(client, server.url)) == category
        finally:
            await client.aclose()


async def test_aclose_ends_a_stream_in_use() -> None:
    release = asyncio.Event()

    async def endless(request: Request) -> bytes:
        await release.wait()
        return b""

    async with CannedServer(
        lambda request: (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n5\r\n: hi\n\r\n"
        )
    ) as server:
        client = HttpClient(None)
        got: list[bytes] = []

        async def follow() -> None:
            async with client.stream("GET", server.url, headers={}) as response:
                async for chunk in response.aiter_bytes():
                    got.append(chunk)

        task = asyncio.create_task(follow())
        await async_wait_until(lambda: got, timeout=5, what="the first event")
        await client.aclose()
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(task, 5)
        release.set()


def test_header_values_with_line_breaks_are_refused_without_echoing_them() -> None:
    with pytest.raises(ValueError, match="line break") as caught:
        encode_request("POST", Target.of("http://h:1/mcp"), {"authorization": "Bearer x\r\nevil: 1"}, b"{}")
    assert "evil" not in str(caught.value) and "Bearer" not in str(caught.value)


def test_targets() -> None:
    assert Target.of("https://api.example.com/v1/mcp?x=1") == Target(
        "https", "api.example.com", 443, "api.example.com", "/v1/mcp?x=1"
    )
    assert Target.of("http://[::1]:8080") == Target("http", "::1", 8080, "[::1]:8080", "/")
    with pytest.raises(ValueError, match="http"):
        Target.of("ftp://example.com/")


# -- bounds on the response head -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        b"".join(b"x-h%d: v\r\n" % n for n in range(MAX_HEADERS + 1)),
        b"x-big: " + b"v" * MAX_HEAD_BYTES + b"\r\n",
        b"".join(b"x-same: %s\r\n" % (b"v" * 500) for _ in range(MAX_HEADERS)) + b"x-last: " + b"v" * 20_000 + b"\r\n",
    ],
    ids=["one header line too many", "one header over the bytes", "many lines over the bytes"],
)
async def test_a_response_head_over_the_limits_is_response_too_large(head: bytes) -> None:
    async with CannedServer(lambda request: b"HTTP/1.1 200 OK\r\n" + head + b"content-length: 2\r\n\r\n{}") as server:
        client = HttpClient(None)
        try:
            assert await classified(fetch(client, server.url)) == Category.RESPONSE_TOO_LARGE
        finally:
            await client.aclose()


async def test_a_head_that_never_ends_is_cut_at_the_byte_limit() -> None:
    async def endless(request: Request) -> bytes:
        return b"HTTP/1.1 200 OK\r\nx-drip: " + b"v" * (4 * MAX_HEAD_BYTES)

    async with CannedServer(endless) as server:
        client = HttpClient(None)
        try:
            with pytest.raises(WireError, match="head over the limit"):
                await fetch(client, server.url)
        finally:
            await client.aclose()


async def test_a_head_within_the_limits_is_read_whole() -> None:
    head = b"".join(b"x-h%d: %s\r\n" % (n, b"v" * 100) for n in range(MAX_HEADERS - 1))
    async with CannedServer(lambda request: b"HTTP/1.1 200 OK\r\n" + head + b"content-length: 2\r\n\r\n{}") as server:
        client = HttpClient(None)
        try:
            status, headers, body = await fetch(client, server.url)
        finally:
            await client.aclose()
    assert status == 200 and len(headers) == MAX_HEADERS and body == b"{}"


# -- when a request is sent again ------------------------------------------------------------------------------


def closing_on_the_second_request(request: Request, seen: list[str]) -> Answer | bytes:
    """Answers the first request and every third one; the second is read, then the connection dropped unanswered
    (a server that crashed, or whose keep-alive timer fired, after the request arrived)."""
    seen.append(request.method)
    return b"" if len(seen) == 2 else ok(request)


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_a_non_idempotent_request_whose_bytes_went_out_is_never_sent_again(method: str) -> None:
    seen: list[str] = []
    async with CannedServer(lambda request: closing_on_the_second_request(request, seen)) as server:
        client = HttpClient(None)
        try:
            assert (await fetch(client, server.url, method))[0] == 200
            assert await classified(fetch(client, server.url, method)) == Category.CONNECTION_RESET
            assert (await fetch(client, server.url, method))[0] == 200
        finally:
            await client.aclose()
    assert seen == [method] * 3  # the failed one reached the server once
    assert server.connections == 2


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_an_idempotent_request_on_a_dropped_reused_connection_is_sent_once_more(method: str) -> None:
    seen: list[str] = []
    async with CannedServer(lambda request: closing_on_the_second_request(request, seen)) as server:
        client = HttpClient(None)
        try:
            assert (await fetch(client, server.url, method, None))[0] == 200
            assert (await fetch(client, server.url, method, None))[0] == 200
        finally:
            await client.aclose()
    assert seen == [method] * 3 and server.connections == 2


async def test_a_request_on_a_fresh_connection_is_never_sent_again() -> None:
    seen: list[str] = []
    async with CannedServer(lambda request: seen.append(request.method) or b"") as server:
        client = HttpClient(None)
        try:
            assert await classified(fetch(client, server.url, "GET", None)) == Category.CONNECTION_RESET
        finally:
            await client.aclose()
    assert seen == ["GET"]


async def test_an_answer_begun_then_cut_is_not_sent_again_even_if_idempotent() -> None:
    seen: list[str] = []

    def half_head(request: Request) -> Answer | bytes:
        seen.append(request.method)
        return ok(request) if len(seen) == 1 else b"HTTP/1.1 200 OK\r\ncontent-le"

    async with CannedServer(half_head) as server:
        client = HttpClient(None)
        try:
            assert (await fetch(client, server.url, "GET", None))[0] == 200
            assert await classified(fetch(client, server.url, "GET", None)) == Category.CONNECTION_RESET
        finally:
            await client.aclose()
    assert seen == ["GET", "GET"]


# -- bodies read within a limit --------------------------------------------------------------------------------


async def read_within(answer: Answer, limit: int) -> bytes:
    async with CannedServer(lambda request: answer) as server:
        client = HttpClient(None)
        try:
            async with client.stream("POST", server.url, headers={}, content=b"{}") as response:
                return await response.read(limit)
        finally:
            await client.aclose()


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
async def test_a_body_is_read_whole_within_its_limit_and_refused_past_it(framing: str) -> None:
    assert await read_within(Answer(200, BODY * 10, {}, framing), len(BODY) * 10) == BODY * 10
    with pytest.raises(WireError) as info:
        await read_within(Answer(200, BODY * 10, {}, framing), len(BODY) * 10 - 1)
    assert info.value.category == "response_too_large"


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_an_encoded_body_is_decoded_and_its_decoded_size_counts(encoding: str) -> None:
    packed = gzip.compress(BODY * 1000) if encoding == "gzip" else zlib.compress(BODY * 1000)
    answer = Answer(200, packed, {"content-encoding": encoding}, "chunked")
    assert await read_within(answer, len(BODY) * 1000) == BODY * 1000
    with pytest.raises(WireError) as info:
        await read_within(answer, len(BODY) * 100)  # the packed body is far under it; what it unpacks to is not
    assert info.value.category == "response_too_large"


async def test_an_unknown_encoding_is_a_protocol_error() -> None:
    with pytest.raises(WireError) as info:
        await read_within(Answer(200, BODY, {"content-encoding": "br"}), 1000)
    assert info.value.category == "protocol_error"
