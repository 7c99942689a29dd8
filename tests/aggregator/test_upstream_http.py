"""The HTTP edge: what is not an MCP answer becomes a marked JSON-RPC error; errors map to the aggregator's codes."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx2
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from xds_control.aggregator.rpc_errors import BACKEND_AUTH_FAILED, BACKEND_FAILED, BACKEND_TIMEOUT, BACKEND_UNAVAILABLE
from xds_control.aggregator.upstream import _SessionExpired, map_error
from xds_control.aggregator.upstream_http import EDGE_MARKER, EdgeTransport

Handler = Callable[[httpx2.Request], httpx2.Response]


async def post(
    handler: Handler,
    *,
    headers: dict[str, str] | None = None,
    limit: int = 1024,
    credential: tuple[str, str] | None = None,
) -> httpx2.Response:
    edge = EdgeTransport("b", httpx2.MockTransport(handler), headers=lambda: credential, max_response_bytes=limit)
    async with httpx2.AsyncClient(transport=edge) as client:
        response = await client.post(
            "http://b/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=headers
        )
        await response.aread()
        return response


def edge_error(response: httpx2.Response) -> dict:
    body = response.json()
    assert response.status_code == 502 and body["error"]["data"][EDGE_MARKER] is True
    return body["error"]["data"]


def raising(exc: Exception) -> Handler:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise exc

    return handler


@pytest.mark.parametrize(
    ("exc", "category"),
    [
        (httpx2.ConnectError("All connection attempts failed"), "connection_refused"),
        (httpx2.ConnectError("[Errno -2] Name or service not known"), "connect_error"),
        (httpx2.ReadTimeout("slow"), "timeout"),
        (httpx2.RemoteProtocolError("bad"), "protocol_error"),
        (httpx2.ReadError("reset"), "connection_reset"),
    ],
)
async def test_transport_failures(exc: Exception, category: str) -> None:
    assert edge_error(await post(raising(exc)))["category"] == category


@pytest.mark.parametrize(
    ("status", "body", "category"),
    [
        (401, b'{"error":"invalid_token"}', "authentication_failed"),
        (403, b"forbidden", "authentication_failed"),
        (503, b"no healthy upstream", "no_healthy_upstream"),
        (503, b"overloaded", "http_5xx"),
        (
            503,
            b"upstream connect error or disconnect/reset before headers. reset reason: connection failure",
            "connection_refused",
        ),
        (504, b"upstream request timeout", "timeout"),
        (500, b"Internal Server Error", "http_5xx"),
        (429, b"slow down", "rate_limited"),
        (400, b"<html>", "http_4xx"),
    ],
)
async def test_http_failures(status: int, body: bytes, category: str) -> None:
    data = edge_error(
        await post(
            lambda r: httpx2.Response(
                status,
                content=body,
                headers={"content-type": "application/json" if body.startswith(b"{") else "text/plain"},
            )
        )
    )
    assert data["category"] == category and data["status"] == status


async def test_a_404_for_a_session_is_an_expired_session() -> None:
    data = edge_error(
        await post(
            lambda r: httpx2.Response(
                404, json={"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Session not found"}}
            ),
            headers={"mcp-session-id": "abc"},
        )
    )
    assert data["category"] == "session_expired"


async def test_a_backends_own_jsonrpc_error_passes_at_any_status() -> None:
    error = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "Unknown tool", "data": {"x": 1}}}
    response = await post(lambda r: httpx2.Response(400, json=error))
    assert response.status_code == 400 and response.json() == error


async def test_garbage_and_oversized_answers() -> None:
    garbage = await post(
        lambda r: httpx2.Response(200, content=b"this is not json", headers={"content-type": "application/json"})
    )
    assert edge_error(garbage)["category"] == "protocol_error"
    huge = await post(
        lambda r: httpx2.Response(
            200, content=b'{"a":"' + b"x" * 5000 + b'"}', headers={"content-type": "application/json"}
        ),
        limit=1024,
    )
    assert edge_error(huge)["category"] == "response_too_large"
    fine = await post(lambda r: httpx2.Response(200, json={"jsonrpc": "2.0", "id": 1, "result": {}}))
    assert fine.status_code == 200 and fine.json()["result"] == {}


async def test_the_credential_is_set_on_every_request_and_get_is_not_rewritten() -> None:
    seen: list[str | None] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.headers.get("authorization"))
        return httpx2.Response(500, text="boom")

    edge = EdgeTransport("b", httpx2.MockTransport(handler), headers=lambda: ("Authorization", "Bearer s3"))
    async with httpx2.AsyncClient(transport=edge) as client:
        assert (await client.get("http://b/mcp")).status_code == 500
    assert seen == ["Bearer s3"]


def marked(category: str, status: int | None = None) -> MCPError:
    data = {"backend": "b", "category": category, EDGE_MARKER: True}
    if status is not None:
        data["status"] = status
    return MCPError(-32603, f"backend {category}", data)


@pytest.mark.parametrize(
    ("exc", "code", "outcome"),
    [
        (marked("connection_refused"), BACKEND_FAILED, "transport"),
        (marked("http_5xx", 500), BACKEND_FAILED, "http_5xx"),
        (marked("authentication_failed", 401), BACKEND_AUTH_FAILED, "auth"),
        (marked("no_healthy_upstream", 503), BACKEND_UNAVAILABLE, "unavailable"),
        (marked("timeout"), BACKEND_TIMEOUT, "timeout"),
        (MCPError(types.REQUEST_TIMEOUT, "Request 'tools/call' timed out"), BACKEND_TIMEOUT, "timeout"),
        (MCPError(types.CONNECTION_CLOSED, "Connection closed"), BACKEND_FAILED, "transport"),
        (MCPError(types.PARSE_ERROR, "Failed to parse SSE message: x"), BACKEND_FAILED, "transport"),
        (ExceptionGroup("g", [marked("connection_reset")]), BACKEND_FAILED, "transport"),
    ],
)
def test_edge_errors_map_to_gateway_codes_naming_the_backend(exc: BaseException, code: int, outcome: str) -> None:
    mapped = map_error("b", exc, 2.0)
    assert mapped.code == code and mapped.outcome == outcome and mapped.data["backend"] == "b"
    assert EDGE_MARKER not in mapped.data
    assert "b" in mapped.message


def test_a_backends_own_error_passes_unchanged_and_bad_results_are_protocol_errors() -> None:
    own = MCPError(-32602, "Unknown tool: x", {"tool": "x"})
    assert map_error("b", own, None) is own
    assert isinstance(map_error("b", marked("session_expired", 404), None), _SessionExpired)
    try:
        types.CallToolResult.model_validate({"content": "nope"})
    except ValidationError as exc:
        mapped = map_error("b", exc, None)
    assert mapped.code == BACKEND_FAILED and mapped.data["category"] == "protocol_error"
    assert json.dumps(mapped.data)  # serializable
