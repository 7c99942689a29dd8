"""The SSE decoder and JSON-RPC response checks (pure parts of the wire layer)."""

from __future__ import annotations

import pytest

from xds_control.errors import ProbeError
from xds_control.health.wire import SseDecoder, SseEvent, response_for, result_of


def decode(chunks: list[bytes], limit: int = 10_000) -> list[SseEvent]:
    decoder = SseDecoder(limit)
    events = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events


def test_events_split_anywhere_and_any_line_ending() -> None:
    stream = b'event: message\r\ndata: {"a":1}\r\n\r\n: keepalive\n\ndata: x\ndata: y\rid: 7\r\r\n'
    whole = decode([stream])
    assert whole == [SseEvent("message", '{"a":1}'), SseEvent("message", "x\ny", "7")]
    for size in (1, 2, 3, 7):
        assert decode([stream[i : i + size] for i in range(0, len(stream), size)]) == whole


def test_comment_only_and_empty_events_are_skipped() -> None:
    assert decode([b": ping\n\n\n\nevent: x\n\n"]) == []


def test_field_without_space_and_unknown_fields() -> None:
    assert decode([b"data:no-space\nretry: 10\nfoo: bar\n\n"]) == [SseEvent("message", "no-space")]


def test_event_over_the_limit_is_response_too_large() -> None:
    with pytest.raises(ProbeError) as info:
        decode([b"data: " + b"x" * 200 + b"\n\n"], limit=100)
    assert info.value.category == "response_too_large"


def test_unterminated_line_over_the_limit_is_caught_before_it_ends() -> None:
    decoder = SseDecoder(100)
    with pytest.raises(ProbeError) as info:
        for _ in range(10):
            decoder.feed(b"data: " + b"x" * 30)
    assert info.value.category == "response_too_large"


def test_non_utf8_is_protocol_error() -> None:
    with pytest.raises(ProbeError) as info:
        decode([b"data: \xff\xfe\n\n"])
    assert info.value.category == "protocol_error"


def test_response_for_matches_id_and_validates() -> None:
    assert response_for({"jsonrpc": "2.0", "id": 3, "result": {}}, 3) == {"jsonrpc": "2.0", "id": 3, "result": {}}
    assert response_for({"jsonrpc": "2.0", "id": 4, "result": {}}, 3) is None
    assert response_for({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}, 3) is None
    for bad in (
        {"jsonrpc": "1.0", "id": 3, "result": {}},
        {"jsonrpc": "2.0", "id": 3},
        {"jsonrpc": "2.0", "id": 3, "result": {}, "error": {}},
    ):
        with pytest.raises(ProbeError) as info:
            response_for(bad, 3)
        assert info.value.category == "protocol_error"


def test_result_of() -> None:
    assert result_of({"result": {"a": 1}}) == {"a": 1}
    with pytest.raises(ProbeError) as info:
        result_of({"error": {"code": -32601, "message": "Method not found"}})
    assert info.value.category == "jsonrpc_error"
    with pytest.raises(ProbeError) as info:
        result_of({"result": [1, 2]})
    assert info.value.category == "protocol_error"
