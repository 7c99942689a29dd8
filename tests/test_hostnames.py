"""Host-named backend endpoints: which address EDS gets, and when it changes (xds_control/hostnames.py)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tests.support.stack import stack_config
from xds_control.hostnames import MAX_INTERVAL, MIN_INTERVAL, lookup_interval, needs_lookup, pick_address, resolve_once
from xds_control.view import ViewStore
from xds_control.xds.resources import load_assignment


@pytest.mark.parametrize(
    ("current", "resolved", "picked"),
    [
        (None, [], None),  # never resolved: nothing to push yet
        (None, ["10.0.0.1", "10.0.0.2"], "10.0.0.1"),
        ("10.0.0.2", ["10.0.0.1", "10.0.0.2"], "10.0.0.2"),  # still an answer: kept, whatever the order
        ("10.0.0.9", ["10.0.0.1", "10.0.0.2"], "10.0.0.1"),  # moved: the new answer's first
        ("10.0.0.9", [], "10.0.0.9"),  # a failed lookup keeps the last known address
    ],
)
def test_pick_address_keeps_a_still_valid_address_and_follows_a_move(current, resolved, picked):
    assert pick_address(current, resolved) == picked


def test_ip_literals_and_localhost_are_not_looked_up():
    assert not needs_lookup("10.1.2.3")
    assert not needs_lookup("::1")
    assert not needs_lookup("localhost")
    assert needs_lookup("weather.tools.svc.cluster.local")


@pytest.mark.parametrize(("interval", "expected"), [("10s", 10.0), ("100ms", MIN_INTERVAL), ("10m", MAX_INTERVAL)])
def test_names_are_looked_up_again_every_probe_round_within_bounds(interval, expected):
    assert lookup_interval(stack_config(health={"interval": interval, "timeout": "50ms"})) == expected


class Answers:
    """A resolver for the pure loop: answers from a dict the test changes; OSError for unknown names."""

    def __init__(self, answers: dict[str, Sequence[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append(host)
        if host not in self.answers:
            raise OSError("Name or service not known")
        return self.answers[host]


def pushed(store: ViewStore, name: str) -> list[str]:
    backend = store.current.config.backend(name)
    assert backend is not None
    spec = load_assignment(backend, store.current.backends[name])
    return [
        lb["endpoint"]["address"]["socket_address"]["address"] for g in spec["endpoints"] for lb in g["lb_endpoints"]
    ]


async def test_a_moved_name_reaches_eds_and_a_failed_lookup_keeps_the_last_address():
    config = stack_config(
        [
            {"name": "svc", "endpoints": ["http://svc.ns.svc:9001/mcp", "http://10.9.9.9:9001/mcp"]},
            {"name": "gone", "url": "http://gone.ns.svc:9002/mcp"},
        ]
    )
    store = ViewStore(config)
    resolver = Answers({"svc.ns.svc": ["10.0.0.1"]})
    await resolve_once(store, resolver)
    assert pushed(store, "svc") == ["10.0.0.1", "10.9.9.9"]
    assert pushed(store, "gone") == []  # never resolved: left out of EDS (nothing Envoy could dial)
    assert sorted(resolver.asked) == ["gone.ns.svc", "svc.ns.svc"]  # IP literals are not looked up

    version = store.current.version
    await resolve_once(store, resolver)
    assert store.current.version == version  # the same answer is no view change (no push)

    resolver.answers["svc.ns.svc"] = ["10.0.0.7"]
    await resolve_once(store, resolver)
    assert pushed(store, "svc") == ["10.0.0.7", "10.9.9.9"]

    del resolver.answers["svc.ns.svc"]
    await resolve_once(store, resolver)
    assert pushed(store, "svc") == ["10.0.0.7", "10.9.9.9"]
