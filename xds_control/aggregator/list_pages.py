"""Serialized list pages of one merged catalog: the memo every list answer is served from.

Each `MergedCatalog` (catalog.py) carries its own `ListPages`, made with it
and never shared, so a view change, which makes a new catalog object, starts
from an empty memo: nothing is ever invalidated by hand. A page is kept as
the JSON bytes of its `result`, shaped for one protocol version by the SDK's
own pass (sdk_compat.Shaper), under

    (audience, method, version, page size, cursor)

`audience` says whose view of the catalog the page is: `EVERYONE` today. A
per-principal filter keys its pages by the principal's grant set (any
hashable value) and they are kept side by side, each bounded like the rest.
Only answers are kept, never errors. The bytes kept are bounded
(`max_bytes`); beyond that the least recently used pages go first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

EVERYONE: Hashable = None  # the audience of an unfiltered page
DEFAULT_MAX_BYTES = 16 * 1024 * 1024

PageKey = tuple[Hashable, str, str, int, str | None]


class ListPages:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._pages: OrderedDict[PageKey, bytes] = OrderedDict()
        self._bytes = 0
        self.hits = 0

    def get(self, key: PageKey) -> bytes | None:
        page = self._pages.get(key)
        if page is not None:
            self._pages.move_to_end(key)
            self.hits += 1
        return page

    def keep(self, key: PageKey, page: bytes) -> None:
        if key in self._pages or len(page) > self.max_bytes:
            return
        self._pages[key] = page
        self._bytes += len(page)
        while self._bytes > self.max_bytes:
            self._bytes -= len(self._pages.popitem(last=False)[1])

    def __len__(self) -> int:
        return len(self._pages)
