"""The hostile suite: each test runs one registered attack against real processes (see support.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hostile.support import TEST_BOUNDS, Report, load_attacks, run_attack


@pytest.fixture
def hostile(tmp_path: Path):  # type: ignore[no-untyped-def]
    """`await hostile(name)`: run the attack at the tests' size and fail on any broken bound."""
    attacks = load_attacks()

    async def run(name: str) -> Report:
        report = await run_attack(attacks[name], tmp_path / name)
        problems = report.problems(TEST_BOUNDS)
        assert not problems, f"{name}: " + "; ".join(problems) + f"\nfinding: {report.finding}"
        return report

    return run
