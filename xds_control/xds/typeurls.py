"""xDS type URLs and the push order (a leaf: constants only)."""

from __future__ import annotations

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

PUSH_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
"""CDS -> EDS -> LDS -> RDS: what a resource references is pushed before it."""

WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})
"""Every response of these types carries the full set; EDS and RDS responses may carry only changed resources."""

DEPENDENT: dict[str, str] = {CLUSTER: ENDPOINT, LISTENER: ROUTE}
"""After a push of the key type, Envoy re-warms and re-requests the value type, which must be answered."""

SHORT = {CLUSTER: "cds", ENDPOINT: "eds", LISTENER: "lds", ROUTE: "rds"}

AGGREGATOR_CLUSTER = "xds-control-aggregator"
PUBLIC_LISTENER = "public"
EGRESS_LISTENER = "egress"
PUBLIC_ROUTES = "public-routes"
EGRESS_ROUTES = "egress-routes"
