"""Plain 2026-07-28 list requests answered from the SDK's own answers, kept until the catalog changes.

A modern `tools/list` page through the SDK costs the aggregator its
per-request machinery (a handler task, a disconnect watcher, the middleware
chain) and a pydantic dump of the whole result, even when the result itself
comes from `list_cache.ListPageCache`: with 100 tools a page, 7.9-9.1 ms at
the client against 4.9-6.7 ms for a legacy client (bench/aggregator/calls.py,
session 6). The answer depends only on the merged catalog, the method, the
protocol version and the cursor, so the fast path (fastpath.FastPath,
whose checks decide that a request is the plain case) hands the first such
request to the SDK, keeps the `result` of its answer (a 200 JSON body that
answers the request's id) as JSON bytes, and answers repeats by splicing the
request's id in front of them. A new catalog object (every view change makes
one) empties them; errors are never kept (the SDK answers each one again).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from mcp_types import methods as mcp_methods
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from xds_control.aggregator.list_cache import KeptPages

MAX_KEPT_BYTES = 4 * 1024 * 1024  # an answer larger than this is passed on but not kept
# Kept answers, all methods and versions: 8 MB holds every page of a 4,000-tool catalog (40 pages of about
# 45 KB) several times over, so a client walking all pages does not evict the pages it needs next, as a
# bound of 32 pages did; the least recently used page goes first.
MAX_PAGES, MAX_BYTES = 1024, 8 * 1024 * 1024


class _Capture:
    """`send` for the SDK's app: passes every message on and keeps a copy of a JSON answer's body."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 0
        self.json = False
        self.chunks: list[bytes] | None = []
        self._size = 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.json = any(
                k.lower() == b"content-type" and v.startswith(b"application/json")
                for k, v in message.get("headers", ())
            )
        elif message["type"] == "http.response.body" and self.chunks is not None:
            body = message.get("body", b"")
            self._size += len(body)
            if self._size > MAX_KEPT_BYTES:
                self.chunks = None
            else:
                self.chunks.append(body)
        await self._send(message)

    def result(self, request_id: int | str) -> bytes | None:
        """The answer's `result` as compact JSON, if it was a complete 200 JSON success for `request_id`."""
        if self.status != 200 or not self.json or self.chunks is None:
            return None
        try:
            answer = json.loads(b"".join(self.chunks))
        except (ValueError, RecursionError):
            return None
        if (
            not isinstance(answer, dict)
            or answer.get("id") != request_id
            or "error" in answer
            or not isinstance(answer.get("result"), dict)
        ):
            return None
        return json.dumps(answer["result"], separators=(",", ":"), ensure_ascii=False).encode()


class KeptListAnswers:
    def __init__(self, app: ASGIApp, catalog: Callable[[], object]) -> None:
        self.app = app
        self._catalog = catalog
        self.pages = KeptPages(MAX_PAGES, max_bytes=MAX_BYTES)

    @staticmethod
    def valid(method: str, version: str, params: Mapping[str, Any]) -> bool:
        """The params pass the SDK's own check for `method` at `version` (else the SDK answers the error)."""
        try:
            mcp_methods.validate_client_request(method, version, params)
        except (ValueError, KeyError, ValidationError):
            return False
        return True

    async def serve(
        self,
        request_id: int | str,
        method: str,
        version: str,
        params: Mapping[str, Any],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        catalog = self._catalog()
        key = (method, version, params.get("cursor"))
        result = self.pages.get(catalog, key)
        if result is None:
            capture = _Capture(send)
            await self.app(scope, receive, capture)
            result = capture.result(request_id)
            if result is not None:
                self.pages.keep(catalog, key, result)
            return
        data = b'{"jsonrpc":"2.0","id":%s,"result":%s}' % (json.dumps(request_id).encode(), result)
        start_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": start_headers})
        await send({"type": "http.response.body", "body": data})
