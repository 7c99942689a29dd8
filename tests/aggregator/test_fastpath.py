"""The hot path: plain 2026-07-28 tools/call answered before the SDK's stack (fastpath.py), and modern backends
called with plain JSON-RPC POSTs (modern_request.py). Each answer is compared with the SDK path's."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anyio
import httpx2
import pytest
from prometheus_client import REGISTRY

from tests.aggregator.conftest import Fleet, Running
from tests.aggregator.support import (
    MODERN,
    MODERN_ENVELOPE,
    MODERN_HEADERS,
    legacy_call,
    legacy_session,
    mcp_client,
    post_jsonrpc,
)
from tests.support.canned_http import Answer, CannedServer, Request
from tests.support.waiting import async_wait_until
from xds_control.aggregator import modern_request
from xds_control.aggregator.backend_http import BackendHttp
from xds_control.aggregator.upstream import map_post_error

pytestmark = pytest.mark.integration

ENVELOPE = MODERN_ENVELOPE


def body(
    tool: str, arguments: dict[str, Any] | None = None, *, request_id: int = 7, meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    params = {
        "name": tool,
        "arguments": arguments if arguments is not None else {},
        "_meta": {**ENVELOPE, **(meta or {})},
    }
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


def headers(tool: str, **extra: str) -> dict[str, str]:
    return {**MODERN_HEADERS, "mcp-method": "tools/call", "mcp-name": tool, **extra}


async def both_paths(
    running: Running, message: dict[str, Any], request_headers: dict[str, str]
) -> tuple[tuple[int, Any], tuple[int, Any], int]:
    """The answer with the fast path on and with it off, and how many requests it took."""
    fast = running.aggregator.fast_calls
    assert fast is not None
    before = fast.taken
    fast.enabled = lambda: True
    on = await post_jsonrpc(running.url, message, request_headers)
    fast.enabled = lambda: False
    off = await post_jsonrpc(running.url, message, request_headers)
    return on, off, fast.taken - before


@pytest.mark.parametrize("protocol", ["legacy", "modern"])
async def test_a_plain_call_is_answered_as_the_sdk_answers_it(serve: Any, fleet: Fleet, protocol: str) -> None:
    async with serve([fleet.entry("alpha", protocol=protocol)]) as running:
        on, off, taken = await both_paths(running, body("alpha_echo", {"text": "hi"}), headers("alpha_echo"))
        assert taken == 1
        assert on == off
        status, answer = on
        assert status == 200 and answer["id"] == 7 and answer["result"]["content"][0]["text"] == "hi"
        assert answer["result"]["resultType"] == "complete"
        assert answer["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "xds-control"


async def test_errors_are_answered_as_the_sdk_answers_them(serve: Any, fleet: Fleet) -> None:
    entries = [fleet.entry("alpha", protocol="modern"), {"name": "dead", "url": "http://127.0.0.1:9/mcp"}]
    async with serve(entries, healthy=("alpha",)) as running:
        cases = {  # tool, arguments, the expected code
            "unknown tool": ("nope", {}, -32602),
            "invalid arguments": ("alpha_add", {"a": "one", "b": 2}, -32602),
            "unavailable backend": ("dead_echo", {}, -32050),
        }
        for case, (tool, arguments, code) in cases.items():
            on, off, taken = await both_paths(running, body(tool, arguments), headers(tool))
            assert taken == 1, case
            assert on == off, case
            assert on[1]["error"]["code"] == code, case
        assert on[1]["error"]["data"] == {"backend": "dead", "state": "unknown", "retry_after": None}


@pytest.mark.parametrize(
    ("case", "change"),
    [
        ("legacy client", {"headers": {"mcp-protocol-version": "2025-11-25"}}),
        ("progress token", {"meta": {"progressToken": 1}}),
        ("header and body disagree", {"headers": {"mcp-name": "alpha_add"}}),
        ("unknown host", {"headers": {"host": "evil.example:80"}}),
        ("missing envelope", {"drop_meta": True}),
        ("a batch", {"batch": True}),
    ],
)
async def test_anything_but_the_plain_case_goes_to_the_sdk(
    serve: Any, fleet: Fleet, case: str, change: dict[str, Any]
) -> None:
    async with serve([fleet.entry("alpha")]) as running:
        message: Any = body("alpha_echo", {"text": "hi"}, meta=change.get("meta"))
        if change.get("drop_meta"):
            del message["params"]["_meta"]
        if change.get("batch"):
            message = [message]
        request_headers = headers("alpha_echo", **change.get("headers", {}))
        fast = running.aggregator.fast_calls
        assert fast is not None
        fast.enabled = lambda: True
        async with httpx2.AsyncClient(trust_env=False, timeout=30) as http:
            on = await http.post(running.url, content=json.dumps(message), headers=request_headers)
            fast.enabled = lambda: False
            off = await http.post(running.url, content=json.dumps(message), headers=request_headers)
        assert fast.taken == 0, case
        assert (on.status_code, on.headers.get("content-type")) == (off.status_code, off.headers.get("content-type")), (
            case
        )


def list_request(method: str, request_id: int, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {**params, "_meta": ENVELOPE}}


@pytest.mark.parametrize("method", ["tools/list", "resources/list", "resources/templates/list", "prompts/list"])
async def test_a_plain_list_is_answered_as_the_sdk_answers_it(serve: Any, fleet: Fleet, method: str) -> None:
    async with serve([fleet.entry("weather"), fleet.entry("many")]) as running:
        fast = running.aggregator.fast_calls
        assert fast is not None
        list_headers = {**MODERN_HEADERS, "mcp-method": method}
        first = await post_jsonrpc(running.url, list_request(method, 1), list_headers)  # the SDK's answer, kept
        hits = fast.lists.pages.hits
        kept = await post_jsonrpc(running.url, list_request(method, 2), list_headers)
        assert fast.lists.pages.hits == hits + 1
        fast.enabled = lambda: False
        sdk = await post_jsonrpc(running.url, list_request(method, 2), list_headers)
        assert kept == sdk
        assert first[1]["result"] == kept[1]["result"] and kept[1]["id"] == 2
        if method == "tools/list":  # a later page is kept under its own cursor
            cursor = first[1]["result"]["nextCursor"]
            fast.enabled = lambda: True
            second_page = await post_jsonrpc(running.url, list_request(method, 3, cursor=cursor), list_headers)
            again = await post_jsonrpc(running.url, list_request(method, 4, cursor=cursor), list_headers)
            assert fast.lists.pages.hits == hits + 2
            assert again[1]["result"] == second_page[1]["result"] != first[1]["result"]


@pytest.mark.parametrize(
    ("case", "params", "fails"),
    [
        ("progress token", {"_meta": {**ENVELOPE, "progressToken": 1}}, False),
        ("an unknown param", {"_meta": ENVELOPE, "filter": "x"}, False),
        ("a cursor that is not a string", {"_meta": ENVELOPE, "cursor": 5}, True),
        ("a stale cursor", {"_meta": ENVELOPE, "cursor": "not-a-cursor"}, True),
    ],
)
async def test_a_list_that_is_not_plain_or_fails_is_never_kept(
    serve: Any, fleet: Fleet, case: str, params: dict[str, Any], fails: bool
) -> None:
    async with serve([fleet.entry("weather")]) as running:
        fast = running.aggregator.fast_calls
        assert fast is not None
        message = {"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": params}
        for _ in range(2):
            status, answer = await post_jsonrpc(running.url, message, {**MODERN_HEADERS, "mcp-method": "tools/list"})
            assert ("error" in answer) == fails, (case, status, answer)
        assert (len(fast.lists.pages), fast.lists.pages.hits) == (0, 0), case


def fast_failed(backend: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "xds_control_aggregator_fast_failed_calls_total", {"backend": backend, "state": "unknown"}
        )
        or 0.0
    )


async def test_a_legacy_call_to_an_unroutable_backend_is_answered_as_the_sdk_answers_it(
    serve: Any, fleet: Fleet
) -> None:
    entries = [fleet.entry("alpha", protocol="legacy"), {"name": "dead", "url": "http://127.0.0.1:9/mcp"}]
    async with serve(entries, healthy=("alpha",)) as running, httpx2.AsyncClient(trust_env=False, timeout=30) as http:
        fast = running.aggregator.fast_calls
        assert fast is not None
        session_headers = await legacy_session(http, running.url)
        answers = []
        for enabled in (True, False):
            fast.enabled = lambda on=enabled: on
            before_taken, before_failed = fast.taken, fast_failed("dead")
            response = await http.post(running.url, content=legacy_call("dead_echo"), headers=session_headers)
            answers.append(
                (
                    response.status_code,
                    response.headers.get("content-type"),
                    response.headers.get("mcp-session-id"),
                    response.json(),
                )
            )
            assert fast.taken - before_taken == (1 if enabled else 0)
            assert fast_failed("dead") - before_failed == 1
        assert answers[0] == answers[1]
        status, content_type, session_id, message = answers[0]
        assert (status, content_type, session_id) == (200, "application/json", session_headers["mcp-session-id"])
        assert message["id"] == 9 and message["error"]["code"] == -32050
        assert message["error"]["data"] == {"backend": "dead", "state": "unknown", "retry_after": None}


@pytest.mark.parametrize(
    ("case", "tool", "change"),
    [
        ("unknown tool", "nope", {}),
        ("progress token", "dead_echo", {"meta": {"progressToken": 1}}),
        ("unknown session", "dead_echo", {"headers": {"mcp-session-id": "no-such-session"}}),
        ("unsupported version header", "dead_echo", {"headers": {"mcp-protocol-version": "2099-01-01"}}),
        ("no event-stream in Accept", "dead_echo", {"headers": {"accept": "application/json"}}),
    ],
)
async def test_every_other_legacy_request_goes_to_the_sdk(
    serve: Any, fleet: Fleet, case: str, tool: str, change: dict[str, Any]
) -> None:
    entries = [fleet.entry("alpha", protocol="legacy"), {"name": "dead", "url": "http://127.0.0.1:9/mcp"}]
    async with serve(entries, healthy=("alpha",)) as running, httpx2.AsyncClient(trust_env=False, timeout=30) as http:
        fast = running.aggregator.fast_calls
        assert fast is not None
        fast.enabled = lambda: True
        request_headers = {**await legacy_session(http, running.url), **change.get("headers", {})}
        answer = await http.post(
            running.url, content=legacy_call(tool, meta=change.get("meta")), headers=request_headers
        )
        assert fast.taken == 0, case
        assert answer.status_code in (200, 400, 404, 406), case


def calls(tool: str, outcome: str) -> float:
    labels = {"backend": "alpha", "method": "tools/call", "tool": tool, "outcome": outcome}
    return REGISTRY.get_sample_value("xds_control_aggregator_calls_total", labels) or 0.0


def upstream_requests() -> float:
    return REGISTRY.get_sample_value("xds_control_aggregator_upstream_http_requests_total", {"backend": "alpha"}) or 0.0


@pytest.mark.parametrize("protocol", ["legacy", "modern"])
async def test_a_client_that_goes_away_cancels_the_backend_call(serve: Any, fleet: Fleet, protocol: str) -> None:
    async with serve([fleet.entry("alpha", protocol=protocol)]) as running:
        fast = running.aggregator.fast_calls
        assert fast is not None
        fast.enabled = lambda: True
        before, sent = calls("slow", "cancelled"), upstream_requests()
        call = asyncio.ensure_future(
            post_jsonrpc(running.url, body("alpha_slow", {"seconds": 30}), headers("alpha_slow"))
        )
        await async_wait_until(
            lambda: upstream_requests() > sent and fast.taken == 1, what="the call to reach the backend"
        )
        call.cancel()  # closes the connection: the modern cancellation signal
        await async_wait_until(
            lambda: calls("slow", "cancelled") == before + 1, what="the aggregator's call to end cancelled"
        )
        status, answer = await post_jsonrpc(running.url, body("alpha_echo", {"text": "next"}), headers("alpha_echo"))
        assert status == 200 and answer["result"]["content"][0]["text"] == "next"


# -- modern backends through plain POSTs (the SDK server path in front) ---------------------------


async def test_progress_and_cancellation_through_a_modern_backend(serve: Any, fleet: Fleet) -> None:
    async with serve([fleet.entry("alpha", protocol="modern")]) as running, mcp_client(running.url, MODERN) as client:
        seen: list[tuple[float, float | None]] = []

        async def progress(value: float, total: float | None, message: str | None) -> None:
            seen.append((value, total))

        result = await client.call_tool("alpha_slow", {"seconds": 0.2}, progress_callback=progress)
        assert result.content[0].text == "slept 0.2s" and seen and seen[-1] == (2, 2)

        before = calls("slow", "cancelled")
        started = asyncio.Event()

        async def working(value: float, total: float | None, message: str | None) -> None:
            started.set()

        with anyio.move_on_after(10) as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: client.call_tool("alpha_slow", {"seconds": 30}, progress_callback=working))
                await started.wait()
                tg.cancel_scope.cancel()
        assert not scope.cancelled_caught
        await async_wait_until(
            lambda: calls("slow", "cancelled") == before + 1, what="the aggregator's call to end cancelled"
        )
        assert running.aggregator.gateway.upstreams["alpha"].open_sessions == 0


async def answer_of(handler: Any, **kwargs: Any) -> Any:
    """modern_request.request against a canned backend over the real HTTP edge; the result or the mapped error."""
    async with CannedServer(handler) as server:
        http = BackendHttp("b")
        try:
            return await modern_request.request(
                http, server.url, MODERN, "tools/call", {"name": "x"}, max_event_bytes=1000, **kwargs
            )
        except Exception as exc:
            return map_post_error("b", exc, 1.0)
        finally:
            await http.aclose()


def sse(*messages: dict[str, Any]) -> Answer:
    text = "".join(f"event: message\ndata: {json.dumps(m)}\n\n" for m in messages)
    return Answer(200, text.encode(), {"content-type": "text/event-stream"})


@pytest.mark.integration
async def test_the_modern_wire_request_and_its_answers() -> None:
    sent: list[Request] = []

    def ok(request: Request) -> Answer:
        sent.append(request)
        message = request.json()
        return Answer.json({"jsonrpc": "2.0", "id": message["id"], "result": {"content": [], "resultType": "complete"}})

    assert await answer_of(ok) == {"content": [], "resultType": "complete"}
    (request,) = sent
    message = request.json()
    assert (
        request.headers["mcp-method"] == "tools/call"
        and request.headers["mcp-name"] == "x"
        and request.headers["mcp-protocol-version"] == MODERN
    )
    assert message["params"]["_meta"] == modern_request.envelope(MODERN) and message["method"] == "tools/call"

    seen: list[float] = []

    async def progress(value: float, total: float | None, text: str | None) -> None:
        seen.append(value)

    def streamed(request: Request) -> Answer:
        request_id = request.json()["id"]
        note = {
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": {"progressToken": request_id, "progress": 1},
        }
        return sse(note, {"jsonrpc": "2.0", "id": request_id, "result": {"content": [], "resultType": "complete"}})

    assert await answer_of(streamed, progress=progress) == {"content": [], "resultType": "complete"} and seen == [1]

    def own_error(request: Request) -> Answer:
        return Answer.json({"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": "mine", "data": {"x": 1}}})

    error = await answer_of(own_error)
    assert (error.code, error.message, error.data) == (
        -32000,
        "mine",
        {"x": 1},
    )  # a backend's own error passes unchanged

    for bad, category in [
        (lambda r: Answer.json({"jsonrpc": "2.0", "id": 1, "result": {"content": "not a list"}}), "protocol_error"),
        (lambda r: Answer.json({"jsonrpc": "2.0", "id": 1}), "protocol_error"),
        (lambda r: sse({"jsonrpc": "2.0", "method": "notifications/message", "params": {}}), "protocol_error"),
        (
            lambda r: sse({"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "x" * 2000}]}}),
            "response_too_large",
        ),
        (lambda r: Answer(503, b"no healthy upstream", {"content-type": "text/plain"}), "no_healthy_upstream"),
        (lambda r: Answer(500, b"boom", {"content-type": "text/plain"}), "http_5xx"),
    ]:
        assert (await answer_of(bad)).data["category"] == category
