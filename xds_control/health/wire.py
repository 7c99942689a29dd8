"""JSON-RPC over Streamable HTTP for the prober, read exactly and within bounds.

The prober speaks raw JSON-RPC so it sees status codes, content types and
bodies as the backend sent them. A response is either `application/json`
(one JSON-RPC message, or a batch) or `text/event-stream` (SSE events whose
`data` are JSON-RPC messages; the response to our request is one of them,
other events are notifications the server interleaves). Every read is
bounded by `Response.chunks` (xds_control/http11.py: a declared
`Content-Length` over the limit fails at once, the body is counted as it
arrives and abandoned past the limit), events by the one SSE decoder
(xds_control/sse.py); their `WireError`s classify as the category they carry.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

from xds_control.errors import ProbeError
from xds_control.health.classify import Category, classify_jsonrpc_error
from xds_control.http11 import Response
from xds_control.sse import SseDecoder, SseEvent, events_of

JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream"


def content_type(response: Response) -> str:
    return response.headers.get("content-type", "").split(";")[0].strip().lower()


def parse_json(body: bytes | str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ProbeError(Category.PROTOCOL_ERROR, "body is not JSON") from None


def _messages(decoded: Any) -> Iterable[Any]:
    return decoded if isinstance(decoded, list) else [decoded]


def response_for(message: Any, request_id: int | str) -> dict[str, Any] | None:
    """`message` if it is the JSON-RPC response to `request_id` (validated), else None."""
    if not isinstance(message, dict) or "method" in message or message.get("id") != request_id:
        return None
    if message.get("jsonrpc") != "2.0" or ("result" in message) == ("error" in message):
        raise ProbeError(Category.PROTOCOL_ERROR, "malformed JSON-RPC response")
    return message


def result_of(message: dict[str, Any]) -> dict[str, Any]:
    """The `result` object of a response, or the classified error it carries."""
    if "error" in message:
        raise classify_jsonrpc_error(message["error"])
    result = message["result"]
    if not isinstance(result, dict):
        raise ProbeError(Category.PROTOCOL_ERROR, "JSON-RPC result is not an object")
    return result


async def read_response(response: Response, request_id: int | str, limit: int) -> dict[str, Any]:
    """The JSON-RPC response to `request_id` from a 2xx HTTP response, JSON or SSE, read within `limit` bytes."""
    kind = content_type(response)
    if kind == JSON_TYPE:
        for message in _messages(parse_json(await response.read(limit))):
            found = response_for(message, request_id)
            if found is not None:
                return found
        raise ProbeError(Category.PROTOCOL_ERROR, "no JSON-RPC response with the request's id")
    if kind == SSE_TYPE:
        decoder = SseDecoder(limit)
        async for events in events_of(response.chunks(limit), decoder):
            for message in _event_messages(events):
                found = response_for(message, request_id)
                if found is not None:
                    return found
        raise ProbeError(Category.PROTOCOL_ERROR, "event stream ended without the response")
    raise ProbeError(Category.NOT_MCP, "a 2xx answer that is neither JSON nor an event stream")


async def sse_messages(response: Response, max_event_bytes: int) -> AsyncIterator[dict[str, Any]]:
    """JSON-RPC messages from a long-lived event stream (each event bounded, the stream not)."""
    if content_type(response) != SSE_TYPE:
        raise ProbeError(Category.PROTOCOL_ERROR, "not an event stream")
    decoder = SseDecoder(max_event_bytes)
    async for events in events_of(response.aiter_bytes(), decoder):
        for message in _event_messages(events):
            if isinstance(message, dict):
                yield message


def _event_messages(events: list[SseEvent]) -> Iterable[Any]:
    """The JSON-RPC messages of `message` events (other event types and empty data are skipped)."""
    for event in events:
        if event.event == "message" and event.data.strip():
            yield from _messages(parse_json(event.data))
