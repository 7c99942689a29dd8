"""Prometheus metrics of the xDS server. Labels are type short names (cds/eds/lds/rds) only."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PUSHES = Counter("xds_control_xds_pushes_total", "DiscoveryResponses sent", ["type"])
PUSHED_RESOURCES = Counter("xds_control_xds_pushed_resources_total", "Resources sent in DiscoveryResponses", ["type"])
ACKS = Counter("xds_control_xds_acks_total", "DiscoveryRequests that ACKed a response", ["type"])
NACKS = Counter("xds_control_xds_nacks_total", "DiscoveryRequests that NACKed a response", ["type"])
ACK_LATENCY = Histogram(
    "xds_control_xds_push_ack_seconds",
    "Time from sending a DiscoveryResponse to its ACK or NACK",
    ["type"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CONNECTED = Gauge("xds_control_xds_connected_nodes", "Envoy ADS streams connected")
SNAPSHOT_BUILD = Histogram(
    "xds_control_xds_snapshot_build_seconds",
    "Time to translate a view into a snapshot",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5),
)
SNAPSHOT_ERRORS = Counter(
    "xds_control_xds_snapshot_errors_total", "Views that could not be translated (the last good snapshot stays)"
)
