"""Helpers for the aggregator's integration tests: real SDK clients, catalogs fetched from real backends."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx2
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import LATEST_MODERN_VERSION
from prometheus_client import REGISTRY

from tests.support.stack import async_start_envoy, running_control_plane
from xds_control.aggregator import AdminViewSource, Aggregator
from xds_control.config import Config, parse_config
from xds_control.controlplane import ControlPlane
from xds_control.view import BackendState, Catalog, ViewStore

MODERN = LATEST_MODERN_VERSION
FAMILIES = ("legacy", MODERN)
# A raw 2026-07-28 request: its `_meta` envelope and its HTTP headers (add `mcp-method`, and `mcp-name` if named).
MODERN_ENVELOPE = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
MODERN_HEADERS = {
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
    "mcp-protocol-version": MODERN,
}


async def post_jsonrpc(url: str, message: dict[str, Any], headers: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
    """One raw JSON-RPC POST; the status and the JSON body."""
    async with httpx2.AsyncClient(trust_env=False, timeout=30) as http:
        response = await http.post(url, content=json.dumps(message), headers=dict(headers))
    return response.status_code, response.json()


LEGACY_HEADERS = {
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
    "mcp-protocol-version": "2025-11-25",
}


async def legacy_session(http: httpx2.AsyncClient, url: str) -> dict[str, str]:
    """A raw legacy session (initialize, initialized); the headers its requests carry."""
    init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}}
    response = await http.post(
        url,
        content=json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init}),
        headers=LEGACY_HEADERS,
    )
    assert response.status_code == 200, response.text
    session_headers = {**LEGACY_HEADERS, "mcp-session-id": response.headers["mcp-session-id"]}
    initialized = await http.post(
        url, content=b'{"jsonrpc":"2.0","method":"notifications/initialized"}', headers=session_headers
    )
    assert initialized.status_code == 202
    return session_headers


def legacy_call(
    tool: str, *, meta: dict[str, Any] | None = None, arguments: dict[str, Any] | None = None, request_id: int = 9
) -> bytes:
    """A raw legacy tools/call body (arguments {"text": "hi"} unless given)."""
    params: dict[str, Any] = {
        "name": tool,
        "arguments": {"text": "hi"} if arguments is None else arguments,
        **({"_meta": meta} if meta is not None else {}),
    }
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}).encode()


def dump(model: Any) -> dict[str, Any]:
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


@contextlib.asynccontextmanager
async def mcp_client(
    url: str, mode: str = "legacy", *, headers: Mapping[str, str] | None = None, **kwargs: Any
) -> AsyncIterator[Client]:
    """A real SDK client over streamable HTTP. `mode`: "legacy" or a modern protocol version."""
    async with httpx2.AsyncClient(
        headers=dict(headers or {}), timeout=httpx2.Timeout(30, read=300), trust_env=False
    ) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode, cache=None, **kwargs) as client:
            yield client


async def next_event(subscription: Any) -> Any:
    """The next event of a modern client's listen stream, within 5 s."""
    return await asyncio.wait_for(anext(subscription), 5)


async def fetch_catalog(
    url: str, *, headers: Mapping[str, str] | None = None, mode: str = "legacy", **client_options: Any
) -> Catalog:
    """What a prober would record: every page of every list, as raw JSON (`client_options`: the SDK client's,
    e.g. callbacks, for servers whose lists depend on the client's capabilities)."""
    async with mcp_client(url, mode, headers=headers, **client_options) as client:
        lists: dict[str, list[dict[str, Any]]] = {"tools": [], "resources": [], "resource_templates": [], "prompts": []}
        fetchers = {
            "tools": (client.list_tools, "tools"),
            "resources": (client.list_resources, "resources"),
            "resource_templates": (client.list_resource_templates, "resource_templates"),
            "prompts": (client.list_prompts, "prompts"),
        }
        capabilities = client.server_capabilities
        for kind, (fetch, attr) in fetchers.items():
            if kind == "resource_templates" and capabilities.resources is None:
                continue
            cursor = None
            while True:
                try:
                    page = await fetch(cursor=cursor)
                except Exception:
                    break
                lists[kind] += [dump(item) for item in getattr(page, attr)]
                cursor = page.next_cursor
                if cursor is None:
                    break
        return Catalog.build(**lists, protocol_version=client.protocol_version, capabilities=dump(capabilities))


def make_config(backends: list[dict[str, Any]], **aggregator: Any) -> Config:
    return parse_config({"aggregator": {"port": 18080, **aggregator}, "backends": backends})


def set_healthy(store: ViewStore, name: str, catalog: Catalog | None = None) -> int:
    """Mark a backend healthy (with its catalog); returns the new view version."""
    return store.update_backend(
        name, lambda s: replace(s, state=BackendState.HEALTHY, catalog=catalog if catalog is not None else s.catalog)
    ).version


def set_state(store: ViewStore, name: str, state: BackendState) -> int:
    return store.update_backend(name, lambda s: replace(s, state=state)).version


def cancelled(tool: str, backend: str = "alpha") -> float:
    """How many of the aggregator's tools/call of `tool` on `backend` ended cancelled (its calls metric)."""
    return (
        REGISTRY.get_sample_value(
            "xds_control_aggregator_calls_total",
            {"backend": backend, "method": "tools/call", "tool": tool, "outcome": "cancelled"},
        )
        or 0.0
    )


@dataclass
class EnvoyPath:
    plane: ControlPlane
    aggregator: Aggregator
    url: str  # the aggregator's /mcp


@contextlib.asynccontextmanager
async def through_envoy(config: Config, catalogs: Mapping[str, Catalog], workdir: Path) -> AsyncIterator[EnvoyPath]:
    """The whole path in process: the control plane (probes off; the backends in `catalogs` set healthy by
    hand), a real Envoy, and the aggregator following the admin Watch stream and calling backends through
    Envoy's egress listener."""
    async with running_control_plane(config) as plane:
        for name, catalog in catalogs.items():
            plane.store.update_backend(name, lambda s, c=catalog: replace(s, state=BackendState.HEALTHY, catalog=c))
        envoy = await async_start_envoy(config, workdir / "envoy")
        source = AdminViewSource(config.control_plane.admin)
        aggregator = Aggregator(config, source, report_interval=0.05)  # default upstream: Envoy's egress listener
        try:
            async with aggregator.running():
                await aggregator.wait_for_view(plane.store.version)
                async with aggregator.serving(config.aggregator.address, config.aggregator.port) as url:
                    yield EnvoyPath(plane, aggregator, url)
        finally:
            envoy.stop()
            await source.aclose()
