"""Warm start (nodes.py): a node that resumes with our clusters keeps its assignments until we have verdicts.

A fake Envoy per stream (all four types) drives the pure rules as the ADS server does: first request of each
type with the versions it holds, pushes decided by `decide_push`, ACKs.
"""

from __future__ import annotations

from xds_control.config import parse_config
from xds_control.view import BackendState, ViewStore
from xds_control.xds import typeurls as t
from xds_control.xds.nodes import (
    Pending,
    TypeState,
    classify_request,
    decide_push,
    note_first_request,
    on_cluster_push,
    on_request,
)
from xds_control.xds.snapshot import Snapshot, SnapshotBuilder

NAMES = ["b0", "b1"]


def _store() -> ViewStore:
    backends = [{"name": n, "url": f"http://127.0.0.1:{9000 + i}/mcp"} for i, n in enumerate(NAMES)]
    return ViewStore(parse_config({"backends": backends}))


class Stream:
    """One ADS stream of a fake Envoy that holds `had` (type URL -> version) when it connects."""

    def __init__(self, snapshot: Snapshot, had: dict[str, str]) -> None:
        self.types = {type_url: TypeState() for type_url in t.PUSH_ORDER}
        self.nonce = 0
        for type_url in (t.CLUSTER, t.ENDPOINT):
            names = NAMES if type_url == t.ENDPOINT else []
            state = self.types[type_url]
            on_request(state, type_url, classify_request(state, "", False), names, "", "")
            note_first_request(self.types, type_url, had.get(type_url, ""), snapshot)

    def push(self, snapshot: Snapshot) -> dict[str, list[str]]:
        """Everything the server would send now, each ACKed at once."""
        sent = {}
        for type_url in (t.CLUSTER, t.ENDPOINT):
            state = self.types[type_url]
            resources = decide_push(state, type_url, snapshot)
            if resources is None:
                continue
            self.nonce += 1
            version = snapshot.version(type_url)
            state.pending = Pending(str(self.nonce), version, {r.name: r.hash for r in resources}, 0.0)
            state.force = False
            if type_url in t.DEPENDENT:
                self.types[t.DEPENDENT[type_url]].force = True
            if type_url == t.CLUSTER:
                on_cluster_push(self.types, version)
            sent[t.SHORT[type_url]] = [r.name for r in resources]
            names = NAMES if type_url == t.ENDPOINT else []
            on_request(state, type_url, classify_request(state, str(self.nonce), False), names, str(self.nonce), "")
        return sent


def _resumed(snapshot: Snapshot) -> dict[str, str]:
    return {t.CLUSTER: snapshot.version(t.CLUSTER), t.ENDPOINT: "some-version-of-another-control-plane"}


def test_a_resumed_node_keeps_its_assignments_until_this_control_plane_has_verdicts() -> None:
    store, builder = _store(), SnapshotBuilder()
    fresh = builder.build(store.current)  # just started: every endpoint unknown
    stream = Stream(fresh, _resumed(fresh))
    assert "eds" not in stream.push(fresh)
    store.set_state("b0", BackendState.HEALTHY)
    assert stream.push(builder.build(store.current)) == {"eds": ["b0"]}
    store.set_state("b1", BackendState.UNHEALTHY)
    assert stream.push(builder.build(store.current)) == {"eds": ["b1"]}
    # verdicts in: from now on an ordinary stream
    store.set_state("b0", BackendState.UNHEALTHY)
    assert stream.push(builder.build(store.current)) == {"eds": ["b0"]}


def test_the_resumed_nodes_clusters_are_answered_and_nothing_unknown_is_sent() -> None:
    store, builder = _store(), SnapshotBuilder()
    fresh = builder.build(store.current)
    stream = Stream(fresh, _resumed(fresh))
    sent = stream.push(fresh)
    assert sent.get("cds") == ["b0", "b1", t.AGGREGATOR_CLUSTER]  # the same clusters: Envoy keeps them warm
    assert "eds" not in sent
    assert stream.types[t.ENDPOINT].held == frozenset(NAMES)


def test_a_new_node_gets_unknown_assignments_at_once() -> None:
    store, builder = _store(), SnapshotBuilder()
    fresh = builder.build(store.current)
    stream = Stream(fresh, {})
    assert stream.push(fresh) == {"cds": ["b0", "b1", t.AGGREGATOR_CLUSTER], "eds": NAMES}


def test_a_node_with_other_clusters_gets_everything_its_clusters_wait_for() -> None:
    store, builder = _store(), SnapshotBuilder()
    fresh = builder.build(store.current)
    stream = Stream(fresh, {t.CLUSTER: "clusters-of-another-config", t.ENDPOINT: "x"})
    assert stream.push(fresh)["eds"] == NAMES


def test_a_cluster_change_while_held_ends_the_hold() -> None:
    store, builder = _store(), SnapshotBuilder()
    fresh = builder.build(store.current)
    stream = Stream(fresh, _resumed(fresh))
    stream.push(fresh)
    data = store.current.config.model_dump(mode="json")
    data["outlier_detection"]["consecutive_5xx"] = 9  # every backend cluster changes: Envoy re-warms them
    store.replace_config(parse_config(data))
    sent = stream.push(builder.build(store.current))
    assert sent["eds"] == NAMES
    assert stream.types[t.ENDPOINT].held == frozenset()
