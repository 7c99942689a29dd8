"""Resource subscriptions: which client is subscribed to which exposed URI, and what that asks of backends.

Pure: no I/O, mutated only from the event loop. The shell (resource_updates.py)
carries out what each method returns.

A *subscriber* is a legacy client session (its `Mcp-Session-Id`) or one
2026-07-28 `subscriptions/listen` stream. A *target* is (backend, the URI as
that backend knows it). Invariants:

* Every target in the table has at least one subscriber: one upstream
  subscription per target, shared by all its subscribers. `subscribe`
  returns True exactly when the target is new (the shell subscribes
  upstream); `unsubscribe`/`drop_subscriber`/`drop_backend` return the
  targets left without subscribers (the shell unsubscribes upstream).
* A subscriber holds at most `max_per_subscriber` URIs, and the table at
  most `max_targets` targets: a subscription beyond either is refused
  (`SubscriptionLimit`) and changes nothing.
* Fan-out (`subscribers`) is a lookup of the target: O(subscribers of it);
  a backend's targets are indexed too (`targets`, `uris_of`).
* A subscriber's URI maps to one target; subscribing it again is a no-op
  (or a move, when the URI now routes to another backend).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from xds_control.errors import XdsControlError

DEFAULT_MAX_PER_SUBSCRIBER = 100
DEFAULT_MAX_TARGETS = 10_000


@dataclass(frozen=True, slots=True)
class Target:
    """One upstream subscription: `uri` as `backend` knows it."""

    backend: str
    uri: str


class SubscriptionLimit(XdsControlError):
    """A subscription over a bound (per subscriber, or targets in all)."""


class SubscriptionTable:
    def __init__(
        self, *, max_per_subscriber: int = DEFAULT_MAX_PER_SUBSCRIBER, max_targets: int = DEFAULT_MAX_TARGETS
    ) -> None:
        self.max_per_subscriber = max_per_subscriber
        self.max_targets = max_targets
        self._by_subscriber: dict[str, dict[str, Target]] = {}  # subscriber -> exposed URI -> target
        self._by_target: dict[Target, dict[str, str]] = {}  # target -> subscriber -> exposed URI
        self._by_backend: dict[str, dict[str, None]] = {}  # backend -> its targets' URIs, in subscription order
        self.subscribed_total = 0  # subscriptions made since the table began (the aggregator's collector reads it)

    def subscribe(self, subscriber: str, exposed: str, target: Target) -> tuple[bool, Target | None]:
        """Subscribe; returns (the target is new, a target this left without subscribers or None)."""
        held = self._by_subscriber.get(subscriber, {})
        previous = held.get(exposed)
        if previous == target:
            return False, None
        if previous is None and len(held) >= self.max_per_subscriber:
            raise SubscriptionLimit(f"at most {self.max_per_subscriber} resource subscriptions per session")
        new = target not in self._by_target
        if new and len(self._by_target) >= self.max_targets:
            raise SubscriptionLimit(f"the gateway holds at most {self.max_targets} resource subscriptions")
        orphan = self.unsubscribe(subscriber, exposed) if previous is not None else None
        self._by_subscriber.setdefault(subscriber, {})[exposed] = target
        self._by_target.setdefault(target, {})[subscriber] = exposed
        self._by_backend.setdefault(target.backend, {})[target.uri] = None
        self.subscribed_total += 1
        return new, orphan

    def unsubscribe(self, subscriber: str, exposed: str) -> Target | None:
        """Unsubscribe (unknown: nothing); returns the target when it has no subscriber left."""
        held = self._by_subscriber.get(subscriber)
        target = held.pop(exposed, None) if held is not None else None
        if held is not None and not held:
            del self._by_subscriber[subscriber]
        if target is None:
            return None
        subscribers = self._by_target[target]
        subscribers.pop(subscriber, None)
        if subscribers:
            return None
        del self._by_target[target]
        self._forget_target(target)
        return target

    def _forget_target(self, target: Target) -> None:
        uris = self._by_backend[target.backend]
        del uris[target.uri]
        if not uris:
            del self._by_backend[target.backend]

    def drop_subscriber(self, subscriber: str) -> list[Target]:
        """The subscriber is gone (session ended, stream closed); returns the targets left without subscribers."""
        orphans = []
        for exposed in list(self._by_subscriber.get(subscriber, ())):
            if (orphan := self.unsubscribe(subscriber, exposed)) is not None:
                orphans.append(orphan)
        return orphans

    def drop_backend(self, backend: str) -> list[Target]:
        """The backend is gone: every subscription to it ends; returns its targets."""
        targets = self.targets(backend)
        for target in targets:
            self._forget_target(target)
            for subscriber, exposed in self._by_target.pop(target).items():
                held = self._by_subscriber[subscriber]
                del held[exposed]
                if not held:
                    del self._by_subscriber[subscriber]
        return targets

    def subscribers(self, target: Target) -> list[tuple[str, str]]:
        """(subscriber, exposed URI) of every subscriber of the target."""
        return list(self._by_target.get(target, {}).items())

    def targets(self, backend: str) -> list[Target]:
        return [Target(backend, uri) for uri in self._by_backend.get(backend, ())]

    def uris_of(self, backend: str) -> set[str]:
        """The URIs of the backend's targets: O(its targets)."""
        return set(self._by_backend.get(backend, ()))

    def backends(self) -> set[str]:
        return set(self._by_backend)

    def uris(self, subscriber: str) -> dict[str, Target]:
        return dict(self._by_subscriber.get(subscriber, {}))

    def has(self, target: Target) -> bool:
        return target in self._by_target

    def subscriber_count(self) -> int:
        return len(self._by_subscriber)

    def __len__(self) -> int:
        return len(self._by_target)

    def known(self, subscribers: Iterable[str]) -> list[str]:
        return [s for s in subscribers if s in self._by_subscriber]
