"""The aggregator's upstream transport (httpx2 interface over xds_control/http11.py) against a real loopback
server: what the SDK and `EdgeTransport` above it rely on — headers as sent, keep-alive, concurrency,
streamed bodies, decompression, and network failures as httpx2's exceptions and the edge's categories."""

from __future__ import annotations

import asyncio
import gzip
import json

import httpx2
import pytest

from tests.support.canned_http import Answer, CannedServer, Request
from tests.support.waiting import free_port
from xds_control.aggregator.upstream_http import make_http_client
from xds_control.aggregator.upstream_transport import Http11Transport, _mapped

BODY = {"jsonrpc": "2.0", "id": 1, "result": {"content": [], "isError": False}}


def ok(request: Request) -> Answer:
    return Answer.json(BODY, headers={"x-seen-auth": request.headers.get("authorization", "-")})


async def test_requests_go_out_as_given_over_one_kept_alive_connection() -> None:
    async with CannedServer(ok) as server:
        client = make_http_client("b1", headers=lambda: ("authorization", "Bearer s3cret"))
        try:
            for _ in range(5):
                response = await client.post(
                    server.url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers={"x-one": "1"}
                )
                assert response.status_code == 200 and response.json() == BODY
        finally:
            await client.aclose()
    assert server.connections == 1 and len(server.requests) == 5
    sent = server.requests[0]
    assert sent.method == "POST" and sent.path == "/mcp" and json.loads(sent.body)["method"] == "ping"
    assert sent.headers["authorization"] == "Bearer s3cret" and sent.headers["x-one"] == "1"
    assert sent.headers["host"] == server.url.split("/")[2] and sent.headers["content-length"] == str(len(sent.body))


async def test_concurrent_requests_each_get_a_connection_and_the_idle_ones_are_reused() -> None:
    release = asyncio.Event()

    async def slow(request: Request) -> Answer:
        await release.wait()
        return ok(request)

    async with CannedServer(slow) as server:
        client = make_http_client("b1")
        try:
            calls = [asyncio.create_task(client.post(server.url, json={"n": n})) for n in range(8)]
            while len(server.requests) < 8:
                await asyncio.sleep(0.01)
            release.set()
            assert [r.status_code for r in await asyncio.gather(*calls)] == [200] * 8
            opened = server.connections
            await asyncio.gather(*(client.post(server.url, json={}) for _ in range(8)))
        finally:
            await client.aclose()
    assert opened == 8 and server.connections == 8


async def test_a_streamed_body_arrives_in_pieces_and_closing_it_early_costs_only_that_connection() -> None:
    events = b"".join(
        f"event: message\ndata: {json.dumps({'n': n, 'pad': 'x' * 1000})}\n\n".encode() for n in range(2000)
    )

    def sse(request: Request) -> Answer:
        if request.method == "GET":
            return Answer(200, events, {"content-type": "text/event-stream"}, "chunked")
        return ok(request)

    async with CannedServer(sse) as server:
        client = make_http_client("b1")
        try:
            async with client.stream("GET", server.url) as response:
                lines = [line async for line in response.aiter_lines() if line.startswith("data:")]
            assert len(lines) == 2000
            async with client.stream("GET", server.url) as response:
                async for _line in response.aiter_lines():
                    break
            assert (await client.post(server.url, json={})).json() == BODY
        finally:
            await client.aclose()
    assert server.connections == 2  # the stream abandoned half-read took its connection with it


async def test_a_gzip_answer_is_decompressed_by_httpx2_above_the_transport() -> None:
    packed = gzip.compress(json.dumps(BODY).encode())
    async with CannedServer(
        lambda request: Answer(200, packed, {"content-type": "application/json", "content-encoding": "gzip"})
    ) as server:
        client = make_http_client("b1")
        try:
            response = await client.post(server.url, json={})
        finally:
            await client.aclose()
    assert response.json() == BODY


async def test_a_connection_the_server_dropped_while_idle_is_replaced_transparently() -> None:
    async with CannedServer(ok) as server:
        client = make_http_client("b1")
        try:
            assert (await client.post(server.url, json={})).status_code == 200
            await server.drop_connections()
            assert (await client.post(server.url, json={})).status_code == 200
        finally:
            await client.aclose()
    assert server.connections == 2


@pytest.mark.parametrize(
    ("answer", "error", "category"),
    [
        (b"SPDY/3 garbage\r\n\r\n", httpx2.RemoteProtocolError, "protocol_error"),
        (
            b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{"jsonrpc"',
            httpx2.ReadError,
            "connection_reset",
        ),
    ],
)
async def test_broken_answers_are_httpx2_errors_and_edge_categories(
    answer: bytes, error: type[Exception], category: str
) -> None:
    async with CannedServer(lambda request: answer) as server:
        transport = Http11Transport(None)
        try:
            with pytest.raises(error):
                response = await transport.handle_async_request(httpx2.Request("POST", server.url, json={}))
                await response.aread()
        finally:
            await transport.aclose()
        client = make_http_client("b1")
        try:
            response = await client.post(server.url, json={})
        finally:
            await client.aclose()
    assert response.status_code == 502 and response.json()["error"]["data"]["category"] == category


async def test_a_refused_connection_is_a_connect_error_and_the_edge_says_connection_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    transport = Http11Transport(None)
    try:
        with pytest.raises(httpx2.ConnectError, match="refused"):
            await transport.handle_async_request(httpx2.Request("POST", url, json={}))
    finally:
        await transport.aclose()
    client = make_http_client("b1")
    try:
        response = await client.post(url, json={})
    finally:
        await client.aclose()
    assert response.status_code == 502 and response.json()["error"]["data"] == {
        "backend": "b1",
        "category": "connection_refused",
        "xds-control/edge": True,
    }


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (TimeoutError(), httpx2.ConnectTimeout),
        (ConnectionRefusedError(), httpx2.ConnectError),
        (OSError(113, "No route to host"), httpx2.ConnectError),
        (BrokenPipeError(), httpx2.ReadError),
        (asyncio.IncompleteReadError(b"", 10), httpx2.ReadError),
    ],
)
def test_builtin_network_errors_map_to_the_httpx2_exceptions_the_sdk_handles(
    raised: Exception, expected: type[Exception]
) -> None:
    with pytest.raises(expected), _mapped():
        raise raised


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (OSError(5, "Input/output error"), httpx2.ReadError),
        (OSError(113, "No route to host"), httpx2.ReadError),
        (TimeoutError(110, "Connection timed out"), httpx2.ReadTimeout),
    ],
)
def test_any_network_error_while_reading_a_body_is_a_read_error(raised: Exception, expected: type[Exception]) -> None:
    with pytest.raises(expected), _mapped(reading=True):
        raise raised
