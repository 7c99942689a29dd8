"""Following the view: reconnect with backoff, keep the last view while stale, staleness metric."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from prometheus_client import REGISTRY

from tests.support.waiting import async_wait_until
from xds_control.aggregator.outcomes import OutcomeReport
from xds_control.aggregator.view_source import Backoff, StoreViewSource, ViewFollower, ViewUpdate
from xds_control.config import parse_config
from xds_control.view import BackendState, ViewStore


class Source:
    """A view source whose connections the test opens and breaks by hand."""

    def __init__(self) -> None:
        self.connections: asyncio.Queue[asyncio.Queue[ViewUpdate | Exception]] = asyncio.Queue()
        self.attempts = 0
        self.up = False

    async def watch(self) -> AsyncIterator[ViewUpdate]:
        self.attempts += 1
        if not self.up:
            raise ConnectionRefusedError("down")
        stream: asyncio.Queue[ViewUpdate | Exception] = asyncio.Queue()
        self.connections.put_nowait(stream)
        while True:
            item = await stream.get()
            if isinstance(item, Exception):
                raise item
            yield item

    async def report_outcomes(self, reports: Sequence[OutcomeReport]) -> None:
        pass


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


def test_backoff_is_capped_exponential_with_full_jitter_and_resets() -> None:
    b = Backoff(base=0.1, cap=1.0, rng=lambda: 1.0)
    assert [round(b.next_delay(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    b.reset()
    assert b.next_delay() == 0.1
    assert Backoff(rng=lambda: 0.0).next_delay() == 0.0


async def test_stale_until_connected_then_fresh_then_stale_keeping_the_last_view() -> None:
    source = Source()
    applied: list[int] = []
    now = [0.0]
    follower = ViewFollower(
        source, lambda u: applied.append(u.version), backoff=Backoff(base=0.001, cap=0.005), clock=lambda: now[0]
    )
    task = asyncio.create_task(follower.run())
    try:
        await async_wait_until(
            lambda: source.attempts >= 3, timeout=5, interval=0.001, what="retries"
        )  # refused: retried
        assert not follower.connected and gauge("xds_control_aggregator_view_stale") == 1
        now[0] = 4.0
        assert follower.staleness() == 4.0
        source.up = True
        stream = await asyncio.wait_for(source.connections.get(), 5)
        stream.put_nowait(ViewUpdate(7, {}))
        await asyncio.wait_for(follower.wait_for_version(7), 5)
        assert follower.connected and applied == [7] and follower.staleness() == 0.0
        assert gauge("xds_control_aggregator_view_stale") == 0 and gauge("xds_control_aggregator_view_version") == 7
        assert follower.backoff.failures == 0

        now[0] = 10.0
        stream.put_nowait(ConnectionResetError("lost"))
        stream = await asyncio.wait_for(source.connections.get(), 5)  # reconnected at once (backoff reset)
        assert follower.stale_since == 10.0 and not follower.connected
        now[0] = 12.5
        assert gauge("xds_control_aggregator_view_staleness_seconds") == 2.5
        stream.put_nowait(ViewUpdate(8, {}))
        await asyncio.wait_for(follower.wait_for_version(8), 5)
        assert applied == [7, 8] and follower.connected
    finally:
        task.cancel()


async def test_the_store_source_yields_the_current_view_then_changes() -> None:
    config = parse_config({"backends": [{"name": "a", "url": "http://127.0.0.1:9/mcp"}]})
    store = ViewStore(config)
    stream = StoreViewSource(store).watch()
    first = await anext(stream)
    assert first.version == store.version and set(first.backends) == {"a"}
    store.set_state("a", BackendState.HEALTHY)
    second = await asyncio.wait_for(anext(stream), 5)
    assert second.version == first.version + 1 and second.backends["a"].state is BackendState.HEALTHY
    await stream.aclose()
