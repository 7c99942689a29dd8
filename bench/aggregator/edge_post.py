"""CPU of one backend request in the aggregator's upstream layer: a modern request (`modern_request.request` on
`BackendHttp.post`, the lean path) against the same POST through the httpx2 adapter the SDK client of legacy
sessions runs on (`sdk_transport.sdk_client`: httpx2's request and response objects around the same
`BackendHttp.post`).

One process: a canned loopback HTTP/1.1 server (tests/support/canned_http.py) answering a tools/call result.
Rounds alternate between the two so that the machine's drift hits both alike.

    .venv/bin/python bench/aggregator/edge_post.py [--rounds 8] [--requests 500]

Prints CPU ms per request (process time: client and canned server together; the server's share is the same
in both) per round and the median of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.aggregator.test_modern_request import MODERN, lean_client, result_for
from tests.support.canned_http import Answer, CannedServer
from xds_control.aggregator import modern_request
from xds_control.aggregator.sdk_transport import sdk_client

BODY = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x", "arguments": {"a": 1}}}


async def run(rounds: int, requests: int) -> dict[str, list[float]]:
    async with CannedServer(lambda request: Answer.json(result_for(request))) as server:
        lean, through = lean_client(), sdk_client(lean_client())

        async def modern() -> None:
            await modern_request.request(
                lean, server.url, MODERN, "tools/call", {"name": "x", "arguments": {"a": 1}}, max_event_bytes=1 << 20
            )

        async def httpx2() -> None:
            response = await through.post(server.url, json=BODY)
            response.json()

        paths = {"lean": modern, "httpx2": httpx2}
        figures: dict[str, list[float]] = {name: [] for name in paths}
        try:
            for _ in range(rounds):
                for name, send in paths.items():
                    began = time.process_time()
                    for _ in range(requests):
                        await send()
                    figures[name].append((time.process_time() - began) * 1000 / requests)
        finally:
            await lean.aclose()
            await through.aclose()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--requests", type=int, default=500, help="requests per path per round")
    args = parser.parse_args()
    figures = asyncio.run(run(args.rounds, args.requests))
    for name, values in figures.items():
        rounds = " ".join(f"{value:.3f}" for value in values)
        print(
            f"{name:6} CPU ms per request (client + canned server): median {statistics.median(values):.3f}   rounds: {rounds}"
        )
    lean, through = statistics.median(figures["lean"]), statistics.median(figures["httpx2"])
    print(f"the plain POST saves {through - lean:.3f} ms of CPU per request ({100 * (through - lean) / through:.0f} %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
