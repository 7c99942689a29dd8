"""The listen stream to a 2026-07-28 backend (backend_listen.py) against a canned HTTP server: what it sends,
which events count as list changes, what a hostile or refusing backend gets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.canned_http import Answer, CannedServer, Request
from xds_control.aggregator.backend_http import BackendHttp
from xds_control.aggregator.backend_listen import listen_once


def sse(*messages: Any) -> bytes:
    return b"".join(f"event: message\ndata: {json.dumps(m)}\n\n".encode() for m in messages)


def note(method: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method}


async def test_each_list_change_on_the_stream_is_reported_and_nothing_else() -> None:
    seen: list[Request] = []

    async def handler(request: Request) -> Answer:
        seen.append(request)
        body = (
            sse(
                note("notifications/subscriptions/acknowledged"),
                note("notifications/tools/list_changed"),
                note("notifications/resources/updated"),  # not asked for: ignored
                note("notifications/prompts/list_changed"),
                "not an object",
            )
            + b"event: message\ndata: {broken\n\n"
        )
        return Answer(body=body, headers={"content-type": "text/event-stream"}, framing="close")

    changes: list[int] = []
    acknowledged: list[bool] = []

    async def on_change() -> None:
        changes.append(1)

    http = BackendHttp("modern", max_response_bytes=1 << 20)
    async with CannedServer(handler) as server:
        await listen_once(http, server.url, "2026-07-28", on_change, 1 << 16, lambda: acknowledged.append(True))
    await http.aclose()
    assert len(changes) == 2 and acknowledged == [True]
    sent = seen[0].json()
    assert sent["method"] == "subscriptions/listen" and seen[0].headers["mcp-method"] == "subscriptions/listen"
    assert sent["params"]["notifications"] == {
        "toolsListChanged": True, "promptsListChanged": True, "resourcesListChanged": True,
    }  # fmt: skip
    assert sent["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] == "2026-07-28"


@pytest.mark.parametrize(
    "answer",
    [
        Answer.json({"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "Method not found"}}, status=404),
        Answer(status=500, body=b"boom"),
        Answer.json({"jsonrpc": "2.0", "id": 1, "result": {}}),
    ],
)
async def test_a_backend_that_refuses_or_fails_raises_for_the_retry_loop(answer: Answer) -> None:
    async def handler(request: Request) -> Answer:
        return answer

    changes: list[int] = []

    async def on_change() -> None:
        changes.append(1)

    http = BackendHttp("modern", max_response_bytes=1 << 20)
    async with CannedServer(handler) as server:
        with pytest.raises(ConnectionError):
            await listen_once(http, server.url, "2026-07-28", on_change, 1 << 16)
    await http.aclose()
    assert changes == []
