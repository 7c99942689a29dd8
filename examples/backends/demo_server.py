"""A real MCP backend for the demo stack and the integration tests.

    python -m examples.backends.demo_server --name weather --port 9001 [options]

`--name` picks a bundled catalog (weather, calendar, notes: three tools, a resource and a prompt each); any other
name serves `echo`, `add` and `slow(seconds)`. `/mcp` serves both protocol families unless `--family` narrows it.
Prints `READY http://HOST:PORT/mcp` once it accepts connections (`--port 0`: the OS picks); SIGTERM/SIGINT stop it
with exit 0. SIGUSR1 adds a tool `dynamic_<n>`, SIGUSR2 removes the newest; each change reaches every connected
client of both families (legacy: `notifications/tools/list_changed` on the session's GET stream; modern: its
`subscriptions/listen` streams) and prints `TOOLS_CHANGED <count>`. The HTTP edge (auth, faults) is in `faults.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import inspect
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
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from starlette.types import ASGIApp

if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from examples.backends.faults import FAULT_MODES, FaultMiddleware, Gate, file_reader, host_patterns

Ctx = ServerRequestContext[Any]
Args = dict[str, Any]
ToolFn = Callable[[Args, Ctx], str | Awaitable[str]]
STR, INT, NUM = {"type": "string"}, {"type": "integer"}, {"type": "number"}


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


def prompt(name: str, description: str, argument: str) -> types.Prompt:
    return types.Prompt(
        name=name, description=description, arguments=[types.PromptArgument(name=argument, required=True)]
    )


def arg(args: Args, key: str, kind: type, default: Any = ...) -> Any:
    """`args[key]` checked against `kind` (the low-level server does not validate input schemas)."""
    value = args.get(key, default)
    if value is ...:
        raise ToolInputError(f"missing argument {key!r}")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ToolInputError(f"argument {key!r} must be {kind.__name__}")
    return value


def seed(*parts: object) -> int:  # stable pseudo-random: the same city gets the same weather in every run
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:8], 16)


def weather_catalog() -> Catalog:
    skies = ["sunny", "partly cloudy", "overcast", "light rain", "thunderstorms", "snow showers"]

    def forecast(a: Args, ctx: Ctx) -> str:
        city, days = arg(a, "city", str), arg(a, "days", int, 3)
        if not 1 <= days <= 7:
            raise ToolInputError("days must be between 1 and 7")
        day = "{} day {}: {}, high {}°C, low {}°C"
        return "\n".join(
            day.format(city, d + 1, skies[seed(city, d) % 6], 12 + seed(city, d, 1) % 15, 2 + seed(city, d, 2) % 10)
            for d in range(days)
        )

    def current(a: Args, ctx: Ctx) -> str:
        city = arg(a, "city", str)
        return f"{city}: {skies[seed(city) % 6]}, {5 + seed(city, 't') % 20}°C, wind {seed(city, 'w') % 40} km/h"

    def alerts(a: Args, ctx: Ctx) -> str:
        region = arg(a, "region", str)
        return f"No active alerts for {region}." if seed(region) % 3 else f"Wind advisory for {region} until 18:00."

    stations = [{"id": "LHR", "city": "London"}, {"id": "CDG", "city": "Paris"}, {"id": "OSL", "city": "Oslo"}]
    return Catalog(
        [
            tool("get_forecast", "Daily forecast for a city (1-7 days).", forecast, ["city"], city=STR, days=INT),
            tool(
                "get_current_conditions", "Current sky, temperature and wind for a city.", current, ["city"], city=STR
            ),
            # `x-mcp-header`: 2026-07-28 callers mirror `region` into an `Mcp-Param-Region` header (for routing
            # on it without reading the body); the SDK server rejects a modern call without it
            tool(
                "list_alerts",
                "Active weather alerts for a region.",
                alerts,
                ["region"],
                region={**STR, "x-mcp-header": "Region"},
            ),
        ],
        types.Resource(uri="weather://stations", name="stations", mime_type="application/json"),
        lambda: json.dumps(stations),
        prompt("weather_briefing", "A short weather briefing for a city.", "city"),
        lambda p: (
            f"Give a three-sentence weather briefing for {p.get('city')}: call get_current_conditions and get_forecast first."
        ),
    )


def calendar_catalog() -> Catalog:
    events: dict[str, list[str]] = {"2026-01-05": ["09:00 Standup (15 min)", "14:00 Design review (60 min)"]}

    def list_events(a: Args, ctx: Ctx) -> str:
        date = arg(a, "date", str)
        return "\n".join(events.get(date, [])) or f"No events on {date}."

    def create_event(a: Args, ctx: Ctx) -> str:
        title, date, time = arg(a, "title", str), arg(a, "date", str), arg(a, "time", str, "09:00")
        events[date] = sorted([*events.get(date, []), f"{time} {title} ({arg(a, 'duration_minutes', int, 30)} min)"])
        return f"Created '{title}' on {date} at {time}."

    def free_slot(a: Args, ctx: Ctx) -> str:
        date, minutes = arg(a, "date", str), arg(a, "duration_minutes", int, 30)
        busy = {event[:5] for event in events.get(date, [])}
        slot = next((f"{h:02d}:00" for h in range(9, 18) if f"{h:02d}:00" not in busy), None)
        return f"First free {minutes}-minute slot on {date}: {slot}." if slot else f"No free slot on {date}."

    return Catalog(
        [
            tool("list_events", "Events on a date (YYYY-MM-DD).", list_events, ["date"], date=STR),
            tool(
                "create_event",
                "Create an event.",
                create_event,
                ["title", "date"],
                title=STR,
                date=STR,
                time=STR,
                duration_minutes=INT,
            ),
            tool("find_free_slot", "First free slot on a date.", free_slot, ["date"], date=STR, duration_minutes=INT),
        ],
        types.Resource(uri="calendar://today", name="today", mime_type="text/plain"),
        lambda: "\n".join(events.get("2026-01-05", [])),
        prompt("plan_day", "Plan a day around the calendar.", "date"),
        lambda p: f"Look at list_events for {p.get('date')} and propose a plan for the day.",
    )


def notes_catalog() -> Catalog:
    notes: dict[str, tuple[str, str]] = {"1": ("Welcome", "Notes live in memory and vanish when the server stops.")}

    def create(a: Args, ctx: Ctx) -> str:
        notes[note_id := str(len(notes) + 1)] = (arg(a, "title", str), arg(a, "body", str))
        return f"Created note {note_id}."

    def search(a: Args, ctx: Ctx) -> str:
        query = arg(a, "query", str).lower()
        return (
            "\n".join(f"{i}: {t}" for i, (t, b) in notes.items() if query in f"{t}\n{b}".lower())
            or "No matching notes."
        )

    def get(a: Args, ctx: Ctx) -> str:
        if (note_id := arg(a, "note_id", str)) not in notes:
            raise ToolInputError(f"no note {note_id!r}")
        return "{}\n\n{}".format(*notes[note_id])

    return Catalog(
        [
            tool("create_note", "Create a note.", create, ["title", "body"], title=STR, body=STR),
            tool("search_notes", "Find notes containing a word.", search, ["query"], query=STR),
            tool("get_note", "Read one note by id.", get, ["note_id"], note_id=STR),
        ],
        types.Resource(uri="notes://index", name="index", mime_type="text/plain"),
        lambda: "\n".join(f"{i}: {t}" for i, (t, _) in notes.items()),
        prompt("summarize_notes", "Summarize the notes about a topic.", "topic"),
        lambda p: f"Use search_notes to find notes about {p.get('topic')} and summarize them.",
    )


def generic_catalog(name: str) -> Catalog:
    def add(a: Args, ctx: Ctx) -> str:
        total = arg(a, "a", float) + arg(a, "b", float)
        return str(int(total) if total.is_integer() else total)

    async def slow(a: Args, ctx: Ctx) -> str:
        seconds = arg(a, "seconds", float)
        steps = max(1, min(100, int(seconds * 10)))
        for step in range(1, steps + 1):  # cancellable at every sleep
            await anyio.sleep(seconds / steps)
            await ctx.session.report_progress(
                step, steps, f"{step}/{steps}"
            )  # no-op unless the caller sent a progressToken
        return f"slept {seconds}s"

    return Catalog(
        [
            tool("echo", "Return the text.", lambda a, ctx: arg(a, "text", str), ["text"], text=STR),
            tool("add", "Add two numbers.", add, ["a", "b"], a=NUM, b=NUM),
            tool(
                "slow", "Sleep, reporting progress; for timeout and cancellation tests.", slow, ["seconds"], seconds=NUM
            ),
        ],
        types.Resource(uri=f"demo://{name}/info", name="info", mime_type="text/plain"),
        lambda: f"Generic demo backend {name!r}.",
        prompt("greet", "Greet someone.", "name"),
        lambda p: f"Say hello to {p.get('name')}.",
    )


CATALOGS: dict[str, Callable[[], Catalog]] = {
    "weather": weather_catalog,
    "calendar": calendar_catalog,
    "notes": notes_catalog,
}


def numbered_tool(label: str) -> ToolSpec:
    return tool(label, f"Generated tool {label}.", lambda a, ctx: f"{label}: {a.get('value', '')}", value=STR)


class Backend:
    """The mutable catalog, its MCP handlers, and the clients to tell when it changes."""

    def __init__(self, name: str, catalog: Catalog, extra_tools: int, page_size: int) -> None:
        self.name, self.catalog, self.page_size = name, catalog, page_size
        self.tools = {s.tool.name: s for s in catalog.tools} | {
            f"tool_{i}": numbered_tool(f"tool_{i}") for i in range(extra_tools)
        }
        self.bus = InMemorySubscriptionBus()  # modern clients: their subscriptions/listen streams
        self.listen = ListenHandler(self.bus)
        self.legacy: OrderedDict[str, ServerSession] = OrderedDict()  # legacy clients: by Mcp-Session-Id
        self.added: list[str] = []  # dynamic tools, oldest first
        self.stopping = anyio.Event()  # set on SIGTERM/SIGINT: ends `--fault hang` requests
        self._serial = 0

    async def add_tool(self) -> None:
        self._serial += 1
        self.added.append(label := f"dynamic_{self._serial}")
        self.tools[label] = numbered_tool(label)
        await self.tools_changed()

    async def remove_tool(self) -> None:
        if self.added:
            del self.tools[self.added.pop()]
            await self.tools_changed()

    async def tools_changed(self) -> None:
        await self.bus.publish(ToolsListChanged())
        for session in list(self.legacy.values()):
            with anyio.move_on_after(1):  # a client that stopped reading must not stall the others (or SIGTERM)
                await session.send_tool_list_changed()  # rides the session's GET stream; dropped if none is open
        print(f"TOOLS_CHANGED {len(self.tools)}", flush=True)

    async def track_sessions(self, ctx: Ctx, call_next: CallNext) -> HandlerResult:
        """Server middleware: remember the session of every legacy request that names one."""
        result = await call_next(ctx)
        session_id = ctx.request.headers.get("mcp-session-id") if ctx.request is not None else None
        if session_id and ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            self.legacy[session_id] = ctx.session
            self.legacy.move_to_end(session_id)
            while len(self.legacy) > 1024:  # sessions that idle out are never announced as gone
                self.legacy.popitem(last=False)
        return result

    async def list_tools(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        if (cursor := params.cursor if params is not None else None) is not None and not cursor.isdigit():
            raise MCPError(types.INVALID_PARAMS, "Invalid cursor", data={"cursor": cursor})
        start, end = int(cursor or 0), int(cursor or 0) + self.page_size
        page = [spec.tool for spec in list(self.tools.values())[start:end]]
        return types.ListToolsResult(tools=page, next_cursor=str(end) if end < len(self.tools) else None)

    async def call_tool(self, ctx: Ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        spec = self.tools.get(params.name)
        if spec is None:
            raise MCPError(
                types.INVALID_PARAMS, f"Unknown tool: {params.name}", data={"tool": params.name, "backend": self.name}
            )
        try:
            text = spec.fn(dict(params.arguments or {}), ctx)
            text, failed = (await text if inspect.isawaitable(text) else text), False
        except ToolInputError as exc:
            text, failed = str(exc), True
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=failed)

    async def list_resources(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=[self.catalog.resource])

    async def read_resource(self, ctx: Ctx, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        resource = self.catalog.resource
        if str(params.uri) != resource.uri:
            raise MCPError(-32002, "Resource not found", data={"uri": str(params.uri), "backend": self.name})
        contents = types.TextResourceContents(
            uri=resource.uri, mime_type=resource.mime_type, text=self.catalog.resource_text()
        )
        return types.ReadResourceResult(contents=[contents])

    async def list_prompts(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=[self.catalog.prompt])

    async def get_prompt(self, ctx: Ctx, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        if params.name != self.catalog.prompt.name:
            raise MCPError(types.INVALID_PARAMS, f"Unknown prompt: {params.name}", data={"prompt": params.name})
        text = types.TextContent(type="text", text=self.catalog.prompt_text(params.arguments or {}))
        return types.GetPromptResult(
            description=self.catalog.prompt.description, messages=[types.PromptMessage(role="user", content=text)]
        )


class ListChangedServer(Server[Any]):
    """Advertise `tools.listChanged` to legacy clients: the HTTP session manager calls
    `create_initialization_options()` without `NotificationOptions`, so a plain `Server` says false."""

    def create_initialization_options(
        self, notification_options: NotificationOptions | None = None, *args: Any, **kwargs: Any
    ) -> Any:
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True), *args, **kwargs
        )


def build_server(backend: Backend, family: str) -> Server[Any]:
    server = ListChangedServer(
        backend.name,
        version="1.0.0",
        instructions=f"Demo MCP backend {backend.name!r} for xds-control.",
        get_tool_input_schema=lambda name: (
            dict(backend.tools[name].tool.input_schema) if name in backend.tools else None
        ),
        on_list_tools=backend.list_tools,
        on_call_tool=backend.call_tool,
        on_list_resources=backend.list_resources,
        on_read_resource=backend.read_resource,
        on_list_prompts=backend.list_prompts,
        on_get_prompt=backend.get_prompt,
        on_subscriptions_listen=None if family == "legacy" else backend.listen,
    )
    server.middleware.append(backend.track_sessions)
    return server


def build_app(args: argparse.Namespace, backend: Backend) -> ASGIApp:
    hosts = host_patterns(args.allowed_host)
    origins = [f"{scheme}://{host}" for host in hosts for scheme in ("http", "https")]
    app = build_server(backend, args.family).streamable_http_app(
        stateless_http=args.stateless,
        json_response=args.json_response,
        transport_security=TransportSecuritySettings(allowed_hosts=hosts, allowed_origins=origins),
    )
    token = file_reader(args.token_file, args.token) if args.token or args.token_file else None
    read_fault = file_reader(args.fault_file, args.fault)
    fault = lambda: m if (m := read_fault()) in FAULT_MODES else args.fault  # noqa: E731
    return FaultMiddleware(
        Gate(app, args.family, token, lambda session_id: backend.legacy.pop(session_id, None)), fault, backend.stopping
    )


class DemoUvicorn(uvicorn.Server):
    """uvicorn that prints the READY line once its socket listens, and leaves signals to `handle_signals`."""

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            host, port = self.config.host, self.servers[0].sockets[0].getsockname()[1]
            print(f"READY http://{f'[{host}]' if ':' in host else host}:{port}/mcp", flush=True)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # uvicorn's own version re-raises SIGTERM after shutdown, so the exit status would be -15


async def handle_signals(
    server: uvicorn.Server, backend: Backend, *, task_status: Any = anyio.TASK_STATUS_IGNORED
) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2) as signals:
        task_status.started()
        async for signum in signals:
            if signum == signal.SIGUSR1:
                await backend.add_tool()
            elif signum == signal.SIGUSR2:
                await backend.remove_tool()
            else:
                backend.stopping.set()
                backend.listen.close()  # end listen streams gracefully: open ones would hold uvicorn's shutdown
                server.handle_exit(signum, None)  # graceful; a second SIGINT forces the exit


async def serve(args: argparse.Namespace) -> int:
    backend = Backend(
        args.name, CATALOGS.get(args.name, lambda: generic_catalog(args.name))(), args.tools, args.page_size
    )
    config = uvicorn.Config(
        build_app(args, backend), host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=1
    )
    server = DemoUvicorn(config)
    async with anyio.create_task_group() as tg:
        await tg.start(handle_signals, server, backend)  # before READY: SIGUSR1's default action kills
        await server.serve()
        tg.cancel_scope.cancel()
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="demo_server", description="A demo MCP backend on Streamable HTTP at /mcp.")
    p.add_argument("--name", default="demo", help="weather|calendar|notes, or anything else for echo/add/slow")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="0: let the OS choose (see the READY line)")
    p.add_argument(
        "--family", choices=["legacy", "modern", "both"], default="both", help="protocol families served on /mcp"
    )
    p.add_argument("--tools", type=int, default=0, metavar="N", help="also serve tool_0..tool_{N-1}")
    p.add_argument("--page-size", type=lambda v: max(1, int(v)), default=50, help="tools per tools/list page")
    p.add_argument("--token", help="require Authorization: Bearer TOKEN (else 401)")
    p.add_argument("--token-file", type=Path, help="like --token, re-read on every request")
    p.add_argument("--fault", choices=FAULT_MODES, default="none")
    p.add_argument(
        "--fault-file", type=Path, help="fault mode re-read on every request; empty or missing means --fault"
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="extra Host header value; no port means any port",
    )
    p.add_argument(
        "--stateless", action="store_true", help="legacy family without sessions (no Mcp-Session-Id, no GET stream)"
    )
    p.add_argument(
        "--json-response", action="store_true", help="answer application/json instead of SSE where the SDK allows"
    )
    p.add_argument("--log-level", default="warning")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return anyio.run(serve, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
