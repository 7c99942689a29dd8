"""What a legacy client session costs the aggregator, in memory: opening ones and settled ones.

    .venv/bin/python bench/aggregator/sessions.py [--sessions N]

An aggregator with no backends runs in a child process (the in-process `Aggregator` on a free port). The
benchmark opens N sessions through raw HTTP (`initialize` only: *opening*; then N more that also send
`notifications/initialized`: *settled*) with the caps raised above N, and prints the child's RSS growth per
session of each kind, then the RSS once the sessions have been ended. `aggregator.max_sessions` times the
settled figure bounds what abandoned clients can make the aggregator hold; `aggregator.max_opening_sessions`
times the opening figure bounds what a flood of bare `initialize` requests can. The allocator keeps what
ended sessions freed: the last line opens N sessions again, whose growth shows that memory is reused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx2

INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "b", "version": "0"}}}  # fmt: skip
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


SERVER = """
import asyncio, sys
from xds_control.aggregator import Aggregator, StoreViewSource
from xds_control.config import parse_config
from xds_control.view import ViewStore

async def main() -> None:
    n = int(sys.argv[1]); port = int(sys.argv[2])
    config = parse_config({"aggregator": {"port": port, "max_sessions": 2 * n + 10, "max_opening_sessions": 2 * n + 10,
                                          "session_init_timeout": "1h"}, "backends": []})
    aggregator = Aggregator(config, StoreViewSource(ViewStore(config)))
    async with aggregator.running(), aggregator.serving("127.0.0.1", port) as url:
        print("READY", url, flush=True)
        while (line := await asyncio.to_thread(sys.stdin.readline)):
            if line.strip() == "end":
                for session_id in list(aggregator.sessions.in_flight()):
                    aggregator.sessions.closed(session_id)
                    from xds_control.aggregator import sdk_compat
                    await sdk_compat.end_session(aggregator.server, session_id)
                print("ENDED", len(aggregator.sessions), flush=True)

asyncio.run(main())
"""


async def open_sessions(url: str, count: int, settle: bool) -> int:
    opened = 0
    limits = httpx2.Limits(max_connections=16)
    async with httpx2.AsyncClient(trust_env=False, timeout=30, limits=limits) as http:
        left = iter(range(count))

        async def worker() -> None:
            nonlocal opened
            for _ in left:
                answer = await http.post(url, content=json.dumps(INIT), headers=HEADERS)
                session = answer.headers["mcp-session-id"]
                if settle:
                    headers = {**HEADERS, "mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
                    note = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
                    await http.post(url, content=note, headers=headers)
                opened += 1

        await asyncio.gather(*(worker() for _ in range(16)))
    return opened


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=2000)
    args = parser.parse_args(argv)
    from tests.support.waiting import free_port

    port = free_port()
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER, str(args.sessions), str(port),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdout is not None and child.stdin is not None
    try:
        url = (await asyncio.wait_for(child.stdout.readline(), 60)).decode().split()[-1]
        await open_sessions(url, 50, settle=True)  # warm up: imports, first-use caches
        base = rss_kib(child.pid)
        figures: dict[str, Any] = {}
        for kind, settle in (("opening", False), ("settled", True)):
            before = rss_kib(child.pid)
            await open_sessions(url, args.sessions, settle)
            grown = rss_kib(child.pid) - before
            figures[kind] = round(grown / args.sessions, 1)
            print(
                f"{kind:8} sessions: {args.sessions}, RSS +{grown / 1024:.1f} MiB, {figures[kind]:.1f} KiB per session"
            )
        child.stdin.write(b"end\n")
        await child.stdin.drain()
        ended = (await asyncio.wait_for(child.stdout.readline(), 60)).decode().strip()
        after = rss_kib(child.pid)
        print(f"after ending every session ({ended}): RSS {(after - base) / 1024:+.1f} MiB against the start")
        await open_sessions(url, args.sessions, True)  # memory the ended sessions held is reused, not leaked
        again = rss_kib(child.pid) - after
        figures["settled_again"] = round(again / args.sessions, 1)
        print(
            f"{args.sessions} settled sessions again: RSS +{again / 1024:.1f} MiB ({figures['settled_again']} KiB each)"
        )
        print(json.dumps({"kib_per_session": figures}))
    finally:
        child.terminate()
        await child.wait()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
