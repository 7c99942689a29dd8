"""The session table (aggregator/sessions.py), pure: only issued sessions, opening ones expire fast, the cap
evicts instead of refusing, timeouts by the clock given."""

from __future__ import annotations

from xds_control.aggregator.sessions import SessionTable


def table(**limits: float) -> tuple[SessionTable, list[str]]:
    closed: list[str] = []
    return SessionTable(closed.append, **limits), closed  # type: ignore[arg-type]


def opened(sessions: SessionTable, session_id: str, now: float = 0.0, *, settle: bool = True) -> None:
    admitted, _ = sessions.admit()
    assert admitted
    sessions.opened(session_id, now)
    if settle:
        sessions.started(session_id, now, settles=True)
        sessions.ended(session_id, now)


def test_only_issued_sessions_are_known() -> None:
    sessions, closed = table()
    assert sessions.started("made-up", 0.0, settles=True) is None
    sessions.ended("made-up", 1.0)
    assert len(sessions) == 0 and not sessions.closed("made-up") and closed == []
    opened(sessions, "s1")
    assert "s1" in sessions and sessions.started("s1", 1.0, settles=False) is not None


def test_an_opening_session_expires_after_the_init_timeout_and_a_settled_one_after_the_idle_timeout() -> None:
    sessions, closed = table(init_timeout=10, idle_timeout=100)
    opened(sessions, "silent", 0.0, settle=False)  # answered initialize, nothing since
    opened(sessions, "client", 0.0)
    assert sessions.opening() == 1
    assert sessions.sweep(9.0) == []
    assert sessions.sweep(10.0) == ["silent"] and closed == ["silent"]
    assert sessions.sweep(99.0) == []
    assert sessions.sweep(100.0) == ["client"]


def test_a_request_in_flight_holds_a_session_and_the_countdown_restarts_after_it() -> None:
    sessions, _ = table(idle_timeout=10)
    opened(sessions, "s1")
    sessions.started("s1", 5.0, settles=True)  # an open GET stream
    assert sessions.sweep(1000.0) == []
    sessions.ended("s1", 1000.0)
    assert sessions.sweep(1009.0) == [] and sessions.sweep(1010.0) == ["s1"]


def test_at_the_cap_the_longest_idle_session_is_evicted_not_the_newcomer() -> None:
    sessions, closed = table(max_sessions=3)
    for i, session_id in enumerate(("a", "b", "c")):
        opened(sessions, session_id, float(i))
    sessions.started("a", 5.0, settles=True)  # busy: not the longest idle any more
    admitted, evicted = sessions.admit()
    assert admitted and evicted == ["b"] and closed == ["b"]
    sessions.opened("d", 6.0)
    assert set(sessions.in_flight()) == {"a", "c", "d"}


def test_opening_sessions_go_first_and_are_capped_on_their_own() -> None:
    sessions, _ = table(max_sessions=100, max_opening=2)
    opened(sessions, "client")
    opened(sessions, "silent-1", 1.0, settle=False)
    opened(sessions, "silent-2", 2.0, settle=False)
    admitted, evicted = sessions.admit()  # a third opening session: the oldest opening one goes
    assert admitted and evicted == ["silent-1"]
    sessions.opened("silent-3", 3.0)
    assert sessions.opening() == 2 and "client" in sessions


def test_a_newcomer_is_refused_only_when_every_place_is_being_opened_now() -> None:
    sessions, _ = table(max_sessions=2, max_opening=2)
    assert sessions.admit() == (True, []) and sessions.admit() == (True, [])
    assert sessions.admit() == (False, [])
    sessions.opened(None, 0.0)  # one opening request was refused by the SDK: its place is free again
    assert sessions.admit() == (True, [])


def test_the_sdk_session_object_is_kept_for_known_sessions_only() -> None:
    sessions, _ = table()
    sessions.attach("made-up", object())
    assert sessions.notifiable() == []
    opened(sessions, "s1")
    marker = object()
    sessions.attach("s1", marker)
    assert sessions.notifiable() == [marker]
