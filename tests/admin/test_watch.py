"""The Watch stream: full view on connect, one message per significant change, clean ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import grpc
import pytest

from tests.support.waiting import async_wait_until
from xds_control.admin.client import AdminClient, WatchEvent
from xds_control.admin.service import start_admin_server
from xds_control.errors import AdminUnavailable
from xds_control.view import BackendState, BreakerState, ViewStore

from .conftest import Harness, make_config

STEP = 5.0  # bound on every single wait


async def next_event(events: AsyncIterator[WatchEvent]) -> WatchEvent:
    async with asyncio.timeout(STEP):
        return await anext(events)


def other_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def test_full_view_first_then_each_change_in_order(harness: Harness, client: AdminClient) -> None:
    events = client.watch(reconnect=False)
    try:
        first = await next_event(events)
        assert first.version == harness.store.version
        assert list(first.backends) == ["weather", "calc"]
        assert first.backends == dict(harness.store.current.backends)

        harness.store.set_state("weather", BackendState.HEALTHY)
        second = await next_event(events)
        assert second.version == first.version + 1
        assert second.backends["weather"].state is BackendState.HEALTHY and second.backends["weather"].routable

        harness.store.set_drained("calc", True)
        third = await next_event(events)
        assert third.version == second.version + 1
        assert third.backends["calc"].drained
        assert third.backends == dict(harness.store.current.backends)
    finally:
        await events.aclose()


async def test_non_significant_changes_send_nothing(harness: Harness, client: AdminClient) -> None:
    events = client.watch(reconnect=False)
    try:
        first = await next_event(events)
        # Probe statistics change without a version bump: no message.
        harness.store.update_backend("weather", lambda s: replace(s, last_probe_ms=12.0, last_success=1_700_000_000.0))
        assert harness.store.version == first.version
        # The next message is the next significant change, and carries the statistics as they are now.
        harness.store.update_backend("calc", lambda s: replace(s, breaker=BreakerState.OPEN))
        event = await next_event(events)
        assert event.version == first.version + 1
        assert event.backends["calc"].breaker is BreakerState.OPEN
        assert event.backends["weather"].last_probe_ms == 12.0
    finally:
        await events.aclose()


async def test_a_burst_is_coalesced_with_increasing_versions(harness: Harness, client: AdminClient) -> None:
    events = client.watch(reconnect=False)
    try:
        first = await next_event(events)
        versions = [first.version]
        for state in (BackendState.HEALTHY, BackendState.DEGRADED, BackendState.UNHEALTHY):
            harness.store.set_state("weather", state)  # three versions before the loop runs the handler
        final = harness.store.version
        while versions[-1] < final:
            versions.append((await next_event(events)).version)
        assert versions == sorted(set(versions))
        assert versions[-1] == final
    finally:
        await events.aclose()


async def test_every_watcher_sees_the_change(harness: Harness) -> None:
    clients = [harness.client() for _ in range(3)]
    streams = [c.watch(reconnect=False) for c in clients]
    try:
        firsts = [await next_event(s) for s in streams]
        harness.store.set_state("calc", BackendState.UNAUTHENTICATED)
        nexts = [await next_event(s) for s in streams]
        assert {e.version for e in firsts} == {1}
        assert {e.version for e in nexts} == {2}
        assert all(e.backends["calc"].state is BackendState.UNAUTHENTICATED for e in nexts)
    finally:
        for s in streams:
            await s.aclose()
        for c in clients:
            await c.close()


async def test_client_cancel_ends_the_server_handler(harness: Harness) -> None:
    async with harness.client() as c:
        events = c.watch(reconnect=False)
        await next_event(events)
        assert harness.server.active_watches == 1
        await events.aclose()
        await async_wait_until(
            lambda: harness.server.active_watches == 0, timeout=STEP, what="the Watch handler to end"
        )
        # The server is unharmed: a new stream works.
        events = c.watch(reconnect=False)
        assert (await next_event(events)).version == harness.store.version
        await events.aclose()


async def test_a_consumer_task_cancelled_mid_wait_leaves_nothing_behind(harness: Harness) -> None:
    async with harness.client() as c:
        got_first = asyncio.Event()

        async def consume() -> None:
            async for _ in c.watch(reconnect=False):
                got_first.set()

        task = asyncio.create_task(consume())
        async with asyncio.timeout(STEP):
            await got_first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await harness.server.stop(grace=0.5)
    # grpc finishes its per-RPC task a loop turn or two after stop(); an orphan would never finish.
    await async_wait_until(lambda: not other_tasks(), timeout=STEP, what="no tasks left")


async def test_server_shutdown_ends_the_stream_with_ok(harness: Harness, client: AdminClient) -> None:
    events = client.watch(reconnect=False)
    await next_event(events)
    stopping = asyncio.create_task(harness.server.stop(grace=5))
    # "closed the watch stream" is the client's reading of a stream that ended with OK (an error status reads otherwise).
    with pytest.raises(AdminUnavailable, match="closed the watch stream"):
        await next_event(events)
    async with asyncio.timeout(STEP):
        await stopping
    assert harness.server.active_watches == 0
    await client.close()
    await async_wait_until(lambda: not other_tasks(), timeout=STEP, what="no tasks left")


async def test_raw_stream_ends_with_ok_status_on_shutdown(harness: Harness) -> None:
    from xds_control.admin.v1 import admin_pb2 as pb
    from xds_control.admin.v1 import admin_pb2_grpc as pb_grpc

    channel = grpc.aio.insecure_channel(harness.target)
    try:
        call = pb_grpc.AdminStub(channel).Watch(pb.WatchRequest(omit_catalogs=True))
        async with asyncio.timeout(STEP):
            assert (await call.read()).version == 1
            await harness.server.stop(grace=5)
            assert await call.read() is grpc.aio.EOF
            assert await call.code() is grpc.StatusCode.OK
    finally:
        await channel.close()


async def test_watch_reconnects_to_a_restarted_control_plane(harness: Harness) -> None:
    harness.store.set_state("weather", BackendState.HEALTHY)
    async with harness.client() as c:
        events = c.watch(reconnect=True)
        try:
            before = await next_event(events)
            assert before.backends["weather"].state is BackendState.HEALTHY
            await harness.server.stop(grace=1)
            # A new control plane on the same address, with a fresh store (versions restart).
            config = make_config(f"127.0.0.1:{harness.server.port}")
            store = ViewStore(config)
            store.set_state("calc", BackendState.DEGRADED)
            server = await start_admin_server(config, store, None, None)
            try:
                after = await next_event(events)
                assert after.version == store.version
                assert after.backends["weather"].state is BackendState.UNKNOWN
                assert after.backends["calc"].state is BackendState.DEGRADED
                store.set_drained("calc", True)
                assert (await next_event(events)).backends["calc"].drained
            finally:
                await events.aclose()
                await server.stop(grace=0.5)
        finally:
            await events.aclose()


async def test_watch_without_reconnect_against_nothing_is_unavailable() -> None:
    from tests.support.waiting import free_port

    async with AdminClient(f"127.0.0.1:{free_port()}") as c:
        with pytest.raises(AdminUnavailable, match="connection refused"):
            await next_event(c.watch(reconnect=False))
