"""When to send `list_changed`: a pure decision over list hashes and an injected clock.

The first hash change after a quiet period opens a window; changes inside it
are absorbed; when it closes, each kind whose hash differs from the last one
announced is due, and nothing else. A list that changes and changes back
within one window is therefore never announced, and a burst of view updates
costs one notification per kind. The window does not slide, so a steady
stream of changes still produces a notification every `window` seconds.
"""

from __future__ import annotations

from collections.abc import Mapping

from xds_control.aggregator.catalog import KINDS, Kind

DEFAULT_WINDOW = 0.075


class ChangeCoalescer:
    """Tracks the last announced hash per kind and the deadline of the open window (None: no window)."""

    def __init__(self, announced: Mapping[Kind, str], window: float = DEFAULT_WINDOW) -> None:
        self.window = window
        self._announced = dict(announced)
        self._latest = dict(announced)
        self.deadline: float | None = None

    def observe(self, hashes: Mapping[Kind, str], now: float) -> None:
        """Record the current hashes; open a window if they differ from what was announced."""
        self._latest = dict(hashes)
        if self.deadline is None and self._latest != self._announced:
            self.deadline = now + self.window

    def flush(self, now: float) -> frozenset[Kind]:
        """The kinds to announce now (empty before the deadline); closes the window."""
        if self.deadline is None or now < self.deadline:
            return frozenset()
        self.deadline = None
        due = frozenset(k for k in KINDS if self._latest.get(k) != self._announced.get(k))
        self._announced = dict(self._latest)
        return due
