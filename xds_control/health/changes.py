"""Hearing a backend say "my list changed", so its catalog is refetched at once.

Only for backends that advertise `listChanged` on a list (tools, resources or
prompts) in their initialize / server/discover capabilities:

* modern: `POST subscriptions/listen` asking for exactly the advertised
  `*ListChanged` kinds; the response is an event stream whose first frame is
  `notifications/subscriptions/acknowledged` and whose later frames are the
  change notifications (tagged with the listen request's id).
* legacy: `GET` on the endpoint with the session's `Mcp-Session-Id`: the
  session's standalone event stream, on which the server sends
  `notifications/*/list_changed`. A 405 means the server offers no such
  stream (and a stateless server has no session to listen on).

Where neither works, the monitor's periodic refresh (`health.catalog_refresh`)
is what picks up changes. `listen()` returns when the stream ends, fails or is
unsupported; the monitor starts it again after the next successful probe.
Each event is bounded by `health.max_response_bytes`; the stream has no read
timeout (it is long-lived) and is dropped with the prober's client.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from xds_control.health.catalog import advertised_list_changes
from xds_control.health.probe import JSON_TYPE, SESSION_HEADER, EndpointProber, encode_message
from xds_control.health.wire import sse_messages

CHANGE_METHODS = frozenset(
    {"notifications/tools/list_changed", "notifications/resources/list_changed", "notifications/prompts/list_changed"}
)
_FILTER_KEYS = {"tools": "toolsListChanged", "resources": "resourcesListChanged", "prompts": "promptsListChanged"}


class ListenEnd(StrEnum):
    UNSUPPORTED = "unsupported"  # the backend offers no change stream (do not try again on this session)
    ENDED = "ended"  # the stream ended or failed (try again after the next good probe)


def can_listen(prober: EndpointProber) -> bool:
    if not advertised_list_changes(prober.capabilities):
        return False
    return prober.protocol == "modern" or (prober.protocol == "legacy" and prober.session_id is not None)


async def listen(
    prober: EndpointProber, on_change: Callable[[], None], *, on_open: Callable[[], None] | None = None
) -> ListenEnd:
    """Follow the backend's change stream, calling `on_change()` per list change, until it ends."""
    if not can_listen(prober):
        return ListenEnd.UNSUPPORTED
    auth = prober.backend.auth.header_value() if prober.backend.auth is not None else None
    if prober.protocol == "modern":
        kinds = {_FILTER_KEYS[k]: True for k in advertised_list_changes(prober.capabilities)}
        body = {
            "jsonrpc": "2.0",
            "id": "xds-control-listen",
            "method": "subscriptions/listen",
            "params": prober.params({"notifications": kinds}),
        }
        method, content = "POST", encode_message(body)
        headers = {**prober.headers("subscriptions/listen"), "content-type": JSON_TYPE}
    else:
        method, content = "GET", None
        headers = {**prober.headers(session=True), "accept": "text/event-stream"}
        if SESSION_HEADER not in headers:
            return ListenEnd.UNSUPPORTED
    try:
        async with prober.client.stream(
            method, prober.url, headers=_with_auth(headers, auth), content=content
        ) as response:
            if response.status_code in (400, 404, 405, 406, 501) or (
                200 <= response.status_code < 300
                and not response.headers.get("content-type", "").startswith("text/event-stream")
            ):
                return ListenEnd.UNSUPPORTED
            if response.status_code != 200:
                return ListenEnd.ENDED
            if on_open is not None:
                on_open()
            async for message in sse_messages(response, prober.health.max_response_bytes):
                if message.get("method") in CHANGE_METHODS:
                    on_change()
                elif "id" in message and "method" not in message:
                    break  # the listen request's final result: the server closed the subscription
            return ListenEnd.ENDED
    except Exception:
        return ListenEnd.ENDED


def _with_auth(headers: dict[str, str], auth: tuple[str, str] | None) -> dict[str, str]:
    if auth is not None:
        headers[auth[0]] = auth[1]
    return headers
