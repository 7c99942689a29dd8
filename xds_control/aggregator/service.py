"""The aggregation sidecar as a service: `Aggregator` wires the parts; `serve_forever(config)` runs it.

    aggregator = Aggregator(config, StoreViewSource(store), upstream_url=direct_upstream_url)
    async with aggregator.running():        # view follower, notifier, reporter, upkeep (, collector)
        async with aggregator.serving(config.aggregator.address, config.aggregator.port) as url:
            ...                               # url: http://HOST:PORT/mcp

The port should be the configured one: the allowed `Host` values derive from
it (http_app.allowed_hosts).

`serve_forever(config)` (the `xds-control aggregator` command) follows the
control plane's admin Watch stream, calls backends through Envoy's egress
listener, listens on `aggregator.address:port` and prints
`READY http://HOST:PORT/mcp` once it accepts connections. SIGTERM/SIGINT stop
it gracefully (backend sessions are closed). It also manages the cyclic
collector (`manage_gc`, collector.py): a process holding many sessions should
not stall on full collections over them; tests' in-process aggregators leave
the collector alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import uvicorn
from mcp.server.subscriptions import InMemorySubscriptionBus

from xds_control.aggregator.backchannel import Backchannel
from xds_control.aggregator.coalesce import DEFAULT_WINDOW, ChangeCoalescer
from xds_control.aggregator.collector import GcPolicy
from xds_control.aggregator.endpoint import DEFAULT_MAX_REQUEST_BYTES, MCP_PATH, Endpoint
from xds_control.aggregator.gateway import Gateway
from xds_control.aggregator.get_streams import GetStreams
from xds_control.aggregator.http_app import build_sdk_app, inbound_rules
from xds_control.aggregator.mcp_server import build_server
from xds_control.aggregator.notify import ChangeNotifier
from xds_control.aggregator.outcomes import OutcomeBatcher, report_outcomes_forever
from xds_control.aggregator.pagination import PAGE_SIZE
from xds_control.aggregator.resource_updates import ResourceSubscriptions
from xds_control.aggregator.sessions import SessionTable
from xds_control.aggregator.subscriptions import SubscriptionTable
from xds_control.aggregator.upstream import UpstreamUrl, egress_upstream_url
from xds_control.aggregator.view_source import (
    AdminViewSource,
    Backoff,
    TokenSource,
    ViewFollower,
    ViewSource,
    ViewUpdate,
)
from xds_control.config import Config
from xds_control.errors import XdsControlError
from xds_control.telemetry.metrics_server import start_metrics_server

ConfigWatch = Callable[[Callable[[Config], None]], Awaitable[None]]

log = logging.getLogger(__name__)

UPKEEP_INTERVAL = 10.0
GC_TICK = 1.0


class Aggregator:
    """The MCP aggregation sidecar, driven by a `ViewSource` (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        source: ViewSource,
        *,
        upstream_url: UpstreamUrl | None = None,
        page_size: int = PAGE_SIZE,
        coalesce_window: float = DEFAULT_WINDOW,
        report_interval: float = 1.0,
        backoff: Backoff | None = None,
        session_idle_timeout: float | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        manage_gc: bool = False,
    ) -> None:
        """`manage_gc`: freeze and thaw the process's objects as collector.py decides (a process of its own)."""
        self.config = config
        self.gc_policy = GcPolicy() if manage_gc else None
        self.source = source
        self.report_interval = report_interval
        self._tg: asyncio.TaskGroup | None = None
        self.outcomes = OutcomeBatcher()
        self.backchannel = Backchannel(
            call_timeout=config.aggregator.call_timeout,
            standalone=self._standalone,
            refresh=getattr(source, "refresh", None),  # a source that cannot refresh leaves it to the next probe
        )
        self.gateway = Gateway(
            config,
            upstream_url or egress_upstream_url(config),
            self._spawn,
            page_size=page_size,
            outcomes=self.outcomes,
            backchannel=self.backchannel,
        )
        limits = config.aggregator
        self.bus = InMemorySubscriptionBus()
        self.get_streams = GetStreams()
        self.subscriptions = ResourceSubscriptions(
            lambda: self.gateway.catalog,
            self.gateway.upstreams,
            self._spawn,
            self.bus,
            self.get_streams,
            table=SubscriptionTable(
                max_per_subscriber=limits.max_subscriptions_per_client, max_targets=limits.max_subscriptions
            ),
        )
        self.sessions = SessionTable(
            self._client_session_closed,
            idle_timeout=session_idle_timeout if session_idle_timeout is not None else limits.session_idle_timeout,
            init_timeout=limits.session_init_timeout,
            max_sessions=limits.max_sessions,
            max_opening=limits.max_opening_sessions,
        )
        self.notifier = ChangeNotifier(
            ChangeCoalescer(self.gateway.catalog.hashes, coalesce_window), self.sessions.notifiable, self.bus
        )
        self.follower = ViewFollower(source, self._apply, backoff=backoff)
        self.server = build_server(self.gateway, self.sessions, self.bus, self.subscriptions)
        self.endpoint = Endpoint(
            build_sdk_app(config, self.server, health=self.health, max_request_bytes=max_request_bytes),
            gateway=self.gateway,
            server=self.server,
            sessions=self.sessions,
            rules=inbound_rules(config, self.gateway.tool_schema),
            get_streams=self.get_streams,
            max_request_bytes=max_request_bytes,
        )
        self.app = self.endpoint

    def _standalone(self, client_key: str) -> Any:
        session = self.sessions.get(client_key) if client_key else None
        return session.sdk if session is not None else None

    def apply_config(self, config: Config) -> None:
        """A reloaded config: what the aggregator takes without a restart (authorization)."""
        self.gateway.access.apply_config(config)

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        if self._tg is None:
            coro.close()
            raise RuntimeError("the aggregator is not running")
        return self._tg.create_task(coro)

    def _client_session_closed(self, session_id: str) -> None:
        self.gateway.client_session_closed(session_id)
        self.subscriptions.drop_subscriber(session_id)

    def _apply(self, update: ViewUpdate) -> None:
        catalog = self.gateway.apply_view(update.version, update.backends)
        self.subscriptions.apply_view(update.backends)
        self.notifier.observe(catalog.hashes)

    async def wait_for_view(self, version: int) -> None:
        """Until the view with `version` (or a later one) is applied."""
        await self.follower.wait_for_version(version)

    def health(self) -> dict[str, Any]:
        catalog = self.gateway.catalog
        return {
            "view_version": self.gateway.view_version,
            "stale": not self.follower.connected,
            "control_plane": self.follower.origin,
            "staleness_seconds": round(self.follower.staleness(), 3),
            "backends": {"configured": catalog.configured, "routable": catalog.routable},
            "catalog": catalog.item_counts(),
            "sessions": {"legacy": len(self.sessions), "opening": self.sessions.opening()},
        }

    async def _upkeep(self) -> None:
        interval = min(UPKEEP_INTERVAL, max(0.1, self.sessions.init_timeout / 2))  # opening sessions expire promptly
        while True:
            await asyncio.sleep(interval)
            await self.endpoint.sweep()
            self.gateway.sweep()

    async def _collector(self, policy: GcPolicy) -> None:
        loop = asyncio.get_running_loop()
        policy.last_thaw = loop.time()
        while True:
            await asyncio.sleep(GC_TICK)
            now, table = loop.time(), self.sessions
            opened = table.opened_total + table.streams_total + self.subscriptions.table.subscribed_total
            action = policy.decide(now, opened, table.closed_total)
            if action is None:
                continue
            if action == "thaw":
                gc.unfreeze()
            collected = gc.collect()
            gc.freeze()
            policy.done(action, now, opened, table.closed_total, len(table))
            log.debug(
                "collector: %s", action, extra={"collected": collected, "pause_ms": round((loop.time() - now) * 1000)}
            )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Aggregator]:
        """Run the background tasks; on exit close every backend session and stop them."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            tasks = [
                tg.create_task(self.follower.run(), name="aggregator-view"),
                tg.create_task(self.notifier.run(), name="aggregator-notify"),
                tg.create_task(
                    report_outcomes_forever(self.outcomes, self.source.report_outcomes, self.report_interval),
                    name="aggregator-report",
                ),
                tg.create_task(self._upkeep(), name="aggregator-upkeep"),
            ]
            if self.gc_policy is not None:
                tasks.append(tg.create_task(self._collector(self.gc_policy), name="aggregator-gc"))
            try:
                yield self
            finally:
                await self.subscriptions.aclose()
                await self.gateway.aclose()
                for task in tasks:
                    task.cancel()

    @contextlib.asynccontextmanager
    async def serving(self, host: str, port: int, *, handle_signals: bool = False) -> AsyncIterator[str]:
        """Serve HTTP on host:port until the block exits; yields the `/mcp` URL.

        The socket is bound here, so a taken port is an `XdsControlError`
        naming it. With `handle_signals`, the block's exit waits for SIGTERM
        or SIGINT instead (the sidecar command).
        """
        sock = listening_socket(host, port)
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        server = _Uvicorn(
            uvicorn.Config(self.app, lifespan="on", log_config=None, access_log=False, timeout_graceful_shutdown=1),
            on_ready=lambda: ready.done() or ready.set_result(None),
        )
        task = asyncio.create_task(server.serve(sockets=[sock]), name="aggregator-http")
        with _signals_stop(server) if handle_signals else contextlib.nullcontext():
            try:
                await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
                if not ready.done():
                    raise XdsControlError(f"the aggregator's HTTP server did not start on {host}:{port}")
                bound_host, bound_port = sock.getsockname()[:2]
                authority = f"[{bound_host}]" if ":" in bound_host else bound_host
                yield f"http://{authority}:{bound_port}{MCP_PATH}"
                if handle_signals:
                    await task
            finally:
                server.should_exit = True
                await asyncio.wait({task}, timeout=10)
                if not task.done():
                    task.cancel()
                sock.close()


def listening_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket. Made with an explicit IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted
    connections only for such sockets, and without it a small response waits for the peer's delayed ACK."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise XdsControlError(
            f"cannot listen on aggregator.address/port {host}:{port}: {exc.strerror or exc}"
        ) from None
    sock.setblocking(False)
    return sock


class _Uvicorn(uvicorn.Server):
    """uvicorn reporting readiness once it listens, leaving signal handling to its owner."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], Any]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_ready()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.contextmanager
def _signals_stop(server: uvicorn.Server) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)

    def stop() -> None:
        if server.should_exit:
            server.force_exit = True
        server.should_exit = True

    for sig in signals:
        loop.add_signal_handler(sig, stop)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def _first_xds_error(group: BaseExceptionGroup) -> XdsControlError | None:
    for exc in group.exceptions:
        if isinstance(exc, XdsControlError):
            return exc
        if isinstance(exc, BaseExceptionGroup) and (found := _first_xds_error(exc)) is not None:
            return found
    return None


async def serve_forever(config: Config, *, watch: ConfigWatch | None = None) -> int:
    """`xds-control aggregator -c CFG`: follow the control plane, serve `/mcp`, until SIGTERM/SIGINT. `watch(on_config)`
    (the config file's watcher, from the command line) hands each reloaded config in: the authorization rules
    take effect at once (grants of the old rules have other keys: none of their pages is served again)."""
    from xds_control.admin.cookie import token_source  # the admin token: configured, else the cookie file

    token: TokenSource
    token, _where = token_source(config.control_plane)
    targets = config.admin_dials()
    if len(targets) > 1 and not (
        config.control_plane.admin_token_env and os.environ.get(config.control_plane.admin_token_env)
    ):
        token = None  # each control plane's own cookie (admin-<port>.cookie), which AdminClient finds per target
    source = AdminViewSource(targets, token=token)
    aggregator = Aggregator(config, source, manage_gc=True)
    host, port = config.aggregator.address, config.aggregator.port
    metrics_host, _, metrics_port = config.aggregator.metrics.rpartition(":")
    metrics = start_metrics_server(metrics_host, int(metrics_port))
    tracer_provider = None
    if (
        config.telemetry.otlp_endpoint
    ):  # else no spans at all: the client's trace context passes through (tracing.exporting)
        from xds_control.telemetry.tracing import setup_tracing

        tracer_provider = setup_tracing(
            f"{config.telemetry.service_name_prefix}-aggregator", config.telemetry.otlp_endpoint
        )
    gc.freeze()  # start-up objects (SDK, pydantic schemas) leave the collector's scans: no multi-ms gen-2 pauses

    def announce(url: str) -> None:
        print(f"READY {url}", flush=True)
        log.info("aggregator listening", extra={"url": url, "backends": len(config.backends)})

    try:
        async with aggregator.running():
            reload = asyncio.ensure_future(watch(aggregator.apply_config)) if watch is not None else None
            try:
                async with aggregator.serving(host, port, handle_signals=True) as url:
                    announce(url)
            finally:
                if reload is not None:
                    reload.cancel()
    except BaseExceptionGroup as group:
        found = _first_xds_error(group)
        if found is None:
            raise
        raise found from None
    finally:
        await source.aclose()
        metrics.stop()
        if tracer_provider is not None:
            tracer_provider.shutdown()
    return 0
