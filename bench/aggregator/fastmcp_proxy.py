"""FastMCP's proxy in front of one MCP backend, for bench/aggregator/calls.py (comparison target (c)).

Runs in bench/.venv-fastmcp (FastMCP 4.x from PyPI; calls.py creates that venv on first use), never in the
project's venv: fastmcp is not a dependency of xds-control.

    bench/.venv-fastmcp/bin/python bench/aggregator/fastmcp_proxy.py --url http://127.0.0.1:PORT/mcp [--session fresh|shared]

Serves Streamable HTTP on 127.0.0.1, a port the OS picks, and prints `READY http://127.0.0.1:PORT/mcp` once
the socket listens (requests queue until uvicorn accepts them). SIGTERM stops it (uvicorn's graceful shutdown).

`--session fresh` (default) is `create_proxy(url)`: what FastMCP documents as the recommended proxy. Its
client factory builds a fresh backend client per request, in the era the front connection negotiated, so a
legacy call costs the proxy a whole backend session (initialize, initialized, the call, DELETE).
`--session shared` hands `create_proxy` one already-connected `Client` (mode "auto": modern to a backend
that serves both families), which FastMCP reuses for every request (it warns about context mixing): the
fastest configuration FastMCP offers, for a fair upper bound.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastmcp import Client
from fastmcp.server import create_proxy


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="the backend's /mcp URL")
    p.add_argument("--session", choices=["fresh", "shared"], default="fresh")
    return p.parse_args()


def listen() -> socket.socket:
    sock = socket.socket(
        socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
    )  # IPPROTO_TCP: asyncio sets TCP_NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    return sock


@contextlib.asynccontextmanager
async def backend_target(url: str, session: str) -> AsyncIterator[Any]:
    if session == "fresh":
        yield url
        return
    async with Client(url, mode="auto") as client:
        yield client


async def serve(args: argparse.Namespace) -> None:
    logging.getLogger("fastmcp").setLevel(logging.WARNING)
    async with backend_target(args.url, args.session) as target:
        proxy = create_proxy(target, name="fastmcp-proxy")
        sock = listen()
        port = sock.getsockname()[1]
        print(f"READY http://127.0.0.1:{port}/mcp", flush=True)
        await proxy.run_http_async(show_banner=False, host="127.0.0.1", port=port, sockets=[sock], log_level="warning")


if __name__ == "__main__":
    anyio.run(serve, parse_args())
