"""The aggregator's MCP server: the SDK's low-level `Server` with handlers over the `Gateway`.

One `Server` serves both protocol families on the same endpoint (the SDK's
streamable-HTTP manager routes each request by its `MCP-Protocol-Version`):

* legacy clients (initialize, `Mcp-Session-Id`, ping) are told
  `listChanged: true` for tools, resources and prompts (the HTTP manager
  calls `create_initialization_options()` without notification options, so
  the server supplies them itself) and hear list changes on their session;
* modern clients (2026-07-28: server/discover, no session) open
  `subscriptions/listen`, served by the SDK's `ListenHandler` over the
  aggregator's subscription bus.

Resource subscriptions (resource_updates.py): legacy clients send
`resources/subscribe` / `resources/unsubscribe` on their session; modern
clients name URIs in `subscriptions/listen`, and the acknowledgement honors
exactly the URIs the gateway subscribed (routable, within the bounds). Both
families are told `resources.subscribe: true`.

Legacy clients are also served `logging/setLevel` (kept per session and sent
to its backend sessions) and `notifications/roots/list_changed` (passed to its
backend sessions); each call of a client that answers server-to-client
requests carries a `Caller` (relay.py), so a backend's requests reach it.

Server middleware, outermost first: an HTTP `traceparent` header stands in
for a missing `_meta.traceparent` (tracing.py); the SDK's span; the SDK's
session object of a legacy session handed to the session table (for
notifications and the endpoint's answers); the aggregator's own errors turned
into the SDK's (sdk_compat.py). The endpoint (endpoint.py) runs the same chain
around the requests it answers itself while spans are exported.
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Callable
from typing import Any

import mcp_types as types
from mcp.server import NotificationOptions, Server, ServerRequestContext
from mcp.server.caching import CacheHint
from mcp.server.context import CallNext, HandlerResult
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel

from xds_control.aggregator import metrics
from xds_control.aggregator.access import principal_of
from xds_control.aggregator.gateway import RESOURCE_NOT_FOUND, Gateway
from xds_control.aggregator.relay import Caller, offer
from xds_control.aggregator.resource_updates import ResourceSubscriptions
from xds_control.aggregator.rpc_errors import caller_error
from xds_control.aggregator.sdk_compat import errors_to_sdk
from xds_control.aggregator.sessions import SessionTable
from xds_control.aggregator.tracing import TraceHeaderMiddleware, exporting, passthrough
from xds_control.aggregator.upstream import ProgressFn
from xds_control.errors import AggregatorError

SERVER_NAME = "xds-control"
INSTRUCTIONS = "One MCP endpoint for the tools, resources and prompts of every healthy backend behind this gateway."
_LIST_HINT = CacheHint(ttl_ms=0, scope="public")  # the same for every caller; changes are announced


class _AggregatorServer(Server[Any]):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        with warnings.catch_warnings():  # logging/setLevel and roots: deprecated at 2026-07-28, the legacy family's
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            super().__init__(*args, **kwargs)

    def create_initialization_options(
        self, notification_options: NotificationOptions | None = None, *args: Any, **kwargs: Any
    ) -> Any:
        options = notification_options or NotificationOptions(
            prompts_changed=True, resources_changed=True, tools_changed=True
        )
        return super().create_initialization_options(options, *args, **kwargs)


class _CountingListenHandler(ListenHandler):
    """The SDK's handler, counting open listen streams (the modern family's "sessions").

    The stream's resource subscriptions go through the gateway's (one subscriber per stream,
    ended with it); the acknowledgement honors only the URIs subscribed upstream, the first
    `max_per_subscriber` at most. List-change kinds are honored as they come.
    """

    def __init__(self, bus: InMemorySubscriptionBus, subscriptions: ResourceSubscriptions) -> None:
        super().__init__(bus)
        self._subscriptions = subscriptions
        self._ids = itertools.count(1)

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        subscriber = f"listen:{next(self._ids)}"
        wanted = params.notifications.resource_subscriptions
        try:
            if wanted:
                honored: list[str] = []
                grant = principal_of(ctx.request).grant
                for uri in dict.fromkeys(wanted[: self._subscriptions.table.max_per_subscriber]):
                    if not grant.allows("resources", uri):
                        continue  # not the principal's to see: left out like an unknown URI
                    try:
                        await self._subscriptions.subscribe(subscriber, uri, None)
                    except (AggregatorError, MCPError):
                        continue  # not honored: the acknowledgement leaves it out
                    honored.append(uri)
                notifications = params.notifications.model_copy(update={"resource_subscriptions": honored or None})
                params = params.model_copy(update={"notifications": notifications})
            gauge = metrics.SESSIONS.labels(family="modern")
            gauge.inc()
            try:
                return await super().__call__(ctx, params)
            finally:
                gauge.dec()
        finally:
            self._subscriptions.drop_subscriber(subscriber)


def client_key(ctx: ServerRequestContext[Any, Any]) -> str | None:
    """The legacy client's session id (None for modern clients, which have none)."""
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS or ctx.request is None:
        return None
    return ctx.request.headers.get("mcp-session-id")


def caller_of(ctx: ServerRequestContext[Any, Any]) -> Caller | None:
    """The legacy client request being served, when its client answers server-to-client requests (relay.py):
    a backend's requests ride its stream, or the session's standalone stream when its answer is one JSON body."""
    key = client_key(ctx)
    if key is None:
        return None
    offered = offer(ctx.session.client_capabilities)
    if not offered.anything:
        return None
    request_id = ctx.request_id if ctx.session.can_send_request else None
    return Caller(key, request_id, ctx.session, offered, started=time.monotonic())


def progress_of(ctx: ServerRequestContext[Any, Any], params: types.RequestParams) -> ProgressFn | None:
    """Forward the backend's progress to the client, if the client asked for progress."""
    if params.meta is None or params.meta.get("progress_token") is None:
        return None
    return ctx.session.report_progress


def _complete_params(params: types.CompleteRequestParams) -> Callable[[str], dict[str, Any]]:
    def build(original: str) -> dict[str, Any]:
        data = wire(params)
        data["ref"]["name" if data["ref"].get("type") == "ref/prompt" else "uri"] = original
        data.pop("_meta", None)
        return data

    return build


def wire(params: BaseModel) -> dict[str, Any]:
    return params.model_dump(by_alias=True, mode="json", exclude_none=True)


def trace_context(ctx: ServerRequestContext[Any, Any]) -> dict[str, str] | None:
    """The client's trace context to forward as it came, when this process exports no spans (tracing.passthrough)."""
    if exporting():
        return None
    return passthrough(ctx.meta, ctx.request.headers if ctx.request is not None else None)  # type: ignore[arg-type]


def build_server(
    gateway: Gateway, sessions: SessionTable, bus: InMemorySubscriptionBus, subscriptions: ResourceSubscriptions
) -> Server[Any]:
    def cursor(params: types.PaginatedRequestParams | None) -> str | None:
        return params.cursor if params is not None else None

    async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> Any:
        return gateway.list_page("tools", cursor(params), principal=principal_of(ctx.request))

    async def list_resources(ctx: Any, params: types.PaginatedRequestParams | None) -> Any:
        return gateway.list_page("resources", cursor(params), principal=principal_of(ctx.request))

    async def list_templates(ctx: Any, params: types.PaginatedRequestParams | None) -> Any:
        return gateway.list_page("resource_templates", cursor(params), principal=principal_of(ctx.request))

    async def list_prompts(ctx: Any, params: types.PaginatedRequestParams | None) -> Any:
        return gateway.list_page("prompts", cursor(params), principal=principal_of(ctx.request))

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> Any:
        return await gateway.call(
            "tools/call", "tools", params.name, wire(params), client_key=client_key(ctx), progress=progress_of(ctx, params), caller=caller_of(ctx), principal=principal_of(ctx.request),
            arguments=params.arguments, trace_context=trace_context(ctx),
        )  # fmt: skip

    async def read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> Any:
        return await gateway.call(
            "resources/read", "resources", str(params.uri), wire(params), client_key=client_key(ctx), progress=progress_of(ctx, params), caller=caller_of(ctx), principal=principal_of(ctx.request),
            trace_context=trace_context(ctx),
        )  # fmt: skip

    async def get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> Any:
        return await gateway.call(
            "prompts/get", "prompts", params.name, wire(params), client_key=client_key(ctx), progress=progress_of(ctx, params), caller=caller_of(ctx), principal=principal_of(ctx.request),
            trace_context=trace_context(ctx),
        )  # fmt: skip

    async def complete(ctx: Any, params: types.CompleteRequestParams) -> Any:
        ref = params.ref
        kind, key = ("prompts", ref.name) if isinstance(ref, types.PromptReference) else ("resource_templates", ref.uri)
        return await gateway.call(
            "completion/complete",
            kind,
            key,
            wire(params),
            client_key=client_key(ctx),
            backend_params=_complete_params(params),
            caller=caller_of(ctx),
            principal=principal_of(ctx.request),
        )

    async def subscribe_resource(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        session_id = client_key(ctx)
        if session_id is None:
            raise MCPError(types.INVALID_REQUEST, "resources/subscribe needs a session; use subscriptions/listen")
        if not principal_of(ctx.request).grant.allows("resources", str(params.uri)):  # refused like an unknown URI
            raise caller_error("not_found", RESOURCE_NOT_FOUND, "Resource not found", {"uri": str(params.uri)})
        await subscriptions.subscribe(session_id, str(params.uri), ctx.session)
        return types.EmptyResult()

    async def unsubscribe_resource(ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        session_id = client_key(ctx)
        if session_id is not None:
            subscriptions.unsubscribe(session_id, str(params.uri))
        return types.EmptyResult()

    async def set_level(ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
        key = client_key(ctx)
        if key:
            await gateway.set_log_level(key, params.level)
        return types.EmptyResult()

    async def roots_changed(ctx: Any, params: Any) -> None:
        key = client_key(ctx)
        if key:
            await gateway.roots_changed(key)

    async def track_sessions(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        session_id = client_key(ctx)
        if session_id:
            sessions.attach(session_id, ctx.session)
        return await call_next(ctx)

    server = _AggregatorServer(
        SERVER_NAME,
        version="0.1.0",
        instructions=INSTRUCTIONS,
        cache_hints={
            "tools/list": _LIST_HINT,
            "resources/list": _LIST_HINT,
            "resources/templates/list": _LIST_HINT,
            "prompts/list": _LIST_HINT,
            "resources/read": CacheHint(ttl_ms=0, scope="private"),
        },
        get_tool_input_schema=lambda name: gateway.tool_schema(name),
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_templates,
        on_read_resource=read_resource,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
        on_completion=complete,
        on_subscribe_resource=subscribe_resource,
        on_unsubscribe_resource=unsubscribe_resource,
        on_subscriptions_listen=_CountingListenHandler(bus, subscriptions),
        on_set_logging_level=set_level,
        on_roots_list_changed=roots_changed,
    )
    server.middleware.insert(0, TraceHeaderMiddleware())  # outermost: before the SDK's span middleware reads `_meta`
    server.middleware.append(track_sessions)
    server.middleware.append(errors_to_sdk)  # innermost: the SDK's span and wire mapping see the SDK's error type
    return server
