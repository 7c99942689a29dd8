"""The one `text/event-stream` decoder, for the prober and the aggregator (pure: bytes in, events out).

It follows the WHATWG HTML "event stream interpretation" rules:

* lines end with CRLF, LF or CR (a CR at the end of a chunk waits for the next one: it may be half a CRLF);
  one U+FEFF byte order mark at the very start of the stream is dropped;
* an empty line dispatches the event; a line starting with `:` is a comment;
* `name: value` splits at the first colon and drops *one* leading space of the value; a line without a colon
  is a field with an empty value;
* `data` lines are joined with LF (an event whose data buffer is empty is not dispatched, but `data` with an
  empty value is an event with empty data); `event` sets the type (default `message`); `id` sets the last
  event id unless the value holds NUL, and the id persists across events until changed; `retry` with ASCII
  digits only sets `retry` (milliseconds); other fields are ignored;
* at the end of the stream (`end()`) an event without its closing empty line is discarded; a CR that ends the
  stream still ends its line.

One deliberate difference: bytes that are not UTF-8 raise `WireError(protocol_error)` instead of being
replaced by U+FFFD (every event this project reads carries JSON).

Bound: one event (its field lines, the line still being received included) may hold at most `max_event_bytes`;
past that `feed` raises `WireError(response_too_large)` at once, without waiting for the line to end.
Comment and blank lines count towards nothing, so a stream of keep-alive comments never trips the bound.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from xds_control.errors import WireError

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: str
    id: str | None = None


class SseDecoder:
    """Incremental decoder of one stream: `feed(chunk)` returns the events the chunk completed."""

    def __init__(self, max_event_bytes: int) -> None:
        self._max = max_event_bytes
        self._buffer = b""
        self._started = False
        self._event = ""
        self._data: list[str] = []
        self._size = 0
        self.last_event_id: str | None = None
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[SseEvent]:
        buffer = self._buffer + chunk if self._buffer else chunk
        if not self._started:
            if len(buffer) < len(_BOM) and _BOM.startswith(buffer):
                self._buffer = buffer
                return []
            self._started = True
            if buffer.startswith(_BOM):
                buffer = buffer[len(_BOM) :]
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
            raise WireError("response_too_large", "an SSE event over the size limit")
        return events

    def end(self) -> list[SseEvent]:
        """The stream ended: the events a final CR completes (the partial event, if any, is discarded)."""
        events = self.feed(b"\n") if self._buffer.endswith(b"\r") else []
        self._buffer, self._event, self._data, self._size = b"", "", [], 0
        return events

    def _line(self, raw: bytes) -> SseEvent | None:
        if not raw:
            return self._dispatch()
        if raw[0] == 0x3A:  # ":": a comment
            return None
        self._size += len(raw)
        if self._size > self._max:
            raise WireError("response_too_large", "an SSE event over the size limit")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise WireError("protocol_error", "an SSE line that is not UTF-8") from None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        event = SseEvent(self._event or "message", "\n".join(self._data), self.last_event_id) if self._data else None
        self._event, self._data, self._size = "", [], 0
        return event


async def events_of(chunks: AsyncIterable[bytes], decoder: SseDecoder) -> AsyncIterator[list[SseEvent]]:
    """The events each chunk of a stream completes, then those its end completes."""
    async for chunk in chunks:
        yield decoder.feed(chunk)
    yield decoder.end()


def _line_end(buffer: bytes, start: int) -> tuple[int, int] | None:
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
