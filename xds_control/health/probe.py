"""Probing one backend endpoint at the MCP level, by raw JSON-RPC over HTTP (the I/O shell).

Wire format (both families; see docs/dev/health.md):

* modern (2026-07-28): `POST server/discover` with `MCP-Protocol-Version:
  2026-07-28`, `Mcp-Method: server/discover` and the `_meta` envelope
  (protocol version, client info, client capabilities). No session, no
  `ping`: every probe is a discover. Success: a result whose
  `supportedVersions` holds 2026-07-28.
* legacy (2024-11-05 … 2025-11-25): `initialize` + `notifications/initialized`
  once, then `ping` on the `Mcp-Session-Id` session (no id: a stateless
  server). A 404 to a request carrying the session id, or a "session not
  found" JSON-RPC error, means the session is lost (backend restarted or
  replaced): re-initialize and ping again within the same probe.
* `protocol: auto` tries discover first and falls back to legacy when the
  answer is not modern evidence (a 4xx other than 401/403/429, a JSON-RPC
  error, a result without a modern version, an unparseable answer: the SDK's
  own denylist rule). What worked is remembered; a later answer of that
  kind makes the next probe detect again.

One `HttpClient` (xds_control/http11.py) per endpoint (no shared pool), thrown away after a
connection-level failure so a replaced backend process is never reached over
a stale keep-alive connection. The auth header is read fresh on every probe
(`AuthConfig.header_value()`: a token_file is re-read). Each probe's liveness
part runs under `asyncio.timeout(health.timeout)` and the optional catalog
fetch under a second one; responses are read within `health.max_response_bytes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from xds_control.config import BackendConfig, EndpointUrl, HealthConfig
from xds_control.errors import ProbeError, WireError
from xds_control.health.catalog import fetch_catalog
from xds_control.health.classify import (
    CONNECTION_CATEGORIES,
    Category,
    classify_exception,
    classify_jsonrpc_error,
    classify_status,
)
from xds_control.health.versions import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION, LATEST_MODERN_VERSION
from xds_control.health.wire import JSON_TYPE, content_type, parse_json, read_response, result_of
from xds_control.http11 import HttpClient, Response, tls_context
from xds_control.telemetry.trace_context import exporting, redact_url
from xds_control.view import Catalog

Protocol = Literal["legacy", "modern"]

CLIENT_INFO = {"name": "xds-control-prober", "version": "0.1.0"}
PROTOCOL_VERSION_META_KEY = "io.modelcontextprotocol/protocolVersion"
CLIENT_INFO_META_KEY = "io.modelcontextprotocol/clientInfo"
CLIENT_CAPABILITIES_META_KEY = "io.modelcontextprotocol/clientCapabilities"
SESSION_HEADER = "mcp-session-id"
VERSION_HEADER = "mcp-protocol-version"
METHOD_HEADER = "mcp-method"
ERROR_PEEK_BYTES = 64 * 1024  # how much of an error response is read to look for a JSON-RPC error
PROBE_SPAN = "xds_control.health.probe"

tracer = trace.get_tracer("xds_control.health")

# Answers to server/discover that are not evidence of a modern server: fall back to legacy.
FALLBACK_CATEGORIES = frozenset(
    {Category.HTTP_4XX, Category.JSONRPC_ERROR, Category.PROTOCOL_ERROR, Category.SESSION_EXPIRED}
)


@dataclass(frozen=True)
class ProbeResult:
    """One probe's verdict. `latency` is the liveness round trip (discover or ping) in seconds."""

    ok: bool
    latency: float
    category: str | None = None
    retry_after: float | None = None
    catalog: Catalog | None = None
    protocol: Protocol | None = None


class EndpointProber:
    """Probes one endpoint of one backend. Not safe for concurrent probes: the caller serializes them."""

    def __init__(
        self,
        backend: BackendConfig,
        endpoint: EndpointUrl,
        health: HealthConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.endpoint = endpoint
        self.health = health
        self._clock = clock
        self._wall_clock = wall_clock
        self._ids = itertools.count(1)
        self._client: HttpClient | None = None
        self._auth: tuple[str, str] | None = None
        self.protocol: Protocol | None = None if backend.protocol == "auto" else backend.protocol
        self.protocol_version = ""
        self.capabilities: Mapping[str, Any] = {}
        self.session_id: str | None = None
        self._initialized = False
        self.generation = 0  # bumped whenever the client or the session is replaced

    @property
    def url(self) -> str:
        return self.endpoint.url

    # -- the client ------------------------------------------------------------------------

    @property
    def client(self) -> HttpClient:
        if self._client is None:
            self._client = HttpClient(tls_context())  # straight to the backend: never a proxy
        return self._client

    async def reset(self) -> None:
        """Drop the client (and with it every pooled connection) and the legacy session."""
        client, self._client = self._client, None
        self._forget_session()
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def aclose(self) -> None:
        """Close politely: end the legacy session (best effort, bounded), then the client."""
        try:
            if self._client is not None and self.session_id is not None:
                self._auth = self.backend.auth.header_value() if self.backend.auth is not None else None
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(min(1.0, self.health.timeout)):
                        async with self.client.stream(
                            "DELETE", self.url, headers=self.headers(session=True)
                        ) as response:
                            await response.read(ERROR_PEEK_BYTES)
        finally:
            self._auth = None
            await self.reset()

    def _forget_session(self) -> None:
        self.session_id = None
        self._initialized = False
        self.generation += 1

    # -- requests --------------------------------------------------------------------------

    def headers(self, method: str | None = None, *, session: bool = False) -> dict[str, str]:
        headers = {"accept": "application/json, text/event-stream", "accept-encoding": "identity"}
        if self._auth is not None:
            headers[self._auth[0]] = self._auth[1]
        if self.protocol == "modern":
            headers[VERSION_HEADER] = LATEST_MODERN_VERSION
            if method is not None:
                headers[METHOD_HEADER] = method
        elif session and self._initialized:
            if self.protocol_version:
                headers[VERSION_HEADER] = self.protocol_version
            if self.session_id is not None:
                headers[SESSION_HEADER] = self.session_id
        return headers

    def params(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Request params, with the per-request `_meta` envelope on modern connections."""
        params = dict(params or {})
        if self.protocol == "modern":
            params["_meta"] = {
                **params.get("_meta", {}),
                PROTOCOL_VERSION_META_KEY: LATEST_MODERN_VERSION,
                CLIENT_INFO_META_KEY: CLIENT_INFO,
                CLIENT_CAPABILITIES_META_KEY: {},
            }
        return params

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One JSON-RPC request; its `result`, or ProbeError with the classified failure."""
        request_id = next(self._ids)
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": self.params(params)}
        session = self.protocol == "legacy" and method != "initialize"
        headers = self.headers(method, session=session)
        headers["content-type"] = JSON_TYPE
        async with self.client.stream("POST", self.url, content=encode_message(body), headers=headers) as response:
            if response.status_code >= 300 or response.status_code < 200:
                raise await self._http_error(response, sent_session=SESSION_HEADER in headers)
            if method == "initialize":
                self.session_id = response.headers.get(SESSION_HEADER) or None
            return result_of(await read_response(response, request_id, self.health.max_response_bytes))

    async def notify(self, method: str) -> None:
        body = {"jsonrpc": "2.0", "method": method}
        headers = {**self.headers(method, session=True), "content-type": JSON_TYPE}
        async with self.client.stream("POST", self.url, content=encode_message(body), headers=headers) as response:
            if not 200 <= response.status_code < 300:
                raise await self._http_error(response, sent_session=SESSION_HEADER in headers)
            await response.read(self.health.max_response_bytes)

    async def _http_error(self, response: Response, *, sent_session: bool) -> ProbeError:
        """Classify a non-2xx answer. A 4xx carrying a JSON-RPC error (modern servers map error codes to
        400/404) is classified by that error; a 404 to a request that carried a session id is a lost session."""
        error = classify_status(response.status_code, response.headers, now=self._wall_clock())
        assert error is not None
        if error.category == Category.HTTP_4XX and content_type(response) == JSON_TYPE:
            with contextlib.suppress(ProbeError, WireError):
                decoded = parse_json(await response.read(ERROR_PEEK_BYTES))
                rpc_error = decoded.get("error") if isinstance(decoded, dict) else None
                if isinstance(rpc_error, dict) and isinstance(rpc_error.get("code"), int):
                    found = classify_jsonrpc_error(rpc_error)
                    if found.category == Category.SESSION_EXPIRED or not (sent_session and response.status_code == 404):
                        return ProbeError(found.category, f"HTTP {response.status_code}", status=response.status_code)
        if sent_session and response.status_code == 404:
            return ProbeError(Category.SESSION_EXPIRED, "HTTP 404", status=404)
        return error

    # -- probing ---------------------------------------------------------------------------

    async def probe(self, *, fetch_catalog: bool = False) -> ProbeResult:
        """Check liveness (and fetch the catalog if asked). Never raises but for cancellation.

        One span per probe (`xds_control.health.probe`) while spans are recorded (`exporting()`): backend,
        endpoint URL without credentials, outcome (`ok` or the failure category), latency, protocol family."""
        if not exporting():
            return await self._probe(fetch_catalog)
        attributes: dict[str, AttributeValue] = {
            "backend": self.backend.name,
            "endpoint": redact_url(self.url),
            "catalog.fetch": fetch_catalog,
        }
        with tracer.start_as_current_span(PROBE_SPAN, kind=trace.SpanKind.CLIENT, attributes=attributes) as span:
            result = await self._probe(fetch_catalog)
            outcome: dict[str, AttributeValue] = {
                "outcome": result.category or "ok",
                "latency_ms": round(result.latency * 1000, 3),
                "protocol": result.protocol or "unknown",
            }
            if result.catalog is not None:
                outcome["catalog.tools"] = len(result.catalog.tools)
            span.set_attributes(outcome)
            if not result.ok:
                span.set_status(trace.StatusCode.ERROR, result.category)
            return result

    async def _probe(self, fetch_catalog: bool) -> ProbeResult:
        started = self._clock()
        self._auth = self.backend.auth.header_value() if self.backend.auth is not None else None
        try:
            async with asyncio.timeout(self.health.timeout):
                latency = await self._check()
            catalog = None
            if fetch_catalog:
                async with asyncio.timeout(self.health.timeout):
                    catalog = await self.fetch_catalog()
        except Exception as exc:
            error = classify_exception(exc)
            if error.category in CONNECTION_CATEGORIES:
                await self.reset()
            elif error.category in FALLBACK_CATEGORIES:
                self._forget_session()  # an answer we did not expect: a fresh handshake next time
                if self.backend.protocol == "auto":
                    self.protocol = None  # the backend may have been replaced by the other family: detect again
            return ProbeResult(False, self._clock() - started, error.category, error.retry_after, None, self.protocol)
        finally:
            self._auth = None
        return ProbeResult(True, latency, None, None, catalog, self.protocol)

    async def _check(self) -> float:
        if self.protocol != "legacy":  # modern, or auto not detected yet: discover first
            try:
                return await self._discover()
            except ProbeError as exc:
                if self.backend.protocol != "auto" or exc.category not in FALLBACK_CATEGORIES:
                    raise
        return await self._ping()

    async def _discover(self) -> float:
        previous, self.protocol = self.protocol, "modern"
        try:
            started = self._clock()
            result = await self.request("server/discover")
            latency = self._clock() - started
            versions = result.get("supportedVersions")
            capabilities = result.get("capabilities")
            if (
                not isinstance(versions, list)
                or LATEST_MODERN_VERSION not in versions
                or not isinstance(capabilities, dict)
            ):
                raise ProbeError(Category.PROTOCOL_ERROR, "server/discover names no supported modern version")
        except ProbeError:
            if self.backend.protocol == "auto":
                self.protocol = previous
            raise
        self.protocol_version = LATEST_MODERN_VERSION
        self.capabilities = capabilities
        return latency

    async def _initialize(self) -> None:
        self._forget_session()
        self.protocol = "legacy"
        result = await self.request(
            "initialize", {"protocolVersion": LATEST_HANDSHAKE_VERSION, "capabilities": {}, "clientInfo": CLIENT_INFO}
        )
        version = result.get("protocolVersion")
        capabilities = result.get("capabilities")
        if version not in HANDSHAKE_PROTOCOL_VERSIONS or not isinstance(capabilities, dict):
            raise ProbeError(Category.PROTOCOL_ERROR, "initialize result has no known protocol version")
        self.protocol_version = str(version)
        self.capabilities = capabilities
        self._initialized = True
        await self.notify("notifications/initialized")

    async def _ping(self) -> float:
        if not self._initialized:
            await self._initialize()
        started = self._clock()
        try:
            await self.request("ping")
        except ProbeError as exc:
            if exc.category != Category.SESSION_EXPIRED:
                raise
            await self._initialize()  # the session is gone (backend restarted): a new one, then ping again
            started = self._clock()
            await self.request("ping")
        return self._clock() - started

    async def fetch_catalog(self) -> Catalog:
        return await fetch_catalog(
            self.request, self.capabilities, self.protocol_version, self.health, backend=self.backend.name
        )


def encode_message(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
