"""Strings a peer sent, made safe to store, log and show: escaped and truncated.

A leaf (it imports nothing of xds_control). Everything a peer controls (an
Envoy's node id or NACK detail, a backend's names, a config value echoed in an
error) goes through `preview` before it reaches a log line, the admin API or an
error message:

* control characters (C0, DEL, C1), the Unicode bidi controls (U+202A-U+202E,
  U+2066-U+2069, U+200E/U+200F, U+061C) and the line/paragraph separators are
  written as `\\xNN` / `\\uNNNN` escapes, so a value can neither break a log line
  in two, drive a terminal, nor reorder what a reader sees;
* the result is at most `limit` characters of the original plus a marker
  saying how many were left out.

The work is O(limit) whatever the input's length: only the kept prefix is scanned.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls, bidi embeddings/overrides/isolates and marks, line/paragraph separators.
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
DEFAULT_LIMIT = 200


def has_unsafe(text: str) -> bool:
    """True when `text` holds a character `preview` would escape (control, bidi, separator)."""
    return UNSAFE.search(text) is not None


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """Every unsafe character of `text` as an escape (no truncation: bound the input first)."""
    return UNSAFE.sub(_escape, text)


def preview(value: object, limit: int = DEFAULT_LIMIT) -> str:
    """`value` as text, escaped, cut to `limit` characters with a `…(+N chars)` marker when longer."""
    if isinstance(value, bytes):
        text = value[: limit * 4].decode("utf-8", errors="replace")
        total = len(value)
        unit = "bytes"
    else:
        text = value if isinstance(value, str) else str(value)
        total = len(text)
        unit = "chars"
    if total <= limit and len(text) <= limit:
        return escape(text)
    return f"{escape(text[:limit])}…(+{total - limit} {unit})"


# A URL's user info and query/fragment: the parts that carry credentials (`https://user:pw@host/p?token=x`).
_URL = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]{0,30}://)([^\s/?#]*@)?([^\s?#'\"]*)([?#][^\s'\"]*)?")


def redact_urls(text: str) -> str:
    """Every URL in `text` without its user info (`…@`) and its query and fragment (`?…`). Linear in `text`."""

    def one(match: re.Match[str]) -> str:
        scheme, userinfo, rest, tail = match.groups()
        return f"{scheme}{'…@' if userinfo else ''}{rest}{'?…' if tail else ''}"

    return _URL.sub(one, text)


def value_preview(value: object, limit: int = 60) -> str:
    """A config value as an error message may show it: a short, escaped preview, URLs without credentials,
    and a container only as its kind and size (never expanded: YAML aliases can make it huge)."""
    if isinstance(value, dict):
        return f"a mapping of {len(value)} keys"
    if isinstance(value, list | tuple | set | frozenset):
        return f"a list of {len(value)} items"
    if isinstance(value, str):
        return repr(preview(redact_urls(value), limit))
    if value is None or isinstance(value, bool | int | float):
        return preview(repr(value), limit)
    return f"a {type(value).__name__}"
