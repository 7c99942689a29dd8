"""Where the aggregator's view comes from, and the task that follows it.

`ViewSource` is the narrow seam: `watch()` yields the full view on connect and
then every change; `report_outcomes()` sends data-path feedback back. Two
implementations:

* `AdminViewSource`: the control plane's admin gRPC Watch stream
  (`xds_control.admin.client.AdminClient`), used by `serve_forever`; given
  several control planes (`aggregator.control_plane_admin` as a list) it stays
  on one until its stream fails, then moves to the next in the list;
* `StoreViewSource`: an in-process `ViewStore`, for tests and for running the
  aggregator inside the control-plane process.

`ViewFollower` consumes a source forever. When the stream fails or ends it
keeps the last view (calls and lists go on being served from it), marks the
view stale (metric + one log line per edge), and reconnects with capped
exponential backoff and full jitter. Every update says which control plane
sent it (`origin`), and `keep_verdicts` lets no control plane's "unknown"
(it has no verdict yet: it just started) replace a verdict the aggregator
already has. The backoff is hand-written rather than
tenacity's: it must restart from the smallest delay once a connection has
delivered a view, however long ago the previous failure was, and a connection
that fails *after* succeeding is a new incident, not attempt N+1.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from xds_control.aggregator import metrics
from xds_control.aggregator.outcomes import OutcomeReport
from xds_control.errors import XdsControlError
from xds_control.view import BackendState, BackendStatus, ViewStore

TokenSource = str | Callable[[], str | None] | None  # as admin.client.TokenSource (not imported: grpclib stays lazy)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ViewUpdate:
    """One version of the control plane's view (the shape of the admin API's WatchEvent)."""

    version: int
    backends: Mapping[str, BackendStatus]
    origin: str = ""  # the control plane that sent it (its admin address); versions count per origin


def keep_verdicts(previous: Mapping[str, BackendStatus] | None, update: ViewUpdate) -> ViewUpdate:
    """`update`, with each backend it reports `unknown` but `previous` had a verdict for (same endpoints)
    replaced by the previous status. A control plane reports `unknown` only before its own first verdict
    (it started or restarted; a reload keeps the verdicts of kept endpoints), so this is how an aggregator
    that fails over to, or reconnects to, a fresh control plane keeps routing what it routed."""
    if not previous:
        return update
    kept: dict[str, BackendStatus] | None = None
    for name, status in update.backends.items():
        before = previous.get(name)
        if (
            before is not None
            and status.state is BackendState.UNKNOWN
            and before.state is not BackendState.UNKNOWN
            and [e.url for e in before.endpoints] == [e.url for e in status.endpoints]
        ):
            if kept is None:
                kept = dict(update.backends)
            kept[name] = before
    return update if kept is None else ViewUpdate(update.version, kept, update.origin)


class ViewSource(Protocol):
    def watch(self) -> AsyncIterator[ViewUpdate]:
        """The full view at once, then each change. Raises (or ends) when the connection is lost."""
        ...

    async def report_outcomes(self, reports: Sequence[OutcomeReport]) -> None:
        """Send a batch of data-path outcomes. May raise; the caller drops the batch."""
        ...


class StoreViewSource:
    """A `ViewSource` over an in-process `ViewStore` (same event loop). Outcome reports are kept in `reports`."""

    def __init__(self, store: ViewStore, refresh: Callable[[str], Awaitable[Any]] | None = None) -> None:
        self.store = store
        self.reports: list[OutcomeReport] = []
        self.refreshes: list[str] = []  # backends whose catalog the aggregator asked to refresh
        self._refresh = refresh

    async def refresh(self, backend: str) -> None:
        """A backend announced a list change: `refresh` (when given) re-reads its catalog into the store."""
        self.refreshes.append(backend)
        if self._refresh is not None:
            await self._refresh(backend)

    async def watch(self) -> AsyncIterator[ViewUpdate]:
        view = self.store.current
        yield ViewUpdate(view.version, view.backends)
        while True:
            view = await self.store.wait_for_change(view.version)
            yield ViewUpdate(view.version, view.backends)

    async def report_outcomes(self, reports: Sequence[OutcomeReport]) -> None:
        self.reports.extend(reports)


class AdminViewSource:
    """The control plane's admin gRPC API (`AdminClient(target, token)`): Watch and ReportOutcomes.

    `targets`: one admin address, or several in failover order. A watch uses the
    current one; a watch that fails or ends moves on to the next (after the
    last, the first), so the aggregator stays on one control plane until it
    fails. Outcomes go to the current one. The client's own reconnect loop is
    switched off (`reconnect=False`): the follower owns reconnection, so it can
    mark the view stale while it waits.
    """

    def __init__(self, targets: str | Sequence[str], token: TokenSource = None) -> None:
        self.targets = [targets] if isinstance(targets, str) else list(targets)
        if not self.targets:
            raise ValueError("AdminViewSource needs at least one admin address")
        self.token = token
        self._at = 0
        self._clients: dict[str, Any] = {}

    @property
    def target(self) -> str:
        """The control plane in use (or next to be tried)."""
        return self.targets[self._at]

    def _admin(self) -> Any:
        client = self._clients.get(self.target)
        if client is None:
            from xds_control.admin.client import (
                AdminClient,  # grpclib and the admin protos are imported only when this source is used
            )

            client = self._clients[self.target] = AdminClient(self.target, token=self.token)
        return client

    async def watch(self) -> AsyncIterator[ViewUpdate]:
        target = self.target
        try:
            async for event in self._admin().watch(reconnect=False):
                yield ViewUpdate(int(event.version), dict(event.backends), target)
        finally:
            if len(self.targets) > 1 and self.target == target:
                self._at = (self._at + 1) % len(self.targets)  # this one failed (or we are closing): the next

    async def refresh(self, backend: str) -> None:
        """A backend announced a list change: the control plane probes it now (`ProbeNow`), catalog included;
        the new catalog arrives on the Watch stream."""
        await self._admin().probe_now(backend)

    async def report_outcomes(self, reports: Sequence[OutcomeReport]) -> None:
        from xds_control.admin.client import Outcome

        outcomes = [Outcome(r.backend, r.successes, r.failed, r.last_failure_category) for r in reports]
        await self._admin().report_outcomes(outcomes)

    async def aclose(self) -> None:
        for client in self._clients.values():
            close = getattr(client, "close", None) or getattr(client, "aclose", None)
            if close is not None:
                result = close()
                if asyncio.iscoroutine(result):
                    await result


async def _close(stream: AsyncIterator[ViewUpdate]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:
            pass


class Backoff:
    """Capped exponential backoff with full jitter: delay n is uniform in [0, min(cap, base * 2**n)]."""

    def __init__(self, base: float = 0.1, cap: float = 5.0, rng: Callable[[], float] = random.random) -> None:
        self.base, self.cap, self._rng = base, cap, rng
        self.failures = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2**self.failures)
        self.failures += 1
        return ceiling * self._rng()

    def reset(self) -> None:
        self.failures = 0


class ViewFollower:
    """Applies every view from `source` via `apply`; reconnects on failure; tracks staleness."""

    def __init__(
        self,
        source: ViewSource,
        apply: Callable[[ViewUpdate], None],
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self._apply = apply
        self.backoff = backoff or Backoff()
        self._clock = clock
        self.connected = False
        self.stale_since: float | None = clock()  # no view yet: stale since start
        self.last_version = 0
        self.origin = ""  # the control plane of the last view applied
        self._backends: Mapping[str, BackendStatus] | None = None
        self._updated = asyncio.Condition()
        self._warned = False

    def staleness(self) -> float:
        return 0.0 if self.stale_since is None else self._clock() - self.stale_since

    async def wait_for_version(self, version: int) -> None:
        """Wait until a view with at least `version` was applied."""
        async with self._updated:
            await self._updated.wait_for(lambda: self.last_version >= version)

    async def run(self) -> None:
        """Forever. Only an `XdsControlError` from `apply` (a config error) ends it; other apply bugs are logged."""
        metrics.VIEW_STALENESS.set_function(self.staleness)
        metrics.VIEW_STALE.set(1)
        while True:
            stream = self.source.watch()
            try:
                failure = await self._follow(stream)
            finally:
                await _close(stream)
            self._stale(failure)
            metrics.VIEW_RECONNECTS.inc()
            await asyncio.sleep(self.backoff.next_delay())

    async def _follow(self, stream: AsyncIterator[ViewUpdate]) -> Exception:
        """Apply updates until the stream fails; returns why it did."""
        while True:
            try:
                update = await anext(stream)
            except StopAsyncIteration:
                return ConnectionError("the view stream ended")
            except Exception as exc:
                return exc
            self._fresh(update.origin)
            update = keep_verdicts(self._backends, update)
            try:
                self._apply(update)
            except XdsControlError:
                raise
            except Exception:
                log.exception("could not apply view %s; keeping the previous one", update.version)
                continue
            self.last_version = update.version
            self._backends = update.backends
            self.origin = update.origin
            metrics.VIEW_VERSION.set(update.version)
            async with self._updated:
                self._updated.notify_all()

    def _fresh(self, origin: str) -> None:
        self.backoff.reset()
        if not self.connected:
            self.connected = True
            self.stale_since = None
            self._warned = False
            metrics.VIEW_STALE.set(0)
            log.info("view stream connected; the view is current", extra={"origin": origin})

    def _stale(self, exc: Exception) -> None:
        if self.connected:
            self.connected = False
            self.stale_since = self._clock()
            metrics.VIEW_STALE.set(1)
            log.warning(
                "view stream lost; serving the last view until it reconnects", extra={"error": type(exc).__name__}
            )
        elif not self._warned:
            self._warned = True
            log.warning("cannot reach the control plane's view stream; retrying", extra={"error": type(exc).__name__})
