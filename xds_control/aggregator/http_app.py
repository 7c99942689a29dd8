"""The SDK's HTTP app behind the endpoint, and the `Host` values `/mcp` accepts.

Host checking (DNS-rebinding protection) stays on. Allowed `Host` values:
Envoy's public listener and the aggregator's own socket as `address:port`,
the localhost spellings (`127.0.0.1`, `localhost`, `[::1]`) on those ports,
and every `aggregator.allowed_hosts` entry (`name:port` exactly; a bare name
with any port). A wildcard bind address (0.0.0.0, ::) adds nothing by
itself: list the names clients use in `aggregator.allowed_hosts`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from mcp.server import Server
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from xds_control.aggregator.endpoint import MCP_PATH
from xds_control.aggregator.inbound import Rules
from xds_control.aggregator.sdk_compat import JSON_PER_REQUEST
from xds_control.config import Config

_LOCAL_NAMES = ("127.0.0.1", "localhost", "[::1]")


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def allowed_hosts(config: Config) -> list[str]:
    """The `Host` header values `/mcp` accepts (see the module docstring)."""
    hosts: list[str] = []
    for host, port in (
        (config.listener.address, config.listener.port),
        (config.aggregator.address, config.aggregator.port),
    ):
        if not _is_wildcard(host):
            hosts.append(f"{_bracketed(host)}:{port}")
        hosts += [f"{name}:{port}" for name in _LOCAL_NAMES]
    for extra in config.aggregator.allowed_hosts:
        has_port = "]:" in extra if extra.startswith("[") else ":" in extra and not extra.count(":") > 1
        hosts += [extra] if has_port else [_bracketed(extra), f"{_bracketed(extra)}:*"]
    return list(dict.fromkeys(hosts))


def transport_security(config: Config) -> TransportSecuritySettings:
    hosts = allowed_hosts(config)
    origins = [f"{scheme}://{host}" for host in hosts for scheme in ("http", "https")]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def inbound_rules(config: Config, tool_schema: Callable[[str], Any]) -> Rules:
    """What the endpoint's classifier checks a request against: the same hosts and origins as the SDK."""
    settings = transport_security(config)
    return Rules(tuple(settings.allowed_hosts), tuple(settings.allowed_origins), tool_schema)


def build_sdk_app(
    config: Config, server: Server[Any], *, health: Callable[[], dict[str, Any]], max_request_bytes: int
) -> ASGIApp:
    """The SDK's app: `/mcp` (both families) and `GET /healthz` (view version, staleness, routable count). The
    endpoint (endpoint.py) stands in front of it and keeps the sessions: the SDK neither expires nor caps them."""

    async def healthz(request: Request) -> Response:
        return JSONResponse(health())

    starlette = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        transport_security=transport_security(config),
        max_request_body_size=max_request_bytes + 1,  # the endpoint answers first, as JSON-RPC
        json_response=JSON_PER_REQUEST,  # the endpoint picks the requests
        session_idle_timeout=None,
        max_sessions=None,
        custom_starlette_routes=[Route("/healthz", healthz, methods=["GET"])],
    )
    return starlette
