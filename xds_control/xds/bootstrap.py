"""The Envoy bootstrap: the ADS connection to the control plane (and its token), the admin port, the node identity."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from importlib import resources
from string import Template

from xds_control.config import Config
from xds_control.errors import ConfigError, ConfigIssue


def _template() -> Template:
    return Template(resources.files("xds_control.envoy").joinpath("bootstrap.yaml.tmpl").read_text())


def _yaml_scalar(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid YAML scalar, quoted and escaped


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


def render_bootstrap(config: Config, *, placeholder: bool = False) -> str:
    """The bootstrap YAML. With `control_plane.xds_token_env` set it holds the ADS token (keep the file
    private) or, with `placeholder=True` and the variable unset, `${NAME}` in its place."""
    xds_host, xds_port = config.xds_dial()
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
        node_id=_yaml_scalar(config.envoy.node_id),
        node_cluster=_yaml_scalar(config.envoy.cluster),
        admin_address=_yaml_scalar(config.envoy.admin_address),
        admin_port=config.envoy.admin_port,
        xds_host=_yaml_scalar(xds_host),
        xds_port=xds_port,
        ads_metadata=metadata,
        max_downstream_connections=config.envoy.max_downstream_connections,
    )
