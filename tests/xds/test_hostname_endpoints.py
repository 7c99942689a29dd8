"""A backend named by host name moves to another address: the control plane looks the name up again every
probe round and Envoy follows (what a Kubernetes Service re-created or a Docker service re-created does).

Real processes throughout: `xds-control serve` runs in its own mount namespace with a hosts file of the
test's bind-mounted over /etc/hosts (the system resolver reads it on every lookup), so the test changes what
the name resolves to without a DNS server; a real Envoy and real demo backends on two loopback addresses.
Skipped, saying why, where mount namespaces are not allowed (not root, or no CAP_SYS_ADMIN).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import Proc, demo_backend
from tests.support.stack import envoy_get, stack_config, start_envoy
from tests.support.waiting import free_port, wait_until
from xds_control.config import dump_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NAME = "weather.tools.svc.test"


def require_mount_namespace() -> None:
    try:
        subprocess.run(
            ["unshare", "-m", "--propagation", "private", "true"], check=True, capture_output=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"no private mount namespace here (unshare -m): {exc}")


def serve_with_hosts(config_path: Path, hosts: Path) -> Proc:
    script = 'mount --bind "$1" /etc/hosts && exec "$0" -m xds_control.cli serve -c "$2"'
    argv = [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        sys.executable,
        str(hosts),
        str(config_path),
    ]
    return Proc(argv, name="control-plane")


def envoy_hosts(config, cluster: str) -> dict[str, str]:
    """address:port -> health flags of `cluster`'s hosts, from Envoy's admin /clusters."""
    _, text = envoy_get(config, "/clusters")
    hosts = {}
    for line in text.splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == cluster and parts[2] == "health_flags":
            hosts[parts[1]] = parts[3]
    return hosts


def tool_call_through_envoy(config) -> str:
    from mcp import Client

    async def call() -> str:
        async with Client(f"http://127.0.0.1:{config.listener.port}/backends/weather/mcp") as client:
            result = await client.call_tool("get_forecast", {"city": "Oslo"})
            return str(result.content[0].text)  # type: ignore[union-attr]

    return asyncio.run(asyncio.wait_for(call(), 10))


def test_a_backend_whose_name_moves_to_another_address_is_followed_by_envoy(tmp_path):
    require_mount_namespace()
    port = free_port("127.0.0.2")
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n127.0.0.2 {NAME}\n")
    first = demo_backend("weather", port, "--host", "127.0.0.2", "--allowed-host", NAME)
    second = demo_backend("weather", port, "--host", "127.0.0.3", "--allowed-host", NAME)
    config = stack_config(
        [{"name": "weather", "url": f"http://{NAME}:{port}/mcp"}],
        listener={"expose_backends": True},
        health={"interval": "1s", "timeout": "900ms", "unhealthy_threshold": 1},
    )
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(config))
    plane = serve_with_hosts(path, hosts)
    envoy = None
    try:
        plane.wait_for_line("READY", timeout=30)
        envoy = start_envoy(config, tmp_path)
        wait_until(
            lambda: envoy_hosts(config, "weather") == {f"127.0.0.2:{port}": "healthy"},
            timeout=20,
            interval=0.2,
            what="the name's first address, healthy, in Envoy",
        )
        assert "Oslo" in tool_call_through_envoy(config)

        hosts.write_text(f"127.0.0.1 localhost\n127.0.0.3 {NAME}\n")  # in place: the bind mount keeps the inode
        wait_until(
            lambda: envoy_hosts(config, "weather") == {f"127.0.0.3:{port}": "healthy"},
            timeout=20,
            interval=0.2,
            what="Envoy to follow the name to its new address",
        )
        first.stop()  # only the new address can answer now
        assert "Oslo" in tool_call_through_envoy(config)
    finally:
        if envoy is not None:
            envoy.stop()
        plane.stop()
        first.stop()
        second.stop()
