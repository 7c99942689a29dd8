"""Fetching a backend's catalog: every list its capabilities advertise, page by page, within bounds.

Independent of the protocol family: it is given a `request(method, params)`
coroutine that returns the JSON-RPC `result` object (or raises ProbeError),
and the capabilities the backend advertised (initialize result or
server/discover result). Only advertised lists are fetched.

A backend's answers are untrusted. Across all lists and pages a catalog is
bounded (`CatalogBudget`, from `health.max_catalog_bytes`, `_items`, `_pages`):
its JSON size (what the admin API sends: the kept items and the capabilities,
encoded as `xds_control.admin.convert` encodes them), the items received, and
the pages fetched. Past any bound the fetch fails with `catalog_too_large`, and
the monitor keeps the backend's last good catalog. A repeated cursor is a
protocol error. `screen` drops, per item, what no client should see: a tool or
prompt whose name breaks MCP's tool-name rule (1-128 of `A-Z a-z 0-9 _ - .`,
the 2025-11-25 specification's), a resource or template whose URI or name is
empty, too long or holds control or bidi characters; a description or title
longer than `MAX_TEXT_CHARS` is cut. Each dropped item is counted
(`xds_control_catalog_items_dropped_total`) and each fetch that dropped any is
one warning naming the first, escaped.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from xds_control.config import HealthConfig
from xds_control.errors import ProbeError
from xds_control.health.classify import Category
from xds_control.sanitize import has_unsafe, preview
from xds_control.view import Catalog

logger = logging.getLogger(__name__)

TOOL_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")  # MCP 2025-11-25, server/tools "Tool names"
MAX_URI_CHARS = 2048
MAX_RESOURCE_NAME_CHARS = 256
MAX_TEXT_CHARS = 16 * 1024  # an item's description or title as stored
TEXT_FIELDS = ("description", "title")

Request = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]

# (capability, method, result key, optional): optional lists tolerate "method not found".
LISTS: tuple[tuple[str, str, str, bool], ...] = (
    ("tools", "tools/list", "tools", False),
    ("resources", "resources/list", "resources", False),
    ("resources", "resources/templates/list", "resourceTemplates", True),
    ("prompts", "prompts/list", "prompts", False),
)


def encoded_size(value: Any) -> int:
    """Characters of `value` as the admin API encodes a catalog (compact JSON, ASCII escapes)."""
    return len(json.dumps(value, separators=(",", ":"), default=str))


@dataclass
class CatalogBudget:
    """What one catalog fetch may still take, across every list and page."""

    max_bytes: int
    max_items: int
    max_pages: int
    bytes: int = 0
    items: int = 0
    pages: int = 0
    dropped: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (kind, reason) -> names

    @classmethod
    def of(cls, health: HealthConfig) -> CatalogBudget:
        return cls(health.max_catalog_bytes, health.max_catalog_items, health.max_catalog_pages)

    def page(self, method: str) -> None:
        self.pages += 1
        if self.pages > self.max_pages:
            raise ProbeError(Category.CATALOG_TOO_LARGE, f"{method}: more than {self.max_pages} pages in the catalog")

    def take(self, items: int, size: int) -> None:
        self.items += items
        self.bytes += size
        if self.items > self.max_items:
            raise ProbeError(Category.CATALOG_TOO_LARGE, f"more than {self.max_items} items in the catalog")
        if self.bytes > self.max_bytes:
            raise ProbeError(Category.CATALOG_TOO_LARGE, f"catalog larger than {self.max_bytes} bytes")


def _drop_reason(kind: str, item: Mapping[str, Any]) -> str | None:
    """Why `item` of list `kind` must not reach a client, or None."""
    if kind in ("tools", "prompts"):
        name = item.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            return "unsafe_characters" if isinstance(name, str) and has_unsafe(name) else "invalid_name"
        return None
    key = "uri" if kind == "resources" else "uriTemplate"
    uri, name = item.get(key), item.get("name")
    if not isinstance(uri, str) or not uri or len(uri) > MAX_URI_CHARS or any(c.isspace() for c in uri):
        return "unsafe_characters" if isinstance(uri, str) and has_unsafe(uri) else "invalid_name"
    if has_unsafe(uri):
        return "unsafe_characters"
    if name is not None and (not isinstance(name, str) or len(name) > MAX_RESOURCE_NAME_CHARS or has_unsafe(name)):
        return "unsafe_characters" if isinstance(name, str) and has_unsafe(name) else "invalid_name"
    return None


def _bounded_text(item: Mapping[str, Any]) -> Mapping[str, Any]:
    long = [k for k in TEXT_FIELDS if isinstance(item.get(k), str) and len(item[k]) > MAX_TEXT_CHARS]
    if not long:
        return item
    return {**item, **{k: item[k][:MAX_TEXT_CHARS] for k in long}}


def screen(kind: str, page: list[Mapping[str, Any]], budget: CatalogBudget) -> list[Mapping[str, Any]]:
    """The items of `page` a client may see (see the module docstring); the budget takes them all."""
    kept: list[Mapping[str, Any]] = []
    for item in page:
        reason = _drop_reason(kind, item)
        if reason is None:
            kept.append(_bounded_text(item))
        else:
            budget.dropped.setdefault((kind, reason), []).append(preview(item.get("name", item.get("uri", "")), 80))
    budget.take(len(page), sum(encoded_size(item) + 1 for item in kept))
    return kept


async def fetch_list(request: Request, method: str, key: str, budget: CatalogBudget) -> list[Mapping[str, Any]]:
    items: list[Mapping[str, Any]] = []
    cursor: str | None = None
    seen: set[str] = set()
    while True:
        budget.page(method)
        result = await request(method, {"cursor": cursor} if cursor is not None else {})
        page = result.get(key)
        if not isinstance(page, list) or not all(isinstance(item, dict) for item in page):
            raise ProbeError(Category.PROTOCOL_ERROR, f"{method} result has no list of objects")
        items.extend(screen(key, page, budget))
        next_cursor = result.get("nextCursor")
        if next_cursor is None or next_cursor == "":
            return items
        if not isinstance(next_cursor, str) or next_cursor in seen:
            raise ProbeError(Category.PROTOCOL_ERROR, f"{method} returned an invalid or repeated cursor")
        seen.add(next_cursor)
        cursor = next_cursor


async def fetch_catalog(
    request: Request,
    capabilities: Mapping[str, Any],
    protocol_version: str,
    health: HealthConfig | None = None,
    *,
    backend: str = "",
) -> Catalog:
    budget = CatalogBudget.of(health or HealthConfig())
    budget.take(0, encoded_size(capabilities) + 200)  # the capabilities travel with the catalog
    lists: dict[str, list[Mapping[str, Any]]] = {}
    for capability, method, key, optional in LISTS:
        if capabilities.get(capability) is None:
            continue
        try:
            lists[key] = await fetch_list(request, method, key, budget)
        except ProbeError as exc:
            if optional and exc.category in (Category.JSONRPC_ERROR, Category.HTTP_4XX):
                continue
            raise
    _report_dropped(backend, budget)
    return Catalog.build(
        tools=lists.get("tools", ()),
        resources=lists.get("resources", ()),
        resource_templates=lists.get("resourceTemplates", ()),
        prompts=lists.get("prompts", ()),
        protocol_version=protocol_version,
        capabilities=capabilities,
    )


def _report_dropped(backend: str, budget: CatalogBudget) -> None:
    if not budget.dropped:
        return
    from xds_control.health import metrics  # (metrics imports this package's classify; no cycle at import time)

    for (kind, reason), names in budget.dropped.items():
        metrics.catalog_dropped(backend, kind, reason, len(names))
    total = sum(len(names) for names in budget.dropped.values())
    (kind, reason), names = next(iter(budget.dropped.items()))
    logger.warning(
        "backend %s: %d catalog items left out (first: %s '%s', %s)",
        backend,
        total,
        kind,
        names[0],
        reason,
        extra={"event": "catalog_items_dropped", "backend": backend, "count": total},
    )


def advertised_list_changes(capabilities: Mapping[str, Any]) -> dict[str, bool]:
    """Which lists the backend promises change notifications for: {"tools": True, ...}."""
    found = {}
    for capability in ("tools", "resources", "prompts"):
        entry = capabilities.get(capability)
        if isinstance(entry, Mapping) and entry.get("listChanged") is True:
            found[capability] = True
    return found
