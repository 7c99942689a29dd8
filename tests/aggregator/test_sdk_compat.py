"""The MCP SDK's private names the aggregator relies on (aggregator/sdk_compat.py) are there, with the shape it
expects; a new SDK release that changes one fails here, naming it."""

from __future__ import annotations

import mcp_types as types
import pytest
from mcp.server import Server
from mcp.shared.exceptions import MCPError
from mcp_types.version import LATEST_MODERN_VERSION

from xds_control.aggregator import sdk_compat
from xds_control.errors import BackendError


def test_every_private_sdk_name_the_aggregator_uses_is_there() -> None:
    assert sdk_compat.problems() == []


def test_the_shaper_is_the_sdks_own_result_pass() -> None:
    server: Server = Server("s")
    shape = sdk_compat.Shaper(server)
    result = {"content": [{"type": "text", "text": "hi"}], "isError": False}
    modern = shape("tools/call", LATEST_MODERN_VERSION, {**result, "resultType": "complete"})
    assert modern["resultType"] == "complete" and modern["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "s"
    assert shape("tools/call", LATEST_MODERN_VERSION, result, sieved=True) == modern  # only the envelope added
    legacy = shape("tools/call", "2025-06-18", result)
    assert "resultType" not in legacy and "_meta" not in legacy
    with pytest.raises(MCPError) as invalid:
        shape("tools/call", LATEST_MODERN_VERSION, {"content": "not a list"})
    assert invalid.value.code == types.INTERNAL_ERROR


def test_errors_map_as_each_familys_entry_maps_them() -> None:
    own = BackendError(-32050, "backend 'b' is unavailable", {"backend": "b"})
    for modern in (True, False):
        assert sdk_compat.error_data(own, modern=modern).code == -32050
    assert sdk_compat.error_data(RuntimeError("boom"), modern=True).code == types.INTERNAL_ERROR
    assert sdk_compat.error_data(RuntimeError("boom"), modern=False).model_dump() == {
        "code": 0, "message": "boom", "data": None,
    }  # fmt: skip
    assert sdk_compat.http_status(types.INVALID_PARAMS) == 400 and sdk_compat.http_status(-32050) == 200


def test_json_answers_are_chosen_per_request() -> None:
    assert not sdk_compat.JSON_PER_REQUEST
    with sdk_compat.json_answers(True):
        assert sdk_compat.JSON_PER_REQUEST
    assert not sdk_compat.JSON_PER_REQUEST
