"""Envoy logs each request that failed at the gateway, with its response flags (what the README's
troubleshooting section tells operators to look for): UH, UF/URX, NR; successful requests are not logged."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.procs import demo_backend
from tests.support.stack import async_start_envoy, running_control_plane, stack_config
from tests.support.waiting import async_wait_until, free_port
from xds_control.view import BackendState

pytestmark = pytest.mark.integration

INIT = b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}'


def post(url: str) -> int:
    request = urllib.request.Request(
        url, data=INIT, headers={"content-type": "application/json", "accept": "application/json, text/event-stream"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A port that refuses connections for as long as the block runs (bound, never listening: nobody else gets it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_failed_requests_are_logged_with_their_response_flags(tmp_path: Path) -> None:
    live_port = free_port()
    with demo_backend("live", live_port), refusing_port() as down_port, refusing_port() as gone_port:
        config = stack_config(
            [{"name": "live", "url": f"http://127.0.0.1:{live_port}/mcp"}, {"name": "down", "url": f"http://127.0.0.1:{down_port}/mcp"},
             {"name": "gone", "url": f"http://127.0.0.1:{gone_port}/mcp"}],
            listener={"expose_backends": True},
        )  # fmt: skip
        async with running_control_plane(config) as plane:
            plane.store.update_backend("live", lambda s: replace(s, state=BackendState.HEALTHY))
            plane.store.update_backend("down", lambda s: replace(s, state=BackendState.UNHEALTHY))
            plane.store.update_backend("gone", lambda s: replace(s, state=BackendState.HEALTHY))  # but nothing listens
            envoy = await async_start_envoy(config, tmp_path / "envoy")
            try:
                base = f"http://127.0.0.1:{config.listener.port}"

                async def status(path: str, expected: int) -> bool:
                    return await asyncio.to_thread(post, f"{base}{path}") == expected

                await async_wait_until(
                    lambda: status("/backends/live/mcp", 200), timeout=10, what="the live backend through Envoy"
                )
                await async_wait_until(
                    lambda: status("/backends/down/mcp", 503), timeout=10, what="503 for the unhealthy backend"
                )
                assert await status("/backends/gone/mcp", 503)
                assert await status("/nowhere", 404)

                def logged(flag: str, path: str) -> bool:
                    return any(
                        "[access]" in line and f"flags={flag}" in line and f" {path} " in line for line in envoy.lines
                    )

                await async_wait_until(lambda: logged("UH", "/backends/down/mcp"), timeout=5, what="a UH line")
                await async_wait_until(lambda: logged("NR", "/nowhere"), timeout=5, what="an NR line")
                await async_wait_until(
                    lambda: any(
                        "[access]" in line and "/backends/gone/mcp" in line and ("UF" in line or "URX" in line)
                        for line in envoy.lines
                    ),
                    timeout=5,
                    what="a UF/URX line",
                )
                access = [line for line in envoy.lines if "[access]" in line]
                assert not [line for line in access if "/backends/live/mcp" in line], (
                    "successful requests are not logged"
                )
                uh = next(line for line in access if "flags=UH" in line)
                assert "status=503" in uh and "cluster=down" in uh and "listener=public" in uh
            except BaseException:
                print(envoy.output)
                raise
            finally:
                envoy.stop()
