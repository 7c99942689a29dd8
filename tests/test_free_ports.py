"""The tests' port picker: workers draw from disjoint slices, and a worker never hands a port out twice in a row."""

from __future__ import annotations

import pytest

from tests.support import waiting


def test_workers_get_disjoint_slices_below_the_ephemeral_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
    slices = []
    for worker in ("gw0", "gw1", "gw2"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        slices.append(set(waiting._worker_slice()))
    assert all(len(s) > 1000 for s in slices)
    assert not (slices[0] & slices[1]) and not (slices[1] & slices[2]) and not (slices[0] & slices[2])
    assert max(max(s) for s in slices) < waiting._EPHEMERAL_LOW


def test_ports_handed_out_are_not_repeated_until_the_slice_comes_round() -> None:
    turns = waiting._in_turn(range(20000, 22000))
    picks = [next(turns) for _ in range(2000)]
    assert len(set(picks)) == 2000
    assert next(turns) == picks[0]


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = waiting.free_ports(20) + [waiting.free_port() for _ in range(20)]
    assert len(set(ports)) == 40
    for port in ports:
        sock = waiting._bindable("127.0.0.1", port)
        assert sock is not None
        sock.close()


def test_an_unusual_port_range_leaves_the_choice_to_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waiting, "_EPHEMERAL_LOW", 10000)  # ephemeral ports start below our low end
    assert len(waiting._worker_slice()) == 0
    turns = waiting._turns_for(waiting._worker_slice())
    assert turns is None
    monkeypatch.setattr(waiting, "_turns", turns)
    ports = waiting.free_ports(3)
    assert len(set(ports)) == 3 and all(p > 0 for p in ports)
