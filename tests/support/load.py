"""Steady MCP tools/call load through the gateway, counting every failed call (tests and bench/scale).

Workers are raw JSON-RPC clients on `xds_control.http11` (cheap enough for 64 of them on two cores):

* modern: one POST per 2026-07-28 tools/call, no session;
* legacy: a session (initialize, initialized), then tools/call on it; when a call fails, the worker opens a
  new session (re-initializes) and goes on, as the MCP spec tells a client whose session is gone.

Each call echoes a unique text; anything but that text coming back (an HTTP error, a JSON-RPC error, a
connection error, a timeout) is a failure, recorded with when it happened and what it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from xds_control.http11 import HttpClient

MODERN = "2026-07-28"
LEGACY = "2025-11-25"
BASE_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "load", "version": "0"},
}


@dataclass
class Failure:
    at: float  # time.monotonic()
    worker: str
    what: str


@dataclass
class WorkerStats:
    name: str
    ok: int = 0
    failed: int = 0
    sessions: list[str] = field(default_factory=list)  # legacy: every session id it used, in order


@dataclass
class LoadStats:
    workers: dict[str, WorkerStats] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    started: float = 0.0
    stopped: float = 0.0

    @property
    def ok(self) -> int:
        return sum(w.ok for w in self.workers.values())

    @property
    def failed(self) -> int:
        return len(self.failures)

    def summary(self) -> str:
        shown = "; ".join(f"{f.worker}: {f.what}" for f in self.failures[:5])
        return f"{self.ok} ok, {self.failed} failed" + (f" ({shown})" if shown else "")


def _parse(content: bytes, content_type: str, want_id: int) -> dict[str, Any]:
    if content_type.startswith("text/event-stream"):
        for line in content.decode().splitlines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("id") == want_id:
                    return message
        raise ValueError("no answer in the event stream")
    return json.loads(content)


class CallLoad:
    """`modern` + `legacy` workers calling `tool` (an echo) on `url` until `stop()`; `stats` as they go."""

    def __init__(
        self,
        url: str,
        tool: str,
        *,
        modern: int = 2,
        legacy: int = 2,
        timeout: float = 10.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        """`headers`: sent with every request besides the protocol's (e.g. `authorization`)."""
        self.url, self.tool, self.timeout = url, tool, timeout
        self.base_headers = {**BASE_HEADERS, **(headers or {})}
        self.counts = {"modern": modern, "legacy": legacy}
        self.stats = LoadStats()
        self._ids = itertools.count(1)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._http = HttpClient(None, max_idle=max(4, modern + legacy))

    async def _post(self, headers: dict[str, str], message: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        async with asyncio.timeout(self.timeout):
            async with self._http.stream("POST", self.url, headers=headers, content=json.dumps(message).encode()) as r:
                body = b"".join([chunk async for chunk in r.aiter_bytes()])
                return r.status_code, r.headers, body

    def _check(self, status: int, headers: dict[str, str], body: bytes, request_id: int, text: str) -> str | None:
        """None if the call echoed `text`; else what went wrong."""
        if status != 200:
            return f"HTTP {status} {body[:80]!r}"
        message = _parse(body, headers.get("content-type", ""), request_id)
        if "error" in message:
            return f"JSON-RPC error {message['error'].get('code')}: {str(message['error'].get('message'))[:80]}"
        result = message.get("result", {})
        if result.get("isError") or result.get("content", [{}])[0].get("text") != text:
            return f"unexpected result {str(result)[:80]}"
        return None

    async def _call(self, headers: dict[str, str], extra: dict[str, Any]) -> str | None:
        request_id = next(self._ids)
        text = f"t{request_id}"
        params = {"name": self.tool, "arguments": {"text": text}, **extra}
        message = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
        try:
            status, answer_headers, body = await self._post(headers, message)
            return self._check(status, answer_headers, body, request_id, text)
        except (OSError, TimeoutError, ValueError, json.JSONDecodeError) as exc:
            return f"{type(exc).__name__}: {str(exc)[:80]}"
        except Exception as exc:  # llhttp's parser error and the like: still a failed call, not a crashed worker
            return f"{type(exc).__name__}: {str(exc)[:80]}"

    def _failed(self, worker: WorkerStats, what: str) -> None:
        worker.failed += 1
        self.stats.failures.append(Failure(time.monotonic(), worker.name, what))

    async def _modern(self, worker: WorkerStats) -> None:
        headers = {
            **self.base_headers,
            "mcp-protocol-version": MODERN,
            "mcp-method": "tools/call",
            "mcp-name": self.tool,
        }
        while not self._stop.is_set():
            problem = await self._call(headers, {"_meta": META})
            if problem is None:
                worker.ok += 1
            else:
                self._failed(worker, problem)

    async def _session(self) -> dict[str, str] | None:
        init = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "load", "version": "0"}}
        try:
            status, headers, _body = await self._post(
                self.base_headers, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init}
            )
            if status != 200 or "mcp-session-id" not in headers:
                return None
            session = {**self.base_headers, "mcp-protocol-version": LEGACY, "mcp-session-id": headers["mcp-session-id"]}
            async with asyncio.timeout(self.timeout):
                body = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
                async with self._http.stream("POST", self.url, headers=session, content=body) as r:
                    _ = [chunk async for chunk in r.aiter_bytes()]
            return session
        except Exception:
            return None

    async def _legacy(self, worker: WorkerStats) -> None:
        session: dict[str, str] | None = None
        while not self._stop.is_set():
            if session is None:
                session = await self._session()
                if session is None:
                    self._failed(worker, "initialize failed")
                    await asyncio.sleep(0.05)  # a retry pace for a gateway that is down: not a synchronisation
                    continue
                worker.sessions.append(session["mcp-session-id"])
            problem = await self._call(session, {})
            if problem is None:
                worker.ok += 1
            else:
                self._failed(worker, problem)
                session = None  # re-initialize and go on

    async def start(self) -> CallLoad:
        """Start every worker (`steady()` waits until each has made a successful call)."""
        self.stats.started = time.monotonic()
        for kind, count in self.counts.items():
            for i in range(count):
                worker = self.stats.workers[f"{kind}-{i}"] = WorkerStats(f"{kind}-{i}")
                run = self._modern if kind == "modern" else self._legacy
                self._tasks.append(asyncio.create_task(run(worker), name=worker.name))
        return self

    def each_ok(self, at_least: int) -> bool:
        return all(w.ok >= at_least for w in self.stats.workers.values())

    async def stop(self) -> LoadStats:
        """Stop every worker (a call in flight finishes first); idempotent."""
        if self.stats.stopped:
            return self.stats
        self._stop.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timeout + 5):
                await asyncio.gather(*self._tasks, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await self._http.aclose()
        self.stats.stopped = time.monotonic()
        return self.stats

    def calls(self) -> int:
        return self.stats.ok + self.stats.failed
