"""Aggregator benchmark: the merged catalog at 4,000 tools, and calls through the aggregator.

1. Merge: `merge_catalog` for N tools split over B backends (default 2; priority mode: every backend lists the
   same names `tool_0..`, so all but the first backend's names conflict and get the prefix).
2. tools/list in process: one page (`Gateway.list_page` + the SDK's per-version result serialization),
   for the first and the last page.
3. tools/list over HTTP with a real SDK client, legacy and modern: one page as the client sees it and as the
   server spends it (an ASGI wrapper: body in to the answer's last byte), and a full walk of every page.
   Client and aggregator share this process (and the machine's cores), so the client-side figures include
   the SDK client's own parsing.
4. tools/call round trip, direct to a demo backend vs through the aggregator, legacy and modern clients
   (skip with --no-calls).

Run: .venv/bin/python bench/aggregator/tools_list.py [--tools 4000] [--backends 2] [--rounds 50] [--no-calls]
(200 backends x 20 tools: --backends 200; bench/aggregator/calls.py runs that with --no-calls)
Target (issue 4): tools/list with 4,000 tools under 10 ms median.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mcp_types import methods

from tests.aggregator.support import FAMILIES, MODERN, fetch_catalog, make_config, mcp_client
from tests.support.procs import demo_backend
from tests.support.waiting import free_port
from xds_control.aggregator import Aggregator, StoreViewSource, direct_upstream_url
from xds_control.aggregator.catalog import merge_catalog
from xds_control.view import BackendState, Catalog, ViewStore


def tools(n: int, backend: str) -> list[dict[str, Any]]:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    }
    return [
        {"name": f"tool_{i}", "description": f"Tool {i} of {backend}: does a thing with a city.", "inputSchema": schema}
        for i in range(n)
    ]


def stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered), 3),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 3),
    }


async def timed(fn: Callable[[], Awaitable[Any]], rounds: int) -> dict[str, float]:
    await fn()  # warm up
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - started) * 1000)
    return stats(samples)


def sync_timed(fn: Callable[[], Any], rounds: int) -> dict[str, float]:
    fn()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return stats(samples)


async def walk(client: Any) -> int:
    count, cursor = 0, None
    while True:
        page = await client.list_tools(cursor=cursor)
        count += len(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            return count


def timing_lists(app: Any, server_ms: list[float]) -> Any:
    """The ASGI app, timing each `tools/list` POST from its body's arrival to its answer's last byte.

    Timed at the HTTP layer, not in the SDK: repeats of a modern list request are answered in front of the
    SDK (endpoint.py, from the catalog's page memo), so an SDK middleware would see only the first.
    """

    async def timed_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await app(scope, receive, send)
        started: list[float] = []

        async def receive_timed() -> Any:
            message = await receive()
            if not started and b'"tools/list"' in message.get("body", b""):
                started.append(time.perf_counter())
            return message

        async def send_timed(message: Any) -> None:
            await send(message)
            if started and message["type"] == "http.response.body" and not message.get("more_body"):
                server_ms.append((time.perf_counter() - started.pop()) * 1000)

        await app(scope, receive_timed, send_timed)

    return timed_app


@contextlib.asynccontextmanager
async def aggregator_over(
    entries: list[dict[str, Any]], catalogs: dict[str, Catalog], server_ms: list[float] | None = None
) -> Any:
    port = free_port()
    config = make_config(entries, port=port, conflict_resolution="priority")
    store = ViewStore(config)
    for name, cat in catalogs.items():
        store.update_backend(name, lambda s, c=cat: replace(s, state=BackendState.HEALTHY, catalog=c))
    aggregator = Aggregator(config, StoreViewSource(store), upstream_url=direct_upstream_url)
    async with aggregator.running():
        await aggregator.wait_for_view(store.version)
        if server_ms is not None:
            aggregator.app = timing_lists(aggregator.app, server_ms)
        async with aggregator.serving("127.0.0.1", port) as url:
            yield aggregator, url


async def catalog_benchmarks(n: int, rounds: int, backends: int = 2) -> dict[str, Any]:
    names = ["a", "b"] if backends == 2 else [f"b{i}" for i in range(backends)]
    sizes = [n // backends + (1 if i < n % backends else 0) for i in range(backends)]
    catalogs = {name: Catalog.build(tools=tools(size, name)) for name, size in zip(names, sizes, strict=True)}
    entries = [
        {"name": name, "url": f"http://127.0.0.1:{20000 + i}/mcp"} for i, name in enumerate(names)
    ]  # never called
    results: dict[str, Any] = {"tools": n, "backends": backends}
    server_ms: list[float] = []
    async with aggregator_over(entries, catalogs, server_ms) as (aggregator, url):
        gateway = aggregator.gateway
        statuses = {name: replace(aggregator.follower.source.store.current.backends[name]) for name in catalogs}  # type: ignore[attr-defined]
        results["merge"] = sync_timed(lambda: merge_catalog(aggregator.config, statuses), max(5, rounds // 5))
        last_cursor = None
        page = gateway.list_page("tools", None)
        while page.get("nextCursor"):
            last_cursor = page["nextCursor"]
            page = gateway.list_page("tools", last_cursor)
        for version in ("2025-11-25", MODERN):

            def first_page(v: str = version) -> Any:
                return methods.serialize_server_result(
                    "tools/list", v, {"ttlMs": 0, "cacheScope": "public", **gateway.list_page("tools", None)}
                )

            def last_page(v: str = version) -> Any:
                return methods.serialize_server_result(
                    "tools/list", v, {"ttlMs": 0, "cacheScope": "public", **gateway.list_page("tools", last_cursor)}
                )

            results[f"list_page_in_process[{version}]"] = sync_timed(first_page, rounds)
            results[f"list_last_page_in_process[{version}]"] = sync_timed(last_page, rounds)
        for mode in FAMILIES:
            async with mcp_client(url, mode) as client:
                server_ms.clear()
                results[f"list_page_http_client_side[{mode}]"] = await timed(lambda c=client: c.list_tools(), rounds)
                results[f"list_page_http_server_side[{mode}]"] = stats(server_ms[1:])
                assert await walk(client) == n
                results[f"list_all_pages_http[{mode}]"] = await timed(lambda c=client: walk(c), max(5, rounds // 5))
    return results


async def call_benchmarks(rounds: int) -> dict[str, Any]:
    port = free_port()
    backend = demo_backend("alpha", port)
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        results: dict[str, Any] = {}
        for upstream_family, mode in (("legacy", "legacy"), ("modern", MODERN)):
            catalog = await fetch_catalog(url, mode=mode)
            entries = [{"name": "alpha", "url": url, "protocol": upstream_family}]
            async with aggregator_over(entries, {"alpha": catalog}) as (_, agg_url):
                for client_mode in FAMILIES:
                    async with mcp_client(agg_url, client_mode) as client:
                        results[f"call_via_aggregator[client={client_mode},backend={upstream_family}]"] = await timed(
                            lambda c=client: c.call_tool("echo", {"text": "x"}), rounds
                        )
            async with mcp_client(url, mode) as client:
                results[f"call_direct[{mode}]"] = await timed(
                    lambda c=client: c.call_tool("echo", {"text": "x"}), rounds
                )
        return results
    finally:
        backend.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tools", type=int, default=4000)
    parser.add_argument(
        "--backends", type=int, default=2, help="split the tools over this many backends (calls.py: 200)"
    )
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--no-calls", action="store_true")
    args = parser.parse_args()
    results = await catalog_benchmarks(args.tools, args.rounds, args.backends)
    if not args.no_calls:
        results.update(await call_benchmarks(args.rounds))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
