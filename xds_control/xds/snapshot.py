"""Snapshots: immutable, consistency-checked sets of encoded resources, one version per type.

A `Snapshot` is a value. `SnapshotBuilder` turns a view into one, reusing the
encoding of every resource whose inputs did not change (so a health flip
re-encodes one ClusterLoadAssignment). A type's version is a hash of its
resources' hashes: it changes exactly when something of that type changed, and
is the same across control-plane restarts for the same config and health.
`SnapshotCache` holds the current snapshot and tells subscribed streams when it
changes (delivery is the ADS server's business).

Per node: the snapshot built from a view is the one of the default profile
(every listener on the config's ports). A node whose metadata asks for another
profile (profiles.py: a role, its own ports) gets `SnapshotBuilder.build_for`:
the same Cluster and ClusterLoadAssignment objects (a subset, by role) and its
own listeners and routes, encoded once per profile and kept while unchanged.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from xds_control.errors import SnapshotInconsistent
from xds_control.view import View
from xds_control.xds import typeurls as t
from xds_control.xds.encode import any_field, encode_message
from xds_control.xds.profiles import DEFAULT_PROFILE, NodeProfile
from xds_control.xds.resources import (
    Plan,
    Spec,
    plan_assignment,
    plan_listeners,
    plan_resources,
    profile_clusters,
)

MAX_PROFILES = 1024  # node profiles whose encoded listeners are kept (least recently used dropped first)


@dataclass(frozen=True)
class Resource:
    """One encoded resource: its message bytes, the `Any` field ready to frame, and what it references."""

    name: str
    hash: str
    message: bytes
    field: bytes
    refs: tuple[str, ...] = ()  # EDS names a cluster needs, RDS names a listener needs
    unverified: bool = False  # an assignment with an endpoint of UNKNOWN health (no verdict yet)

    @classmethod
    def encode(cls, type_url: str, name: str, spec: Spec) -> Resource:
        message = encode_message(type_url, spec)
        return cls(
            name=name,
            hash=hashlib.sha256(message).hexdigest()[:16],
            message=message,
            field=any_field(type_url, message),
            refs=_refs(type_url, spec),
            unverified=type_url == t.ENDPOINT and _has_unknown(spec),
        )


def _has_unknown(spec: Spec) -> bool:
    return any(lb.get("health_status") == "UNKNOWN" for g in spec.get("endpoints", ()) for lb in g["lb_endpoints"])


def _refs(type_url: str, spec: Spec) -> tuple[str, ...]:
    if type_url == t.CLUSTER and spec.get("type") == "EDS":
        return (spec["eds_cluster_config"].get("service_name") or spec["name"],)
    if type_url == t.LISTENER:
        names = []
        for chain in spec.get("filter_chains", []):
            for flt in chain.get("filters", []):
                rds = flt.get("typed_config", {}).get("rds")
                if rds:
                    names.append(rds["route_config_name"])
        return tuple(names)
    return ()


@dataclass(frozen=True)
class TypeSnapshot:
    version: str
    resources: Mapping[str, Resource]


def _check_pair(types: Mapping[str, TypeSnapshot], parent: str) -> None:
    child = t.DEPENDENT[parent]
    wanted = {ref for r in types[parent].resources.values() for ref in r.refs}
    have = set(types[child].resources)
    missing, extra = wanted - have, have - wanted
    if missing or extra:
        raise SnapshotInconsistent(
            f"{t.SHORT[child]} does not match {t.SHORT[parent]}: missing {sorted(missing)}, unreferenced {sorted(extra)}"
        )


def _type_version(resources: Mapping[str, Resource]) -> str:
    if not resources:
        return "empty"
    digest = hashlib.sha256("".join(f"{n}={r.hash};" for n, r in sorted(resources.items())).encode())
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class Snapshot:
    """Every resource Envoy gets, per type URL, with a version per type. Immutable; checked before serving."""

    types: Mapping[str, TypeSnapshot]
    view_version: int = 0

    def version(self, type_url: str) -> str:
        return self.types[type_url].version

    def resources(self, type_url: str) -> Mapping[str, Resource]:
        return self.types[type_url].resources

    def check(self, parents: tuple[str, ...] = tuple(t.DEPENDENT)) -> None:
        """Raise SnapshotInconsistent unless every EDS/RDS name referenced by CDS/LDS is present, and no extra."""
        for parent in parents:
            _check_pair(self.types, parent)

    @classmethod
    def from_specs(cls, specs: Mapping[str, Mapping[str, Spec]], view_version: int = 0) -> Snapshot:
        """Encode every resource (no reuse). For tests and tools; the control plane uses SnapshotBuilder."""
        types = {}
        for type_url in t.PUSH_ORDER:
            resources = {name: Resource.encode(type_url, name, spec) for name, spec in specs.get(type_url, {}).items()}
            types[type_url] = TypeSnapshot(_type_version(resources), MappingProxyType(resources))
        return cls(types=MappingProxyType(types), view_version=view_version)


Memo = dict[str, dict[str, tuple[Any, Resource]]]  # type URL -> name -> (key, encoded resource)


def _encode_plan(plan: Plan, memo: Memo) -> dict[str, TypeSnapshot]:
    """Encode what `plan` holds, reusing from `memo` every resource whose key did not change; updates `memo`."""
    types = {}
    for type_url, items in plan.items():
        old = memo.get(type_url, {})
        new: dict[str, tuple[Any, Resource]] = {}
        for name, (key, build) in items.items():
            previous = old.get(name)
            if previous is not None and previous[0] == key:
                new[name] = previous
            else:
                new[name] = (key, Resource.encode(type_url, name, build()))
        memo[type_url] = new
        resources = {name: resource for name, (_key, resource) in new.items()}
        types[type_url] = TypeSnapshot(_type_version(resources), MappingProxyType(resources))
    return types


@dataclass
class SnapshotBuilder:
    """View -> Snapshot, re-encoding only resources whose inputs changed since the last build.

    A view with the same config and keys objects as the last one built differs only in health (the ViewStore keeps
    every unchanged backend's status object): then only the assignments of backends whose status object
    changed are planned again, and every other type is the last snapshot's. A thousand first verdicts at
    start-up are then a thousand small builds, not a thousand full ones."""

    _memo: Memo = field(default_factory=dict)
    _last: tuple[View, Snapshot] | None = None
    _by_name: tuple[Any, dict[str, Any]] | None = None  # (config, backend name -> BackendConfig)
    _profiles: OrderedDict[NodeProfile, Memo] = field(default_factory=OrderedDict)
    _listeners: dict[NodeProfile, tuple[Any, dict[str, TypeSnapshot]]] = field(default_factory=dict)
    _subsets: dict[tuple[bool, bool], tuple[Mapping[str, TypeSnapshot], dict[str, TypeSnapshot]]] = field(
        default_factory=dict
    )

    @property
    def profiles_kept(self) -> int:
        """Node profiles whose encoded listeners are kept (at most MAX_PROFILES)."""
        return len(self._profiles)

    def build(self, view: View) -> Snapshot:
        """The default profile's snapshot: every cluster, both listeners on the config's ports."""
        if self._last is not None and self._last[0].config is view.config and self._last[0].keys is view.keys:
            snapshot = self._health_only(view, *self._last)
        else:
            snapshot = Snapshot(
                types=MappingProxyType(_encode_plan(plan_resources(view), self._memo)), view_version=view.version
            )
            snapshot.check()
        self._last = (view, snapshot)
        return snapshot

    def _health_only(self, view: View, last_view: View, last: Snapshot) -> Snapshot:
        """`last` with the assignments of every backend whose status object changed planned again."""
        changed = [name for name, status in view.backends.items() if last_view.backends.get(name) is not status]
        memo = self._memo.setdefault(t.ENDPOINT, {})
        resources = dict(last.resources(t.ENDPOINT))
        backends = self._backends_by_name(view)
        for name in changed:
            backend = backends.get(name)
            if backend is None:
                continue
            key, build = plan_assignment(backend, view.backends[name])
            previous = memo.get(name)
            if previous is None or previous[0] != key:
                memo[name] = (key, Resource.encode(t.ENDPOINT, name, build()))
            resources[name] = memo[name][1]
        types = dict(last.types)
        types[t.ENDPOINT] = TypeSnapshot(_type_version(resources), MappingProxyType(resources))
        return Snapshot(types=MappingProxyType(types), view_version=view.version)  # same names: still consistent

    def _backends_by_name(self, view: View) -> dict[str, Any]:
        if self._by_name is None or self._by_name[0] is not view.config:
            self._by_name = (view.config, {b.name: b for b in view.config.backends})
        return self._by_name[1]

    def build_for(self, view: View, base: Snapshot, profile: NodeProfile) -> Snapshot:
        """The snapshot of a node of `profile`, from `base` (the default profile's, built from `view`):
        the clusters and assignments its role needs (the very objects of `base`) and its own listeners."""
        if profile == DEFAULT_PROFILE:
            return base
        types = dict(self._clusters_for(base, profile_clusters(view.config, profile)))
        memo = self._profiles.pop(profile, None) or {}
        self._profiles[profile] = memo  # most recently used last
        while len(self._profiles) > MAX_PROFILES:
            gone, _ = self._profiles.popitem(last=False)
            self._listeners.pop(gone, None)
        cached = self._listeners.get(profile)
        if cached is not None and cached[0][0] is view.config and cached[0][1] is view.keys:  # listeners: config, keys
            types.update(cached[1])
            return Snapshot(types=MappingProxyType(types), view_version=view.version)
        listeners = _encode_plan(plan_listeners(view, profile), memo)
        types.update(listeners)
        snapshot = Snapshot(types=MappingProxyType(types), view_version=view.version)
        snapshot.check((t.LISTENER,))  # CDS/EDS were checked with the subset
        self._listeners[profile] = ((view.config, view.keys), listeners)
        return snapshot

    def _clusters_for(self, base: Snapshot, wanted: tuple[bool, bool]) -> dict[str, TypeSnapshot]:
        """CDS and EDS of `base` keeping backend clusters and/or the aggregator's; kept while `base`'s are."""
        if wanted == (True, True):
            return {t.CLUSTER: base.types[t.CLUSTER], t.ENDPOINT: base.types[t.ENDPOINT]}
        cached = self._subsets.get(wanted)
        if cached is not None and all(cached[0][k] is base.types[k] for k in (t.CLUSTER, t.ENDPOINT)):
            return cached[1]
        backends, aggregator = wanted
        clusters = {
            n: r
            for n, r in base.resources(t.CLUSTER).items()
            if (n == t.AGGREGATOR_CLUSTER and aggregator) or (n != t.AGGREGATOR_CLUSTER and backends)
        }
        assignments = dict(base.resources(t.ENDPOINT)) if backends else {}
        subset = {
            t.CLUSTER: TypeSnapshot(_type_version(clusters), MappingProxyType(clusters)),
            t.ENDPOINT: TypeSnapshot(_type_version(assignments), MappingProxyType(assignments)),
        }
        _check_pair(subset, t.CLUSTER)
        self._subsets[wanted] = ({k: base.types[k] for k in (t.CLUSTER, t.ENDPOINT)}, subset)
        return subset


Compose = Callable[[NodeProfile], Snapshot]


class SnapshotCache:
    """The snapshot being served, per node profile, and the streams to tell when it changes.

    `current` is the default profile's snapshot; `snapshot_for(profile)` the one a
    node of that profile gets, made by the `compose` function given with the
    snapshot (none: every node gets `current`) at most once per profile and
    snapshot. Locking rule: owned by one event loop; `set` never awaits.
    """

    def __init__(self) -> None:
        self._snapshot: Snapshot | None = None
        self._compose: Compose | None = None
        self._per_profile: dict[NodeProfile, Snapshot] = {}
        self._subscribers: set[asyncio.Queue[Any]] = set()

    @property
    def current(self) -> Snapshot | None:
        return self._snapshot

    def snapshot_for(self, profile: NodeProfile) -> Snapshot | None:
        if self._snapshot is None or self._compose is None or profile == DEFAULT_PROFILE:
            return self._snapshot
        found = self._per_profile.get(profile)
        if found is None:
            if len(self._per_profile) >= MAX_PROFILES:  # nodes with ever new profiles: bounded, recomposed on demand
                self._per_profile.clear()
            found = self._per_profile[profile] = self._compose(profile)
        return found

    def set(self, snapshot: Snapshot, compose: Compose | None = None) -> None:
        """Serve `snapshot` from now on (after checking it) and notify every stream."""
        snapshot.check()
        self._snapshot = snapshot
        self._compose = compose
        self._per_profile = {}
        for queue in list(self._subscribers):
            queue.put_nowait(SNAPSHOT_CHANGED)

    def subscribe(self, queue: asyncio.Queue[Any]) -> None:
        self._subscribers.add(queue)

    def unsubscribe(self, queue: asyncio.Queue[Any]) -> None:
        self._subscribers.discard(queue)


SNAPSHOT_CHANGED = object()
"""Put on a subscribed stream's queue by `SnapshotCache.set`."""
