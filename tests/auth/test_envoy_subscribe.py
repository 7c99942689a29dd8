"""Resource subscriptions honour the grant: through a real Envoy, a principal without the resource cannot
subscribe to it (refused like an unknown URI; the backend holds no subscription), one with it can; a 2026-07-28
client's listen stream leaves a URI outside its grant out of the acknowledgement, as it leaves an unknown one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp.shared.exceptions import MCPError

from tests.aggregator.support import MODERN, fetch_catalog, mcp_client
from tests.auth.conftest import Backends, auth_stack
from tests.support.procs import python_module
from tests.support.waiting import async_wait_until, free_port

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore:resources/(un)?subscribe is removed")]


async def _held(url: str, uri: str) -> int:
    async with mcp_client(url, "legacy") as client:
        counts = json.loads((await client.call_tool("subscribers", {"uri": uri})).content[0].text)
    return int(counts["legacy"]) + int(counts["modern"])


async def test_a_resource_outside_the_grant_cannot_be_subscribed(tmp_path: Path) -> None:
    port = free_port()
    proc = python_module("tests.support.resource_backend", "--port", str(port), "--scheme", "note", name="notes")
    try:
        proc.wait_for_line("READY", timeout=20)
        url = f"http://127.0.0.1:{port}/mcp"
        notes = Backends({"notes": url}, {"notes": await fetch_catalog(url)})
        async with auth_stack(notes, tmp_path) as stack:
            bob = {"authorization": f"Bearer {stack.token('bob', scope='calendar')}"}  # no resources granted
            async with mcp_client(stack.url, "legacy", headers=bob) as client:
                with pytest.raises(MCPError) as denied:
                    await client.subscribe_resource("note://0")
                with pytest.raises(MCPError) as unknown:
                    await client.subscribe_resource("note://no-such")
                assert (denied.value.code, denied.value.message) == (unknown.value.code, unknown.value.message)
            assert await _held(url, "note://0") == 0
            alice = {"authorization": f"Bearer {stack.token('alice', groups=['ops'])}"}  # resources: ["*"]
            async with mcp_client(stack.url, "legacy", headers=alice) as client:
                await client.subscribe_resource("note://0")

                async def held() -> bool:
                    return await _held(url, "note://0") == 1

                await async_wait_until(held, timeout=10, what="the backend to hold alice's subscription")
            for who, token, honored in (("bob", bob, []), ("alice", alice, ["note://1"])):
                async with (
                    mcp_client(stack.url, MODERN, headers=token) as client,
                    client.listen(resource_subscriptions=["note://1", "note://no-such"]) as events,
                ):
                    assert (events.honored.resource_subscriptions or []) == honored, who
    finally:
        proc.stop()
