"""A relayed elicitation round trip against the direct one (issue 18's "< 3 ms median added" target).

One asking backend (examples/backends/asking_server.py, its own process) and the aggregator in a child process
of its own (in-process `ViewStore`, calling the backend directly: no Envoy, so the figure is the relay's own).
A real SDK client with an elicitation handler calls `confirm` (the backend elicits, the client answers) and
`stats` (no elicitation) alternately, directly and through the aggregator, interleaved in blocks so both see
the same machine load. The elicitation round trip is median(confirm) - median(stats) on each path; the figure
is relayed minus direct.

    .venv/bin/python bench/aggregator/elicitation.py [--calls 300]

Prints medians and p99s, and the aggregator process's CPU per relayed elicitation (confirm - stats, relayed,
one tool after the other); asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import mcp_types as types  # noqa: E402

from tests.aggregator.support import fetch_catalog, make_config, mcp_client  # noqa: E402
from tests.support.procs import Proc, cpu_seconds, python_module  # noqa: E402
from tests.support.waiting import free_port  # noqa: E402


async def serve_aggregator(backend_url: str, port: int) -> None:
    """Child mode: the aggregator over one healthy asking backend, until killed."""
    from xds_control.aggregator import Aggregator, StoreViewSource, direct_upstream_url
    from xds_control.view import BackendState, ViewStore

    catalog = await fetch_catalog(backend_url)
    config = make_config([{"name": "asking", "url": backend_url}], port=port, conflict_resolution="priority")
    store = ViewStore(config)
    store.update_backend("asking", lambda s: replace(s, state=BackendState.HEALTHY, catalog=catalog))
    aggregator = Aggregator(config, StoreViewSource(store), upstream_url=direct_upstream_url)
    async with aggregator.running():
        await aggregator.wait_for_view(store.version)
        async with aggregator.serving("127.0.0.1", port) as url:
            print(f"READY {url}", flush=True)
            await asyncio.Event().wait()


async def elicit(ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"ok": True})


async def timed(client: Any, tool: str, args: dict[str, Any]) -> float:
    started = time.perf_counter()
    await client.call_tool(tool, args)
    return (time.perf_counter() - started) * 1000


async def aggregator_cpu(relayed_url: str, pid: int, calls: int) -> dict[str, float]:
    """The aggregator's CPU ms per call of each tool, relayed, one tool after the other."""
    cpu: dict[str, float] = {}
    async with mcp_client(relayed_url, "legacy", elicitation_callback=elicit) as client:
        for tool, args in (("confirm", {"question": "ok?"}), ("stats", {})):
            before = cpu_seconds(pid)
            for _ in range(calls):
                await client.call_tool(tool, args)
            cpu[tool] = (cpu_seconds(pid) - before) * 1000 / calls
    return cpu


async def measure(direct_url: str, relayed_url: str, calls: int) -> dict[str, dict[str, list[float]]]:
    samples: dict[str, dict[str, list[float]]] = {p: {"confirm": [], "stats": []} for p in ("direct", "relayed")}
    async with (
        mcp_client(direct_url, "legacy", elicitation_callback=elicit) as direct,
        mcp_client(relayed_url, "legacy", elicitation_callback=elicit) as relayed,
    ):
        clients = {"direct": direct, "relayed": relayed}
        for client in clients.values():  # warm up: sessions, connections, caches
            for _ in range(20):
                await client.call_tool("confirm", {"question": "ok?"})
                await client.call_tool("stats", {})
        block = 10
        for _ in range(max(1, calls // block)):
            for path, client in clients.items():
                for _ in range(block):
                    samples[path]["confirm"].append(await timed(client, "confirm", {"question": "ok?"}))
                    samples[path]["stats"].append(await timed(client, "stats", {}))
    return samples


def p99(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.99) - 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--serve-aggregator", nargs=2, metavar=("BACKEND_URL", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_aggregator:
        asyncio.run(serve_aggregator(args.serve_aggregator[0], int(args.serve_aggregator[1])))
        return 0
    backend: Proc | None = None
    aggregator: Proc | None = None
    try:
        port = free_port()
        backend = python_module("examples.backends.asking_server", "--port", str(port), name="asking")
        backend.wait_for_line("READY", timeout=30)
        direct_url = f"http://127.0.0.1:{port}/mcp"
        aggregator = Proc(
            [sys.executable, str(Path(__file__).resolve()), "--serve-aggregator", direct_url, str(free_port())],
            name="aggregator",
        )
        relayed_url = aggregator.wait_for_line("READY", timeout=60).split()[1]
        samples = asyncio.run(measure(direct_url, relayed_url, args.calls))
        cpu = asyncio.run(aggregator_cpu(relayed_url, aggregator.popen.pid, max(10, args.calls // 3)))
    finally:
        for proc in (aggregator, backend):
            if proc is not None:
                proc.stop()
    load = os.getloadavg()
    print(f"elicitation round trip, {args.calls} calls per tool and path, loadavg {load[0]:.2f} {load[1]:.2f}")
    print(f"{'path':8} {'tool':8} {'median ms':>10} {'p99 ms':>8}")
    rtt = {}
    for path, tools in samples.items():
        for tool, values in tools.items():
            print(f"{path:8} {tool:8} {statistics.median(values):10.2f} {p99(values):8.2f}")
        rtt[path] = statistics.median(tools["confirm"]) - statistics.median(tools["stats"])
    print(f"elicitation round trip (median confirm - median stats): direct {rtt['direct']:.2f} ms, "
          f"relayed {rtt['relayed']:.2f} ms")  # fmt: skip
    print(f"added by the relay: {rtt['relayed'] - rtt['direct']:.2f} ms median (target < 3 ms)")
    print(f"aggregator CPU per call: confirm {cpu['confirm']:.2f} ms, stats {cpu['stats']:.2f} ms; "
          f"per relayed elicitation {cpu['confirm'] - cpu['stats']:.2f} ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
