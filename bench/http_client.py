"""CPU per request of the project's HTTP/1.1 client (`xds_control/http11.py`) against aiohttp's client.

The question it answers: does the hand-written client still earn its keep against a well-kept client with a C
parser? `http11.py` stays only while it saves more than 20 % of CPU per request against aiohttp here.

The workload is the prober's and the aggregator's: small JSON-RPC POSTs over kept-alive loopback connections
to one server, each answer (a ~300-byte JSON body with Content-Length, or the same as a short event stream)
read to its end. The server is a separate process (`--serve`, a bare asyncio protocol over httptools
answering canned bytes), so the CPU measured (`time.process_time()` of this process) is the client's alone.
Rounds alternate between the clients so that the machine's drift falls on each alike; each round sends
`--requests` requests at concurrency 1 and then at concurrency `--concurrency`.

Clients:
  http11    `HttpClient.stream` (what the prober uses), body read with `aiter_bytes`;
  aiohttp   one `aiohttp.ClientSession` (connector limit = concurrency, no cookie jar, no total timeout,
            no decompression, `skip_auto_headers`), `session.post` and `await response.read()`;
  httpx2    (with `--httpx2`) `httpx2.AsyncClient`, for reference: what the prober and the aggregator left.

    .venv/bin/python bench/http_client.py [--rounds 6] [--requests 2000] [--concurrency 8] [--httpx2]

aiohttp is not a dependency of the project: the script says so and measures http11 alone when it is missing
(`.venv/bin/pip install aiohttp` to compare). Prints CPU us per request per client and workload (median of the
rounds) and the saving of http11 against aiohttp.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REQUEST = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "hello"}, "_meta": {"x": 1}},
    }
).encode()
RESULT = json.dumps(
    {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "hello " * 30}], "isError": False}}
).encode()
ANSWERS = {
    "json": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ndate: Tue, 01 Dec 2026 10:00:00 GMT\r\n"
    b"server: canned\r\ncontent-length: %d\r\n\r\n" % len(RESULT) + RESULT,
    "sse": b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
    + b"%x\r\n" % (len(RESULT) + 23)
    + b"event: message\ndata: "
    + RESULT
    + b"\n\n\r\n0\r\n\r\n",
}
HEADERS = {
    "content-type": "application/json",
    "accept": "application/json, text/event-stream",
    "mcp-protocol-version": "2026-07-28",
    "mcp-method": "tools/call",
}


# -- the server (a child process) ----------------------------------------------------------------------------


def serve() -> None:
    import httptools

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)
            self.path = b""

        def on_url(self, url: bytes) -> None:
            self.path = url

        def on_message_complete(self) -> None:
            self.transport.write(ANSWERS[self.path.rsplit(b"/", 1)[-1].decode()])  # type: ignore[attr-defined]

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Protocol, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin

    asyncio.run(main())


# -- the clients ---------------------------------------------------------------------------------------------

Send = Callable[[str], Awaitable[bytes]]


class Http11:
    def __init__(self, concurrency: int) -> None:
        from xds_control.http11 import HttpClient

        self.client = HttpClient(None, max_idle=concurrency)

    async def send(self, url: str) -> bytes:
        async with self.client.stream("POST", url, headers=HEADERS, content=REQUEST) as response:
            return b"".join([chunk async for chunk in response.aiter_bytes()])

    async def aclose(self) -> None:
        await self.client.aclose()


class Aiohttp:
    def __init__(self, concurrency: int) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency, ssl=False),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )

    async def send(self, url: str) -> bytes:
        async with self.session.post(url, data=REQUEST, headers=HEADERS) as response:
            return await response.read()

    async def aclose(self) -> None:
        await self.session.close()


class Httpx2:
    def __init__(self, concurrency: int) -> None:
        import httpx2

        limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self.client = httpx2.AsyncClient(trust_env=False, limits=limits, timeout=httpx2.Timeout(30))

    async def send(self, url: str) -> bytes:
        response = await self.client.post(url, content=REQUEST, headers=HEADERS)
        return response.content

    async def aclose(self) -> None:
        await self.client.aclose()


async def cpu_per_request(send: Send, url: str, requests: int, concurrency: int) -> float:
    """CPU microseconds of this process per request, `requests` sent by `concurrency` workers."""
    per_worker = max(1, requests // concurrency)

    async def worker() -> None:
        for _ in range(per_worker):
            await send(url)

    began = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - began) * 1e6 / (per_worker * concurrency)


async def run(base: str, clients: dict[str, type], rounds: int, requests: int, concurrency: int) -> dict:
    workloads = [(kind, c) for kind in ANSWERS for c in sorted({1, concurrency})]
    figures: dict[tuple[str, str, int], list[float]] = {}
    made = {name: make(concurrency) for name, make in clients.items()}
    try:
        for client in made.values():  # warm up: connections open, code paths hot
            for kind in ANSWERS:
                await cpu_per_request(client.send, f"{base}/{kind}", 50, concurrency)
        for _ in range(rounds):
            for kind, c in workloads:
                for name, client in made.items():
                    figure = await cpu_per_request(client.send, f"{base}/{kind}", requests, c)
                    figures.setdefault((name, kind, c), []).append(figure)
    finally:
        for client in made.values():
            await client.aclose()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=2000, help="requests per client, workload and round")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--httpx2", action="store_true", help="measure httpx2.AsyncClient too")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return 0
    clients: dict[str, type] = {"http11": Http11}
    try:
        import aiohttp

        clients["aiohttp"] = Aiohttp
        print(f"aiohttp {aiohttp.__version__}")
    except ImportError:
        print("aiohttp is not installed: measuring http11 alone (.venv/bin/pip install aiohttp to compare)")
    if args.httpx2:
        clients["httpx2"] = Httpx2
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        base = f"http://127.0.0.1:{int(server.stdout.readline())}"
        figures = asyncio.run(run(base, clients, args.rounds, args.requests, args.concurrency))
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=10)
    medians = {key: statistics.median(values) for key, values in figures.items()}
    print(f"CPU us per request, client process only (median of {args.rounds} rounds of {args.requests} requests)")
    for (name, kind, c), value in sorted(medians.items(), key=lambda item: (item[0][1], item[0][2], item[0][0])):
        rounds = " ".join(f"{v:.0f}" for v in figures[(name, kind, c)])
        print(f"  {kind:4} c={c:<3} {name:8} {value:8.1f}   rounds: {rounds}")
    if "aiohttp" in clients:
        for kind, c in sorted({(kind, c) for (_, kind, c) in medians}):
            ours, theirs = medians[("http11", kind, c)], medians[("aiohttp", kind, c)]
            print(
                f"http11 saves {100 * (theirs - ours) / theirs:.0f} % of CPU per request against aiohttp: {kind} c={c}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
