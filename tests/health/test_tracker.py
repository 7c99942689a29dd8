"""The tracker's verdicts: thresholds, degraded and recovery, the start-up rule, aggregation over endpoints."""

from __future__ import annotations

import pytest

from xds_control.config import HealthConfig
from xds_control.health.tracker import (
    BackendTracker,
    EndpointTracker,
    Outcome,
    Transition,
    best_state,
    next_delay,
    startup_delay,
)
from xds_control.view import BackendState

UNKNOWN, HEALTHY, DEGRADED = BackendState.UNKNOWN, BackendState.HEALTHY, BackendState.DEGRADED
UNHEALTHY, UNAUTHENTICATED = BackendState.UNHEALTHY, BackendState.UNAUTHENTICATED

GOOD = Outcome(ok=True, latency=0.05)
SLOW = Outcome(ok=True, latency=6.0)
FAIL = Outcome(ok=False, latency=0.01, category="connection_refused")
TIMEOUT = Outcome(ok=False, latency=10.0, category="timeout")
LIMITED = Outcome(ok=False, latency=0.01, category="rate_limited", retry_after=4.0)
DENIED = Outcome(ok=False, latency=0.01, category="authentication_failed")

HEALTH = HealthConfig(unhealthy_threshold=3, healthy_threshold=2, degraded_latency=5.0, interval=30.0)


def run(outcomes: list[Outcome], health: HealthConfig = HEALTH) -> tuple[EndpointTracker, list[BackendState]]:
    tracker = EndpointTracker("http://a/mcp")
    states = []
    for outcome in outcomes:
        tracker.observe(outcome, health, now=0.0)
        states.append(tracker.state)
    return tracker, states


def test_unknown_until_first_verdict() -> None:
    assert EndpointTracker("u").state is UNKNOWN


def test_first_success_is_healthy_at_once_whatever_the_healthy_threshold() -> None:
    assert run([GOOD])[1] == [HEALTHY]


def test_startup_failures_stay_unknown_until_the_unhealthy_threshold() -> None:
    """No flapping at start-up: a backend still booting is not declared unhealthy on its first refusal."""
    assert run([FAIL, FAIL, FAIL])[1] == [UNKNOWN, UNKNOWN, UNHEALTHY]


def test_a_late_starter_goes_straight_from_unknown_to_healthy() -> None:
    assert run([FAIL, FAIL, GOOD])[1] == [UNKNOWN, UNKNOWN, HEALTHY]


def test_healthy_needs_unhealthy_threshold_consecutive_failures() -> None:
    _, states = run([GOOD, FAIL, FAIL, GOOD, FAIL, FAIL, FAIL])
    assert states == [HEALTHY, HEALTHY, HEALTHY, HEALTHY, HEALTHY, HEALTHY, UNHEALTHY]


def test_recovery_is_degraded_until_healthy_threshold_good_probes() -> None:
    _, states = run([GOOD, FAIL, FAIL, FAIL, GOOD, GOOD, GOOD])
    assert states[3:] == [UNHEALTHY, DEGRADED, HEALTHY, HEALTHY]


def test_a_failure_during_recovery_goes_back_to_unhealthy() -> None:
    health = HealthConfig(unhealthy_threshold=3, healthy_threshold=3)
    _, states = run([GOOD, FAIL, FAIL, FAIL, GOOD, GOOD, FAIL], health)
    assert states[3:] == [UNHEALTHY, DEGRADED, DEGRADED, UNHEALTHY]


def test_healthy_threshold_one_recovers_on_the_first_good_probe() -> None:
    health = HealthConfig(unhealthy_threshold=1, healthy_threshold=1)
    assert run([GOOD, FAIL, GOOD], health)[1] == [HEALTHY, UNHEALTHY, HEALTHY]


def test_slow_answer_is_degraded_and_fast_answers_restore_healthy() -> None:
    _, states = run([GOOD, SLOW, GOOD, GOOD])
    assert states == [HEALTHY, DEGRADED, DEGRADED, HEALTHY]


def test_slow_answer_from_unknown_is_degraded() -> None:
    assert run([SLOW])[1] == [DEGRADED]


def test_rate_limited_is_degraded_from_any_state_and_resets_failures() -> None:
    tracker, states = run([LIMITED])
    assert states == [DEGRADED]
    tracker, states = run([GOOD, FAIL, FAIL, LIMITED, FAIL, FAIL])
    assert states == [HEALTHY, HEALTHY, HEALTHY, DEGRADED, DEGRADED, DEGRADED]
    assert tracker.consecutive_failures == 2
    assert run([FAIL, FAIL, FAIL, LIMITED])[1][-1] is DEGRADED


def test_auth_failure_is_unauthenticated_at_once_and_recovers_like_unhealthy() -> None:
    _, states = run([GOOD, DENIED, GOOD, GOOD])
    assert states == [HEALTHY, UNAUTHENTICATED, DEGRADED, HEALTHY]
    assert run([DENIED])[1] == [UNAUTHENTICATED]


def test_counters() -> None:
    tracker, _ = run([GOOD, SLOW, FAIL, FAIL])
    assert (tracker.consecutive_failures, tracker.consecutive_successes) == (2, 0)
    tracker, _ = run([FAIL, GOOD, SLOW])
    assert (tracker.consecutive_failures, tracker.consecutive_successes) == (0, 2)


def test_transition_carries_reason_category() -> None:
    tracker = EndpointTracker("u")
    health = HealthConfig(unhealthy_threshold=1)
    assert tracker.observe(TIMEOUT, health, 0.0) == Transition(UNKNOWN, UNHEALTHY, "timeout")
    assert tracker.observe(TIMEOUT, health, 0.0) is None  # no transition, nothing to log
    assert tracker.observe(GOOD, health, 0.0) == Transition(UNHEALTHY, HEALTHY, "probe_ok")


def test_last_success_time_comes_from_the_clock() -> None:
    tracker = EndpointTracker("u")
    tracker.observe(GOOD, HEALTH, now=123.0)
    tracker.observe(FAIL, HEALTH, now=456.0)
    assert tracker.last_success == 123.0


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([HEALTHY, UNHEALTHY], HEALTHY),
        ([UNHEALTHY, DEGRADED], DEGRADED),
        ([UNKNOWN, UNHEALTHY], UNKNOWN),
        ([UNHEALTHY, UNAUTHENTICATED], UNAUTHENTICATED),
        ([UNHEALTHY, UNHEALTHY], UNHEALTHY),
        ([], UNKNOWN),
    ],
)
def test_backend_state_is_the_best_endpoint_state(states: list[BackendState], expected: BackendState) -> None:
    assert best_state(states) is expected


def backend(*urls: str, health: HealthConfig = HEALTH) -> BackendTracker:
    return BackendTracker(urls, health, clock=lambda: 50.0)


def test_backend_aggregates_and_reports_transitions_once() -> None:
    tracker = backend("a", "b", health=HealthConfig(unhealthy_threshold=1))
    first = tracker.observe("a", GOOD)
    assert first.endpoint == Transition(UNKNOWN, HEALTHY, "probe_ok") and first.backend == Transition(
        UNKNOWN, HEALTHY, "probe_ok"
    )
    second = tracker.observe("b", FAIL)
    assert second.endpoint == Transition(UNKNOWN, UNHEALTHY, "connection_refused") and second.backend is None
    third = tracker.observe("a", FAIL)
    assert third.backend == Transition(HEALTHY, UNHEALTHY, "connection_refused")
    assert tracker.last_success == 50.0


def test_breaker_hears_a_failure_only_when_no_endpoint_answers() -> None:
    tracker = backend("a", "b")
    tracker.observe("a", GOOD)
    assert tracker.observe("b", FAIL).breaker_failure is False  # a still answers
    assert tracker.observe("a", TIMEOUT).breaker_failure is True  # now nobody does
    single = backend("a")
    assert single.observe("a", FAIL).breaker_failure is True


def test_breaker_signals_for_429_and_401() -> None:
    tracker = backend("a")
    limited = tracker.observe("a", LIMITED)
    assert limited.breaker_success and not limited.breaker_failure
    denied = tracker.observe("a", DENIED)
    assert not denied.breaker_success and not denied.breaker_failure


def test_backend_counters_are_those_of_the_best_endpoint() -> None:
    tracker = backend("a", "b")
    for outcome in (FAIL, FAIL):
        tracker.observe("a", outcome)
    tracker.observe("b", FAIL)
    assert tracker.consecutive_failures == 1
    tracker.observe("b", GOOD)
    assert tracker.consecutive_failures == 0 and tracker.consecutive_successes == 1


def test_resync_keeps_kept_endpoints_and_adds_unknown_ones() -> None:
    tracker = backend("a", health=HealthConfig(unhealthy_threshold=1))
    tracker.observe("a", GOOD)
    assert tracker.resync(["a", "b"], HEALTH) is None
    assert tracker.endpoints["a"].state is HEALTHY and tracker.endpoints["b"].state is UNKNOWN
    assert tracker.resync(["b"], HEALTH) == Transition(HEALTHY, UNKNOWN, "endpoints_changed")


def test_observation_for_a_removed_endpoint_is_ignored() -> None:
    tracker = backend("a")
    observation = tracker.observe("gone", FAIL)
    assert observation.endpoint is None and observation.backend is None and not observation.breaker_failure


def test_startup_delay_backs_off_to_the_interval() -> None:
    assert [startup_delay(n, 30.0) for n in (1, 2, 3, 4, 5, 6)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert startup_delay(3, 0.2) == 0.2


def test_next_delay() -> None:
    health = HealthConfig(interval=30.0, jitter=0.1)
    tracker = EndpointTracker("u")
    assert next_delay(tracker, health, jitter_sample=0.0, max_backoff=600) == 30.0
    tracker.observe(FAIL, health, 0.0)
    assert next_delay(tracker, health, jitter_sample=0.0, max_backoff=600) == 1.0  # start-up backoff
    tracker.observe(GOOD, health, 0.0)
    assert next_delay(tracker, health, jitter_sample=1.0, max_backoff=600) == pytest.approx(33.0)
    assert next_delay(tracker, health, jitter_sample=-1.0, max_backoff=600) == pytest.approx(27.0)
    tracker.observe(Outcome(False, 0.0, "rate_limited", retry_after=90.0), health, 0.0)
    assert next_delay(tracker, health, jitter_sample=0.0, max_backoff=600) == 90.0
    tracker.observe(Outcome(False, 0.0, "rate_limited", retry_after=9000.0), health, 0.0)
    assert next_delay(tracker, health, jitter_sample=0.0, max_backoff=600) == 600.0
