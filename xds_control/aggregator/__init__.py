"""The MCP aggregation sidecar: one MCP endpoint merging every routable backend, from the control plane's view.

    catalog.py       merged catalog: naming, conflicts, filters, routes, hashes (pure)
    pagination.py    opaque cursors over a merged list (pure)
    coalesce.py      when to send list_changed (pure, clock injected)
    rpc_errors.py    the aggregator's JSON-RPC error codes
    view_source.py   ViewSource seam (admin Watch stream / in-process ViewStore), follower with backoff
    auth.py          outgoing credentials, auth retry sequences, auth breaker
    upstream.py      the one upstream interface: calls to a backend, both families; error mapping
    upstream_answers.py  what a backend's HTTP answer means, both families (pure map_answer)
    backend_http.py  one backend's HTTP client: credential, bounded reads, the answer mapping applied
    sdk_transport.py the httpx2 transport the SDK client of legacy backend sessions needs
    modern_request.py  a request to a 2026-07-28 backend as one plain JSON-RPC POST
    gateway.py       lists with the failure mode, call routing
    sessions.py      legacy client sessions (for notifications and session cleanup)
    notify.py        list_changed to legacy sessions and modern listen streams
    outcomes.py      data-path outcome batches for the control plane
    mcp_server.py    the SDK low-level Server serving both protocol families
    http_app.py      ASGI app: /mcp, /healthz, body limit, session tracking, allowed hosts
    fastpath.py      plain 2026-07-28 tools/call answered before the SDK's HTTP stack
    service.py       Aggregator (wiring, running, serving) and serve_forever(config)
    metrics.py       Prometheus metrics

It never imports `xds_control.health` or `xds_control.xds`: health reaches it
only through the view.
"""

from xds_control.aggregator.rpc_errors import BACKEND_AUTH_FAILED, BACKEND_FAILED, BACKEND_TIMEOUT, BACKEND_UNAVAILABLE
from xds_control.aggregator.service import Aggregator, serve_forever
from xds_control.aggregator.upstream import direct_upstream_url, egress_upstream_url
from xds_control.aggregator.view_source import AdminViewSource, StoreViewSource, ViewSource, ViewUpdate

__all__ = [
    "BACKEND_AUTH_FAILED",
    "BACKEND_FAILED",
    "BACKEND_TIMEOUT",
    "BACKEND_UNAVAILABLE",
    "AdminViewSource",
    "Aggregator",
    "StoreViewSource",
    "ViewSource",
    "ViewUpdate",
    "direct_upstream_url",
    "egress_upstream_url",
    "serve_forever",
]
