"""Admin API metrics: calls by method and gRPC status code, and open Watch streams."""

from __future__ import annotations

import grpc
from prometheus_client import REGISTRY, Counter, Gauge

ADMIN_CALLS = Counter(
    "xds_control_admin_calls",
    "Admin gRPC calls served, by method and status code (a Watch stream counts when it ends).",
    ["method", "code"],
)
WATCH_STREAMS = Gauge("xds_control_admin_watch_streams", "Admin Watch streams open now (aggregators, CLIs).")


def record_call(method: str, code: grpc.StatusCode) -> None:
    ADMIN_CALLS.labels(method=method, code=code.name).inc()


def call_count(method: str, code: grpc.StatusCode) -> float:
    """The current count (for tests and the status table)."""
    value = REGISTRY.get_sample_value("xds_control_admin_calls_total", {"method": method, "code": code.name})
    return value or 0.0
