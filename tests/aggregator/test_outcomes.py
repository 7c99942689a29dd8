"""Data-path outcome batches (pure batcher; the reporting loop with a fake sink)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from xds_control.aggregator.outcomes import OutcomeBatcher, OutcomeReport, report_outcomes_forever


def test_batches_per_backend_and_window() -> None:
    now = [10.0]
    b = OutcomeBatcher(clock=lambda: now[0])
    for outcome, category in [
        ("ok", None),
        ("ok", None),
        ("transport", "connection_refused"),
        ("timeout", "timeout"),
        ("auth", None),
        ("unavailable", None),
    ]:
        b.record("w", outcome, category)
    b.record("a", "http_5xx", "http_5xx")
    now[0] = 11.5
    reports = b.drain()
    assert reports == [
        OutcomeReport("a", 0, {"http_5xx": 1}, "http_5xx", 1.5),
        OutcomeReport("w", 2, {"transport": 1, "timeout": 1}, "timeout", 1.5),
    ]
    assert reports[1].failed == 2
    assert b.drain() == []


async def test_the_loop_sends_batches_and_drops_what_fails() -> None:
    b = OutcomeBatcher()
    sent: list[Sequence[OutcomeReport]] = []
    attempts = asyncio.Queue[int]()

    async def send(reports: Sequence[OutcomeReport]) -> None:
        attempts.put_nowait(len(reports))
        if not sent:
            sent.append(reports)
            raise ConnectionError("control plane down")  # the first batch is lost, not retried
        sent.append(reports)

    task = asyncio.create_task(report_outcomes_forever(b, send, interval=0.01))
    try:
        b.record("w", "ok")
        assert await asyncio.wait_for(attempts.get(), 5) == 1
        b.record("w", "transport", "connection_reset")
        assert await asyncio.wait_for(attempts.get(), 5) == 1
        assert sent[1] == [OutcomeReport("w", 0, {"transport": 1}, "connection_reset", sent[1][0].window_seconds)]
    finally:
        task.cancel()
