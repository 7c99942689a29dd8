"""The legacy client sessions, by the `Mcp-Session-Id` the SDK issued: the one place they are kept.

The endpoint (endpoint.py) sees every HTTP request for `/mcp` and tells the
table what happened; the table decides, the endpoint acts (ends a session in
the SDK, closes its backend sessions through `on_closed`). Pure: no I/O, the
clock is passed in; mutated only from the event loop.

Invariants:

* Only sessions the server issued are known: an id enters when the answer to
  a request without one carries it with a 2xx status (`opened`). A request
  with an id the table does not know changes nothing in it.
* A session is *opening* from then until it sends anything but `initialize`
  or `ping` (`notifications/initialized`, a request, a GET stream). An opening
  session with nothing in flight for `init_timeout` expires at the next
  `sweep`; any other session with nothing in flight (an open GET stream
  counts) for `idle_timeout`.
* Admission (`admit`, before a request that may open a session goes on): with
  `max_opening` sessions opening (known, or being opened now), the oldest
  opening one is evicted; with `max_sessions` sessions, the oldest opening one,
  else the one idle longest, else the one whose requests started longest ago.
  A newcomer is refused only when every place is held by a session being
  opened at this very moment.
* Each of `admit`, `started`, `ended`, `closed`, `sweep` is O(1) per session
  it touches: the opening, idle and busy sessions are kept in their own order.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from xds_control.aggregator import metrics

DEFAULT_IDLE_TIMEOUT = 30 * 60.0
DEFAULT_INIT_TIMEOUT = 10.0
DEFAULT_MAX_SESSIONS = 2_000
DEFAULT_MAX_OPENING = 1_000


@dataclass(eq=False, slots=True)
class Session:
    """One issued session. `sdk` is the SDK's session object once a request of it reached the MCP server
    (notifications, the negotiated version); `calls` the calls answered by the endpoint now in flight, by id."""

    id: str
    last_active: float
    opening: bool = True
    in_flight: int = 0
    sdk: Any = None
    answers_back: bool = False  # its client answers server-to-client requests: its calls stay on the SDK's stream
    owner: bytes = b""  # the principal that opened it (access.Principal.owner): nobody else may use it
    calls: dict[Hashable, Any] = field(default_factory=dict)


class SessionTable:
    def __init__(
        self,
        on_closed: Callable[[str], None],
        *,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        init_timeout: float = DEFAULT_INIT_TIMEOUT,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        max_opening: int = DEFAULT_MAX_OPENING,
    ) -> None:
        self._on_closed = on_closed
        self.idle_timeout = idle_timeout
        self.init_timeout = init_timeout
        self.max_sessions = max_sessions
        self.max_opening = min(max_opening, max_sessions)
        self._sessions: dict[str, Session] = {}
        # Each known session is in exactly one of these, oldest first: opening with nothing in flight (by when it
        # was issued or last active), idle (by when it went idle), busy (by when its first request in flight started).
        self._opening: OrderedDict[str, None] = OrderedDict()
        self._idle: OrderedDict[str, None] = OrderedDict()
        self._busy: OrderedDict[str, None] = OrderedDict()
        self._n_opening = 0
        self._admitting = 0  # requests that may open a session, handed to the SDK and not answered yet
        # Since the table began (collector.py reads them): sessions opened and closed, GET streams started.
        self.opened_total = 0
        self.closed_total = 0
        self.streams_total = 0
        self._gauge = metrics.SESSIONS.labels(family="legacy")

    # -- admission ------------------------------------------------------------------------------

    def admit(self) -> tuple[bool, list[str]]:
        """Before a request that may open a session goes on: whether it may, and the sessions evicted (already
        closed here; the caller ends them in the SDK). Every `admit` that returns True is followed by `opened`."""
        evicted: list[str] = []
        if (
            self._n_opening + self._admitting >= self.max_opening and (victim := self._oldest_opening()) is not None
        ) or (len(self._sessions) + self._admitting >= self.max_sessions and (victim := self._victim()) is not None):
            evicted.append(victim)
        for session_id in evicted:
            self.closed(session_id)
        if len(self._sessions) + self._admitting >= self.max_sessions:
            return False, evicted
        self._admitting += 1
        return True, evicted

    def opened(self, session_id: str | None, now: float, *, admitted: bool = True, owner: bytes = b"") -> None:
        """The answer to a request without a session id: `session_id` if it carried a new session's id with a 2xx
        status, opened by `owner`. `admitted`: the request was admitted (`admit` returned True)."""
        if admitted:
            self._admitting = max(0, self._admitting - 1)
        if session_id is None or session_id in self._sessions:
            return
        self._sessions[session_id] = Session(session_id, now, owner=owner)
        self._opening[session_id] = None
        self._n_opening += 1
        self.opened_total += 1
        self._gauge.set(len(self._sessions))

    def _oldest_opening(self) -> str | None:
        opening = next(iter(self._opening), None)
        if opening is not None:
            return opening
        if self._n_opening == 0:
            return None
        # Opening sessions with a request in flight sit in `_busy` (an `initialize` or `ping` being answered).
        return next((sid for sid in self._busy if self._sessions[sid].opening), None)

    def _victim(self) -> str | None:
        return self._oldest_opening() or next(iter(self._idle), None) or next(iter(self._busy), None)

    # -- requests -------------------------------------------------------------------------------

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def started(self, session_id: str, now: float, *, settles: bool, stream: bool = False) -> Session | None:
        """A request of `session_id` starts (None: not a session this server issued; nothing changes).
        `settles`: it carries a message that ends the opening phase; `stream`: it is a GET stream."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        self.streams_total += stream
        if settles and session.opening:
            session.opening = False
            self._n_opening -= 1
        session.in_flight += 1
        session.last_active = now
        if session.in_flight == 1:
            self._opening.pop(session_id, None)
            self._idle.pop(session_id, None)
            self._busy[session_id] = None
        return session

    def ended(self, session_id: str, now: float) -> None:
        session = self._sessions.get(session_id)
        if session is None or session.in_flight == 0:
            return
        session.in_flight -= 1
        session.last_active = now
        if session.in_flight == 0:
            self._busy.pop(session_id, None)
            (self._opening if session.opening else self._idle)[session_id] = None

    def attach(self, session_id: str, sdk: Any) -> None:
        """The SDK's session object of a known session (a request of it reached the MCP server)."""
        session = self._sessions.get(session_id)
        if session is not None and sdk is not None:
            session.sdk = sdk

    # -- ends -----------------------------------------------------------------------------------

    def closed(self, session_id: str) -> bool:
        """The session ended (DELETE, gone from the SDK, evicted, expired); False if it was not known."""
        session = self._sessions.pop(session_id, None)
        if session is None:
            return False
        for order in (self._opening, self._idle, self._busy):
            order.pop(session_id, None)
        self._n_opening -= session.opening
        self.closed_total += 1
        self._gauge.set(len(self._sessions))
        self._on_closed(session_id)
        return True

    def sweep(self, now: float) -> list[str]:
        """Close the sessions past their timeout (see the module docstring); their ids, for the SDK's side."""
        expired: list[str] = []
        for order, timeout in ((self._opening, self.init_timeout), (self._idle, self.idle_timeout)):
            for session_id in order:
                if self._sessions[session_id].last_active > now - timeout:
                    break
                expired.append(session_id)
        for session_id in expired:
            self.closed(session_id)
        return expired

    # -- views ----------------------------------------------------------------------------------

    def notifiable(self) -> list[Any]:
        """The SDK session objects to send `list_changed` on."""
        return [s.sdk for s in self._sessions.values() if s.sdk is not None]

    def in_flight(self) -> dict[str, int]:
        """Requests in flight per session (an open GET stream counts as one)."""
        return {sid: s.in_flight for sid, s in self._sessions.items()}

    def opening(self) -> int:
        return self._n_opening

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions
