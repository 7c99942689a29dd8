"""What `xds-control up` starts, in what order, when each part counts as ready,
and what happens when one exits. Pure: no processes, sockets or clocks here.

The process shell (`supervisor.py`) executes a `StackPlan`; `up.py` glues the
two together. Everything a test wants to pin down about start-up order,
readiness rules, command lines and exit decisions is decided here.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from xds_control.config import Config, dial_host, parse_config

DEMO_BACKENDS = ("weather", "calendar", "notes")
DEMO_LISTENER_PORT = 10000
DEMO_PORT_ENV = "XDS_CONTROL_DEMO_PORT"  # the demo's public listener port; 0 picks a free one
BACKEND_READY = r"^READY (?P<url>https?://\S+)"  # examples/backends/demo_server.py, once it listens
CONTROL_PLANE_READY = r"^READY xds="  # `xds-control serve`, once every listener is bound
AGGREGATOR_READY = r"^READY https?://"  # `xds-control aggregator`, once /mcp accepts connections

# Bounded waits for each part to become ready (seconds). Envoy's own initial
# xDS fetch timeout is 15 s, so its budget must be longer than that.
START_TIMEOUT = {"backend": 30.0, "control-plane": 30.0, "envoy": 40.0, "aggregator": 30.0}
STOP_GRACE = 5.0  # SIGTERM, then SIGKILL after this many seconds


class Role(StrEnum):
    BACKEND = "backend"
    CONTROL_PLANE = "control-plane"
    ENVOY = "envoy"
    AGGREGATOR = "aggregator"


# ---------------------------------------------------------------------------
# Readiness rules: every rule of a child must hold before it counts as ready.


@dataclass(frozen=True)
class LineReady:
    """The child printed a line (stdout or stderr) matching `pattern` (a regex searched in each line)."""

    pattern: str

    def describe(self) -> str:
        return f"a line matching {self.pattern!r}"


@dataclass(frozen=True)
class TcpReady:
    """A TCP connection to host:port is accepted."""

    host: str
    port: int

    def describe(self) -> str:
        return f"{format_host(self.host)}:{self.port} accepting connections"


@dataclass(frozen=True)
class HttpReady:
    """`GET url` answers with `status`."""

    url: str
    status: int = 200

    def describe(self) -> str:
        return f"GET {self.url} -> {self.status}"


Readiness = LineReady | TcpReady | HttpReady


@dataclass(frozen=True)
class ChildSpec:
    """One child process: its command line and the rules that make it ready."""

    name: str
    role: Role
    argv: tuple[str, ...]
    ready: tuple[Readiness, ...]
    critical: bool = True  # its death after start-up stops the whole stack
    env: Mapping[str, str] = field(default_factory=dict)
    # What it inherits of `up`'s environment: None, everything but `drop_env`; else only these names (and
    # LC_*). A child is given no secret it does not use (see `child_environment`).
    keep_env: tuple[str, ...] | None = None
    drop_env: frozenset[str] = frozenset()
    start_timeout: float = 30.0


@dataclass(frozen=True)
class StackPlan:
    """Stages in start order: every child of a stage is started together, and
    the next stage starts only when all of them are ready."""

    stages: tuple[tuple[ChildSpec, ...], ...]
    notes: tuple[str, ...] = ()  # things worth one log line (a part that is skipped, ...)

    @property
    def children(self) -> tuple[ChildSpec, ...]:
        return tuple(spec for stage in self.stages for spec in stage)


# ---------------------------------------------------------------------------
# Addresses


def format_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def http_url(host: str, port: int, path: str = "/") -> str:
    """A URL on this machine for something bound on `host` (a wildcard bind is dialled on loopback)."""
    return f"http://{format_host(dial_host(host))}:{port}{path}"


def endpoint_lines(config: Config) -> list[str]:
    """What `up` prints once everything is ready: the MCP endpoint, and each backend via Envoy when exposed."""
    lines = [f"MCP endpoint: {config.public_url()}"]
    if config.listener.expose_backends:
        listener = config.listener
        width = max((len(b.name) for b in config.backends), default=0)
        lines += [
            f"  backend {b.name:<{width}}  {http_url(listener.address, listener.port, f'/backends/{b.name}/mcp')}"
            for b in config.backends
        ]
    return lines


def bound_ports(config: Config, *, aggregator: bool = True) -> dict[str, tuple[str, int]]:
    """Every socket the parts `up` starts will bind, by field path: `up` tries each before starting anything.
    (Envoy binds its listeners with SO_REUSEPORT, so a second Envoy would share them silently, not fail.)"""
    ports = config.bound_sockets()
    return {path: where for path, where in ports.items() if aggregator or not path.startswith("aggregator.")}


# ---------------------------------------------------------------------------
# Command lines


def cli_argv(
    python: str, subcommand: str, config_path: str, log_level: str, log_format: str = "text"
) -> tuple[str, ...]:
    """`xds-control SUBCOMMAND -c CONFIG`, through the interpreter running us (no reliance on PATH)."""
    return (
        python,
        "-m",
        "xds_control.cli",
        subcommand,
        "-c",
        config_path,
        "--log-level",
        log_level,
        "--log-format",
        log_format,
    )


ACCESS_LOG_FLUSH_MS = 1000


def envoy_argv(binary: str, bootstrap_path: str, log_level: str) -> tuple[str, ...]:
    # --disable-hot-restart: no shared memory, so Envoys never race on a base id;
    # --use-dynamic-base-id makes that hold even for a binary that ignores the first flag.
    # --file-flush-interval-msec: the access log of failed requests shows up within a second, not ten.
    return (
        binary,
        "-c",
        bootstrap_path,
        "--disable-hot-restart",
        "--use-dynamic-base-id",
        "--concurrency",
        "1",
        "--log-level",
        log_level,
        "--file-flush-interval-msec",
        str(ACCESS_LOG_FLUSH_MS),
    )


# What Envoy and the demo backends keep of `up`'s environment (everything else, credentials included, stays
# out): Envoy reads nothing from it (the ADS token is in its bootstrap file), a Python child its interpreter's.
BASE_ENV = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME")
PYTHON_ENV = (*BASE_ENV, "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONUNBUFFERED", "PYTHONFAULTHANDLER")


def secret_env_names(config: Config) -> frozenset[str]:
    """The environment variables the config names as holding credentials."""
    cp = config.control_plane
    names = {cp.admin_token_env, cp.xds_token_env}
    names |= {b.auth.token_env for b in config.backends if b.auth is not None}
    return frozenset(n for n in names if n)


def _ads_only(config: Config) -> frozenset[str]:
    """The ADS token's variable, unless it also holds a credential the aggregator uses."""
    ads = config.control_plane.xds_token_env
    used = {config.control_plane.admin_token_env} | {b.auth.token_env for b in config.backends if b.auth}
    return frozenset({ads} - used) if ads else frozenset()


def child_environment(spec: ChildSpec, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment `spec`'s process starts with: what it keeps of `environ`, then its own `env`."""
    if spec.keep_env is not None:
        kept = {k: v for k, v in environ.items() if k in spec.keep_env or k.startswith("LC_")}
    else:
        kept = {k: v for k, v in environ.items() if k not in spec.drop_env}
    return {**kept, **spec.env}


def demo_backend_specs(python: str, names: Sequence[str] = DEMO_BACKENDS) -> tuple[ChildSpec, ...]:
    """The bundled demo backends, each on a port the OS picks; the READY line says which."""
    return tuple(
        ChildSpec(
            name=name,
            role=Role.BACKEND,
            argv=(python, "-m", "examples.backends.demo_server", "--name", name, "--host", "127.0.0.1", "--port", "0"),
            ready=(LineReady(BACKEND_READY),),
            critical=False,
            env={"PYTHONUNBUFFERED": "1"},
            keep_env=PYTHON_ENV,
            start_timeout=START_TIMEOUT["backend"],
        )
        for name in names
    )


def parse_ready_url(line: str) -> str:
    """`READY http://127.0.0.1:9001/mcp` -> the URL."""
    match = re.search(BACKEND_READY, line.strip())
    if not match:
        raise ValueError(f"not a READY line: {line!r}")
    return match.group("url")


def plan_stack(
    config: Config,
    *,
    config_path: str,
    bootstrap_path: str,
    envoy_binary: str,
    python: str,
    log_level: str = "info",
    log_format: str = "text",
    aggregator_available: bool = True,
) -> StackPlan:
    """Control plane first (Envoy's ADS connects to it), then Envoy and the aggregator together."""
    py_env = {"PYTHONUNBUFFERED": "1"}
    control_plane = ChildSpec(
        name="control-plane",
        role=Role.CONTROL_PLANE,
        argv=cli_argv(python, "serve", config_path, log_level, log_format),
        ready=(LineReady(CONTROL_PLANE_READY),),
        env=py_env,
        start_timeout=START_TIMEOUT["control-plane"],
    )
    envoy = ChildSpec(
        name="envoy",
        role=Role.ENVOY,
        argv=envoy_argv(envoy_binary, bootstrap_path, config.envoy.log_level),
        ready=(
            HttpReady(http_url(config.envoy.admin_address, config.envoy.admin_port, "/ready")),
            TcpReady(dial_host(config.listener.address), config.listener.port),
        ),
        keep_env=BASE_ENV,
        start_timeout=START_TIMEOUT["envoy"],
    )
    second: list[ChildSpec] = [envoy]
    notes: list[str] = []
    if aggregator_available:
        second += aggregator_specs(config, config_path, python, log_level, log_format)
    else:
        notes.append(
            "aggregator not available in this build (no xds_control.aggregator.service): skipping it, /mcp will answer 503"
        )
    return StackPlan(stages=((control_plane,), tuple(second)), notes=tuple(notes))


def aggregator_specs(config: Config, config_path: str, python: str, log_level: str, log_format: str) -> list[ChildSpec]:
    """One `xds-control aggregator` per `aggregator.replicas`: replica i (`--replica i`) on port + i."""
    specs = []
    for i in range(config.aggregator.replicas):
        argv = cli_argv(python, "aggregator", config_path, log_level, log_format)
        specs.append(
            ChildSpec(
                name="aggregator" if i == 0 else f"aggregator-{i}",
                role=Role.AGGREGATOR,
                argv=argv if i == 0 else (*argv, "--replica", str(i)),
                ready=(
                    LineReady(AGGREGATOR_READY),
                    TcpReady(dial_host(config.aggregator.address), config.aggregator.port + i),
                ),
                env={"PYTHONUNBUFFERED": "1"},
                drop_env=_ads_only(config),  # it uses backend tokens and the admin token, never the ADS token
                start_timeout=START_TIMEOUT["aggregator"],
            )
        )
    return specs


def demo_config(backend_urls: Mapping[str, str], ports: Mapping[str, int], replicas: int = 1) -> Config:
    """The bundled demo's config: the given backends, every port from `ports`, backends exposed on
    the listener, and probe timings short enough to watch a backend fail and recover.

    `ports` keys: listener, egress, envoy_admin, xds, admin, metrics, aggregator, aggregator_metrics
    (with `replicas` aggregators, the ports after those two are theirs too).
    """
    loop = "127.0.0.1"
    data = {
        "listener": {"address": loop, "port": ports["listener"], "expose_backends": True},
        "egress": {"address": loop, "port": ports["egress"]},
        "envoy": {"admin_port": ports["envoy_admin"], "node_id": "xds-control-demo"},
        "control_plane": {
            "xds": f"{loop}:{ports['xds']}",
            "admin": f"{loop}:{ports['admin']}",
            "metrics": f"{loop}:{ports['metrics']}",
        },
        "aggregator": {
            "address": loop,
            "port": ports["aggregator"],
            "metrics": f"{loop}:{ports['aggregator_metrics']}",
            "replicas": replicas,
        },
        "health": {"interval": "5s", "timeout": "2s", "unhealthy_threshold": 2},
        "circuit_breaker": {"failure_threshold": 3, "open_timeout": "10s", "max_open_timeout": "1m"},
        "backends": [{"name": name, "url": url} for name, url in backend_urls.items()],
    }
    return parse_config(data, source="<demo>")


DEMO_PORT_KEYS = ("egress", "envoy_admin", "xds", "admin", "metrics", "aggregator", "aggregator_metrics")


def demo_listener_port(env: Mapping[str, str]) -> int:
    """The demo's public port: 10000 unless XDS_CONTROL_DEMO_PORT says otherwise (0: any free port)."""
    raw = env.get(DEMO_PORT_ENV, "").strip()
    if not raw:
        return DEMO_LISTENER_PORT
    if not raw.isdigit() or int(raw) > 65535:
        raise ValueError(f"{DEMO_PORT_ENV} must be a port number from 0 to 65535 (got {raw!r})")
    return int(raw)


# ---------------------------------------------------------------------------
# Exit decisions


class Phase(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


@dataclass(frozen=True)
class ExitDecision:
    stop_stack: bool  # stop every other child and return `exit_code`
    exit_code: int
    message: str
    level: str  # log level of `message`: info | warning | error


def describe_returncode(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def on_child_exit(spec: ChildSpec, returncode: int, phase: Phase) -> ExitDecision:
    """What a child's exit means. There is no automatic restart: a part of the gateway that dies
    takes the stack down with a non-zero exit (a supervisor above us, or the user, restarts it);
    a demo backend that dies is what the gateway exists to survive, so the stack keeps running."""
    what = f"{spec.name} {describe_returncode(returncode)}"
    if phase is Phase.STOPPING:
        return ExitDecision(False, 0, f"{spec.name} stopped", "info")
    if phase is Phase.STARTING:
        return ExitDecision(True, 1, f"{what} before it was ready", "error")
    if spec.critical:
        return ExitDecision(True, 1, f"{what}; stopping the stack", "error")
    return ExitDecision(
        False, 0, f"{what}; the control plane will mark it unhealthy and Envoy will stop routing to it", "warning"
    )
