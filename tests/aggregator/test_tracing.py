"""Trace context from the client through the aggregator and Envoy to the backend.

Unit part: the call span's attributes and outcomes, `_meta` hygiene, the HTTP edge lifting
`_meta.traceparent` into the header. Integration part: a real control plane and Envoy, the
aggregator in process, and recording MCP backends (in process too, so their SDK server spans land
in the same in-memory exporter) that keep the `traceparent` header and `_meta` of every call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
import pytest
import uvicorn
from mcp.server import Server, ServerRequestContext
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.aggregator.support import MODERN, fetch_catalog, mcp_client
from tests.support.canned_http import Answer, CannedServer, Request
from tests.support.stack import async_start_envoy, running_control_plane, stack_config
from tests.support.waiting import async_wait_until, free_ports
from xds_control.aggregator import AdminViewSource, Aggregator
from xds_control.aggregator.backend_http import BackendHttp
from xds_control.aggregator.sdk_transport import sdk_client
from xds_control.aggregator.tracing import CALL_SPAN, passthrough
from xds_control.aggregator.upstream import clean_params
from xds_control.telemetry.tracing import global_memory_exporter
from xds_control.view import BackendState

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
HEADER_PARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"
META_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
META_PARENT = f"00-{META_TRACE_ID}-00f067aa0ba902b7-01"


def trace_id_of(traceparent: str) -> str:
    return traceparent.split("-")[1]


def span_id_of(traceparent: str) -> str:
    return traceparent.split("-")[2]


def hex_id(value: int, width: int = 16) -> str:
    return f"{value:0{width}x}"


# -- unit ----------------------------------------------------------------------------------------


def test_the_clients_trace_context_is_not_forwarded_as_it_came() -> None:
    params = {
        "name": "weather_x",
        "arguments": {},
        "_meta": {"traceparent": META_PARENT, "tracestate": "a=b", "progressToken": 1, "keep": "me"},
    }
    cleaned = clean_params(params, "x")
    assert cleaned["name"] == "x" and cleaned["_meta"] == {"keep": "me"}
    # Unless this process exports no spans: then the client's context (tracing.passthrough) goes on unchanged.
    forwarded = clean_params(params, "x", trace_context=passthrough(params["_meta"], {"traceparent": HEADER_PARENT}))
    assert forwarded["_meta"] == {"keep": "me", "traceparent": META_PARENT, "tracestate": "a=b"}
    assert passthrough({"keep": "me"}, {"traceparent": HEADER_PARENT}) == {"traceparent": HEADER_PARENT}


async def test_the_http_edge_copies_the_meta_traceparent_into_the_header() -> None:
    seen: list[dict[str, str]] = []

    def handler(request: Request) -> Answer:
        seen.append(request.headers)
        return Answer.json({"jsonrpc": "2.0", "id": 1, "result": {}})

    async with CannedServer(handler) as server, sdk_client(BackendHttp("b")) as client:
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "x", "_meta": {"traceparent": META_PARENT, "tracestate": "a=b"}},
        }
        await client.post(server.url, json=body)
        await client.post(server.url, json={"jsonrpc": "2.0", "id": 2, "method": "ping"})
        await client.get(server.url)
    with_meta, without, get = seen
    assert with_meta["traceparent"] == META_PARENT and with_meta["tracestate"] == "a=b"
    assert "traceparent" not in without and "traceparent" not in get


# -- integration ---------------------------------------------------------------------------------


@dataclass
class Recorder:
    """An MCP backend (both families) whose one tool, `echo_meta`, keeps what each call carried."""

    name: str
    port: int
    calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def server(self) -> Server[Any]:
        async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
            return types.ListToolsResult(tools=[types.Tool(name="echo_meta", input_schema={"type": "object"})])

        async def call_tool(
            ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
        ) -> types.CallToolResult:
            headers = ctx.request.headers if ctx.request is not None else {}
            meta = dict(ctx.meta or {})
            self.calls.append(
                {
                    "header": headers.get("traceparent"),
                    "meta": meta.get("traceparent"),
                    "current": trace.get_current_span(),
                }
            )
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=json.dumps({"traceparent": meta.get("traceparent")}))]
            )

        async def list_prompts(ctx: Any, params: Any) -> types.ListPromptsResult:
            return types.ListPromptsResult(prompts=[types.Prompt(name="greet")])

        async def get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
            return types.GetPromptResult(
                messages=[types.PromptMessage(role="user", content=types.TextContent(type="text", text="hi"))]
            )

        async def list_resources(ctx: Any, params: Any) -> types.ListResourcesResult:
            return types.ListResourcesResult(resources=[types.Resource(uri=f"rec://{self.name}/info", name="info")])

        async def read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
            return types.ReadResourceResult(contents=[types.TextResourceContents(uri=str(params.uri), text="info")])

        server: Server[Any] = Server(
            self.name,
            on_list_tools=list_tools,
            on_call_tool=call_tool,
            on_list_prompts=list_prompts,
            on_get_prompt=get_prompt,
            on_list_resources=list_resources,
            on_read_resource=read_resource,
            on_subscriptions_listen=ListenHandler(InMemorySubscriptionBus()),
        )
        return server

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Recorder]:
        app = self.server().streamable_http_app(
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False)
        )
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=2)
        )
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]  # the test process's signals stay its own
        task = asyncio.create_task(server.serve())
        try:
            await async_wait_until(
                lambda: server.started or task.done(), timeout=10, what=f"recorder {self.name} to listen"
            )
            assert server.started, f"recorder {self.name} did not start"
            yield self
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, timeout=10)


@dataclass
class Stack:
    url: str
    recorders: dict[str, Recorder]


@contextlib.asynccontextmanager
async def tracing_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """Two recording backends (one called over legacy sessions, one over modern requests) behind a
    real control plane and Envoy, and the aggregator in process calling them through Envoy's egress."""
    ports = free_ports(2)
    recorders = {"rec-legacy": Recorder("rec-legacy", ports[0]), "rec-modern": Recorder("rec-modern", ports[1])}
    async with contextlib.AsyncExitStack() as stack:
        for recorder in recorders.values():
            await stack.enter_async_context(recorder.serving())
        config = stack_config(
            [
                {"name": "rec-legacy", "url": recorders["rec-legacy"].url, "protocol": "legacy"},
                {"name": "rec-modern", "url": recorders["rec-modern"].url, "protocol": "modern"},
            ]
        )
        plane = await stack.enter_async_context(running_control_plane(config))
        for name, recorder in recorders.items():
            catalog = await fetch_catalog(recorder.url, mode="legacy" if name == "rec-legacy" else MODERN)
            plane.store.update_backend(name, lambda s, c=catalog: replace(s, state=BackendState.HEALTHY, catalog=c))
        envoy = await async_start_envoy(config, tmp_path / "envoy")
        stack.callback(envoy.stop)
        source = AdminViewSource(config.control_plane.admin)
        stack.push_async_callback(source.aclose)
        aggregator = Aggregator(config, source, report_interval=0.05)  # default upstream: Envoy's egress listener
        await stack.enter_async_context(aggregator.running())
        await aggregator.wait_for_view(plane.store.version)
        url = await stack.enter_async_context(aggregator.serving(config.aggregator.address, config.aggregator.port))
        yield Stack(url, recorders)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    """The process's tracer provider (the SDK's spans use the global one), captured in memory, emptied."""
    return global_memory_exporter()


async def finished(exporter: InMemorySpanExporter, trace_id: int, *names: str) -> dict[int, ReadableSpan]:
    """Every finished span of the trace, by span id, once spans of each of `names` are among them."""
    spans: dict[int, ReadableSpan] = {}

    def collect() -> bool:
        spans.clear()
        spans.update({s.context.span_id: s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id})
        return all(any(s.name == n for s in spans.values()) for n in names)

    await async_wait_until(collect, timeout=5, what=f"spans {names} of the trace")
    return spans


def ancestors(spans: dict[int, ReadableSpan], span_id: int) -> list[str]:
    """Names from `span_id` up to the trace's root (within the spans the test process recorded)."""
    names = []
    current = spans.get(span_id)
    while current is not None:
        names.append(current.name)
        current = spans.get(current.parent.span_id) if current.parent is not None else None
    return names


@pytest.mark.integration
async def test_one_call_is_one_trace_from_the_client_through_envoy_to_the_backend(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    tracer = trace.get_tracer("test-client")
    async with tracing_stack(tmp_path) as stack:
        for mode in ("legacy", MODERN):
            for name, recorder in stack.recorders.items():
                async with mcp_client(stack.url, mode) as client:
                    before = len(recorder.calls)
                    with tracer.start_as_current_span("client operation") as root:
                        result = await client.call_tool(f"{name}_echo_meta", {})
                    assert not result.is_error
                trace_id = root.get_span_context().trace_id
                (call,) = recorder.calls[before:]

                # The backend got the context in both forms, the same parent, in the client's trace.
                assert call["header"] is not None and call["header"] == call["meta"], (mode, name, call)
                assert trace_id_of(call["header"]) == hex_id(trace_id, 32)

                # And that parent descends from the client's span through the aggregator's call span.
                spans = await finished(exporter, trace_id, CALL_SPAN, "client operation")
                chain = ancestors(spans, int(span_id_of(call["header"]), 16))
                assert chain[0] == "MCP send tools/call echo_meta", chain  # the aggregator's SDK client span
                assert chain[1] == CALL_SPAN
                assert chain[2] == f"tools/call {name}_echo_meta"  # the aggregator's SDK server span
                assert chain[3] == f"MCP send tools/call {name}_echo_meta"  # the test client's SDK client span
                assert chain[-1] == "client operation"
                # The backend's own SDK server span (same process) is the last link.
                backend_span = call["current"].get_span_context()
                assert backend_span.trace_id == trace_id and ancestors(spans, backend_span.span_id)[1:] == chain

                (call_span,) = [s for s in spans.values() if s.name == CALL_SPAN]
                assert dict(call_span.attributes) == {
                    "mcp.method.name": "tools/call",
                    "tool": f"{name}_echo_meta",
                    "backend": name,
                    "original": "echo_meta",
                    "outcome": "ok",
                }


async def raw_modern_call(
    url: str, tool: str, *, headers: dict[str, str], meta: dict[str, str] | None = None
) -> dict[str, Any]:
    """One 2026-07-28 tools/call as plain HTTP: no SDK client, so no span and no `_meta` injection of its own."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "name": tool,
            "arguments": {},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
                **(meta or {}),
            },
        },
    }
    request_headers = {
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": MODERN,
        "mcp-method": "tools/call",
        "mcp-name": tool,
        **headers,
    }
    async with httpx2.AsyncClient(trust_env=False, timeout=30) as http:
        response = await http.post(url, json=body, headers=request_headers)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.integration
async def test_a_traceparent_header_alone_joins_the_trace_and_meta_wins_over_it(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    async with tracing_stack(tmp_path) as stack:
        recorder = stack.recorders["rec-modern"]
        answer = await raw_modern_call(stack.url, "rec-modern_echo_meta", headers={"traceparent": HEADER_PARENT})
        assert "error" not in answer, answer
        (call,) = recorder.calls[-1:]
        assert trace_id_of(call["header"]) == TRACE_ID == trace_id_of(call["meta"])
        spans = await finished(exporter, int(TRACE_ID, 16), CALL_SPAN)
        chain = ancestors(spans, int(span_id_of(call["header"]), 16))
        assert chain[1:3] == [CALL_SPAN, "tools/call rec-modern_echo_meta"]
        server_span = spans[next(i for i, s in spans.items() if s.name == "tools/call rec-modern_echo_meta")]
        assert hex_id(server_span.parent.span_id) == span_id_of(HEADER_PARENT), "the header's span is the parent"

        answer = await raw_modern_call(
            stack.url, "rec-modern_echo_meta", headers={"traceparent": HEADER_PARENT}, meta={"traceparent": META_PARENT}
        )
        assert "error" not in answer, answer
        (call,) = recorder.calls[-1:]
        assert trace_id_of(call["header"]) == META_TRACE_ID == trace_id_of(call["meta"]), (
            "`_meta` is the more specific carrier"
        )


@pytest.mark.integration
async def test_prompts_resources_and_failures_are_call_spans_too(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    tracer = trace.get_tracer("test-client")

    async def call_span_of(root: trace.Span) -> ReadableSpan:
        spans = await finished(exporter, root.get_span_context().trace_id, CALL_SPAN)
        (span,) = [s for s in spans.values() if s.name == CALL_SPAN]
        return span

    async with tracing_stack(tmp_path) as stack, mcp_client(stack.url, MODERN) as client:
        with tracer.start_as_current_span("prompt") as root:
            await client.get_prompt("rec-legacy_greet", {})
        span = await call_span_of(root)
        assert dict(span.attributes) == {
            "mcp.method.name": "prompts/get", "prompt": "rec-legacy_greet", "backend": "rec-legacy", "original": "greet", "outcome": "ok",
        }  # fmt: skip

        with tracer.start_as_current_span("resource") as root:
            await client.read_resource("rec://rec-modern/info")
        span = await call_span_of(root)
        assert (
            span.attributes["mcp.method.name"] == "resources/read" and span.attributes["uri"] == "rec://rec-modern/info"
        )
        assert span.attributes["backend"] == "rec-modern" and span.attributes["outcome"] == "ok"

        with tracer.start_as_current_span("unknown tool") as root, pytest.raises(MCPError):
            await client.call_tool("nope", {})
        span = await call_span_of(root)
        assert span.attributes["outcome"] == "unknown_name" and "backend" not in span.attributes
        assert span.status.status_code is trace.StatusCode.ERROR
