"""Third-party MCP servers from npm behind `xds-control up`, end to end (examples/third_party/).

Real processes on free ports: the npm servers (`@modelcontextprotocol/server-everything`,
`@playwright/mcp`, installed by `./run` with `npm ci --prefix examples/third_party`) and
`xds-control up -c CONFIG --quiet` (control plane, Envoy, aggregator). The config is the example's
own backends section, with every port made free and the probe timings shortened.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp import Client, MCPError

from tests.support.procs import ROOT, Proc
from tests.support.stack import stack_config
from tests.support.waiting import async_wait_until, free_ports
from xds_control.cli import main
from xds_control.config import dump_config, load_config, parse_config
from xds_control.health.probe import EndpointProber

pytestmark = pytest.mark.integration

EXAMPLE = ROOT / "examples" / "third_party"
MODULES = EXAMPLE / "node_modules"
EVERYTHING = MODULES / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
PLAYWRIGHT = MODULES / "@playwright" / "mcp" / "cli.js"
NODE = shutil.which("node")
START = 60.0  # seconds for the whole stack on a loaded 2-core machine
CHANGE = 30.0  # seconds for a health change to reach /mcp (probe interval 0.25 s here)
BACKEND_UNAVAILABLE = -32050

if NODE is None:
    NOT_RUNNABLE: str | None = "node/npm not found: the third-party MCP servers cannot run (./run said so)"
elif not (EVERYTHING.exists() and PLAYWRIGHT.exists()):
    NOT_RUNNABLE = "the npm servers are not installed: run `npm ci --prefix examples/third_party` (./run does it when npm is present)"
else:
    NOT_RUNNABLE = None
needs_servers = pytest.mark.skipif(NOT_RUNNABLE is not None, reason=NOT_RUNNABLE or "")


def test_the_example_config_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(EXAMPLE / "config.yaml")]) == 0, capsys.readouterr().err
    (everything, playwright) = load_config(EXAMPLE / "config.yaml").backends
    assert "get-env" in everything.tools.exclude and everything.protocol == playwright.protocol == "legacy"


def start_everything(port: int) -> Proc:
    assert NODE is not None
    proc = Proc([NODE, str(EVERYTHING), "streamableHttp"], env={"PORT": str(port)}, name="server-everything")
    try:
        proc.wait_for_line(f"listening on port {port}", timeout=30)
    except BaseException:
        proc.stop()
        raise
    return proc


def start_playwright(port: int) -> Proc:
    assert NODE is not None
    argv = [
        NODE,
        str(PLAYWRIGHT),
        "--headless",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--allowed-hosts",
        f"127.0.0.1:{port}",
    ]
    proc = Proc(argv, name="playwright-mcp")
    try:
        proc.wait_for_line(f"Listening on http://localhost:{port}", timeout=30)
    except BaseException:
        proc.stop()
        raise
    return proc


def example_backends(ports: dict[str, int]) -> list[dict[str, Any]]:
    """The example config's backends, each URL moved to the given port."""
    backends = yaml.safe_load((EXAMPLE / "config.yaml").read_text())["backends"]
    for backend in backends:
        backend["url"] = f"http://127.0.0.1:{ports[backend['name']]}/mcp"
    return backends


@dataclass
class Stack:
    endpoint: str
    up: Proc
    servers: dict[str, Proc]
    ports: dict[str, int]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    everything_port, playwright_port = free_ports(2)
    ports = {"everything": everything_port, "playwright": playwright_port}
    servers: dict[str, Proc] = {}
    up: Proc | None = None
    try:
        servers["everything"] = start_everything(everything_port)
        servers["playwright"] = start_playwright(playwright_port)
        config = stack_config(
            example_backends(ports),
            health={"interval": 0.25, "timeout": 2, "unhealthy_threshold": 1},
            circuit_breaker={"open_timeout": 0.5, "max_open_timeout": 1},
        )
        path = tmp_path / "third-party.yaml"
        path.write_text(dump_config(config))
        up = Proc([sys.executable, "-m", "xds_control.cli", "up", "-c", str(path), "--quiet"], name="xds-control-up")
        line = up.wait_for_line("MCP endpoint:", timeout=START)
        yield Stack(line.split("MCP endpoint:")[1].strip(), up, servers, ports)
    finally:
        if up is not None:
            up.stop()
        for server in servers.values():
            server.stop()


async def tool_names(endpoint: str, mode: str = "legacy") -> list[str]:
    async with Client(endpoint, mode=mode, cache=None) as client:
        return [t.name for t in (await client.list_tools()).tools]


async def echo(endpoint: str, message: str, mode: str = "legacy") -> str:
    async with Client(endpoint, mode=mode, cache=None) as client:
        result = await client.call_tool("everything_echo", {"message": message})
        assert not result.is_error, result
        return result.content[0].text


def has_everything(names: list[str]) -> bool:
    return any(name.startswith("everything_") for name in names)


async def both_listed(endpoint: str, mode: str) -> list[str] | None:
    """The merged tool names once both servers' tools are on /mcp, else None."""
    names = await asyncio.wait_for(tool_names(endpoint, mode), 10)
    return names if has_everything(names) and any(n.startswith("playwright_") for n in names) else None


async def everything_listed(endpoint: str, present: bool) -> list[str] | None:
    """The merged tool names once server-everything's tools are (present) or are not on /mcp, else None."""
    names = await asyncio.wait_for(tool_names(endpoint), 10)
    return names if has_everything(names) == present else None


@needs_servers
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_client_of_either_family_sees_the_prefixed_filtered_tools_and_calls_echo(
    stack: Stack, mode: str
) -> None:
    names = await async_wait_until(
        lambda: both_listed(stack.endpoint, mode), timeout=CHANGE, interval=0.1, what="both servers' tools on /mcp"
    )
    assert {
        "everything_echo",
        "everything_get-sum",
        "playwright_browser_navigate",
        "playwright_browser_snapshot",
    } <= set(names)
    # tools.exclude in the example config: no route at all, so not listed and not callable
    hidden = {
        "everything_get-env",
        "playwright_browser_run_code_unsafe",
        "playwright_browser_evaluate",
        "playwright_browser_file_upload",
    }
    assert not hidden & set(names)
    assert all(name.startswith(("everything_", "playwright_")) for name in names)

    assert await asyncio.wait_for(echo(stack.endpoint, f"hello over {mode}", mode), 30) == f"Echo: hello over {mode}"
    async with Client(stack.endpoint, mode=mode, cache=None) as client:
        with pytest.raises(MCPError) as raised:
            await client.call_tool("everything_get-env", {})
    assert raised.value.error.code == -32602  # unknown tool: a filtered tool cannot be called by guessing its name


@needs_servers
async def test_a_killed_server_leaves_mcp_fails_fast_and_comes_back_when_restarted(stack: Stack) -> None:
    endpoint = stack.endpoint
    await async_wait_until(
        lambda: everything_listed(endpoint, True), timeout=CHANGE, interval=0.1, what="everything_* tools on /mcp"
    )
    assert await asyncio.wait_for(echo(endpoint, "before"), 30) == "Echo: before"

    stack.servers["everything"].kill()  # SIGKILL: a crash, not a shutdown
    names = await async_wait_until(
        lambda: everything_listed(endpoint, False), timeout=CHANGE, interval=0.1, what="everything_* to leave /mcp"
    )
    assert any(n.startswith("playwright_") for n in names)  # the other server stays

    for mode in ("legacy", "auto"):
        async with Client(endpoint, mode=mode, cache=None) as client:
            started = time.monotonic()
            with pytest.raises(MCPError) as raised:
                await client.call_tool("everything_echo", {"message": "while down"})
            elapsed = time.monotonic() - started
        error = raised.value.error
        assert error.code == BACKEND_UNAVAILABLE, error
        assert error.data["backend"] == "everything"
        assert error.data["state"] in {"unhealthy", "circuit_open", "circuit_half_open"}
        assert elapsed < 2.0, f"{mode}: the call took {elapsed:.2f}s; an unroutable backend must fail fast"

    stack.servers["everything"] = start_everything(stack.ports["everything"])
    await async_wait_until(
        lambda: everything_listed(endpoint, True), timeout=CHANGE, interval=0.1, what="everything_* back on /mcp"
    )
    for mode in ("legacy", "auto"):
        assert await asyncio.wait_for(echo(endpoint, f"after {mode}", mode), 30) == f"Echo: after {mode}"
    assert stack.up.alive()


@needs_servers
async def test_protocol_auto_detects_a_typescript_sdk_server_as_legacy() -> None:
    (port,) = free_ports(1)
    server = start_everything(port)
    try:
        config = parse_config(
            {"backends": [{"name": "everything", "url": f"http://127.0.0.1:{port}/mcp", "protocol": "auto"}]}
        )
        backend = config.backends[0]
        prober = EndpointProber(backend, backend.endpoint_urls[0], config.health)
        try:
            result = await prober.probe(fetch_catalog=True)
        finally:
            await prober.aclose()
    finally:
        server.stop()
    assert (result.ok, result.category, result.protocol) == (True, None, "legacy")
    assert result.catalog is not None and "echo" in [t["name"] for t in result.catalog.tools]
