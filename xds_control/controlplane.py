"""The control plane service: the view, the xDS server, and (when present) health, admin, metrics, reload.

`ControlPlane` can run in-process (tests drive its view directly) or as
`xds-control serve`, which prints `READY xds=HOST:PORT admin=HOST:PORT` once
every listener is bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from xds_control.config import Config
from xds_control.hostnames import follow_hostnames
from xds_control.view import ViewStore
from xds_control.xds.bootstrap import xds_token
from xds_control.xds.nodes import NodeDirectory
from xds_control.xds.publisher import Publisher
from xds_control.xds.server import AdsService, XdsServer, start_xds_server
from xds_control.xds.snapshot import SnapshotCache

log = logging.getLogger(__name__)


class ControlPlane:
    """One control plane: owns the view store, the snapshot cache and every server and task around them."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        xds_port: int | None = None,
        listen: Mapping[str, str | None] | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self._listen = dict(listen or {})  # control_plane addresses from the command line: kept across reloads
        self.store = ViewStore(config)
        if config.auth is not None:
            from xds_control.auth.jwks import read_keys

            self.store.set_keys(read_keys(config))  # ConfigError naming a missing or bad jwks_file
        else:
            log.warning(
                "no auth section: the gateway is open, anyone who reaches the listener may call every tool",
                extra={"event": "auth_open"},
            )
        self.cache = SnapshotCache()
        self.nodes = NodeDirectory()
        self.publisher = Publisher(self.store, self.cache)
        self.ads = AdsService(self.cache, self.nodes, token=xds_token(config))  # ConfigError if set but missing
        self.monitor: Any = None
        self.xds: XdsServer | None = None
        self.admin: Any = None
        self.metrics: Any = None
        self._xds_port = xds_port
        self._group: asyncio.TaskGroup | None = None
        self._stopping = asyncio.Event()
        self._keys_wanted = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------------

    async def run(self, *, ready: Callable[[ControlPlane], None] | None = None, health: bool = True) -> None:
        """Serve until `stop()` is called (or the task is cancelled); `ready(self)` once every port is bound."""
        self.publisher.start()
        _freeze_heap()
        host, port = self.config.control_plane.xds_host_port
        self.xds = await start_xds_server(host, self._xds_port if self._xds_port is not None else port, self.ads)
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                if health:
                    self._start_monitor(group)
                await self._start_admin()
                self._start_metrics()
                group.create_task(follow_hostnames(self.store), name="resolve-hostnames")
                group.create_task(self._watch_keys(), name="jwks-watch")
                if self.config_path is not None:
                    self._start_reload(group)
                if ready is not None:
                    ready(self)
                await self._stopping.wait()
                raise _Stop
        except* _Stop:
            pass
        finally:
            self._group = None
            self.publisher.stop()
            await self._close()

    def stop(self) -> None:
        self._stopping.set()

    async def _close(self) -> None:
        if self.admin is not None:
            with contextlib.suppress(Exception):
                await self.admin.stop()
        if self.metrics is not None:
            with contextlib.suppress(Exception):
                self.metrics.stop()
        if self.xds is not None:
            await self.xds.stop(0.5)

    # -- optional parts: each is wired only when its package is present ---------------------------

    def _start_monitor(self, group: asyncio.TaskGroup) -> None:
        try:
            from xds_control.health.monitor import HealthMonitor
        except ImportError:
            log.warning("health monitor not available: backends stay unknown")
            return
        self.monitor = HealthMonitor(self.config, self.store)
        group.create_task(self.monitor.run(), name="health-monitor")

    async def _start_admin(self) -> None:
        try:
            from xds_control.admin.service import start_admin_server
        except ImportError:
            return
        self.admin = await start_admin_server(self.config, self.store, self.monitor, self.nodes)

    def _start_metrics(self) -> None:
        try:
            from xds_control.telemetry.metrics_server import start_metrics_server
        except ImportError:
            return
        host, port = self.config.control_plane.metrics_host_port
        self.metrics = start_metrics_server(host, port)

    def _start_reload(self, group: asyncio.TaskGroup) -> None:
        try:
            from xds_control.health.reload import watch_config
        except ImportError:
            return
        if self.config_path is not None:  # (checked by the caller; for the type checker)
            group.create_task(watch_config(self.config_path, self.apply_config), name="config-reload")

    async def _watch_keys(self) -> None:
        from xds_control.auth.jwks import watch_keys

        while True:  # a reload may add the first jwks_file
            await watch_keys(lambda: self.config, self.store)
            await self._keys_wanted.wait()
            self._keys_wanted.clear()

    def apply_config(self, config: Config) -> None:
        """Apply a reloaded config: probes (if running) and the view; the view change pushes to Envoy. A config
        whose JWKS files cannot be read is refused as a whole (ConfigError) before anything changes."""
        config = config.with_control_plane(**self._listen)
        if config.auth is not None:
            from xds_control.auth.jwks import read_keys

            keys = read_keys(config)
            self.store.set_keys({**self.store.current.keys, **keys})  # before the listener needs them
            self._keys_wanted.set()
        self.config = config
        if self.monitor is not None:
            self.monitor.apply_config(config)
        else:
            self.store.replace_config(config)
        _freeze_heap()


def _freeze_heap() -> None:
    """Move the long-lived encoded snapshot out of the collector's sight, so a full collection never walks
    the thousands of protobuf objects of a large snapshot in the middle of a health flip (bench/xds_push.py
    shows it in the p99)."""
    gc.collect()
    gc.freeze()


class _Stop(Exception):
    """Raised inside the task group to end it (cancels every sibling task)."""


async def serve_forever(
    config: Config, *, config_path: Path | None = None, listen: Mapping[str, str | None] | None = None
) -> int:
    """`xds-control serve`: run until SIGINT/SIGTERM. Prints a READY line once bound. `listen`: the
    control_plane addresses the command line overrides (applied to `config` already, and to every reload)."""
    plane = ControlPlane(config, config_path=config_path, listen=listen)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, plane.stop)

    def ready(cp: ControlPlane) -> None:
        admin = f" admin={cp.config.control_plane.admin}" if cp.admin is not None else ""
        print(f"READY xds={cp.config.control_plane.xds}{admin}", flush=True)
        log.info("control plane ready", extra={"backends": len(cp.config.backends)})

    tracer_provider = None
    if config.telemetry.otlp_endpoint:  # else no span is recorded at all (about a tenth of a probe's CPU)
        from xds_control.telemetry.tracing import setup_tracing

        tracer_provider = setup_tracing(
            f"{config.telemetry.service_name_prefix}-control-plane", config.telemetry.otlp_endpoint
        )
    try:
        await plane.run(ready=ready)
    finally:
        if tracer_provider is not None:
            tracer_provider.shutdown()
    return 0
