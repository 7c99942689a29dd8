"""Helpers for the health tests: real demo backends, a running monitor, waits on the view."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import Proc, demo_backend, python_module
from tests.support.waiting import free_port, free_ports
from xds_control.config import Config, parse_config
from xds_control.health.monitor import HealthMonitor
from xds_control.view import BackendState, BackendStatus, View, ViewStore

# Fast settings: every wait in these tests is a few probe intervals.
FAST_HEALTH = {"interval": 0.1, "timeout": 1.0, "unhealthy_threshold": 2, "healthy_threshold": 1, "jitter": 0.1}


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}/mcp"


def make_config(backends: list[dict[str, Any]], **sections: Any) -> Config:
    health = {**FAST_HEALTH, **sections.pop("health", {})}
    breaker = {"failure_threshold": 100, **sections.pop("circuit_breaker", {})}
    return parse_config({"health": health, "circuit_breaker": breaker, "backends": backends, **sections})


class Backends:
    """Starts demo backends on demand and kills every one at teardown."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def start(
        self, name: str = "demo", *args: str, port: int | None = None, env: dict[str, str] | None = None
    ) -> tuple[Proc, int]:
        port = port or free_port()
        proc = demo_backend(name, port, *args, env=env)
        self.procs.append(proc)
        return proc, port

    def start_many(
        self, specs: dict[str, tuple[str, ...]], ports: dict[str, int] | None = None
    ) -> dict[str, tuple[Proc, int]]:
        """Start several backends at once (`key: (name, *args)`, on `ports[key]` if given) and wait for all of them."""
        fresh = iter(free_ports(len(specs)))
        started: dict[str, tuple[Proc, int]] = {}
        for key, (name, *args) in specs.items():
            port = (ports or {}).get(key) or next(fresh)
            proc = python_module(
                "examples.backends.demo_server", "--name", name, "--port", str(port), *args, name=f"backend-{key}"
            )
            self.procs.append(proc)
            started[key] = (proc, port)
        for proc, _ in started.values():
            proc.wait_for_line("READY", timeout=30)
        return started

    def signal(self, proc: Proc, sig: int = signal.SIGUSR1) -> None:
        os.kill(proc.popen.pid, sig)

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.stop(timeout=2)  # joins the output reader
            if proc.popen.stdout is not None:
                proc.popen.stdout.close()  # Proc leaves its pipe open (a ResourceWarning under -W error)


@pytest.fixture
def backends() -> Iterator[Backends]:
    started = Backends()
    try:
        yield started
    finally:
        started.stop_all()


WEATHER_TOOLS = frozenset({"get_forecast", "get_current_conditions", "list_alerts"})
PAGED = ("--tools", "60", "--page-size", "25")  # 63 tools over three pages

FLEET_SPECS: dict[str, tuple[str, ...]] = {
    "both": ("weather", *PAGED),
    "modern": ("weather", "--family", "modern", *PAGED),
    "legacy": ("weather", "--family", "legacy", *PAGED),
    "stateless": ("weather", "--family", "legacy", "--stateless", *PAGED),
    "both-json": ("weather", "--json-response", *PAGED),
    "legacy-json": ("weather", "--family", "legacy", "--json-response", *PAGED),
}


class Fleet:
    """Backends shared by every health test (started once, in parallel); tests must leave them as found."""

    def __init__(self, started: dict[str, tuple[Proc, int]], switch: FaultSwitch) -> None:
        self.started = started
        self.switch = switch

    def port(self, key: str) -> int:
        return self.started[key][1]

    def proc(self, key: str) -> Proc:
        return self.started[key][0]


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    backends = Backends()
    switch = FaultSwitch(tmp_path_factory.mktemp("fault") / "mode")
    try:
        started = backends.start_many({**FLEET_SPECS, "faulty": ("demo", "--fault-file", str(switch.path))})
        yield Fleet(started, switch)
    finally:
        backends.stop_all()


@pytest.fixture
def faulty(fleet: Fleet) -> Iterator[tuple[FaultSwitch, int]]:
    """The fleet's fault-switchable backend, switched back to `none` after the test."""
    fleet.switch.set("none")
    try:
        yield fleet.switch, fleet.port("faulty")
    finally:
        fleet.switch.set("none")


class FaultSwitch:
    """A `--fault-file` the test rewrites to switch a running backend's fault mode."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.set("none")

    def set(self, mode: str) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(mode)
        tmp.replace(self.path)


class ViewHistory:
    """Every view a store publishes (a listener, so no transient state is missed), with a read cursor."""

    def __init__(self, store: ViewStore) -> None:
        self.views: list[View] = [store.current]
        self.cursor = 0
        store.add_listener(self.views.append)


_HISTORIES: weakref.WeakKeyDictionary[ViewStore, ViewHistory] = weakref.WeakKeyDictionary()


def history(store: ViewStore) -> ViewHistory:
    if store not in _HISTORIES:
        _HISTORIES[store] = ViewHistory(store)
    return _HISTORIES[store]


@contextlib.asynccontextmanager
async def running(config: Config, store: ViewStore | None = None) -> AsyncIterator[tuple[HealthMonitor, ViewStore]]:
    """A HealthMonitor running in a task for the duration of the block (cancelled and awaited after)."""
    store = store or ViewStore(config)
    history(store)
    monitor = HealthMonitor(config, store)
    ready = asyncio.Event()
    task = asyncio.create_task(monitor.run(ready=ready))
    try:
        async with asyncio.timeout(5):
            await ready.wait()
        yield monitor, store
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_status(
    store: ViewStore, name: str, check: Callable[[BackendStatus], bool], *, timeout: float = 10.0, what: str = ""
) -> BackendStatus:
    """The first published status of `name` that satisfies `check`, after the one the previous wait returned.

    Every published view is examined (not a poll of the current one), so a state that lasts a
    millisecond, like a half-open breaker's probe, is still seen, and consecutive waits see
    transitions in order.
    """
    record = history(store)
    last_version = -1
    try:
        async with asyncio.timeout(timeout):
            while True:
                while record.cursor < len(record.views):
                    status = record.views[record.cursor].backend(name)
                    record.cursor += 1
                    if status is not None and check(status):
                        return status
                last_version = store.version
                current = store.current.backend(name)
                if current is not None and check(current):  # probe statistics change without a new version
                    return current
                waiter = asyncio.ensure_future(store.wait_for_change(last_version))
                try:
                    async with asyncio.timeout(0.05):
                        await asyncio.shield(waiter)
                except TimeoutError:
                    pass
                finally:
                    waiter.cancel()
    except TimeoutError:
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what or name}; last status: {store.current.backend(name)}"
        ) from None


async def wait_state(store: ViewStore, name: str, state: BackendState, *, timeout: float = 10.0) -> BackendStatus:
    return await wait_status(
        store, name, lambda s: s.state is state, timeout=timeout, what=f"{name} to be {state.value}"
    )
