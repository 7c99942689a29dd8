"""Fixtures of the aggregator tests: a fleet of real demo backends (started once, in parallel), an in-process
aggregator driven by a `ViewStore`, and real SDK clients of both families."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest

from tests.aggregator.support import fetch_catalog, make_config, mcp_client
from tests.support.procs import Proc, python_module
from tests.support.waiting import async_wait_until, free_port, free_ports
from xds_control.aggregator import Aggregator, StoreViewSource, direct_upstream_url
from xds_control.config import Config
from xds_control.view import BackendState, Catalog, ViewStore

# name -> demo_server arguments. `flaky` reads its fault and its expected token from files the tests rewrite.
FLEET: dict[str, list[str]] = {
    "weather": ["--name", "weather"],
    "calendar": ["--name", "calendar", "--family", "modern"],
    "alpha": ["--name", "alpha"],
    "beta": ["--name", "beta", "--family", "legacy"],
    "many": ["--name", "many", "--tools", "250", "--page-size", "100"],
    "flaky": ["--name", "flaky"],
}
FLAKY_TOKEN = "token-one"


@dataclass
class Fleet:
    urls: dict[str, str]
    catalogs: dict[str, Catalog]
    fault_file: Path
    backend_token_file: Path
    procs: dict[str, Proc] = field(default_factory=dict)

    def set_fault(self, mode: str) -> None:
        self.fault_file.write_text(mode)

    def set_backend_token(self, token: str) -> None:
        self.backend_token_file.write_text(token)

    def entry(self, name: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "url": self.urls[name], **extra}


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet")
    fault_file, token_file = tmp / "fault", tmp / "token"
    fault_file.write_text("none")
    token_file.write_text(FLAKY_TOKEN)
    ports = dict(zip(FLEET, free_ports(len(FLEET)), strict=True))
    procs: dict[str, Proc] = {}
    try:
        for name, args in FLEET.items():
            extra = ["--fault-file", str(fault_file), "--token-file", str(token_file)] if name == "flaky" else []
            procs[name] = python_module(
                "examples.backends.demo_server", *args, "--port", str(ports[name]), *extra, name=f"backend-{name}"
            )
        for proc in procs.values():
            proc.wait_for_line("READY", timeout=30)
        urls = {name: f"http://127.0.0.1:{port}/mcp" for name, port in ports.items()}

        async def catalogs() -> dict[str, Catalog]:
            async def one(name: str) -> Catalog:
                mode = "2026-07-28" if name == "calendar" else "legacy"
                headers = {"authorization": f"Bearer {FLAKY_TOKEN}"} if name == "flaky" else None
                return await fetch_catalog(urls[name], headers=headers, mode=mode)

            fetched = await asyncio.gather(*(one(n) for n in FLEET))
            return dict(zip(FLEET, fetched, strict=True))

        yield Fleet(urls, asyncio.run(catalogs()), fault_file, token_file, procs)
    finally:
        for proc in procs.values():
            proc.signal(signal.SIGTERM)  # all at once, then wait for each
        for proc in procs.values():
            proc.stop()


@pytest.fixture
def reset_flaky(fleet: Fleet) -> Iterator[Fleet]:
    """The flaky backend healthy and expecting its first token again after the test."""
    yield fleet
    fleet.set_fault("none")
    fleet.set_backend_token(FLAKY_TOKEN)


@dataclass
class Running:
    aggregator: Aggregator
    store: ViewStore
    url: str
    source: StoreViewSource

    async def settle(self) -> None:
        """Until the aggregator has applied the store's current view."""
        await self.aggregator.wait_for_view(self.store.version)

    async def set_state(self, name: str, state: BackendState) -> None:
        self.store.update_backend(name, lambda s: replace(s, state=state))
        await self.settle()


@pytest.fixture
def serve(fleet: Fleet) -> Callable[..., contextlib.AbstractAsyncContextManager[Running]]:
    """`async with serve([entries], **aggregator) as running`: an aggregator over healthy fleet backends
    (`**aggregator`: the config's `aggregator` section; `session_idle_timeout`: the Aggregator's)."""

    @contextlib.asynccontextmanager
    async def run(
        entries: list[dict[str, Any]], *, healthy: tuple[str, ...] | None = None, catalogs: dict[str, Catalog] | None = None,
        session_idle_timeout: float | None = None, manage_gc: bool = False, **aggregator: Any,
    ) -> AsyncIterator[Running]:  # fmt: skip
        port = free_port()
        config: Config = make_config(entries, port=port, **aggregator)
        store = ViewStore(config)
        for entry in entries:
            name = entry["name"]
            if healthy is None or name in healthy:
                cat = (catalogs or {}).get(name) or fleet.catalogs.get(name)
                store.update_backend(name, lambda s, cat=cat: replace(s, state=BackendState.HEALTHY, catalog=cat))
        source = StoreViewSource(store)
        idle = {"session_idle_timeout": session_idle_timeout} if session_idle_timeout is not None else {}
        agg = Aggregator(
            config, source, upstream_url=direct_upstream_url, report_interval=0.05, coalesce_window=0.02,
            manage_gc=manage_gc, **idle,
        )  # fmt: skip
        async with agg.running():
            await agg.wait_for_view(store.version)
            async with agg.serving("127.0.0.1", port) as url:
                yield Running(agg, store, url, source)

    return run


class Notifications:
    """A legacy client's notifications, as a queue of method names."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    async def __call__(self, message: Any) -> None:
        method = getattr(message, "method", None)
        if isinstance(method, str) and method.endswith("list_changed"):
            self.queue.put_nowait(method)

    async def next(self, timeout: float = 5.0) -> str:
        return await asyncio.wait_for(self.queue.get(), timeout)


@contextlib.asynccontextmanager
async def legacy_listener(running: Running) -> AsyncIterator[tuple[Any, Notifications]]:
    """A legacy client whose standalone GET stream is open (so notifications can reach it)."""
    notes = Notifications()
    async with mcp_client(running.url, "legacy", message_handler=notes) as client:
        sessions = running.aggregator.sessions
        await async_wait_until(
            lambda: any(n > 0 for n in sessions.in_flight().values()), what="the GET stream of the legacy client"
        )
        yield client, notes


def tool_names(result: types.ListToolsResult) -> list[str]:
    return [t.name for t in result.tools]
