"""SotW rules of one stream (nodes.py) and snapshot building, with no sockets."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from xds_control.config import parse_config
from xds_control.errors import SnapshotInconsistent
from xds_control.view import BackendState, ViewStore
from xds_control.xds import typeurls as t
from xds_control.xds.nodes import Pending, RequestKind, TypeState, classify_request, decide_push, on_request
from xds_control.xds.resources import build_resources
from xds_control.xds.snapshot import Snapshot, SnapshotBuilder


def _store(n: int = 3) -> ViewStore:
    return ViewStore(
        parse_config({"backends": [{"name": f"b{i}", "url": f"http://127.0.0.1:{9000 + i}/mcp"} for i in range(n)]})
    )


class Peer:
    """A fake Envoy for one type: sends requests, ACKs or NACKs what it is sent, asserts nonce rules."""

    def __init__(self, type_url: str, names: list[str] | None = None) -> None:
        self.type_url = type_url
        self.state = TypeState()
        self.names = names or []
        self.nonce = 0
        self.sent: list[list[str]] = []

    def request(self, nonce: str = "", error: bool = False, names: list[str] | None = None) -> RequestKind:
        kind = classify_request(self.state, nonce, error)
        on_request(
            self.state, self.type_url, kind, names if names is not None else self.names, nonce, "bad" if error else ""
        )
        return kind

    def push(self, snapshot: Snapshot) -> list[str] | None:
        resources = decide_push(self.state, self.type_url, snapshot)
        if resources is None:
            return None
        self.nonce += 1
        self.state.pending = Pending(
            str(self.nonce), snapshot.version(self.type_url), {r.name: r.hash for r in resources}, 0.0
        )
        self.state.force = False
        names = [r.name for r in resources]
        self.sent.append(names)
        return names

    def ack(self) -> RequestKind:
        assert self.state.pending is not None, "nothing to ACK"
        return self.request(self.state.pending.nonce)

    def nack(self) -> RequestKind:
        assert self.state.pending is not None, "nothing to NACK"
        return self.request(self.state.pending.nonce, error=True)


def test_initial_request_gets_everything_then_ack_settles():
    builder, store = SnapshotBuilder(), _store()
    snap = builder.build(store.current)
    cds = Peer(t.CLUSTER)
    assert cds.request() is RequestKind.INITIAL
    assert sorted(cds.push(snap)) == sorted(["b0", "b1", "b2", t.AGGREGATOR_CLUSTER])
    assert cds.push(snap) is None, "one response in flight per type"
    assert cds.ack() is RequestKind.ACK
    assert cds.state.acked_version == snap.version(t.CLUSTER)
    assert cds.push(snap) is None, "nothing changed after the ACK"


def test_health_flip_sends_only_the_changed_assignment_and_no_cds():
    builder, store = SnapshotBuilder(), _store()
    first = builder.build(store.current)
    cds, eds = Peer(t.CLUSTER), Peer(t.ENDPOINT, ["b0", "b1", "b2"])
    for peer in (cds, eds):
        peer.request()
        peer.push(first)
        peer.ack()
    store.set_state("b1", BackendState.UNHEALTHY)
    second = builder.build(store.current)
    assert second.version(t.CLUSTER) == first.version(t.CLUSTER)
    assert second.version(t.ENDPOINT) != first.version(t.ENDPOINT)
    assert cds.push(second) is None
    assert eds.push(second) == ["b1"]


def test_nack_keeps_last_good_and_never_repushes_the_same_version():
    builder, store = SnapshotBuilder(), _store()
    good = builder.build(store.current)
    lds = Peer(t.LISTENER)
    lds.request()
    lds.push(good)
    lds.ack()
    store.replace_config(parse_config({**store.current.config.model_dump(), "listener": {"port": 10100}}))
    bad = builder.build(store.current)
    assert lds.push(bad) is not None
    assert lds.nack() is RequestKind.NACK
    assert lds.state.nacked_version == bad.version(t.LISTENER)
    assert lds.state.acked_version == good.version(t.LISTENER), "the last good version stays acked"
    for _ in range(3):
        assert lds.push(bad) is None, "a NACKed version is not pushed again"
    store.replace_config(parse_config({**store.current.config.model_dump(), "listener": {"port": 10200}}))
    assert lds.push(builder.build(store.current)) is not None, "a new version is pushed"


def test_stale_nonce_is_ignored():
    builder, store = SnapshotBuilder(), _store()
    snap = builder.build(store.current)
    eds = Peer(t.ENDPOINT, ["b0"])
    eds.request()
    eds.push(snap)
    assert eds.request("999") is RequestKind.STALE
    assert eds.state.pending is not None


def test_rerequest_with_the_acked_nonce_is_answered_again():
    """After a cluster update Envoy re-sends its EDS request with the nonce it already ACKed."""
    builder, store = SnapshotBuilder(), _store()
    snap = builder.build(store.current)
    eds = Peer(t.ENDPOINT, ["b0", "b1"])
    eds.request()
    eds.push(snap)
    eds.ack()
    assert eds.push(snap) is None
    assert eds.request(str(eds.nonce)) is RequestKind.REREQUEST
    assert eds.push(snap) == ["b0", "b1"]


def test_reconnect_resyncs_everything_even_at_the_same_version():
    builder, store = SnapshotBuilder(), _store()
    snap = builder.build(store.current)
    fresh = Peer(t.CLUSTER)
    fresh.state.acked_version = snap.version(t.CLUSTER)  # what Envoy claims after a control-plane restart
    assert fresh.request() is RequestKind.INITIAL
    assert fresh.push(snap) is not None


def test_new_eds_names_are_sent_and_removed_names_forgotten():
    builder, store = SnapshotBuilder(), _store()
    snap = builder.build(store.current)
    eds = Peer(t.ENDPOINT, ["b0"])
    eds.request()
    eds.push(snap)
    eds.ack()
    eds.request(str(eds.nonce), names=["b0", "b2"])
    assert eds.push(snap) == ["b0", "b2"]  # a re-request with the acked nonce is answered in full
    eds.ack()
    eds.request(str(eds.nonce), names=["b2"])
    assert "b0" not in eds.state.acked_hashes


def test_builder_reuses_unchanged_encodings():
    builder, store = SnapshotBuilder(), _store(5)
    first = builder.build(store.current)
    store.set_state("b3", BackendState.HEALTHY)
    second = builder.build(store.current)
    for name in ("b0", "b1", "b2", "b4"):
        assert second.resources(t.ENDPOINT)[name] is first.resources(t.ENDPOINT)[name]
    assert second.resources(t.ENDPOINT)["b3"] is not first.resources(t.ENDPOINT)["b3"]
    for type_url in (t.CLUSTER, t.LISTENER, t.ROUTE):
        assert second.version(type_url) == first.version(type_url)


def test_a_health_only_build_is_what_a_full_build_makes():
    """The incremental path (same config, changed statuses) against a fresh builder, over a run of changes
    that includes status changes without a version bump (probe statistics) and reverting flips."""
    rng = random.Random(7)
    builder, store = SnapshotBuilder(), _store(8)
    builder.build(store.current)
    states = list(BackendState)
    for step in range(60):
        name = f"b{rng.randrange(8)}"
        if step % 5 == 0:
            store.update_backend(name, lambda s, step=step: replace(s, last_probe_ms=float(step)))  # no version bump
        else:
            store.set_state(name, rng.choice(states))
        incremental, full = builder.build(store.current), SnapshotBuilder().build(store.current)
        for type_url in t.PUSH_ORDER:
            assert incremental.version(type_url) == full.version(type_url), (step, type_url)
            assert {n: r.hash for n, r in incremental.resources(type_url).items()} == {
                n: r.hash for n, r in full.resources(type_url).items()
            }


def test_versions_are_stable_for_equal_views():
    assert (
        SnapshotBuilder().build(_store().current).types[t.ENDPOINT].version
        == SnapshotBuilder().build(_store().current).types[t.ENDPOINT].version
    )


def test_inconsistent_snapshot_is_refused():
    specs = build_resources(_store().current)
    del specs[t.ENDPOINT]["b1"]
    with pytest.raises(SnapshotInconsistent, match="b1"):
        Snapshot.from_specs(specs).check()
    specs = build_resources(_store().current)
    specs[t.ROUTE]["orphan"] = replace_name(specs[t.ROUTE][t.EGRESS_ROUTES], "orphan")
    with pytest.raises(SnapshotInconsistent, match="orphan"):
        Snapshot.from_specs(specs).check()


def replace_name(spec: dict, name: str) -> dict:
    return {**spec, "name": name}
