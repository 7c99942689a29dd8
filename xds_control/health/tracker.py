"""Health verdicts from probe outcomes, per endpoint and per backend (pure: the clock is injected).

One probe outcome is read as one of five signals:

    good      answered within `degraded_latency`
    slow      answered, but slower than `degraded_latency`
    limited   429 rate limited (it is alive and answering)
    denied    401/403
    failed    anything else (connection, timeout, 5xx, protocol, ...)

and moves the endpoint's state:

    from \\ signal   good                       slow       limited    denied           failed
    unknown         healthy                    degraded   degraded   unauthenticated  unhealthy at unhealthy_threshold
    healthy         healthy                    degraded   degraded   unauthenticated  unhealthy at unhealthy_threshold
    degraded        healthy at healthy_thr.    degraded   degraded   unauthenticated  unhealthy at unhealthy_threshold
    unhealthy       healthy at healthy_thr.,   degraded   degraded   unauthenticated  unhealthy
                    else degraded (recovering)
    unauthenticated same as unhealthy          degraded   degraded   unauthenticated  unhealthy at unhealthy_threshold
    (recovering)    as degraded                degraded   degraded   unauthenticated  unhealthy at once

"at X" counts consecutive signals of that kind: `healthy_threshold` counts
consecutive *good* probes, `unhealthy_threshold` consecutive failed ones.
Credentials do not flap, so 401/403 takes effect at once. A recovering
endpoint (answering again after unhealthy/unauthenticated, `healthy_threshold`
not reached yet) is `degraded`, as the design's health model says, and one
failure sends it straight back to `unhealthy` (it never became healthy).

Start-up rule: an endpoint stays `unknown` (pushed to Envoy as UNKNOWN, so it
keeps receiving traffic) until its first verdict. One good probe makes it
healthy at once: there is nothing to recover from. Failures move it to
`unhealthy` only after `unhealthy_threshold` consecutive failures, exactly as
from healthy, so a backend still booting when the control plane starts does
not flap to unhealthy; but while an endpoint is `unknown` with failures the
monitor re-probes it on a short backoff (`startup_delay`: 1 s, 2 s, 4 s, ...,
never longer than `health.interval`) instead of the full interval, so with
the defaults (30 s, threshold 3) a backend that is really down is declared
unhealthy within about 7 s of start-up rather than after 90 s.

A backend's state is the best of its endpoints' states, in the order
healthy > degraded > unknown > unauthenticated > unhealthy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from xds_control.config import HealthConfig
from xds_control.health.classify import Category
from xds_control.view import BackendState

STARTUP_BASE_DELAY = 1.0

# Best first: a backend is as good as its best endpoint.
STATE_ORDER: tuple[BackendState, ...] = (
    BackendState.HEALTHY,
    BackendState.DEGRADED,
    BackendState.UNKNOWN,
    BackendState.UNAUTHENTICATED,
    BackendState.UNHEALTHY,
)
_RANK = {s: i for i, s in enumerate(STATE_ORDER)}


class Signal(StrEnum):
    GOOD = "good"
    SLOW = "slow"
    LIMITED = "limited"
    DENIED = "denied"
    FAILED = "failed"


@dataclass(frozen=True)
class Outcome:
    """What one probe of one endpoint said. `category` is set when it did not answer cleanly."""

    ok: bool
    latency: float = 0.0
    category: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True)
class Transition:
    before: BackendState
    after: BackendState
    reason: str


def signal_of(outcome: Outcome, health: HealthConfig) -> Signal:
    if outcome.ok:
        return Signal.SLOW if outcome.latency > health.degraded_latency else Signal.GOOD
    if outcome.category == Category.RATE_LIMITED:
        return Signal.LIMITED
    if outcome.category == Category.AUTHENTICATION_FAILED:
        return Signal.DENIED
    return Signal.FAILED


def best_state(states: Iterable[BackendState]) -> BackendState:
    return min(states, key=_RANK.__getitem__, default=BackendState.UNKNOWN)


class EndpointTracker:
    """The verdict for one endpoint, from its consecutive probe outcomes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.state = BackendState.UNKNOWN
        self.consecutive_failures = 0
        self.consecutive_successes = 0  # answered (good or slow)
        self._consecutive_good = 0
        self._recovering = False  # answering again after unhealthy/unauthenticated, threshold not reached
        self.last: Outcome | None = None
        self.last_signal: Signal | None = None
        self.last_success: float | None = None

    @property
    def answered(self) -> bool:
        """Did the latest probe get an answer (good, slow or rate limited)?"""
        return self.last_signal in (Signal.GOOD, Signal.SLOW, Signal.LIMITED)

    def observe(self, outcome: Outcome, health: HealthConfig, now: float) -> Transition | None:
        signal = signal_of(outcome, health)
        self.last = outcome
        self.last_signal = signal
        if signal in (Signal.GOOD, Signal.SLOW):
            self.consecutive_failures = 0
            self.consecutive_successes += 1
            self._consecutive_good = self._consecutive_good + 1 if signal is Signal.GOOD else 0
            self.last_success = now
        else:
            self.consecutive_successes = 0
            self._consecutive_good = 0
            self.consecutive_failures = 0 if signal is Signal.LIMITED else self.consecutive_failures + 1
        after, reason = self._next(signal, outcome, health)
        if after is BackendState.DEGRADED:
            self._recovering = self._recovering or self.state in (BackendState.UNHEALTHY, BackendState.UNAUTHENTICATED)
        else:
            self._recovering = False
        if after is self.state:
            return None
        transition = Transition(self.state, after, reason)
        self.state = after
        return transition

    def _next(self, signal: Signal, outcome: Outcome, health: HealthConfig) -> tuple[BackendState, str]:
        state = self.state
        if signal is Signal.GOOD:
            if (
                state in (BackendState.UNKNOWN, BackendState.HEALTHY)
                or self._consecutive_good >= health.healthy_threshold
            ):
                return BackendState.HEALTHY, "probe_ok"
            return BackendState.DEGRADED, "recovering"
        if signal is Signal.SLOW:
            return BackendState.DEGRADED, "slow"
        if signal is Signal.LIMITED:
            return BackendState.DEGRADED, Category.RATE_LIMITED.value
        if signal is Signal.DENIED:
            return BackendState.UNAUTHENTICATED, Category.AUTHENTICATION_FAILED.value
        if (
            state is BackendState.UNHEALTHY
            or self._recovering
            or self.consecutive_failures >= health.unhealthy_threshold
        ):
            return BackendState.UNHEALTHY, outcome.category or Category.UNKNOWN.value
        return state, ""


@dataclass(frozen=True)
class Observation:
    """The effect of one outcome: the endpoint's and the backend's transitions, and what the breaker should hear."""

    endpoint: Transition | None
    backend: Transition | None
    breaker_failure: bool  # a failure of the backend as a whole (no endpoint answered last time)
    breaker_success: bool


class BackendTracker:
    """The endpoints of one backend and the backend verdict aggregated over them.

    Breaker input: a success of any endpoint is a backend success; a failure
    is a backend failure only if no endpoint answered its latest probe, so a
    dead replica next to a live one does not trip the backend's breaker. A
    429 answer counts as a success for the breaker (the backend is alive;
    the state says degraded), a 401/403 as neither (credentials are a
    configuration problem, and backing off would only delay noticing the fix).
    """

    def __init__(self, urls: Iterable[str], health: HealthConfig, clock: Callable[[], float]) -> None:
        self.health = health
        self._clock = clock
        self.endpoints: dict[str, EndpointTracker] = {u: EndpointTracker(u) for u in urls}
        self.state = BackendState.UNKNOWN

    def resync(self, urls: Iterable[str], health: HealthConfig) -> Transition | None:
        """Take a reloaded endpoint list and health config: kept endpoints keep their verdicts."""
        self.health = health
        self.endpoints = {u: self.endpoints.get(u) or EndpointTracker(u) for u in urls}
        return self._aggregate("endpoints_changed")

    def observe(self, url: str, outcome: Outcome) -> Observation:
        endpoint = self.endpoints.get(url)
        if endpoint is None:  # removed by a reload while its probe ran
            return Observation(None, None, False, False)
        signal = signal_of(outcome, self.health)
        endpoint_transition = endpoint.observe(outcome, self.health, self._clock())
        backend_transition = self._aggregate(endpoint_transition.reason if endpoint_transition else "")
        success = signal in (Signal.GOOD, Signal.SLOW, Signal.LIMITED)
        failure = signal is Signal.FAILED and not any(e.answered for e in self.endpoints.values())
        return Observation(endpoint_transition, backend_transition, failure, success)

    def _aggregate(self, reason: str) -> Transition | None:
        after = best_state(e.state for e in self.endpoints.values())
        if after is self.state:
            return None
        transition = Transition(self.state, after, reason or after.value)
        self.state = after
        return transition

    # -- what the view shows ---------------------------------------------------------------

    @property
    def consecutive_failures(self) -> int:
        """Failures in a row of every endpoint (the least-failing endpoint's count)."""
        return min((e.consecutive_failures for e in self.endpoints.values()), default=0)

    @property
    def consecutive_successes(self) -> int:
        return max((e.consecutive_successes for e in self.endpoints.values()), default=0)

    @property
    def last_success(self) -> float | None:
        return max((e.last_success for e in self.endpoints.values() if e.last_success is not None), default=None)


def startup_delay(failures: int, interval: float) -> float:
    """Delay before re-probing an `unknown` endpoint after `failures` failures: 1 s doubling, capped at `interval`."""
    base = min(STARTUP_BASE_DELAY, interval)
    return min(interval, base * 2.0 ** max(0, failures - 1))


def next_delay(endpoint: EndpointTracker, health: HealthConfig, *, jitter_sample: float, max_backoff: float) -> float:
    """Seconds until the endpoint's next probe.

    `jitter_sample` is uniform in [-1, 1] and shifts the delay by up to
    `health.jitter` of itself (so 500 backends do not probe in lockstep). A
    `Retry-After` from the last answer is honoured, up to `max_backoff`.
    """
    if endpoint.state is BackendState.UNKNOWN and endpoint.consecutive_failures > 0:
        delay = startup_delay(endpoint.consecutive_failures, health.interval)
    else:
        delay = health.interval
    retry_after = endpoint.last.retry_after if endpoint.last is not None else None
    if retry_after:
        delay = max(delay, min(retry_after, max_backoff))
    return max(0.0, delay * (1.0 + health.jitter * max(-1.0, min(1.0, jitter_sample))))
