"""One backend with two replicas behind `xds-control up` (examples/replicas/), end to end.

Real processes on free ports: two demo backends serving the same catalog, and
`xds-control up -c CONFIG --quiet` (control plane, Envoy, aggregator). A client calls a tool in a
loop while one replica is SIGKILLed: calls started after the control plane marked that replica
unhealthy must all succeed, and the failures before that (Envoy's connect-failure retries should
hide them) are counted and printed. The restarted replica turns healthy and takes traffic again.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from mcp import Client, MCPError

from tests.support.procs import ROOT, Proc, demo_backend
from tests.support.stack import envoy_get
from tests.support.waiting import async_wait_until, free_ports
from xds_control.admin.client import AdminClient
from xds_control.cli import main
from xds_control.config import Config, dump_config, load_config, parse_config
from xds_control.view import BackendState

pytestmark = pytest.mark.integration

EXAMPLE = ROOT / "examples" / "replicas" / "config.yaml"
START = 60.0  # seconds for the whole stack on a loaded 2-core machine
DETECT = 30.0  # seconds for the control plane to see a replica die or come back
TOOL, ARGS = "weather_get_current_conditions", {"city": "Paris"}
AFTER_DETECTION_CALLS = 200  # calls that must all succeed once the dead replica is out of routing


def test_the_example_config_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(EXAMPLE)]) == 0, capsys.readouterr().err
    (weather,) = load_config(EXAMPLE).backends
    assert len(weather.endpoint_urls) == 2


@dataclass
class Stack:
    config: Config
    path: Path
    endpoint: str
    urls: list[str]
    ports: list[int]
    replicas: list[Proc]
    up: Proc


@pytest.fixture
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    """The example stack on free ports; `request.param` (indirect) adds demo_server options for both replicas."""
    replica_args: tuple[str, ...] = getattr(request, "param", ())
    data = yaml.safe_load(EXAMPLE.read_text())
    p = free_ports(10)
    replica_ports = p[8:10]
    (backend,) = data["backends"]
    backend["endpoints"] = [f"http://127.0.0.1:{port}/mcp" for port in replica_ports]
    data.update(
        listener={"port": p[0]},
        egress={"port": p[1]},
        envoy={"admin_port": p[2], "node_id": f"test-{p[2]}"},
        control_plane={"xds": f"127.0.0.1:{p[3]}", "admin": f"127.0.0.1:{p[4]}", "metrics": f"127.0.0.1:{p[5]}"},
        aggregator={"port": p[6], "metrics": f"127.0.0.1:{p[7]}"},
        # the example's timings, shortened: a dead replica is out after 2 failed probes 0.5 s apart,
        # and an ejection by Envoy's outlier detection runs out after about a second
        health={**data["health"], "interval": 0.5, "timeout": 1},
        outlier_detection={**data["outlier_detection"], "interval": 0.5, "base_ejection_time": 1},
    )
    config = parse_config(data)
    path = tmp_path / "replicas.yaml"
    path.write_text(dump_config(config))
    replicas: list[Proc] = []
    up: Proc | None = None
    try:
        for port in replica_ports:
            replicas.append(demo_backend("weather", port, *replica_args))
        up = Proc([sys.executable, "-m", "xds_control.cli", "up", "-c", str(path), "--quiet"], name="xds-control-up")
        line = up.wait_for_line("MCP endpoint:", timeout=START)
        yield Stack(
            config, path, line.split("MCP endpoint:")[1].strip(), backend["endpoints"], replica_ports, replicas, up
        )
    finally:
        if up is not None:
            up.stop()
        for replica in replicas:
            replica.stop()


async def endpoint_states(admin: AdminClient) -> dict[str, BackendState]:
    (status,) = await admin.list_backends()
    return {e.url: e.state for e in status.endpoints}


async def both_healthy(admin: AdminClient) -> bool:
    return set((await endpoint_states(admin)).values()) == {BackendState.HEALTHY}


def host_counters(stack: Stack) -> dict[int, dict[str, int]]:
    """Envoy's per-host counters of the backend's cluster: {port: {rq_success, rq_error, ...}}."""
    status, body = envoy_get(stack.config, "/clusters")
    assert status == 200, body
    counters: dict[int, dict[str, int]] = {}
    for m in re.finditer(r"^weather::127\.0\.0\.1:(\d+)::(\w+)::(\d+)$", body, re.MULTILINE):
        counters.setdefault(int(m[1]), {})[m[2]] = int(m[3])
    return counters


def health_flags(stack: Stack) -> dict[int, str]:
    """Envoy's health flags per host of the backend's cluster (`healthy`, `/failed_eds_health`, `/failed_outlier_check`, ...)."""
    _, body = envoy_get(stack.config, "/clusters")
    return {
        int(m[1]): m[2] for m in re.finditer(r"^weather::127\.0\.0\.1:(\d+)::health_flags::(\S+)$", body, re.MULTILINE)
    }


@dataclass
class Caller:
    """Calls the tool in a loop through /mcp, one call at a time, noting when each started and how it ended."""

    endpoint: str
    calls: list[tuple[float, bool, str]] = field(default_factory=list)  # (started, ok, error)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, limit: int = 20_000, deadline: float = 120.0) -> None:
        end = time.monotonic() + deadline  # bounded in count and time whatever happens
        async with Client(self.endpoint, cache=None) as client:
            while not self.stop.is_set() and len(self.calls) < limit and time.monotonic() < end:
                started = time.monotonic()
                try:
                    result = await asyncio.wait_for(client.call_tool(TOOL, ARGS), 10)
                    ok, error = not result.is_error and result.content[0].text.startswith("Paris: "), ""
                except MCPError as exc:
                    ok, error = False, f"{exc.error.code} {exc.error.message} {exc.error.data}"
                self.calls.append((started, ok, error))

    def between(self, first: int, until: float = float("inf")) -> list[tuple[float, bool, str]]:
        """Calls from index `first` on that started before `until`."""
        return [c for c in self.calls[first:] if c[0] < until]

    def after(self, since: float) -> list[tuple[float, bool, str]]:
        return [c for c in self.calls if c[0] >= since]


def failed(calls: list[tuple[float, bool, str]]) -> list[str]:
    return [error for _, ok, error in calls if not ok]


async def test_calls_survive_a_killed_replica_and_the_restarted_one_takes_traffic_again(stack: Stack) -> None:
    dead_url, dead_port = stack.urls[0], stack.ports[0]
    admin = AdminClient(stack.config.control_plane.admin)
    caller = Caller(stack.endpoint)
    loop: asyncio.Task[None] | None = None
    try:
        await async_wait_until(lambda: both_healthy(admin), timeout=DETECT, interval=0.05, what="both replicas healthy")
        loop = asyncio.create_task(caller.run())
        await async_wait_until(
            lambda: asyncio.to_thread(_both_served, stack), timeout=30, what="calls to reach both replicas"
        )
        assert failed(caller.calls) == []

        at_kill = len(caller.calls)  # calls[at_kill] is the one in flight when the replica dies
        killed_at = time.monotonic()
        stack.replicas[0].kill()  # SIGKILL: a crash, no goodbye
        await async_wait_until(
            lambda: _unhealthy(admin, dead_url),
            timeout=DETECT,
            interval=0.02,
            what="the dead replica to be unhealthy in the view",
        )
        detected_at = time.monotonic()
        window = caller.between(at_kill, detected_at)
        await async_wait_until(
            lambda: loop.done() or len(caller.after(detected_at)) >= AFTER_DETECTION_CALLS,
            timeout=60,
            what="calls after detection",
        )
        flags = await asyncio.to_thread(health_flags, stack)
        counters = await asyncio.to_thread(host_counters, stack)
        print(
            f"\nreplica killed -> unhealthy in the view after {detected_at - killed_at:.2f}s: "
            f"{len(failed(window))} of {len(window)} calls in that window failed {failed(window)[:1]}; "
            f"{len(caller.after(detected_at))} calls after it, {len(failed(caller.after(detected_at)))} failed; "
            f"envoy: dead replica {flags[dead_port]}, {counters[dead_port].get('cx_connect_fail', 0)} connect failures "
            f"(retried on the other replica)"
        )
        assert failed(caller.after(detected_at)) == []
        assert "/failed_eds_health" in flags[dead_port] and flags[stack.ports[1]] == "healthy"
        # one replica left: the backend stays healthy and routable, its tools stay on /mcp
        (status,) = await admin.list_backends()
        assert status.state == BackendState.HEALTHY and status.routable
        assert {e.url: e.state for e in status.endpoints}[stack.urls[1]] == BackendState.HEALTHY

        stack.replicas[0] = demo_backend("weather", dead_port)
        restarted_at = time.monotonic()
        await async_wait_until(
            lambda: both_healthy(admin), timeout=DETECT, interval=0.05, what="both replicas healthy again"
        )
        healthy_again = await asyncio.to_thread(host_counters, stack)
        # Envoy may still hold it ejected (outlier detection); it takes calls once the ejection runs out
        await async_wait_until(
            lambda: asyncio.to_thread(_served_more, stack, dead_port, healthy_again),
            timeout=30,
            what="the restarted replica to take calls",
        )
        assert failed(caller.after(restarted_at)) == []
    finally:
        caller.stop.set()
        if loop is not None:
            await asyncio.wait_for(loop, 30)
        await admin.close()

    shown = await asyncio.to_thread(_admin_backends_json, stack)
    (weather,) = shown
    assert weather["name"] == "weather" and weather["state"] == "healthy"
    assert {e["url"]: e["state"] for e in weather["endpoints"]} == {url: "healthy" for url in stack.urls}
    assert stack.up.alive()


async def _unhealthy(admin: AdminClient, url: str) -> bool:
    return (await endpoint_states(admin))[url] == BackendState.UNHEALTHY


def _both_served(stack: Stack) -> dict[int, dict[str, int]] | None:
    counters = host_counters(stack)
    return counters if all(counters.get(port, {}).get("rq_success", 0) >= 5 for port in stack.ports) else None


def _served_more(stack: Stack, port: int, before: dict[int, dict[str, int]]) -> bool:
    return host_counters(stack)[port].get("rq_success", 0) > before.get(port, {}).get("rq_success", 0)


def _admin_backends_json(stack: Stack) -> list[dict]:
    proc = Proc(
        [sys.executable, "-m", "xds_control.cli", "admin", "backends", "--json", "-c", str(stack.path)], name="admin"
    )
    try:
        assert proc.popen.wait(timeout=30) == 0, proc.output
    finally:
        proc.stop()
    return json.loads(proc.output)


@pytest.mark.parametrize("stack", [("--family", "legacy")], indirect=True, ids=["legacy-family-replicas"])
async def test_a_legacy_session_sticks_to_its_replica_and_moves_when_that_replica_dies(stack: Stack) -> None:
    """Replicas of a backend that keeps sessions (legacy family only): Envoy's envelope session state pins the
    aggregator's backend session to the replica that opened it; when that replica dies, the next call lands on
    the other one, whose "session not found" makes the aggregator open a new session there."""
    admin = AdminClient(stack.config.control_plane.admin)
    caller = Caller(stack.endpoint)
    try:
        await async_wait_until(lambda: both_healthy(admin), timeout=DETECT, interval=0.05, what="both replicas healthy")
        before = await asyncio.to_thread(host_counters, stack)
        await asyncio.wait_for(caller.run(limit=20), 120)
        assert len(caller.calls) == 20 and failed(caller.calls) == [], failed(caller.calls)[:3]
        after = await asyncio.to_thread(host_counters, stack)
        served = {
            port: after[port].get("rq_success", 0) - before.get(port, {}).get("rq_success", 0) for port in stack.ports
        }
        holder = max(served, key=served.__getitem__)
        other = next(port for port in stack.ports if port != holder)
        assert served[holder] >= 20 and served[other] <= 2, f"one session's calls all go to one replica: {served}"

        index = stack.ports.index(holder)
        stack.replicas[index].kill()
        await async_wait_until(
            lambda: _unhealthy(admin, stack.urls[index]),
            timeout=DETECT,
            interval=0.02,
            what="the session's replica to be unhealthy",
        )
        caller.calls.clear()
        await asyncio.wait_for(caller.run(limit=20), 120)
        assert len(caller.calls) == 20 and failed(caller.calls) == [], failed(caller.calls)[:3]
        assert (await asyncio.to_thread(host_counters, stack))[other].get("rq_success", 0) >= after[other].get(
            "rq_success", 0
        ) + 20
    finally:
        await admin.close()
