"""A real MCP backend that asks its client things while it serves a call (the relay tests and benchmark).

    python -m examples.backends.asking_server --port 9101 [--name asking]

Both families; at 2026-07-28 only `confirm` asks (with an `InputRequiredResult`: no back channel). Tools:

* `confirm(question)`: form elicitation (`{"ok": bool}`); without the client's elicitation capability it
  answers `fallback: no elicitation` (what a backend does when the client cannot be asked);
* `visit(url)`: URL-mode elicitation (accepted: `notifications/elicitation/complete` follows);
  `fallback: no url elicitation` likewise;
* `summarize(text)`: `sampling/createMessage`; `fallback: no sampling`;
* `roots()`: `roots/list`, the root URIs joined by commas; `fallback: no roots`;
* `count(n)`: n progress notifications, then `counted n`;
* `chatty(n)`: n log messages (`notifications/message`, levels debug/info/warning in turn), then `logged n`;
* `grow()`: adds a tool `grown_<k>` and announces `notifications/tools/list_changed` on the call's stream;
* `flood(n)`: n form elicitations at once, then `answered=<a> refused=<r>`;
* `stats()`: `cancelled=<k>`: how many of its calls were cancelled while waiting for the client.

Prints `READY http://HOST:PORT/mcp` once it accepts connections; SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import uvicorn
from mcp.server import NotificationOptions, Server, ServerRequestContext
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

Ctx = ServerRequestContext[Any]
Args = dict[str, Any]
STR, INT = {"type": "string"}, {"type": "integer"}
LOG_LEVELS: tuple[types.LoggingLevel, ...] = ("debug", "info", "warning")


def _tool(name: str, **props: dict[str, Any]) -> types.Tool:
    return types.Tool(name=name, description=f"asks: {name}", input_schema={"type": "object", "properties": props})


class AskingBackend:
    def __init__(self, name: str) -> None:
        self.name = name
        self.cancelled = 0
        self.grown = 0
        self.tools: dict[str, tuple[types.Tool, Callable[[Args, Ctx], Awaitable[str]]]] = {
            "confirm": (_tool("confirm", question=STR), self.confirm),
            "visit": (_tool("visit", url=STR), self.visit),
            "summarize": (_tool("summarize", text=STR), self.summarize),
            "roots": (_tool("roots"), self.roots),
            "count": (_tool("count", n=INT), self.count),
            "chatty": (_tool("chatty", n=INT), self.chatty),
            "grow": (_tool("grow"), self.grow),
            "stats": (_tool("stats"), self.stats),
            "flood": (_tool("flood", n=INT), self.flood),
        }

    @contextlib.contextmanager
    def _counting_cancel(self) -> Iterator[None]:
        try:
            yield
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise

    async def _ask(self, ctx: Ctx, request: types.ServerRequest, result: type[Any]) -> Any:
        with self._counting_cancel():
            return await ctx.session.send_request(
                request, result, metadata=ServerMessageMetadata(related_request_id=ctx.request_id)
            )

    async def confirm(self, args: Args, ctx: Ctx) -> str:
        caps = ctx.session.client_capabilities
        if caps is None or caps.elicitation is None:
            return "fallback: no elicitation"
        schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
        params = types.ElicitRequestFormParams(message=str(args.get("question", "?")), requested_schema=schema)
        answer = await self._ask(ctx, types.ElicitRequest(params=params), types.ElicitResult)
        return f"{answer.action}: {(answer.content or {}).get('ok')}"

    async def visit(self, args: Args, ctx: Ctx) -> str:
        caps = ctx.session.client_capabilities
        if caps is None or caps.elicitation is None or caps.elicitation.url is None:
            return "fallback: no url elicitation"
        params = types.ElicitRequestURLParams(message="sign in", url=str(args.get("url")), elicitation_id="e-1")
        answer = await self._ask(ctx, types.ElicitRequest(params=params), types.ElicitResult)
        if answer.action == "accept":  # the out-of-band interaction is done at once here
            done = types.ElicitCompleteNotification(params=types.ElicitCompleteNotificationParams(elicitation_id="e-1"))
            await ctx.session.send_notification(done, related_request_id=ctx.request_id)
        return f"url {answer.action}"

    async def summarize(self, args: Args, ctx: Ctx) -> str:
        caps = ctx.session.client_capabilities
        if caps is None or caps.sampling is None:
            return "fallback: no sampling"
        message = types.SamplingMessage(role="user", content=types.TextContent(type="text", text=str(args["text"])))
        params = types.CreateMessageRequestParams(messages=[message], max_tokens=50)
        answer = await self._ask(ctx, types.CreateMessageRequest(params=params), types.CreateMessageResult)
        content = answer.content
        return f"model {answer.model}: {content.text if isinstance(content, types.TextContent) else '?'}"

    async def roots(self, args: Args, ctx: Ctx) -> str:
        caps = ctx.session.client_capabilities
        if caps is None or caps.roots is None:
            return "fallback: no roots"
        answer = await self._ask(ctx, types.ListRootsRequest(), types.ListRootsResult)
        return ",".join(str(r.uri) for r in answer.roots)

    async def count(self, args: Args, ctx: Ctx) -> str:
        n = max(0, min(int(args.get("n", 3)), 1000))
        for i in range(n):
            await ctx.session.report_progress(i + 1, n, f"step {i + 1}")
        return f"counted {n}"

    async def chatty(self, args: Args, ctx: Ctx) -> str:
        n = max(0, min(int(args.get("n", 3)), 1000))
        for i in range(n):
            note = types.LoggingMessageNotification(
                params=types.LoggingMessageNotificationParams(
                    level=LOG_LEVELS[i % 3], data=f"line {i}", logger=self.name
                )
            )
            await ctx.session.send_notification(note, related_request_id=ctx.request_id)
        return f"logged {n}"

    async def grow(self, args: Args, ctx: Ctx) -> str:
        self.grown += 1
        name = f"grown_{self.grown}"
        self.tools[name] = (_tool(name), self.stats)
        await ctx.session.send_notification(types.ToolListChangedNotification(), related_request_id=ctx.request_id)
        return name

    async def flood(self, args: Args, ctx: Ctx) -> str:
        """n form elicitations at once: how many the client answered and how many were refused."""
        n = max(0, min(int(args.get("n", 20)), 100))
        answered = 0
        schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}

        async def one(i: int) -> None:
            nonlocal answered
            params = types.ElicitRequestFormParams(message=f"flood {i}", requested_schema=schema)
            with contextlib.suppress(MCPError):
                await self._ask(ctx, types.ElicitRequest(params=params), types.ElicitResult)
                answered += 1

        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)
        return f"answered={answered} refused={n - answered}"

    async def stats(self, args: Args, ctx: Ctx) -> str:
        return f"cancelled={self.cancelled}"


class _Server(Server[Any]):
    def create_initialization_options(self, notification_options: Any = None, *args: Any, **kwargs: Any) -> Any:
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True), *args, **kwargs
        )


def input_required_confirm(params: types.CallToolRequestParams) -> types.CallToolResult | types.InputRequiredResult:
    """`confirm` at 2026-07-28: no back channel, so the question comes back as an `InputRequiredResult` and the
    answer with the retried call."""
    answer = (params.input_responses or {}).get("ok")
    if answer is None or params.request_state != "asked":
        schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
        ask = types.ElicitRequestFormParams(
            message=str((params.arguments or {}).get("question", "?")), requested_schema=schema
        )
        return types.InputRequiredResult(input_requests={"ok": types.ElicitRequest(params=ask)}, request_state="asked")
    result = types.ElicitResult.model_validate(answer.model_dump(by_alias=True, exclude_none=True), by_name=False)
    text = f"{result.action}: {(result.content or {}).get('ok')} (modern)"
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


def build_app(backend: AskingBackend) -> Any:
    async def list_tools(ctx: Ctx, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[t for t, _ in backend.tools.values()])

    async def call_tool(
        ctx: Ctx, params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        if params.name == "confirm" and ctx.session.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return input_required_confirm(params)
        entry = backend.tools.get(params.name)
        if entry is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool {params.name}")
        text = await entry[1](dict(params.arguments or {}), ctx)
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

    async def set_level(ctx: Ctx, params: types.SetLevelRequestParams) -> types.EmptyResult:
        return types.EmptyResult()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        server = _Server(
            backend.name,
            version="1.0",
            on_list_tools=list_tools,
            on_call_tool=call_tool,
            on_set_logging_level=set_level,
        )
    return server.streamable_http_app(
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False)
    )


class _Uvicorn(uvicorn.Server):
    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            port = self.servers[0].sockets[0].getsockname()[1]
            print(f"READY http://{self.config.host}:{port}/mcp", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="asking_server", description=__doc__.splitlines()[0])
    p.add_argument("--name", default="asking")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    config = uvicorn.Config(
        build_app(AskingBackend(args.name)), host=args.host, port=args.port, log_level="warning",
        timeout_graceful_shutdown=1,
    )  # fmt: skip
    anyio.run(_Uvicorn(config).serve)
    return 0


if __name__ == "__main__":
    sys.exit(main())
