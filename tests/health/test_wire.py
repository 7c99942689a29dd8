"""The JSON-RPC response checks (pure parts of the prober's wire layer; its SSE decoder is tests/test_sse.py's)."""

from __future__ import annotations

import pytest

from xds_control.errors import ProbeError
from xds_control.health.wire import response_for, result_of


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
