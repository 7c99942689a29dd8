"""Prometheus metrics of the health part (default registry).

Label values are backend names, states and sanitized categories only: never
URLs, headers or error text. Served by whatever exposes the default registry
(`control_plane.metrics`).

    xds_control_backend_state{backend,state}                 1 for the current state, 0 for the others
    xds_control_backend_breaker_state{backend,state}         1 for the current breaker state
    xds_control_backend_transitions_total{backend,from,to}   state transitions
    xds_control_probe_duration_seconds{backend}              probe round trips (liveness part)
    xds_control_probe_failures_total{backend,category}       failed probes by category
    xds_control_catalog_items_dropped_total{backend,kind,reason}  catalog items no client may see (bad names)
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from xds_control.health.classify import Category
from xds_control.view import BackendState, BreakerState

BACKEND_STATE = Gauge("xds_control_backend_state", "Backend health state (one-hot).", ["backend", "state"])
BREAKER_STATE = Gauge(
    "xds_control_backend_breaker_state", "Backend circuit breaker state (one-hot).", ["backend", "state"]
)
TRANSITIONS = Counter("xds_control_backend_transitions", "Backend health state transitions.", ["backend", "from", "to"])
PROBE_DURATION = Histogram(
    "xds_control_probe_duration_seconds",
    "MCP probe duration (liveness round trip, or time to failure).",
    ["backend"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
PROBE_FAILURES = Counter(
    "xds_control_probe_failures", "Failed MCP probes by sanitized category.", ["backend", "category"]
)

CATALOG_DROPPED = Counter(
    "xds_control_catalog_items_dropped",
    "Backend catalog items left out: a name that breaks MCP's tool-name rule, or control/bidi characters.",
    ["backend", "kind", "reason"],
)
_DROP_KINDS = ("tools", "resources", "resourceTemplates", "prompts")
_DROP_REASONS = ("invalid_name", "unsafe_characters")

_CATEGORIES = frozenset(c.value for c in Category)


def safe_category(category: str | None) -> str:
    """Only known categories reach a label; anything else is `unknown`."""
    return category if category in _CATEGORIES else Category.UNKNOWN.value


_REASONS = _CATEGORIES | {
    "open_timeout",
    "half_open_successes",
    "reset",
    "data_path",
    "failure",
    "probe_ok",
    "recovering",
    "slow",
}


def safe_reason(reason: str) -> str:
    """Transition reasons are categories or fixed words; anything else is `unknown`."""
    return reason if reason in _REASONS else Category.UNKNOWN.value


_published: dict[str, tuple[BackendState, BreakerState]] = {}  # what the gauges say now, per backend


def set_state(backend: str, state: BackendState, breaker: BreakerState) -> None:
    """The state and breaker gauges of `backend`; a no-op when they already say so (called after every probe)."""
    if _published.get(backend) == (state, breaker):
        return
    _published[backend] = (state, breaker)
    for each_state in BackendState:
        BACKEND_STATE.labels(backend, each_state.value).set(1 if each_state is state else 0)
    for each_breaker in BreakerState:
        BREAKER_STATE.labels(backend, each_breaker.value).set(1 if each_breaker is breaker else 0)


def transition(backend: str, before: BackendState, after: BackendState) -> None:
    TRANSITIONS.labels(backend, before.value, after.value).inc()


def probe(backend: str, seconds: float, category: str | None) -> None:
    PROBE_DURATION.labels(backend).observe(max(0.0, seconds))
    if category is not None:
        PROBE_FAILURES.labels(backend, safe_category(category)).inc()


def catalog_dropped(backend: str, kind: str, reason: str, count: int) -> None:
    if kind in _DROP_KINDS and reason in _DROP_REASONS:
        CATALOG_DROPPED.labels(backend, kind, reason).inc(count)


def forget(backend: str) -> None:
    """Drop every series of a backend removed by a reload."""
    _published.pop(backend, None)
    for each_state in BackendState:
        _remove(BACKEND_STATE, backend, each_state.value)
    for each_breaker in BreakerState:
        _remove(BREAKER_STATE, backend, each_breaker.value)
    _remove(PROBE_DURATION, backend)
    for before in BackendState:
        for after in BackendState:
            _remove(TRANSITIONS, backend, before.value, after.value)
    for category in Category:
        _remove(PROBE_FAILURES, backend, category.value)
    for kind in _DROP_KINDS:
        for reason in _DROP_REASONS:
            _remove(CATALOG_DROPPED, backend, kind, reason)


def _remove(metric: Gauge | Counter | Histogram, *labels: str) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        pass
