"""The per-backend circuit breaker (pure: the clock is injected, nothing here does I/O).

    closed ──failure_threshold consecutive failures──▶ open
    open ──open_timeout elapsed──▶ half_open          (probes only)
    half_open ──half_open_successes successes──▶ closed   (open timeout back to base)
    half_open ──one failure──▶ open                    (open timeout doubled, up to max_open_timeout)

Failures are probe failures and data-path failures the aggregator reports;
successes reset the closed state's failure count. The open → half_open step
happens when time passes, so every read goes through `poll()`, which applies
it and returns the transition it made (if any). With `enabled: false` the
breaker is always closed and records nothing.

Every mutating method returns the transitions it made (a list: recording a
failure can first move open → half_open as time has passed, then re-open), so
the caller can log and count each transition exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from xds_control.config import CircuitBreakerConfig
from xds_control.view import BreakerState


@dataclass(frozen=True)
class BreakerTransition:
    before: BreakerState
    after: BreakerState
    reason: str


class CircuitBreaker:
    """One backend's breaker. Not thread-safe; owned by the monitor's event loop."""

    def __init__(self, config: CircuitBreakerConfig, clock: Callable[[], float]) -> None:
        self._config = config
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0  # consecutive failures while closed
        self._successes = 0  # successes while half-open
        self._open_timeout = config.open_timeout  # the timeout of the current (or next) open period
        self._opened_at: float | None = None

    # -- reading ---------------------------------------------------------------------------

    @property
    def config(self) -> CircuitBreakerConfig:
        return self._config

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    @property
    def open_timeout(self) -> float:
        """The length of the current open period (or of the next one, while closed: the base)."""
        return self._open_timeout

    def poll(self) -> BreakerTransition | None:
        """Apply the open → half_open step if its time has come."""
        if (
            self._state is BreakerState.OPEN
            and self._opened_at is not None
            and self._clock() >= self._opened_at + self._open_timeout
        ):
            return self._move(BreakerState.HALF_OPEN, "open_timeout")
        return None

    @property
    def state(self) -> BreakerState:
        """The state as last polled (call `poll()` first to let time advance it)."""
        return self._state

    def half_open_at(self) -> float | None:
        """Clock time at which an open breaker admits probes again; None unless open."""
        if self._state is not BreakerState.OPEN or self._opened_at is None:
            return None
        return self._opened_at + self._open_timeout

    def retry_after(self) -> float | None:
        """Seconds until half-open, while open."""
        at = self.half_open_at()
        return None if at is None else max(0.0, at - self._clock())

    def allows_probe(self) -> bool:
        self.poll()
        return self._state is not BreakerState.OPEN

    # -- recording -------------------------------------------------------------------------

    def record_success(self, *, probe: bool = True) -> list[BreakerTransition]:
        """A success. Only probe successes count towards closing a half-open breaker."""
        if not self._config.enabled:
            return []
        transitions = _listed(self.poll())
        if self._state is BreakerState.CLOSED:
            self._failures = 0
        elif self._state is BreakerState.HALF_OPEN and probe:
            self._successes += 1
            if self._successes >= self._config.half_open_successes:
                transitions.append(self._move(BreakerState.CLOSED, "half_open_successes"))
                self._open_timeout = self._config.open_timeout
        return transitions

    def record_failure(self, reason: str = "failure") -> list[BreakerTransition]:
        """A failure (`reason` is its category). Ignored while open: nothing is admitted then."""
        return self.record_failures(1, reason)

    def record_failures(self, count: int, reason: str = "failure") -> list[BreakerTransition]:
        """`count` failures in a row, at once: the same transitions as `count` calls of `record_failure`
        at one instant, in O(1) whatever `count` is (a peer's number is never a loop bound). Once the
        breaker opens the rest are ignored, as failures are while open."""
        if not self._config.enabled or count <= 0:
            return []
        transitions = _listed(self.poll())
        if self._state is BreakerState.CLOSED:
            self._failures = min(self._failures + count, self._config.failure_threshold)
            if self._failures >= self._config.failure_threshold:
                transitions.append(self._open(reason))
        elif self._state is BreakerState.HALF_OPEN:
            self._open_timeout = min(self._open_timeout * 2, self._config.max_open_timeout)
            transitions.append(self._open(reason))
        return transitions

    def reset(self) -> BreakerTransition | None:
        """Close by hand (admin `reset`): failure count and open timeout back to base."""
        self._failures = 0
        self._successes = 0
        self._open_timeout = self._config.open_timeout
        self._opened_at = None
        if self._state is BreakerState.CLOSED:
            return None
        return self._move(BreakerState.CLOSED, "reset")

    def reconfigure(self, config: CircuitBreakerConfig) -> BreakerTransition | None:
        """Take a reloaded config. Disabling closes the breaker; the current open period keeps its length."""
        self._config = config
        self._open_timeout = min(max(self._open_timeout, config.open_timeout), config.max_open_timeout)
        if not config.enabled:
            return self.reset()
        return None

    # -- internals -------------------------------------------------------------------------

    def _open(self, reason: str) -> BreakerTransition:
        self._opened_at = self._clock()
        return self._move(BreakerState.OPEN, reason)

    def _move(self, to: BreakerState, reason: str) -> BreakerTransition:
        before = self._state
        self._state = to
        self._failures = 0
        self._successes = 0
        if to is not BreakerState.OPEN:
            self._opened_at = None
        return BreakerTransition(before, to, reason)


def _listed(transition: BreakerTransition | None) -> list[BreakerTransition]:
    return [] if transition is None else [transition]
