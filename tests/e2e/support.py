"""Building blocks of the end-to-end tests: real backends, a real Envoy, the control plane in-process or as
`xds-control serve`, and waits on what each of them shows (the view, the admin API, Envoy's answers).

Every wait is a condition polled against a deadline; every process started here is killed by its owner's
`finally` (the `Backends` helper, the gateway context managers, the fixtures).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from tests.support.procs import Proc, demo_backend, python_module
from tests.support.stack import envoy_get, envoy_ready, running_control_plane, stack_config, start_envoy
from tests.support.waiting import async_wait_until
from xds_control.admin.client import AdminClient
from xds_control.config import Config, HealthConfig, dump_config
from xds_control.controlplane import ControlPlane
from xds_control.view import BackendStatus

# Fast health settings: every wait below is a few probe intervals. The timeout is not tight: on a loaded
# two-core machine a healthy demo backend's first answers can take several hundred milliseconds.
E2E_HEALTH: dict[str, Any] = {
    "interval": 0.25,
    "timeout": 1.0,
    "unhealthy_threshold": 2,
    "healthy_threshold": 1,
    "jitter": 0.1,
}
# Envoy's outlier detection would eject a dead sole host after five failed requests of the tests' own polling
# and answer "no healthy upstream" by itself. Out of reach here, so every such 503 is the control plane's verdict.
NO_OUTLIER: dict[str, Any] = {"consecutive_5xx": 1_000_000, "consecutive_gateway_failure": 1_000_000}
# An open breaker stops probing for `open_timeout`: out of reach except in the tests about it.
QUIET_BREAKER: dict[str, Any] = {"failure_threshold": 1000}

NO_HEALTHY_UPSTREAM = "no healthy upstream"
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}},
}
MODERN_VERSION = "2026-07-28"
DISCOVER = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "server/discover",
    "params": {
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
            "io.modelcontextprotocol/clientInfo": {"name": "e2e", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {},
        }
    },
}
DISCOVER_HEADERS = {**MCP_HEADERS, "mcp-protocol-version": MODERN_VERSION, "mcp-method": "server/discover"}


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}/mcp"


def e2e_config(backends: list[dict[str, Any]], **sections: Any) -> Config:
    """`stack_config` (every port free) with the fast health settings, no outlier ejection and a quiet breaker."""
    return stack_config(
        backends,
        health={**E2E_HEALTH, **sections.pop("health", {})},
        outlier_detection={**NO_OUTLIER, **sections.pop("outlier_detection", {})},
        circuit_breaker={**QUIET_BREAKER, **sections.pop("circuit_breaker", {})},
        **sections,
    )


def detection_bound(health: HealthConfig) -> float:
    """Worst case from a backend dying to its verdict: `unhealthy_threshold` probe periods (each interval
    stretched by the jitter) plus one probe timeout (a probe that was in flight when it died)."""
    return health.interval * (1 + health.jitter) * health.unhealthy_threshold + health.timeout


# -- backends -------------------------------------------------------------------------------------


class Backends:
    """Demo backends started on demand (off the event loop) and all killed by `stop_all`."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def start(self, name: str, port: int, *args: str, env: dict[str, str] | None = None) -> Proc:
        proc = demo_backend(name, port, *args, env=env)
        self.procs.append(proc)
        return proc

    async def astart(self, name: str, port: int, *args: str, env: dict[str, str] | None = None) -> Proc:
        """`start` in a worker thread: an in-process control plane keeps probing and serving ADS meanwhile."""
        return await asyncio.to_thread(self.start, name, port, *args, env=env)

    def spawn_many(self, specs: dict[str, tuple[int, tuple[str, ...]]]) -> dict[str, Proc]:
        """Start several at once (`key: (port, (name, *args))`) without waiting; see `wait_ready`."""
        started: dict[str, Proc] = {}
        for key, (port, (name, *args)) in specs.items():
            proc = python_module(
                "examples.backends.demo_server", "--name", name, "--port", str(port), *args, name=f"backend-{key}"
            )
            self.procs.append(proc)
            started[key] = proc
        return started

    def start_many(self, specs: dict[str, tuple[int, tuple[str, ...]]]) -> dict[str, Proc]:
        """Start several at once and wait for every READY line (they boot in parallel)."""
        started = self.spawn_many(specs)
        self.wait_ready(started.values())
        return started

    @staticmethod
    def wait_ready(procs: Iterable[Proc]) -> None:
        for proc in procs:
            proc.wait_for_line("READY", timeout=60)

    def stop_all(self) -> None:
        for proc in self.procs:
            stop_proc(proc, kill=True)
        self.procs.clear()


def stop_proc(proc: Proc, *, kill: bool = False) -> None:
    """Stop (or kill) `proc` and close its pipe (Proc leaves it open when its reader is still draining)."""
    if kill:
        proc.kill()
    proc.stop(timeout=5)
    if proc.popen.stdout is not None and not proc.popen.stdout.closed:
        with contextlib.suppress(Exception):
            proc.popen.stdout.close()


@contextlib.contextmanager
def backends_fixture() -> Iterator[Backends]:
    started = Backends()
    try:
        yield started
    finally:
        started.stop_all()


# -- Envoy as the client sees it ------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    text: str

    @property
    def unrouted(self) -> bool:
        """Envoy's own 503 for a cluster with no healthy (or degraded) endpoint."""
        return self.status == 503 and self.text == NO_HEALTHY_UPSTREAM


@dataclass
class Gateway:
    """A running control plane (in-process: `plane`; or a `serve` process: `served`) with a real Envoy."""

    config: Config
    envoy: Proc
    plane: ControlPlane | None = None
    served: Proc | None = None
    admin_target: str = field(init=False)

    def __post_init__(self) -> None:
        self.admin_target = self.config.control_plane.admin

    def egress(self, name: str) -> str:
        return f"http://127.0.0.1:{self.config.egress.port}/backends/{name}/mcp"

    async def post(
        self, name: str, *, modern: bool = False, headers: dict[str, str] | None = None, timeout: float = 2.0
    ) -> Answer:
        """One MCP request through Envoy's egress route: `initialize` (legacy) or `server/discover` (modern)."""
        body, base = (DISCOVER, DISCOVER_HEADERS) if modern else (INITIALIZE, MCP_HEADERS)
        async with httpx2.AsyncClient(timeout=timeout, trust_env=False) as client:
            response = await client.post(self.egress(name), json=body, headers={**base, **(headers or {})})
            return Answer(response.status_code, response.text)

    async def wait_answer(
        self, name: str, check: Callable[[Answer], bool], *, timeout: float = 10.0, what: str = "", **kwargs: Any
    ) -> Answer:
        async def condition() -> Answer | None:
            answer = await self.post(name, **kwargs)
            return answer if check(answer) else None

        return await async_wait_until(
            condition, timeout=timeout, interval=0.02, what=what or f"Envoy's answer for {name}"
        )

    async def wait_routed(self, name: str, status: int = 200, *, timeout: float = 10.0, **kwargs: Any) -> Answer:
        return await self.wait_answer(
            name, lambda a: a.status == status, timeout=timeout, what=f"{name} answers {status} through Envoy", **kwargs
        )

    async def wait_unrouted(self, name: str, *, timeout: float = 10.0, **kwargs: Any) -> Answer:
        return await self.wait_answer(
            name, lambda a: a.unrouted, timeout=timeout, what=f"Envoy: no healthy upstream for {name}", **kwargs
        )

    async def eds_health(self, name: str) -> list[str]:
        """The EDS health status Envoy holds for each endpoint of cluster `name` (what the control plane pushed)."""
        status, body = await asyncio.to_thread(envoy_get, self.config, "/clusters?format=json")
        if status != 200:
            return []
        for entry in json.loads(body).get("cluster_statuses", []):
            if entry["name"] == name:
                return [
                    h.get("health_status", {}).get("eds_health_status", "HEALTHY")
                    for h in entry.get("host_statuses", [])
                ]
        return []

    async def wait_eds(self, name: str, wanted: str, *, timeout: float = 10.0) -> None:
        async def condition() -> bool:
            return await self.eds_health(name) == [wanted]

        await async_wait_until(condition, timeout=timeout, what=f"Envoy holds {name} as {wanted}")

    # -- the control plane's view -----------------------------------------------------------------

    async def backend(self, name: str) -> BackendStatus:
        if self.plane is not None:
            status = self.plane.store.current.backend(name)
            if status is None:
                raise KeyError(name)
            return status
        async with AdminClient(self.admin_target) as client:
            return await client.get_backend(name)

    async def wait_backend(
        self, name: str, check: Callable[[BackendStatus], bool], *, timeout: float = 10.0, what: str = ""
    ) -> BackendStatus:
        async def condition() -> BackendStatus | None:
            status = await self.backend(name)
            return status if check(status) else None

        return await async_wait_until(condition, timeout=timeout, interval=0.02, what=what or f"{name} in the view")

    async def wait_state(self, name: str, state: str, *, timeout: float = 10.0) -> BackendStatus:
        return await self.wait_backend(name, lambda s: s.state == state, timeout=timeout, what=f"{name} {state}")


def _envoy_up(envoy: Proc, config: Config) -> bool:
    """Ready yet? An Envoy that exited fails the wait at once, with its output (a port taken, a bad bootstrap)."""
    if not envoy.alive():
        raise EnvoyExited(f"envoy exited with {envoy.popen.poll()} before /ready:\n{envoy.output[-3000:]}")
    try:
        return envoy_ready(config)
    except OSError:  # the admin port is not listening yet (urllib's URLError is an OSError)
        return False


class EnvoyExited(AssertionError):
    pass


def start_checked_envoy(config: Config, workdir: Path) -> Proc:
    """`start_envoy`, failing fast (with Envoy's output) if the process dies instead of becoming ready."""
    envoy = start_envoy(config, workdir, wait_ready=False)
    try:
        deadline = time.monotonic() + 30
        while not _envoy_up(envoy, config):
            if time.monotonic() > deadline:
                raise AssertionError(f"envoy not ready after 30s:\n{envoy.output[-3000:]}")
            time.sleep(0.02)
    except BaseException:
        stop_proc(envoy, kill=True)
        raise
    return envoy


async def async_start_checked_envoy(config: Config, workdir: Path) -> Proc:
    """`start_checked_envoy` without blocking the event loop (an in-process control plane must keep serving ADS)."""
    envoy = start_envoy(config, workdir, wait_ready=False)
    try:
        deadline = time.monotonic() + 30
        while not await asyncio.to_thread(_envoy_up, envoy, config):
            if time.monotonic() > deadline:
                raise AssertionError(f"envoy not ready after 30s:\n{envoy.output[-3000:]}")
            await asyncio.sleep(0.02)
    except BaseException:
        await asyncio.to_thread(stop_proc, envoy, kill=True)
        raise
    return envoy


@contextlib.asynccontextmanager
async def in_process_gateway(
    config: Config, workdir: Path, *, config_path: Path | None = None
) -> AsyncIterator[Gateway]:
    """The control plane in this process (health on) and a real Envoy bootstrapped against it."""
    kwargs: dict[str, Any] = {"config_path": config_path} if config_path is not None else {}
    async with running_control_plane(config, health=True, **kwargs) as plane:
        envoy = await async_start_checked_envoy(config, workdir)
        try:
            yield Gateway(config, envoy, plane=plane)
        finally:
            await asyncio.to_thread(stop_proc, envoy)


def write_config(config: Config, path: Path) -> Path:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(dump_config(config))
    tmp.replace(path)  # atomic, as an editor or a config map would
    return path


def start_serve(
    config_path: Path, *, env: dict[str, str] | None = None, log_format: str = "text", log_level: str = "info"
) -> Proc:
    """`xds-control serve -c CONFIG` as a real process; returns once it printed READY."""
    argv = [
        sys.executable,
        "-m",
        "xds_control.cli",
        "serve",
        "-c",
        str(config_path),
        "--log-format",
        log_format,
        "--log-level",
        log_level,
    ]
    proc = Proc(argv, env=env, name="control-plane")
    try:
        proc.wait_for_line("READY xds=", timeout=30)
    except BaseException:
        stop_proc(proc, kill=True)
        raise
    return proc


@contextlib.contextmanager
def served_gateway(config: Config, workdir: Path, **serve_kwargs: Any) -> Iterator[Gateway]:
    """`xds-control serve` and a real Envoy, both killed on the way out (blocking: start it off the loop)."""
    path = write_config(config, workdir / "xds-control.yaml")
    served = start_serve(path, **serve_kwargs)
    try:
        envoy = start_checked_envoy(config, workdir)
        try:
            yield Gateway(config, envoy, served=served)
        finally:
            stop_proc(envoy)
    finally:
        stop_proc(served)


def http_get(url_: str, timeout: float = 5.0) -> str:
    with httpx2.Client(timeout=timeout, trust_env=False) as client:
        response = client.get(url_)
        response.raise_for_status()
        return response.text
