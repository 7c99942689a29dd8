"""What a backend may ask of the client it serves, and where its messages go. Pure: no I/O, clock passed in.

A backend serving a client's call may send server-to-client requests
(`sampling/createMessage`, `elicitation/create`, `roots/list`) and
notifications (`notifications/progress`, `notifications/message`,
`notifications/cancelled`) on its session. The aggregator keeps one backend
session per legacy client session (upstream.py), so a backend's message on a
session belongs to exactly one client; the SDKs number requests per session
at both ends, so a backend's request ids never reach the client and two
clients never see each other's requests. This module decides the rest:

* `offer(client)`: the capabilities the gateway declares to a backend for a
  client: exactly the requests the client itself declared it answers
  (sampling with its `tools`/`context` sub-capabilities, elicitation per mode,
  roots). A backend asking for more is refused at once (`refusal`) with the
  error a client lacking the capability gives, so it takes its own fallback
  and never waits.
* `CallBook`: the client calls in flight per backend session; a backend's
  request rides the stream of the latest of them (the protocol names no call
  in a server-to-client request; every call on one backend session is the
  same client's), or the client's standalone stream when none is in flight.
  Relayed requests pending per client session are capped (`admit`/`release`);
  each waits at most what is left of its call (`time_left`).
* `LogLevels`: the level each client session set with `logging/setLevel`,
  bounded in number; the level a new backend session is given.
* `RefreshGate`: a backend's `list_changed` asks for its catalog at once, at
  most one refresh in flight per backend and one more queued behind it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import mcp_types as types

RELAYED_REQUESTS = frozenset({"sampling/createMessage", "elicitation/create", "roots/list"})
DEFAULT_MAX_PENDING = 16  # relayed requests waiting for one client session's answer
DEFAULT_MAX_LEVELS = 10_000
NOT_SUPPORTED = types.INVALID_REQUEST  # what the SDK client answers for a capability it lacks

LoggingLevel = Literal["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]
LEVELS: tuple[LoggingLevel, ...] = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


@dataclass(frozen=True, slots=True)
class Offer:
    """The client capabilities declared to a backend on one client's behalf (None: not offered)."""

    sampling: types.SamplingCapability | None = None
    elicitation: types.ElicitationCapability | None = None
    roots: bool = False

    @property
    def anything(self) -> bool:
        return self.sampling is not None or self.elicitation is not None or self.roots

    @property
    def form(self) -> bool:
        e = self.elicitation
        return e is not None and (e.form is not None or e.url is None)  # `{}` means form (the spec's default)

    @property
    def url(self) -> bool:
        return self.elicitation is not None and self.elicitation.url is not None


NOTHING = Offer()


def offer(client: types.ClientCapabilities | None) -> Offer:
    """What the gateway may declare to a backend for a client that declared `client` (see the module docstring)."""
    if client is None:
        return NOTHING
    return Offer(sampling=client.sampling, elicitation=client.elicitation, roots=client.roots is not None)


def refusal(method: str, params: Mapping[str, Any] | None, offered: Offer) -> str | None:
    """Why a backend's request cannot go to the client (None: relay it): a method the gateway did not offer,
    an elicitation mode the client did not declare, sampling with tools the client did not declare."""
    if method == "roots/list":
        return None if offered.roots else "List roots not supported"
    if method == "elicitation/create":
        mode = (params or {}).get("mode", "form")
        if mode == "url":
            return None if offered.url else "URL elicitation not supported"
        return None if offered.form else "Elicitation not supported"
    if method == "sampling/createMessage":
        if offered.sampling is None:
            return "Sampling not supported"
        if (params or {}).get("tools") and offered.sampling.tools is None:
            return "Sampling with tools not supported"
        return None
    return "Method not found"


@dataclass(frozen=True, slots=True)
class Caller:
    """One client request being served (the SDK's per-request session object as `session`): where a backend's
    related messages go. `key`: the client session ("" for clients without one); `started`: when the call began
    (the clock of `time_left`)."""

    key: str
    request_id: Any
    session: Any
    offer: Offer
    started: float = 0.0


STANDALONE_TIMEOUT = 60.0  # a request outside any call: nothing says the client's standalone stream is open


def time_left(caller: Caller | None, now: float, call_timeout: float) -> float:
    """How long a relayed request may wait for the client: what is left of the call it serves (past that the
    call itself has timed out), or `STANDALONE_TIMEOUT` for one outside any call; never below a millisecond."""
    if caller is None:
        return min(call_timeout, STANDALONE_TIMEOUT)
    return max(0.001, caller.started + call_timeout - now)


class CallBook:
    """The client calls in flight on each backend session, and the relayed requests pending per client session.

    Invariants: a call is in the book from `begin` until `end` (the caller's `finally`); `target` is the latest
    call begun and not ended on that backend session; `pending(key) <= max_pending` for every client session.
    """

    def __init__(self, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        self.max_pending = max_pending
        self._calls: dict[Hashable, OrderedDict[int, Caller]] = {}
        self._pending: dict[str, int] = {}
        self._next = 0

    def begin(self, upstream: Hashable, caller: Caller) -> int:
        self._next += 1
        self._calls.setdefault(upstream, OrderedDict())[self._next] = caller
        return self._next

    def end(self, upstream: Hashable, token: int) -> None:
        calls = self._calls.get(upstream)
        if calls is not None:
            calls.pop(token, None)
            if not calls:
                del self._calls[upstream]

    def target(self, upstream: Hashable) -> Caller | None:
        calls = self._calls.get(upstream)
        return next(reversed(calls.values())) if calls else None

    def in_flight(self, upstream: Hashable) -> int:
        return len(self._calls.get(upstream, ()))

    def admit(self, key: str) -> bool:
        """One more relayed request for client session `key`, unless it has `max_pending` waiting already."""
        pending = self._pending.get(key, 0)
        if pending >= self.max_pending:
            return False
        self._pending[key] = pending + 1
        return True

    def release(self, key: str) -> None:
        pending = self._pending.get(key, 0) - 1
        if pending > 0:
            self._pending[key] = pending
        else:
            self._pending.pop(key, None)

    def pending(self, key: str) -> int:
        return self._pending.get(key, 0)

    def waiting(self) -> int:
        """Relayed requests waiting for an answer, over every client session."""
        return sum(self._pending.values())


class LogLevels:
    """The `logging/setLevel` of each client session, at most `max_sessions` (least recently set out first)."""

    def __init__(self, max_sessions: int = DEFAULT_MAX_LEVELS) -> None:
        self.max_sessions = max_sessions
        self._levels: OrderedDict[str, LoggingLevel] = OrderedDict()

    def set(self, key: str, level: LoggingLevel) -> None:
        self._levels[key] = level
        self._levels.move_to_end(key)
        while len(self._levels) > self.max_sessions:
            self._levels.popitem(last=False)

    def get(self, key: str) -> LoggingLevel | None:
        return self._levels.get(key)

    def forget(self, key: str) -> None:
        self._levels.pop(key, None)

    def __len__(self) -> int:
        return len(self._levels)


def passes(level: str, minimum: LoggingLevel | None) -> bool:
    """Whether a message at `level` goes to a client that set `minimum` (None: every message, the default)."""
    if minimum is None:
        return True
    rank = LEVELS.index(level) if level in LEVELS else len(LEVELS) - 1
    return rank >= LEVELS.index(minimum)


class RefreshGate:
    """`list_changed` from a backend: refresh its catalog now; while one refresh runs, at most one more waits.

    `asked(name)` says whether to start a refresh now; `done(name)` whether to start the queued one."""

    def __init__(self) -> None:
        self._running: set[str] = set()
        self._queued: set[str] = set()

    def asked(self, name: str) -> bool:
        if name in self._running:
            self._queued.add(name)
            return False
        self._running.add(name)
        return True

    def done(self, name: str) -> bool:
        if name in self._queued:
            self._queued.discard(name)
            return True
        self._running.discard(name)
        return False
