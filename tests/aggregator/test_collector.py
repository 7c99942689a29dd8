"""The aggregator's garbage-collector policy (collector.py): the pure decisions, and a real aggregator freezing
settled sessions out of the collector and thawing them so closed sessions are reclaimed."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import httpx2
from hypothesis import given
from hypothesis import strategies as st

from tests.aggregator.conftest import Fleet
from tests.aggregator.support import legacy_session
from tests.support.waiting import async_wait_until
from xds_control.aggregator.collector import Action, GcPolicy


def settled(policy: GcPolicy, now: float, opened: int, closed: int) -> Action | None:
    """The decision on the second tick with these counts (the first sees them move)."""
    policy.decide(now, opened, closed)
    return policy.decide(now, opened, closed)


def test_freezes_once_after_something_was_opened_and_then_rests() -> None:
    policy = GcPolicy()
    assert policy.decide(1.0, opened=0, closed=0) is None
    assert policy.decide(2.0, opened=3, closed=0) is None  # still moving
    assert policy.decide(2.0, opened=3, closed=0) == "freeze"
    policy.done("freeze", 2.0, opened=3, closed=0, live=3)
    assert policy.decide(3.0, opened=3, closed=0) is None


def test_thaws_when_a_fraction_of_the_frozen_sessions_closed() -> None:
    policy = GcPolicy(thaw_fraction=0.25, min_closed=64)
    policy.done("freeze", 0.0, opened=1000, closed=0, live=1000)
    assert policy.decide(0.5, opened=1000, closed=250) is None  # sessions are closing right now: wait
    assert settled(policy, 1.0, opened=1000, closed=249) is None
    assert settled(policy, 1.0, opened=1000, closed=250) == "thaw"
    policy.done("thaw", 1.0, opened=1000, closed=250, live=750)
    assert policy.decide(2.0, opened=1000, closed=250) is None
    assert settled(policy, 2.0, opened=1000, closed=250 + 188) == "thaw"  # a quarter of the 750 frozen then


def test_few_sessions_thaw_after_min_closed_or_the_age_limit_never_when_nothing_changed() -> None:
    policy = GcPolicy(min_closed=64, max_frozen_age=600.0)
    policy.done("freeze", 0.0, opened=10, closed=0, live=10)
    assert settled(policy, 10.0, opened=10, closed=5) is None  # 5 of 10 closed: below min_closed
    assert settled(policy, 600.0, opened=10, closed=5) == "thaw"  # old enough, and something changed
    policy.done("thaw", 600.0, opened=10, closed=5, live=5)
    assert settled(policy, 5000.0, opened=10, closed=5) is None  # nothing changed since: nothing to reclaim


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50), st.floats(0, 100), st.booleans()), max_size=60))
def test_a_due_thaw_waits_only_for_a_quiet_tick(steps: list[tuple[int, int, float, bool]]) -> None:
    """Whatever happens: a tick whose counts moved does nothing; a quiet tick with the closed sessions over the
    bound thaws; a quiet tick with nothing opened or closed since the last thaw and freeze does nothing."""
    policy, now, opened, closed = GcPolicy(min_closed=8), 0.0, 0, 0
    for new, gone, dt, quiet in steps:
        if not quiet:
            gone = min(gone, opened + new - closed)
            opened, closed = opened + new, closed + gone
        now += dt
        moving = (opened, closed) != policy.previous
        due = closed - policy.closed_seen >= max(8, 0.25 * policy.frozen_sessions)
        idle = opened == policy.opened_seen and opened + closed == policy.changed_seen
        action = policy.decide(now, opened, closed)
        assert action is None if moving or idle else True
        assert action == "thaw" if due and not moving else True
        if action is not None:
            policy.done(action, now, opened, closed, opened - closed)
            assert policy.opened_seen == opened and (action == "freeze" or policy.closed_seen == closed)


async def test_a_real_aggregator_freezes_settled_sessions_and_thaws_to_reclaim_closed_ones(
    serve: Any, fleet: Fleet
) -> None:
    try:
        async with (
            serve([fleet.entry("weather")], manage_gc=True) as running,
            httpx2.AsyncClient(trust_env=False, timeout=30) as http,
        ):
            policy = running.aggregator.gc_policy
            policy.min_closed = 2
            sessions = [await legacy_session(http, running.url) for _ in range(3)]
            table = running.aggregator.sessions
            await async_wait_until(lambda: policy.opened_seen >= 3, timeout=10, what="a freeze after the sessions")
            assert gc.get_freeze_count() > 0
            sdk = [weakref.ref(table.get(h["mcp-session-id"]).sdk) for h in sessions[:2]]
            for headers in sessions[:2]:
                assert (await http.delete(running.url, headers=headers)).status_code == 200
            await async_wait_until(lambda: policy.closed_seen == 2, timeout=10, what="a thaw after two closes")
            assert all(ref() is None for ref in sdk)  # the closed sessions' SDK objects were reclaimed
            assert table.get(sessions[2]["mcp-session-id"]) is not None
    finally:
        gc.unfreeze()  # the test process's objects go back to the collector
