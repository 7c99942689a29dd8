"""When the aggregator moves settled objects out of Python's cyclic collector, and when it takes them back. Pure.

A full collection walks every object the collector tracks, on the event loop: with many legacy sessions (each
the SDK's objects, about 100 KiB) that walk is the longest stall of the loop, and Python starts one whenever
enough objects have survived since the last, for instance while an update fans out to every session. So the
aggregator collects what is young and freezes what survives (`gc.collect(); gc.freeze()`) once sessions were
opened, GET streams started or resources subscribed since the last freeze: later full collections walk only
what was made since. Where something moves every second (clients arriving or reconnecting without pause), the
policy waits, and the collector works as Python's own does until a quiet second.

A frozen object is still freed when its last reference goes, but cyclic garbage among frozen objects (a closed
session's) waits until they are thawed (`gc.unfreeze(); gc.collect(); gc.freeze()`: one full collection, the
pause a full collection always cost, now paid once per many closes instead of every few thousand survivors).

Invariants (`GcPolicy.decide`, called once per tick with the session table's running counts):

* Nothing is done on a tick whose counts differ from the previous tick's (sessions are being opened or closed,
  as in a flood): freezing or thawing then would be a full collection every tick. What stays frozen meanwhile is
  bounded by what was frozen last, at most the sessions the table may hold.
* Freeze when sessions were opened, GET streams started or resources subscribed since the last freeze or
  thaw (`opened` counts them all: what is made to last); nothing to do otherwise.
* Thaw when the sessions closed since the last thaw reach `max(min_closed, thaw_fraction x the sessions live at
  the last freeze)`, or when `max_frozen_age` has passed since the last thaw and any session was opened or
  closed meanwhile: the garbage kept frozen stays within about `thaw_fraction` of the sessions' memory (at
  least `min_closed` sessions' worth), and no longer than `max_frozen_age`.
* A thaw is also a freeze (what survives its collection is frozen again).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Action = Literal["freeze", "thaw"]


@dataclass
class GcPolicy:
    thaw_fraction: float = 0.25
    min_closed: int = 64
    max_frozen_age: float = 600.0
    last_thaw: float = 0.0
    frozen_sessions: int = 0  # sessions live at the last freeze
    opened_seen: int = 0  # the table's opened count at the last freeze
    closed_seen: int = 0  # the table's closed count at the last thaw
    changed_seen: int = 0  # opened + closed at the last thaw
    previous: tuple[int, int] = (0, 0)  # the counts at the previous tick

    def decide(self, now: float, opened: int, closed: int) -> Action | None:
        """`opened`: sessions opened, GET streams started and subscriptions made; `closed`: sessions closed
        (running counts since the table began)."""
        moving, self.previous = (opened, closed) != self.previous, (opened, closed)
        if moving:
            return None
        closed_since = closed - self.closed_seen
        if closed_since >= max(self.min_closed, self.thaw_fraction * self.frozen_sessions):
            return "thaw"
        if now - self.last_thaw >= self.max_frozen_age and opened + closed != self.changed_seen:
            return "thaw"
        if opened != self.opened_seen:
            return "freeze"
        return None

    def done(self, action: Action, now: float, opened: int, closed: int, live: int) -> None:
        """`action` was carried out with the table at these counts."""
        self.opened_seen, self.frozen_sessions = opened, live
        if action == "thaw":
            self.last_thaw, self.closed_seen, self.changed_seen = now, closed, opened + closed
