"""A legacy session's plain tools/call answered by the endpoint in front of the SDK (endpoint.py): the SDK's
answer, the SDK's idle timer and the session mirror kept, `notifications/cancelled` honoured. Each answer is
compared with the SDK path's (the layer switched off)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx2
import pytest
from prometheus_client import REGISTRY

from tests.aggregator.conftest import Fleet, Running
from tests.aggregator.support import legacy_call, legacy_session, mcp_client
from tests.support.waiting import async_wait_until
from xds_control.aggregator import sdk_compat
from xds_control.aggregator.endpoint import Endpoint
from xds_control.aggregator.inbound import Rules, classify


def fast_path(running: Running) -> Endpoint:
    return running.aggregator.endpoint


def calls(tool: str, outcome: str) -> float:
    labels = {"backend": "alpha", "method": "tools/call", "tool": tool, "outcome": outcome}
    return REGISTRY.get_sample_value("xds_control_aggregator_calls_total", labels) or 0.0


def upstream_requests() -> float:
    return REGISTRY.get_sample_value("xds_control_aggregator_upstream_http_requests_total", {"backend": "alpha"}) or 0.0


def sdk_has(running: Running, session_id: str) -> bool:
    return sdk_compat.session_live(running.aggregator.server, session_id)


async def answer_of(
    http: httpx2.AsyncClient, url: str, content: bytes, headers: dict[str, str]
) -> tuple[int, str | None, str | None, Any]:
    response = await http.post(url, content=content, headers=headers)
    return (
        response.status_code,
        response.headers.get("content-type"),
        response.headers.get("mcp-session-id"),
        response.json(),
    )


CASES = {
    "a result": ("alpha_echo", {"text": "hi"}),
    "another result": ("alpha_add", {"a": 1, "b": 2.5}),
    "arguments off the schema": ("alpha_add", {"a": 1, "b": "two"}),
    "a missing argument": ("alpha_echo", {}),
}


def cancels(body: Any, session: str | None = "s1") -> tuple[Any, ...]:
    headers = [(b"mcp-session-id", session.encode())] if session else []
    scope = {"type": "http", "method": "POST", "path": "/mcp", "headers": headers}
    return classify(scope, json.dumps(body).encode(), Rules((), ())).cancels


def test_which_cancels_count() -> None:
    def cancel(request_id: Any, *, method: str = "notifications/cancelled", **extra: Any) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "method": method, "params": {"requestId": request_id}, **extra}

    assert cancels(cancel(7)) == (7,)
    assert cancels(cancel("8")) == (8,)  # "8" and 8 are one id, as in the SDK's dispatcher
    assert cancels([{"jsonrpc": "2.0", "method": "ping", "id": 3}, cancel(8)]) == (8,)  # a batch
    for ignored in (cancel(7, method="notifications/progress"), cancel(7, id=1), cancel(True), "garbage"):
        assert cancels(ignored) == (), ignored
    assert cancels(cancel(7), session=None) == ()  # no session: nothing of its calls to cancel


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["legacy", "modern"])
async def test_a_plain_legacy_call_is_answered_as_the_sdk_answers_it(serve: Any, fleet: Fleet, backend: str) -> None:
    async with (
        serve([fleet.entry("alpha", protocol=backend)]) as running,
        httpx2.AsyncClient(trust_env=False, timeout=30) as http,
    ):
        fast = fast_path(running)
        session_headers = await legacy_session(http, running.url)
        for case, (tool, arguments) in CASES.items():
            answers = []
            for enabled in (True, False):
                fast.answering = enabled
                before = fast.answered["tools/call"]
                answers.append(
                    await answer_of(http, running.url, legacy_call(tool, arguments=arguments), session_headers)
                )
                assert fast.answered["tools/call"] - before == (1 if enabled else 0), case
            assert answers[0] == answers[1], case
            status, content_type, session_id, message = answers[0]
            assert (status, content_type, session_id) == (200, "application/json", session_headers["mcp-session-id"]), (
                case
            )
            assert message["id"] == 9 and ("result" in message) == case.endswith("result"), (case, message)
        assert answers[0][3]["error"]["code"] == -32602


@pytest.mark.integration
async def test_an_sdk_client_of_the_legacy_family_is_served_by_the_fast_path(serve: Any, fleet: Fleet) -> None:
    async with serve([fleet.entry("alpha", protocol="legacy")]) as running, mcp_client(running.url, "legacy") as client:
        fast = fast_path(running)
        fast.answering = True
        for text in ("one", "two", "three"):
            result = await client.call_tool("alpha_echo", {"text": text})
            assert result.content[0].text == text and not result.is_error
        assert fast.answered["tools/call"] == 3
        # One backend session for this client session, as through the SDK's path.
        assert running.aggregator.gateway.upstreams["alpha"].open_sessions == 1


@pytest.mark.integration
async def test_an_sdk_client_that_cancels_a_call_cancels_it_at_the_backend(serve: Any, fleet: Fleet) -> None:
    async with serve([fleet.entry("alpha", protocol="legacy")]) as running, mcp_client(running.url, "legacy") as client:
        fast = fast_path(running)
        fast.answering = True
        assert (await client.call_tool("alpha_echo", {"text": "warm"})).content[
            0
        ].text == "warm"  # the backend session is open
        before, sent = calls("slow", "cancelled"), upstream_requests()
        call = asyncio.ensure_future(client.call_tool("alpha_slow", {"seconds": 30}))  # no progress: the fast path
        await async_wait_until(
            lambda: fast.answered["tools/call"] == 2 and upstream_requests() > sent,
            what="the call to reach the backend",
        )
        call.cancel()
        await async_wait_until(
            lambda: calls("slow", "cancelled") == before + 1, what="the aggregator's call to end cancelled"
        )
        assert (await client.call_tool("alpha_echo", {"text": "next"})).content[0].text == "next"


@pytest.mark.integration
async def test_a_call_in_flight_holds_the_session_and_the_idle_countdown_restarts_after_it(
    serve: Any, fleet: Fleet
) -> None:
    """With a 1 s idle timeout, a 2.5 s call through the fast path keeps the session (in the SDK and in the
    mirror); the session still answers after it, and expires once idle for the timeout."""
    async with (
        serve([fleet.entry("alpha", protocol="modern")], session_idle_timeout=1.0) as running,
        httpx2.AsyncClient(trust_env=False, timeout=30) as http,
    ):
        fast = fast_path(running)
        fast.answering = True
        session_headers = await legacy_session(http, running.url)
        session_id = session_headers["mcp-session-id"]
        slow = asyncio.ensure_future(
            answer_of(http, running.url, legacy_call("alpha_slow", arguments={"seconds": 2.5}), session_headers)
        )
        await async_wait_until(
            lambda: fast.answered["tools/call"] == 1 and running.aggregator.sessions.in_flight().get(session_id) == 1,
            what="the call to be in flight",
        )
        status, _, _, message = await slow
        assert status == 200 and message["result"]["content"][0]["text"] == "slept 2.5s"
        assert sdk_has(running, session_id) and session_id in running.aggregator.sessions
        assert running.aggregator.sessions.in_flight()[session_id] == 0
        status, _, _, message = await answer_of(http, running.url, legacy_call("alpha_echo"), session_headers)
        assert status == 200 and message["result"]["content"][0]["text"] == "hi"
        await async_wait_until(
            lambda: not sdk_has(running, session_id), timeout=10, what="the idle session to expire in the SDK"
        )
        expired = await http.post(running.url, content=legacy_call("alpha_echo"), headers=session_headers)
        assert expired.status_code == 404
        assert fast.answered["tools/call"] == 2


@pytest.mark.integration
async def test_notifications_cancelled_cancels_a_call_in_flight_as_the_sdk_does(serve: Any, fleet: Fleet) -> None:
    async with (
        serve([fleet.entry("alpha", protocol="modern")]) as running,
        httpx2.AsyncClient(trust_env=False, timeout=30) as http,
    ):
        fast = fast_path(running)
        session_headers = await legacy_session(http, running.url)
        answers = []
        for enabled in (True, False):
            fast.answering = enabled
            before, taken, sent = calls("slow", "cancelled"), fast.answered["tools/call"], upstream_requests()
            slow = asyncio.ensure_future(
                answer_of(
                    http,
                    running.url,
                    legacy_call("alpha_slow", arguments={"seconds": 30}, request_id=21),
                    session_headers,
                )
            )
            await async_wait_until(lambda: upstream_requests() > sent, what="the call to reach the backend")
            cancel = {
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": {"requestId": 21, "reason": "user"},
            }
            assert (
                await http.post(running.url, content=json.dumps(cancel), headers=session_headers)
            ).status_code == 202
            answers.append(await asyncio.wait_for(slow, 10))
            await async_wait_until(
                lambda: calls("slow", "cancelled") == before + 1, what="the backend call to end cancelled"
            )
            assert fast.answered["tools/call"] - taken == (1 if enabled else 0)
        assert answers[0] == answers[1]
        assert answers[0][3]["error"] == {"code": -32800, "message": "Request cancelled"}
