"""Calls to one backend, the aggregator's one upstream interface: both families, error mapping, auth retry.

Per backend there is one `BackendUpstream`: one `BackendHttp` (its own pool,
the one answer mapping; backend_http.py), one `Credential`, one `AuthBreaker`,
and:

* a *legacy* backend (2024-11-05 .. 2025-11-25) gets one MCP session per
  client session, opened lazily on that client's first call (the modern
  clients, which have no session, share one) and closed with the client
  session, after `idle_timeout` unused, or when `max_sessions` would be
  exceeded (least recently used first);
  These are SDK `ClientSession`s over the httpx2 adapter of the same
  `BackendHttp` (sdk_transport.py);
* a *modern* backend (2026-07-28) needs no session: each request is one
  plain JSON-RPC POST on the `BackendHttp` (modern_request.py), without the
  SDK client.

Each `ClientSession` lives in its own task (the SDK's context managers are
bound to the task that enters them) owned by the aggregator's task group.

Errors: a backend's own JSON-RPC error is re-raised unchanged; what the HTTP
edge synthesized becomes a `GatewayError` (rpc_errors); a request timeout
becomes BACKEND_TIMEOUT; a result that does not match the MCP schema becomes
BACKEND_FAILED/protocol_error. A session the backend no longer knows (404) is
reopened and the request sent once more (the backend never processed it).
Such a session, one whose connection died, and every session of a backend
that turned unroutable are abandoned: closed without the DELETE that ends an
MCP session (sdk_transport.abandon_session_in_this_task says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Literal

import anyio
import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, TypeAdapter, ValidationError

from xds_control.aggregator import metrics, modern_request
from xds_control.aggregator.auth import AuthBreaker, Credential, with_auth_retry
from xds_control.aggregator.backchannel import Backchannel
from xds_control.aggregator.backend_http import BackendHttp
from xds_control.aggregator.backend_listen import ListenWatch
from xds_control.aggregator.relay import NOTHING, Caller, LoggingLevel
from xds_control.aggregator.rpc_errors import GatewayError, backend_failed, backend_timeout, caller_error
from xds_control.aggregator.sdk_transport import abandon_session_in_this_task, sdk_client
from xds_control.aggregator.upstream_answers import (
    DEFAULT_MAX_RESPONSE_BYTES,
    EDGE_MARKER,
    SESSION_EXPIRED,
    failure_category,
)
from xds_control.config import BackendConfig, Config
from xds_control.errors import WireError
from xds_control.telemetry.trace_context import CARRIER_KEYS
from xds_control.view import BackendStatus

log = logging.getLogger(__name__)

Family = Literal["legacy", "modern"]
UpstreamUrl = Callable[[BackendConfig], str]
Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]
ProgressFn = Callable[[float, float | None, str | None], Awaitable[None]]
_RAW = TypeAdapter(dict[str, Any])
_SERVER_INFO_META = "io.modelcontextprotocol/serverInfo"
_RESERVED_META_PREFIX = "io.modelcontextprotocol/"
_NOT_FORWARDED_META = frozenset({"progressToken", *CARRIER_KEYS})
CLIENT_INFO = types.Implementation(name="xds-control-aggregator", version="0.1.0")
SHARED = ""  # the session key of callers without a client session (modern clients)

_REQUESTS: Mapping[str, type[BaseModel]] = {
    "tools/call": types.CallToolRequest,
    "resources/read": types.ReadResourceRequest,
    "prompts/get": types.GetPromptRequest,
    "completion/complete": types.CompleteRequest,
}


def egress_upstream_url(config: Config) -> UpstreamUrl:
    """Backends through Envoy's egress listener, where the aggregator dials it (`Config.egress_url`:
    `aggregator.egress_address`, else the listener's own address)."""
    return lambda backend: config.egress_url(backend.name)


def direct_upstream_url(backend: BackendConfig) -> str:
    """Straight to the backend's first endpoint (tests before Envoy is wired)."""
    return backend.endpoint_urls[0].url


def family_of(backend: BackendConfig, status: BackendStatus | None) -> Family:
    if backend.protocol != "auto":
        return backend.protocol
    version = status.catalog.protocol_version if status is not None and status.catalog is not None else ""
    return "modern" if version in MODERN_PROTOCOL_VERSIONS else "legacy"


_NO_CALL = contextlib.nullcontext()


class _SessionExpired(Exception):
    """The backend answered 404 for our session id: it restarted or expired us; the request was not processed."""


def unwrap(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member exception groups (anyio's task groups wrap them)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def map_error(backend: str, exc: BaseException, timeout: float | None) -> BaseException:
    """What a failed upstream request raises towards the client (see the module docstring)."""
    exc = unwrap(exc)
    if isinstance(exc, GatewayError | _SessionExpired):
        return exc
    if isinstance(exc, MCPError):
        data = exc.data if isinstance(exc.data, dict) else None
        if data is not None and data.get(EDGE_MARKER):
            category = str(data.get("category", "transport_error"))
            if category == SESSION_EXPIRED:
                return _SessionExpired()
            status = data.get("status")
            return backend_failed(backend, category, status=status if isinstance(status, int) else None)
        if exc.code == types.REQUEST_TIMEOUT:
            return backend_timeout(backend, timeout or 0.0)
        if exc.code == types.CONNECTION_CLOSED:
            return backend_failed(backend, "connection_closed")
        if exc.code == types.PARSE_ERROR and exc.message.startswith("Failed to parse"):
            return backend_failed(backend, "protocol_error", detail="the response is not JSON-RPC")
        return exc
    if isinstance(exc, ValidationError):
        return backend_failed(backend, "protocol_error", detail="the result does not match the MCP schema")
    if isinstance(exc, WireError):
        return backend_failed(backend, exc.category, detail=exc.detail if exc.category == "protocol_error" else "")
    if isinstance(exc, TimeoutError):
        return backend_timeout(backend, timeout or 0.0)
    if (cut := failure_category(exc, reading=True)) is not None:  # a streamed answer cut short
        return backend_failed(backend, cut)
    if isinstance(exc, Exception):
        log.warning("unexpected error calling backend", extra={"backend": backend, "error": type(exc).__name__})
        return backend_failed(backend, "transport_error")
    return exc


def map_post_error(backend: str, exc: BaseException, timeout: float | None) -> BaseException:
    """`map_error` for a plain POST (modern_request): no SDK client stands between, so every JSON-RPC error
    not synthesized by the HTTP edge is the backend's own, passed on unchanged whatever its code."""
    if isinstance(exc, MCPError) and not (isinstance(exc.data, dict) and exc.data.get(EDGE_MARKER)):
        return exc
    return map_error(backend, exc, timeout)


def clean_params(
    params: Mapping[str, Any], original: str | None, *, trace_context: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The client's params (wire JSON) for the backend: its own name/URI, `_meta` without reserved and progress
    keys and without the client's trace context; `trace_context`, when given, is forwarded in its place (when
    spans are exported the aggregator's own context is injected further down instead, a child in the same trace)."""
    data = dict(params)
    if original is not None:
        data["uri" if "uri" in data else "name"] = original
    meta = {
        k: v
        for k, v in (data.pop("_meta", None) or {}).items()
        if k not in _NOT_FORWARDED_META and not k.startswith(_RESERVED_META_PREFIX)
    }
    if trace_context:
        meta.update(trace_context)
    if meta:
        data["_meta"] = meta
    return data


def clean_result(raw: dict[str, Any]) -> dict[str, Any]:
    """A backend result as the aggregator's own: no backend serverInfo stamp, a resultType for modern clients."""
    meta = raw.get("_meta")
    if isinstance(meta, dict) and _SERVER_INFO_META in meta:
        raw["_meta"] = {k: v for k, v in meta.items() if k != _SERVER_INFO_META} or None
        if raw["_meta"] is None:
            del raw["_meta"]
    raw.setdefault("resultType", "complete")
    return raw


class _Session:
    """One SDK `ClientSession` to a backend, run by its own task until `close()`."""

    def __init__(
        self,
        owner: BackendUpstream,
        key: str,
        family: Family,
        clock: Callable[[], float],
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.owner = owner
        self.key = key
        self.family = family
        self.options = dict(options or {})  # the ClientSession's callbacks (backchannel.py)
        self.ready: asyncio.Future[ClientSession] = asyncio.get_running_loop().create_future()
        self.ready.add_done_callback(retrieved)
        self.last_used = clock()
        self._closing = asyncio.Event()
        self._abandoned = False
        self.task: asyncio.Task[None] | None = None

    @property
    def usable(self) -> bool:
        return not self._closing.is_set() and (self.task is None or not self.task.done())

    def close(self, *, abandon: bool = False) -> None:
        self._abandoned = self._abandoned or abandon
        self._closing.set()

    async def run(self) -> None:
        owner = self.owner
        try:
            async with streamable_http_client(
                owner.url,
                http_client=owner.sdk_client,
                terminate_on_close=True,
                max_sse_event_size=owner.max_response_bytes,
            ) as (read, write):
                async with ClientSession(read, write, client_info=CLIENT_INFO, **self.options) as session:
                    if self.family == "legacy":
                        with anyio.fail_after(owner.open_timeout):
                            await session.initialize()
                            if (level := owner.log_level(self.key)) is not None:
                                await _set_level(session, level)
                    else:
                        session.adopt(owner.discover_result())
                    self.ready.set_result(session)
                    await self._closing.wait()
                    if self._abandoned:
                        abandon_session_in_this_task()
        except Exception as exc:
            if not self.ready.done():
                self.ready.set_exception(map_error(owner.name, exc, owner.open_timeout))
        finally:
            if not self.ready.done():
                self.ready.set_exception(backend_failed(owner.name, "connection_closed"))
            owner._forget(self)


async def _set_level(session: ClientSession, level: LoggingLevel) -> None:
    """`logging/setLevel` on a backend session whose backend declared logging; a refusal is not an error."""
    capabilities = session.server_capabilities
    if capabilities is None or capabilities.logging is None:
        return
    request = types.SetLevelRequest(params=types.SetLevelRequestParams(level=level))
    try:
        await session.send_request(request, types.EmptyResult)  # type: ignore[arg-type]
    except MCPError:
        pass


def retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a session's outcome as seen even when every waiter was cancelled (no "never retrieved" noise)."""
    if not future.cancelled():
        future.exception()


class BackendUpstream:
    """Everything the aggregator holds for calling one backend; see the module docstring."""

    def __init__(
        self,
        backend: BackendConfig,
        url: str,
        spawn: Spawn,
        *,
        call_timeout: float,
        max_sessions: int = 512,
        idle_timeout: float = 300.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        clock: Callable[[], float] = time.monotonic,
        backchannel: Backchannel | None = None,
    ) -> None:
        self.name = backend.name
        self.backchannel = backchannel
        self.config = backend
        self.url = url
        self._spawn = spawn
        self.call_timeout = call_timeout
        self.open_timeout = min(call_timeout, 30.0)
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.max_response_bytes = max_response_bytes
        self._clock = clock
        self.credential = Credential(backend.auth)
        self.breaker = AuthBreaker()
        self.http = BackendHttp(backend.name, headers=self.credential.header, max_response_bytes=max_response_bytes)
        self.sdk_client = sdk_client(self.http)
        self.family: Family = family_of(backend, None)
        self.modern_version = sorted(MODERN_PROTOCOL_VERSIONS)[-1]
        self._status: BackendStatus | None = None
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._gauge = metrics.UPSTREAM_SESSIONS.labels(backend=backend.name)
        self.listen: ListenWatch | None = None
        self.listen_task: asyncio.Task[None] | None = None

    # -- view ---------------------------------------------------------------------------------

    def update(self, status: BackendStatus | None) -> None:
        """A new view of this backend: sessions are dropped when it turns unroutable or changes family."""
        self._status = status
        family = family_of(self.config, status)
        if status is None or not status.routable:
            self.close_all(abandon=True)  # Envoy would answer each DELETE 503
        elif family != self.family:
            self.close_all()
        self.family = family
        self.modern_version = self.discover_result().supported_versions[0]
        self._watch_lists(status is not None and status.routable)

    def _watch_lists(self, routable: bool) -> None:
        """A routable modern backend that announces list changes gets a listen stream (backend_listen.py)."""
        capabilities = self.discover_result().capabilities
        announces = any(
            c is not None and c.list_changed for c in (capabilities.tools, capabilities.prompts, capabilities.resources)
        )
        backchannel = self.backchannel
        wanted = (
            routable
            and self.family == "modern"
            and announces
            and backchannel is not None
            and backchannel.refresh is not None
        )
        if wanted and self.listen_task is None and backchannel is not None:
            self.listen = ListenWatch(
                self.http, self.url, lambda: self.modern_version, lambda: backchannel.list_changed(self.name),
                self.max_response_bytes,
            )  # fmt: skip
            try:
                self.listen_task = self._spawn(self.listen.run())
            except RuntimeError:  # not running (a view applied before the aggregator started)
                self.listen = None
        elif not wanted and self.listen_task is not None:
            self.listen_task.cancel()
            self.listen_task = self.listen = None

    def discover_result(self) -> types.DiscoverResult:
        catalog = self._status.catalog if self._status is not None else None
        version = (
            catalog.protocol_version
            if catalog is not None and catalog.protocol_version in MODERN_PROTOCOL_VERSIONS
            else None
        )
        try:
            capabilities = types.ServerCapabilities.model_validate(dict(catalog.capabilities) if catalog else {})
        except ValidationError:
            capabilities = types.ServerCapabilities()
        return types.DiscoverResult(
            supported_versions=[version or sorted(MODERN_PROTOCOL_VERSIONS)[-1]],
            capabilities=capabilities,
            ttl_ms=0,
            cache_scope="private",
        )

    # -- calls --------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        params: Mapping[str, Any],
        *,
        client_key: str | None,
        progress: ProgressFn | None = None,
        param_headers: Mapping[str, str] | None = None,
        caller: Caller | None = None,
    ) -> dict[str, Any]:
        """Send `method` with the client's (already renamed) params, as wire JSON; returns the raw result dict.
        `param_headers` (the `Mcp-Param-*` of a tools/call) go to modern backends only: the legacy protocol has none.
        `caller`: the client request served (legacy sessions: where the backend's own requests go, backchannel.py)."""
        if self.family == "modern":

            async def post(extra: Mapping[str, Any]) -> dict[str, Any]:
                sent = {**params, **extra}
                return await with_auth_retry(
                    self.name, self.credential, self.breaker, lambda: self._post(method, sent, progress, param_headers)
                )

            raw = await post({})
            if raw.get("resultType") == "input_required" and client_key is not None:  # a legacy client
                if caller is None or self.backchannel is None:
                    raise caller_error(
                        "input_unavailable", types.INVALID_REQUEST,
                        f"Backend {self.name} asks for input (sampling, elicitation or roots) this client did not "
                        "declare it can give",
                        {"backend": self.name},
                    )  # fmt: skip
                raw = await self.backchannel.input_required(raw, caller, post)
            return raw
        request = _REQUESTS[method].model_validate({"method": method, "params": params}, by_name=False)
        key = client_key or SHARED
        return await with_auth_retry(
            self.name,
            self.credential,
            self.breaker,
            lambda: self._booked(key, caller, self._attempt(request, key, progress, caller)),
        )

    async def _booked(self, key: str, caller: Caller | None, attempt: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        """The call is booked (backchannel.py) before its session opens: a backend may ask while it initializes."""
        with self._calling(key, caller):
            return await attempt

    async def _post(
        self,
        method: str,
        params: Mapping[str, Any],
        progress: ProgressFn | None,
        param_headers: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        """One request to a modern backend (modern_request), within the call deadline."""
        try:
            async with asyncio.timeout(self.call_timeout):
                raw = await modern_request.request(
                    self.http,
                    self.url,
                    self.modern_version,
                    method,
                    params,
                    progress=progress,
                    max_event_bytes=self.max_response_bytes,
                    param_headers=param_headers,
                )
        except Exception as exc:
            raise map_post_error(self.name, exc, self.call_timeout) from None
        return clean_result(raw)

    async def _attempt(
        self, request: BaseModel, key: str, progress: ProgressFn | None, caller: Caller | None
    ) -> dict[str, Any]:
        for last in (False, True):
            session = await self._session(key, caller)
            try:
                raw = await session.send_request(
                    request,  # type: ignore[arg-type]
                    _RAW,  # type: ignore[arg-type]
                    request_read_timeout_seconds=self.call_timeout,
                    progress_callback=progress,
                )
                return clean_result(raw)
            except Exception as exc:
                mapped = map_error(self.name, exc, self.call_timeout)
            if isinstance(mapped, _SessionExpired):
                self._drop(key, abandon=True)
                if last:
                    raise backend_failed(self.name, "session_expired")
                continue
            if isinstance(mapped, GatewayError) and (mapped.data or {}).get("category") == "connection_closed":
                self._drop(key, abandon=True)
            raise mapped
        raise AssertionError("unreachable")

    def _calling(self, key: str, caller: Caller | None) -> Any:
        return self.backchannel.calling((self.name, key), caller) if self.backchannel is not None else _NO_CALL

    def log_level(self, key: str) -> LoggingLevel | None:
        return self.backchannel.levels.get(key) if self.backchannel is not None and key else None

    async def set_log_level(self, key: str, level: LoggingLevel) -> None:
        """A client set its log level: so do its open backend session (new ones get it when they open)."""
        entry = self._sessions.get(key)
        if entry is None or entry.family != "legacy" or not entry.ready.done() or entry.ready.exception():
            return
        await _set_level(entry.ready.result(), level)

    async def roots_changed(self, key: str) -> None:
        """The client's roots changed: tell its open backend session (new ones ask when they need them)."""
        entry = self._sessions.get(key)
        if entry is None or not entry.ready.done() or entry.ready.exception():
            return
        await entry.ready.result().send_notification(types.RootsListChangedNotification())  # type: ignore[arg-type]

    async def _session(self, key: str, caller: Caller | None = None) -> ClientSession:
        entry = self._sessions.get(key)
        if entry is not None and not entry.usable:
            self._drop(key)
            entry = None
        if entry is None:
            options = None
            if self.backchannel is not None:  # a modern backend session (no SDK requests back) or a legacy one
                offered = caller.offer if caller is not None and key != SHARED else NOTHING
                options = self.backchannel.session_options(self.name, key, offered)
            entry = _Session(self, key, self.family, self._clock, options)
            self._sessions[key] = entry
            entry.task = self._spawn(entry.run())
            self._gauge.set(len(self._sessions))
            self._evict_over_limit()
        self._sessions.move_to_end(key)
        entry.last_used = self._clock()
        try:
            return await asyncio.shield(entry.ready)
        except BaseException:
            if entry.ready.done() and not entry.ready.cancelled() and entry.ready.exception() is not None:
                self._drop(key, entry)
            raise

    # -- session bookkeeping ------------------------------------------------------------------

    def _drop(self, key: str, entry: _Session | None = None, *, abandon: bool = False) -> None:
        current = self._sessions.get(key)
        if current is not None and (entry is None or current is entry):
            del self._sessions[key]
            current.close(abandon=abandon)
            self._gauge.set(len(self._sessions))

    def _forget(self, entry: _Session) -> None:
        self._drop(entry.key, entry)

    def _evict_over_limit(self) -> None:
        while len(self._sessions) > self.max_sessions:
            key = next(iter(self._sessions))
            self._drop(key)

    def close_client(self, client_key: str) -> None:
        """The client session ended: close its backend session."""
        self._drop(client_key)

    def sweep(self) -> int:
        """Close sessions unused for `idle_timeout`; returns how many."""
        cutoff = self._clock() - self.idle_timeout
        idle = [k for k, s in self._sessions.items() if s.last_used < cutoff]
        for key in idle:
            self._drop(key)
        return len(idle)

    def close_all(self, *, abandon: bool = False) -> None:
        for key in list(self._sessions):
            self._drop(key, abandon=abandon)

    @property
    def open_sessions(self) -> int:
        return len(self._sessions)

    async def aclose(self) -> None:
        if self.listen_task is not None:
            self.listen_task.cancel()
        tasks = [s.task for s in self._sessions.values() if s.task is not None]
        self.close_all()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        await self.sdk_client.aclose()  # its transport closes `http`
