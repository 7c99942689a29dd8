"""Resource updates fanned out to many subscribed clients: latency from the backend's send to each client, and
the aggregator's memory per idle subscribed client.

    .venv/bin/python bench/aggregator/subscriptions.py [--clients 1000] [--updates 20] [--workers 4]

Real processes: one backend (tests/support/resource_backend.py, the Python SDK's low-level server, legacy
sessions), the aggregator (the in-process `Aggregator` in a child, calling the backend directly), and
`--workers` client processes that share `--clients` legacy sessions made over raw HTTP: `initialize`,
`resources/subscribe note://0`, and the session's GET stream, read as it comes on a plain socket. The aggregator holds one
upstream subscription for all of them. Each update is the backend's `touch` tool, which stamps
`time.monotonic()` (the machine's clock, the same in every process) just before it sends; a client's latency
is its own `time.monotonic()` when it has read the notification, minus that stamp. The aggregator's share is
measured in it too: from the backend's notification reaching the fan-out to each session's SSE chunk being handed
to the HTTP server (the ASGI send of the session's GET request, which writes the socket). The next update goes
out once every client has heard the previous one.

The aggregator child manages the garbage collector as `xds-control aggregator` does (`manage_gc`,
aggregator/collector.py: start-up objects frozen, settled sessions frozen out of full collections a tick after
they open; the updates start once it has); `--no-manage-gc` leaves the sessions in the collector, to show what a full collection over them
costs the updates it delays. The full collections made in the aggregator while the updates go out are counted
(a `gc.callbacks` probe), with the longest.

Memory: the aggregator's RSS growth while the clients open their sessions and GET streams, then while they
subscribe, each per client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx2

URI = "note://0"
LEGACY = "2025-11-25"
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "b", "version": "0"}}}  # fmt: skip

SERVER = """
import asyncio, gc, sys, time
from dataclasses import replace
from tests.aggregator.support import fetch_catalog
from xds_control.aggregator.resource_updates import ResourceSubscriptions
from xds_control.aggregator import Aggregator, StoreViewSource, direct_upstream_url
from xds_control.config import parse_config
from xds_control.view import BackendState, ViewStore

# the aggregator's own share: from the backend's notification reaching `updated` to each session's SSE chunk being
# handed to the HTTP server (the ASGI send of the session's GET request, which writes the socket)
arrived: list[float] = []
fanout: list[float] = []
_updated = ResourceSubscriptions.updated

async def updated(self, backend, uri):
    arrived.append(time.monotonic())
    await _updated(self, backend, uri)

ResourceSubscriptions.updated = updated

def timed(app):
    async def wrapped(scope, receive, send):
        async def timed_send(message):
            if b"resources/updated" in message.get("body", b""):
                fanout.append((time.monotonic() - arrived[-1]) * 1000)
            await send(message)
        await app(scope, receive, timed_send if scope.get("method") == "GET" else send)
    return wrapped

# full (generation 2) collections while the updates go out: how many, and the longest
full_gcs: list[float] = []
_gc_started = [0.0]

def gc_probe(phase, info):
    if info["generation"] == 2:
        if phase == "start":
            _gc_started[0] = time.perf_counter()
        else:
            full_gcs.append((time.perf_counter() - _gc_started[0]) * 1000)

async def main() -> None:
    n, port, backend, manage_gc = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "manage"
    config = parse_config({"aggregator": {"port": port, "max_sessions": n + 100, "max_opening_sessions": n + 100},
                           "backends": [{"name": "notes", "url": backend, "protocol": "legacy"}]})
    store = ViewStore(config)
    catalog = await fetch_catalog(backend)
    store.update_backend("notes", lambda s: replace(s, state=BackendState.HEALTHY, catalog=catalog))
    aggregator = Aggregator(config, StoreViewSource(store), upstream_url=direct_upstream_url, manage_gc=manage_gc)
    aggregator.app = timed(aggregator.app)
    async with aggregator.running(), aggregator.serving("127.0.0.1", port) as url:
        await aggregator.wait_for_view(store.version)
        gc.freeze()  # as `xds-control aggregator` does once started: start-up objects leave the collector's scans
        print("READY", url, flush=True)
        while (line := await asyncio.to_thread(sys.stdin.readline)):
            if line.strip() == "fanout":
                gc.callbacks.remove(gc_probe)
                fanout.sort()
                print("FANOUT", fanout[len(fanout) // 2], fanout[int(len(fanout) * 0.99)], fanout[-1],
                      len(full_gcs), max(full_gcs, default=0.0), flush=True)
                continue
            if manage_gc:  # the updates start once the collector has frozen what settled, as it does in service
                table, subs = aggregator.sessions, aggregator.subscriptions.table
                deadline = time.monotonic() + 30
                while aggregator.gc_policy.opened_seen != table.opened_total + table.streams_total + subs.subscribed_total:
                    if time.monotonic() > deadline:
                        raise SystemExit("the collector never froze the settled sessions")
                    await asyncio.sleep(0.1)  # polling a condition with a deadline
            fanout.clear()
            gc.callbacks.append(gc_probe)
            print("SUBSCRIPTIONS", len(aggregator.subscriptions.table), aggregator.subscriptions.table.subscriber_count(), flush=True)

asyncio.run(main())
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# -- a worker process: `count` legacy sessions ------------------------------------------------------------------


async def session(http: httpx2.AsyncClient, url: str) -> dict[str, str]:
    answer = await http.post(url, content=json.dumps(INIT), headers=HEADERS)
    headers = {**HEADERS, "mcp-session-id": answer.headers["mcp-session-id"], "mcp-protocol-version": LEGACY}
    await http.post(url, content=b'{"jsonrpc":"2.0","method":"notifications/initialized"}', headers=headers)
    return headers


async def read_stream(url: str, headers: dict[str, str], opened: asyncio.Event) -> None:
    """The session's GET stream on a plain socket (lighter than an HTTP client: the figure is the gateway's)."""
    parsed = httpx2.URL(url)
    reader, writer = await asyncio.open_connection(parsed.host, parsed.port)
    lines = [
        f"GET {parsed.raw_path.decode()} HTTP/1.1",
        f"host: {parsed.host}:{parsed.port}",
        "accept: text/event-stream",
    ]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.startswith("mcp-")]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    status = await reader.readline()
    assert b" 200 " in status, status
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    opened.set()
    while line := await reader.readline():
        if b"notifications/resources/updated" in line:
            print("GOT", time.monotonic(), flush=True)


async def worker(url: str, count: int) -> None:
    limits = httpx2.Limits(max_connections=count * 2 + 10, max_keepalive_connections=count * 2 + 10)
    async with httpx2.AsyncClient(trust_env=False, timeout=httpx2.Timeout(60, read=None), limits=limits) as http:
        sessions = []
        for start in range(0, count, 25):
            sessions += await asyncio.gather(*(session(http, url) for _ in range(start, min(count, start + 25))))
        streams = []
        for headers in sessions:
            opened = asyncio.Event()
            streams.append(asyncio.create_task(read_stream(url, headers, opened)))
            await opened.wait()
        print("OPENED", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # go on: subscribe
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "resources/subscribe", "params": {"uri": URI}})
        for start in range(0, count, 25):
            answers = await asyncio.gather(
                *(http.post(url, content=body, headers=h) for h in sessions[start : start + 25])
            )
            assert all(a.status_code == 200 and "error" not in a.json() for a in answers), answers[0].text
        print("SUBSCRIBED", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # until told to stop
        for task in streams:
            task.cancel()


# -- the driver ------------------------------------------------------------------------------------------------


async def touch(http: httpx2.AsyncClient, backend: str) -> float:
    """The backend's `touch` tool on its own session; the monotonic time it stamped before sending."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "touch", "arguments": {"uri": URI}}}
    headers = await session(http, backend)
    answer = await http.post(
        backend, content=json.dumps(body), headers={**headers, "accept": "application/json, text/event-stream"}
    )
    text = answer.text
    payload = json.loads(text[text.index("{") :].splitlines()[0]) if not text.startswith("{") else answer.json()
    return float(json.loads(payload["result"]["content"][0]["text"])["sent_at"])


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--no-manage-gc", action="store_true", help="leave the sessions in the collector's scans")
    parser.add_argument("--worker", nargs=2, metavar=("URL", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        await worker(args.worker[0], int(args.worker[1]))
        return 0
    from tests.support.waiting import free_ports

    backend_port, port = free_ports(2)
    backend_url = f"http://127.0.0.1:{backend_port}/mcp"
    procs: list[asyncio.subprocess.Process] = []

    async def spawn(*argv: str) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 20
        )
        procs.append(proc)
        return proc

    async def line(proc: asyncio.subprocess.Process, timeout: float = 120) -> str:
        assert proc.stdout is not None
        return (await asyncio.wait_for(proc.stdout.readline(), timeout)).decode().strip()

    async def tell(proc: asyncio.subprocess.Process, what: bytes = b"go") -> None:
        assert proc.stdin is not None
        proc.stdin.write(what + b"\n")
        await proc.stdin.drain()

    try:
        backend = await spawn(sys.executable, "-m", "tests.support.resource_backend", "--port", str(backend_port))
        assert (await line(backend)).startswith("READY")
        aggregator = await spawn(
            sys.executable, "-c", SERVER, str(args.clients), str(port), backend_url,
            "plain" if args.no_manage_gc else "manage",
        )  # fmt: skip
        url = (await line(aggregator)).split()[-1]
        base = rss_kib(aggregator.pid)
        shares = [args.clients // args.workers + (i < args.clients % args.workers) for i in range(args.workers)]
        workers = [await spawn(sys.executable, __file__, "--worker", url, str(n)) for n in shares if n]
        for w in workers:
            assert await line(w, 300) == "OPENED"
        opened = rss_kib(aggregator.pid)
        for w in workers:
            await tell(w)
        for w in workers:
            assert await line(w, 300) == "SUBSCRIBED"
        subscribed = rss_kib(aggregator.pid)
        await tell(aggregator)
        print(f"aggregator: {await line(aggregator)} (upstream subscriptions, subscribers)")

        latencies: list[float] = []
        async with httpx2.AsyncClient(trust_env=False, timeout=60) as http:
            for _ in range(args.updates):
                sent_at = await touch(http, backend_url)
                got = []
                for w, n in zip(workers, [n for n in shares if n], strict=True):
                    for _ in range(n):
                        got.append(float((await line(w, 60)).split()[1]))
                latencies += [(t - sent_at) * 1000 for t in got]
        await tell(aggregator, b"fanout")
        _, f50, f99, fmax, n_gcs, gc_max = (await line(aggregator)).split()
        latencies.sort()
        p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
        print(
            f"{args.clients} subscribed legacy clients, {args.updates} updates ({len(latencies)} deliveries): "
            f"backend send -> client read p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms, max {latencies[-1]:.1f} ms, "
            f"mean {statistics.fmean(latencies):.1f} ms; of which in the aggregator (notification in -> "
            f"the session's SSE chunk to the HTTP server) p50 {float(f50):.1f} ms, p99 {float(f99):.1f} ms, max {float(fmax):.1f} ms; "
            f"{n_gcs} full garbage collections in the aggregator meanwhile, the longest {float(gc_max):.0f} ms"
        )
        per_session = (opened - base) / args.clients
        per_subscription = (subscribed - opened) / args.clients
        print(
            f"aggregator RSS: +{(opened - base) / 1024:.1f} MiB for {args.clients} sessions with GET streams "
            f"({per_session:.1f} KiB each), +{(subscribed - opened) / 1024:.1f} MiB for their subscriptions "
            f"({per_subscription:.1f} KiB each): {per_session + per_subscription:.1f} KiB per idle subscribed client"
        )
        print(json.dumps({"aggregator_p50_ms": round(float(f50), 2), "aggregator_p99_ms": round(float(f99), 2), "p50_ms": round(p(0.5), 2), "p99_ms": round(p(0.99), 2), "max_ms": round(latencies[-1], 2), "full_gcs": int(n_gcs), "full_gc_max_ms": round(float(gc_max)),
                          "kib_per_session": round(per_session, 1), "kib_per_subscription": round(per_subscription, 1)}))  # fmt: skip
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            await proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
