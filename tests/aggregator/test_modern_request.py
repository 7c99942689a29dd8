"""A modern backend request (modern_request.py over backend_http.py) against a real loopback server: for every
kind of answer, the outcome its caller gets (the result, or the mapped error's wire fields) is the one the
answer gave before the upstream layer became one (`EXPECTED`, recorded then through both of its paths, which
agreed); the request on the wire is the one sent then; connections are kept or dropped as then."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from tests.support.canned_http import Answer, CannedServer, Request
from tests.support.waiting import free_port
from xds_control.aggregator import modern_request
from xds_control.aggregator.backend_http import BackendHttp
from xds_control.aggregator.rpc_errors import GatewayError
from xds_control.aggregator.upstream import map_post_error

MODERN = "2026-07-28"
LIMIT = 4096
RESULT = {"content": [{"type": "text", "text": "hi"}], "isError": False, "resultType": "complete"}


def lean_client() -> BackendHttp:
    return BackendHttp("b", headers=lambda: ("Authorization", "Bearer s3cret"), max_response_bytes=LIMIT)


async def outcome(client: BackendHttp, url: str) -> Any:
    """What the caller of `modern_request.request` gets: the result, or the mapped error's wire fields."""
    try:
        return {
            "result": await modern_request.request(
                client, url, MODERN, "tools/call", {"name": "x", "arguments": {}}, max_event_bytes=LIMIT
            )
        }
    except Exception as exc:
        mapped = map_post_error("b", exc, 1.0)
        assert isinstance(mapped, MCPError | GatewayError), mapped
        return {
            "error": type(mapped).__name__,
            "code": mapped.error.code,
            "message": mapped.error.message,
            "data": mapped.error.data,
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


EXPECTED = {  # what each answer gave at the commit before backend_http.py (then EdgeTransport.post_json)
    "result": {"result": RESULT},
    "result, chunked": {"result": RESULT},
    "result, close-delimited": {"result": RESULT},
    "result with a charset": {"result": RESULT},
    "backend's own error": {"error": "MCPError", "code": -32602, "message": "Unknown tool: x", "data": {"t": 1}},
    "backend's own error at 400": {"error": "MCPError", "code": -32602, "message": "bad", "data": None},
    "a result off the schema": {
        "error": "GatewayError",
        "code": -32051,
        "message": "backend 'b' failed: protocol error: the result does not match the MCP schema",
        "data": {"backend": "b", "category": "protocol_error"},
    },
    "not JSON": {
        "error": "GatewayError",
        "code": -32051,
        "message": "backend 'b' failed: protocol error: the answer is not MCP (not JSON-RPC over JSON or SSE)",
        "data": {"backend": "b", "category": "protocol_error"},
    },
    "empty": {
        "error": "GatewayError",
        "code": -32051,
        "message": "backend 'b' failed: protocol error: the response is not JSON-RPC",
        "data": {"backend": "b", "category": "protocol_error"},
    },
    "JSON null": {
        "error": "GatewayError",
        "code": -32051,
        "message": "backend 'b' failed: protocol error: the response is not JSON-RPC",
        "data": {"backend": "b", "category": "protocol_error"},
    },
    "no result or error": {
        "error": "GatewayError",
        "code": -32051,
        "message": "backend 'b' failed: protocol error: the response is not JSON-RPC",
        "data": {"backend": "b", "category": "protocol_error"},
    },
    "over the size limit": {
        "error": "GatewayError",
        "code": -32051,
        "message": "backend 'b' failed: response too large: the answer exceeds the aggregator's response size limit",
        "data": {"backend": "b", "category": "response_too_large"},
    },
    "far over the size limit": {
        "error": "GatewayError",
        "code": -32051,
        "message": "backend 'b' failed: response too large: the answer exceeds the aggregator's response size limit",
        "data": {"backend": "b", "category": "response_too_large"},
    },
    "event stream": {"result": RESULT},
    "gzip": {"result": RESULT},
    "text/html 200": {
        "error": "GatewayError",
        "code": -32051,
        "message": "backend 'b' failed: protocol error: the response is not JSON-RPC",
        "data": {"backend": "b", "category": "protocol_error"},
    },
    "401": {
        "error": "GatewayError",
        "code": -32053,
        "message": "backend 'b' rejected the gateway's credentials (HTTP 401)",
        "data": {"backend": "b", "category": "authentication_failed", "status": 401},
    },
    "503 no healthy upstream": {
        "error": "GatewayError",
        "code": -32050,
        "message": "backend 'b' is unavailable (state: no_healthy_upstream)",
        "data": {
            "backend": "b",
            "state": "no_healthy_upstream",
            "retry_after": None,
            "category": "no_healthy_upstream",
            "status": 503,
        },
    },
    "429 with retry-after": {
        "error": "GatewayError",
        "code": -32051,
        "message": "backend 'b' failed: rate limited (HTTP 429)",
        "data": {"backend": "b", "category": "rate_limited", "status": 429},
    },
    "504 upstream request timeout": {
        "error": "GatewayError",
        "code": -32052,
        "message": "backend 'b' did not answer in time",
        "data": {"backend": "b", "category": "timeout"},
    },
    "not HTTP": {
        "error": "GatewayError",
        "code": -32051,
        "message": "backend 'b' failed: protocol error: the answer is not MCP (not JSON-RPC over JSON or SSE)",
        "data": {"backend": "b", "category": "protocol_error"},
    },
    "cut mid-body": {
        "error": "GatewayError",
        "code": -32051,
        "message": "backend 'b' failed: connection reset",
        "data": {"backend": "b", "category": "connection_reset"},
    },
}
SENT_HEADERS = {
    "host",
    "content-length",
    "authorization",
    "content-type",
    "accept",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
}


@pytest.mark.parametrize("kind", list(ANSWERS))
async def test_every_kind_of_answer_gives_what_it_gave_before(kind: str) -> None:
    async with CannedServer(ANSWERS[kind]) as server:
        client = lean_client()
        try:
            got = await outcome(client, server.url)
        finally:
            await client.aclose()
    assert got == EXPECTED[kind]
    (sent,) = server.requests
    assert sent.method == "POST" and sent.path == "/mcp"
    message = sent.json()
    assert message["method"] == "tools/call" and message["params"]["name"] == "x"
    assert message["params"]["_meta"] == modern_request.envelope(MODERN)
    assert set(sent.headers) == SENT_HEADERS and sent.headers["content-length"] == str(len(sent.body))
    assert sent.headers["authorization"] == "Bearer s3cret" and sent.headers["mcp-method"] == "tools/call"
    assert sent.headers["mcp-protocol-version"] == MODERN and sent.headers["mcp-name"] == "x"
    assert sent.headers["accept"] == "application/json, text/event-stream"


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


async def test_a_refused_connection_is_connection_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    client = lean_client()
    try:
        got = await outcome(client, url)
    finally:
        await client.aclose()
    assert got == {
        "error": "GatewayError",
        "code": -32051,
        "message": "backend 'b' failed: connection refused",
        "data": {"backend": "b", "category": "connection_refused"},
    }
