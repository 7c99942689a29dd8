"""The health monitor: probe loops per endpoint, verdicts into the view (the asyncio shell).

    HealthMonitor.run()                      one TaskGroup; in it one task per backend endpoint
      endpoint task                          its own TaskGroup: the probe loop + the change listener
        loop: [wait while the breaker is open] → probe → tracker + breaker → view → sleep (jittered)

Decisions live in the pure parts (`tracker`, `breaker`); this module only
schedules, probes and writes `store.update_backend(name, fn)`. Each endpoint
serializes its probes with a lock, so the admin's `probe_now` and the loop
never probe the same endpoint at once.

Locking rule: everything here runs on the event loop that runs `run()`;
state is mutated only between awaits, so no lock guards the trackers,
breakers or the store (the per-endpoint lock only serializes probes).

Transitions (endpoint state, backend state, breaker) are logged once each on
`xds_control.health` with `extra={event, backend, from, to, reason}` (`event`:
`backend_transition`, `endpoint_transition`, `breaker_transition`) and counted
in `metrics`; individual probes are never logged (each is a span instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from xds_control.config import BackendConfig, Config
from xds_control.health import metrics
from xds_control.health.breaker import BreakerTransition, CircuitBreaker
from xds_control.health.changes import ListenEnd, can_listen, listen
from xds_control.health.classify import Category
from xds_control.health.probe import EndpointProber, ProbeResult
from xds_control.health.tracker import BackendTracker, Outcome, Transition, next_delay
from xds_control.telemetry.trace_context import redact_url
from xds_control.view import BackendState, BackendStatus, BreakerState, Catalog, EndpointStatus, ViewStore

logger = logging.getLogger("xds_control.health")

_BAD = (BackendState.UNHEALTHY, BackendState.UNAUTHENTICATED)


@dataclass(eq=False)
class _Endpoint:
    url: str
    prober: EndpointProber
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    catalog_stale: bool = True  # first contact
    catalog_at: float | None = None
    listener: asyncio.Task[None] | None = None
    listening: bool = False  # the change stream is open
    listen_unsupported: int | None = None  # prober generation on which listening was refused
    task: asyncio.Task[None] | None = None
    group: asyncio.TaskGroup | None = None
    closed: bool = False
    retry_at: float | None = None  # unix time the last answer's Retry-After points at; None without one


@dataclass(eq=False)
class _Backend:
    config: BackendConfig
    tracker: BackendTracker
    breaker: CircuitBreaker
    endpoints: list[_Endpoint]
    catalog: Catalog | None = None
    last_probe_ms: float | None = None
    last_error: str | None = None
    open_until: tuple[float, float] | None = None  # the breaker's half-open time (clock) -> unix time, once computed


class HealthMonitor:
    """Probes every configured backend endpoint and keeps the view's health fields current."""

    def __init__(
        self,
        config: Config,
        store: ViewStore,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng or random.Random()
        self._group: asyncio.TaskGroup | None = None
        self._backends: dict[str, _Backend] = {b.name: self._new_backend(b) for b in config.backends}

    @property
    def config(self) -> Config:
        return self._config

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, *, ready: asyncio.Event | None = None) -> None:
        """Probe until cancelled. `ready` is set once every probe task has started."""
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                for backend in self._backends.values():
                    self._publish(backend)
                    self._start(backend)
                if ready is not None:
                    ready.set()
                await asyncio.Future()  # until cancelled; the tasks live in the group
        finally:
            self._group = None

    def _start(self, backend: _Backend) -> None:
        if self._group is None:
            return
        for endpoint in backend.endpoints:
            endpoint.task = self._group.create_task(
                self._run_endpoint(backend, endpoint), name=f"probe {backend.config.name} {endpoint.url}"
            )

    def _stop(self, backend: _Backend) -> None:
        for endpoint in backend.endpoints:
            endpoint.closed = True
            if endpoint.task is not None:
                endpoint.task.cancel()

    def _new_backend(self, config: BackendConfig) -> _Backend:
        urls = [e.url for e in config.endpoint_urls]
        return _Backend(
            config=config,
            tracker=BackendTracker(urls, self._config.health, self._wall_clock),
            breaker=CircuitBreaker(self._config.circuit_breaker, self._clock),
            endpoints=self._new_endpoints(config),
        )

    def _new_endpoints(self, config: BackendConfig) -> list[_Endpoint]:
        return [
            _Endpoint(
                e.url, EndpointProber(config, e, self._config.health, clock=self._clock, wall_clock=self._wall_clock)
            )
            for e in config.endpoint_urls
        ]

    def apply_config(self, config: Config) -> None:
        """Reload: start, stop or restart probe tasks for added, removed and changed backends."""
        old_health = self._config.health
        self._config = config
        self._store.replace_config(config)
        wanted = {b.name: b for b in config.backends}
        for name in [n for n in self._backends if n not in wanted]:
            self._stop(self._backends.pop(name))
            metrics.forget(name)
            logger.info("backend removed", extra={"backend": name})
        for name, backend_config in wanted.items():
            backend = self._backends.get(name)
            if backend is None:
                backend = self._backends[name] = self._new_backend(backend_config)
                self._start(backend)
                logger.info("backend added", extra={"backend": name})
            else:
                for transition in _listed(backend.breaker.reconfigure(config.circuit_breaker)):
                    self._log_breaker(name, transition)
                if backend.config != backend_config:
                    self._stop(backend)
                    backend.config = backend_config
                    backend.endpoints = self._new_endpoints(backend_config)
                    self._start(backend)
                elif config.health != old_health:
                    for endpoint in backend.endpoints:
                        endpoint.prober.health = config.health
                        endpoint.wake.set()  # a new interval takes effect now
                resynced = backend.tracker.resync([e.url for e in backend_config.endpoint_urls], config.health)
                if resynced is not None:
                    self._log_backend(name, resynced)
            self._publish(backend)

    # -- the endpoint loop -----------------------------------------------------------------

    async def _run_endpoint(self, backend: _Backend, endpoint: _Endpoint) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                endpoint.group = group
                health = self._config.health
                await self._sleep(endpoint, self._rng.uniform(0.0, health.jitter * health.interval))
                while not endpoint.closed:
                    await self._wait_for_breaker(backend, endpoint)
                    try:
                        await self._probe(backend, endpoint)
                    except Exception:  # a bug here must not stop the probing of every other backend
                        logger.exception("probe loop error", extra={"backend": backend.config.name})
                    tracker = backend.tracker.endpoints.get(endpoint.url)
                    health = self._config.health
                    if tracker is None:
                        return
                    delay = next_delay(
                        tracker, health, jitter_sample=self._rng.uniform(-1.0, 1.0), max_backoff=self._max_backoff()
                    )
                    await self._sleep(endpoint, delay)
        finally:
            endpoint.group = None
            await endpoint.prober.aclose()

    def _max_backoff(self) -> float:
        return max(self._config.health.interval, self._config.circuit_breaker.max_open_timeout)

    async def _sleep(self, endpoint: _Endpoint, seconds: float) -> None:
        """Sleep, or less if woken (list changed, breaker reset, config reload)."""
        if seconds > 0 and not endpoint.wake.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await endpoint.wake.wait()
        endpoint.wake.clear()

    async def _wait_for_breaker(self, backend: _Backend, endpoint: _Endpoint) -> None:
        """While the breaker is open nothing is probed; it turns half-open (probes only) after its timeout."""
        while True:
            transition = backend.breaker.poll()
            if transition is not None:
                self._log_breaker(backend.config.name, transition)
                self._publish(backend)
            half_open_at = backend.breaker.half_open_at()
            if half_open_at is None:
                return
            await self._sleep(endpoint, half_open_at - self._clock())

    async def _probe(self, backend: _Backend, endpoint: _Endpoint, *, force_catalog: bool = False) -> None:
        async with endpoint.lock:
            if endpoint.closed:
                return
            refresh = self._config.health.catalog_refresh
            fetch = (
                force_catalog
                or endpoint.catalog_stale
                or endpoint.catalog_at is None
                or self._clock() - endpoint.catalog_at >= refresh
            )
            result = await endpoint.prober.probe(fetch_catalog=fetch)
            if not endpoint.closed:
                self._record(backend, endpoint, result)

    # -- verdicts --------------------------------------------------------------------------

    def _record(self, backend: _Backend, endpoint: _Endpoint, result: ProbeResult) -> None:
        name = backend.config.name
        category = metrics.safe_category(result.category) if result.category is not None else None
        metrics.probe(name, result.latency, category)
        backend.last_probe_ms = round(result.latency * 1000, 3)
        endpoint.retry_at = self._wall_clock() + result.retry_after if result.retry_after else None
        if result.ok:
            if result.catalog is not None:
                backend.catalog = result.catalog
                endpoint.catalog_at = self._clock()
                endpoint.catalog_stale = False
        else:
            backend.last_error = category
            if category != Category.RATE_LIMITED:
                endpoint.catalog_stale = True  # refetch on recovery
        observation = backend.tracker.observe(
            endpoint.url, Outcome(result.ok, result.latency, category, result.retry_after)
        )
        if observation.endpoint is not None and len(backend.endpoints) > 1:
            self._log_endpoint(name, endpoint.url, observation.endpoint)
        if observation.backend is not None:
            self._log_backend(name, observation.backend)
        breaker_transitions: list[BreakerTransition] = []
        if observation.breaker_success:
            breaker_transitions = backend.breaker.record_success()
        elif observation.breaker_failure:
            breaker_transitions = backend.breaker.record_failure(category or Category.UNKNOWN.value)
        for transition in breaker_transitions:
            self._log_breaker(name, transition)
        if result.ok:
            self._ensure_listener(backend, endpoint)
        self._publish(backend)

    def _ensure_listener(self, backend: _Backend, endpoint: _Endpoint) -> None:
        prober = endpoint.prober
        running = endpoint.listener is not None and not endpoint.listener.done()
        if (
            running
            or endpoint.group is None
            or endpoint.listen_unsupported == prober.generation
            or not can_listen(prober)
        ):
            return
        endpoint.listener = endpoint.group.create_task(
            self._listen(endpoint), name=f"listen {backend.config.name} {endpoint.url}"
        )

    async def _listen(self, endpoint: _Endpoint) -> None:
        generation = endpoint.prober.generation
        opened = False

        def on_open() -> None:
            nonlocal opened
            opened = endpoint.listening = True

        def on_change() -> None:
            endpoint.catalog_stale = True
            endpoint.wake.set()

        try:
            end = await listen(endpoint.prober, on_change, on_open=on_open)
        finally:
            endpoint.listening = False
        if end is ListenEnd.UNSUPPORTED:
            endpoint.listen_unsupported = generation
        elif opened:
            endpoint.catalog_stale = True  # a change may have gone unheard until the next listen

    def _publish(self, backend: _Backend) -> None:
        name = backend.config.name
        tracker, breaker = backend.tracker, backend.breaker
        # A deadline in unix time, not a remainder: the admin API and the aggregator count it down when they serve it.
        retry_at: float | None
        half_open_at = breaker.half_open_at()
        if half_open_at is not None:  # open: converted to unix time once per open period, so it never drifts
            if backend.open_until is None or backend.open_until[0] != half_open_at:
                backend.open_until = (half_open_at, self._wall_clock() + half_open_at - self._clock())
            retry_at = backend.open_until[1]
        else:
            hints = [e.retry_at for e in backend.endpoints if e.retry_at is not None]
            retry_at = max(hints) if hints else None

        def endpoint_status(status: EndpointStatus) -> EndpointStatus:
            ep = tracker.endpoints.get(status.url)
            if ep is None or ep.last is None:
                return status
            ms = round(ep.last.latency * 1000, 3)
            return replace(status, state=ep.state, last_probe_ms=ms, last_error=ep.last.category or status.last_error)

        def change(status: BackendStatus) -> BackendStatus:
            return replace(
                status,
                state=tracker.state,
                breaker=breaker.state,
                consecutive_failures=tracker.consecutive_failures,
                consecutive_successes=tracker.consecutive_successes,
                last_probe_ms=backend.last_probe_ms,
                last_success=tracker.last_success,
                last_error=backend.last_error,
                retry_at=retry_at,
                catalog=backend.catalog,
                endpoints=tuple(endpoint_status(e) for e in status.endpoints),
            )

        self._store.update_backend(name, change)
        metrics.set_state(name, tracker.state, breaker.state)

    def _log_backend(self, name: str, transition: Transition) -> None:
        metrics.transition(name, transition.before, transition.after)
        level = logging.WARNING if transition.after in _BAD else logging.INFO
        before, after = transition.before.value, transition.after.value
        extra = {
            "event": "backend_transition",
            "backend": name,
            "from": before,
            "to": after,
            "reason": transition.reason,
        }
        logger.log(level, "backend %s: %s -> %s (%s)", name, before, after, transition.reason, extra=extra)

    def _log_endpoint(self, name: str, url: str, transition: Transition) -> None:
        before, after, endpoint = transition.before.value, transition.after.value, redact_url(url)
        extra = {
            "event": "endpoint_transition",
            "backend": name,
            "endpoint": endpoint,
            "from": before,
            "to": after,
            "reason": transition.reason,
        }
        logger.info("endpoint %s of %s: %s -> %s (%s)", endpoint, name, before, after, transition.reason, extra=extra)

    def _log_breaker(self, name: str, transition: BreakerTransition) -> None:
        level = logging.WARNING if transition.after is BreakerState.OPEN else logging.INFO
        extra = {
            "event": "breaker_transition",
            "backend": name,
            "from": transition.before.value,
            "to": transition.after.value,
            "reason": metrics.safe_reason(transition.reason),
        }
        logger.log(
            level,
            "breaker of %s: %s -> %s (%s)",
            name,
            transition.before.value,
            transition.after.value,
            extra["reason"],
            extra=extra,
        )

    # -- the admin API ---------------------------------------------------------------------

    def _backend(self, name: str) -> _Backend:
        try:
            return self._backends[name]
        except KeyError:
            raise KeyError(f"no backend named {name!r}") from None

    def status(self, name: str) -> BackendStatus:
        status = self._store.current.backend(name)
        if status is None:
            raise KeyError(f"no backend named {name!r}")
        return status

    async def probe_now(self, name: str) -> BackendStatus:
        """Probe every endpoint of `name` now (catalog included, breaker or not) and return its status."""
        backend = self._backend(name)
        async with asyncio.TaskGroup() as group:
            for endpoint in backend.endpoints:
                group.create_task(self._probe(backend, endpoint, force_catalog=True))
        return self.status(name)

    async def reset_breaker(self, name: str) -> BackendStatus:
        """Close the breaker by hand; probing resumes at once. (Async to match the admin's `HealthControl`.)"""
        backend = self._backend(name)
        transition = backend.breaker.reset()
        if transition is not None:
            self._log_breaker(name, transition)
            for endpoint in backend.endpoints:
                endpoint.wake.set()
        self._publish(backend)
        return self.status(name)

    async def record_outcomes(self, name: str, successes: int, failures: int, category: str | None) -> None:
        """Data-path feedback from the aggregator into the breaker. KeyError for an unknown backend.

        A batch is read as its successes followed by its failures (the
        pessimistic order: calls that failed last trip the breaker). Data-path
        successes reset the closed breaker's failure count but do not close a
        half-open one (only probes do). `category` only names the reason in
        the transition log, and only if it is a known category.
        """
        backend = self._backend(name)
        transitions: list[BreakerTransition] = []
        if successes > 0:
            transitions += backend.breaker.record_success(probe=False)
        reason = metrics.safe_category(category) if category is not None else "data_path"
        transitions += backend.breaker.record_failures(failures, reason)  # O(1) whatever the count
        for transition in transitions:
            self._log_breaker(name, transition)
        if transitions:
            self._publish(backend)


def _listed(transition: BreakerTransition | None) -> list[BreakerTransition]:
    return [] if transition is None else [transition]
