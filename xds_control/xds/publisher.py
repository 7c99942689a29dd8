"""View -> snapshot: rebuild on every significant view change and hand it to the cache.

A view that cannot be translated (a bug, or a resource Envoy's schema rejects)
is logged and counted, and the last good snapshot keeps being served.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial

from xds_control.errors import XdsError
from xds_control.view import View, ViewStore
from xds_control.xds import metrics
from xds_control.xds.snapshot import SnapshotBuilder, SnapshotCache

log = logging.getLogger(__name__)


class Publisher:
    """Keeps `cache` in step with `store`. Synchronous: runs inside the ViewStore's change notification."""

    def __init__(
        self, store: ViewStore, cache: SnapshotCache, *, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self._store = store
        self._cache = cache
        self._builder = SnapshotBuilder()
        self._clock = clock
        self._remove: Callable[[], None] | None = None

    def start(self) -> None:
        self.publish(self._store.current)
        self._remove = self._store.add_listener(self.publish)

    def stop(self) -> None:
        if self._remove is not None:
            self._remove()
            self._remove = None

    def publish(self, view: View) -> None:
        started = self._clock()
        try:
            snapshot = self._builder.build(view)
        except XdsError as exc:
            metrics.SNAPSHOT_ERRORS.inc()
            log.error(
                "cannot translate view %d into Envoy resources; keeping the last good snapshot: %s", view.version, exc
            )
            return
        metrics.SNAPSHOT_BUILD.observe(self._clock() - started)
        self._cache.set(snapshot, partial(self._builder.build_for, view, snapshot))
