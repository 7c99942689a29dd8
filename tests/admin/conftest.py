"""Admin API fixtures: a real ViewStore served by a real grpc.aio server on a free port, and fakes of its ports."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from tests.support.waiting import free_port
from xds_control.admin.client import AdminClient
from xds_control.admin.ports import NodeInfo
from xds_control.admin.service import AdminServer, start_admin_server
from xds_control.config import Config, parse_config
from xds_control.view import BackendState, BackendStatus, BreakerState, ViewStore

TOKEN_ENV = "XDS_CONTROL_TEST_ADMIN_TOKEN"
PLANTED_TOKEN = "planted-Secret-7f3c9a1e-do-not-print"


def make_config(admin: str, **control_plane: Any) -> Config:
    return parse_config(
        {
            "control_plane": {"admin": admin, **control_plane},
            "backends": [
                {"name": "weather", "url": "http://127.0.0.1:9001/mcp"},
                {"name": "calc", "endpoints": ["http://127.0.0.1:9002/mcp", "http://127.0.0.1:9003/mcp"]},
            ],
        }
    )


@dataclass
class FakeHealth:
    """A HealthControl that records calls and writes plausible results into the store."""

    store: ViewStore
    probed: list[str] = field(default_factory=list)
    resets: list[str] = field(default_factory=list)
    outcomes: list[tuple[str, int, int, str | None]] = field(default_factory=list)
    raise_key_error: bool = False

    async def probe_now(self, name: str) -> BackendStatus:
        if self.raise_key_error:
            raise KeyError(name)
        self.probed.append(name)
        self.store.update_backend(
            name, lambda s: replace(s, state=BackendState.HEALTHY, last_probe_ms=7.0, last_error=None)
        )
        return self.store.current.backends[name]

    async def reset_breaker(self, name: str) -> BackendStatus:
        self.resets.append(name)
        self.store.update_backend(name, lambda s: replace(s, breaker=BreakerState.CLOSED, consecutive_failures=0))
        return self.store.current.backends[name]

    async def record_outcomes(self, name: str, successes: int, failures: int, category: str | None) -> None:
        if self.raise_key_error:
            raise KeyError(name)
        self.outcomes.append((name, successes, failures, category))


@dataclass
class FakeNodes:
    items: list[NodeInfo] = field(default_factory=list)

    def nodes(self) -> list[NodeInfo]:
        return list(self.items)


@dataclass
class Harness:
    config: Config
    store: ViewStore
    health: FakeHealth
    nodes: FakeNodes
    server: AdminServer

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def client(self, token: str | None = None) -> AdminClient:
        return AdminClient(self.target, token)


async def start_harness(
    admin_host: str = "127.0.0.1", *, health: bool = True, nodes: bool = True, **control_plane: Any
) -> Harness:
    config = make_config(f"{admin_host}:{free_port()}", **control_plane)
    store = ViewStore(config)
    fake_health = FakeHealth(store)
    fake_nodes = FakeNodes()
    server = await start_admin_server(config, store, fake_health if health else None, fake_nodes if nodes else None)
    return Harness(config, store, fake_health, fake_nodes, server)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = await start_harness()
    try:
        yield h
    finally:
        await h.server.stop(grace=0.5)


@pytest.fixture
async def client(harness: Harness) -> AsyncIterator[AdminClient]:
    async with harness.client() as c:
        yield c


@pytest.fixture(autouse=True)
def _keep_root_logging() -> Iterator[None]:
    """The CLI's setup_logging replaces root handlers; put pytest's back after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
