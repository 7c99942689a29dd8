"""`AdminClient`: the admin API as view objects, for the aggregator and the CLI.

    async with AdminClient("127.0.0.1:18001") as admin:
        for status in await admin.list_backends(): ...
        async for event in admin.watch():   # full view first, then one event per change
            apply(event.backends)            # each event replaces the previous one entirely

`watch()` reconnects by default (backoff 0.1 s doubling to 5 s) when the
control plane is unreachable or restarts, and carries on with the new
server's full view; versions restart with the server, so consumers should
treat every event as a replacement, never diff versions across events.
Errors are mapped at this edge: `AdminUnavailable` (cannot reach it),
`BackendNotFound`, `Unauthorized` (token missing or wrong), `AdminError`
(anything else). No gRPC or socket exception escapes. The token is sent only
with mutating calls and never appears in a message or repr.

The client speaks gRPC with grpclib (pure Python, asyncio, over h2) rather
than grpcio, whose C core weighs on a process's memory and start-up: the
aggregator keeps this client open for its whole life and the CLI starts it
for one call. The server side stays grpcio (admin/service.py: reflection,
grpc.health.v1).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from grpclib.client import Channel, UnaryStreamMethod, UnaryUnaryMethod
from grpclib.config import Configuration
from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from xds_control.admin.auth import is_loopback
from xds_control.admin.convert import backend_from_pb, node_from_pb
from xds_control.admin.cookie import cookie_path_for_port, read_cookie
from xds_control.admin.ports import NodeInfo
from xds_control.admin.v1 import admin_pb2 as pb
from xds_control.config import ControlPlaneConfig
from xds_control.errors import AdminError, AdminUnavailable, BackendNotFound, Unauthorized
from xds_control.view import BackendStatus

log = logging.getLogger(__name__)
# hpack (under grpclib's h2) logs every header it encodes at DEBUG, values included: the bearer token too.
logging.getLogger("hpack").setLevel(logging.INFO)

KEEPALIVE_MS = 20_000
CHANNEL_CONFIG = Configuration(
    _keepalive_time=KEEPALIVE_MS / 1000,  # notice a vanished control plane on an idle watch stream
    _keepalive_timeout=10.0,
    _keepalive_permit_without_calls=True,
    _http2_max_pings_without_data=0,
)
CALL_TIMEOUT = 10.0
SNAPSHOT_ATTEMPTS = 5  # reads of a paged view that changed under the reader before giving up
PROBE_TIMEOUT = 60.0  # a probe waits for the backend's verdict
WATCH_BACKOFF = (0.1, 5.0)
SERVICE = "/xds_control.admin.v1.Admin/"
# Stream failures worth reconnecting for; anything else (UNIMPLEMENTED, PERMISSION_DENIED, ...) is raised.
RETRYABLE = frozenset(
    {
        Status.UNAVAILABLE,
        Status.UNKNOWN,
        Status.INTERNAL,
        Status.ABORTED,
        Status.CANCELLED,
        Status.DEADLINE_EXCEEDED,
        Status.RESOURCE_EXHAUSTED,
    }
)
# The connection failed, broke or timed out (TimeoutError is an OSError): no status from the server at all.
_TRANSPORT_ERRORS = (OSError, StreamTerminatedError, ProtocolError, EOFError)

_UNARY: dict[str, tuple[type[Any], type[Any]]] = {
    "ListBackends": (pb.ListBackendsRequest, pb.ListBackendsResponse),
    "GetBackend": (pb.GetBackendRequest, pb.GetBackendResponse),
    "ListNodes": (pb.ListNodesRequest, pb.ListNodesResponse),
    "ProbeNow": (pb.ProbeNowRequest, pb.ProbeNowResponse),
    "Drain": (pb.DrainRequest, pb.DrainResponse),
    "Undrain": (pb.UndrainRequest, pb.UndrainResponse),
    "ResetBreaker": (pb.ResetBreakerRequest, pb.ResetBreakerResponse),
    "ReportOutcomes": (pb.ReportOutcomesRequest, pb.ReportOutcomesResponse),
}


def dial_target(admin: str) -> str:
    """`control_plane.admin` (HOST:PORT) as a client dials it: a wildcard bind is dialled on loopback.
    ValueError when it is not HOST:PORT."""
    cp = ControlPlaneConfig(admin=admin)
    host, port = cp.admin_host_port
    try:
        if ipaddress.ip_address(host).is_unspecified:
            host = "::1" if ":" in host else "127.0.0.1"
    except ValueError:
        pass
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class WatchEvent:
    """One message of the watch stream: the whole view at `version`, backends in config order."""

    version: int
    backends: dict[str, BackendStatus]


@dataclass(frozen=True)
class Outcome:
    """Data-path call outcomes for one backend since the last report."""

    backend: str
    successes: int = 0
    failures: int = 0
    last_failure_category: str | None = None  # [a-z0-9_]{1,64}


def _reason(details: str) -> str:
    text = details.lower()
    if (
        "errno -2" in text or "errno -3" in text or "errno -5" in text
    ):  # socket.gaierror: EAI_NONAME, EAI_AGAIN, EAI_NODATA
        return "cannot resolve the host"
    if "refused" in text:
        return "connection refused"
    if "deadline" in text or "timeout" in text or "timed out" in text:
        return "timed out"
    if "dns" in text or "resolve" in text or "name or service" in text:
        return "cannot resolve the host"
    return "unavailable"


TokenSource = str | Callable[[], str | None] | None


class AdminClient:
    """An async client of one control plane's admin API. Create it anywhere; it connects on first use.

    `token` is the admin token for mutating calls: a string, or a callable read at each mutating call (a
    control plane that restarts writes a new cookie). None: the admin cookie file of a loopback `target`'s
    port (`cookie.py`), read at each call. `token_from` names where the token came from, for refusals.
    """

    def __init__(
        self, target: str, token: TokenSource = None, *, timeout: float = CALL_TIMEOUT, token_from: str | None = None
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._token: Callable[[], str | None]
        if token is None and _is_local(target):
            cookie = cookie_path_for_port(_host_port(target)[1])
            self._token = functools.partial(read_cookie, cookie)
            token_from = token_from or f"the admin cookie file {cookie}"
        elif callable(token):
            self._token = token
        else:
            fixed = token.strip() if token and token.strip() else None
            self._token = lambda: fixed
        self.token_from = token_from or "the token given"
        self._channel: Channel | None = None

    def __repr__(self) -> str:
        return f"AdminClient(target={self.target!r}, token_from={self.token_from!r})"

    def _metadata(self) -> tuple[tuple[str, str], ...] | None:
        token = self._token()
        return (("authorization", f"Bearer {token.strip()}"),) if token and token.strip() else None

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._channel is not None:
            channel, self._channel = self._channel, None
            channel.close()

    def _open(self) -> Channel:
        if self._channel is None:
            host, port = _host_port(self.target)
            self._channel = Channel(host, port, config=CHANNEL_CONFIG)
        return self._channel

    def _error(self, exc: BaseException, method: str, timeout: float | None = None) -> AdminError:
        if isinstance(exc, TimeoutError):
            return AdminUnavailable(
                f"the control plane admin API at {self.target} did not answer {method} within {timeout}s"
            )
        if not isinstance(exc, GRPCError):
            return AdminUnavailable(
                f"cannot reach the control plane admin API at {self.target}: {_reason(f'{type(exc).__name__} {exc}')}"
            )
        status, details = exc.status, exc.message or ""
        if status is Status.UNAVAILABLE:
            return AdminUnavailable(f"cannot reach the control plane admin API at {self.target}: {_reason(details)}")
        if status is Status.DEADLINE_EXCEEDED:
            return AdminUnavailable(
                f"the control plane admin API at {self.target} did not answer {method} within {timeout}s"
            )
        if status is Status.NOT_FOUND:
            return BackendNotFound(details)
        if status is Status.UNAUTHENTICATED:
            if self._metadata() is None:
                hint = (
                    f" (this client had no token: {self.token_from} holds none; the control plane writes its cookie "
                    "at start when admin_token_env is unset, else set the variable admin_token_env names)"
                )
            else:
                hint = f" (the token from {self.token_from} is not this control plane's)"
            return Unauthorized(f"{details}{hint}")
        return AdminError(f"{method} failed: {status.name}: {details}")

    async def _call(self, method: str, request: Any, *, mutating: bool = False, timeout: float | None = None) -> Any:
        timeout = timeout or self.timeout
        request_type, reply_type = _UNARY[method]
        rpc = UnaryUnaryMethod(self._open(), SERVICE + method, request_type, reply_type)
        try:
            return await rpc(request, timeout=timeout, metadata=self._metadata() if mutating else None)
        except (GRPCError, *_TRANSPORT_ERRORS) as exc:
            raise self._error(exc, method, timeout) from None

    # -- read-only --------------------------------------------------------------------------

    async def snapshot(self) -> WatchEvent:
        """The current view (ListBackends, every page of one version), shaped like a watch event."""
        for _attempt in range(SNAPSHOT_ATTEMPTS):
            first = await self._call("ListBackends", pb.ListBackendsRequest())
            backends = list(first.backends)
            token = first.next_page_token
            while token:
                page = await self._call("ListBackends", pb.ListBackendsRequest(page_token=token))
                if page.version != first.version:
                    break  # the view changed between pages: start again
                backends += page.backends
                token = page.next_page_token
            else:
                return _event_of(first.version, backends)
        raise AdminError(f"the view of {self.target} kept changing while it was read page by page")

    async def list_backends(self) -> list[BackendStatus]:
        return list((await self.snapshot()).backends.values())

    async def get_backend(self, name: str) -> BackendStatus:
        response = await self._call("GetBackend", pb.GetBackendRequest(name=name))
        return backend_from_pb(response.backend, now=time.time())

    async def nodes(self) -> list[NodeInfo]:
        response = await self._call("ListNodes", pb.ListNodesRequest())
        return [node_from_pb(n) for n in response.nodes]

    async def watch(self, *, reconnect: bool = True) -> AsyncIterator[WatchEvent]:
        """Full view first, then one event per view change (bursts may be coalesced), forever.

        With `reconnect=False` the iterator raises `AdminUnavailable` when the
        stream breaks or the server shuts down. With `reconnect=True` it waits
        and reconnects instead (the first event after that is the new full
        view), and raises only for errors a retry cannot fix.
        """
        delay = WATCH_BACKOFF[0]
        down_since_logged = False
        while True:
            method = UnaryStreamMethod(self._open(), SERVICE + "Watch", pb.WatchRequest, pb.WatchResponse)
            streaming = False
            try:
                async with method.open() as stream:
                    await stream.send_message(pb.WatchRequest(), end=True)
                    parts: list[pb.Backend] = []  # a view sent in several messages (`more`), until its last
                    while (message := await stream.recv_message()) is not None:
                        streaming = True
                        if down_since_logged:
                            log.info("admin watch reconnected", extra={"target": self.target})
                            down_since_logged = False
                        delay = WATCH_BACKOFF[0]
                        parts += message.backends
                        if message.more:
                            continue
                        yield _event_of(message.version, parts)
                        parts = []
                error: AdminError = AdminUnavailable(
                    f"the control plane at {self.target} closed the watch stream (shutting down)"
                )
            except GRPCError as exc:
                error = self._error(exc, "Watch")
                if not reconnect or exc.status not in RETRYABLE:
                    raise error from None
            except _TRANSPORT_ERRORS as exc:
                # a stream that was flowing and broke: the control plane stopped (its last trailers may be lost
                # with the connection) or the network went; either way the stream is gone
                lost = f"the control plane at {self.target} closed the watch stream (connection lost)"
                error = AdminUnavailable(lost) if streaming else self._error(exc, "Watch")
                if not reconnect:
                    raise error from None
            if not reconnect:
                raise error
            if not down_since_logged:
                log.warning("admin watch lost; reconnecting: %s", error, extra={"target": self.target})
                down_since_logged = True
            await self.close()  # a broken connection is not reused: the next attempt dials afresh
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, WATCH_BACKOFF[1])

    # -- mutating ---------------------------------------------------------------------------

    async def probe_now(self, name: str) -> BackendStatus:
        response = await self._call("ProbeNow", pb.ProbeNowRequest(name=name), mutating=True, timeout=PROBE_TIMEOUT)
        return backend_from_pb(response.backend, now=time.time())

    async def drain(self, name: str) -> BackendStatus:
        response = await self._call("Drain", pb.DrainRequest(name=name), mutating=True)
        return backend_from_pb(response.backend, now=time.time())

    async def undrain(self, name: str) -> BackendStatus:
        response = await self._call("Undrain", pb.UndrainRequest(name=name), mutating=True)
        return backend_from_pb(response.backend, now=time.time())

    async def reset_breaker(self, name: str) -> BackendStatus:
        response = await self._call("ResetBreaker", pb.ResetBreakerRequest(name=name), mutating=True)
        return backend_from_pb(response.backend, now=time.time())

    async def report_outcomes(self, outcomes: Iterable[Outcome]) -> list[str]:
        """Send data-path outcomes; returns the backend names the control plane does not know (skipped)."""
        request = pb.ReportOutcomesRequest(outcomes=[_outcome_to_pb(o) for o in outcomes])
        response = await self._call("ReportOutcomes", request, mutating=True)
        return list(response.unknown_backends)


def _is_local(target: str) -> bool:
    try:
        host, _port = _host_port(target)
    except AdminError:
        return False
    return is_loopback(host)


def _host_port(target: str) -> tuple[str, int]:
    """HOST:PORT or [V6]:PORT as grpclib's (host, port)."""
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise AdminError(f"admin target {target!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _outcome_to_pb(outcome: Outcome) -> pb.BackendOutcome:
    msg = pb.BackendOutcome(backend=outcome.backend, successes=outcome.successes, failures=outcome.failures)
    if outcome.last_failure_category is not None:
        msg.last_failure_category = outcome.last_failure_category
    return msg


def _event_of(version: int, backends: Sequence[pb.Backend]) -> WatchEvent:
    now = time.time()
    return WatchEvent(version=version, backends={b.name: backend_from_pb(b, now=now) for b in backends})
