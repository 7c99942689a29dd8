"""Sending `list_changed` to every connected client of both families, when a merged list's hash changed.

The decision is `ChangeCoalescer` (pure); this is its shell. Legacy clients
hear `notifications/{tools,prompts,resources}/list_changed` on their session
(the standalone GET stream); modern clients through their
`subscriptions/listen` streams, fed by the SDK's subscription bus. Resources
and resource templates share one notification.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping

from mcp.server.session import ServerSession
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    PromptsListChanged,
    ResourcesListChanged,
    ServerEvent,
    ToolsListChanged,
)

from xds_control.aggregator import metrics
from xds_control.aggregator.catalog import Kind
from xds_control.aggregator.coalesce import ChangeCoalescer

log = logging.getLogger(__name__)

SEND_TIMEOUT = 5.0
_NOTIFICATION: Mapping[Kind, str] = {
    "tools": "tools",
    "prompts": "prompts",
    "resources": "resources",
    "resource_templates": "resources",
}
_EVENTS: Mapping[str, ServerEvent] = {
    "tools": ToolsListChanged(),
    "prompts": PromptsListChanged(),
    "resources": ResourcesListChanged(),
}


async def _notify_legacy(session: ServerSession, kind: str) -> bool:
    send = {
        "tools": session.send_tool_list_changed,
        "prompts": session.send_prompt_list_changed,
        "resources": session.send_resource_list_changed,
    }[kind]
    try:
        async with asyncio.timeout(SEND_TIMEOUT):
            await send()
    except Exception:
        return False
    return True


class ChangeNotifier:
    def __init__(
        self,
        coalescer: ChangeCoalescer,
        sessions: Callable[[], Iterable[ServerSession]],
        bus: InMemorySubscriptionBus,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.coalescer = coalescer
        self._sessions = sessions
        self._bus = bus
        self._clock = clock
        self._wake = asyncio.Event()
        self.sent: deque[frozenset[str]] = deque(maxlen=64)  # the kinds of the latest flushes (tests, debugging)

    def observe(self, hashes: Mapping[Kind, str]) -> None:
        self.coalescer.observe(hashes, self._clock())
        if self.coalescer.deadline is not None:
            self._wake.set()

    async def run(self) -> None:
        while True:
            deadline = self.coalescer.deadline
            if deadline is None:
                await self._wake.wait()
                self._wake.clear()
                continue
            delay = deadline - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            due = self.coalescer.flush(self._clock())
            if due:
                await self.send(frozenset(_NOTIFICATION[k] for k in due))

    async def send(self, kinds: frozenset[str]) -> None:
        self.sent.append(kinds)
        sessions = list(self._sessions())
        for kind in sorted(kinds):
            await self._bus.publish(_EVENTS[kind])
            metrics.LIST_CHANGED_SENT.labels(kind=kind, family="modern").inc()
            delivered = await asyncio.gather(*(_notify_legacy(s, kind) for s in sessions))
            metrics.LIST_CHANGED_SENT.labels(kind=kind, family="legacy").inc(sum(delivered))
        log.info("list_changed sent", extra={"kinds": ",".join(sorted(kinds)), "legacy_sessions": len(sessions)})
