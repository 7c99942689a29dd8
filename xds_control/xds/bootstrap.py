"""The Envoy bootstrap: the ADS connection to the control plane(s) (and its token), the admin port, the node identity.

One config serves many Envoys: `render_bootstrap(config, NodeOverrides(...))` gives each its own node id,
admin port and profile (role, listener ports), which the node's metadata carries to the control plane
(xds/profiles.py). With several control planes (`envoy.control_plane_address` a list) the ADS cluster has one
priority per control plane in failover order, a TCP health check (1 s) and local-origin outlier ejection, so a
new ADS stream goes to the first control plane that accepts connections, and a stream stays where it is until
it breaks (docs/dev/scale.md).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import Any

from xds_control.config import Config
from xds_control.errors import ConfigError, ConfigIssue
from xds_control.xds.profiles import METADATA_KEY, NodeProfile, NodeRole

# A control plane that stops accepting connections leaves the ADS cluster's healthy set at the first connection
# Envoy fails to open to it (outlier detection: one local-origin failure ejects it for 2 s, longer if again), or
# within about a second by the health check (also what brings it back).
XDS_OUTLIER_DETECTION = {
    "split_external_local_origin_errors": True,
    "consecutive_local_origin_failure": 1,
    "enforcing_consecutive_local_origin_failure": 100,
    "enforcing_consecutive_5xx": 0,
    "enforcing_consecutive_gateway_failure": 0,
    "enforcing_success_rate": 0,
    "base_ejection_time": "2s",
    "max_ejection_percent": 100,
}
XDS_HEALTH_CHECK = {
    "timeout": "1s",
    "interval": "1s",
    "no_traffic_interval": "1s",
    "unhealthy_threshold": 1,
    "healthy_threshold": 1,
    "tcp_health_check": {},
}


@dataclass(frozen=True)
class NodeOverrides:
    """What `xds-control bootstrap` flags change for one Envoy; None keeps the config's value."""

    node_id: str | None = None
    role: NodeRole | None = None
    admin_port: int | None = None
    listener_port: int | None = None
    egress_port: int | None = None
    control_planes: tuple[tuple[str, int], ...] = ()  # HOST:PORT in failover order; empty: the config's

    def profile(self) -> NodeProfile:
        return NodeProfile(
            role=self.role or NodeRole.ALL, listener_port=self.listener_port, egress_port=self.egress_port
        )


def _template() -> Template:
    return Template(resources.files("xds_control.envoy").joinpath("bootstrap.yaml.tmpl").read_text())


def _yaml_scalar(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid YAML scalar, quoted and escaped


def _flow(value: Any) -> str:
    return json.dumps(value)  # JSON is YAML flow style


def xds_endpoints(dials: list[tuple[str, int]]) -> list[dict[str, Any]]:
    """The ADS cluster's endpoints: one priority per control plane, the first preferred."""
    return [
        {
            "priority": i,
            "lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}],
        }
        for i, (host, port) in enumerate(dials)
    ]


_TOKEN = re.compile(r"^[\x21-\x7e]{1,512}$")  # what a gRPC metadata value may carry: printable ASCII, no space


def xds_token(config: Config, environ: Mapping[str, str] | None = None) -> str | None:
    """The ADS token (from the variable `control_plane.xds_token_env` names), None when none is configured.
    ConfigError when one is configured but the variable is unset, empty, or not a valid header value."""
    name = config.control_plane.xds_token_env
    if not name:
        return None
    token = (os.environ if environ is None else environ).get(name, "").strip()
    if not token or not _TOKEN.match(token):
        raise ConfigError(
            ConfigIssue(
                "control_plane.xds_token_env",
                f"the environment variable {name} must hold the ADS token (1-512 printable ASCII characters, no "
                "spaces); it is unset, empty or not that",
            )
        )
    return token


def token_placeholder(config: Config) -> str | None:
    """What a bootstrap rendered without the token holds in its place: `${NAME}`, for a deployment to substitute."""
    name = config.control_plane.xds_token_env
    return f"${{{name}}}" if name else None


def render_bootstrap(config: Config, node: NodeOverrides | None = None, *, placeholder: bool = False) -> str:
    """The bootstrap YAML of one Envoy (`node`: its own id, role, ports, control planes). With
    `control_plane.xds_token_env` set it holds the ADS token (keep the file private) or, with
    `placeholder=True` and the variable unset, `${NAME}` in its place."""
    node = node or NodeOverrides()
    dials = list(node.control_planes) or config.xds_dials()
    profile = node.profile()
    node_metadata = {METADATA_KEY: profile.metadata()} if node.role or node.listener_port or node.egress_port else {}
    metadata = ""
    if config.control_plane.xds_token_env:
        try:
            token = xds_token(config)
        except ConfigError:
            if not placeholder:
                raise
            token = token_placeholder(config)
        value = _yaml_scalar(f"Bearer {token}")
        metadata = f"\n        initial_metadata: [{{ key: authorization, value: {value} }}]"
    return _template().substitute(
        node_id=_yaml_scalar(node.node_id or config.envoy.node_id),
        node_cluster=_yaml_scalar(config.envoy.cluster),
        node_metadata=_flow(node_metadata),
        admin_address=_yaml_scalar(config.envoy.admin_address),
        admin_port=node.admin_port or config.envoy.admin_port,
        xds_endpoints=_flow(xds_endpoints(dials)),
        xds_health_checks=_flow([XDS_HEALTH_CHECK] if len(dials) > 1 else []),
        xds_outlier_detection=_flow(XDS_OUTLIER_DETECTION if len(dials) > 1 else None),
        ads_metadata=metadata,
        max_downstream_connections=config.envoy.max_downstream_connections,
    )
