"""Data-path feedback: call outcomes per backend, batched and sent to the control plane about every second.

`OutcomeBatcher` is pure; `report_outcomes_forever` is its shell. Reporting is
best-effort: a batch the control plane cannot take (unreachable, slow) is
dropped and counted, never queued, so a long outage costs no memory and the
control plane never receives stale evidence.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from xds_control.aggregator import metrics
from xds_control.aggregator.rpc_errors import FAILURE_OUTCOMES, OK

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutcomeReport:
    """What one backend's calls did during one window: successes and failures by category."""

    backend: str
    successes: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # transport | http_5xx | timeout -> count
    last_failure_category: str | None = None  # sanitized, e.g. connection_refused, http_5xx, timeout
    window_seconds: float = 0.0

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


class OutcomeBatcher:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since = clock()
        self._counts: dict[str, dict[str, int]] = {}
        self._last: dict[str, str] = {}

    def record(self, backend: str, outcome: str, category: str | None = None) -> None:
        """Count `ok` and the failure outcomes; anything else (auth, unavailable, cancelled) is not evidence."""
        if outcome == OK or outcome in FAILURE_OUTCOMES:
            counts = self._counts.setdefault(backend, {})
            counts[outcome] = counts.get(outcome, 0) + 1
            if outcome != OK:
                self._last[backend] = category or outcome

    def drain(self) -> list[OutcomeReport]:
        now = self._clock()
        window, self._since = now - self._since, now
        counts, self._counts = self._counts, {}
        last, self._last = self._last, {}
        return [
            OutcomeReport(backend, c.get(OK, 0), {k: v for k, v in c.items() if k != OK}, last.get(backend), window)
            for backend, c in sorted(counts.items())
        ]


async def report_outcomes_forever(
    batcher: OutcomeBatcher, send: Callable[[Sequence[OutcomeReport]], Awaitable[None]], interval: float = 1.0
) -> None:
    while True:
        await asyncio.sleep(interval)
        reports = batcher.drain()
        if not reports:
            continue
        try:
            async with asyncio.timeout(interval):
                await send(reports)
        except Exception as exc:
            metrics.OUTCOME_REPORTS.labels(result="dropped").inc()
            log.debug("outcome report dropped", extra={"error": type(exc).__name__})
        else:
            metrics.OUTCOME_REPORTS.labels(result="sent").inc()
