"""Many lightweight MCP endpoints in one process: just enough of the Streamable HTTP wire for a prober.

    python bench/health/mcp_stub.py --count 200      # prints "READY port,port,..." once every port listens

One asyncio HTTP/1.1 server (keep-alive, Content-Length bodies) per port, all on one event loop, each
answering `POST /mcp` like a small MCP server of both families:

* modern (2026-07-28): `server/discover` -> supportedVersions + capabilities, no session;
* legacy: `initialize` -> protocolVersion 2025-11-25 and an `Mcp-Session-Id`; `notifications/initialized`
  -> 202; `ping` -> {} (a ping naming an unknown session -> 404, as the SDK answers);
* `tools/list` -> one tool, `echo`; `tools/call` of it -> its `text` back; `DELETE /mcp` -> 200 (ends the session).

Modern results (requests with `MCP-Protocol-Version: 2026-07-28`) carry `resultType`, `cacheScope` and
`ttlMs`, as the SDK's server sends and its client checks.

Capabilities advertise `tools` without `listChanged`, so a prober opens no change stream. Unknown methods
get a JSON-RPC -32601. Answers are `application/json`. This is a load generator's target, not a reference
server: it exists so that 200 endpoints cost a few percent of a core instead of 200 Python processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import uuid
from typing import Any, ClassVar

MODERN = "2026-07-28"
LEGACY = "2025-11-25"
CAPABILITIES: dict[str, Any] = {"tools": {}}
TOOLS = [
    {
        "name": "echo",
        "description": "Return the text.",
        "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}},
    }
]
REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


class Stats:
    requests = 0


class McpStub(asyncio.Protocol):
    sessions: ClassVar[set[str]] = set()  # shared by every port: one "server" per port is not needed for probing

    def __init__(self, name: str) -> None:
        self.name = name
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            method, path, _ = head[0].split(" ", 2)
            Stats.requests += 1
            self.respond(*self.handle(method, path, headers, body))

    def respond(self, status: int, payload: Any, extra: dict[str, str] | None = None) -> None:
        body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", f"content-length: {len(body)}"]
        if payload is not None:
            lines.append("content-type: application/json")
        lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
        assert self.transport is not None
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any, dict[str, str] | None]:
        if not path.startswith("/mcp"):
            return 404, None, None
        session = headers.get("mcp-session-id")
        if method == "DELETE":
            self.sessions.discard(session or "")
            return 200, None, None
        if method != "POST":
            return 405, None, None
        try:
            message = json.loads(body)
        except ValueError:
            return 400, {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}}, None
        rpc, request_id = message.get("method"), message.get("id")
        modern = headers.get("mcp-protocol-version") == MODERN

        def result(
            value: Any, status: int = 200, extra: dict[str, str] | None = None
        ) -> tuple[int, Any, dict[str, str] | None]:
            if modern:  # 2026-07-28 results carry their caching envelope
                value = {**value, "resultType": "complete", "cacheScope": "private", "ttlMs": 0}
            return status, {"jsonrpc": "2.0", "id": request_id, "result": value}, extra

        if request_id is None:  # a notification
            return 202, None, None
        if rpc == "server/discover":
            return result(
                {
                    "supportedVersions": [MODERN],
                    "capabilities": CAPABILITIES,
                    "serverInfo": {"name": self.name, "version": "1"},
                }
            )
        if rpc == "initialize":
            new = uuid.uuid4().hex
            self.sessions.add(new)
            return result(
                {
                    "protocolVersion": LEGACY,
                    "capabilities": CAPABILITIES,
                    "serverInfo": {"name": self.name, "version": "1"},
                },
                200,
                {"mcp-session-id": new},
            )
        if session is not None and session not in self.sessions:
            return 404, {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Session not found"}}, None
        if rpc == "ping":
            return result({})
        if rpc == "tools/list":
            return result({"tools": TOOLS})
        if rpc == "tools/call":
            text = str(((message.get("params") or {}).get("arguments") or {}).get("text", ""))
            return result({"content": [{"type": "text", "text": text}], "isError": False})
        return 200, {"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": "Method not found"}}, None


async def serve(count: int, host: str) -> None:
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(lambda i=i: McpStub(f"stub-{i}"), host, 0, backlog=64) for i in range(count)]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    print("READY " + ",".join(map(str, ports)), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: print(f"REQUESTS {Stats.requests}", flush=True))
    await stop.wait()
    for server in servers:
        server.close()
    print(f"REQUESTS {Stats.requests}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="Many lightweight MCP endpoints in one process.")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    asyncio.run(serve(args.count, args.host))
    return 0


if __name__ == "__main__":
    sys.exit(main())
