"""The Envoy bootstrap: the ADS connection to the control plane, the admin port, the node identity."""

from __future__ import annotations

import json
from importlib import resources
from string import Template

from xds_control.config import Config


def _template() -> Template:
    return Template(resources.files("xds_control.envoy").joinpath("bootstrap.yaml.tmpl").read_text())


def _yaml_scalar(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid YAML scalar, quoted and escaped


def render_bootstrap(config: Config) -> str:
    xds_host, xds_port = config.xds_dial()
    return _template().substitute(
        node_id=_yaml_scalar(config.envoy.node_id),
        node_cluster=_yaml_scalar(config.envoy.cluster),
        admin_address=_yaml_scalar(config.envoy.admin_address),
        admin_port=config.envoy.admin_port,
        xds_host=_yaml_scalar(xds_host),
        xds_port=xds_port,
    )
