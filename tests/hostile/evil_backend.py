"""A hostile MCP backend (2026-07-28 family, no sessions) for the hostile suite.

    python -m tests.hostile.evil_backend --mode pages|names [--page-bytes N]

Answers `server/discover` like a real server, and `tools/list` with:

* `pages`: pages of `--page-bytes` of tools, each with a fresh `nextCursor`, forever;
* `names`: one page whose tool names carry NUL, ESC, newline, U+202E, 10 KB, spaces, plus one good tool
  (`fine`); and a prompt list with the same.

`tools/call fine` answers "ok". Prints `READY http://127.0.0.1:PORT/mcp` once listening.
"""

from __future__ import annotations

import argparse
import itertools
import json
import socket
import sys
from typing import Any

import uvicorn

MODERN = "2026-07-28"
BAD_NAMES = ["nul\x00", "esc\x1b[31mred", "new\nline", "rtl\u202eexe.txt", "n" * 10_000, "with space", ""]


def tools_page(args: argparse.Namespace, cursor: str | None, counter: itertools.count[int]) -> dict[str, Any]:
    if args.mode == "names":
        tools = [{"name": n, "inputSchema": {"type": "object"}} for n in [*BAD_NAMES, "fine"]]
        return {"tools": tools}
    n = next(counter)
    blob = "x" * 1000
    count = max(1, args.page_bytes // 1060)
    tools = [{"name": f"t{n}_{i}", "description": blob, "inputSchema": {"type": "object"}} for i in range(count)]
    return {"tools": tools, "nextCursor": f"page-{n}"}


def make_app(args: argparse.Namespace) -> Any:
    counter = itertools.count(1)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            request = {}
        method, rid = request.get("method"), request.get("id")
        params = request.get("params") or {}
        result: dict[str, Any] | None = None
        if method == "server/discover":
            result = {
                "supportedVersions": [MODERN],
                "capabilities": {"tools": {}, "prompts": {}},
                "serverInfo": {"name": "evil", "version": "1"},
            }
        elif method == "tools/list":
            result = tools_page(args, params.get("cursor"), counter)
        elif method == "prompts/list":
            result = {"prompts": [{"name": n} for n in [*BAD_NAMES, "fine"]] if args.mode == "names" else []}
        elif method == "tools/call":
            result = {"content": [{"type": "text", "text": "ok"}]}
        if rid is None:
            await send({"type": "http.response.start", "status": 202, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        answer = {"jsonrpc": "2.0", "id": rid}
        if result is None:
            answer["error"] = {"code": -32601, "message": "Method not found"}
        else:
            answer["result"] = result
        payload = json.dumps(answer).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    return app


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["pages", "names"], required=True)
    parser.add_argument("--page-bytes", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = uvicorn.Config(make_app(args), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    print(f"READY http://127.0.0.1:{port}/mcp", flush=True)
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
