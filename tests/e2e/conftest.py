"""Fixtures of the end-to-end tests (helpers live in `tests.e2e.support`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.support import Backends, backends_fixture


@pytest.fixture
def backends() -> Iterator[Backends]:
    """Demo backends a test starts itself (those it kills or replaces); every one is killed at teardown."""
    with backends_fixture() as started:
        yield started
