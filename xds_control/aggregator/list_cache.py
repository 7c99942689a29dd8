"""Wire-ready list pages, kept until the merged catalog changes.

A `tools/list` page of 100 merged tools cost the aggregator 1.8-3.7 ms of CPU
per request (bench/aggregator/tools_list.py), nearly all of it the SDK's
per-version sieve of the result (pydantic validation and dump of every item).
The answer depends only on the merged catalog, the method, the protocol
version and the cursor, and every client lists on connect and again after each
`list_changed` (all of them at once), so the sieved result is kept per
(method, version, cursor) for the current `MergedCatalog` object and served by
a server middleware that does not call on: the SDK's documented way for a
middleware to own a result (`mcp.server.runner`). A new catalog object (every
view change makes one) empties the cache.

What the SDK's handler path still decides is kept: the request's params are
validated as the SDK does (`mcp_types.methods.validate_client_request`); a
request on a legacy connection that has not completed `initialize` goes the
whole way (the SDK's gate answers it); errors (a stale cursor, the `fail`
failure mode) are never kept. At most `max_pages` pages are kept (least
recently used out): with 100 items a page that bounds the memory to a few MB.
Plain modern list requests are mostly answered before the SDK, from the JSON
of its answers (list_answers.py); this cache serves legacy sessions and the
modern requests the fast path leaves to the SDK.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp_types import methods as mcp_methods
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

LIST_METHODS = frozenset({"tools/list", "resources/list", "resources/templates/list", "prompts/list"})
DEFAULT_MAX_PAGES = 32


class KeptPages:
    """List pages (any value: a result dict, its JSON bytes) per (method, version, cursor), for one catalog object
    at a time (a different object empties them), at most `max_pages` and, for bytes pages, `max_bytes` in all
    (least recently used out)."""

    def __init__(self, max_pages: int = DEFAULT_MAX_PAGES, *, max_bytes: int | None = None) -> None:
        self.max_pages = max_pages
        self.max_bytes = max_bytes
        self._for: object = None
        self._pages: OrderedDict[tuple[str, str, str | None], Any] = OrderedDict()
        self._bytes = 0
        self.hits = 0

    def get(self, catalog: object, key: tuple[str, str, str | None]) -> Any:
        if catalog is not self._for:
            self._pages.clear()
            self._bytes = 0
            self._for = catalog
        page = self._pages.get(key)
        if page is not None:
            self._pages.move_to_end(key)
            self.hits += 1
        return page

    def keep(self, catalog: object, key: tuple[str, str, str | None], page: Any) -> None:
        """Keep `page`, made from `catalog`, if that is still the catalog the pages are for."""
        if catalog is not self._for or key in self._pages:
            return
        self._pages[key] = page
        self._bytes += self._size(page)
        while len(self._pages) > self.max_pages or (self.max_bytes is not None and self._bytes > self.max_bytes):
            self._bytes -= self._size(self._pages.popitem(last=False)[1])

    def _size(self, page: Any) -> int:
        return len(page) if self.max_bytes is not None else 0

    def __len__(self) -> int:
        return len(self._pages)


class ListPageCache:
    """A server middleware; see the module docstring. `catalog()` returns the current merged catalog object."""

    def __init__(self, catalog: Callable[[], object], *, max_pages: int = DEFAULT_MAX_PAGES) -> None:
        self._catalog = catalog
        self.pages = KeptPages(max_pages)

    @property
    def hits(self) -> int:
        return self.pages.hits

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        method, params, version = ctx.method, ctx.params, ctx.protocol_version
        if method not in LIST_METHODS:
            return await call_next(ctx)
        cursor = params.get("cursor") if isinstance(params, Mapping) else None
        initialized = version in MODERN_PROTOCOL_VERSIONS or ctx.session.client_params is not None
        if not initialized or not (cursor is None or isinstance(cursor, str)):
            return await call_next(ctx)
        catalog = self._catalog()
        key = (method, version, cursor)
        page = self.pages.get(catalog, key)
        if page is not None:
            mcp_methods.validate_client_request(method, version, params)  # what the SDK checks before its handler
            return page
        result = await call_next(ctx)
        if isinstance(result, dict):
            self.pages.keep(catalog, key, result)
        return result
