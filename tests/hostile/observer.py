"""The observer: a separate process that watches the gateway while it is attacked.

    python -m tests.hostile.observer '<json spec>'

Runs, each on its own thread, until a line arrives on stdin (or stdin closes):

* a heartbeat per target: the same trivial request in a tight loop (the admin API's
  `grpc.health.v1/Check` for the control plane, `GET /healthz` for the aggregator), each answer timed. Both
  are served on the target's event loop, so the longest answer is the longest the loop stopped answering;
* an RSS sampler per process (`/proc/PID/status` VmRSS every 10 ms): the first sample is the baseline;
* the legitimate client's loop: the calls a well-behaved user makes (admin reads, an MCP `tools/call`
  through Envoy), counted as ok or failed, with the first few failures' texts.

Then it prints one JSON line (`Observation`) and exits. It is a process of its own so the attacker's CPU
(and this process's GIL) never shows up as the target's stall. Spec keys: `heartbeats` ({name: {"kind":
"grpc_health"|"http", "target"|"url", "host"}}), `rss` ({name: pid}), `legit` ([{"kind": "admin_read",
"target"} | {"kind": "mcp_call", "url", "tool", "arguments"}]), `interval` (seconds between heartbeats).
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

MCP_VERSION = "2026-07-28"
MCP_META = {
    "io.modelcontextprotocol/protocolVersion": MCP_VERSION,
    "io.modelcontextprotocol/clientInfo": {"name": "legit", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


def grpc_health(target: str, timeout: float = 10.0) -> Callable[[], None]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channel = grpc.insecure_channel(target)
    stub = health_pb2_grpc.HealthStub(channel)

    def check() -> None:
        answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        if answer.status != health_pb2.HealthCheckResponse.SERVING:
            raise RuntimeError(f"health {answer.status}")

    return check


def http_get(url: str, host: str | None = None, timeout: float = 10.0) -> Callable[[], None]:
    parts = urlsplit(url)
    state: dict[str, http.client.HTTPConnection | None] = {"conn": None}

    def get() -> None:
        conn = state["conn"] or http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        state["conn"] = conn
        try:
            conn.request("GET", parts.path or "/", headers={"host": host or parts.netloc})
            response = conn.getresponse()
            response.read()
        except Exception:
            conn.close()
            state["conn"] = None
            raise
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")

    return get


def admin_read(target: str) -> Callable[[], None]:
    import grpc

    from xds_control.admin.v1 import admin_pb2 as pb
    from xds_control.admin.v1 import admin_pb2_grpc as pb_grpc

    stub = pb_grpc.AdminStub(grpc.insecure_channel(target))

    def call() -> None:
        answer = stub.ListBackends(pb.ListBackendsRequest(), timeout=10)
        if not answer.backends:
            raise RuntimeError("no backends listed")

    return call


def mcp_call(url: str, tool: str, arguments: dict[str, Any]) -> Callable[[], None]:
    """A raw 2026-07-28 `tools/call` (no session): POST, one JSON answer, a result without isError."""
    parts = urlsplit(url)
    ids = iter(range(1, 1 << 62))

    def call() -> None:
        body = {
            "jsonrpc": "2.0",
            "id": next(ids),
            "method": "tools/call",
            "params": {"name": tool, "arguments": arguments, "_meta": MCP_META},
        }
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            conn.request(
                "POST",
                parts.path,
                body=json.dumps(body),
                headers={
                    "content-type": "application/json",
                    "accept": "application/json, text/event-stream",
                    "mcp-protocol-version": MCP_VERSION,
                    "mcp-method": "tools/call",
                    "mcp-name": tool,
                },
            )
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {raw[:200]!r}")
        text = raw.decode()
        if text.startswith("event:") or text.startswith("data:"):
            text = next(line[5:] for line in text.splitlines() if line.startswith("data:"))
        answer = json.loads(text)
        if "error" in answer or answer.get("result", {}).get("isError"):
            raise RuntimeError(f"MCP error: {text[:200]}")

    return call


class Loop(threading.Thread):
    """Calls `fn` until stopped, timing each call; keeps the longest, the count and the failures."""

    def __init__(self, name: str, fn: Callable[[], None], interval: float, stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self.fn, self.interval, self.stop = fn, interval, stop
        self.longest = 0.0
        self.calls = 0
        self.errors = 0
        self.error_texts: list[str] = []
        self.in_flight_since: float | None = None

    def run(self) -> None:
        while not self.stop.is_set():
            started = self.in_flight_since = time.monotonic()
            try:
                self.fn()
            except Exception as exc:
                self.errors += 1
                if len(self.error_texts) < 3:
                    self.error_texts.append(f"{type(exc).__name__}: {str(exc)[:300]}")
            took = time.monotonic() - started
            self.in_flight_since = None
            self.calls += 1
            self.longest = max(self.longest, took)
            self.stop.wait(self.interval)

    def longest_so_far(self) -> float:
        """The longest call, counting one still unanswered (a loop that never came back)."""
        since = self.in_flight_since
        return max(self.longest, time.monotonic() - since if since is not None else 0.0)


class Rss(threading.Thread):
    def __init__(self, pid: int, stop: threading.Event) -> None:
        super().__init__(name=f"rss-{pid}", daemon=True)
        self.pid, self.stop = pid, stop
        self.first: int | None = None
        self.peak = 0

    def sample(self) -> int | None:
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def run(self) -> None:
        while not self.stop.is_set():
            value = self.sample()
            if value is not None:
                if self.first is None:
                    self.first = value
                self.peak = max(self.peak, value)
            self.stop.wait(0.01)


def _heartbeat_fn(spec: dict[str, Any]) -> Callable[[], None]:
    if spec["kind"] == "grpc_health":
        return grpc_health(spec["target"])
    return http_get(spec["url"], spec.get("host"))


def _legit_fn(spec: dict[str, Any]) -> Callable[[], None]:
    if spec["kind"] == "admin_read":
        return admin_read(spec["target"])
    return mcp_call(spec["url"], spec["tool"], spec.get("arguments", {}))


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    stop = threading.Event()
    interval = float(spec.get("interval", 0.005))
    beats = {name: Loop(f"beat-{name}", _heartbeat_fn(s), interval, stop) for name, s in spec["heartbeats"].items()}
    rss = {name: Rss(int(pid), stop) for name, pid in spec.get("rss", {}).items()}
    legit = [Loop(f"legit-{i}", _legit_fn(s), 0.02, stop) for i, s in enumerate(spec.get("legit", []))]
    threads: list[threading.Thread] = [*beats.values(), *rss.values(), *legit]
    for thread in threads:
        thread.start()
    print("READY", flush=True)
    sys.stdin.readline()
    stalls = {name: round(b.longest_so_far() * 1000, 1) for name, b in beats.items()}
    stop.set()
    for thread in threads:
        thread.join(timeout=15)
    result = {
        "stall_ms": stalls,
        "heartbeats": {name: b.calls for name, b in beats.items()},
        "heartbeat_errors": {name: b.error_texts for name, b in beats.items() if b.errors},
        "rss_first": {name: r.first or 0 for name, r in rss.items()},
        "rss_peak": {name: r.peak for name, r in rss.items()},
        "legit_calls": sum(loop.calls for loop in legit),
        "legit_errors": sum(loop.errors for loop in legit),
        "legit_error_texts": [t for loop in legit for t in loop.error_texts][:5],
        "stuck": [t.name for t in threads if t.is_alive()],
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
