"""A real MCP backend (the Python SDK's low-level server) whose resources change and tell their subscribers.

    python -m tests.support.resource_backend --port PORT [--resources N] [--scheme note]

Serves both protocol families on /mcp: `note://0` .. `note://{N-1}` and the
template `note://extra/{id}` (`note` is `--scheme`). Legacy clients subscribe with
`resources/subscribe`; modern ones name URIs in `subscriptions/listen`.
`note://extra/refused` refuses subscriptions (-32600 from the backend itself).

Tools (called directly by tests, not through the gateway):

* `touch {uri}`: the resource changed: `notifications/resources/updated` to
  every legacy subscriber and a `ResourceUpdated` on the listen bus. Returns
  JSON `{"sent_at": time.monotonic(), "legacy": n}` (the monotonic clock is
  the machine's: comparable across processes).
* `whoami`: JSON `{"port": PORT, "session": the Mcp-Session-Id this process gave the caller}`.
* `subscribers {uri}`: JSON `{"legacy": n, "modern": m}`: the subscriptions
  this process holds for the URI (legacy sessions, listen streams).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import anyio
import mcp_types as types
import uvicorn
from mcp.server import Server, ServerRequestContext
from mcp.server.session import ServerSession
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ResourceUpdated
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError

Ctx = ServerRequestContext[Any, Any]


class CountingListen(ListenHandler):
    def __init__(self, bus: InMemorySubscriptionBus, counts: dict[str, int]) -> None:
        super().__init__(bus)
        self.counts = counts

    async def __call__(self, ctx: Ctx, params: types.SubscriptionsListenRequestParams) -> Any:
        uris = list(params.notifications.resource_subscriptions or ())
        if any(uri.endswith("/refused") for uri in uris):
            raise MCPError(types.INVALID_REQUEST, "this resource cannot be subscribed")
        for uri in uris:
            self.counts[uri] = self.counts.get(uri, 0) + 1
        try:
            return await super().__call__(ctx, params)
        finally:
            for uri in uris:
                self.counts[uri] -= 1


def _session_id(ctx: Ctx) -> str:
    return ctx.request.headers.get("mcp-session-id", "") if ctx.request is not None else ""


class Notes:
    def __init__(self, count: int, scheme: str, port: int) -> None:
        self.scheme = scheme
        self.port = port
        self.texts: dict[str, str] = {f"{scheme}://{i}": f"note {i}, version 0" for i in range(count)}
        self.legacy: dict[str, dict[str, ServerSession]] = {}  # uri -> Mcp-Session-Id -> session
        self.modern: dict[str, int] = {}
        self.bus = InMemorySubscriptionBus()
        self.listen = CountingListen(self.bus, self.modern)

    async def list_resources(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> Any:
        resources = [types.Resource(uri=uri, name=uri.replace("://", "-")) for uri in self.texts]
        return types.ListResourcesResult(resources=resources)

    async def list_templates(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> Any:
        template = types.ResourceTemplate(uri_template=f"{self.scheme}://extra/{{id}}", name="extra-note")
        return types.ListResourceTemplatesResult(resource_templates=[template])

    async def read_resource(self, ctx: Ctx, params: types.ReadResourceRequestParams) -> Any:
        uri = str(params.uri)
        text = self.texts.get(uri) or (f"extra {uri}" if uri.startswith(f"{self.scheme}://extra/") else None)
        if text is None:
            raise MCPError(-32002, "Resource not found", data={"uri": uri})
        return types.ReadResourceResult(contents=[types.TextResourceContents(uri=uri, text=text)])

    async def subscribe(self, ctx: Ctx, params: types.SubscribeRequestParams) -> Any:
        uri = str(params.uri)
        if uri.endswith("/refused"):
            raise MCPError(types.INVALID_REQUEST, "this resource cannot be subscribed")
        self.legacy.setdefault(uri, {})[_session_id(ctx)] = ctx.session
        return types.EmptyResult()

    async def unsubscribe(self, ctx: Ctx, params: types.UnsubscribeRequestParams) -> Any:
        self.legacy.get(str(params.uri), {}).pop(_session_id(ctx), None)
        return types.EmptyResult()

    async def list_tools(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> Any:
        schema = {"type": "object", "properties": {"uri": {"type": "string"}}, "required": ["uri"]}
        tools = [
            types.Tool(name="touch", description="Change a resource and tell its subscribers.", input_schema=schema),
            types.Tool(name="subscribers", description="Subscriptions held for a resource.", input_schema=schema),
            types.Tool(
                name="whoami", description="This process's port, the caller's session.", input_schema={"type": "object"}
            ),
        ]
        return types.ListToolsResult(tools=tools)

    async def call_tool(self, ctx: Ctx, params: types.CallToolRequestParams) -> Any:
        uri = str((params.arguments or {}).get("uri", ""))
        if params.name == "whoami":
            answer: dict[str, Any] = {"port": self.port, "session": _session_id(ctx)}
        elif params.name == "subscribers":
            answer = {"legacy": len(self.legacy.get(uri, {})), "modern": self.modern.get(uri, 0)}
        elif params.name == "touch":
            if uri in self.texts:
                version = int(self.texts[uri].rsplit(" ", 1)[1]) + 1
                self.texts[uri] = f"{self.texts[uri].rsplit(' ', 1)[0]} {version}"
            sent_at = time.monotonic()
            await self.bus.publish(ResourceUpdated(uri=uri))
            sessions = list(self.legacy.get(uri, {}).items())
            for key, session in sessions:
                try:
                    with anyio.fail_after(2):
                        await session.send_resource_updated(uri)
                except Exception:
                    self.legacy.get(uri, {}).pop(key, None)  # a session that is gone
            answer = {"sent_at": sent_at, "legacy": len(sessions)}
        else:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name}")
        return types.CallToolResult(content=[types.TextContent(type="text", text=json.dumps(answer))])


def build_server(notes: Notes) -> Server[Any]:
    return Server(
        "notes",
        version="1.0.0",
        on_list_tools=notes.list_tools,
        on_call_tool=notes.call_tool,
        on_list_resources=notes.list_resources,
        on_list_resource_templates=notes.list_templates,
        on_read_resource=notes.read_resource,
        on_subscribe_resource=notes.subscribe,
        on_unsubscribe_resource=notes.unsubscribe,
        on_subscriptions_listen=notes.listen,
    )


class _Uvicorn(uvicorn.Server):
    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            port = self.servers[0].sockets[0].getsockname()[1]
            print(f"READY http://127.0.0.1:{port}/mcp", flush=True)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="resource_backend")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--resources", type=int, default=3)
    p.add_argument("--scheme", default="note")
    args = p.parse_args(argv)
    notes = Notes(args.resources, args.scheme, args.port)
    app = build_server(notes).streamable_http_app(
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        session_idle_timeout=None,
        max_sessions=None,
    )
    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning", timeout_graceful_shutdown=1)
    server = _Uvicorn(config)

    async def serve() -> None:
        with anyio.open_signal_receiver(15, 2) as signals:
            async with anyio.create_task_group() as tg:

                async def stop() -> None:
                    async for signum in signals:
                        notes.listen.close()
                        server.handle_exit(signum, None)

                tg.start_soon(stop)
                await server.serve()
                tg.cancel_scope.cancel()

    anyio.run(serve)
    return 0


if __name__ == "__main__":
    sys.exit(main())
