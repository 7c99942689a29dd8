"""Aggregator replicas behind Envoy (`aggregator.replicas`): real `xds-control serve`, Envoy and
`xds-control aggregator --replica i` processes, a real backend, steady load of legacy and modern clients."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.support.load import CallLoad
from tests.support.procs import demo_backend
from tests.support.scaled import ScaledStack, scaled_config
from tests.support.waiting import async_wait_until, free_port

pytestmark = pytest.mark.integration


def owner(session_id: str) -> int:
    """The aggregator port Envoy pinned a session to: its envelope is `base64(host:port);UV:base64(id)`."""
    host = base64.b64decode(session_id.split(";", 1)[0]).decode()
    return int(host.rsplit(":", 1)[1])


async def test_a_killed_replica_fails_only_what_it_had_in_flight_and_its_legacy_clients_start_again(
    tmp_path: Path,
) -> None:
    port = free_port()
    backend = demo_backend("alpha", port)
    config, planes = scaled_config([{"name": "alpha", "url": f"http://127.0.0.1:{port}/mcp"}], replicas=2)
    stack = ScaledStack(config, planes, tmp_path)
    load = CallLoad(stack.mcp_url, "alpha_echo", modern=2, legacy=4)
    try:
        await stack.start()
        await load.start()
        await async_wait_until(lambda: load.each_ok(3), timeout=30, what="every client calling")
        assert load.stats.failed == 0, load.stats.summary()
        legacy = {name: w for name, w in load.stats.workers.items() if name.startswith("legacy")}
        owners = {name: owner(w.sessions[0]) for name, w in legacy.items()}
        victim = config.aggregator.port
        survivor = config.aggregator.port + 1
        assert set(owners.values()) == {victim, survivor}, "legacy sessions are spread over both replicas"

        before = {name: w.ok for name, w in load.stats.workers.items()}
        stack.kill("aggregator-0")
        await async_wait_until(
            lambda: all(w.ok >= before[n] + 5 for n, w in load.stats.workers.items()),
            timeout=30,
            what="every client going on after the kill",
        )
        stats = await load.stop()
    finally:
        await load.stop()
        stack.stop()
        backend.stop()

    for name, worker in stats.workers.items():
        if name.startswith("modern"):
            assert worker.failed <= 1, f"{name}: only a call in flight may fail: {stats.summary()}"
        elif owners[name] == survivor:
            assert worker.failed == 0 and len(worker.sessions) == 1, f"{name} was on the survivor: {stats.summary()}"
        else:
            # the call in flight, and the next one (its session is gone: 404), then a new session on the survivor
            assert 1 <= len(worker.sessions) - 1 <= 2 and worker.failed <= 2, f"{name}: {stats.summary()}"
            assert owner(worker.sessions[-1]) == survivor
