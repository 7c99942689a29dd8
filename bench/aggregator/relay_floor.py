"""The floor under issue 4's "added latency under 2 ms" target: a Python relay that does nothing but forward.

The same stack as calls.py (demo backend, `xds-control serve`, Envoy, every part its own process), but
in the aggregator's place, on its port, a relay of the least a Python process in that seat can do: uvicorn
(httptools, as the aggregator runs it) receives the POST, and the body goes unread to the backend through
Envoy's egress listener on a kept-alive connection (xds_control.http11, the aggregator's own client); the
answer comes back as it came. No JSON parsing, no MCP, no routing. Then the real aggregator in the same
seat, for comparison. Raw 2026-07-28 tools/call at concurrency 1 (calls.py's RawClient), in sequence (one
target after another) and interleaved with direct calls (calls.py's judged figure).

    .venv/bin/python bench/aggregator/relay_floor.py [--calls 400]

Prints, per target, median and p99 latency and CPU per call of each process, and the added latency
of (relay) and (aggregator) over (direct): what the two Envoy hops plus the cheapest possible Python
hop cost on this machine, against what the aggregator costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import calls as c

from xds_control.http11 import HttpClient

FORWARDED = ("content-type", "accept", "mcp-protocol-version", "mcp-method", "mcp-name")


def relay_app(upstream: str) -> Any:
    """An ASGI app that forwards every POST body to `upstream` and returns its answer."""
    client = HttpClient(None, max_idle=32)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"] if k.decode() in FORWARDED}
        async with client.stream("POST", upstream, headers=headers, content=b"".join(chunks)) as response:
            body = b"".join([chunk async for chunk in response.aiter_bytes()])
            content_type = response.headers.get("content-type", "application/json")
        start = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": response.status_code, "headers": start})
        await send({"type": "http.response.body", "body": body})

    return app


def relay_main(host: str, port: int, upstream: str) -> None:
    import uvicorn

    config = uvicorn.Config(
        relay_app(upstream),
        host=host,
        port=port,
        http="httptools",
        lifespan="off",
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        print(f"READY http://{host}:{port}/mcp", flush=True)
        await task

    asyncio.run(serve())


async def measure(target: c.Target, calls: int, seconds: float) -> c.Cell:
    return await c.measure("raw", target, target.tool, c.MODERN, 1, calls, seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--blocks", type=int, default=20, help="rounds of the interleaved measurement")
    parser.add_argument("--relay", nargs=3, metavar=("HOST", "PORT", "UPSTREAM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.relay:
        relay_main(args.relay[0], int(args.relay[1]), args.relay[2])
        return 0
    print(f"cpus: {os.cpu_count()}, load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    results: dict[str, c.Cell] = {}
    paired: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, c.stopping([]) as procs:
        backend_url, backend_pid = c.start_backend(procs, "alpha", "--family", "both")
        config, pids = c.start_gateway([{"name": "alpha", "url": backend_url}], Path(tmp), procs)
        direct = c.Target("direct", "(a) direct", backend_url, "echo", {"backend": backend_pid})
        gateway = c.Target(
            "gateway",
            "(b) aggregator",
            config.public_url(),
            "alpha_echo",
            {"backend": backend_pid, "envoy": pids["envoy"], "aggregator": pids["aggregator"]},
        )
        healthz = f"http://{config.aggregator.address}:{config.aggregator.port}/healthz"
        asyncio.run(c.wait_gateway_ready(healthz, gateway, 1, 1))
        results["direct"] = asyncio.run(measure(direct, args.calls, args.seconds))
        results["aggregator"] = asyncio.run(measure(gateway, args.calls, args.seconds))
        paired["aggregator"] = asyncio.run(c.measure_interleaved([direct, gateway], c.MODERN, args.blocks, 25)).added(
            "gateway"
        )
        aggregator = next(p for p in procs if p.popen.pid == pids["aggregator"])
        aggregator.stop()
        relay = c.child(
            [
                sys.executable,
                __file__,
                "--relay",
                config.aggregator.address,
                str(config.aggregator.port),
                config.egress_url("alpha"),
            ],
            "relay",
        )
        procs.append(relay)
        c.ready_url(relay)
        # The relay forwards the client's tool name as is: call the backend's own name through it.
        relayed = c.Target(
            "relay",
            "(r) relay",
            config.public_url(),
            "echo",
            {"backend": backend_pid, "envoy": pids["envoy"], "relay": relay.popen.pid},
        )
        results["relay"] = asyncio.run(measure(relayed, args.calls, args.seconds))
        paired["relay"] = asyncio.run(c.measure_interleaved([direct, relayed], c.MODERN, args.blocks, 25)).added(
            "relay"
        )
    base = results["direct"].median
    print(f"\n{'target':16} | {'calls':>5} | {'median':>7} | {'p99':>7} | {'added':>6} | CPU per call by process (ms)")
    for key, cell in results.items():
        cpu = ", ".join(f"{name} {value:.2f}" for name, value in cell.cpu_ms.items())
        print(
            f"{key:16} | {len(cell.samples):5d} | {cell.median:7.2f} | {cell.p99:7.2f} | {cell.median - base:6.2f} | {cpu}"
        )
    print(
        f"\nadded median latency, modern raw client, c=1: relay {results['relay'].median - base:.2f} ms, "
        f"aggregator {results['aggregator'].median - base:.2f} ms (target < 2 ms)"
    )
    print(
        f"the same, interleaved with direct calls ({args.blocks} rounds of 25 calls each, calls.py's judged figure): "
        f"relay {paired['relay']:.2f} ms, aggregator {paired['aggregator']:.2f} ms"
    )
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(
        f"total {time.monotonic() - started:.0f} s; load average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    raise SystemExit(code)
