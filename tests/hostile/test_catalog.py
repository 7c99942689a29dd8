"""A hostile backend's catalog: bounded across pages, names screened before any client sees them."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


async def test_endless_pages_end_in_catalog_too_large_and_admin_pages_stay_readable(hostile) -> None:  # type: ignore[no-untyped-def]
    report = await hostile("catalog-endless-pages")
    facts = report.finding.facts
    assert facts["last_error"] == "catalog_too_large"
    assert facts["listed"] == 2 and facts["largest_list_page_bytes"] < 4 * 1024 * 1024


async def test_hostile_names_are_dropped_and_counted(hostile) -> None:  # type: ignore[no-untyped-def]
    report = await hostile("catalog-hostile-names")
    facts = report.finding.facts
    assert facts["evil_names"] == ["evil_fine"], report.finding
    assert facts["dropped_metric"] >= 14 and not facts["raw_control_in_log"]
