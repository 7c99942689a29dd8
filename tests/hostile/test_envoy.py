"""Envoy's listeners under slow clients and connection floods, and what Envoy is given of `up`'s environment."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import pytest

from tests.hostile.support import child_env_of
from tests.support.procs import Proc
from tests.support.stack import async_start_envoy, running_control_plane, stack_config
from tests.support.waiting import async_wait_until
from xds_control.config import dump_config

pytestmark = pytest.mark.integration


async def test_slow_headers_are_cut_off_and_legit_calls_go_on(hostile) -> None:  # type: ignore[no-untyped-def]
    report = await hostile("envoy-slowloris")
    facts = report.finding.facts
    assert facts["accepted"] == facts["connections"] and facts["unfinished"] == 0
    assert facts["cut_off"] == facts["connections"]  # held indefinitely before
    assert facts["slowest_cut_s"] < 10


async def test_connections_past_the_limit_are_closed_at_accept(tmp_path: Path) -> None:
    config = stack_config([], envoy={"max_downstream_connections": 20})
    async with running_control_plane(config) as _plane:
        envoy = await async_start_envoy(config, tmp_path)
        try:
            held = []
            for _ in range(40):
                held.append(socket.create_connection(("127.0.0.1", config.listener.port), timeout=5))

            def closed(sock: socket.socket) -> bool:
                sock.setblocking(False)
                try:
                    return sock.recv(1) == b""
                except BlockingIOError:
                    return False
                except OSError:
                    return True

            await async_wait_until(lambda: sum(closed(s) for s in held) >= 20, timeout=10, what="20 closed")
            open_now = [s for s in held if not closed(s)]
            assert len(open_now) <= 20
            for sock in held:
                sock.close()
            await async_wait_until(lambda: _http_ok(config.listener.port), timeout=10, what="a request after")
        finally:
            await asyncio.to_thread(envoy.stop)


def _http_ok(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return sock.recv(100).startswith(b"HTTP/1.1 404")


async def test_envoy_and_the_aggregator_get_no_credential_they_do_not_use(tmp_path: Path) -> None:
    secrets = {"HOSTILE_ADMIN_TOKEN": "adm-S3CRET", "HOSTILE_XDS_TOKEN": "xds-S3CRET", "HOSTILE_BACKEND": "be-S3CRET"}
    backend = Proc(
        [sys.executable, "-m", "examples.backends.demo_server", "--name", "weather", "--port", "0"], name="weather"
    )
    try:
        url = (await asyncio.to_thread(backend.wait_for_line, "READY", 30)).split()[-1]
        config = stack_config(
            [{"name": "weather", "url": url, "auth": {"token_env": "HOSTILE_BACKEND"}}],
            control_plane={"admin_token_env": "HOSTILE_ADMIN_TOKEN", "xds_token_env": "HOSTILE_XDS_TOKEN"},
        )
        path = tmp_path / "config.yaml"
        path.write_text(dump_config(config))
        up = Proc(
            [sys.executable, "-m", "xds_control.cli", "up", "-c", str(path), "--quiet"],
            env={**os.environ, **secrets, "TMPDIR": str(tmp_path)},
            name="up",
        )
        try:
            await asyncio.to_thread(up.wait_for_line, "MCP endpoint", 90)
            pids = {}
            for line in up.output.splitlines():
                for name in ("envoy", "aggregator", "control-plane"):
                    if f"started {name} (pid " in line:
                        pids[name] = int(line.split("(pid ")[1].split(")")[0])
            envs = {name: child_env_of(pid) for name, pid in pids.items()}
            bootstrap = next(tmp_path.glob("*/envoy-bootstrap.yaml"))
            assert bootstrap.stat().st_mode & 0o077 == 0  # it holds the ADS token
        finally:
            await asyncio.to_thread(up.stop)
    finally:
        await asyncio.to_thread(backend.stop)
    assert not set(secrets) & set(envs["envoy"]) and not set(secrets.values()) & set(envs["envoy"].values())
    assert "HOSTILE_XDS_TOKEN" not in envs["aggregator"]
    assert {"HOSTILE_ADMIN_TOKEN", "HOSTILE_BACKEND"} <= set(envs["aggregator"])  # it uses these
    assert set(secrets) <= set(envs["control-plane"])
