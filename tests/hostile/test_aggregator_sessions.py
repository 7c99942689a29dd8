"""The aggregator under attack (attacks_aggregator.py), real processes: abandoned sessions, made-up session ids
and a backend's backtracking regex neither stall it, nor grow it, nor fail the legitimate client."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


async def test_abandoned_initializes_never_lock_out_a_newcomer(hostile) -> None:  # type: ignore[no-untyped-def]
    facts = (await hostile("aggregator-abandoned-initialize")).finding.facts
    assert facts["refused"] == 0, facts  # at the cap the longest idle session went, not the newcomer
    assert facts["newcomer_ok"], facts
    assert facts["opening"] <= 100 and facts["legacy"] <= 400, facts


async def test_made_up_session_ids_change_nothing(hostile) -> None:  # type: ignore[no-untyped-def]
    facts = (await hostile("aggregator-random-session-ids")).finding.facts
    assert facts["outcomes"] == {"404": facts["requests"]}, facts
    assert facts["victim_notified"] and facts["victim_served"], facts
    assert facts["legacy"] == 1, facts  # only the victim's: made-up ids are never kept


async def test_a_backtracking_pattern_in_a_backend_schema_costs_nothing(hostile) -> None:  # type: ignore[no-untyped-def]
    facts = (await hostile("aggregator-regex-arguments")).finding.facts
    assert facts["codes"] == [-32602] * facts["calls"], facts  # the argument fails the pattern, told at once
