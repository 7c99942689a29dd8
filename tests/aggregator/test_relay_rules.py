"""The relay's decisions (relay.py): what a backend is offered, what it is refused, where its requests go, the
bounds."""

from __future__ import annotations

import mcp_types as types
from hypothesis import given
from hypothesis import strategies as st

from xds_control.aggregator.relay import (
    LEVELS,
    NOTHING,
    STANDALONE_TIMEOUT,
    CallBook,
    Caller,
    LogLevels,
    RefreshGate,
    offer,
    passes,
    refusal,
    time_left,
)


def caps(**kw: object) -> types.ClientCapabilities:
    return types.ClientCapabilities.model_validate(kw)


def test_the_offer_is_exactly_what_the_client_declared() -> None:
    assert offer(None) == NOTHING and not NOTHING.anything
    assert not offer(caps()).anything
    only_form = offer(caps(elicitation={"form": {}}))
    assert only_form.form and not only_form.url and only_form.sampling is None and not only_form.roots
    assert offer(caps(elicitation={})).form  # an empty elicitation capability means form mode
    both = offer(caps(elicitation={"form": {}, "url": {}}, sampling={"tools": {}}, roots={"listChanged": True}))
    assert both.form and both.url and both.roots and both.sampling is not None and both.sampling.tools is not None


def test_a_backend_asking_beyond_the_offer_is_refused_with_the_clients_own_answer() -> None:
    form_only = offer(caps(elicitation={"form": {}}, sampling={}))
    assert refusal("elicitation/create", {"mode": "form"}, form_only) is None
    assert refusal("elicitation/create", {}, form_only) is None
    assert (
        refusal("elicitation/create", {"mode": "url", "url": "https://x"}, form_only) == "URL elicitation not supported"
    )
    assert refusal("sampling/createMessage", {"messages": []}, form_only) is None
    assert (
        refusal("sampling/createMessage", {"tools": [{"name": "t"}]}, form_only) == "Sampling with tools not supported"
    )
    assert refusal("roots/list", None, form_only) == "List roots not supported"
    assert refusal("roots/list", None, NOTHING) == "List roots not supported"
    assert refusal("sampling/createMessage", {}, NOTHING) == "Sampling not supported"
    assert refusal("elicitation/create", {}, NOTHING) == "Elicitation not supported"
    assert refusal("tasks/get", {}, form_only) == "Method not found"


def _caller(key: str, request_id: int) -> Caller:
    return Caller(key, request_id, object(), NOTHING)


def test_a_backends_request_rides_the_latest_call_in_flight_on_its_session() -> None:
    book = CallBook()
    a = ("weather", "s1")
    assert book.target(a) is None
    first, second = _caller("s1", 1), _caller("s1", 2)
    t1 = book.begin(a, first)
    t2 = book.begin(a, second)
    book.begin(("weather", "s2"), _caller("s2", 9))
    assert book.target(a) is second and book.in_flight(a) == 2
    book.end(a, t2)
    assert book.target(a) is first
    book.end(a, t1)
    book.end(a, t1)  # twice: no harm
    assert book.target(a) is None and book.in_flight(a) == 0
    assert book.target(("weather", "s2")).request_id == 9  # type: ignore[union-attr]


@given(st.lists(st.sampled_from(["admit", "release"]), max_size=200), st.integers(1, 5))
def test_pending_requests_per_client_session_never_exceed_the_cap(ops: list[str], cap: int) -> None:
    book = CallBook(max_pending=cap)
    held = 0
    for op in ops:
        if op == "admit":
            if book.admit("s"):
                held += 1
            else:
                assert held == cap
        elif held:
            book.release("s")
            held -= 1
        assert book.pending("s") == held <= cap
    assert book.pending("other") == 0


def test_log_levels_are_bounded_and_filter_from_the_level_set() -> None:
    levels = LogLevels(max_sessions=2)
    levels.set("a", "warning")
    levels.set("b", "debug")
    levels.set("c", "error")
    assert levels.get("a") is None and levels.get("c") == "error" and len(levels) == 2
    levels.forget("c")
    assert levels.get("c") is None
    assert passes("debug", None) and passes("warning", "warning") and passes("emergency", "info")
    assert not passes("info", "warning") and not passes("debug", "info")
    assert passes("not-a-level", "emergency")  # an unknown level is not dropped
    assert all(passes(level, level) for level in LEVELS)


def test_list_changed_refreshes_once_at_a_time_with_one_more_queued() -> None:
    gate = RefreshGate()
    assert gate.asked("w")
    assert not gate.asked("w") and not gate.asked("w")  # queued once, however often asked
    assert gate.asked("other")
    assert gate.done("w")  # the queued one runs
    assert not gate.done("w")  # nothing queued: idle
    assert gate.asked("w")


def test_a_relayed_request_waits_at_most_what_is_left_of_its_call() -> None:
    caller = Caller("s", 1, object(), NOTHING, started=100.0)
    assert time_left(caller, 100.0, 30.0) == 30.0
    assert time_left(caller, 120.0, 30.0) == 10.0
    assert time_left(caller, 200.0, 30.0) == 0.001  # the call is over: the request fails at once
    assert time_left(None, 0.0, 300.0) == STANDALONE_TIMEOUT
    assert time_left(None, 0.0, 5.0) == 5.0
