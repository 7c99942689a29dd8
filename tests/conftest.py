"""Suite-wide set-up."""

from __future__ import annotations

import signal

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """A suite started in the background (`./run test &`, some CI runners) inherits SIGINT ignored, and every
    child a test starts inherits that too: a Python child then never sees Ctrl-C (asyncio.run installs its
    handler only over the default one), and tests that send SIGINT hang. Start from the interactive default."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
