"""A real MCP backend for the demo stack and the integration tests.

    python -m examples.backends.demo_server --name weather --port 9001 [options]

`--name` picks a bundled catalog (weather, calendar, notes: a few tools, one
resource, one prompt each); any other name serves the generic `echo`, `add`
and `slow(seconds)`. One Streamable HTTP endpoint, `/mcp`, serves both
protocol families by default (the SDK routes each request on its
`MCP-Protocol-Version` header); `--family legacy|modern` narrows it to one,
answering the other family the way a single-family server would.

Prints `READY http://HOST:PORT/mcp` on stdout once it accepts connections;
SIGTERM/SIGINT stop it cleanly (exit 0). SIGUSR1 adds a tool and SIGUSR2
removes the newest added one; either change is announced to every connected
client of both families (legacy: `notifications/tools/list_changed` on the
session's GET stream; modern: `subscriptions/listen`) and printed as
`TOOLS_CHANGED <count>`. See `--help` for auth, fault injection and the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import signal
import sys
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import uvicorn
from mcp.server import NotificationOptions, Server, ServerRequestContext
from mcp.server.context import CallNext, HandlerResult
from mcp.server.session import ServerSession
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ToolsListChanged
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from starlette.types import ASGIApp, Receive, Scope, Send

if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from examples.backends.faults import FAULT_MODES, FaultMiddleware, read_body, request_id, send_plain  # noqa: E402

ToolFn = Callable[[ServerRequestContext[Any], dict[str, Any]], Awaitable[str]]
STR, INT, NUM = {"type": "string"}, {"type": "integer"}, {"type": "number"}
MAX_LEGACY_SESSIONS = 1024


class ToolInputError(Exception):
    """Bad arguments: reported as a tool result with `isError: true`, not as a protocol error."""


@dataclass(frozen=True)
class ToolSpec:
    tool: types.Tool
    fn: ToolFn


@dataclass(frozen=True)
class Catalog:
    tools: list[ToolSpec]
    resource: types.Resource
    resource_text: Callable[[], str]
    prompt: types.Prompt
    prompt_text: Callable[[dict[str, str]], str]


def tool(name: str, description: str, fn: ToolFn, required: Sequence[str] = (), **props: dict[str, Any]) -> ToolSpec:
    schema = {"type": "object", "properties": props, "required": list(required)}
    return ToolSpec(types.Tool(name=name, description=description, input_schema=schema), fn)


def arg(args: dict[str, Any], key: str, kind: type, default: Any = ...) -> Any:
    value = args.get(key, default)
    if value is ...:
        raise ToolInputError(f"missing argument {key!r}")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ToolInputError(f"argument {key!r} must be {kind.__name__}")
    return value


def seed(*parts: object) -> int:
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:8], 16)


def prompt(name: str, description: str, *arguments: str) -> types.Prompt:
    return types.Prompt(name=name, description=description, arguments=[types.PromptArgument(name=a, required=True) for a in arguments])


def weather_catalog() -> Catalog:
    skies = ["sunny", "partly cloudy", "overcast", "light rain", "thunderstorms", "snow showers"]

    async def forecast(ctx: ServerRequestContext[Any], args: dict[str, Any]) -> str:
        city, days = arg(args, "city", str), arg(args, "days", int, 3)
        if not 1 <= days <= 7:
            raise ToolInputError("days must be between 1 and 7")
        return "\n".join(
            f"{city} day {d + 1}: {skies[seed(city, d) % 6]}, high {12 + seed(city, d, 'h') % 15}°C, low {2 + seed(city, d, 'l') % 10}°C"
            for d in range(days)
        )

    async def current(ctx: ServerRequestContext[Any], args: dict[str, Any]) -> str:
        city = arg(args, "city", str)
        return f"{city}: {skies[seed(city) % 6]}, {5 + seed(city, 't') % 20}°C, wind {seed(city, 'w') % 40} km/h"

    async def alerts(ctx: ServerRequestContext[Any], args: dict[str, Any]) -> str:
        region = arg(args, "region", str)
        return f"No active alerts for {region}." if seed(region) % 3 else f"Wind advisory for {region} until 18:00."

    return Catalog(
        tools=[
            tool("get_forecast", "Daily forecast for a city (1-7 days).", forecast, ["city"], city=STR, days=INT),
            tool("get_current_conditions", "Current sky, temperature and wind for a city.", current, ["city"], city=STR),
            tool("list_alerts", "Active weather alerts for a region.", alerts, ["region"], region=STR),
        ],
        resource=types.Resource(uri="weather://stations", name="stations", mime_type="application/json"),
        resource_text=lambda: json.dumps([{"id": "LHR", "city": "London"}, {"id": "CDG", "city": "Paris"}]),
        prompt=prompt("weather_briefing", "A short weather briefing for a city.", "city"),
        prompt_text=lambda a: f"Give a three-sentence weather briefing for {a.get('city', '?')}: call get_current_conditions and get_forecast first.",
    )


def calendar_catalog() -> Catalog:
    events: dict[str, list[str]] = {"2026-01-05": ["09:00 Standup (15 min)", "14:00 Design review (60 min)"]}

    async def list_events(ctx: ServerRequestContext[Any], args: dict[str, Any]) -> str:
        date = arg(args, "date", str)
        return "\n".join(events.get(date, [])) or f"No events on {date}."

    async def create_event(ctx: ServerRequestContext[Any], args: dict[str, Any]) -> str:
        title, date = arg(args, "title", str), arg(args, "date", str)
        time, minutes = arg(args, "time", str, "09:00"), arg(args, "duration_minutes", int, 30)
        events.setdefault(date, []).append(f"{time} {title} ({minutes} min)")
        events[date].sort()
        return f"Created '{title}' on {date} at {time}."

    async def free_slot(ctx: ServerRequestContext[Any], args: dict[str, Any]) -> str:
        date, minutes = arg(args, "date", str), arg(args, "duration_minutes", int, 30)
        busy = {e[:5] for e in events.get(date, [])}
        slot = next((f"{h:02d}:00" for h in range(9, 18) if f"{h:02d}:00" not in busy), None)
        return f"First free {minutes}-minute slot on {date}: {slot}." if slot else f"No free slot on {date}."

    return Catalog(
        tools=[
            tool("list_events", "Events on a date (YYYY-MM-DD).", list_events, ["date"], date=STR),
            tool("create_event", "Create an event.", create_event, ["title", "date"], title=STR, date=STR, time=STR, duration_minutes=INT),
            tool("find_free_slot", "First free slot on a date.", free_slot, ["date"], date=STR, duration_minutes=INT),
        ],
        resource=types.Resource(uri="calendar://today", name="today", mime_type="text/plain"),
        resource_text=lambda: "\n".join(events.get("2026-01-05", [])),
        prompt=prompt("plan_day", "Plan a day around the calendar.", "date"),
        prompt_text=lambda a: f"Look at list_events for {a.get('date', '?')} and propose a plan for the day.",
    )


def notes_catalog() -> Catalog:
    notes: dict[str, tuple[str, str]] = {"1": ("Welcome", "Notes live in memory and vanish when the server stops.")}

    async def create(ctx: ServerRequestContext[Any], args: dict[str, Any]) -> str:
        note_id = str(len(notes) + 1)
        notes[note_id] = (arg(args, "title", str), arg(args, "body", str))
        return f"Created note {note_id}."

    async def search(ctx: ServerRequestContext[Any], args: dict[str, Any]) -> str:
        query = arg(args, "query", str).lower()
        hits = [f"{i}: {t}" for i, (t, b) in notes.items() if query in t.lower() or query in b.lower()]
        return "\n".join(hits) or "No matching notes."

    async def get(ctx: ServerRequestContext[Any], args: dict[str, Any]) -> str:
        note_id = arg(args, "note_id", str)
        if note_id not in notes:
            raise ToolInputError(f"no note {note_id!r}")
        return "{}\n\n{}".format(*notes[note_id])

    return Catalog(
        tools=[
            tool("create_note", "Create a note.", create, ["title", "body"], title=STR, body=STR),
            tool("search_notes", "Find notes containing a word.", search, ["query"], query=STR),
            tool("get_note", "Read one note by id.", get, ["note_id"], note_id=STR),
        ],
        resource=types.Resource(uri="notes://index", name="index", mime_type="text/plain"),
        resource_text=lambda: "\n".join(f"{i}: {t}" for i, (t, _) in notes.items()),
        prompt=prompt("summarize_notes", "Summarize the notes about a topic.", "topic"),
        prompt_text=lambda a: f"Use search_notes to find notes about {a.get('topic', '?')} and summarize them.",
    )


def generic_catalog(name: str) -> Catalog:
    async def echo(ctx: ServerRequestContext[Any], args: dict[str, Any]) -> str:
        return arg(args, "text", str)

    async def add(ctx: ServerRequestContext[Any], args: dict[str, Any]) -> str:
        total = arg(args, "a", float) + arg(args, "b", float)
        return str(int(total) if total.is_integer() else total)

    async def slow(ctx: ServerRequestContext[Any], args: dict[str, Any]) -> str:
        seconds = arg(args, "seconds", float)
        steps = max(1, min(100, int(seconds * 10)))
        for step in range(1, steps + 1):  # cancellable at every sleep
            await anyio.sleep(seconds / steps)
            await ctx.session.report_progress(step, steps, f"{step}/{steps}")
        return f"slept {seconds}s"

    return Catalog(
        tools=[
            tool("echo", "Return the text.", echo, ["text"], text=STR),
            tool("add", "Add two numbers.", add, ["a", "b"], a=NUM, b=NUM),
            tool("slow", "Sleep, reporting progress; for timeout and cancellation tests.", slow, ["seconds"], seconds=NUM),
        ],
        resource=types.Resource(uri=f"demo://{name}/info", name="info", mime_type="text/plain"),
        resource_text=lambda: f"Generic demo backend {name!r}.",
        prompt=prompt("greet", "Greet someone.", "name"),
        prompt_text=lambda a: f"Say hello to {a.get('name', '?')}.",
    )


CATALOGS: dict[str, Callable[[], Catalog]] = {"weather": weather_catalog, "calendar": calendar_catalog, "notes": notes_catalog}


def numbered_tool(label: str) -> ToolSpec:
    async def run(ctx: ServerRequestContext[Any], args: dict[str, Any]) -> str:
        return f"{label}: {args.get('value', '')}"

    return tool(label, f"Generated tool {label}.", run, value=STR)


class Backend:
    """The mutable catalog and the clients to tell when it changes."""

    def __init__(self, name: str, catalog: Catalog, extra_tools: int, page_size: int) -> None:
        self.name = name
        self.catalog = catalog
        self.page_size = page_size
        self.tools = {s.tool.name: s for s in catalog.tools} | {f"tool_{i}": numbered_tool(f"tool_{i}") for i in range(extra_tools)}
        self.bus = InMemorySubscriptionBus()  # modern clients: subscriptions/listen streams
        self.legacy: OrderedDict[str, ServerSession] = OrderedDict()  # legacy clients: by Mcp-Session-Id
        self.added: list[str] = []
        self._serial = 0

    def remember(self, session_id: str, session: ServerSession) -> None:
        self.legacy[session_id] = session
        self.legacy.move_to_end(session_id)
        while len(self.legacy) > MAX_LEGACY_SESSIONS:
            self.legacy.popitem(last=False)

    def forget(self, session_id: str) -> None:
        self.legacy.pop(session_id, None)

    async def add_tool(self) -> None:
        self._serial += 1
        label = f"dynamic_{self._serial}"
        self.tools[label] = numbered_tool(label)
        self.added.append(label)
        await self.tools_changed()

    async def remove_tool(self) -> None:
        if self.added:
            del self.tools[self.added.pop()]
            await self.tools_changed()

    async def tools_changed(self) -> None:
        await self.bus.publish(ToolsListChanged())
        for session in list(self.legacy.values()):
            await session.send_tool_list_changed()  # standalone GET stream; dropped if the client has none open
        print(f"TOOLS_CHANGED {len(self.tools)}", flush=True)

    async def track_sessions(self, ctx: ServerRequestContext[Any], call_next: CallNext) -> HandlerResult:
        """Server middleware: remember the session of every legacy request that carries an id."""
        result = await call_next(ctx)
        session_id = ctx.request.headers.get("mcp-session-id") if ctx.request is not None else None
        if session_id and ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            self.remember(session_id, ctx.session)
        return result

    async def list_tools(self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        cursor = params.cursor if params is not None else None
        if cursor is not None and not cursor.isdigit():
            raise MCPError(types.INVALID_PARAMS, "Invalid cursor", data={"cursor": cursor})
        start = int(cursor or 0)
        page = list(self.tools.values())[start : start + self.page_size]
        more = start + self.page_size < len(self.tools)
        return types.ListToolsResult(tools=[s.tool for s in page], next_cursor=str(start + self.page_size) if more else None)

    async def call_tool(self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        spec = self.tools.get(params.name)
        if spec is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name}", data={"tool": params.name, "backend": self.name})
        try:
            text, failed = await spec.fn(ctx, dict(params.arguments or {})), False
        except ToolInputError as exc:
            text, failed = str(exc), True
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=failed)

    async def list_resources(self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=[self.catalog.resource])

    async def read_resource(self, ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        resource = self.catalog.resource
        if str(params.uri) != resource.uri:
            raise MCPError(-32002, "Resource not found", data={"uri": str(params.uri), "backend": self.name})
        text = self.catalog.resource_text()
        return types.ReadResourceResult(contents=[types.TextResourceContents(uri=resource.uri, mime_type=resource.mime_type, text=text)])

    async def list_prompts(self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=[self.catalog.prompt])

    async def get_prompt(self, ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams) -> types.GetPromptResult:
        if params.name != self.catalog.prompt.name:
            raise MCPError(types.INVALID_PARAMS, f"Unknown prompt: {params.name}", data={"prompt": params.name})
        message = types.PromptMessage(role="user", content=types.TextContent(type="text", text=self.catalog.prompt_text(params.arguments or {})))
        return types.GetPromptResult(description=self.catalog.prompt.description, messages=[message])


class ListChangedServer(Server[Any]):
    """Advertise `listChanged` to legacy clients too.

    The HTTP session manager calls `create_initialization_options()` without
    `NotificationOptions`, so a plain `Server` tells every legacy client
    `tools.listChanged: false`.
    """

    def create_initialization_options(self, notification_options: NotificationOptions | None = None, *args: Any, **kwargs: Any) -> Any:
        return super().create_initialization_options(notification_options or NotificationOptions(tools_changed=True), *args, **kwargs)


def build_server(backend: Backend, family: str) -> Server[Any]:
    server = ListChangedServer(
        backend.name,
        version="1.0.0",
        instructions=f"Demo MCP backend {backend.name!r} for xds-control.",
        get_tool_input_schema=lambda name: dict(backend.tools[name].tool.input_schema) if name in backend.tools else None,
        on_list_tools=backend.list_tools,
        on_call_tool=backend.call_tool,
        on_list_resources=backend.list_resources,
        on_read_resource=backend.read_resource,
        on_list_prompts=backend.list_prompts,
        on_get_prompt=backend.get_prompt,
        on_subscriptions_listen=None if family == "legacy" else ListenHandler(backend.bus),
    )
    server.middleware.append(backend.track_sessions)
    return server


def host_patterns(extra: Sequence[str]) -> list[str]:
    """Allowed Host values. The SDK matches exactly, or `name:*` as "name: plus any port", never a bare name."""
    patterns: list[str] = []
    for host in ["127.0.0.1", "localhost", "[::1]", *extra]:
        has_port = "]:" in host if host.startswith("[") else ":" in host
        patterns += [host] if has_port else [host, f"{host}:*"]
    return patterns


class Gate:
    """ASGI middleware in front of the SDK app: bearer auth, the family filter, session bookkeeping."""

    def __init__(self, app: ASGIApp, backend: Backend, family: str, token: Callable[[], str | None] | None) -> None:
        self.app, self.backend, self.family, self.token = app, backend, family, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.token is not None and not self._authorized(headers.get("authorization", "")):
            body = b'{"error":"invalid_token","error_description":"missing or wrong bearer token"}'
            challenge = (b"www-authenticate", b'Bearer error="invalid_token"')
            await send_plain(send, 401, body, [(b"content-type", b"application/json"), challenge])
            return
        version = headers.get("mcp-protocol-version")
        if self.family == "legacy" and version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            # A handshake-only server does not know the modern versions: drop the header, serve as legacy.
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"mcp-protocol-version"]}
        elif self.family == "modern" and version not in MODERN_PROTOCOL_VERSIONS:
            await self._refuse_legacy(scope, receive, send)
            return
        session_id = headers.get("mcp-session-id")

        async def watch(message: dict[str, Any]) -> None:
            if session_id and message["type"] == "http.response.start" and (message["status"] == 404 or scope["method"] == "DELETE"):
                self.backend.forget(session_id)
            await send(message)

        await self.app(scope, receive, watch)

    def _authorized(self, header: str) -> bool:
        expected = self.token() if self.token is not None else None
        scheme, _, presented = header.partition(" ")
        return bool(expected) and scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), expected.encode())

    @staticmethod
    async def _refuse_legacy(scope: Scope, receive: Receive, send: Send) -> None:
        """What a 2026-07-28-only server answers the handshake family: -32022 naming its versions."""
        if scope["method"] != "POST":
            await send_plain(send, 405, b"", [(b"allow", b"POST")])
            return
        body = await read_body(receive)
        try:
            requested = json.loads(body).get("params", {}).get("protocolVersion", "")
        except (ValueError, AttributeError):
            requested = ""
        error = {"code": -32022, "message": "Unsupported protocol version", "data": {"supported": list(MODERN_PROTOCOL_VERSIONS), "requested": str(requested)}}
        reply = json.dumps({"jsonrpc": "2.0", "id": request_id(body), "error": error}).encode()
        await send_plain(send, 400, reply, [(b"content-type", b"application/json")])


def file_reader(path: Path | None, fallback: str | None) -> Callable[[], str | None]:
    """Re-read `path` on every call (stripped); `fallback` when there is no file or it is empty."""

    def read() -> str | None:
        if path is None:
            return fallback
        try:
            return path.read_text().strip() or fallback
        except OSError:
            return fallback

    return read


def build_app(args: argparse.Namespace, backend: Backend) -> ASGIApp:
    server = build_server(backend, args.family)
    hosts = host_patterns(args.allowed_host)
    security = TransportSecuritySettings(
        allowed_hosts=hosts, allowed_origins=[f"{scheme}://{h}" for h in hosts for scheme in ("http", "https")]
    )
    app = server.streamable_http_app(
        stateless_http=args.stateless, json_response=args.json_response, transport_security=security, host=args.host
    )
    token = file_reader(args.token_file, args.token) if args.token or args.token_file else None
    read_fault = file_reader(args.fault_file, args.fault)
    return FaultMiddleware(Gate(app, backend, args.family, token), lambda: m if (m := read_fault()) in FAULT_MODES else args.fault)


class DemoUvicorn(uvicorn.Server):
    """uvicorn, reporting readiness once its socket listens and leaving signals to `serve`."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[str, int], None]) -> None:
        super().__init__(config)
        self.on_ready = on_ready

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            self.on_ready(self.config.host, port)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # uvicorn would re-raise SIGTERM after shutdown; `handle_signals` owns them instead


async def handle_signals(server: uvicorn.Server, backend: Backend, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2) as signals:
        task_status.started()
        async for signum in signals:
            if signum == signal.SIGUSR1:
                await backend.add_tool()
            elif signum == signal.SIGUSR2:
                await backend.remove_tool()
            else:
                server.handle_exit(signum, None)  # second Ctrl-C forces the exit


async def serve(args: argparse.Namespace) -> int:
    catalog = CATALOGS.get(args.name, lambda: generic_catalog(args.name))()
    backend = Backend(args.name, catalog, args.tools, args.page_size)
    config = uvicorn.Config(
        build_app(args, backend), host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=1, lifespan="on"
    )

    def ready(host: str, port: int) -> None:
        print(f"READY http://{f'[{host}]' if ':' in host else host}:{port}/mcp", flush=True)

    server = DemoUvicorn(config, ready)
    async with anyio.create_task_group() as tg:
        await tg.start(handle_signals, server, backend)
        await server.serve()
        tg.cancel_scope.cancel()
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="demo_server", description=__doc__.split("\n\n")[0])
    p.add_argument("--name", default="demo", help="weather|calendar|notes, or anything else for echo/add/slow")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--family", choices=["legacy", "modern", "both"], default="both", help="protocol families served on /mcp")
    p.add_argument("--tools", type=int, default=0, metavar="N", help="also serve tool_0..tool_{N-1}")
    p.add_argument("--page-size", type=int, default=50, help="tools per tools/list page")
    p.add_argument("--token", help="require Authorization: Bearer TOKEN (else 401)")
    p.add_argument("--token-file", type=Path, help="like --token, re-read on every request")
    p.add_argument("--fault", choices=FAULT_MODES, default="none")
    p.add_argument("--fault-file", type=Path, help="fault mode re-read on every request; empty or missing means --fault")
    p.add_argument("--allowed-host", action="append", default=[], metavar="HOST[:PORT]", help="extra Host header value; no port means any port")
    p.add_argument("--stateless", action="store_true", help="legacy family without sessions (no Mcp-Session-Id, no GET stream)")
    p.add_argument("--json-response", action="store_true", help="answer application/json instead of SSE where the SDK allows")
    p.add_argument("--log-level", default="warning")
    args = p.parse_args(argv)
    if args.page_size < 1:
        p.error("--page-size must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return anyio.run(serve, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
