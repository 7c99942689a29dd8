"""JSON-RPC over Streamable HTTP, read exactly and within bounds.

The prober speaks raw JSON-RPC so it sees status codes, content types and
bodies as the backend sent them. A response is either `application/json`
(one JSON-RPC message, or a batch) or `text/event-stream` (SSE events whose
`data` are JSON-RPC messages; the response to our request is one of them,
other events are notifications the server interleaves). Every read is
bounded: a declared `Content-Length` over the limit fails at once, and the
streamed body is counted as it arrives and abandoned past the limit, so a
50 MB answer never sits in memory.

`SseDecoder` is a pure incremental decoder (bytes in, events out) with a
per-event size bound.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from xds_control.errors import ProbeError
from xds_control.health.classify import Category, classify_jsonrpc_error
from xds_control.http11 import Response

JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream"


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: str
    id: str | None = None


class SseDecoder:
    """Incremental `text/event-stream` decoder (WHATWG rules: fields, comments, blank-line dispatch)."""

    def __init__(self, max_event_bytes: int) -> None:
        self._max = max_event_bytes
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._size = 0

    def feed(self, chunk: bytes) -> list[SseEvent]:
        buffer = self._buffer + chunk
        events: list[SseEvent] = []
        position = 0
        while (cut := _line_end(buffer, position)) is not None:
            end, after = cut
            event = self._line(buffer[position:end])
            position = after
            if event is not None:
                events.append(event)
        self._buffer = buffer[position:]
        if len(self._buffer) + self._size > self._max:
            raise ProbeError(Category.RESPONSE_TOO_LARGE, "SSE event over the size limit")
        return events

    def _line(self, raw: bytes) -> SseEvent | None:
        if not raw:
            return self._dispatch()
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProbeError(Category.PROTOCOL_ERROR, "SSE line is not UTF-8") from None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        self._size += len(raw)
        if self._size > self._max:
            raise ProbeError(Category.RESPONSE_TOO_LARGE, "SSE event over the size limit")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None

    def _dispatch(self) -> SseEvent | None:
        event = SseEvent(self._event or "message", "\n".join(self._data), self._id) if self._data else None
        self._event, self._data, self._size = "", [], 0
        return event


def _line_end(buffer: bytes, start: int = 0) -> tuple[int, int] | None:
    """(end of line, start of the next) for the first CR, LF or CRLF at or after `start`; None if none is complete."""
    lf = buffer.find(b"\n", start)
    cr = buffer.find(b"\r", start, lf if lf >= 0 else len(buffer))
    if cr >= 0:
        if cr + 1 == len(buffer):
            return None  # a CR at the end may be half of a CRLF
        return cr, cr + 2 if buffer[cr + 1] == 0x0A else cr + 1
    if lf >= 0:
        return lf, lf + 1
    return None


def content_type(response: Response) -> str:
    return response.headers.get("content-type", "").split(";")[0].strip().lower()


def declared_too_large(response: Response, limit: int) -> bool:
    length = response.headers.get("content-length", "")
    return length.isdigit() and int(length) > limit


async def bounded_chunks(response: Response, limit: int) -> AsyncIterator[bytes]:
    """The body's chunks; `response_too_large` as soon as more than `limit` bytes arrived."""
    if declared_too_large(response, limit):
        raise ProbeError(Category.RESPONSE_TOO_LARGE, "declared Content-Length over the limit")
    total = 0
    async for chunk in response.aiter_bytes():
        total += len(chunk)
        if total > limit:
            raise ProbeError(Category.RESPONSE_TOO_LARGE, "body over the limit")
        yield chunk


async def read_bounded(response: Response, limit: int) -> bytes:
    parts = [chunk async for chunk in bounded_chunks(response, limit)]
    return b"".join(parts)


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
        for message in _messages(parse_json(await read_bounded(response, limit))):
            found = response_for(message, request_id)
            if found is not None:
                return found
        raise ProbeError(Category.PROTOCOL_ERROR, "no JSON-RPC response with the request's id")
    if kind == SSE_TYPE:
        decoder = SseDecoder(limit)
        async for chunk in bounded_chunks(response, limit):
            for event in decoder.feed(chunk):
                if event.event != "message" or not event.data.strip():
                    continue
                for message in _messages(parse_json(event.data)):
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
    async for chunk in response.aiter_bytes():
        for event in decoder.feed(chunk):
            if event.event != "message" or not event.data.strip():
                continue
            for message in _messages(parse_json(event.data)):
                if isinstance(message, dict):
                    yield message
