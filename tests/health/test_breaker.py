"""The circuit breaker, every transition, with a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xds_control.config import CircuitBreakerConfig
from xds_control.health.breaker import BreakerTransition, CircuitBreaker
from xds_control.view import BreakerState

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(**overrides: object) -> tuple[CircuitBreaker, FakeClock]:
    settings = {
        "failure_threshold": 3,
        "open_timeout": 10.0,
        "max_open_timeout": 35.0,
        "half_open_successes": 2,
    } | overrides
    clock = FakeClock()
    return CircuitBreaker(CircuitBreakerConfig(**settings), clock), clock


def trip(breaker: CircuitBreaker, times: int = 3) -> list[BreakerTransition]:
    transitions = []
    for _ in range(times):
        transitions += breaker.record_failure("timeout")
    return transitions


def test_starts_closed_and_admits_probes() -> None:
    breaker, _ = make()
    assert (
        breaker.state is CLOSED
        and breaker.allows_probe()
        and breaker.half_open_at() is None
        and breaker.retry_after() is None
    )


def test_closed_to_open_at_failure_threshold() -> None:
    breaker, clock = make()
    assert trip(breaker, 2) == []
    assert breaker.state is CLOSED and breaker.consecutive_failures == 2
    assert breaker.record_failure("connection_refused") == [BreakerTransition(CLOSED, OPEN, "connection_refused")]
    assert breaker.state is OPEN and not breaker.allows_probe()
    assert breaker.half_open_at() == clock.now + 10.0
    assert breaker.retry_after() == 10.0


def test_success_resets_the_failure_count_while_closed() -> None:
    breaker, _ = make()
    trip(breaker, 2)
    assert breaker.record_success() == []
    assert breaker.consecutive_failures == 0
    assert trip(breaker, 2) == [] and breaker.state is CLOSED


def test_open_to_half_open_after_open_timeout() -> None:
    breaker, clock = make()
    trip(breaker)
    clock.advance(9.999)
    assert breaker.poll() is None and breaker.state is OPEN
    clock.advance(0.001)
    assert breaker.poll() == BreakerTransition(OPEN, HALF_OPEN, "open_timeout")
    assert breaker.state is HALF_OPEN and breaker.allows_probe() and breaker.half_open_at() is None
    assert breaker.poll() is None  # reported once


def test_open_ignores_results_until_half_open() -> None:
    breaker, _ = make()
    trip(breaker)
    assert breaker.record_failure("timeout") == [] and breaker.record_success() == []
    assert breaker.state is OPEN


def test_half_open_closes_after_half_open_successes() -> None:
    breaker, clock = make()
    trip(breaker)
    clock.advance(10)
    assert breaker.record_success() == [BreakerTransition(OPEN, HALF_OPEN, "open_timeout")]
    assert breaker.record_success() == [BreakerTransition(HALF_OPEN, CLOSED, "half_open_successes")]
    assert breaker.state is CLOSED and breaker.consecutive_failures == 0


def test_half_open_failure_reopens_with_doubled_timeout() -> None:
    breaker, clock = make()
    trip(breaker)
    clock.advance(10)
    assert breaker.record_failure("http_5xx") == [
        BreakerTransition(OPEN, HALF_OPEN, "open_timeout"),
        BreakerTransition(HALF_OPEN, OPEN, "http_5xx"),
    ]
    assert breaker.open_timeout == 20.0 and breaker.half_open_at() == clock.now + 20.0


def test_half_open_one_failure_after_a_success_still_reopens() -> None:
    breaker, clock = make()
    trip(breaker)
    clock.advance(10)
    breaker.record_success()
    assert breaker.state is HALF_OPEN
    assert breaker.record_failure("timeout")[-1] == BreakerTransition(HALF_OPEN, OPEN, "timeout")


def test_open_timeout_grows_to_the_max_and_resets_after_a_close() -> None:
    breaker, clock = make()
    trip(breaker)
    timeouts = [breaker.open_timeout]
    for _ in range(4):
        clock.advance(breaker.open_timeout)
        breaker.record_failure("timeout")
        timeouts.append(breaker.open_timeout)
    assert timeouts == [10.0, 20.0, 35.0, 35.0, 35.0]
    clock.advance(35.0)
    breaker.record_success()
    breaker.record_success()
    assert breaker.state is CLOSED and breaker.open_timeout == 10.0
    trip(breaker)
    assert breaker.half_open_at() == clock.now + 10.0


def test_data_path_successes_do_not_close_half_open() -> None:
    breaker, clock = make(half_open_successes=1)
    trip(breaker)
    clock.advance(10)
    assert breaker.record_success(probe=False) == [BreakerTransition(OPEN, HALF_OPEN, "open_timeout")]
    assert breaker.state is HALF_OPEN
    assert breaker.record_success(probe=True) == [BreakerTransition(HALF_OPEN, CLOSED, "half_open_successes")]


def test_data_path_success_resets_closed_count() -> None:
    breaker, _ = make()
    trip(breaker, 2)
    breaker.record_success(probe=False)
    assert breaker.consecutive_failures == 0


@pytest.mark.parametrize("state", [OPEN, HALF_OPEN])
def test_reset_closes_from_any_state(state: BreakerState) -> None:
    breaker, clock = make()
    trip(breaker)
    clock.advance(10)
    breaker.record_failure("timeout")  # re-open: timeout doubled
    if state is HALF_OPEN:
        clock.advance(20)
        breaker.poll()
    assert breaker.state is state
    assert breaker.reset() == BreakerTransition(state, CLOSED, "reset")
    assert breaker.open_timeout == 10.0 and breaker.consecutive_failures == 0
    assert breaker.reset() is None


def test_disabled_is_always_closed() -> None:
    breaker, clock = make(enabled=False)
    assert trip(breaker, 50) == []
    clock.advance(1000)
    assert breaker.record_success() == [] and breaker.state is CLOSED and breaker.allows_probe()


def test_disabling_by_reload_closes_an_open_breaker() -> None:
    breaker, _ = make()
    trip(breaker)
    transition = breaker.reconfigure(CircuitBreakerConfig(enabled=False))
    assert transition == BreakerTransition(OPEN, CLOSED, "reset") and breaker.state is CLOSED


def test_reload_keeps_the_state_and_caps_the_timeout() -> None:
    breaker, clock = make()
    trip(breaker)
    clock.advance(10)
    breaker.record_failure("timeout")
    assert breaker.open_timeout == 20.0
    assert breaker.reconfigure(CircuitBreakerConfig(failure_threshold=3, open_timeout=5, max_open_timeout=15)) is None
    assert breaker.state is OPEN and breaker.open_timeout == 15.0


def test_threshold_of_one_opens_on_first_failure() -> None:
    breaker, _ = make(failure_threshold=1, half_open_successes=1)
    assert breaker.record_failure("dns") == [BreakerTransition(CLOSED, OPEN, "dns")]


@given(
    failures=st.integers(min_value=0, max_value=40),
    threshold=st.integers(min_value=1, max_value=10),
    half_open_first=st.booleans(),
)
def test_record_failures_equals_that_many_single_failures(failures: int, threshold: int, half_open_first: bool) -> None:
    one, clock_one = make(failure_threshold=threshold)
    many, clock_many = make(failure_threshold=threshold)
    if half_open_first:
        for breaker, clock in ((one, clock_one), (many, clock_many)):
            trip(breaker, threshold)
            clock.advance(10.0)
    expected = []
    for _ in range(failures):
        expected += one.record_failure("http_5xx")
    assert many.record_failures(failures, "http_5xx") == expected
    assert (many.state, many.consecutive_failures, many.open_timeout) == (
        one.state,
        one.consecutive_failures,
        one.open_timeout,
    )


def test_record_failures_takes_a_huge_count_in_constant_time() -> None:
    breaker, _ = make()
    assert breaker.record_failures(2**32 - 1, "http_5xx") == [BreakerTransition(CLOSED, OPEN, "http_5xx")]
    assert breaker.record_failures(2**63, "http_5xx") == []  # open: ignored
