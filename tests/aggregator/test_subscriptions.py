"""The subscription table's rules (pure), and the fan-out's isolation of a slow client (the shell, with sinks
standing in for client sessions)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp.server.subscriptions import InMemorySubscriptionBus

from xds_control.aggregator.resource_updates import ResourceSubscriptions
from xds_control.aggregator.subscriptions import SubscriptionLimit, SubscriptionTable, Target

A, B = Target("a", "x://1"), Target("b", "x://1")


def test_one_target_per_backend_and_uri_shared_by_its_subscribers() -> None:
    table = SubscriptionTable()
    assert table.subscribe("s1", "x://1", A) == (True, None)
    assert table.subscribe("s2", "a_x://1", A) == (False, None)  # another exposed name of the same target
    assert table.subscribe("s1", "x://1", A) == (False, None)  # again: nothing changes
    assert sorted(table.subscribers(A)) == [("s1", "x://1"), ("s2", "a_x://1")]
    assert table.unsubscribe("s1", "x://1") is None  # s2 still holds it
    assert table.unsubscribe("s2", "a_x://1") == A
    assert len(table) == 0 and table.subscriber_count() == 0
    assert table.unsubscribe("s2", "a_x://1") is None  # unknown: nothing


def test_a_uri_that_moves_to_another_backend_moves_its_subscription() -> None:
    table = SubscriptionTable()
    table.subscribe("s1", "x://1", A)
    assert table.subscribe("s1", "x://1", B) == (True, A)
    assert table.targets("a") == [] and table.subscribers(B) == [("s1", "x://1")]


def test_the_bounds_refuse_without_changing_anything() -> None:
    table = SubscriptionTable(max_per_subscriber=2, max_targets=3)
    table.subscribe("s1", "x://1", Target("a", "x://1"))
    table.subscribe("s1", "x://2", Target("a", "x://2"))
    with pytest.raises(SubscriptionLimit, match="per session"):
        table.subscribe("s1", "x://3", Target("a", "x://3"))
    table.subscribe("s1", "x://2", Target("a", "x://2"))  # one it holds: fine
    table.subscribe("s2", "x://3", Target("a", "x://3"))
    with pytest.raises(SubscriptionLimit, match="at most 3"):
        table.subscribe("s2", "x://4", Target("a", "x://4"))
    table.subscribe("s2", "x://1", Target("a", "x://1"))  # an existing target: no new one
    assert len(table) == 3 and set(table.uris("s2")) == {"x://3", "x://1"}


def test_dropping_a_subscriber_or_a_backend() -> None:
    table = SubscriptionTable()
    table.subscribe("s1", "x://1", A)
    table.subscribe("s1", "y://1", B)
    table.subscribe("s2", "x://1", A)
    assert table.drop_subscriber("s1") == [B]
    assert table.drop_backend("a") == [A]
    assert len(table) == 0 and table.subscriber_count() == 0 and table.uris("s2") == {}


_ops = st.lists(
    st.tuples(
        st.sampled_from(["sub", "unsub", "drop", "drop_backend"]),
        st.sampled_from(["s1", "s2", "s3"]),
        st.sampled_from(["u1", "u2", "u3", "u4"]),
        st.sampled_from(["a", "b"]),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(_ops)
def test_the_invariants_hold_after_any_sequence(ops: list[tuple[str, str, str, str]]) -> None:
    """Every target has a subscriber; the two indexes agree; the bounds hold; upstream subscribe/unsubscribe
    calls (as returned) balance to exactly the targets held."""
    table = SubscriptionTable(max_per_subscriber=3, max_targets=5)
    upstream: set[Target] = set()
    for op, subscriber, uri, backend in ops:
        if op == "sub":
            try:
                new, orphan = table.subscribe(subscriber, uri, Target(backend, uri))
            except SubscriptionLimit:
                continue
            if orphan is not None:
                upstream.remove(orphan)
            if new:
                assert Target(backend, uri) not in upstream
                upstream.add(Target(backend, uri))
        elif op == "unsub":
            if (orphan := table.unsubscribe(subscriber, uri)) is not None:
                upstream.remove(orphan)
        elif op == "drop":
            upstream -= set(table.drop_subscriber(subscriber))
        else:
            upstream -= set(table.drop_backend(backend))
        held = {t for b in ("a", "b") for t in table.targets(b)}
        assert held == upstream and len(table) <= 5
        assert table.backends() == {t.backend for t in held}
        for b in ("a", "b"):
            assert table.uris_of(b) == {t.uri for t in held if t.backend == b}
        for target in held:
            assert table.subscribers(target)
            for sub, exposed in table.subscribers(target):
                assert table.uris(sub)[exposed] == target
        for sub in ("s1", "s2", "s3"):
            assert len(table.uris(sub)) <= 3


class _Streams:
    """Stands in for `get_streams.GetStreams`: records the URIs each session's GET stream is given; a `stuck`
    session's queue is full (`offer` refuses) and `put` never returns."""

    def __init__(self, *stuck: str) -> None:
        self.stuck = set(stuck)
        self.got: dict[str, list[str]] = {}

    def _record(self, session_id: str, event: Any) -> None:
        data = event.split(b"data: ", 1)[1].split(b"\r\n", 1)[0]
        self.got.setdefault(session_id, []).append(json.loads(data)["params"]["uri"])

    def offer(self, session_id: str, event: Any) -> bool | None:
        if session_id in self.stuck:
            return False
        self._record(session_id, event)
        return True

    async def put(self, session_id: str, event: Any) -> bool:
        if session_id in self.stuck:
            await asyncio.Event().wait()
        self._record(session_id, event)
        return True


def _spawner() -> tuple[set[asyncio.Task[None]], Callable[[Any], asyncio.Task[None]]]:
    """The tasks spawned so far (each leaves the set when done) and the spawn function that makes them."""
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return task

    return tasks, spawn


async def test_a_client_that_stopped_reading_delays_nobody_and_its_backlog_is_bounded() -> None:
    tasks, spawn = _spawner()
    streams = _Streams("slow")
    subs = ResourceSubscriptions(lambda: None, {}, spawn, InMemorySubscriptionBus(), streams, send_timeout=30)  # type: ignore[arg-type, return-value]
    for name in ("slow", "quick"):
        subs.table.subscribe(name, "x://1", A)
        subs._sinks[name] = object()  # type: ignore[assignment]  # a legacy session
    for _ in range(1000):
        await subs.updated("a", "x://1")
    assert subs._outboxes["slow"].pending == {"x://1": None}  # repeats coalesce: one pending URI, not 1000
    assert streams.got["quick"] == ["x://1"] * 1000  # written at once, no task of its own
    await asyncio.wait_for(_until(lambda: len(tasks) == 1), 5)  # only the stuck client's sender is left
    await subs.updated("a", "x://1")
    assert len(streams.got["quick"]) == 1001  # the stuck one still delays nobody
    assert len(subs._outboxes["slow"].pending) == 1
    subs.drop_subscriber("slow")  # its session ends: its sender is cancelled
    await asyncio.wait_for(_until(lambda: not tasks), 5)


async def test_a_full_queue_goes_through_the_outbox_and_later_updates_wait_behind_it() -> None:
    tasks, spawn = _spawner()
    streams = _Streams("s")
    subs = ResourceSubscriptions(lambda: None, {}, spawn, InMemorySubscriptionBus(), streams)  # type: ignore[arg-type, return-value]
    subs.table.subscribe("s", "x://1", A)
    subs.table.subscribe("s", "x://2", Target("a", "x://2"))
    subs._sinks["s"] = object()  # type: ignore[assignment]
    await subs.updated("a", "x://1")  # the queue is full: into the outbox, whose sender waits for room
    await asyncio.wait_for(_until(lambda: not subs._outboxes["s"].pending), 5)
    streams.stuck.clear()  # room again, but the outbox is not empty: a later update must not overtake it
    await subs.updated("a", "x://2")
    assert "s" not in streams.got  # not written past the outbox
    assert subs._outboxes["s"].pending == {"x://2": None}
    subs.drop_subscriber("s")
    await asyncio.wait_for(_until(lambda: not tasks), 5)


async def _until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0)
