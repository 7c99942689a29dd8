"""Per-stream xDS protocol state and the directory of connected Envoy nodes.

`TypeState` is the SotW bookkeeping of one resource type on one stream and the
`decide_push` / `on_request` functions are its pure rules; the ADS server only
feeds them requests and snapshots and writes what they decide.

Locking rule: a StreamState belongs to one ADS stream (one asyncio task);
the NodeDirectory is read by the admin API on the same event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from xds_control.xds import typeurls as t
from xds_control.xds.profiles import DEFAULT_PROFILE, NodeProfile
from xds_control.xds.snapshot import Resource, Snapshot


@dataclass
class Pending:
    nonce: str
    version: str
    hashes: dict[str, str]
    sent_at: float


@dataclass
class TypeState:
    """What one Envoy has of one type, and what is in flight to it."""

    subscribed: bool = False
    names: frozenset[str] = frozenset()  # requested names (EDS/RDS); CDS/LDS are wildcard
    acked_version: str = ""
    acked_hashes: dict[str, str] = field(default_factory=dict)
    last_acked_nonce: str = ""
    pending: Pending | None = None
    nacked_version: str = ""
    nack_detail: str = ""
    force: bool = False  # answer the current resources at the next chance, changed or not
    reported_version: str | None = None  # version_info of the stream's first request of this type; None: none yet
    held: frozenset[str] = frozenset()  # EDS of a resumed node: assignments kept from it until they have a verdict


class RequestKind(Enum):
    INITIAL = "initial"  # empty nonce: first request on a stream or a reconnect
    ACK = "ack"
    NACK = "nack"
    REREQUEST = "rerequest"  # the already-ACKed nonce again: Envoy re-warming a resource
    STALE = "stale"  # an older nonce: ignored


def classify_request(state: TypeState, nonce: str, error: bool) -> RequestKind:
    if not nonce:
        return RequestKind.INITIAL
    if state.pending is not None and nonce == state.pending.nonce:
        return RequestKind.NACK if error else RequestKind.ACK
    if nonce == state.last_acked_nonce and not error:
        return RequestKind.REREQUEST
    return RequestKind.STALE


def on_request(
    state: TypeState, type_url: str, kind: RequestKind, names: list[str], nonce: str, detail: str
) -> Pending | None:
    """Apply a request to `state`. Returns the Pending it settled (ACK or NACK), if any."""
    if kind is RequestKind.STALE:
        return None
    state.subscribed = True
    if type_url not in t.WILDCARD_TYPES:
        new_names = frozenset(names)
        for gone in state.names - new_names:
            state.acked_hashes.pop(gone, None)
        state.names = new_names
    settled = state.pending
    if kind is RequestKind.INITIAL or kind is RequestKind.REREQUEST:
        state.force = True
        return None
    state.pending = None
    state.last_acked_nonce = nonce
    if kind is RequestKind.ACK and settled is not None:
        state.acked_version = settled.version
        if type_url in t.WILDCARD_TYPES:
            state.acked_hashes = dict(settled.hashes)
        else:
            state.acked_hashes.update(settled.hashes)
    elif kind is RequestKind.NACK and settled is not None:
        state.nacked_version = settled.version
        state.nack_detail = detail
    return settled


def note_first_request(types: Mapping[str, TypeState], type_url: str, version_info: str, snapshot: Snapshot) -> None:
    """Remember what Envoy said it had when the stream opened; on its first EDS request, decide the warm hold.

    Warm start: a node that resumes (reconnects to this control plane, restarted or not, or fails over from
    another) with exactly our clusters already has assignments, and verdicts behind them. Until this control
    plane has its own verdict for an endpoint, the assignments it would send carry UNKNOWN (routable) health:
    they are held back from such a node, which keeps what it has. A node that has no config yet, or other
    clusters (they re-warm and wait for their assignments), gets everything, as always."""
    state = types[type_url]
    if state.reported_version is not None:
        return
    state.reported_version = version_info
    if type_url == t.ENDPOINT and version_info:
        clusters = types[t.CLUSTER].reported_version
        if clusters and clusters == snapshot.version(t.CLUSTER):
            state.held = state.names


def on_cluster_push(types: Mapping[str, TypeState], version: str) -> None:
    """A CDS push the node did not already have ends the warm hold: changed clusters re-warm and must be answered."""
    if version != types[t.CLUSTER].reported_version:
        types[t.ENDPOINT].held = frozenset()


def decide_push(state: TypeState, type_url: str, snapshot: Snapshot) -> list[Resource] | None:
    """The resources to send now, or None. One response in flight per type; a NACKed version is never re-sent
    unless Envoy asks afresh (a reconnect), so a bad config cannot cause a push loop."""
    if not state.subscribed or state.pending is not None:
        return None
    current = snapshot.types[type_url]
    if current.version == state.nacked_version and not state.force:
        return None
    if type_url in t.WILDCARD_TYPES:
        if state.force or current.version != state.acked_version:
            return list(current.resources.values())
        return None
    wanted = [current.resources[n] for n in sorted(state.names) if n in current.resources]
    if state.held:
        state.held = frozenset(n for n in state.held if n in current.resources and current.resources[n].unverified)
        wanted = [r for r in wanted if r.name not in state.held]
    if state.force:
        return wanted or None
    changed = [r for r in wanted if state.acked_hashes.get(r.name) != r.hash]
    return changed or None


@dataclass
class NodeInfo:
    """One connected Envoy (one ADS stream), as the admin API lists it."""

    node_id: str
    cluster: str
    connected_since: float
    stream_id: int
    types: Mapping[str, TypeState]
    profile: NodeProfile = DEFAULT_PROFILE

    @property
    def role(self) -> str:
        return self.profile.describe()

    @property
    def acked(self) -> dict[str, str]:
        return {t.SHORT[k]: v.acked_version for k, v in self.types.items() if v.acked_version}

    @property
    def nacked(self) -> dict[str, tuple[str, str]]:
        return {t.SHORT[k]: (v.nacked_version, v.nack_detail) for k, v in self.types.items() if v.nacked_version}


AckListener = Callable[[str, str, str, float], None]  # (node_id, type_url, version, push->ack seconds)


class NodeDirectory:
    """Connected Envoy nodes with their per-type ACK/NACK state (implements the admin API's NodeDirectory)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._streams: dict[int, NodeInfo] = {}
        self._next_id = 0
        self.ack_listeners: list[AckListener] = []

    def connect(
        self, node_id: str, cluster: str, types: Mapping[str, TypeState], profile: NodeProfile = DEFAULT_PROFILE
    ) -> int:
        self._next_id += 1
        self._streams[self._next_id] = NodeInfo(node_id, cluster, self._clock(), self._next_id, types, profile)
        return self._next_id

    def disconnect(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)

    def nodes(self) -> list[NodeInfo]:
        return sorted(self._streams.values(), key=lambda n: (n.node_id, n.stream_id))

    def notify_ack(self, node_id: str, type_url: str, version: str, latency: float) -> None:
        for listener in list(self.ack_listeners):
            listener(node_id, type_url, version, latency)
