"""The httpx2 transport the SDK client runs on (sdk_transport.py over backend_http.py and xds_control/http11.py)
against a real loopback server: what the SDK relies on — headers as sent, keep-alive, concurrency, streamed
bodies, decompression, network failures as httpx2's exceptions — and every POST answer that is not MCP as a
502 with a marked JSON-RPC error body."""

from __future__ import annotations

import asyncio
import gzip
import json

import httpx2
import pytest

from tests.support.canned_http import Answer, CannedServer, Request
from tests.support.waiting import free_port
from xds_control.aggregator.backend_http import BackendHttp
from xds_control.aggregator.sdk_transport import _as_httpx2, sdk_client
from xds_control.aggregator.upstream_answers import EDGE_MARKER

BODY = {"jsonrpc": "2.0", "id": 1, "result": {"content": [], "isError": False}}


def ok(request: Request) -> Answer:
    return Answer.json(BODY, headers={"x-seen-auth": request.headers.get("authorization", "-")})


def make_client(
    backend: str = "b1", credential: tuple[str, str] | None = None, limit: int = 16 * 1024 * 1024
) -> httpx2.AsyncClient:
    return sdk_client(BackendHttp(backend, headers=lambda: credential, max_response_bytes=limit))


async def post(
    answer: Answer | bytes,
    *,
    headers: dict[str, str] | None = None,
    limit: int = 1024,
    credential: tuple[str, str] | None = None,
) -> httpx2.Response:
    async with CannedServer(lambda request: answer) as server:
        async with make_client("b", credential, limit) as client:
            response = await client.post(
                server.url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=headers
            )
            await response.aread()
            return response


def edge_error(response: httpx2.Response) -> dict:
    body = response.json()
    assert response.status_code == 502 and body["error"]["data"][EDGE_MARKER] is True
    return body["error"]["data"]


async def test_requests_go_out_as_given_over_one_kept_alive_connection() -> None:
    async with CannedServer(ok) as server:
        client = make_client("b1", ("authorization", "Bearer s3cret"))
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
        client = make_client()
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
        client = make_client()
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


async def test_a_gzip_answer_is_decompressed_below_the_sdk_which_asks_only_for_what_is_decoded() -> None:
    packed = gzip.compress(json.dumps(BODY).encode())
    seen: list[str] = []

    def gzipped(request: Request) -> Answer:
        seen.append(request.headers.get("accept-encoding", ""))
        return Answer(200, packed, {"content-type": "application/json", "content-encoding": "gzip"})

    async with CannedServer(gzipped) as server:
        async with make_client() as client:
            response = await client.post(server.url, json={}, headers={"accept-encoding": "br, zstd, gzip"})
    assert response.json() == BODY and "content-encoding" not in response.headers
    assert seen == ["gzip, deflate"]


async def test_a_connection_the_server_dropped_while_idle_is_replaced_transparently() -> None:
    async with CannedServer(ok) as server:
        client = make_client()
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
async def test_broken_answers_are_httpx2_errors_for_a_get_and_edge_categories_for_a_post(
    answer: bytes, error: type[Exception], category: str
) -> None:
    async with CannedServer(lambda request: answer) as server:
        client = make_client()
        try:
            with pytest.raises(error):
                response = await client.get(server.url)
                await response.aread()
        finally:
            await client.aclose()
    assert edge_error(await post(answer))["category"] == category


async def test_a_refused_connection_is_a_connect_error_and_the_edge_says_connection_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    client = make_client()
    try:
        with pytest.raises(httpx2.ConnectError, match="refused"):
            await client.get(url)
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
    with pytest.raises(expected), _as_httpx2():
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
    with pytest.raises(expected), _as_httpx2(reading=True):
        raise raised


# -- POST answers as the SDK sees them -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "category"),
    [
        (401, b'{"error":"invalid_token"}', "authentication_failed"),
        (403, b"forbidden", "authentication_failed"),
        (503, b"no healthy upstream", "no_healthy_upstream"),
        (504, b"upstream request timeout", "timeout"),
        (500, b"Internal Server Error", "http_5xx"),
        (429, b"slow down", "rate_limited"),
        (400, b"<html>", "http_4xx"),
    ],
)
async def test_http_failures(status: int, body: bytes, category: str) -> None:
    content_type = "application/json" if body.startswith(b"{") else "text/plain"
    data = edge_error(await post(Answer(status, body, {"content-type": content_type})))
    assert data["category"] == category and data["status"] == status


async def test_a_404_for_a_session_is_an_expired_session() -> None:
    error = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Session not found"}}
    data = edge_error(await post(Answer.json(error, status=404), headers={"mcp-session-id": "abc"}))
    assert data["category"] == "session_expired"


async def test_a_backends_own_jsonrpc_error_passes_at_any_status() -> None:
    error = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "Unknown tool", "data": {"x": 1}}}
    response = await post(Answer.json(error, status=400))
    assert response.status_code == 400 and response.json() == error


async def test_garbage_and_oversized_answers() -> None:
    garbage = await post(Answer(200, b"this is not json", {"content-type": "application/json"}))
    assert edge_error(garbage)["category"] == "protocol_error"
    huge = await post(Answer.json({"a": "x" * 5000}), limit=1024)
    assert edge_error(huge)["category"] == "response_too_large"
    fine = await post(Answer.json({"jsonrpc": "2.0", "id": 1, "result": {}}))
    assert fine.status_code == 200 and fine.json()["result"] == {}


async def test_the_initialize_answer_keeps_its_session_header() -> None:
    response = await post(Answer.json(BODY, headers={"mcp-session-id": "s-1"}))
    assert response.headers["mcp-session-id"] == "s-1" and response.json() == BODY


async def test_the_credential_is_set_on_every_request_and_get_is_not_rewritten() -> None:
    seen: list[str | None] = []

    def handler(request: Request) -> Answer:
        seen.append(request.headers.get("authorization"))
        return Answer(500, b"boom", {"content-type": "text/plain"})

    async with CannedServer(handler) as server:
        async with make_client("b", ("Authorization", "Bearer s3")) as client:
            assert (await client.get(server.url)).status_code == 500
    assert seen == ["Bearer s3"]
