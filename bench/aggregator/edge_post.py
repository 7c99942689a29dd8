"""CPU of one modern backend request in the aggregator's upstream layer: `EdgeTransport.post_json` (the lean path)
against the same request through httpx2's request and response objects (what it replaced).

One process: a canned loopback HTTP/1.1 server (tests/support/canned_http.py) answering a tools/call result,
and `upstream_modern.request` over (lean) a client from `make_http_client` and (httpx2) an `EdgeTransport` whose
inner transport is the same HTTP/1.1 client seen as any httpx2 transport (tests/aggregator/test_post_json.py).
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

from tests.aggregator.test_post_json import MODERN, httpx2_client, lean_client, result_for
from tests.support.canned_http import Answer, CannedServer
from xds_control.aggregator import upstream_modern


async def run(rounds: int, requests: int) -> dict[str, list[float]]:
    async with CannedServer(lambda request: Answer.json(result_for(request))) as server:
        clients = {"lean": lean_client(), "httpx2": httpx2_client()}
        figures: dict[str, list[float]] = {name: [] for name in clients}
        try:
            for _ in range(rounds):
                for name, client in clients.items():
                    began = time.process_time()
                    for _ in range(requests):
                        await upstream_modern.request(
                            client,
                            server.url,
                            MODERN,
                            "tools/call",
                            {"name": "x", "arguments": {"a": 1}},
                            max_event_bytes=1 << 20,
                        )
                    figures[name].append((time.process_time() - began) * 1000 / requests)
        finally:
            for client in clients.values():
                await client.aclose()
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
    print(f"post_json saves {through - lean:.3f} ms of CPU per request ({100 * (through - lean) / through:.0f} %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
