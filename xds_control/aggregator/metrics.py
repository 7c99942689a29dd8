"""Prometheus metrics of the aggregator (default registry; served on `aggregator.metrics` by the runner).

Label values are bounded: backend names come from the config, `kind` and
`outcome` from fixed vocabularies, `tool` from the backends' catalogs.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_NS = "xds_control_aggregator"

CALLS = Counter(
    f"{_NS}_calls_total",
    "Routed requests (tools/call, resources/read, prompts/get, completion/complete) by backend, tool and outcome.",
    ["backend", "method", "tool", "outcome"],
)
CALL_LATENCY = Histogram(
    f"{_NS}_call_duration_seconds",
    "Latency of routed requests that reached a backend, by backend and method.",
    ["backend", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
FAST_FAILED = Counter(
    f"{_NS}_fast_failed_calls_total",
    "Requests refused without a network call because the owning backend is not routable.",
    ["backend", "state"],
)
UPSTREAM_REQUESTS = Counter(
    f"{_NS}_upstream_http_requests_total", "HTTP requests sent towards a backend (via Envoy's egress).", ["backend"]
)
CATALOG_ITEMS = Gauge(f"{_NS}_catalog_items", "Items in the merged catalog, by kind.", ["kind"])
CATALOG_CONFLICTS = Gauge(
    f"{_NS}_catalog_conflicts", "Names or URIs left out of the merged catalog for a conflict, by kind.", ["kind"]
)
LIST_CHANGED_SENT = Counter(
    f"{_NS}_list_changed_sent_total",
    "list_changed notifications sent, by kind and family (legacy: one per session; modern: one per publish).",
    ["kind", "family"],
)
VIEW_STALE = Gauge(
    f"{_NS}_view_stale", "1 while the control plane's view stream is disconnected (serving the last view)."
)
VIEW_STALENESS = Gauge(
    f"{_NS}_view_staleness_seconds", "Seconds since the view was last known to be current (0 while connected)."
)
VIEW_VERSION = Gauge(f"{_NS}_view_version", "Version of the last view applied.")
VIEW_RECONNECTS = Counter(f"{_NS}_view_reconnects_total", "Attempts to reconnect to the control plane's view stream.")
SESSIONS = Gauge(
    f"{_NS}_client_sessions",
    "Client sessions open: legacy MCP sessions, modern subscriptions/listen streams.",
    ["family"],
)
UPSTREAM_SESSIONS = Gauge(
    f"{_NS}_upstream_sessions", "Open MCP sessions to legacy backends (one per client session).", ["backend"]
)
AUTH_RETRIES = Counter(
    f"{_NS}_auth_retry_sequences_total",
    "Retry sequences after a 401/403 from a backend, by result (recovered, exhausted, breaker_open).",
    ["backend", "result"],
)
OUTCOME_REPORTS = Counter(
    f"{_NS}_outcome_reports_total",
    "Data-path outcome batches sent to the control plane, by result (sent, dropped).",
    ["result"],
)
RESOURCE_SUBSCRIPTIONS = Gauge(
    f"{_NS}_resource_subscriptions",
    "Resource subscriptions held upstream: one per (backend, URI), shared by every subscribed client.",
)
RESOURCE_UPDATES = Counter(
    f"{_NS}_resource_updates_total",
    "notifications/resources/updated towards clients, by family and result (legacy: sent, dropped; modern: published).",
    ["family", "result"],
)
