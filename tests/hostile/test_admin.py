"""The admin API under attack: nothing a caller sends stalls the control plane."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


async def test_report_outcomes_with_a_huge_count_costs_constant_time(hostile) -> None:  # type: ignore[no-untyped-def]
    report = await hostile("admin-report-outcomes")
    facts = report.finding.facts
    assert facts["drain_refused"]  # any local process could take every backend down before
    assert facts["refused"] and "UNAUTHENTICATED" in report.finding.attacker_saw  # no token: refused, loopback too
    assert facts["victim_routable"] is False  # the failures were applied (the breaker opened) ...
    assert facts["seconds"] < 10  # ... in constant time per call (the loop took 20 s for 1e7 before)
