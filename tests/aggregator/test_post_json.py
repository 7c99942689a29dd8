"""`EdgeTransport.post_json`, the lean POST of modern backend requests, against a real loopback server: for every
kind of answer it gives `upstream_modern.request` the outcome the httpx2 path (`handle_async_request`) gives,
puts the same request on the wire, and keeps or drops the connection as that path does."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx2
import pytest
from mcp.shared.exceptions import MCPError

from tests.support.canned_http import Answer, CannedServer, Request
from tests.support.waiting import free_port
from xds_control.aggregator import upstream_modern
from xds_control.aggregator.rpc_errors import GatewayError
from xds_control.aggregator.upstream import map_post_error
from xds_control.aggregator.upstream_http import EdgeTransport, make_http_client
from xds_control.aggregator.upstream_transport import Http11Transport

MODERN = "2026-07-28"
LIMIT = 4096
RESULT = {"content": [{"type": "text", "text": "hi"}], "isError": False, "resultType": "complete"}


class ThroughHttpx2(httpx2.AsyncBaseTransport):
    """The same HTTP/1.1 client, seen by the edge as any httpx2 transport: `post_json` takes its httpx2 path."""

    def __init__(self) -> None:
        self.inner = Http11Transport(None)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def lean_client() -> httpx2.AsyncClient:
    return make_http_client("b", headers=lambda: ("Authorization", "Bearer s3cret"), max_response_bytes=LIMIT)


def httpx2_client() -> httpx2.AsyncClient:
    edge = EdgeTransport(
        "b", ThroughHttpx2(), headers=lambda: ("Authorization", "Bearer s3cret"), max_response_bytes=LIMIT
    )
    return httpx2.AsyncClient(transport=edge)


async def outcome(client: httpx2.AsyncClient, url: str) -> Any:
    """What the caller of `upstream_modern.request` gets: the result, or the mapped error's wire fields."""
    try:
        return {
            "result": await upstream_modern.request(
                client, url, MODERN, "tools/call", {"name": "x", "arguments": {}}, max_event_bytes=LIMIT
            )
        }
    except Exception as exc:
        mapped = map_post_error("b", exc, 1.0)
        assert isinstance(mapped, MCPError | GatewayError), mapped
        return {
            "error": type(mapped).__name__,
            "code": mapped.code,
            "message": mapped.message,
            "data": mapped.data,
        }


def result_for(request: Request, **extra: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request.json()["id"], "result": {**RESULT, **extra}}


def sse(request: Request) -> Answer:
    message = result_for(request)
    text = f"event: message\ndata: {json.dumps(message)}\n\n".encode()
    return Answer(200, text, {"content-type": "text/event-stream"})


def gzipped(request: Request) -> Answer:
    return Answer(
        200,
        gzip.compress(json.dumps(result_for(request)).encode()),
        {"content-type": "application/json", "content-encoding": "gzip"},
    )


ANSWERS = {
    "result": lambda r: Answer.json(result_for(r)),
    "result, chunked": lambda r: Answer.json(result_for(r), framing="chunked"),
    "result, close-delimited": lambda r: Answer.json(result_for(r), framing="close"),
    "result with a charset": lambda r: Answer(
        200, json.dumps(result_for(r)).encode(), {"content-type": "application/json; charset=utf-8"}
    ),
    "backend's own error": lambda r: Answer.json(
        {
            "jsonrpc": "2.0",
            "id": r.json()["id"],
            "error": {"code": -32602, "message": "Unknown tool: x", "data": {"t": 1}},
        }
    ),
    "backend's own error at 400": lambda r: Answer.json(
        {"jsonrpc": "2.0", "id": r.json()["id"], "error": {"code": -32602, "message": "bad"}}, status=400
    ),
    "a result off the schema": lambda r: Answer.json(
        {"jsonrpc": "2.0", "id": r.json()["id"], "result": {"content": "not a list"}}
    ),
    "not JSON": lambda r: Answer(200, b"this is not json", {"content-type": "application/json"}),
    "empty": lambda r: Answer(200, b"", {"content-type": "application/json"}),
    "JSON null": lambda r: Answer(200, b"null", {"content-type": "application/json"}),
    "no result or error": lambda r: Answer.json({"jsonrpc": "2.0", "id": 1}),
    "over the size limit": lambda r: Answer.json(result_for(r, pad="x" * (LIMIT + 1))),
    "far over the size limit": lambda r: Answer.json(result_for(r, pad="x" * 1_000_000)),
    "event stream": sse,
    "gzip": gzipped,
    "text/html 200": lambda r: Answer(200, b"<html>hello</html>", {"content-type": "text/html"}),
    "401": lambda r: Answer(401, b'{"error":"invalid_token"}', {"content-type": "application/json"}),
    "503 no healthy upstream": lambda r: Answer(503, b"no healthy upstream", {"content-type": "text/plain"}),
    "429 with retry-after": lambda r: Answer(429, b"slow down", {"content-type": "text/plain", "retry-after": "7"}),
    "504 upstream request timeout": lambda r: Answer(504, b"upstream request timeout", {"content-type": "text/plain"}),
    "not HTTP": lambda r: b"SPDY/3 garbage\r\n\r\n",
    "cut mid-body": lambda r: (
        b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{"jsonrpc"'
    ),
}


@pytest.mark.parametrize("kind", list(ANSWERS))
async def test_the_lean_post_gives_what_the_httpx2_path_gives(kind: str) -> None:
    async with CannedServer(ANSWERS[kind]) as server:
        got = {}
        for name, make in (("lean", lean_client), ("httpx2", httpx2_client)):
            client = make()
            try:
                got[name] = await outcome(client, server.url)
            finally:
                await client.aclose()
    assert got["lean"] == got["httpx2"]
    lean, through = server.requests
    assert lean.method == through.method == "POST" and lean.path == through.path
    assert {**lean.json(), "id": 0} == {**through.json(), "id": 0}  # the request ids differ (one counter)
    for sent in (lean, through):
        assert sent.headers.pop("content-length") == str(len(sent.body))
    assert lean.headers == through.headers and lean.headers["authorization"] == "Bearer s3cret"


async def test_the_plain_answer_is_decoded_once_and_its_connection_kept() -> None:
    async with CannedServer(ANSWERS["result"]) as server:
        client = lean_client()
        try:
            for _ in range(3):
                assert (await outcome(client, server.url))["result"] == RESULT
        finally:
            await client.aclose()
    assert server.connections == 1


@pytest.mark.parametrize("kind", ["far over the size limit", "over the size limit", "event stream", "401"])
async def test_a_connection_whose_answer_was_not_read_to_the_end_is_not_reused(kind: str) -> None:
    """A body far over the limit is abandoned part-read, and its connection with it; the others (a body just
    over the limit arrives whole in one read) are read to their end and keep the connection."""
    async with CannedServer(ANSWERS[kind]) as server:
        client = lean_client()
        try:
            for _ in range(2):
                await outcome(client, server.url)
        finally:
            await client.aclose()
    assert server.connections == (2 if kind == "far over the size limit" else 1)


async def test_a_refused_connection_is_the_same_error_both_ways() -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    got = []
    for make in (lean_client, httpx2_client):
        client = make()
        try:
            got.append(await outcome(client, url))
        finally:
            await client.aclose()
    assert got[0] == got[1] and got[0]["data"]["category"] == "connection_refused"
