"""The config file as an attacker would write it: bounded, and never echoing a secret."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


async def test_an_alias_bomb_is_refused_by_check_and_by_a_hot_reload(hostile) -> None:  # type: ignore[no-untyped-def]
    report = await hostile("config-alias-bomb")
    facts = report.finding.facts
    assert facts["check_rc"] == 2, report.finding
    assert "alias" in report.finding.attacker_saw
    assert facts["check_peak_rss_mb"] < 200 and facts["check_output_chars"] < 2000
    assert "rejected" in facts["reload_line"] and facts["reload_line_chars"] < 2000


async def test_a_url_with_credentials_is_refused_without_echoing_them(hostile) -> None:  # type: ignore[no-untyped-def]
    report = await hostile("config-secret-url")
    facts = report.finding.facts
    assert facts["check_rc"] == 2 and "credentials" in report.finding.attacker_saw
    assert "rejected" in facts["reload_line"]
    assert facts["leaked"] == []
