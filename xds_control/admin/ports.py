"""What the admin service needs from other parts, as two narrow protocols.

The admin service serves the `ViewStore` itself; for the rest it depends only
on these, so it imports neither `health` nor `xds`:

* `HealthControl` — implemented by the health monitor: probe a backend now,
  reset its breaker, and take the aggregator's data-path outcomes into account.
* `NodeDirectory` — implemented by the ADS server: the Envoy nodes connected
  now and what each has ACKed or NACKed, per type URL.

Either may be absent (`None`) when the server runs without that part: the
calls that need it answer UNIMPLEMENTED, and `ListNodes` answers no nodes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from xds_control.view import BackendStatus


@runtime_checkable
class HealthControl(Protocol):
    """Manual control of the health monitor. Every method takes a configured backend name.

    A name the monitor does not know (a reload removed it between the
    service's check and the call) raises `KeyError`. Any other exception is
    reported to the caller as INTERNAL without its text.
    """

    async def probe_now(self, name: str) -> BackendStatus:
        """Probe `name` at once (all its endpoints) and return its status after the verdict."""
        ...

    async def reset_breaker(self, name: str) -> BackendStatus:
        """Close `name`'s breaker and clear its consecutive failures; return the new status."""
        ...

    async def record_outcomes(self, name: str, successes: int, failures: int, category: str | None) -> None:
        """Count data-path call outcomes (from the aggregator) toward `name`'s breaker.

        `category` is the sanitized category of the most recent failure
        (`[a-z0-9_]{1,64}`), or None when `failures` is 0.
        """
        ...


@dataclass(frozen=True)
class TypeStatus:
    """One node's xDS state for one type URL. Empty strings mean "none yet"."""

    acked_version: str = ""
    nacked_version: str = ""  # the last version the node NACKed
    nack_detail: str = ""  # Envoy's error_detail for that NACK


@dataclass(frozen=True)
class NodeInfo:
    """One connected Envoy node."""

    node_id: str
    cluster: str = ""
    connected_since: float = 0.0  # unix seconds
    types: Mapping[str, TypeStatus] = field(default_factory=dict)  # by type URL
    role: str = ""  # its profile: role and own listener ports ("all", "edge listener=10010")


class TypeStatusView(Protocol):
    """What the admin API reads of a node's state for one type URL (`TypeStatus`, or the ADS server's own)."""

    @property
    def acked_version(self) -> str: ...
    @property
    def nacked_version(self) -> str: ...
    @property
    def nack_detail(self) -> str: ...


class NodeView(Protocol):
    """What the admin API reads of a connected node (`NodeInfo`, or the ADS server's own record)."""

    @property
    def node_id(self) -> str: ...
    @property
    def cluster(self) -> str: ...
    @property
    def connected_since(self) -> float: ...
    @property
    def types(self) -> Mapping[str, TypeStatusView]: ...


@runtime_checkable
class NodeDirectory(Protocol):
    """The Envoy nodes connected over ADS right now."""

    def nodes(self) -> Sequence[NodeView]:
        """A snapshot; called on the event loop, must not block."""
        ...
