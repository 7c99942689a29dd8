"""Attacks through a backend's catalog: endless pages, and names no client should see."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.request
from typing import Any

from tests.hostile.support import Finding, HostileStack, Scale, StackSpec, attack
from tests.support.procs import Proc


def evil(mode: str, *args: str) -> Any:
    def start(stack: HostileStack) -> list[dict[str, Any]]:
        proc = stack.own(
            Proc([sys.executable, "-m", "tests.hostile.evil_backend", "--mode", mode, *args], name=f"evil-{mode}")
        )
        url = proc.wait_for_line("READY", timeout=30).split()[-1]
        return [{"name": "evil", "url": url}]

    return start


def list_all_pages(stack: HostileStack) -> tuple[int, int, int]:
    """ListBackends page by page with a default grpcio client (4 MB limit): (pages, largest bytes, backends)."""
    import grpc

    from xds_control.admin.v1 import admin_pb2 as pb
    from xds_control.admin.v1 import admin_pb2_grpc as pb_grpc

    pages, largest, backends, token = 0, 0, 0, ""
    with grpc.insecure_channel(stack.admin_target) as channel:
        stub = pb_grpc.AdminStub(channel)
        while True:
            page = stub.ListBackends(pb.ListBackendsRequest(page_token=token), timeout=30)
            pages, largest, backends = pages + 1, max(largest, page.ByteSize()), backends + len(page.backends)
            token = page.next_page_token
            if not token:
                return pages, largest, backends


async def wait_for(stack: HostileStack, predicate: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        backend = await asyncio.to_thread(stack.backend, "evil")
        if predicate(backend):
            return backend
        if time.monotonic() > deadline:
            raise AssertionError(f"evil backend never reached the expected state: {backend}")
        await asyncio.sleep(0.1)


@attack(
    "catalog-endless-pages",
    surface="backend catalog: 1 MB pages with a fresh nextCursor forever",
    # A breaker that never opens: every probe refetches the too-large catalog while the observer watches.
    stack=StackSpec(aggregator=True, before=evil("pages"), config={"circuit_breaker": {"failure_threshold": 1000}}),
)
async def endless_pages(stack: HostileStack, scale: Scale) -> Finding:
    backend = await wait_for(stack, lambda b: b.last_error == "catalog_too_large")
    probes = scale.pick(2, 10)  # more refetches of the too-large catalog while the observer watches
    failures = backend.consecutive_failures
    await wait_for(stack, lambda b: b.consecutive_failures >= failures + probes)
    pages, largest, listed = await asyncio.to_thread(list_all_pages, stack)
    return Finding(
        f"backend evil: {backend.last_error} (state {backend.state}, catalog hash {backend.catalog_hash or 'none'})",
        {"last_error": backend.last_error, "list_pages": pages, "largest_list_page_bytes": largest, "listed": listed},
    )


def mcp_tool_names(stack: HostileStack) -> list[str]:
    """Every tool name `tools/list` on Envoy's /mcp answers (2026-07-28, one request per page)."""
    from tests.hostile.observer import MCP_META, MCP_VERSION

    names: list[str] = []
    cursor = None
    for _ in range(100):
        params: dict[str, Any] = {"_meta": MCP_META}
        if cursor:
            params["cursor"] = cursor
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": params}).encode()
        request = urllib.request.Request(
            stack.mcp_url,
            data=body,
            headers={
                "content-type": "application/json",
                "accept": "application/json, text/event-stream",
                "mcp-protocol-version": MCP_VERSION,
                "mcp-method": "tools/list",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            result = json.loads(response.read())["result"]
        names += [t["name"] for t in result["tools"]]
        cursor = result.get("nextCursor")
        if not cursor:
            break
    return names


@attack(
    "catalog-hostile-names",
    surface="backend catalog: tool and prompt names with NUL, ESC, newline, U+202E, 10 KB, spaces",
    stack=StackSpec(aggregator=True, before=evil("names")),
)
async def hostile_names(stack: HostileStack, scale: Scale) -> Finding:
    await wait_for(stack, lambda b: b.routable and b.tool_count >= 1)
    names = []
    deadline = time.monotonic() + 30
    while not any(n.startswith("evil") for n in names) and time.monotonic() < deadline:
        names = await asyncio.to_thread(mcp_tool_names, stack)
        await asyncio.sleep(0.1)
    evil_names = [n for n in names if n.startswith("evil")]
    with urllib.request.urlopen(f"http://{stack.cfg.control_plane.metrics}/metrics", timeout=10) as response:
        metric_lines = [
            line
            for line in response.read().decode().splitlines()
            if line.startswith("xds_control_catalog_items_dropped_total{") and 'backend="evil"' in line
        ]
    dropped = sum(float(line.rsplit(" ", 1)[1]) for line in metric_lines)
    log = stack.log()
    return Finding(
        f"{len(evil_names)} evil tool(s) reach clients: {evil_names}",
        {"evil_names": evil_names, "dropped_metric": dropped, "raw_control_in_log": "\x1b" in log or "\u202e" in log},
    )
