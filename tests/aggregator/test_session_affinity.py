"""Session affinity for the replicas of a backend that keeps sessions: the real control plane and Envoy (its
stateful-session filter on `Mcp-Session-Id`, configured over xDS), the in-process aggregator, two replicas
of a real legacy SDK backend (tests/support/resource_backend.py), real SDK clients.

Each replica answers `whoami` with its port and the session id it issued to the caller, so a test sees
which replica served a call and whether the aggregator's backend session was re-initialized."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest

from tests.aggregator.support import fetch_catalog, mcp_client, through_envoy
from tests.support.procs import Proc, python_module
from tests.support.stack import envoy_get, stack_config
from tests.support.waiting import async_wait_until, free_ports
from xds_control.config import Config
from xds_control.view import BackendState

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore:resources/(un)?subscribe is removed")]


def replica(port: int) -> Proc:
    proc = python_module("tests.support.resource_backend", "--port", str(port), name=f"replica-{port}")
    proc.wait_for_line("READY", timeout=20)
    return proc


async def whoami(client: Any) -> tuple[int, str]:
    result = await client.call_tool("notes_whoami", {})
    assert not result.is_error, result
    answer = json.loads(result.content[0].text)
    return answer["port"], answer["session"]


async def direct(port: int, tool: str, uri: str) -> dict[str, Any]:
    async with mcp_client(f"http://127.0.0.1:{port}/mcp") as client:
        return json.loads((await client.call_tool(tool, {"uri": uri})).content[0].text)


def eds_unhealthy(config: Config, port: int) -> bool:
    _, body = envoy_get(config, "/clusters")
    found = re.search(rf"^notes::127\.0\.0\.1:{port}::health_flags::(\S+)$", body, re.MULTILINE)
    return found is not None and "failed_eds_health" in found[1]


class Updates:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    async def __call__(self, message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            self.queue.put_nowait(str(message.params.uri))

    async def next(self) -> str:
        return await asyncio.wait_for(self.queue.get(), 10)


async def test_a_dead_replica_moves_only_its_sessions_and_its_subscriptions(tmp_path: Path) -> None:
    ports = free_ports(2)
    procs = {port: replica(port) for port in ports}
    urls = {port: f"http://127.0.0.1:{port}/mcp" for port in ports}
    try:
        config = stack_config([{"name": "notes", "endpoints": list(urls.values()), "protocol": "legacy"}])
        catalog = await fetch_catalog(urls[ports[0]])
        async with through_envoy(config, {"notes": catalog}, tmp_path) as path, contextlib.AsyncExitStack() as stack:
            path.aggregator.subscriptions.keepalive = 0.2
            # clients until one's backend session is on each replica (Envoy balances new sessions)
            clients: dict[int, tuple[Any, Updates, str]] = {}
            for _ in range(40):
                updates = Updates()
                client = await stack.enter_async_context(mcp_client(path.url, "legacy", message_handler=updates))
                port, session = await whoami(client)
                clients.setdefault(port, (client, updates, session))
                if len(clients) == 2:
                    break
            assert set(clients) == set(ports), "Envoy spread new sessions over both replicas"
            for port, (client, _, session) in clients.items():  # every call of a session on its replica
                for _ in range(10):
                    assert await whoami(client) == (port, session)

            # a subscription: its link (one backend session of its own) lives on one replica; kill that one
            mover_client, mover_updates, _ = clients[ports[0]]
            await mover_client.subscribe_resource("note://0")
            holders = [p for p in ports if (await direct(p, "subscribers", "note://0"))["legacy"] == 1]
            assert len(holders) == 1
            dead = holders[0]
            survivor = next(p for p in ports if p != dead)
            stayer, _, stayer_session = clients[survivor]
            mover, _, _ = clients[dead]

            procs[dead].kill()
            path.plane.store.set_state("notes", BackendState.UNHEALTHY, endpoint=urls[dead])  # the prober's verdict
            await async_wait_until(lambda: asyncio.to_thread(eds_unhealthy, config, dead), what="Envoy to hold it out")

            # the survivor's session is untouched: same replica, same backend session, no failed call
            for _ in range(10):
                assert await whoami(stayer) == (survivor, stayer_session)
            # the dead replica's session is re-initialized on the survivor, transparently
            moved_port, moved_session = await whoami(mover)
            assert moved_port == survivor and moved_session != stayer_session
            for _ in range(5):
                assert await whoami(mover) == (survivor, moved_session)
            # and so is the subscription link: re-subscribed there, its subscriber told once, then updates flow
            await async_wait_until(
                lambda: _held(survivor, "note://0"), timeout=20, what="the subscription re-made on the survivor"
            )
            assert await mover_updates.next() == "note://0"
            await direct(survivor, "touch", "note://0")
            assert await mover_updates.next() == "note://0"
    finally:
        for proc in procs.values():
            proc.stop()


async def _held(port: int, uri: str) -> bool:
    return (await direct(port, "subscribers", uri))["legacy"] == 1
