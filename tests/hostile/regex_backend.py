"""A hostile MCP backend (both families): one tool, `match`, whose inputSchema carries a backtracking regex.

    python -m tests.hostile.regex_backend     # prints READY http://127.0.0.1:PORT/mcp

With Python's `re`, `"^(a+)+$"` against 29 `a` and a `!` takes seconds (doubling per character): an
aggregator that checks arguments with it freezes while it does.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import mcp_types as types
import uvicorn
from mcp.server import Server
from mcp.server.transport_security import TransportSecuritySettings

EVIL_SCHEMA = {"type": "object", "properties": {"text": {"type": "string", "pattern": "^(a+)+$"}}}


def server() -> Server[Any]:
    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[types.Tool(name="match", input_schema=EVIL_SCHEMA)])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        return types.CallToolResult(content=[types.TextContent(type="text", text="matched")])

    return Server("regex", on_list_tools=list_tools, on_call_tool=call_tool)


class _Announcing(uvicorn.Server):
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and sockets:
            print(f"READY http://127.0.0.1:{sockets[0].getsockname()[1]}/mcp", flush=True)


async def main() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    app = server().streamable_http_app(
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False)
    )
    await _Announcing(uvicorn.Config(app, log_level="warning")).serve(sockets=[sock])


if __name__ == "__main__":
    asyncio.run(main())
