"""Snapshots: immutable, consistency-checked sets of encoded resources, one version per type.

A `Snapshot` is a value. `SnapshotBuilder` turns a view into one, reusing the
encoding of every resource whose inputs did not change (so a health flip
re-encodes one ClusterLoadAssignment). A type's version is a hash of its
resources' hashes: it changes exactly when something of that type changed, and
is the same across control-plane restarts for the same config and health.
`SnapshotCache` holds the current snapshot and tells subscribed streams when it
changes (delivery is the ADS server's business).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from xds_control.errors import SnapshotInconsistent
from xds_control.view import View
from xds_control.xds import typeurls as t
from xds_control.xds.encode import any_field, encode_message
from xds_control.xds.resources import Spec, plan_resources


@dataclass(frozen=True)
class Resource:
    """One encoded resource: its message bytes, the `Any` field ready to frame, and what it references."""

    name: str
    hash: str
    message: bytes
    field: bytes
    refs: tuple[str, ...] = ()  # EDS names a cluster needs, RDS names a listener needs

    @classmethod
    def encode(cls, type_url: str, name: str, spec: Spec) -> Resource:
        message = encode_message(type_url, spec)
        return cls(
            name=name,
            hash=hashlib.sha256(message).hexdigest()[:16],
            message=message,
            field=any_field(type_url, message),
            refs=_refs(type_url, spec),
        )


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

    def check(self) -> None:
        """Raise SnapshotInconsistent unless every EDS/RDS name referenced by CDS/LDS is present, and no extra."""
        for parent, child in t.DEPENDENT.items():
            wanted = {ref for r in self.resources(parent).values() for ref in r.refs}
            have = set(self.resources(child))
            missing, extra = wanted - have, have - wanted
            if missing or extra:
                raise SnapshotInconsistent(
                    f"{t.SHORT[child]} does not match {t.SHORT[parent]}: missing {sorted(missing)}, unreferenced {sorted(extra)}"
                )

    @classmethod
    def from_specs(cls, specs: Mapping[str, Mapping[str, Spec]], view_version: int = 0) -> Snapshot:
        """Encode every resource (no reuse). For tests and tools; the control plane uses SnapshotBuilder."""
        types = {}
        for type_url in t.PUSH_ORDER:
            resources = {name: Resource.encode(type_url, name, spec) for name, spec in specs.get(type_url, {}).items()}
            types[type_url] = TypeSnapshot(_type_version(resources), MappingProxyType(resources))
        return cls(types=MappingProxyType(types), view_version=view_version)


@dataclass
class SnapshotBuilder:
    """View -> Snapshot, re-encoding only resources whose inputs changed since the last build."""

    _memo: dict[str, dict[str, tuple[Any, Resource]]] = field(default_factory=dict)

    def build(self, view: View) -> Snapshot:
        types = {}
        for type_url, items in plan_resources(view).items():
            old = self._memo.get(type_url, {})
            new: dict[str, tuple[Any, Resource]] = {}
            for name, (key, build) in items.items():
                previous = old.get(name)
                if previous is not None and previous[0] == key:
                    new[name] = previous
                else:
                    new[name] = (key, Resource.encode(type_url, name, build()))
            self._memo[type_url] = new
            resources = {name: resource for name, (_key, resource) in new.items()}
            types[type_url] = TypeSnapshot(_type_version(resources), MappingProxyType(resources))
        snapshot = Snapshot(types=MappingProxyType(types), view_version=view.version)
        snapshot.check()
        return snapshot


class SnapshotCache:
    """The snapshot being served, and the streams to tell when it changes.

    All nodes get the same snapshot: nothing in it depends on the node. Locking
    rule: owned by one event loop; `set` never awaits.
    """

    def __init__(self) -> None:
        self._snapshot: Snapshot | None = None
        self._subscribers: set[asyncio.Queue[Any]] = set()

    @property
    def current(self) -> Snapshot | None:
        return self._snapshot

    def set(self, snapshot: Snapshot) -> None:
        """Serve `snapshot` from now on (after checking it) and notify every stream."""
        snapshot.check()
        self._snapshot = snapshot
        for queue in list(self._subscribers):
            queue.put_nowait(SNAPSHOT_CHANGED)

    def subscribe(self, queue: asyncio.Queue[Any]) -> None:
        self._subscribers.add(queue)

    def unsubscribe(self, queue: asyncio.Queue[Any]) -> None:
        self._subscribers.discard(queue)


SNAPSHOT_CHANGED = object()
"""Put on a subscribed stream's queue by `SnapshotCache.set`."""
