"""`xds-control up` end to end, as a real subprocess: demo backends, control plane, Envoy (and the aggregator when built)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import shutil
import signal
import socket
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.procs import Proc
from tests.support.stack import stack_config
from tests.support.waiting import free_port, port_open, wait_until
from xds_control.config import dump_config, load_config

pytestmark = pytest.mark.integration

AGGREGATOR_BUILT = importlib.util.find_spec("xds_control.aggregator.service") is not None
START = 60.0  # seconds allowed for the whole stack to come up on a loaded 2-core CI machine


def up(*args: str, env: dict[str, str] | None = None) -> Proc:
    return Proc([sys.executable, "-m", "xds_control.cli", "up", "--quiet", *args], env=env, name="xds-control-up")


def started_pids(proc: Proc) -> dict[str, int]:
    """`started NAME (pid N)` log lines -> {NAME: N}."""
    return {m["name"]: int(m["pid"]) for m in re.finditer(r"started (?P<name>\S+) \(pid (?P<pid>\d+)\)", proc.output)}


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


class Demo:
    """A running `xds-control up` demo and what it printed."""

    def __init__(self, proc: Proc, listener_port: int) -> None:
        self.proc = proc
        self.listener_port = listener_port
        self.endpoint_line = proc.wait_for_line("MCP endpoint:", timeout=START)
        config_line = proc.wait_for_line("demo config:", timeout=1)
        self.config_path = Path(config_line.split("demo config:")[1].split()[0])
        self.config = load_config(self.config_path)
        self.pids = started_pids(proc)

    def backend_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.listener_port}/backends/{name}/mcp"


def start_demo(*args: str) -> Iterator[Demo]:
    port = free_port()
    proc = up(*args, env={"XDS_CONTROL_DEMO_PORT": str(port)})
    demo = None
    try:
        demo = Demo(proc, port)
        yield demo
    finally:
        proc.stop()
        if demo is not None:  # a runner killed by a test cannot remove its own run directory
            shutil.rmtree(demo.config_path.parent, ignore_errors=True)


@pytest.fixture
def demo() -> Iterator[Demo]:
    """A demo of the test's own, which it may stop or break."""
    yield from start_demo()


@pytest.fixture(scope="module")
def shared_demo() -> Iterator[Demo]:
    """One demo for the tests that only look; with two aggregators behind /mcp (`--aggregators 2`)."""
    yield from start_demo("--aggregators", "2")


def test_the_demo_prints_the_endpoint_once_when_envoy_is_ready(shared_demo):
    demo = shared_demo
    assert demo.endpoint_line == f"MCP endpoint: http://127.0.0.1:{demo.listener_port}/mcp"
    assert http_status(f"http://127.0.0.1:{demo.config.envoy.admin_port}/ready") == 200
    assert port_open(demo.listener_port)
    for name in ("weather", "calendar", "notes"):  # the lines after "MCP endpoint:" may still be in the pipe
        assert f"backend {name}" in demo.proc.wait_for_line(demo.backend_url(name), timeout=5)
    expected = {"weather", "calendar", "notes", "control-plane", "envoy"} | (
        {"aggregator", "aggregator-1"} if AGGREGATOR_BUILT else set()  # the shared demo runs two
    )
    assert set(demo.pids) == expected
    assert demo.proc.output.count("MCP endpoint:") == 1
    # the generated config is a real config file: the admin CLI and `check` can use it
    assert demo.config.listener.expose_backends and [b.name for b in demo.config.backends] == [
        "weather",
        "calendar",
        "notes",
    ]


def test_an_mcp_client_lists_and_calls_a_demo_tool_through_envoy(shared_demo):
    demo = shared_demo
    from mcp import Client

    async def call() -> tuple[list[str], str]:
        async with Client(demo.backend_url("weather")) as client:
            tools = await client.list_tools()
            result = await client.call_tool("get_current_conditions", {"city": "Paris"})
            return [t.name for t in tools.tools], result.content[0].text

    names, text = asyncio.run(asyncio.wait_for(call(), 30))
    assert names == ["get_forecast", "get_current_conditions", "list_alerts"]
    assert text.startswith("Paris: ")


@pytest.mark.skipif(not AGGREGATOR_BUILT, reason="xds_control.aggregator.service is not built yet")
def test_the_mcp_endpoint_serves_the_merged_catalog(shared_demo):
    demo = shared_demo
    from mcp import Client

    async def tools() -> list[str]:
        async with Client(f"http://127.0.0.1:{demo.listener_port}/mcp") as client:
            return [t.name for t in (await client.list_tools()).tools]

    def all_three() -> bool:
        names = asyncio.run(asyncio.wait_for(tools(), 10))
        return all(any(name.startswith(f"{b}_") for name in names) for b in ("weather", "calendar", "notes"))

    wait_until(all_three, timeout=30, interval=0.2, what="tools of all three backends on /mcp")


def test_aggregators_n_runs_n_aggregators_behind_mcp(shared_demo):
    demo = shared_demo
    assert {"aggregator", "aggregator-1"} <= set(demo.pids)
    assert demo.config.aggregator.replicas == 2
    for port in (demo.config.aggregator.port, demo.config.aggregator.port + 1):
        assert http_status(f"http://127.0.0.1:{port}/healthz") == 200


def test_sigterm_stops_every_child_and_exits_0(demo):
    assert all(not pid_gone(pid) for pid in demo.pids.values())
    demo.proc.signal(signal.SIGTERM)
    assert demo.proc.popen.wait(timeout=30) == 0
    assert "stopping (SIGTERM)" in demo.proc.output
    for name, pid in demo.pids.items():
        wait_until(lambda pid=pid: pid_gone(pid), timeout=5, what=f"{name} (pid {pid}) to be gone")
    assert not port_open(demo.listener_port)


def test_sigint_like_ctrl_c_stops_every_child_and_exits_0(demo):
    os.kill(demo.proc.popen.pid, signal.SIGINT)  # the runner only: children are in their own sessions
    assert demo.proc.popen.wait(timeout=30) == 0
    for pid in demo.pids.values():
        wait_until(lambda pid=pid: pid_gone(pid), timeout=5, what=f"pid {pid} to be gone")


def test_no_child_outlives_a_killed_runner(demo):
    os.kill(demo.proc.popen.pid, signal.SIGKILL)  # not the group: only the runner dies, by the kernel's hand
    demo.proc.popen.wait(timeout=10)
    for name, pid in demo.pids.items():
        wait_until(lambda pid=pid: pid_gone(pid), timeout=10, what=f"{name} (pid {pid}) to die with the runner")


def test_a_dead_demo_backend_leaves_the_stack_running_but_a_dead_envoy_stops_it(demo):
    os.kill(demo.pids["notes"], signal.SIGKILL)
    demo.proc.wait_for_line("notes was killed by SIGKILL; the control plane will mark it unhealthy", timeout=10)
    assert demo.proc.alive()
    assert http_status(f"http://127.0.0.1:{demo.config.envoy.admin_port}/ready") == 200

    os.kill(demo.pids["envoy"], signal.SIGKILL)
    assert demo.proc.popen.wait(timeout=30) == 1
    demo.proc.wait_for_line("error: envoy was killed by SIGKILL; stopping the stack", timeout=5)
    for name, pid in demo.pids.items():
        wait_until(lambda pid=pid: pid_gone(pid), timeout=5, what=f"{name} (pid {pid}) to be gone")


# -- failures at start ---------------------------------------------------------------------------


def write_config(tmp_path: Path, **sections: object) -> tuple[Path, dict]:
    config = stack_config(**sections)
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(config))
    return path, yaml.safe_load(path.read_text())


def test_a_control_plane_that_refuses_to_start_makes_up_exit_1_naming_it(tmp_path):
    path, data = write_config(tmp_path)  # the admin API off loopback without a token: the control plane refuses
    port = data["control_plane"]["admin"].rsplit(":", 1)[1]
    path.write_text(path.read_text().replace(data["control_plane"]["admin"], f"0.0.0.0:{port}"))
    proc = up("-c", str(path))
    try:
        assert proc.popen.wait(timeout=START) == 1
    finally:
        proc.stop()
    out = proc.output
    assert "error: control-plane exited with code 1 before it was ready" in out
    assert "last output of control-plane:" in out and "not a loopback address" in out
    assert "started envoy" not in out
    assert "MCP endpoint:" not in out


def test_a_control_plane_port_in_use_exits_1_before_anything_starts(tmp_path):
    path, data = write_config(tmp_path)
    host, port = data["control_plane"]["xds"].rsplit(":", 1)
    with socket.socket() as squatter:
        squatter.bind((host, int(port)))
        squatter.listen()
        proc = up("-c", str(path))
        assert proc.popen.wait(timeout=30) == 1
        proc.stop()
    assert f"error: control_plane.xds: cannot bind {host}:{port}: Address already in use" in proc.output
    assert "started " not in proc.output


def test_a_demo_listener_port_in_use_exits_1_before_any_demo_backend_starts():
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        proc = up(env={"XDS_CONTROL_DEMO_PORT": str(port)})
        assert proc.popen.wait(timeout=30) == 1
        proc.stop()
    assert f"error: listener.port: cannot bind 127.0.0.1:{port}: Address already in use" in proc.output
    assert "set XDS_CONTROL_DEMO_PORT=0" in proc.output
    assert "started " not in proc.output


def test_a_malformed_config_exits_2_with_nothing_started(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("listener:\n  port: seventy\nbackends:\n  - name: Bad_Name\n    url: ftp://x/mcp\n")
    proc = up("-c", str(path))
    assert proc.popen.wait(timeout=30) == 2
    proc.stop()
    assert "listener.port" in proc.output and "backends.0.name" in proc.output
    assert "started " not in proc.output


def test_a_missing_envoy_binary_exits_1_with_nothing_started(tmp_path):
    path, _ = write_config(tmp_path, envoy={"binary": str(tmp_path / "no-envoy")})
    proc = up("-c", str(path))
    assert proc.popen.wait(timeout=30) == 1
    proc.stop()
    assert "error: envoy.binary:" in proc.output and "is not an executable file" in proc.output
    assert "started " not in proc.output


def test_a_listener_port_in_use_exits_1_before_anything_starts(tmp_path):
    """Envoy would share the port silently (SO_REUSEPORT), so `up` refuses it first."""
    path, data = write_config(tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", data["listener"]["port"]))
        squatter.listen()
        proc = up("-c", str(path))
        assert proc.popen.wait(timeout=30) == 1
        proc.stop()
    assert (
        f"error: listener.port: cannot bind 127.0.0.1:{data['listener']['port']}: Address already in use" in proc.output
    )
    assert "started " not in proc.output


def test_a_nonsense_demo_port_exits_1_with_nothing_started():
    proc = up(env={"XDS_CONTROL_DEMO_PORT": "ten"})
    assert proc.popen.wait(timeout=30) == 1
    proc.stop()
    assert "error: XDS_CONTROL_DEMO_PORT must be a port number" in proc.output
    assert "started " not in proc.output
