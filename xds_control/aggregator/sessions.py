"""The legacy client sessions the aggregator knows, by `Mcp-Session-Id`.

Two things need them: `list_changed` goes to every legacy session (on its GET
stream), and a session's backend sessions close when it ends. The SDK does
not announce a session's end, so it is observed at the HTTP layer
(`http_app.SessionTracker`, and `legacy_calls.activity` for the calls the fast
path answers) and mirrored from the SDK's own rule:

* the client sends DELETE, or the SDK answers 404 for the id -> ended now;
* no request in flight (an open GET stream counts) for `idle_timeout`
  (the SDK's `session_idle_timeout`) -> ended at the next `sweep`;
* more than `max_sessions` known -> the least recently active one is dropped.

Mutated only from the event loop; no method awaits.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from mcp.server.session import ServerSession

from xds_control.aggregator import metrics

DEFAULT_IDLE_TIMEOUT = 30 * 60.0
DEFAULT_MAX_SESSIONS = 10_000


@dataclass
class _Known:
    session: ServerSession | None = None
    in_flight: int = 0
    last_active: float = field(default=0.0)


class ClientSessions:
    def __init__(
        self,
        on_closed: Callable[[str], None],
        *,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_closed = on_closed
        self.idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        self._clock = clock
        self._known: OrderedDict[str, _Known] = OrderedDict()
        self._gauge = metrics.SESSIONS.labels(family="legacy")

    def _entry(self, session_id: str) -> _Known:
        entry = self._known.get(session_id)
        if entry is None:
            entry = self._known[session_id] = _Known(last_active=self._clock())
            while len(self._known) > self.max_sessions:
                self.closed(next(iter(self._known)))
            self._gauge.set(len(self._known))
        self._known.move_to_end(session_id)
        return entry

    def seen(self, session_id: str, session: ServerSession) -> None:
        """A request of this session reached the MCP server (keeps the session object for notifications)."""
        self._entry(session_id).session = session

    def session(self, session_id: str) -> ServerSession | None:
        """The SDK's session object for `session_id`, if a request of it reached the MCP server (not activity)."""
        entry = self._known.get(session_id)
        return entry.session if entry is not None else None

    def request_started(self, session_id: str) -> None:
        entry = self._entry(session_id)
        entry.in_flight += 1

    def request_ended(self, session_id: str) -> None:
        entry = self._known.get(session_id)
        if entry is not None:
            entry.in_flight = max(0, entry.in_flight - 1)
            entry.last_active = self._clock()

    def closed(self, session_id: str) -> None:
        if self._known.pop(session_id, None) is not None:
            self._gauge.set(len(self._known))
            self._on_closed(session_id)

    def sweep(self) -> list[str]:
        """End the sessions idle past `idle_timeout`; returns their ids."""
        cutoff = self._clock() - self.idle_timeout
        idle = [sid for sid, e in self._known.items() if e.in_flight == 0 and e.last_active < cutoff]
        for sid in idle:
            self.closed(sid)
        return idle

    def in_flight(self) -> dict[str, int]:
        """Requests in flight per session (an open GET notification stream counts as one)."""
        return {sid: e.in_flight for sid, e in self._known.items()}

    def notifiable(self) -> list[ServerSession]:
        return [e.session for e in self._known.values() if e.session is not None]

    def __len__(self) -> int:
        return len(self._known)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._known
