"""More than one of each, as real processes from one config file: `xds-control serve` per control plane (the
second and later with `--xds/--admin/--metrics`), Envoys bootstrapped with every control plane in failover
order, `xds-control aggregator --replica i` per aggregator replica. Used by tests and bench/scale.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

from tests.support.procs import Proc
from tests.support.stack import admin_get, async_start_envoy
from tests.support.waiting import async_wait_until, free_port_run, free_ports
from xds_control.config import Config, dump_config, parse_config
from xds_control.xds.bootstrap import NodeOverrides


@dataclass(frozen=True)
class PlaneAddresses:
    xds: str
    admin: str
    metrics: str


def scaled_config(
    backends: list[dict[str, Any]], *, control_planes: int = 1, replicas: int = 1, **sections: Any
) -> tuple[Config, list[PlaneAddresses]]:
    """A config whose every port is free now, listing `control_planes` control planes (Envoy's xDS and the
    aggregator's admin, in failover order) and `replicas` aggregator replicas; plus each plane's addresses."""
    p = free_ports(3 + 3 * control_planes)
    planes = [
        PlaneAddresses(f"127.0.0.1:{p[3 + 3 * i]}", f"127.0.0.1:{p[4 + 3 * i]}", f"127.0.0.1:{p[5 + 3 * i]}")
        for i in range(control_planes)
    ]
    aggregator_port, metrics_port = free_port_run(replicas), free_port_run(replicas)
    data: dict[str, Any] = {
        "listener": {"port": p[0]},
        "egress": {"port": p[1]},
        "envoy": {
            "admin_port": p[2],
            "node_id": f"test-{p[2]}",
            "control_plane_address": [a.xds for a in planes],
        },
        "control_plane": {"xds": planes[0].xds, "admin": planes[0].admin, "metrics": planes[0].metrics},
        "aggregator": {
            "port": aggregator_port,
            "metrics": f"127.0.0.1:{metrics_port}",
            "replicas": replicas,
            "control_plane_admin": [a.admin for a in planes],
        },
        "backends": backends,
    }
    for key, value in sections.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    return parse_config(data), planes


class ScaledStack:
    """The processes of a scaled deployment; each started and killed on demand, all stopped by `stop()`."""

    def __init__(self, config: Config, planes: list[PlaneAddresses], workdir: Path) -> None:
        self.config, self.planes, self.workdir = config, planes, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.path = workdir / "config.yaml"
        self.path.write_text(dump_config(config))
        self.procs: dict[str, Proc] = {}

    @property
    def mcp_url(self) -> str:
        return f"http://127.0.0.1:{self.config.listener.port}/mcp"

    def _cli(self, name: str, *args: str) -> Proc:
        argv = [sys.executable, "-m", "xds_control.cli", *args, "-c", str(self.path), "--log-level", "warning"]
        proc = self.procs[name] = Proc(argv, name=name)
        return proc

    def start_plane(self, i: int) -> Proc:
        """Control plane i (blocking until its READY line)."""
        a = self.planes[i]
        proc = self._cli(f"plane-{i}", "serve", "--xds", a.xds, "--admin", a.admin, "--metrics", a.metrics)
        proc.wait_for_line("READY", timeout=60)
        return proc

    def start_aggregator(self, i: int) -> Proc:
        proc = self._cli(f"aggregator-{i}", "aggregator", "--replica", str(i))
        proc.wait_for_line("READY", timeout=60)
        return proc

    async def start_envoy(self, node: NodeOverrides | None = None, name: str = "envoy") -> Proc:
        envoy = await async_start_envoy(self.config, self.workdir / name, node=node, timeout=60)
        self.procs[name] = envoy
        return envoy

    async def start(self, *, envoys: int = 1) -> ScaledStack:
        """Every control plane, `envoys` Envoys (the first on the config's ports) and every aggregator replica."""
        try:
            await asyncio.gather(*(asyncio.to_thread(self.start_plane, i) for i in range(len(self.planes))))
            await self.start_envoy()
            for n in range(1, envoys):
                p = free_ports(3)
                await self.start_envoy(
                    NodeOverrides(f"envoy-{n}", admin_port=p[0], listener_port=p[1], egress_port=p[2]), f"envoy-{n}"
                )
            replicas = range(self.config.aggregator.replicas)
            await asyncio.gather(*(asyncio.to_thread(self.start_aggregator, i) for i in replicas))
            await self.wait_routable()
        except BaseException:
            self.stop()
            raise
        return self

    async def wait_routable(self, count: int | None = None, timeout: float = 60) -> None:
        """Until every aggregator replica routes `count` backends (default: all): calls may start."""
        wanted = len(self.config.backends) if count is None else count
        replicas = [self.config.aggregator.port + i for i in range(self.config.aggregator.replicas)]

        async def routable() -> bool:
            async with httpx2.AsyncClient(timeout=2, trust_env=False) as client:
                for port in replicas:
                    health = (await client.get(f"http://127.0.0.1:{port}/healthz")).json()
                    if health["backends"]["routable"] != wanted:
                        return False
            return True

        await async_wait_until(routable, timeout=timeout, what=f"every aggregator routing {wanted} backends")

    def kill(self, name: str) -> None:
        self.procs[name].kill()

    def envoy_stat(self, stat: str) -> str:
        _status, body = admin_get(self.config.envoy.admin_port, f"/stats?filter={stat}")
        return body

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()
