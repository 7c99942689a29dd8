"""The demo MCP backend as a real process, driven by real SDK clients of both protocol families."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ToolsListChanged

from examples.backends.faults import HUGE_BODY_BYTES
from tests.support.procs import ROOT, Proc, demo_backend, python_module
from tests.support.waiting import free_port

pytestmark = pytest.mark.integration

MODERN = "2026-07-28"
ACCEPT = "application/json, text/event-stream"
CALLS = {  # catalog -> (tool call, expected text fragment, resource uri, prompt)
    "weather": (
        ("get_forecast", {"city": "Oslo", "days": 2}),
        "Oslo day 2",
        "weather://stations",
        ("weather_briefing", {"city": "Oslo"}),
    ),
    "calendar": (
        ("list_events", {"date": "2026-01-05"}),
        "Standup",
        "calendar://today",
        ("plan_day", {"date": "2026-01-05"}),
    ),
    "notes": (
        ("search_notes", {"query": "memory"}),
        "1: Welcome",
        "notes://index",
        ("summarize_notes", {"topic": "x"}),
    ),
    "scratch": (("add", {"a": 2, "b": 3}), "5", "demo://scratch/info", ("greet", {"name": "Ada"})),
}


def leaves(exc: BaseException) -> list[BaseException]:
    """The non-group exceptions inside (possibly nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def url_of(proc: Proc) -> str:
    return proc.wait_for_line("READY", timeout=30).split()[1]


def stop(proc: Proc) -> int:
    """SIGTERM (SIGKILL after 10 s), then close the pipe `Proc` leaves open; the exit status."""
    status = proc.stop()
    if proc.popen.stdout is not None:
        proc.popen.stdout.close()
    return status


def start_backend(name: str, *args: str) -> Proc:
    """A demo backend on a port the OS picks (the READY line names it)."""
    return python_module("examples.backends.demo_server", "--name", name, "--port", "0", *args, name=f"backend-{name}")


@pytest.fixture
def backend() -> Iterator[Callable[..., Proc]]:
    """Start demo backends and wait for READY; every one is stopped when the test ends."""
    procs: list[Proc] = []

    def start(name: str = "scratch", *args: str) -> Proc:
        procs.append(start_backend(name, *args))
        url_of(procs[-1])
        return procs[-1]

    try:
        yield start
    finally:
        for proc in procs:
            stop(proc)


@pytest.fixture(scope="module")
def catalogs() -> Iterator[dict[str, str]]:
    procs: dict[str, Proc] = {}
    try:
        for name in CALLS:  # start all, then wait: they boot in parallel
            procs[name] = start_backend(name)
        yield {name: url_of(proc) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            stop(proc)


@asynccontextmanager
async def http(**kwargs: object) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(5.0), **kwargs) as client:  # type: ignore[arg-type]
        yield client


def discover_request(version: str = MODERN) -> tuple[dict[str, str], dict[str, object]]:
    meta = {"io.modelcontextprotocol/protocolVersion": version, "io.modelcontextprotocol/clientCapabilities": {}}
    headers = {
        "accept": ACCEPT,
        "content-type": "application/json",
        "mcp-protocol-version": version,
        "mcp-method": "server/discover",
    }
    return headers, {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta}}


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}},
}


def sse_data(text: str) -> dict[str, object]:
    """The JSON-RPC message in a one-event SSE body."""
    return json.loads(next(line[5:] for line in text.splitlines() if line.startswith("data:")))


@pytest.mark.parametrize("mode", ["legacy", MODERN, "auto"])
@pytest.mark.parametrize("name", list(CALLS))
async def test_each_catalog_serves_tools_resource_and_prompt_to_both_families(
    catalogs: dict[str, str], name: str, mode: str
) -> None:
    (tool, arguments), expected, uri, (prompt, prompt_args) = CALLS[name]
    async with Client(catalogs[name], mode=mode) as client:
        assert client.protocol_version == ("2025-11-25" if mode == "legacy" else MODERN)
        tools = await client.list_tools()
        assert tool in {t.name for t in tools.tools} and 2 <= len(tools.tools) <= 3
        result = await client.call_tool(tool, arguments)
        assert not result.is_error and expected in result.content[0].text
        assert (await client.list_resources()).resources[0].uri == uri
        assert (await client.read_resource(uri)).contents[0].text
        assert (await client.get_prompt(prompt, prompt_args)).messages[0].content.text


@pytest.mark.parametrize("mode", ["legacy", MODERN])
async def test_errors_are_tool_results_or_json_rpc_errors_with_data(catalogs: dict[str, str], mode: str) -> None:
    async with Client(catalogs["weather"], mode=mode) as client:
        bad_args = await client.call_tool("get_forecast", {"city": "Oslo", "days": 9})
        assert bad_args.is_error and "between 1 and 7" in bad_args.content[0].text
        with pytest.raises(MCPError) as unknown:
            await client.call_tool("no_such_tool", {})
        assert unknown.value.code == types.INVALID_PARAMS
        assert unknown.value.error.data == {"tool": "no_such_tool", "backend": "weather"}


async def test_legacy_initialize_ping_and_unknown_session_on_the_wire(catalogs: dict[str, str]) -> None:
    async with http() as client:
        init = await client.post(catalogs["notes"], json=INITIALIZE, headers={"accept": ACCEPT})
        assert init.status_code == 200 and init.headers["content-type"].startswith("text/event-stream")
        assert sse_data(init.text)["result"]["capabilities"]["tools"] == {"listChanged": True}
        session = {
            "accept": ACCEPT,
            "mcp-session-id": init.headers["mcp-session-id"],
            "mcp-protocol-version": "2025-11-25",
        }
        done = await client.post(
            catalogs["notes"], json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session
        )
        assert done.status_code == 202
        ping = await client.post(catalogs["notes"], json={"jsonrpc": "2.0", "id": 2, "method": "ping"}, headers=session)
        assert sse_data(ping.text) == {"jsonrpc": "2.0", "id": 2, "result": {}}
        stale = await client.post(
            catalogs["notes"],
            json={"jsonrpc": "2.0", "id": 3, "method": "ping"},
            headers={**session, "mcp-session-id": "0" * 32},
        )
        assert stale.status_code == 404 and stale.json()["error"]["message"] == "Session not found"


async def test_modern_discover_on_the_wire(catalogs: dict[str, str]) -> None:
    headers, body = discover_request()
    async with http() as client:
        reply = await client.post(catalogs["notes"], json=body, headers=headers)
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/json"
    result = reply.json()["result"]
    assert result["supportedVersions"] == [MODERN] and result["capabilities"]["tools"] == {"listChanged": True}
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "notes"


async def test_legacy_family_serves_the_handshake_only(backend: Callable[..., Proc]) -> None:
    url = url_of(backend("scratch", "--family", "legacy"))
    headers, body = discover_request()
    async with http() as client:
        reply = await client.post(url, json=body, headers=headers)
    assert reply.status_code == 400 and reply.json()["error"]["message"] == "Bad Request: Missing session ID"
    async with Client(url, mode="auto") as client:
        assert client.protocol_version == "2025-11-25"
        assert (await client.call_tool("echo", {"text": "hi"})).content[0].text == "hi"


async def test_modern_family_refuses_the_handshake_with_its_versions(backend: Callable[..., Proc]) -> None:
    url = url_of(backend("scratch", "--family", "modern"))
    async with http() as client:
        reply = await client.post(url, json=INITIALIZE, headers={"accept": ACCEPT})
    assert reply.status_code == 400
    assert reply.json()["error"] == {
        "code": -32022,
        "message": "Unsupported protocol version",
        "data": {"supported": [MODERN], "requested": "2025-11-25"},
    }
    with pytest.raises(BaseException) as refused:
        async with Client(url, mode="legacy"):
            pass
    assert [getattr(e, "code", None) for e in leaves(refused.value)] == [-32022]
    async with Client(url, mode="auto") as client:
        assert client.protocol_version == MODERN


@pytest.mark.parametrize("mode", ["legacy", MODERN])
async def test_bearer_token_is_required(backend: Callable[..., Proc], mode: str) -> None:
    url = url_of(backend("scratch", "--token", "s3cret"))
    statuses: list[int] = []

    async def record(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    async with http(event_hooks={"response": [record]}) as client:
        with pytest.raises(BaseException) as refused:
            async with Client(streamable_http_client(url, http_client=client), mode=mode) as mcp:
                await mcp.list_tools()
    assert statuses[0] == 401 and all(isinstance(e, MCPError) for e in leaves(refused.value))
    async with http(headers={"authorization": "Bearer s3cret"}) as client:
        async with Client(streamable_http_client(url, http_client=client), mode=mode) as mcp:
            assert (await mcp.call_tool("echo", {"text": "ok"})).content[0].text == "ok"


async def test_token_file_is_reread_on_every_request(backend: Callable[..., Proc], tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    url = url_of(backend("scratch", "--token-file", str(token_file)))
    headers, body = discover_request()

    async def status(token: str) -> int:
        async with http() as client:
            return (
                await client.post(url, json=body, headers={**headers, "authorization": f"Bearer {token}"})
            ).status_code

    assert (await status("first"), await status("second")) == (200, 401)
    token_file.write_text("second")
    assert (await status("first"), await status("second")) == (401, 200)


@pytest.mark.parametrize(
    ("fault", "status", "header"),
    [
        ("http429", 429, ("retry-after", "2")),
        ("http500", 500, None),
        ("http401", 401, ("www-authenticate", 'Bearer error="invalid_token"')),
    ],
)
async def test_http_error_faults(
    backend: Callable[..., Proc], fault: str, status: int, header: tuple[str, str] | None
) -> None:
    url = url_of(backend("scratch", "--fault", fault))
    headers, body = discover_request()
    async with http() as client:
        reply = await client.post(url, json=body, headers=headers)
    assert reply.status_code == status
    if header is not None:
        assert reply.headers[header[0]] == header[1]


async def test_garbage_fault_answers_200_with_a_body_that_is_not_json(backend: Callable[..., Proc]) -> None:
    url = url_of(backend("scratch", "--fault", "garbage"))
    async with http() as client:
        reply = await client.post(url, json=INITIALIZE, headers={"accept": ACCEPT})
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/json"
    with pytest.raises(ValueError):
        json.loads(reply.content)


async def test_huge_fault_streams_a_50_mib_body(backend: Callable[..., Proc]) -> None:
    url = url_of(backend("scratch", "--fault", "huge"))
    headers, body = discover_request()
    size = 0
    async with http() as client, client.stream("POST", url, json=body, headers=headers) as reply:
        assert reply.status_code == 200 and int(reply.headers["content-length"]) == HUGE_BODY_BYTES
        async for chunk in reply.aiter_bytes():
            size += len(chunk)
    assert size == HUGE_BODY_BYTES


async def test_hang_fault_accepts_and_never_answers(backend: Callable[..., Proc]) -> None:
    proc = backend("scratch", "--fault", "hang")
    headers, body = discover_request()
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(5.0, read=0.5)) as client:
        with pytest.raises(httpx2.ReadTimeout):
            await client.post(url_of(proc), json=body, headers=headers)
    assert stop(proc) == 0  # a hanging request does not stall shutdown


async def test_fault_file_switches_the_mode_while_running(backend: Callable[..., Proc], tmp_path: Path) -> None:
    fault_file = tmp_path / "fault"
    url = url_of(backend("scratch", "--fault-file", str(fault_file)))
    headers, body = discover_request()

    async def status() -> int:
        async with http() as client:
            return (await client.post(url, json=body, headers=headers)).status_code

    assert await status() == 200
    fault_file.write_text("http500\n")
    assert await status() == 500
    fault_file.write_text("")
    assert await status() == 200


async def test_runtime_tool_changes_reach_legacy_and_modern_clients(backend: Callable[..., Proc]) -> None:
    proc = backend("scratch")
    url = url_of(proc)
    legacy_heard, get_stream_open = anyio.Event(), anyio.Event()
    heard: list[str] = []

    async def on_message(message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            heard.append(message.method)
            legacy_heard.set()

    async def on_response(response: httpx2.Response) -> None:
        if response.request.method == "GET" and response.status_code == 200:
            get_stream_open.set()  # notifications sent before the GET stream exists are dropped

    async with (
        http(event_hooks={"response": [on_response]}) as client,
        Client(streamable_http_client(url, http_client=client), mode="legacy", message_handler=on_message) as legacy,
        Client(url, mode=MODERN) as modern,
        modern.listen(tools_list_changed=True) as subscription,
    ):
        assert legacy.server_capabilities.tools is not None and legacy.server_capabilities.tools.list_changed
        with anyio.fail_after(10):
            await get_stream_open.wait()
        for change, present in ((signal.SIGUSR1, True), (signal.SIGUSR2, False)):
            legacy_heard = anyio.Event()
            proc.signal(change)
            with anyio.fail_after(10):
                assert await anext(subscription) == ToolsListChanged()
                await legacy_heard.wait()
            for client_ in (legacy, modern):
                names = {t.name for t in (await client_.list_tools(cache_mode="bypass")).tools}
                assert ("dynamic_1" in names) is present
    assert heard == ["notifications/tools/list_changed"] * 2


async def test_sigterm_ends_listen_streams_gracefully_and_exits_0(backend: Callable[..., Proc]) -> None:
    proc = backend("scratch")
    async with Client(url_of(proc), mode=MODERN) as client, client.listen(tools_list_changed=True) as subscription:
        proc.signal(signal.SIGTERM)
        with anyio.fail_after(10):
            assert [event async for event in subscription] == []  # ends without SubscriptionLost
    assert await anyio.to_thread.run_sync(stop, proc) == 0


@pytest.mark.parametrize("mode", ["legacy", MODERN])
async def test_tools_list_is_paginated(backend: Callable[..., Proc], mode: str) -> None:
    url = url_of(backend("scratch", "--tools", "120", "--page-size", "50"))
    async with Client(url, mode=mode) as client:
        pages, cursor = [], None
        while True:
            page = await client.list_tools(cursor=cursor)
            pages.append(len(page.tools))
            if (cursor := page.next_cursor) is None:
                break
        assert pages == [50, 50, 23]
        with pytest.raises(MCPError) as bad:
            await client.list_tools(cursor="not-a-cursor")
        assert bad.value.code == types.INVALID_PARAMS


@pytest.mark.parametrize("mode", ["legacy", MODERN])
async def test_slow_tool_reports_progress(backend: Callable[..., Proc], mode: str) -> None:
    url = url_of(backend("scratch"))
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async with Client(url, mode=mode) as client:
        result = await client.call_tool("slow", {"seconds": 0.3}, progress_callback=on_progress)
    assert result.content[0].text == "slept 0.3s" and progress == [1, 2, 3]


async def test_host_header_check(backend: Callable[..., Proc]) -> None:
    url = url_of(backend("scratch", "--allowed-host", "gateway", "--allowed-host", "edge:8443"))
    headers, body = discover_request()

    async def status(host: str) -> int:
        async with http() as client:
            return (await client.post(url, json=body, headers={**headers, "host": host})).status_code

    accepted = ["127.0.0.1", "localhost:1", "gateway", "gateway:10001", "edge:8443"]
    assert [await status(h) for h in accepted] == [200] * len(accepted)
    assert [await status(h) for h in ["evil.example", "edge:9999", "edge"]] == [421] * 3


async def test_stateless_and_json_response_variants(backend: Callable[..., Proc]) -> None:
    url = url_of(backend("scratch", "--stateless", "--json-response"))
    async with http() as client:
        init = await client.post(url, json=INITIALIZE, headers={"accept": ACCEPT})
        assert init.headers["content-type"] == "application/json" and "mcp-session-id" not in init.headers
        listing = await client.post(
            url, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers={"accept": ACCEPT}
        )
        assert [t["name"] for t in listing.json()["result"]["tools"]] == ["echo", "add", "slow"]


def test_listens_on_the_port_it_is_given() -> None:
    port = free_port()
    proc = demo_backend("weather", port)
    try:
        assert url_of(proc) == f"http://127.0.0.1:{port}/mcp"
    finally:
        stop(proc)


def test_runs_as_a_script_on_an_os_chosen_port_and_exits_cleanly_on_sigterm_and_sigint() -> None:
    script = ROOT / "examples" / "backends" / "demo_server.py"
    for signum in (signal.SIGTERM, signal.SIGINT):
        proc = Proc([sys.executable, str(script), "--name", "notes", "--port", "0"], name="script")
        try:
            assert url_of(proc).startswith("http://127.0.0.1:")
            proc.signal(signum)
            assert proc.popen.wait(timeout=10) == 0
        finally:
            stop(proc)
