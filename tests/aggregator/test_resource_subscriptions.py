"""Resource subscriptions through the gateway: real SDK clients of both families, the real control plane and
Envoy, real SDK backends of both families (tests/support/resource_backend.py) that update subscribed resources.

`notes` is a legacy backend (`note://…`), `memos` a 2026-07-28 one (`memo://…`): each is its own process."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from tests.aggregator.support import MODERN, EnvoyPath, fetch_catalog, mcp_client, next_event, through_envoy
from tests.support.procs import Proc, python_module
from tests.support.stack import stack_config
from tests.support.waiting import async_wait_until, free_ports
from xds_control.aggregator import BACKEND_UNAVAILABLE
from xds_control.view import BackendState

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore:resources/(un)?subscribe is removed")]


def backend(port: int, scheme: str) -> Proc:
    proc = python_module(
        "tests.support.resource_backend", "--port", str(port), "--scheme", scheme, name=f"backend-{scheme}"
    )
    proc.wait_for_line("READY", timeout=20)
    return proc


@dataclass
class Backends:
    ports: dict[str, int]
    procs: dict[str, Proc] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}/mcp"

    def restart(self, name: str) -> None:
        self.procs[name].kill()
        self.procs[name] = backend(self.ports[name], SCHEMES[name])

    async def tool(self, name: str, tool: str, uri: str) -> dict[str, Any]:
        """Call the backend's own tool directly (not through the gateway)."""
        mode = MODERN if name == "memos" else "legacy"
        async with mcp_client(self.url(name), mode) as client:
            result = await client.call_tool(tool, {"uri": uri})
        return json.loads(result.content[0].text)

    async def held(self, name: str, uri: str) -> int:
        """The subscriptions the backend holds for `uri` (legacy sessions + listen streams)."""
        counts = await self.tool(name, "subscribers", uri)
        return counts["legacy"] + counts["modern"]


SCHEMES = {"notes": "note", "memos": "memo"}


@contextlib.asynccontextmanager
async def stack(tmp_path: Path, **aggregator: Any) -> AsyncIterator[tuple[EnvoyPath, Backends]]:
    """Both backends behind a control plane, Envoy and the aggregator; `aggregator`: keys of that section."""
    ports = free_ports(2)
    backends = Backends(dict(zip(SCHEMES, ports, strict=True)))
    try:
        for name, scheme in SCHEMES.items():
            backends.procs[name] = backend(backends.ports[name], scheme)
        config = stack_config(
            [
                {"name": "notes", "url": backends.url("notes"), "protocol": "legacy"},
                {"name": "memos", "url": backends.url("memos"), "protocol": "modern"},
            ],
            aggregator=aggregator,
        )
        catalogs = {
            "notes": await fetch_catalog(backends.url("notes"), mode="legacy"),
            "memos": await fetch_catalog(backends.url("memos"), mode=MODERN),
        }
        async with through_envoy(config, catalogs, tmp_path) as path:
            path.aggregator.subscriptions.keepalive = 0.2  # a restarted backend is noticed at once
            yield path, backends
    finally:
        for proc in backends.procs.values():
            proc.stop()


class Updates:
    """A legacy client's `notifications/resources/updated`, as a queue of URIs."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    async def __call__(self, message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            self.queue.put_nowait(str(message.params.uri))

    async def next(self, timeout: float = 10.0) -> str:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def until(self, uri: str, timeout: float = 10.0) -> None:
        """Until `uri` is heard (others are skipped: a link re-made twice tells its subscribers twice)."""
        async with asyncio.timeout(timeout):
            while await self.queue.get() != uri:
                pass


async def until_event(subscription: Any, uri: str) -> None:
    async with asyncio.timeout(10):
        while (await anext(subscription)).uri != uri:
            pass


@contextlib.asynccontextmanager
async def legacy(path: EnvoyPath) -> AsyncIterator[tuple[Any, Updates]]:
    """A legacy client whose GET stream is open (notifications reach it)."""
    updates = Updates()
    async with mcp_client(path.url, "legacy", message_handler=updates) as client:
        sessions = path.aggregator.sessions
        await async_wait_until(
            lambda: any(n > 0 for n in sessions.in_flight().values()), what="the GET stream of the legacy client"
        )
        yield client, updates


async def test_updates_reach_exactly_the_subscribed_clients_of_both_families(tmp_path: Path) -> None:
    async with stack(tmp_path) as (path, backends):
        async with legacy(path) as (a, a_updates), legacy(path) as (b, b_updates):
            assert a.server_capabilities.resources.subscribe is True
            await a.subscribe_resource("note://0")
            await b.subscribe_resource("note://1")
            await b.subscribe_resource("memo://1")  # a legacy client of a modern backend
            async with (
                mcp_client(path.url, MODERN) as c,
                mcp_client(path.url, MODERN) as d,
            ):
                discovered = types.DiscoverResult.model_validate(await c.session.send_discover(MODERN))
                assert discovered.capabilities.resources.subscribe is True
                async with (
                    c.listen(resource_subscriptions=["note://0", "memo://0"]) as c_events,
                    d.listen(resource_subscriptions=["note://1", "nowhere://x"]) as d_events,
                ):
                    assert c_events.honored.resource_subscriptions == ["note://0", "memo://0"]
                    assert d_events.honored.resource_subscriptions == ["note://1"]  # unknown URIs are not honored
                    # one upstream subscription per (backend, URI), whoever holds it
                    assert await backends.held("notes", "note://0") == 1
                    assert await backends.held("notes", "note://1") == 1
                    assert await backends.held("memos", "memo://0") == 1

                    await backends.tool("notes", "touch", "note://0")
                    assert await a_updates.next() == "note://0"
                    assert (await next_event(c_events)).uri == "note://0"
                    # a second update is the barrier: b and d, not subscribed to note://0, hear note://1 first
                    await backends.tool("notes", "touch", "note://1")
                    assert await b_updates.next() == "note://1"
                    assert (await next_event(d_events)).uri == "note://1"
                    await backends.tool("memos", "touch", "memo://0")
                    assert (await next_event(c_events)).uri == "memo://0"
                    await backends.tool("memos", "touch", "memo://1")
                    assert await b_updates.next() == "memo://1"
                    assert a_updates.queue.empty()

                    await a.unsubscribe_resource("note://0")
                    assert await backends.held("notes", "note://0") == 1  # c still holds it
            # c's stream closed with its client: nobody holds note://0 or memo://0 any more
            await async_wait_until(
                lambda: _none_held(backends, [("notes", "note://0"), ("memos", "memo://0")]),
                timeout=10,
                what="the upstream subscriptions to end with their last subscriber",
            )
            assert await backends.held("notes", "note://1") == 1  # b's remains
        await async_wait_until(
            lambda: _none_held(backends, [("notes", "note://1"), ("memos", "memo://1")]),
            timeout=10,
            what="the ended session's subscriptions to end upstream",
        )
        assert len(path.aggregator.subscriptions.table) == 0


async def _none_held(backends: Backends, targets: list[tuple[str, str]]) -> bool:
    for name, uri in targets:
        if await backends.held(name, uri) != 0:
            return False
    return True


async def test_subscriptions_survive_a_backend_restart(tmp_path: Path) -> None:
    async with stack(tmp_path) as (path, backends):
        async with legacy(path) as (a, a_updates), mcp_client(path.url, MODERN) as c:
            await a.subscribe_resource("note://2")
            await a.subscribe_resource("memo://2")
            async with c.listen(resource_subscriptions=["note://2", "memo://2"]) as c_events:
                for name in ("notes", "memos"):
                    backends.restart(name)  # SIGKILL, then a new process on the same port
                    uri = f"{SCHEMES[name]}://2"
                    await async_wait_until(
                        lambda name=name, uri=uri: _held_once(backends, name, uri),
                        timeout=30,
                        what=f"{name} re-subscribed after its restart",
                    )
                    # what changed while it was down was not heard: each subscriber is told
                    await a_updates.until(uri)
                    await until_event(c_events, uri)
                    await backends.tool(name, "touch", uri)
                    await a_updates.until(uri)
                    await until_event(c_events, uri)


async def _held_once(backends: Backends, name: str, uri: str) -> bool:
    try:
        return await backends.held(name, uri) == 1
    except Exception:
        return False


async def test_a_removed_backend_ends_its_subscriptions_and_a_down_one_resumes(tmp_path: Path) -> None:
    async with stack(tmp_path) as (path, backends):
        plane, aggregator = path.plane, path.aggregator
        async with legacy(path) as (a, a_updates):
            await a.subscribe_resource("note://0")
            await a.subscribe_resource("memo://0")

            plane.store.set_state("notes", BackendState.UNHEALTHY)
            await aggregator.wait_for_view(plane.store.version)
            await async_wait_until(
                lambda: (
                    "notes" not in aggregator.subscriptions.links() or not aggregator.subscriptions.links()["notes"]
                ),
                what="the link of the unroutable backend to close",
            )
            with pytest.raises(MCPError) as info:
                await a.subscribe_resource("note://1")
            assert info.value.code == BACKEND_UNAVAILABLE
            plane.store.set_state("notes", BackendState.HEALTHY)
            await aggregator.wait_for_view(plane.store.version)
            assert await a_updates.next() == "note://0"  # re-subscribed: told once, changes may have been missed

            config = aggregator.config.model_copy(
                update={"backends": [b for b in aggregator.config.backends if b.name != "notes"]}
            )
            plane.store.replace_config(config)
            await aggregator.wait_for_view(plane.store.version)
            assert set(aggregator.subscriptions.table.backends()) == {"memos"}
            await async_wait_until(lambda: "notes" not in aggregator.subscriptions.links(), what="the link to close")
            await a.unsubscribe_resource("note://0")  # still answered: nothing left to end
            with pytest.raises(MCPError) as info:
                await a.subscribe_resource("note://0")
            assert info.value.code == -32002
            await backends.tool("memos", "touch", "memo://0")
            assert await a_updates.next() == "memo://0"


async def test_refusals_unknown_uris_templates_and_the_per_session_bound(tmp_path: Path) -> None:
    async with stack(tmp_path, max_subscriptions_per_client=3) as (path, backends):
        async with legacy(path) as (a, a_updates):
            with pytest.raises(MCPError) as info:
                await a.subscribe_resource("note://extra/refused")  # the backend's own refusal passes unchanged
            assert info.value.code == types.INVALID_REQUEST and "cannot be subscribed" in info.value.message
            with pytest.raises(MCPError) as info:
                await a.subscribe_resource("nowhere://x")
            assert info.value.code == -32002
            with pytest.raises(MCPError) as info:
                await a.subscribe_resource("note://extra/" + "x" * 3000)  # matches the template, but too long
            assert info.value.code == types.INVALID_PARAMS
            await a.subscribe_resource("note://extra/7")  # a URI of a template
            await a.subscribe_resource("note://0")
            await a.subscribe_resource("note://0")  # again: no change
            await a.subscribe_resource("memo://0")
            with pytest.raises(MCPError) as info:
                await a.subscribe_resource("note://1")
            assert info.value.code == types.INVALID_REQUEST and "at most 3" in info.value.message
            assert len(path.aggregator.subscriptions.table) == 3
            await backends.tool("notes", "touch", "note://extra/7")
            assert await a_updates.next() == "note://extra/7"
