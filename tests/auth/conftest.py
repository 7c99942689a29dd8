"""Fixtures of the auth tests: two real demo backends (legacy weather, modern calendar), started once, their
catalogs fetched with a real SDK client, and two issuers (RS256 from a JWKS file, ES256 from a JWKS URL)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.aggregator.support import EnvoyPath, fetch_catalog, through_envoy
from tests.auth.support import ISSUER_FILE, ISSUER_URL, Issuer, JwksServer
from tests.support.procs import Proc, demo_backend
from tests.support.stack import stack_config
from tests.support.waiting import free_ports
from xds_control.config import Config
from xds_control.view import Catalog

RULES = [
    {"name": "ops", "match": {"claim": "groups", "any_of": ["ops"]}, "tools": ["weather_*"], "resources": ["*"]},
    {"name": "planner", "match": {"claim": "scope", "any_of": ["calendar"]}, "tools": ["calendar_list_*"]},
]


@dataclass
class Backends:
    urls: dict[str, str]
    catalogs: dict[str, Catalog]


@pytest.fixture(scope="module")
def backends() -> Iterator[Backends]:
    ports = free_ports(2)
    procs: list[Proc] = []
    try:
        procs.append(demo_backend("weather", ports[0]))
        procs.append(demo_backend("calendar", ports[1], "--family", "modern"))
        urls = {"weather": f"http://127.0.0.1:{ports[0]}/mcp", "calendar": f"http://127.0.0.1:{ports[1]}/mcp"}

        async def catalogs() -> dict[str, Catalog]:
            return {
                "weather": await fetch_catalog(urls["weather"]),
                "calendar": await fetch_catalog(urls["calendar"], mode="2026-07-28"),
            }

        yield Backends(urls, asyncio.run(catalogs()))
    finally:
        for proc in procs:
            proc.stop()


@dataclass
class AuthStack:
    path: EnvoyPath
    config: Config
    jwks_file: Path
    file_issuer: Issuer
    url_issuer: Issuer
    jwks_server: JwksServer

    @property
    def url(self) -> str:
        """Envoy's public /mcp."""
        return f"http://127.0.0.1:{self.config.listener.port}/mcp"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.config.listener.port}"

    @property
    def audience(self) -> str:
        return self.config.auth_resource()

    def token(self, sub: str = "alice", issuer: Issuer | None = None, **claims: Any) -> str:
        return (issuer or self.file_issuer).token(self.audience, sub=sub, **claims)


@contextlib.asynccontextmanager
async def auth_stack(
    backends: Backends, tmp_path: Path, *, backend_extra: dict[str, Any] | None = None, **sections: Any
) -> AsyncIterator[AuthStack]:
    """Control plane + real Envoy + aggregator with `auth` (a file issuer and a URL issuer), `authorization`
    (`RULES`, default deny) unless `sections` say otherwise."""
    file_issuer, url_issuer = Issuer(ISSUER_FILE, "RS256"), Issuer(ISSUER_URL, "ES256")
    tmp_path.mkdir(parents=True, exist_ok=True)
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(file_issuer.jwks())
    with JwksServer(url_issuer.jwks()).running() as server:
        auth = {
            "issuers": [
                {"issuer": ISSUER_FILE, "jwks_file": str(jwks_file)},
                {"issuer": ISSUER_URL, "jwks_url": server.url, "jwks_cache_duration": "1s"},
            ],
            "scopes_supported": ["mcp", "calendar"],
        }
        entries = [{"name": n, "url": u, **(backend_extra or {}).get(n, {})} for n, u in backends.urls.items()]
        config = stack_config(
            entries, auth={**auth, **sections.pop("auth", {})}, authorization={"rules": RULES}, **sections
        )
        async with through_envoy(config, backends.catalogs, tmp_path) as path:
            yield AuthStack(path, config, jwks_file, file_issuer, url_issuer, server)
