"""What one Envoy node gets: its role and its own listener ports, read from the node's metadata.

Many Envoys can share one control plane. Each says who it is in its bootstrap
(`xds-control bootstrap --node-id ID --role edge --listener-port P`), as node
metadata under the key `xds_control`:

    node:
      id: edge-1
      metadata:
        xds_control: {role: edge, listener_port: 10010}

and the control plane serves it the snapshot of that `NodeProfile`:

| role | listeners | clusters |
| --- | --- | --- |
| `all` (default) | public and egress | every backend, the aggregator |
| `edge` | public only | the aggregator (and every backend when `listener.expose_backends`) |
| `egress` | egress only | every backend |

A port absent from the metadata is the config's (`listener.port`, `egress.port`).
Metadata is a peer's input: only the known keys are read (map lookups, never a
walk over what the peer sent), each checked; a bad one is a `ValueError` naming
the key, with the value truncated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

METADATA_KEY = "xds_control"
_MAX_SHOWN = 40


class NodeRole(StrEnum):
    ALL = "all"
    EDGE = "edge"
    EGRESS = "egress"


@dataclass(frozen=True)
class NodeProfile:
    """The part of a node's identity that decides its snapshot. Equal profiles get the same snapshot."""

    role: NodeRole = NodeRole.ALL
    listener_port: int | None = None  # None: the config's listener.port
    egress_port: int | None = None  # None: the config's egress.port

    @property
    def public(self) -> bool:
        """Does this node serve the public listener?"""
        return self.role is not NodeRole.EGRESS

    @property
    def egress(self) -> bool:
        """Does this node serve the egress listener?"""
        return self.role is not NodeRole.EDGE

    def describe(self) -> str:
        ports = [f"{k}={v}" for k, v in (("listener", self.listener_port), ("egress", self.egress_port)) if v]
        return " ".join([str(self.role), *ports])

    def metadata(self) -> dict[str, Any]:
        """The node metadata (under `METADATA_KEY`) that selects this profile."""
        data: dict[str, Any] = {"role": str(self.role)}
        if self.listener_port is not None:
            data["listener_port"] = self.listener_port
        if self.egress_port is not None:
            data["egress_port"] = self.egress_port
        return data


DEFAULT_PROFILE = NodeProfile()


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


def _port(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ValueError(f"node metadata {METADATA_KEY}.{key} must be a port number (got {_shown(value)})")
    port = int(value)
    if not 1 <= port <= 65535:
        raise ValueError(f"node metadata {METADATA_KEY}.{key} must be from 1 to 65535 (got {port})")
    return port


def profile_from_fields(fields: Mapping[str, Any] | None) -> NodeProfile:
    """The profile from the plain values under `xds_control` in a node's metadata (None: the default)."""
    if fields is None:
        return DEFAULT_PROFILE
    role_value = fields.get("role", NodeRole.ALL.value)
    try:
        role = NodeRole(role_value)
    except ValueError:
        allowed = ", ".join(r.value for r in NodeRole)
        raise ValueError(
            f"node metadata {METADATA_KEY}.role must be one of {allowed} (got {_shown(role_value)})"
        ) from None
    listener = fields.get("listener_port")
    egress = fields.get("egress_port")
    return NodeProfile(
        role=role,
        listener_port=None if listener is None else _port(listener, "listener_port"),
        egress_port=None if egress is None else _port(egress, "egress_port"),
    )


_KEYS = ("role", "listener_port", "egress_port")


def profile_from_struct(metadata: Any) -> NodeProfile:
    """The profile from a node's metadata as a protobuf `Struct` (upb or any class with `.fields`)."""
    fields = getattr(metadata, "fields", None)
    if fields is None or METADATA_KEY not in fields:
        return DEFAULT_PROFILE
    entry = fields[METADATA_KEY]
    if entry.WhichOneof("kind") != "struct_value":
        raise ValueError(f"node metadata {METADATA_KEY} must be a mapping")
    inner = entry.struct_value.fields
    plain: dict[str, Any] = {}
    for key in _KEYS:
        if key in inner:
            value = inner[key]
            kind = value.WhichOneof("kind")
            plain[key] = {"string_value": value.string_value, "number_value": value.number_value}.get(
                kind or "", f"<{kind}>"
            )
    return profile_from_fields(plain)
