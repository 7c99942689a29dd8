"""The ADS port under attack, a real Envoy connected alongside: it keeps getting its updates."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


async def test_streams_that_guess_nonces_and_never_read_cost_nothing(hostile) -> None:  # type: ignore[no-untyped-def]
    report = await hostile("ads-never-read-guessed-nonces")
    facts = report.finding.facts
    assert report.finding.attacker_saw.startswith("INVALID_ARGUMENT") and "never sent" in report.finding.attacker_saw
    assert facts["streams_refused"] == facts["streams"] + 1 and facts["envoy_followed_s"] < 30


async def test_huge_nack_details_are_bounded_in_memory_logs_and_admin_nodes(hostile) -> None:  # type: ignore[no-untyped-def]
    report = await hostile("ads-nack-huge-detail")
    facts = report.finding.facts
    assert report.finding.attacker_saw.startswith("RESOURCE_EXHAUSTED")  # 60 MB: over the request bound
    assert facts["admin_nodes_json_bytes"] < 200_000  # was 200 MB
    assert facts["longest_log_line"] < 10_000 and not facts["raw_escape_in_log"]


async def test_malformed_streams_get_a_clean_status_and_peer_strings_are_escaped(hostile) -> None:  # type: ignore[no-untyped-def]
    report = await hostile("ads-malformed")
    facts = report.finding.facts
    assert facts["all_invalid_argument"] and not facts["exception_group_to_peer"]
    assert not facts["traceback_in_log"] and not facts["raw_control_in_log"] and not facts["fake_log_line"]
