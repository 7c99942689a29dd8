"""Attacks on the aggregator's `/mcp`: abandoned sessions, made-up session ids, a backend's backtracking regex."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx2

from tests.hostile.support import Finding, HostileStack, Scale, StackSpec, attack
from tests.support.procs import python_module
from xds_control.admin.v1 import admin_pb2 as pb
from xds_control.admin.v1 import admin_pb2_grpc as pb_grpc

LEGACY = "2025-11-25"
MODERN = "2026-07-28"
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INIT = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "hostile", "version": "1"}},
}


async def _flood(count: int, concurrency: int, one: Any) -> Counter[str]:
    """`one(http)` `count` times, `concurrency` at once; the outcomes counted."""
    outcomes: Counter[str] = Counter()
    left = iter(range(count))
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(trust_env=False, timeout=30, limits=limits) as http:

        async def worker() -> None:
            for _ in left:
                try:
                    outcomes[await one(http)] += 1
                except httpx2.HTTPError as exc:
                    outcomes[type(exc).__name__] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcomes


async def _open_session(http: httpx2.AsyncClient, url: str) -> dict[str, str]:
    """A legacy session that finished its handshake; the headers its requests carry."""
    answer = await http.post(url, content=json.dumps(INIT), headers=ACCEPT)
    answer.raise_for_status()
    headers = {**ACCEPT, "mcp-session-id": answer.headers["mcp-session-id"], "mcp-protocol-version": LEGACY}
    done = await http.post(url, content=b'{"jsonrpc":"2.0","method":"notifications/initialized"}', headers=headers)
    assert done.status_code == 202, done.text
    return headers


async def _legacy_call_ok(http: httpx2.AsyncClient, url: str, headers: dict[str, str]) -> bool:
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "weather_get_forecast", "arguments": {"city": "Oslo"}}}  # fmt: skip
    answer = await http.post(url, content=json.dumps(call), headers=headers)
    return answer.status_code == 200 and "result" in answer.json() and not answer.json()["result"].get("isError")


async def _health(stack: HostileStack) -> dict[str, Any]:
    async with httpx2.AsyncClient(trust_env=False, timeout=10) as http:
        return (await http.get(f"{stack.aggregator_url}/healthz")).json()


@attack(
    "aggregator-abandoned-initialize",
    surface="public /mcp: initialize, never closed, then a new legacy client",
    stack=StackSpec(aggregator=True, config={"aggregator": {"max_sessions": 400, "max_opening_sessions": 100}}),
)
async def abandoned_initialize(stack: HostileStack, scale: Scale) -> Finding:
    """Every `initialize` is answered (no 503), opening sessions stay capped, and a newcomer still gets in.
    The caps are lowered (400 sessions, 100 opening) so that the tests' 1,500 cross them; the bench sends the
    issue's 11,000."""
    count = scale.pick(1_500, 11_000)
    url = stack.mcp_url

    async def initialize(http: httpx2.AsyncClient) -> str:
        return str((await http.post(url, content=json.dumps(INIT), headers=ACCEPT)).status_code)

    outcomes = await _flood(count, 32, initialize)
    async with httpx2.AsyncClient(trust_env=False, timeout=30) as http:
        newcomer_ok = await _legacy_call_ok(http, url, await _open_session(http, url))
    sessions = (await _health(stack))["sessions"]
    refused = count - outcomes["200"]
    return Finding(
        f"{outcomes['200']} of {count} initialize answered 200; a newcomer's call {'succeeded' if newcomer_ok else 'FAILED'}",
        {"initialize": count, "refused": refused, "outcomes": dict(outcomes), "newcomer_ok": newcomer_ok, **sessions},
    )


@contextlib.asynccontextmanager
async def _listening(http: httpx2.AsyncClient, url: str, headers: dict[str, str]) -> AsyncIterator[asyncio.Queue[str]]:
    """A legacy session's GET stream, open; the methods of the notifications it carries, as they come."""
    heard: asyncio.Queue[str] = asyncio.Queue()
    opened = asyncio.Event()

    async def listen() -> None:
        async with http.stream("GET", url, headers={**headers, "accept": "text/event-stream"}) as response:
            opened.set()
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    with contextlib.suppress(ValueError):
                        heard.put_nowait(json.loads(line[5:]).get("method", ""))

    task = asyncio.create_task(listen())
    try:
        await asyncio.wait_for(opened.wait(), 10)
        yield heard
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


async def _heard(heard: asyncio.Queue[str], method: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    with contextlib.suppress(TimeoutError):
        while (left := deadline - time.monotonic()) > 0:
            if await asyncio.wait_for(heard.get(), left) == method:
                return True
    return False


@attack(
    "aggregator-random-session-ids",
    surface="aggregator port: requests with made-up Mcp-Session-Id beside a listening client",
    stack=StackSpec(backends=("weather", "victim"), aggregator=True, config={"aggregator": {"max_sessions": 200}}),
)
async def random_session_ids(stack: HostileStack, scale: Scale) -> Finding:
    """Made-up ids are answered 404 and change nothing: the victim's session lives on and still hears
    `list_changed` (the victim backend is drained after the flood)."""
    count = scale.pick(2_000, 10_000)
    url = f"{stack.aggregator_url}/mcp"
    ping = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"})

    async def made_up(http: httpx2.AsyncClient) -> str:
        headers = {**ACCEPT, "mcp-session-id": secrets.token_hex(16), "mcp-protocol-version": LEGACY}
        return str((await http.post(url, content=ping, headers=headers)).status_code)

    async with httpx2.AsyncClient(trust_env=False, timeout=30) as http:
        victim = await _open_session(http, url)
        async with _listening(http, url, victim) as heard:
            outcomes = await _flood(count, 32, made_up)
            token = stack.admin_token()
            async with grpc.aio.insecure_channel(stack.admin_target) as channel:
                metadata = (("authorization", f"Bearer {token}"),) if token else None
                await pb_grpc.AdminStub(channel).Drain(pb.DrainRequest(name="victim"), timeout=10, metadata=metadata)
            notified = await _heard(heard, "notifications/tools/list_changed", 15)
        still_served = await _legacy_call_ok(http, url, victim)
    sessions = (await _health(stack))["sessions"]
    return Finding(
        f"{outcomes['404']} of {count} made-up ids answered 404; the victim {'heard' if notified else 'MISSED'} list_changed",
        {
            "requests": count,
            "outcomes": dict(outcomes),
            "victim_notified": notified,
            "victim_served": still_served,
            **sessions,
        },
    )


def _regex_backend(stack: HostileStack) -> list[dict[str, Any]]:
    proc = stack.own(python_module("tests.hostile.regex_backend", name="backend-regex"))
    url = proc.wait_for_line("READY", timeout=30).split()[-1]
    return [{"name": "regex", "url": url}]


@attack(
    "aggregator-regex-arguments",
    surface="backend schema: pattern ^(a+)+$, arguments of 29 `a` and a `!`",
    stack=StackSpec(aggregator=True, before=_regex_backend),
)
async def regex_arguments(stack: HostileStack, scale: Scale) -> Finding:
    """The backend's regex runs in linear time: the attacker gets INVALID_PARAMS at once, nothing stalls."""
    stack.wait_routable("regex")
    calls = scale.pick(3, 20)
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
    headers = {**ACCEPT, "mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": "regex_match"}
    codes: list[Any] = []
    started = time.monotonic()
    async with httpx2.AsyncClient(trust_env=False, timeout=60) as http:
        for i in range(calls):
            body = {"jsonrpc": "2.0", "id": i, "method": "tools/call",
                    "params": {"name": "regex_match", "arguments": {"text": "a" * 29 + "!"}, "_meta": meta}}  # fmt: skip
            answer = (await http.post(stack.mcp_url, content=json.dumps(body), headers=headers)).json()
            codes.append(answer.get("error", {}).get("code"))
    took = time.monotonic() - started
    return Finding(
        f"error codes {sorted(set(map(str, codes)))} for {calls} calls in {took:.2f} s",
        {"calls": calls, "codes": codes, "seconds": round(took, 3)},
    )
