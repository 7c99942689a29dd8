"""When list_changed is due (pure, injected clock)."""

from __future__ import annotations

from xds_control.aggregator.coalesce import ChangeCoalescer

BASE = {"tools": "t0", "resources": "r0", "resource_templates": "rt0", "prompts": "p0"}


def test_nothing_is_due_without_a_change() -> None:
    c = ChangeCoalescer(BASE, window=0.1)
    c.observe(dict(BASE), now=1.0)
    assert c.deadline is None and c.flush(now=5.0) == frozenset()


def test_a_change_is_due_when_the_window_closes_and_only_for_its_kind() -> None:
    c = ChangeCoalescer(BASE, window=0.1)
    c.observe({**BASE, "tools": "t1"}, now=1.0)
    assert c.deadline == 1.1
    assert c.flush(now=1.05) == frozenset()
    assert c.flush(now=1.1) == {"tools"}
    assert c.deadline is None and c.flush(now=2.0) == frozenset()


def test_a_burst_is_one_notification_per_kind() -> None:
    c = ChangeCoalescer(BASE, window=0.1)
    for i, now in enumerate([1.0, 1.02, 1.04, 1.08]):
        c.observe({**BASE, "tools": f"t{i + 1}", "prompts": "p1" if i > 1 else "p0"}, now=now)
    assert c.deadline == 1.1  # the window does not slide
    assert c.flush(now=1.1) == {"tools", "prompts"}


def test_a_change_undone_within_the_window_is_not_announced() -> None:
    c = ChangeCoalescer(BASE, window=0.1)
    c.observe({**BASE, "tools": "t1"}, now=1.0)
    c.observe(dict(BASE), now=1.05)
    assert c.flush(now=1.1) == frozenset()


def test_changes_after_a_flush_open_a_new_window() -> None:
    c = ChangeCoalescer(BASE, window=0.1)
    c.observe({**BASE, "tools": "t1"}, now=1.0)
    assert c.flush(now=1.1) == {"tools"}
    c.observe({**BASE, "tools": "t1"}, now=1.2)
    assert c.deadline is None  # same as announced
    c.observe({**BASE, "tools": "t2", "resource_templates": "rt1"}, now=1.3)
    assert c.flush(now=1.5) == {"tools", "resource_templates"}
