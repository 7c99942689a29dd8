"""The admin gRPC server: `xds_control.admin.v1.Admin` over a `ViewStore`, plus reflection and grpc.health.v1.

Read calls are served from `store.current`; `Watch` sends the full view on
connect and again after every version bump (`store.wait_for_change`), so a
slow client simply skips to the newest view. Manual drain is a store
mutation; probe, breaker reset and data-path outcomes go to `HealthControl`;
`ListNodes` asks `NodeDirectory`. Every handler is wrapped by `_rpc`, which
checks the token on mutating calls, maps errors to status codes (never with
raw exception text) and counts the call.

Shutdown: `AdminServer.stop()` first wakes every Watch stream so it ends with
OK, marks the health service NOT_SERVING, then stops the gRPC server with a
grace period. A client that cancels its Watch cancels only its own handler
task; the service starts no tasks of its own that could outlive a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health as grpc_health
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from xds_control.admin.auth import TokenGuard, configured_guard, cookie_guard
from xds_control.admin.convert import backend_to_pb, node_to_pb
from xds_control.admin.cookie import cookie_path, remove_cookie
from xds_control.admin.metrics import WATCH_STREAMS, record_call
from xds_control.admin.ports import HealthControl, NodeDirectory
from xds_control.admin.v1 import admin_pb2 as pb
from xds_control.admin.v1 import admin_pb2_grpc as pb_grpc
from xds_control.config import Config
from xds_control.errors import AdminError, Unauthorized
from xds_control.sanitize import preview
from xds_control.view import BackendStatus, View, ViewStore

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Admin"].full_name  # "xds_control.admin.v1.Admin"
CATEGORY = re.compile(r"^[a-z0-9_]{1,64}$")
# ReportOutcomes: entries per report (the aggregator sends one per backend) and the count taken per backend
# per report (more says nothing more to a breaker whose threshold is far below it).
MAX_OUTCOMES = 4096
MAX_OUTCOME_COUNT = 1_000_000
# Clients keep the watch stream alive with pings (client.KEEPALIVE_MS); allow them.
SERVER_OPTIONS = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
]

F = TypeVar("F", bound=Callable[..., Any])


class _Failure(Exception):
    """A handler's refusal: a status code and a message safe to show the caller."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, _Failure):
        return exc.code, exc.message
    if isinstance(exc, Unauthorized):
        return grpc.StatusCode.UNAUTHENTICATED, str(exc)
    return grpc.StatusCode.INTERNAL, "internal error (see the control plane log)"


def _rpc(method: str, *, mutating: bool = False, stream: bool = False) -> Callable[[F], F]:
    """Wrap a handler: token check, error -> status mapping, one metric per call."""

    def decorate(fn: F) -> F:
        @contextlib.asynccontextmanager
        async def counted(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
            """One metric per call; an error becomes the caller's status (and a log line when it is ours)."""
            code: grpc.StatusCode | None = grpc.StatusCode.OK
            try:
                yield
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                code = None  # counted here, before abort: the caller may hear the status before abort returns
                status, message = _status_of(exc)
                record_call(method, status)
                if status is grpc.StatusCode.INTERNAL:
                    log.error("admin %s failed", method, exc_info=exc)
                elif status is grpc.StatusCode.UNAUTHENTICATED:
                    log.warning("admin %s refused: missing or wrong token", method, extra={"peer": context.peer()})
                await context.abort(status, message)
            finally:
                if code is not None:
                    record_call(method, code)

        if stream:

            @functools.wraps(fn)
            async def stream_handler(
                self: AdminService, request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                async with counted(context), contextlib.aclosing(fn(self, request, context)) as items:
                    async for item in items:
                        yield item

            return stream_handler  # type: ignore[return-value]

        @functools.wraps(fn)
        async def handler(self: AdminService, request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with counted(context):
                if mutating:
                    self.guard.check(context.invocation_metadata(), method)
                return await fn(self, request, context)

        return handler  # type: ignore[return-value]

    return decorate


# No response comes near gRPC's default 4 MB receive limit: backends are sent in pages of at most this many
# bytes (a backend's catalog is at most 3 MiB: health.max_catalog_bytes), so any client reads every message.
MESSAGE_BUDGET = 3_500_000


def _fitting(backend: pb.Backend) -> pb.Backend:
    """`backend`, or without its catalog if it alone would pass the budget (cannot happen within the config's
    bounds; the catalog hash still says which catalog it is)."""
    if backend.ByteSize() <= MESSAGE_BUDGET:
        return backend
    log.warning("backend %s: catalog too large for an admin message; sent without it", backend.name)
    backend.catalog_json = ""
    return backend


def _pages(backends: list[pb.Backend]) -> list[list[pb.Backend]]:
    """`backends` in order, cut into pages of at most MESSAGE_BUDGET bytes (at least one page)."""
    pages: list[list[pb.Backend]] = [[]]
    size = 0
    for backend in backends:
        item = backend.ByteSize() + 8  # the field's tag and length
        if pages[-1] and size + item > MESSAGE_BUDGET:
            pages.append([])
            size = 0
        pages[-1].append(backend)
        size += item
    return pages


def _page_offset(token: str) -> int:
    if not token:
        return 0
    if not token.isdigit() or len(token) > 9:
        raise _Failure(grpc.StatusCode.INVALID_ARGUMENT, "page_token is not one this server gave")
    return int(token)


class AdminService(pb_grpc.AdminServicer):
    """The servicer. `health`/`nodes` may be None: their calls answer UNIMPLEMENTED / no nodes."""

    def __init__(
        self,
        store: ViewStore,
        health: HealthControl | None,
        nodes: NodeDirectory | None,
        guard: TokenGuard,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.wall_clock = wall_clock  # unix time a message is served at: `retry_after` counts down from it
        self.store = store
        self.health = health
        self.nodes = nodes
        self.guard = guard
        self.active_watches = 0  # Watch handlers running now
        self._closing = asyncio.Event()

    def close(self) -> None:
        """End every Watch stream (with OK) and refuse new ones past their first message."""
        self._closing.set()

    # -- helpers ----------------------------------------------------------------------------

    def _backend(self, name: str) -> BackendStatus:
        status = self.store.current.backend(name)
        if status is None:
            raise _Failure(grpc.StatusCode.NOT_FOUND, f"no backend named {preview(name, 64)!r}")
        return status

    def _health(self, what: str) -> HealthControl:
        if self.health is None:
            raise _Failure(
                grpc.StatusCode.UNIMPLEMENTED, f"{what} needs the health monitor, which this server does not run"
            )
        return self.health

    async def _next_view(self, after: int) -> View | None:
        """The next view with a version above `after`, or None once the server is closing."""
        if self._closing.is_set():
            return None
        change = asyncio.ensure_future(self.store.wait_for_change(after))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait((change, closing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            change.cancel()
            closing.cancel()
            await asyncio.gather(change, closing, return_exceptions=True)
        if change.cancelled() or change.exception() is not None or self._closing.is_set():
            return None
        return change.result()

    def _backends(self, view: View, omit_catalogs: bool) -> list[pb.Backend]:
        now = self.wall_clock()
        return [_fitting(backend_to_pb(b, now=now, omit_catalog=omit_catalogs)) for b in view.backends.values()]

    def _backend_pb(self, status: BackendStatus) -> pb.Backend:
        return backend_to_pb(status, now=self.wall_clock())

    # -- read-only --------------------------------------------------------------------------

    @_rpc("ListBackends")
    async def ListBackends(
        self, request: pb.ListBackendsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListBackendsResponse:
        view = self.store.current
        start = _page_offset(request.page_token)
        found = 0
        for page in _pages(self._backends(view, request.omit_catalogs)):  # the same pages for the same view
            if found == start:
                after = found + len(page)
                token = str(after) if after < len(view.backends) else ""
                return pb.ListBackendsResponse(version=view.version, backends=page, next_page_token=token)
            found += len(page)
        raise _Failure(grpc.StatusCode.INVALID_ARGUMENT, "page_token is not where a page of this view starts")

    @_rpc("GetBackend")
    async def GetBackend(
        self, request: pb.GetBackendRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetBackendResponse:
        view = self.store.current
        return pb.GetBackendResponse(version=view.version, backend=self._backend_pb(self._backend(request.name)))

    @_rpc("Watch", stream=True)
    async def Watch(
        self, request: pb.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchResponse]:
        self.active_watches += 1
        WATCH_STREAMS.inc()
        try:
            view: View | None = self.store.current
            while view is not None:
                pages = _pages(self._backends(view, request.omit_catalogs))
                for i, page in enumerate(pages):
                    yield pb.WatchResponse(version=view.version, backends=page, more=i < len(pages) - 1)
                view = await self._next_view(view.version)
        finally:
            self.active_watches -= 1
            WATCH_STREAMS.dec()

    @_rpc("ListNodes")
    async def ListNodes(self, request: pb.ListNodesRequest, context: grpc.aio.ServicerContext) -> pb.ListNodesResponse:
        nodes = self.nodes.nodes() if self.nodes is not None else []
        return pb.ListNodesResponse(nodes=[node_to_pb(n) for n in sorted(nodes, key=lambda n: n.node_id)])

    # -- mutating ---------------------------------------------------------------------------

    @_rpc("ProbeNow", mutating=True)
    async def ProbeNow(self, request: pb.ProbeNowRequest, context: grpc.aio.ServicerContext) -> pb.ProbeNowResponse:
        self._backend(request.name)
        health = self._health("ProbeNow")
        log.info("admin: probe requested", extra={"backend": request.name})
        try:
            status = await health.probe_now(request.name)
        except KeyError:
            raise _Failure(grpc.StatusCode.NOT_FOUND, f"no backend named {preview(request.name, 64)!r}") from None
        return pb.ProbeNowResponse(backend=self._backend_pb(status))

    @_rpc("ResetBreaker", mutating=True)
    async def ResetBreaker(
        self, request: pb.ResetBreakerRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResetBreakerResponse:
        self._backend(request.name)
        health = self._health("ResetBreaker")
        log.info("admin: breaker reset", extra={"backend": request.name})
        try:
            status = await health.reset_breaker(request.name)
        except KeyError:
            raise _Failure(grpc.StatusCode.NOT_FOUND, f"no backend named {preview(request.name, 64)!r}") from None
        return pb.ResetBreakerResponse(backend=self._backend_pb(status))

    def _set_drained(self, name: str, drained: bool) -> tuple[int, pb.Backend]:
        self._backend(name)
        view = self.store.set_drained(name, drained)
        log.info("admin: backend %s", "drained" if drained else "undrained", extra={"backend": name})
        return view.version, self._backend_pb(self._backend(name))

    @_rpc("Drain", mutating=True)
    async def Drain(self, request: pb.DrainRequest, context: grpc.aio.ServicerContext) -> pb.DrainResponse:
        version, backend = self._set_drained(request.name, True)
        return pb.DrainResponse(version=version, backend=backend)

    @_rpc("Undrain", mutating=True)
    async def Undrain(self, request: pb.UndrainRequest, context: grpc.aio.ServicerContext) -> pb.UndrainResponse:
        version, backend = self._set_drained(request.name, False)
        return pb.UndrainResponse(version=version, backend=backend)

    @_rpc("ReportOutcomes", mutating=True)
    async def ReportOutcomes(
        self, request: pb.ReportOutcomesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportOutcomesResponse:
        health = self._health("ReportOutcomes")
        if len(request.outcomes) > MAX_OUTCOMES:
            raise _Failure(
                grpc.StatusCode.INVALID_ARGUMENT, f"a report holds at most {MAX_OUTCOMES} outcomes (one per backend)"
            )
        merged: dict[str, list[Any]] = {}  # backend -> [successes, failures, category]; validated before applying
        for outcome in request.outcomes:
            if outcome.HasField("last_failure_category") and not CATEGORY.match(outcome.last_failure_category):
                raise _Failure(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"last_failure_category for {preview(outcome.backend, 64)!r} must match [a-z0-9_]{{1,64}}",
                )
            entry = merged.setdefault(outcome.backend, [0, 0, None])
            entry[0] = min(entry[0] + outcome.successes, MAX_OUTCOME_COUNT)
            entry[1] = min(entry[1] + outcome.failures, MAX_OUTCOME_COUNT)
            if outcome.HasField("last_failure_category"):
                entry[2] = outcome.last_failure_category
        unknown: list[str] = []
        for name, (successes, failures, category) in merged.items():
            if self.store.current.backend(name) is None:
                unknown.append(preview(name, 64))
                continue
            try:
                await health.record_outcomes(name, successes, failures, category)  # O(1) in the counts
            except KeyError:
                unknown.append(preview(name, 64))
        return pb.ReportOutcomesResponse(unknown_backends=unknown)


class AdminServer:
    """A running admin server. `port` is the bound port; `stop()` is idempotent."""

    def __init__(
        self,
        server: grpc.aio.Server,
        service: AdminService,
        health_servicer: grpc_health.aio.HealthServicer,
        host: str,
        port: int,
        cookie: Path | None = None,
    ) -> None:
        self.server = server
        self.service = service
        self.host = host
        self.port = port
        self.cookie = cookie  # the admin cookie file this server wrote (removed at stop), if any
        self._health = health_servicer
        self._stopped = False

    @property
    def token_required(self) -> bool:
        return self.service.guard.required

    @property
    def active_watches(self) -> int:
        return self.service.active_watches

    async def stop(self, grace: float = 2.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.service.close()
        await self._health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self.cookie is not None:
            remove_cookie(self.cookie, self.service.guard.accepts)
        log.info("admin API stopped", extra={"address": f"{self.host}:{self.port}"})

    async def __aenter__(self) -> AdminServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _bind_target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start_admin_server(
    config: Config, store: ViewStore, health: HealthControl | None = None, nodes: NodeDirectory | None = None
) -> AdminServer:
    """Bind `control_plane.admin` and serve the admin API, reflection and grpc.health.v1.

    Mutating calls need the configured admin token, or else one made now and written to the admin cookie
    file once the port is bound (`cookie.py`; removed at `stop()`). Raises AdminError if the address is off
    loopback and no token is configured, if the cookie cannot be written, or if the address cannot be bound.
    """
    host, port = config.control_plane.admin_host_port
    configured = configured_guard(host, config.control_plane.admin_token_env)  # decide before any I/O
    service = AdminService(store, health, nodes, configured or TokenGuard(None))
    health_servicer = grpc_health.aio.HealthServicer()
    server = grpc.aio.server(options=SERVER_OPTIONS)
    pb_grpc.add_AdminServicer_to_server(service, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
    )
    target = _bind_target(host, port)
    try:
        bound = server.add_insecure_port(target)
    except RuntimeError:
        bound = 0
    if not bound:
        await server.stop(None)
        raise AdminError(f"cannot bind the admin API to control_plane.admin {target} (address in use or not local?)")
    cookie_written: Path | None = None
    if configured is None:  # only once the port is ours: never overwrite the cookie of a plane already on it
        cookie_written = cookie_path(config.control_plane)
        try:
            service.guard = cookie_guard(cookie_written)
        except AdminError:
            await server.stop(None)
            raise
    guard = service.guard
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if cookie_written is not None:
        log.info(
            "admin API listening; mutating calls need the admin token, written to %s",
            cookie_written,
            extra={"address": target, "token_required": guard.required, "cookie_file": str(cookie_written)},
        )
    else:
        log.info("admin API listening", extra={"address": target, "token_required": guard.required})
    return AdminServer(server, service, health_servicer, host, bound, cookie_written)
