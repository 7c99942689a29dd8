"""One request to a 2026-07-28 backend: a plain JSON-RPC POST over its `BackendHttp` (no SDK session).

The modern protocol has no session, so a request is one POST carrying the
per-request envelope in `params._meta` and the routing headers
(`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`, and for a tools/call the
`Mcp-Param-*` headers its tool's `x-mcp-header` annotations ask for, built by
the gateway). The answer is either
`application/json` (the JSON-RPC response) or `text/event-stream`, whose
`notifications/progress` go to the caller's progress callback before the
response arrives. Cancelling the caller closes the response stream: the modern
cancellation signal.

A failure `BackendHttp.post` names (an `EdgeFailure`) is raised as the marked
JSON-RPC error (`upstream_answers.edge_error`) for `upstream.map_error`, as the
legacy family's SDK client raises it; an answer that is not a JSON-RPC response
raises `WireError`. Event streams are read by the one SSE decoder
(xds_control/sse.py), each event within `max_event_bytes`; any other body
within `max_response_bytes`. A result is checked against, and shaped by, the MCP
schema of the backend's version (a mismatch raises `ValidationError`, mapped
to protocol_error) and returned as `Sieved`.

Tracing: when spans are exported (`tracing.exporting()`), a client span
`MCP send <method> <name>` is the backend request's parent and is injected
into `_meta` (the SDK client's convention); otherwise the caller's own
`traceparent`, if it forwarded one, passes through unchanged. Either way the
`traceparent` header equals `_meta.traceparent`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import NAME_BEARING_METHODS, encode_header_value
from mcp_types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, PROTOCOL_VERSION_META_KEY
from mcp_types import methods as mcp_methods
from opentelemetry import trace
from opentelemetry.propagate import inject

from xds_control.aggregator.backend_http import BackendHttp, Streamed
from xds_control.aggregator.tracing import exporting, tracer
from xds_control.aggregator.upstream_answers import EdgeFailure, edge_error
from xds_control.errors import WireError
from xds_control.http11 import Response
from xds_control.sse import SseDecoder, events_of
from xds_control.telemetry.trace_context import CARRIER_KEYS

ProgressFn = Callable[[float, float | None, str | None], Awaitable[None]]
CLIENT_INFO = {"name": "xds-control-aggregator", "version": "0.1.0"}
_ACCEPT = "application/json, text/event-stream"
_ids = itertools.count(1)


def not_mcp() -> WireError:
    """The answer is not a JSON-RPC response (not JSON, no result or error, a stream without the response)."""
    return WireError("protocol_error", "the response is not JSON-RPC")


def envelope(version: str) -> dict[str, Any]:
    return {PROTOCOL_VERSION_META_KEY: version, CLIENT_INFO_META_KEY: CLIENT_INFO, CLIENT_CAPABILITIES_META_KEY: {}}


async def request(
    http: BackendHttp,
    url: str,
    version: str,
    method: str,
    params: Mapping[str, Any],
    *,
    progress: ProgressFn | None = None,
    max_event_bytes: int,
    param_headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """POST one request; the raw result dict (raises `MCPError` for a JSON-RPC error). `param_headers`: a
    tools/call's `Mcp-Param-*` headers."""
    request_id = next(_ids)
    meta = {**(params.get("_meta") or {}), **envelope(version)}
    if progress is not None:
        meta["progressToken"] = request_id
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {**params, "_meta": meta}}
    headers = {
        **(param_headers or {}),
        "content-type": "application/json",
        "accept": _ACCEPT,
        "mcp-protocol-version": version,
        "mcp-method": method,
    }
    name_key = NAME_BEARING_METHODS.get(method)
    name = params.get(name_key) if name_key is not None else None
    if isinstance(name, str):
        headers["mcp-name"] = encode_header_value(name)
    if not exporting():
        return await _exchange(http, url, version, method, request_id, body, headers, progress, max_event_bytes)
    span_name = f"MCP send {method}{f' {name}' if isinstance(name, str) else ''}"
    attributes = {"mcp.method.name": method, "jsonrpc.request.id": str(request_id)}
    with tracer.start_as_current_span(
        span_name, kind=trace.SpanKind.CLIENT, attributes=attributes, record_exception=False
    ) as span:
        for key in CARRIER_KEYS:
            meta.pop(key, None)
        inject(meta)
        try:
            return await _exchange(http, url, version, method, request_id, body, headers, progress, max_event_bytes)
        except MCPError as exc:
            span.set_status(trace.StatusCode.ERROR, str(exc.code))
            raise


async def _exchange(
    http: BackendHttp,
    url: str,
    version: str,
    method: str,
    request_id: int,
    body: dict[str, Any],
    headers: dict[str, str],
    progress: ProgressFn | None,
    max_event_bytes: int,
) -> dict[str, Any]:
    meta = body["params"]["_meta"]
    headers.update({key: meta[key] for key in CARRIER_KEYS if isinstance(meta.get(key), str)})
    content = json.dumps(body, separators=(",", ":")).encode()
    answer = await http.post(url, headers, content)
    if isinstance(answer, EdgeFailure):
        error = edge_error(http.backend, answer)["error"]
        raise MCPError(error["code"], error["message"], error["data"])
    if not isinstance(answer, Streamed):  # a JSON answer, decoded
        return _result(answer.message, method, version)
    response = answer.response
    try:
        if response.headers.get("content-type", "").lower().startswith("text/event-stream"):
            message = await _from_sse(response, request_id, progress, max_event_bytes)
        else:
            message = _json(await response.read(http.max_response_bytes))
    finally:
        await response.aclose()
    return _result(message, method, version)


def _json(data: bytes | str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        raise not_mcp() from None


def _result(message: Any, method: str, version: str) -> dict[str, Any]:
    error = message.get("error") if isinstance(message, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), int):
        raise MCPError(error["code"], str(error.get("message", "")), error.get("data"))
    result = message.get("result") if isinstance(message, dict) else None
    if not isinstance(result, dict):
        raise not_mcp()
    try:
        sieved = mcp_methods.serialize_server_result(
            method, version, result
        )  # a mismatch raises pydantic's ValidationError
    except KeyError:  # no schema for this method and version: passed on as it is
        return result
    return Sieved(version, sieved)


class Sieved(dict[str, Any]):
    """A result already validated against, and shaped by, `version`'s schema: a modern client of the same
    version gets it without a second pass (fastpath)."""

    __slots__ = ("version",)

    def __init__(self, version: str, result: dict[str, Any]) -> None:
        super().__init__(result)
        self.version = version


async def _from_sse(response: Response, request_id: int, progress: ProgressFn | None, limit: int) -> Any:
    """The JSON-RPC response for `request_id` from an event stream; progress notifications go to `progress`."""
    decoder = SseDecoder(limit)
    async for events in events_of(response.chunks(None), decoder):
        for event in events:
            if event.event != "message":
                continue
            message = _json(event.data)
            if not isinstance(message, dict):
                continue
            if message.get("id") == request_id and ("result" in message or "error" in message):
                return message
            if progress is not None and message.get("method") == "notifications/progress":
                params = message.get("params") or {}
                if params.get("progressToken") == request_id and isinstance(params.get("progress"), int | float):
                    await progress(params["progress"], params.get("total"), params.get("message"))
    raise not_mcp()
