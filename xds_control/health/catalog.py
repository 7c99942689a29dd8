"""Fetching a backend's catalog: every list its capabilities advertise, page by page.

Independent of the protocol family: it is given a `request(method, params)`
coroutine that returns the JSON-RPC `result` object (or raises ProbeError),
and the capabilities the backend advertised (initialize result or
server/discover result). Only advertised lists are fetched; `nextCursor` is
followed up to `MAX_PAGES` pages (a repeated cursor ends the walk), so a
backend that pages forever cannot stall the prober.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from xds_control.errors import ProbeError
from xds_control.health.classify import Category
from xds_control.view import Catalog

logger = logging.getLogger(__name__)

MAX_PAGES = 100

Request = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]

# (capability, method, result key, optional): optional lists tolerate "method not found".
LISTS: tuple[tuple[str, str, str, bool], ...] = (
    ("tools", "tools/list", "tools", False),
    ("resources", "resources/list", "resources", False),
    ("resources", "resources/templates/list", "resourceTemplates", True),
    ("prompts", "prompts/list", "prompts", False),
)


async def fetch_list(request: Request, method: str, key: str) -> list[Mapping[str, Any]]:
    items: list[Mapping[str, Any]] = []
    cursor: str | None = None
    seen: set[str] = set()
    for _ in range(MAX_PAGES):
        result = await request(method, {"cursor": cursor} if cursor is not None else {})
        page = result.get(key)
        if not isinstance(page, list) or not all(isinstance(item, dict) for item in page):
            raise ProbeError(Category.PROTOCOL_ERROR, f"{method} result has no list of objects")
        items.extend(page)
        next_cursor = result.get("nextCursor")
        if next_cursor is None or next_cursor == "":
            return items
        if not isinstance(next_cursor, str) or next_cursor in seen:
            raise ProbeError(Category.PROTOCOL_ERROR, f"{method} returned an invalid or repeated cursor")
        seen.add(next_cursor)
        cursor = next_cursor
    logger.warning("catalog list truncated at the page cap", extra={"method": method, "pages": MAX_PAGES})
    return items


async def fetch_catalog(request: Request, capabilities: Mapping[str, Any], protocol_version: str) -> Catalog:
    lists: dict[str, list[Mapping[str, Any]]] = {}
    for capability, method, key, optional in LISTS:
        if capabilities.get(capability) is None:
            continue
        try:
            lists[key] = await fetch_list(request, method, key)
        except ProbeError as exc:
            if optional and exc.category in (Category.JSONRPC_ERROR, Category.HTTP_4XX):
                continue
            raise
    return Catalog.build(
        tools=lists.get("tools", ()),
        resources=lists.get("resources", ()),
        resource_templates=lists.get("resourceTemplates", ()),
        prompts=lists.get("prompts", ()),
        protocol_version=protocol_version,
        capabilities=capabilities,
    )


def advertised_list_changes(capabilities: Mapping[str, Any]) -> dict[str, bool]:
    """Which lists the backend promises change notifications for: {"tools": True, ...}."""
    found = {}
    for capability in ("tools", "resources", "prompts"):
        entry = capabilities.get(capability)
        if isinstance(entry, Mapping) and entry.get("listChanged") is True:
            found[capability] = True
    return found
