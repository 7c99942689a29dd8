"""Cursor pagination over a merged list. Pure.

A cursor is opaque to clients: base64url of ``kind|hash|offset``. It is only
valid for the list it came from (same kind) and while that list is unchanged
(same content hash); otherwise the request fails with a clear error instead of
silently skipping or repeating items.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from xds_control.aggregator.catalog import MergedList

PAGE_SIZE = 100


class CursorError(ValueError):
    """A cursor that is malformed (`reason="invalid"`) or was issued for a list that has changed (`"stale"`)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


def encode_cursor(kind: str, list_hash: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}|{list_hash}|{offset}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, list_hash, offset = raw.split("|")
        value = int(offset)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise CursorError("invalid", "invalid cursor: pass back a nextCursor exactly as received") from None
    if value < 0:
        raise CursorError("invalid", "invalid cursor: pass back a nextCursor exactly as received")
    return kind, list_hash, value


def page(
    merged: MergedList, cursor: str | None, size: int = PAGE_SIZE
) -> tuple[tuple[Mapping[str, Any], ...], str | None]:
    """One page of `merged` starting at `cursor` (None: the first page) and the cursor of the next one."""
    offset = 0
    if cursor is not None:
        kind, list_hash, offset = decode_cursor(cursor)
        if kind != merged.kind:
            raise CursorError("invalid", f"invalid cursor: it belongs to the {kind} list, not {merged.kind}")
        if list_hash != merged.hash:
            raise CursorError(
                "stale", f"stale cursor: the {merged.kind} list changed since it was issued; list again from the start"
            )
        if offset > len(merged.items):
            raise CursorError("invalid", "invalid cursor: pass back a nextCursor exactly as received")
    end = offset + size
    items = merged.items[offset:end]
    return items, encode_cursor(merged.kind, merged.hash, end) if end < len(merged.items) else None
