"""A legacy session's request is answered as one JSON body when nothing but its response can follow it, and as
an SSE stream when it asked for progress: real backends, the in-process aggregator, a raw JSON-RPC client that
sees the wire."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx2
import pytest

from tests.aggregator.conftest import Fleet
from tests.aggregator.support import cancelled
from tests.support.waiting import async_wait_until
from xds_control.aggregator.inbound import Rules, classify

pytestmark = pytest.mark.integration

LEGACY = "2025-11-25"
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


class Session:
    def __init__(self, http: httpx2.AsyncClient, url: str) -> None:
        self.http, self.url, self.headers, self.ids = http, url, dict(ACCEPT), 0

    async def open(self) -> None:
        params = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
        response = await self.post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params})
        self.headers |= {"mcp-session-id": response.headers["mcp-session-id"], "mcp-protocol-version": LEGACY}
        assert (await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})).status_code == 202

    async def post(self, body: dict[str, Any]) -> httpx2.Response:
        return await self.http.post(self.url, content=json.dumps(body), headers=self.headers)

    async def call(self, name: str, arguments: dict[str, Any], meta: dict[str, Any] | None = None) -> httpx2.Response:
        self.ids += 1
        params: dict[str, Any] = {"name": name, "arguments": arguments, **({"_meta": meta} if meta else {})}
        return await self.post({"jsonrpc": "2.0", "id": self.ids, "method": "tools/call", "params": params})


def sse_messages(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:") and line[5:].strip()]


async def test_plain_calls_and_fast_failures_are_json_and_a_call_with_progress_streams(
    serve: Any, fleet: Fleet
) -> None:
    entries = [fleet.entry("alpha"), {"name": "dead", "url": "http://127.0.0.1:9/mcp"}]
    async with serve(entries, healthy=("alpha",)) as running:
        async with httpx2.AsyncClient(timeout=30) as http:
            session = Session(http, running.url)
            await session.open()

            answer = await session.call("alpha_echo", {"text": "hi"})
            assert answer.headers["content-type"].startswith("application/json")
            assert answer.json()["result"]["content"][0]["text"] == "hi"
            for tool, code in (("nope", -32602), ("dead_echo", -32050)):  # unknown; fast-failed
                failed = await session.call(tool, {"text": "x"})
                assert (
                    failed.headers["content-type"].startswith("application/json")
                    and failed.json()["error"]["code"] == code
                )

            streamed = await session.call("alpha_slow", {"seconds": 0.3}, meta={"progressToken": "p1"})
            assert streamed.headers["content-type"].startswith("text/event-stream")
            messages = sse_messages(streamed.text)
            progress = [m for m in messages if m.get("method") == "notifications/progress"]
            assert progress and all(m["params"]["progressToken"] == "p1" for m in progress)
            assert messages[-1]["result"]["content"][0]["text"] == "slept 0.3s"

            again = await session.call("alpha_echo", {"text": "after"})  # the session is unharmed by either mode
            assert (
                again.headers["content-type"].startswith("application/json")
                and again.json()["result"]["content"][0]["text"] == "after"
            )


@pytest.mark.parametrize(
    ("body", "alone"),
    [
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}', True),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping"}', True),
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{"progressToken":7}}}', False),
        (b'{"jsonrpc":"2.0","method":"notifications/initialized"}', False),
        (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', False),
        (b'{"jsonrpc":"2.0","id":1,"result":{}}', False),
        (b"not json", False),
    ],
)
def test_which_requests_are_answered_alone(body: bytes, alone: bool) -> None:
    headers = [(b"mcp-session-id", b"s1"), (b"accept", b"application/json, text/event-stream")]
    scope = {"type": "http", "method": "POST", "path": "/mcp", "headers": headers}
    assert classify(scope, body, Rules((), ())).json_answer is alone


async def test_a_cancelled_json_answered_call_ends_its_post_and_the_backend_call(serve: Any, fleet: Fleet) -> None:
    async with serve([fleet.entry("alpha")]) as running:
        async with httpx2.AsyncClient(timeout=30) as http:
            session = Session(http, running.url)
            await session.open()
            before = cancelled("slow")
            call = asyncio.create_task(session.call("alpha_slow", {"seconds": 30}))
            upstream = running.aggregator.gateway.upstreams["alpha"]
            # the backend session opens inside the call's handling: the request is registered before the cancel
            await async_wait_until(
                lambda: upstream.open_sessions >= 1 or call.done(), what="the backend session to open"
            )
            cancel = {
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": {"requestId": session.ids, "reason": "test"},
            }
            assert (await session.post(cancel)).status_code == 202
            async with asyncio.timeout(10):
                answered = await call  # the POST ends: it does not wait out the 30 s
            assert answered.headers["content-type"].startswith("application/json")
            assert answered.json()["error"]["code"] == -32800  # the SDK's answer to a cancelled request
            await async_wait_until(
                lambda: cancelled("slow") == before + 1, what="the aggregator's call to end cancelled"
            )
            after = await session.call("alpha_echo", {"text": "next"})
            assert after.json()["result"]["content"][0]["text"] == "next"
