"""A 2026-07-28 backend's list changes, heard as they happen: one `subscriptions/listen` stream per backend.

At 2026-07-28 a server announces `notifications/{tools,prompts,resources}/list_changed`
only on the `subscriptions/listen` streams its clients open (there is no
session). `ListenWatch` keeps one such stream open to each routable modern
backend (a plain POST on the backend's `BackendHttp`, its event stream read by
xds_control/sse.py, each event within the response bound) and calls
`on_change()` for each list change, so the aggregator can have the backend's
catalog refreshed at once instead of at the next scheduled catalog probe.

A stream that ends or fails is opened again after a delay that doubles from
`RETRY_MIN` to `RETRY_MAX` (back to the minimum once a stream was
acknowledged). Changes while no stream is open are left to the control
plane's scheduled catalog refresh: a listen stream replays nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from xds_control.aggregator.backend_http import BackendHttp, Streamed
from xds_control.aggregator.modern_request import envelope
from xds_control.aggregator.upstream_answers import EdgeFailure
from xds_control.sse import SseDecoder, events_of

log = logging.getLogger(__name__)

RETRY_MIN = 1.0
RETRY_MAX = 30.0
LIST_CHANGED = frozenset(
    {"notifications/tools/list_changed", "notifications/prompts/list_changed", "notifications/resources/list_changed"}
)
_ACKNOWLEDGED = "notifications/subscriptions/acknowledged"
_FILTER = {"toolsListChanged": True, "promptsListChanged": True, "resourcesListChanged": True}
_ids = itertools.count(1)


async def listen_once(
    http: BackendHttp,
    url: str,
    version: str,
    on_change: Callable[[], Awaitable[None]],
    max_event_bytes: int,
    on_acknowledged: Callable[[], None] = lambda: None,
) -> None:
    """One listen stream, until the backend ends it; raises `ConnectionError` when it cannot be opened."""
    request_id = f"xds-listen-{next(_ids)}"
    body = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "subscriptions/listen",
        "params": {"notifications": _FILTER, "_meta": envelope(version)},
    }
    headers = {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": version,
        "mcp-method": "subscriptions/listen",
    }
    answer = await http.post(url, headers, json.dumps(body, separators=(",", ":")).encode())
    if isinstance(answer, EdgeFailure):
        raise ConnectionError(answer.category)
    if not isinstance(answer, Streamed):  # a JSON answer: the backend refused (or does not serve) listen
        raise ConnectionError("listen_refused")
    response = answer.response
    try:
        if not response.headers.get("content-type", "").lower().startswith("text/event-stream"):
            raise ConnectionError("listen_refused")
        async for events in events_of(response.chunks(None), SseDecoder(max_event_bytes)):
            for event in events:
                message = _message(event.data) if event.event == "message" else None
                method = message.get("method") if message is not None else None
                if method == _ACKNOWLEDGED:
                    on_acknowledged()
                elif method in LIST_CHANGED:
                    await on_change()
    finally:
        await response.aclose()


def _message(data: str) -> dict[str, Any] | None:
    try:
        message = json.loads(data)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


class ListenWatch:
    """Keeps one listen stream open to one modern backend while `run()` runs (cancel it to stop)."""

    def __init__(
        self,
        http: BackendHttp,
        url: str,
        version: Callable[[], str],
        on_change: Callable[[], Awaitable[None]],
        max_event_bytes: int,
    ) -> None:
        self.http = http
        self.url = url
        self.version = version
        self.on_change = on_change
        self.max_event_bytes = max_event_bytes
        self.acknowledged = asyncio.Event()  # a stream is open and acknowledged now
        self.streams = 0  # streams opened (tests, debugging)

    def _acknowledged(self) -> None:
        self.acknowledged.set()

    async def run(self) -> None:
        delay = RETRY_MIN
        while True:
            self.streams += 1
            try:
                await listen_once(
                    self.http, self.url, self.version(), self.on_change, self.max_event_bytes, self._acknowledged
                )
            except Exception as exc:
                log.debug(
                    "listen stream to a backend failed",
                    extra={"backend": self.http.backend, "error": type(exc).__name__},
                )
            if self.acknowledged.is_set():
                delay = RETRY_MIN
            self.acknowledged.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
