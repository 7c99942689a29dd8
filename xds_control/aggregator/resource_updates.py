"""Resource subscriptions through the gateway: the shell around `SubscriptionTable` (subscriptions.py).

Clients subscribe to exposed URIs: a legacy client with `resources/subscribe`
on its session, a 2026-07-28 client by naming URIs in `subscriptions/listen`.
A URI routes to its backend as `resources/read` does (exact URI, then
templates); an unroutable owner fails fast (BACKEND_UNAVAILABLE), an unknown
URI is "resource not found".

Upstream, per backend with subscriptions there is one *link*: one MCP
session to the backend (through Envoy's egress listener, like calls), run by
one task, carrying one upstream subscription per (backend, URI) whatever the
number of clients: legacy backends get `resources/subscribe` on that session
and their `notifications/resources/updated` arrive on its GET stream; modern
backends get one `subscriptions/listen` stream per URI. The first subscriber
of a URI waits for the backend's answer (its error is the client's); later
ones join at once.

Down the other way, an update for (backend, URI) goes to exactly the
subscribers of that target, under the URI each subscribed with. Legacy
sessions: the event is encoded once per URI and queued, without waiting, on
each session's GET stream (get_streams.py: a bounded queue per stream, written
by its own task); a session without a GET stream open hears nothing, as with
the SDK.
A session whose queue is full (a slow reader), or whose outbox is not empty,
gets the URI in its outbox instead (a set of URIs, so repeats coalesce and
it never holds more than the session's subscriptions) drained by its own
task, each put within `send_timeout`: a slow client delays nobody else and
still hears the latest update once it reads again. Modern streams: one
publish per URI on the subscription bus, whose listen handlers filter by URI
and end a stream whose backlog is full.

Recovery: the link pings a legacy backend every `keepalive` seconds; a
failed ping or a broken listen stream (a restart, a dead replica) reopens
the link with backoff and re-subscribes every target, and since updates may
have been missed meanwhile, every subscriber hears `updated` once. A backend
that turns unroutable loses its link (abandoned: no DELETE) and gets it back,
re-subscribed, when routable again. A backend that leaves the view ends its
subscriptions: the table forgets them and the link closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import anyio
import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import listen
from mcp.server.session import ServerSession
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated
from mcp.shared.exceptions import MCPError

from xds_control.aggregator import metrics
from xds_control.aggregator.catalog import MergedCatalog
from xds_control.aggregator.gateway import RESOURCE_NOT_FOUND
from xds_control.aggregator.get_streams import GetStreams
from xds_control.aggregator.rpc_errors import backend_failed, caller_error, from_unavailable
from xds_control.aggregator.sdk_transport import abandon_session_in_this_task
from xds_control.aggregator.subscriptions import SubscriptionLimit, SubscriptionTable, Target
from xds_control.aggregator.upstream import CLIENT_INFO, BackendUpstream, Spawn, map_error, retrieved, unwrap
from xds_control.errors import AggregatorError
from xds_control.view import BackendStatus

log = logging.getLogger(__name__)

KEEPALIVE = 5.0
MAX_URI_CHARS = 2048
SEND_TIMEOUT = 5.0
_BACKOFF_FIRST, _BACKOFF_MAX = 0.1, 5.0


class _Outbox:
    """The URIs a legacy session is still to hear `updated` for, and the task sending them."""

    __slots__ = ("pending", "task")

    def __init__(self) -> None:
        self.pending: dict[str, None] = {}
        self.task: asyncio.Task[None] | None = None


class _LinkDown(Exception):
    """The link's session or one of its listen streams broke."""


class _Link:
    """One backend's upstream session carrying its subscriptions; run by `run()` until `close()`."""

    def __init__(self, owner: ResourceSubscriptions, upstream: BackendUpstream, routable: bool) -> None:
        self.owner = owner
        self.upstream = upstream
        self.name = upstream.name
        self.routable = routable
        self.active: set[str] = set()  # URIs subscribed upstream on the current session
        self.waiting: dict[str, asyncio.Future[None]] = {}  # URIs whose first subscriber awaits the backend
        self.wake = asyncio.Event()
        self.closed = False
        self.abandon = False
        self.task: asyncio.Task[None] | None = None
        self.was_up = False  # a session carried subscriptions before: a new one may have missed updates
        self._listens: dict[str, asyncio.Task[None]] = {}
        self._down: asyncio.Future[None] | None = None

    def close(self, *, abandon: bool) -> None:
        self.closed = True
        self.abandon = self.abandon or abandon
        self.fail_waiting(backend_failed(self.name, "connection_closed"))
        self.wake.set()

    def confirmation(self, uri: str) -> asyncio.Future[None] | None:
        """None when `uri` is subscribed upstream now, else the future of its subscription."""
        if uri in self.active:
            return None
        future = self.waiting.get(uri)
        if future is None:
            future = self.waiting[uri] = asyncio.get_running_loop().create_future()
            future.add_done_callback(retrieved)
        self.wake.set()
        return future

    def fail_waiting(self, error: BaseException) -> None:
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(error)
        self.waiting.clear()

    def _settle(self, uri: str, error: BaseException | None) -> None:
        future = self.waiting.pop(uri, None)
        if future is not None and not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    def _wanted(self) -> set[str]:
        return self.owner.table.uris_of(self.name)

    def _should_run(self) -> bool:
        return not self.closed and self.routable and bool(self._wanted())

    async def run(self) -> None:
        backoff = _BACKOFF_FIRST
        try:
            while not self.closed:
                if not self._should_run():
                    if not self.closed and not self._wanted() and not self.waiting:
                        return  # nothing to carry: `finally` forgets the link
                    self.wake.clear()
                    await self.wake.wait()
                    continue
                try:
                    await self._session(resumed=self.was_up)
                    backoff = _BACKOFF_FIRST
                except Exception as exc:  # the link broke: reopen it with backoff
                    self.fail_waiting(_link_error(self.name, exc, self.upstream.open_timeout))
                    log.info(
                        "resource subscription link lost",
                        extra={"backend": self.name, "error": type(unwrap(exc)).__name__},
                    )
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX)
        finally:
            self.fail_waiting(backend_failed(self.name, "connection_closed"))
            self.owner._forget(self)

    async def _sleep(self, delay: float) -> None:
        self.wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                while not self.closed:
                    await self.wake.wait()
                    self.wake.clear()
                    if not self.routable:
                        return

    async def _session(self, *, resumed: bool) -> None:
        async with self._open() as session:
            self.active = set()
            self._down = asyncio.get_running_loop().create_future()
            self._down.add_done_callback(retrieved)
            try:
                first = True
                while not self.closed and self.routable:
                    self.wake.clear()
                    await self._sync(session)  # with nothing wanted: every upstream subscription ends
                    if first:
                        first = False
                        if resumed:
                            await self.owner.resumed(self.name)
                        self.was_up = True
                    if not self._wanted() and not self.waiting:
                        self.was_up = False  # ended, not broken: a later subscriber missed nothing
                        break
                    await self._idle(session)
            finally:
                for task in self._listens.values():
                    task.cancel()
                if self._listens:
                    await asyncio.wait(list(self._listens.values()), timeout=5)
                self._listens.clear()
                self.active = set()
                if (self.closed and self.abandon) or not self.routable:
                    abandon_session_in_this_task()  # a DELETE would reach a dead or removed backend

    @contextlib.asynccontextmanager
    async def _open(self) -> AsyncIterator[ClientSession]:
        upstream = self.upstream
        async with streamable_http_client(
            upstream.url,
            http_client=upstream.sdk_client,
            terminate_on_close=True,
            max_sse_event_size=upstream.max_response_bytes,
        ) as (read, write):
            async with ClientSession(read, write, client_info=CLIENT_INFO, message_handler=self._message) as session:
                if upstream.family == "legacy":
                    with anyio.fail_after(upstream.open_timeout):
                        await session.initialize()
                else:
                    session.adopt(upstream.discover_result())
                yield session

    async def _message(self, message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            await self.owner.updated(self.name, str(message.params.uri))

    async def _idle(self, session: ClientSession) -> None:
        """Until woken (a change to carry), or the keepalive ping is due (legacy) and fails."""
        assert self._down is not None
        down: asyncio.Future[Any] = self._down
        wake: asyncio.Future[Any] = asyncio.ensure_future(self.wake.wait())
        try:
            while True:
                done, _ = await asyncio.wait(
                    {wake, down}, timeout=self.owner.keepalive, return_when=asyncio.FIRST_COMPLETED
                )
                if down in done:
                    raise _LinkDown("a listen stream broke")
                if wake in done:
                    return
                if self.upstream.family == "legacy":
                    with anyio.fail_after(self.upstream.open_timeout):
                        await session.send_ping()
        finally:
            wake.cancel()

    async def _sync(self, session: ClientSession) -> None:
        wanted = self._wanted() | set(self.waiting)
        for uri in sorted(wanted - self.active):
            if self.closed:
                return
            if not self.owner.table.has(Target(self.name, uri)) and uri not in self.waiting:
                continue  # left while an earlier one was subscribed
            try:
                await self._subscribe(session, uri)
            except Exception as exc:
                mapped = map_error(self.name, exc, self.upstream.call_timeout)
                if not isinstance(mapped, MCPError):
                    raise
                self._refused(uri, mapped)  # the backend's own refusal: this target ends, the link stays
                continue
            self.active.add(uri)
            self._settle(uri, None)
        for uri in sorted(self.active - self._wanted()):
            self.active.discard(uri)
            await self._unsubscribe(session, uri)

    async def _subscribe(self, session: ClientSession, uri: str) -> None:
        if self.upstream.family == "legacy":
            with anyio.fail_after(self.upstream.call_timeout):
                await session.send_request(
                    types.SubscribeRequest(params=types.SubscribeRequestParams(uri=uri)), types.EmptyResult
                )
            return
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._listens[uri] = self.owner.spawn(self._listen(session, uri, acked))
        async with asyncio.timeout(self.upstream.call_timeout):
            await acked

    async def _listen(self, session: ClientSession, uri: str, acked: asyncio.Future[None]) -> None:
        """One modern `subscriptions/listen` stream for `uri`; a drop marks the link down."""
        try:
            async with listen(session, resource_subscriptions=[uri]) as subscription:
                acked.set_result(None)
                async for event in subscription:
                    if isinstance(event, ResourceUpdated):
                        await self.owner.updated(self.name, event.uri)
            if uri in self.active and not self.closed:
                raise _LinkDown("the listen stream ended")
        except asyncio.CancelledError:
            if not acked.done():
                acked.cancel()
        except Exception as exc:
            if not acked.done():
                acked.set_exception(exc)
            elif self._down is not None and not self._down.done():
                self._down.set_exception(exc)

    async def _unsubscribe(self, session: ClientSession, uri: str) -> None:
        task = self._listens.pop(uri, None)
        if task is not None:
            task.cancel()
            return
        try:
            with anyio.fail_after(self.upstream.call_timeout):
                await session.send_request(
                    types.UnsubscribeRequest(params=types.UnsubscribeRequestParams(uri=uri)), types.EmptyResult
                )
        except MCPError:
            pass  # the backend's answer changes nothing: nobody is subscribed here any more

    def _refused(self, uri: str, error: MCPError) -> None:
        """The backend refused a subscription: its waiters get the error, and nobody keeps it."""
        self._settle(uri, error)
        self.owner.drop_target(Target(self.name, uri))


def _link_error(backend: str, exc: BaseException, timeout: float) -> BaseException:
    """What a first subscriber waiting on a broken link is told."""
    mapped = map_error(backend, exc, timeout)
    return mapped if isinstance(mapped, MCPError | AggregatorError) else backend_failed(backend, "connection_closed")


def _event(exposed: str) -> bytes:
    return GetStreams.event(
        types.JSONRPCNotification(jsonrpc="2.0", method="notifications/resources/updated", params={"uri": exposed})
    )


class ResourceSubscriptions:
    """Every client's resource subscriptions and every backend link; see the module docstring."""

    def __init__(
        self,
        catalog: Callable[[], MergedCatalog],
        upstreams: Mapping[str, BackendUpstream],
        spawn: Spawn,
        bus: InMemorySubscriptionBus,
        streams: GetStreams,
        *,
        table: SubscriptionTable | None = None,
        keepalive: float = KEEPALIVE,
        send_timeout: float = SEND_TIMEOUT,
    ) -> None:
        self._catalog = catalog
        self._upstreams = upstreams
        self.spawn = spawn
        self._bus = bus
        self._streams = streams
        self.table = table if table is not None else SubscriptionTable()
        self.keepalive = keepalive
        self.send_timeout = send_timeout
        self._links: dict[str, _Link] = {}
        self._routable: dict[str, bool] = {}
        self._sinks: dict[str, ServerSession | None] = {}  # subscriber -> legacy session (None: a listen stream)
        self._outboxes: dict[str, _Outbox] = {}
        self._gauge = metrics.RESOURCE_SUBSCRIPTIONS

    # -- clients --------------------------------------------------------------------------------

    async def subscribe(self, subscriber: str, exposed: str, sink: ServerSession | None) -> None:
        """Subscribe `subscriber` (a legacy session with its `sink`, or a listen stream: None) to `exposed`."""
        if len(exposed) > MAX_URI_CHARS:
            raise caller_error(
                "invalid_uri", types.INVALID_PARAMS, f"a URI to subscribe to has at most {MAX_URI_CHARS} characters"
            )
        catalog = self._catalog()
        route = catalog.route("resources", exposed)
        if route is None:
            owner = catalog.unavailable_owner("resources", exposed)
            if owner is not None:
                raise from_unavailable(owner)
            raise caller_error("not_found", RESOURCE_NOT_FOUND, "Resource not found", {"uri": exposed})
        target = Target(route.backend, route.original)
        try:
            _, orphan = self.table.subscribe(subscriber, exposed, target)
        except SubscriptionLimit as exc:
            raise caller_error("subscription_limit", types.INVALID_REQUEST, str(exc), {"uri": exposed}) from None
        self._sinks[subscriber] = sink
        if orphan is not None:
            self._changed(orphan.backend)
        self._publish_size()
        link = self._link(route.backend)
        confirmation = link.confirmation(target.uri)
        if confirmation is None:
            return
        try:
            await asyncio.shield(confirmation)
        except BaseException:
            if self.table.uris(subscriber).get(exposed) == target:
                self.unsubscribe(subscriber, exposed)
            raise

    def unsubscribe(self, subscriber: str, exposed: str) -> None:
        orphan = self.table.unsubscribe(subscriber, exposed)
        if not self.table.uris(subscriber):
            self._forget_subscriber(subscriber)
        if orphan is not None:
            self._changed(orphan.backend)
        self._publish_size()

    def drop_subscriber(self, subscriber: str) -> None:
        """The session ended or the listen stream closed."""
        for orphan in self.table.drop_subscriber(subscriber):
            self._changed(orphan.backend)
        self._forget_subscriber(subscriber)
        self._publish_size()

    def _forget_subscriber(self, subscriber: str) -> None:
        self._sinks.pop(subscriber, None)
        box = self._outboxes.pop(subscriber, None)
        if box is not None and box.task is not None:
            box.task.cancel()

    def drop_target(self, target: Target) -> None:
        for subscriber, exposed in self.table.subscribers(target):
            self.table.unsubscribe(subscriber, exposed)
            if not self.table.uris(subscriber):
                self._forget_subscriber(subscriber)
        self._publish_size()

    # -- the view -------------------------------------------------------------------------------

    def apply_view(self, backends: Mapping[str, BackendStatus | None]) -> None:
        """A new view: links follow their backend's routability; a backend gone from the view ends its
        subscriptions."""
        for name in self._upstreams:
            status = backends.get(name)
            routable = status is not None and status.routable
            self._routable[name] = routable
            link = self._links.get(name)
            if status is None:
                affected = {s for t in self.table.targets(name) for s, _ in self.table.subscribers(t)}
                dropped = self.table.drop_backend(name)
                for subscriber in affected:
                    if not self.table.uris(subscriber):
                        self._forget_subscriber(subscriber)
                if link is not None:
                    link.close(abandon=True)
                if dropped:
                    log.info("resource subscriptions ended: backend removed", extra={"backend": name})
                continue
            if link is not None and link.routable != routable:
                link.routable = routable
                if not routable:
                    owner = next((u for u in self._catalog().unavailable if u.backend == name), None)
                    link.fail_waiting(
                        from_unavailable(owner) if owner is not None else backend_failed(name, "connection_closed")
                    )
                link.wake.set()
        self._publish_size()

    # -- backends -------------------------------------------------------------------------------

    async def updated(self, backend: str, uri: str) -> None:
        """A backend said `uri` changed: every subscriber of that target hears it."""
        modern: set[str] = set()
        events: dict[str, bytes] = {}
        sent = dropped = 0
        for subscriber, exposed in self.table.subscribers(Target(backend, uri)):
            if self._sinks.get(subscriber) is None:
                modern.add(exposed)
                continue
            if subscriber not in self._outboxes:
                event = events.get(exposed)
                if event is None:
                    event = events[exposed] = _event(exposed)
                offered = self._streams.offer(subscriber, event)
                if offered is not False:
                    sent += offered is True
                    dropped += offered is None
                    continue
            self._queue(subscriber, exposed)  # a full queue, or a backlog already: the outbox keeps the order
        if sent:
            metrics.RESOURCE_UPDATES.labels(family="legacy", result="sent").inc(sent)
        if dropped:
            metrics.RESOURCE_UPDATES.labels(family="legacy", result="dropped").inc(dropped)
        for exposed in sorted(modern):
            await self._bus.publish(ResourceUpdated(uri=exposed))
            metrics.RESOURCE_UPDATES.labels(family="modern", result="published").inc()

    async def resumed(self, backend: str) -> None:
        """The link came back after a break: whatever changed meanwhile was not heard; tell every subscriber."""
        for target in self.table.targets(backend):
            await self.updated(backend, target.uri)

    def _queue(self, subscriber: str, exposed: str) -> None:
        box = self._outboxes.get(subscriber)
        if box is None:
            box = self._outboxes[subscriber] = _Outbox()
        box.pending[exposed] = None  # within the session's subscriptions: bounded by them
        if box.task is None:
            box.task = self.spawn(self._drain(subscriber, box))

    async def _drain(self, subscriber: str, box: _Outbox) -> None:
        try:
            while box.pending:
                uri = next(iter(box.pending))
                del box.pending[uri]
                try:
                    async with asyncio.timeout(self.send_timeout):
                        delivered = await self._streams.put(subscriber, _event(uri))
                except Exception:  # timed out, or the stream went: this one is lost, the session goes on
                    delivered = False
                result = "sent" if delivered else "dropped"
                metrics.RESOURCE_UPDATES.labels(family="legacy", result=result).inc()
        finally:
            box.task = None
            if not box.pending and self._outboxes.get(subscriber) is box:
                del self._outboxes[subscriber]

    # -- links ----------------------------------------------------------------------------------

    def _link(self, backend: str) -> _Link:
        link = self._links.get(backend)
        if link is None or link.closed:
            link = _Link(self, self._upstreams[backend], self._routable.get(backend, True))
            self._links[backend] = link
            link.task = self.spawn(link.run())
        return link

    def _changed(self, backend: str) -> None:
        link = self._links.get(backend)
        if link is not None:
            link.wake.set()

    def _forget(self, link: _Link) -> None:
        if self._links.get(link.name) is link:
            del self._links[link.name]

    def _publish_size(self) -> None:
        self._gauge.set(len(self.table))

    def links(self) -> dict[str, set[str]]:
        """Backend -> URIs subscribed upstream now (tests, /healthz)."""
        return {name: set(link.active) for name, link in self._links.items()}

    async def aclose(self) -> None:
        tasks = [link.task for link in self._links.values() if link.task is not None]
        for link in list(self._links.values()):
            link.close(abandon=False)
        for box in self._outboxes.values():
            if box.task is not None:
                box.task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
