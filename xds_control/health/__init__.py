"""Health: MCP-level probes of every backend endpoint, classification, tracker, breaker, monitor loop.

`health` writes the view (`xds_control.view.ViewStore`) and knows nothing of
Envoy. The pure decisions are `classify`, `tracker` and `breaker`; the I/O
shells are `probe` (one endpoint, raw JSON-RPC over HTTP), `changes` (list
change streams), `monitor` (the asyncio loop) and `reload` (config watch).
"""

from xds_control.health.breaker import BreakerTransition, CircuitBreaker
from xds_control.health.classify import (
    Category,
    classify_exception,
    classify_jsonrpc_error,
    classify_status,
    parse_retry_after,
)
from xds_control.health.monitor import HealthMonitor
from xds_control.health.probe import EndpointProber, ProbeResult
from xds_control.health.reload import watch_config
from xds_control.health.tracker import BackendTracker, EndpointTracker, Outcome

__all__ = [
    "BackendTracker",
    "BreakerTransition",
    "Category",
    "CircuitBreaker",
    "EndpointProber",
    "EndpointTracker",
    "HealthMonitor",
    "Outcome",
    "ProbeResult",
    "classify_exception",
    "classify_jsonrpc_error",
    "classify_status",
    "parse_retry_after",
    "watch_config",
]
