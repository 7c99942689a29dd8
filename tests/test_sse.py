"""The one SSE decoder (xds_control/sse.py) against the WHATWG event-stream examples and its own rules."""

from __future__ import annotations

import pytest

from xds_control.errors import WireError
from xds_control.sse import SseDecoder, SseEvent


def decode(chunks: list[bytes], limit: int = 10_000, *, end: bool = True) -> list[SseEvent]:
    decoder = SseDecoder(limit)
    events = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    if end:
        events += decoder.end()
    return events


def every_split(stream: bytes) -> list[list[SseEvent]]:
    """The events of `stream` fed whole, then byte by byte, then in chunks of 2, 3 and 7 bytes."""
    return [decode([stream[i : i + size] for i in range(0, len(stream), size)]) for size in (len(stream), 1, 2, 3, 7)]


def same_every_way(stream: bytes) -> list[SseEvent]:
    whole, *split = every_split(stream)
    assert all(events == whole for events in split)
    return whole


# -- the examples of the WHATWG HTML standard, "Server-sent events", section "Parsing an event stream" ----------


def test_whatwg_stock_example_joins_data_lines_with_newlines() -> None:
    assert same_every_way(b"data: YHOO\ndata: +2\ndata: 10\n\n") == [SseEvent("message", "YHOO\n+2\n10")]


def test_whatwg_comment_ids_and_the_single_leading_space() -> None:
    stream = b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n"
    assert same_every_way(stream) == [
        SseEvent("message", "first event", "1"),
        SseEvent("message", "second event", ""),  # `id` without a value resets the last event id to ""
        SseEvent("message", " third event", ""),  # only one leading space is dropped; the id persists
    ]


def test_whatwg_empty_data_and_the_unterminated_last_block() -> None:
    stream = b"data\n\ndata\ndata\n\ndata:"
    assert same_every_way(stream) == [SseEvent("message", ""), SseEvent("message", "\n")]


def test_whatwg_the_space_after_the_colon_is_optional() -> None:
    assert same_every_way(b"data:test\n\ndata: test\n\n") == [SseEvent("message", "test")] * 2


# -- line endings, fields, bounds ------------------------------------------------------------------------------


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_every_line_ending_gives_the_same_events(newline: bytes) -> None:
    lines = [b"event: message", b'data: {"a":1}', b"", b": keepalive", b"", b"data: x", b"data: y", b"id: 7", b""]
    stream = newline.join(lines) + newline
    assert same_every_way(stream) == [SseEvent("message", '{"a":1}'), SseEvent("message", "x\ny", "7")]


def test_mixed_line_endings_split_anywhere() -> None:
    stream = b'event: message\r\ndata: {"a":1}\r\n\r\n: keepalive\n\ndata: x\ndata: y\rid: 7\r\r\n'
    assert same_every_way(stream) == [SseEvent("message", '{"a":1}'), SseEvent("message", "x\ny", "7")]


def test_a_final_cr_ends_its_line_when_the_stream_ends() -> None:
    assert decode([b"data: x\n\r"]) == [SseEvent("message", "x")]
    assert decode([b"data: x\n\r"], end=False) == []  # the CR may still be half a CRLF


def test_event_types_comments_and_fields_without_a_value() -> None:
    stream = b"event: ping\ndata: 1\n\n:comment only\n\nevent\ndata: 2\n\nevent: x\n\n"
    assert same_every_way(stream) == [SseEvent("ping", "1"), SseEvent("message", "2")]


def test_retry_takes_ascii_digits_only_and_unknown_fields_are_ignored() -> None:
    decoder = SseDecoder(1000)
    assert decoder.feed(b"data:no-space\nretry: 10\nfoo: bar\n\n") == [SseEvent("message", "no-space")]
    assert decoder.retry == 10
    decoder.feed(b"retry: 1x\nretry: \xd9\xa3\nretry:\n\n")  # not ASCII digits (U+0663 is a digit elsewhere)
    assert decoder.retry == 10
    decoder.feed(b"retry: 2500\n\n")
    assert decoder.retry == 2500


def test_an_id_with_nul_is_ignored() -> None:
    assert decode([b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n"]) == [
        SseEvent("message", "a", "1"),
        SseEvent("message", "b", "1"),
    ]


def test_a_leading_byte_order_mark_is_dropped_once() -> None:
    assert same_every_way(b"\xef\xbb\xbfdata: a\n\n") == [SseEvent("message", "a")]
    assert decode([b"\xef", b"\xbb", b"\xbfdata: a\n\n"]) == [SseEvent("message", "a")]
    # a second one is part of the field name, which is then unknown
    assert decode([b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\n"]) == []


def test_comment_only_and_empty_events_are_skipped() -> None:
    assert decode([b": ping\n\n\n\nevent: x\n\n"]) == []


def test_an_event_over_the_limit_is_response_too_large() -> None:
    with pytest.raises(WireError) as info:
        decode([b"data: " + b"x" * 200 + b"\n\n"], limit=100)
    assert info.value.category == "response_too_large"


def test_an_unterminated_line_over_the_limit_is_caught_before_it_ends() -> None:
    decoder = SseDecoder(100)
    with pytest.raises(WireError) as info:
        for _ in range(10):
            decoder.feed(b"data: " + b"x" * 30)
    assert info.value.category == "response_too_large"


def test_the_bound_is_per_event_and_comments_do_not_count() -> None:
    decoder = SseDecoder(100)
    for _ in range(50):
        assert decoder.feed(b"data: " + b"x" * 80 + b"\n\n: " + b"k" * 60 + b"\n") == [SseEvent("message", "x" * 80)]


def test_non_utf8_is_a_protocol_error() -> None:
    with pytest.raises(WireError) as info:
        decode([b"data: \xff\xfe\n\n"])
    assert info.value.category == "protocol_error"
