"""The endpoint's session keeping against the real SDK app: rejected requests carry no session id, made-up ids
are never kept, at the cap the longest idle session is ended (in the SDK too), a silent handshake expires."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest

from tests.aggregator.conftest import Fleet
from tests.aggregator.support import LEGACY_HEADERS, legacy_call, legacy_session
from tests.support.waiting import async_wait_until
from xds_control.aggregator import sdk_compat

pytestmark = pytest.mark.integration

INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}  # fmt: skip


@pytest.mark.parametrize(
    ("case", "method", "body", "headers", "status"),
    [
        ("a request without a session", "POST", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, {}, 400),
        ("initialize with a bad Accept", "POST", INIT, {"accept": "text/html"}, 406),
        ("a GET stream without a session", "GET", None, {"accept": "text/event-stream"}, 400),
    ],
)
async def test_a_rejected_request_carries_no_session_id(
    serve: Any, fleet: Fleet, case: str, method: str, body: Any, headers: dict[str, str], status: int
) -> None:
    async with serve([fleet.entry("weather")]) as running, httpx2.AsyncClient(trust_env=False, timeout=30) as http:
        content = json.dumps(body) if body is not None else None
        answer = await http.request(method, running.url, content=content, headers={**LEGACY_HEADERS, **headers})
        assert answer.status_code == status, (case, answer.text)
        assert "mcp-session-id" not in answer.headers, case
        assert len(running.aggregator.sessions) == 0, case


async def test_made_up_session_ids_are_answered_404_and_never_kept(serve: Any, fleet: Fleet) -> None:
    async with serve([fleet.entry("weather")]) as running, httpx2.AsyncClient(trust_env=False, timeout=30) as http:
        real = await legacy_session(http, running.url)
        for i in range(20):
            made_up = {**real, "mcp-session-id": f"made-up-{i}"}
            assert (
                await http.post(running.url, content=legacy_call("weather_get_forecast"), headers=made_up)
            ).status_code == 404
        assert list(running.aggregator.sessions.in_flight()) == [real["mcp-session-id"]]


async def test_at_the_cap_the_longest_idle_session_is_ended_in_the_sdk_too(serve: Any, fleet: Fleet) -> None:
    async with (
        serve([fleet.entry("weather")], max_sessions=2) as running,
        httpx2.AsyncClient(trust_env=False, timeout=30) as http,
    ):
        oldest = await legacy_session(http, running.url)
        second = await legacy_session(http, running.url)
        newest = await legacy_session(http, running.url)  # the cap: `oldest`, idle longest, makes room
        server = running.aggregator.server
        assert not sdk_compat.session_live(server, oldest["mcp-session-id"])
        assert all(sdk_compat.session_live(server, s["mcp-session-id"]) for s in (second, newest))
        gone = await http.post(
            running.url, content=legacy_call("weather_get_forecast", arguments={"city": "x"}), headers=oldest
        )
        assert gone.status_code == 404
        kept = await http.post(
            running.url, content=legacy_call("weather_get_forecast", arguments={"city": "x"}), headers=newest
        )
        assert kept.status_code == 200 and "result" in kept.json()


async def test_a_session_that_never_finishes_its_handshake_expires(serve: Any, fleet: Fleet) -> None:
    async with (
        serve([fleet.entry("weather")], session_init_timeout=0.3) as running,
        httpx2.AsyncClient(trust_env=False, timeout=30) as http,
    ):
        silent = (await http.post(running.url, content=json.dumps(INIT), headers=LEGACY_HEADERS)).headers[
            "mcp-session-id"
        ]
        client = await legacy_session(http, running.url)
        assert running.aggregator.sessions.opening() == 1
        await async_wait_until(
            lambda: silent not in running.aggregator.sessions, timeout=10, what="the silent session to expire"
        )
        assert not sdk_compat.session_live(running.aggregator.server, silent)
        assert client["mcp-session-id"] in running.aggregator.sessions  # the one that finished it stays
