"""The view: the control plane's one model of every backend's health and catalog.

`health` writes it, `xds` translates it into Envoy resources, `admin` serves it
(and the aggregator consumes it through the admin watch stream). It is a leaf:
it imports nothing of the other parts but `config`.

A `View` is an immutable value. The `ViewStore` holds the current one and
replaces it on every change. Only *significant* changes bump the version and
wake watchers (state, breaker, drain, catalog, endpoint health, config);
probe statistics (latency, last success time) are updated in place of the
value without a version bump, so a healthy fleet probed every second does not
produce a stream of no-op versions.

Locking rule: a ViewStore is owned by one asyncio event loop and mutated only
from it; no lock is needed because no method awaits while mutating.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from xds_control.config import BackendConfig, Config


class BackendState(StrEnum):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    UNAUTHENTICATED = "unauthenticated"


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class EnvoyHealth(StrEnum):
    """The `envoy.config.core.v3.HealthStatus` an endpoint is pushed with."""

    UNKNOWN = "UNKNOWN"
    HEALTHY = "HEALTHY"
    DEGRADED = "DEGRADED"
    UNHEALTHY = "UNHEALTHY"
    DRAINING = "DRAINING"


ROUTABLE_STATES = frozenset({BackendState.HEALTHY, BackendState.DEGRADED})


def routable(state: BackendState, breaker: BreakerState = BreakerState.CLOSED, drained: bool = False) -> bool:
    """The one definition of "may receive traffic": healthy or degraded, breaker closed, not drained.

    `unknown` is not routable for the aggregator (no catalog yet) but is *not*
    pushed to Envoy as UNHEALTHY either; see `envoy_health`.
    """
    return state in ROUTABLE_STATES and breaker is BreakerState.CLOSED and not drained


def remaining(deadline: float | None, now: float) -> float | None:
    """Seconds from `now` until `deadline` (same clock), never negative, to the millisecond; None for no deadline."""
    return None if deadline is None else round(max(0.0, deadline - now), 3)


def _canonical_hash(payload: Any) -> str:
    data = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass(frozen=True)
class Catalog:
    """What a backend offers, as the raw JSON objects it listed (tools, resources, templates, prompts)."""

    tools: tuple[Mapping[str, Any], ...] = ()
    resources: tuple[Mapping[str, Any], ...] = ()
    resource_templates: tuple[Mapping[str, Any], ...] = ()
    prompts: tuple[Mapping[str, Any], ...] = ()
    protocol_version: str = ""
    capabilities: Mapping[str, Any] = field(default_factory=dict)
    hash: str = ""

    @classmethod
    def build(
        cls,
        *,
        tools: Iterable[Mapping[str, Any]] = (),
        resources: Iterable[Mapping[str, Any]] = (),
        resource_templates: Iterable[Mapping[str, Any]] = (),
        prompts: Iterable[Mapping[str, Any]] = (),
        protocol_version: str = "",
        capabilities: Mapping[str, Any] | None = None,
    ) -> Catalog:
        parts = {
            "tools": tuple(tools),
            "resources": tuple(resources),
            "resource_templates": tuple(resource_templates),
            "prompts": tuple(prompts),
        }
        digest = _canonical_hash({k: list(v) for k, v in parts.items()})
        return cls(**parts, protocol_version=protocol_version, capabilities=dict(capabilities or {}), hash=digest)

    def to_json(self) -> dict[str, Any]:
        return {
            "tools": list(self.tools),
            "resources": list(self.resources),
            "resource_templates": list(self.resource_templates),
            "prompts": list(self.prompts),
            "protocol_version": self.protocol_version,
            "capabilities": dict(self.capabilities),
            "hash": self.hash,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Catalog:
        return cls.build(
            tools=data.get("tools", ()),
            resources=data.get("resources", ()),
            resource_templates=data.get("resource_templates", ()),
            prompts=data.get("prompts", ()),
            protocol_version=data.get("protocol_version", ""),
            capabilities=data.get("capabilities") or {},
        )


@dataclass(frozen=True)
class EndpointStatus:
    """One replica of a backend. `url` is its configured URL (the identity)."""

    url: str
    state: BackendState = BackendState.UNKNOWN
    last_probe_ms: float | None = None
    last_error: str | None = None
    address: str | None = None  # resolved IP when the URL names a host (EDS needs an IP); None: not resolved yet

    def significant(self) -> tuple[Any, ...]:
        return (self.url, self.state, self.address)


@dataclass(frozen=True)
class BackendStatus:
    """Everything known about one backend. Errors are sanitized categories, never raw text."""

    name: str
    state: BackendState = BackendState.UNKNOWN
    breaker: BreakerState = BreakerState.CLOSED
    drained: bool = False
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    last_probe_ms: float | None = None
    last_success: float | None = None  # unix time
    last_error: str | None = None
    retry_at: float | None = None  # unix time of the next chance of recovery, when known (see `retry_after`)
    state_since: float | None = None  # unix time of the last state change
    catalog: Catalog | None = None
    endpoints: tuple[EndpointStatus, ...] = ()

    @property
    def routable(self) -> bool:
        return routable(self.state, self.breaker, self.drained)

    @property
    def catalog_hash(self) -> str:
        return self.catalog.hash if self.catalog else ""

    def retry_after(self, now: float) -> float | None:
        """Seconds from `now` (unix time) until the next chance of recovery, to the millisecond; None if unknown.

        The view keeps the deadline, never the remainder, so whoever serves the figure computes it at the
        moment it serves it and it counts down."""
        return remaining(self.retry_at, now)

    def significant(self) -> tuple[Any, ...]:
        """The fields whose change is a new view version (everything but probe statistics)."""
        return (
            self.name,
            self.state,
            self.breaker,
            self.drained,
            self.last_error,
            self.catalog_hash,
            tuple(e.significant() for e in self.endpoints),
        )


def envoy_health(backend: BackendStatus, endpoint: EndpointStatus) -> EnvoyHealth:
    """The EDS health of one endpoint: the backend's verdict gates, then the endpoint's own.

    * drained backend -> DRAINING (Envoy stops sending new requests to it);
    * breaker open / half-open, or backend unhealthy/unauthenticated -> UNHEALTHY;
    * otherwise the endpoint's own state, with `unknown` pushed as UNKNOWN
      (Envoy routes to it: nothing flaps to unhealthy because we just started).
    """
    if backend.drained:
        return EnvoyHealth.DRAINING
    if backend.breaker is not BreakerState.CLOSED:
        return EnvoyHealth.UNHEALTHY
    if backend.state in (BackendState.UNHEALTHY, BackendState.UNAUTHENTICATED):
        return EnvoyHealth.UNHEALTHY
    return {
        BackendState.UNKNOWN: EnvoyHealth.UNKNOWN,
        BackendState.HEALTHY: EnvoyHealth.HEALTHY,
        BackendState.DEGRADED: EnvoyHealth.DEGRADED,
        BackendState.UNHEALTHY: EnvoyHealth.UNHEALTHY,
        BackendState.UNAUTHENTICATED: EnvoyHealth.UNHEALTHY,
    }[endpoint.state]


def initial_status(backend: BackendConfig) -> BackendStatus:
    return BackendStatus(name=backend.name, endpoints=tuple(EndpointStatus(url=e.url) for e in backend.endpoint_urls))


def _resync_endpoints(status: BackendStatus, backend: BackendConfig) -> BackendStatus:
    """Keep the status of endpoints that survive a config change; new ones start unknown."""
    old = {e.url: e for e in status.endpoints}
    endpoints = tuple(old.get(e.url, EndpointStatus(url=e.url)) for e in backend.endpoint_urls)
    return replace(status, endpoints=endpoints)


@dataclass(frozen=True)
class View:
    """An immutable snapshot: the config in force and the status of each configured backend (config order)."""

    version: int
    config: Config
    backends: Mapping[str, BackendStatus]
    # The JWKS documents of `auth.issuers[].jwks_file`, by path, as the control plane last read them (the
    # public listener carries them inline, so a key rotation is a listener push, not an Envoy restart).
    keys: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def backend(self, name: str) -> BackendStatus | None:
        return self.backends.get(name)

    def routable_backends(self) -> list[BackendStatus]:
        return [b for b in self.backends.values() if b.routable]


Listener = Callable[[View], None]


class ViewStore:
    """Holds the current `View`; every significant change makes a new version and wakes watchers."""

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        statuses = {b.name: initial_status(b) for b in config.backends}
        self._statuses = (
            statuses  # the dict behind the view's read-only proxy: copying it is much cheaper than the proxy
        )
        self._view = View(version=1, config=config, backends=MappingProxyType(statuses))
        self._changed = asyncio.Event()
        self._listeners: list[Listener] = []

    @property
    def current(self) -> View:
        return self._view

    @property
    def version(self) -> int:
        return self._view.version

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(view)` synchronously after every significant change. Returns a remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def wait_for_change(self, after_version: int) -> View:
        """Return the first view whose version is greater than `after_version` (at once if there is one)."""
        while self._view.version <= after_version:
            event = self._changed
            await event.wait()
        return self._view

    # -- mutation ---------------------------------------------------------------------------

    def _publish(self, config: Config, statuses: dict[str, BackendStatus], significant: bool) -> View:
        """`statuses`: a new dict, owned by the store from now on (views share it read-only)."""
        version = self._view.version + 1 if significant else self._view.version
        self._statuses = statuses
        self._view = View(version=version, config=config, backends=MappingProxyType(statuses), keys=self._view.keys)
        if significant:
            event, self._changed = self._changed, asyncio.Event()
            event.set()
            for listener in list(self._listeners):
                listener(self._view)
        return self._view

    def replace_config(self, config: Config) -> View:
        """Apply a new config: added backends start unknown, removed ones vanish, kept ones keep their status."""
        old = self._view.backends
        statuses: dict[str, BackendStatus] = {}
        for backend in config.backends:
            previous = old.get(backend.name)
            statuses[backend.name] = (
                initial_status(backend) if previous is None else _resync_endpoints(previous, backend)
            )
        significant = config != self._view.config or list(statuses) != list(old)
        return self._publish(config, statuses, significant)

    def update_backend(self, name: str, change: Callable[[BackendStatus], BackendStatus]) -> View:
        """Replace one backend's status with `change(status)`. Unknown names are ignored (removed by a reload)."""
        current = self._view.backends.get(name)
        if current is None:
            return self._view
        new = change(current)
        if new == current:
            return self._view
        if new.state != current.state:
            new = replace(new, state_since=self._clock())
        statuses = self._statuses.copy()
        statuses[name] = new
        return self._publish(self._view.config, statuses, new.significant() != current.significant())

    def set_state(self, name: str, state: BackendState, *, endpoint: str | None = None) -> View:
        """Set a backend's state (and its endpoints', or only `endpoint`'s). For tests and manual control."""

        def change(status: BackendStatus) -> BackendStatus:
            endpoints = tuple(replace(e, state=state) if endpoint in (None, e.url) else e for e in status.endpoints)
            new_state = state if endpoint is None else status.state
            return replace(status, state=new_state, endpoints=endpoints)

        return self.update_backend(name, change)

    def set_keys(self, keys: Mapping[str, str]) -> View:
        """Replace the JWKS documents (`View.keys`); a change is significant (the listener carries them)."""
        if dict(keys) == dict(self._view.keys):
            return self._view
        self._view = replace(self._view, keys=MappingProxyType(dict(keys)))
        return self._publish(self._view.config, self._statuses, True)

    def set_drained(self, name: str, drained: bool) -> View:
        return self.update_backend(name, lambda s: replace(s, drained=drained))
